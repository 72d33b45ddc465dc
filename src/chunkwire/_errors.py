"""Exceptions shared by both core implementations and the transport."""


class FrameError(ValueError):
    """A frame is not valid protobuf wire data for the expected message."""
