"""Public exceptions raised by the plugin SDK and the Python client."""

from __future__ import annotations

from ._errors import FrameError


class ChunkwireError(Exception):
    """Base class of chunkwire's own errors (FrameError is a ValueError)."""


class BodyTooLarge(ChunkwireError):
    """A body is larger than the limit given to ``read_all``/``read``."""

    def __init__(self, limit: int, size: int | None = None) -> None:
        self.limit = limit
        self.size = size
        what = f"{size} bytes" if size is not None else "more bytes"
        super().__init__(f"body is larger than the limit of {limit} bytes ({what})")


class HeadersAlreadySent(ChunkwireError):
    """The response status or headers were changed after they went out."""


class ProtocolError(ChunkwireError):
    """The peer broke the ServeHTTP stream rules (init placement, body_complete...)."""


class IncompleteRequest(ProtocolError):
    """The request stream ended without ``body_complete``."""


class IncompleteResponse(ProtocolError):
    """The response stream ended without ``body_complete``.

    ``code`` and ``details`` carry the gRPC status when the plugin aborted the
    call (``grpc.StatusCode.INTERNAL`` when its handler failed mid-response).
    """

    def __init__(self, message: str, code: object | None = None, details: str | None = None):
        self.code = code
        self.details = details
        super().__init__(message)


class ClientDisconnected(ChunkwireError, ConnectionError):
    """The other end went away: a request body ended before ``body_complete``,
    or the response can no longer be delivered.

    Never a clean end of body: a handler reading or writing a dead call gets
    this error instead.
    """


class ResponseAborted(ChunkwireError):
    """The response was aborted by ``response.abort()`` (the client sees it incomplete)."""


class InvalidStatus(ProtocolError):
    """The plugin sent a status code outside 100..999."""

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(f"plugin sent an invalid HTTP status {status}")


class PluginCallError(ChunkwireError):
    """The gRPC call failed before a response init arrived (unreachable plugin...)."""

    def __init__(self, message: str, code: object | None = None, details: str | None = None):
        self.code = code
        self.details = details
        super().__init__(message)


class WebSocketClosed(ChunkwireError, ConnectionError):
    """The WebSocket session is over: ``code`` and ``reason`` say how it ended.

    Raised by ``receive()`` once the client closed (or the session was closed
    from this side) and by ``send()`` on a closed session. 1006 means the
    connection was lost without a close.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"WebSocket closed with code {code}" + (f": {reason}" if reason else ""))


class InvalidEvent(ChunkwireError, ValueError):
    """An event's topic, type or data breaks the rules; the message says which."""


class PublishError(ChunkwireError):
    """Events may not have reached the gateway (connection broken or refused).

    ``failed`` counts the events that were on the broken connection or were
    refused; events still queued are sent again once it is back.
    """

    def __init__(self, message: str, failed: int = 0) -> None:
        self.failed = failed
        super().__init__(message)


__all__ = [
    "BodyTooLarge",
    "ChunkwireError",
    "ClientDisconnected",
    "FrameError",
    "HeadersAlreadySent",
    "IncompleteRequest",
    "IncompleteResponse",
    "InvalidEvent",
    "InvalidStatus",
    "PluginCallError",
    "ProtocolError",
    "PublishError",
    "ResponseAborted",
    "WebSocketClosed",
]
