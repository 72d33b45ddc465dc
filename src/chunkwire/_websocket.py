"""What both ends of a ServeWebSocket call share: the method, frame encoding,
cutting messages into data frames, and putting them back together under a
size limit (proto/chunkwire/v1/websocket.proto has the stream rules).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ._core import Chunker
from ._proto import http_pb2, websocket_pb2
from ._wire import headers_to_proto

SERVE_WEBSOCKET_METHOD = "/chunkwire.v1.WebSocketPlugin/ServeWebSocket"

DEFAULT_MAX_MESSAGE_SIZE = 1 << 20

# Close codes, RFC 6455 section 7.4.1.
NORMAL = 1000
GOING_AWAY = 1001
NO_STATUS = 1005
ABNORMAL = 1006
INVALID_DATA = 1007
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011

# Codes a close frame may carry (1005, 1006 and 1015 never go on the wire).
_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
MAX_REASON_BYTES = 123


class MessageTooBig(Exception):
    """A message grew past the session's ``max_message_size``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"message larger than the limit of {limit} bytes")


class BadFrame(Exception):
    """A data frame broke the stream rules or a text message is not UTF-8."""


def sendable_close_code(code: int) -> bool:
    """True for codes a client may receive in a close frame (1000-1014 in use, 3000-4999)."""
    return code in _SENDABLE or 3000 <= code <= 4999


def clip_reason(reason: str) -> str:
    """A close reason cut to the 123 UTF-8 bytes a close frame can carry."""
    raw = reason.encode()
    if len(raw) <= MAX_REASON_BYTES:
        return reason
    return raw[:MAX_REASON_BYTES].decode(errors="ignore")


def parse(message: bytes) -> websocket_pb2.WebSocketFrame:
    return websocket_pb2.WebSocketFrame.FromString(message)


def encode_init(
    request: http_pb2.ServeHTTPRequestInit, subprotocols: Iterable[str], max_message_size: int
) -> bytes:
    init = websocket_pb2.WebSocketInit(
        request=request, subprotocols=list(subprotocols), max_message_size=max_message_size
    )
    return websocket_pb2.WebSocketFrame(init=init).SerializeToString()


def encode_accept(subprotocol: str | None, headers: Iterable[tuple[Any, Any]] = ()) -> bytes:
    accept = websocket_pb2.WebSocketAccept(
        subprotocol=subprotocol or "", headers=headers_to_proto(headers)
    )
    return websocket_pb2.WebSocketFrame(accept=accept).SerializeToString()


def encode_deny(status: int, headers: Iterable[tuple[Any, Any]] = (), body: bytes = b"") -> bytes:
    deny = websocket_pb2.WebSocketDeny(
        status_code=status, headers=headers_to_proto(headers), body=body
    )
    return websocket_pb2.WebSocketFrame(deny=deny).SerializeToString()


def encode_close(code: int, reason: str = "") -> bytes:
    close = websocket_pb2.WebSocketClose(code=code, reason=reason)
    return websocket_pb2.WebSocketFrame(close=close).SerializeToString()


def _data(payload: bytes, text: bool, final: bool) -> bytes:
    data = websocket_pb2.WebSocketData(payload=payload, text=text, final=final)
    return websocket_pb2.WebSocketFrame(data=data).SerializeToString()


class Fragmenter:
    """Cuts messages into data frames of at most ``chunk_size`` payload bytes.

    A message that fits in one chunk leaves as one frame, straight from the
    caller's buffer. Larger ones go through the core Chunker, created on the
    first of them (an idle session holds no chunk buffer), so a message of
    any size costs one chunk of buffer here plus the frame being encoded.
    """

    __slots__ = ("_chunk_size", "_chunker")

    def __init__(self, chunk_size: int) -> None:
        self._chunk_size = chunk_size
        self._chunker: Chunker | None = None

    def frames(self, payload: Any, text: bool) -> Iterator[bytes]:
        view = memoryview(payload)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")  # byte offsets below, whatever the item type
        size = view.nbytes
        if size <= self._chunk_size:
            yield _data(payload if type(payload) is bytes else view.tobytes(), text, True)
            return
        chunker = self._chunker
        if chunker is None:
            chunker = self._chunker = Chunker(self._chunk_size, self._chunk_size)
        offset = 0
        while offset < size:
            offset += chunker.write(view[offset:])
            last = offset == size
            while (item := chunker.pop(final=last)) is not None:
                yield _data(item[0], text, last and chunker.pending == 0)


class Assembler:
    """Joins data frames into messages (str for text, bytes for binary).

    Holds the parts of one message, never more than ``limit`` bytes
    (``limit`` 0: no limit): the frame that would pass it raises
    MessageTooBig.
    """

    __slots__ = ("_limit", "_parts", "_size", "_text")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self._text: bool | None = None

    def add(self, data: websocket_pb2.WebSocketData) -> str | bytes | None:
        """The complete message once ``data`` is its last frame, else None."""
        if self._text is None:
            self._text = data.text
        elif data.text != self._text:
            raise BadFrame("the text flag changed within a message")
        payload = data.payload
        self._size += len(payload)
        if self._limit and self._size > self._limit:
            raise MessageTooBig(self._limit)
        if payload:
            self._parts.append(payload)
        if not data.final:
            return None
        parts, text = self._parts, self._text
        self._parts, self._size, self._text = [], 0, None
        raw = parts[0] if len(parts) == 1 else b"".join(parts)
        if not text:
            return raw
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise BadFrame(f"text message is not valid UTF-8: {exc}") from None

    @property
    def buffered(self) -> int:
        return self._size
