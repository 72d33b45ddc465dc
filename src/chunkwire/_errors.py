"""Exceptions shared by both core implementations and the transport."""


class FrameError(ValueError):
    """A frame is not valid protobuf wire data for the expected message."""


class RingError(ValueError):
    """A shared ring's descriptor, credit or file is not valid for that ring."""
