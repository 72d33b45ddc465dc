"""The response a plugin handler writes, cut into chunks by the core."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from .._core import Chunker, encode_response_frame
from .._proto import http_pb2
from .._wire import headers_to_proto
from ..errors import HeadersAlreadySent

SendMessage = Callable[[bytes], Awaitable[None]]

_EMPTY_COMPLETE = encode_response_frame(b"", complete=True)
_EMPTY_FLUSH = encode_response_frame(b"", flush=True)
_INT32_MAX = 2**31 - 1


def _byte_view(data: Any) -> memoryview:
    if isinstance(data, str):
        raise TypeError("response.write() takes bytes-like data, not str; encode it first")
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(
            f"response.write() takes bytes-like data, not {type(data).__name__!r}"
        ) from None
    if view.format != "B" or view.ndim != 1:
        if not view.c_contiguous:
            raise BufferError("response.write() needs a C-contiguous buffer")
        view = view.cast("B")
    return view


class Response:
    """Status, headers and a streamed body.

    The first frame that leaves fixes ``status`` and ``headers``: from then
    on ``headers`` is a read-only view and assigning ``status`` raises
    HeadersAlreadySent. Small writes are coalesced into chunks of up to
    ``chunk_size`` bytes; ``flush`` (or ``write(..., flush=True)``) sends what
    is buffered now. ``write`` waits while the peer is slow (each frame is an
    awaited gRPC write). Returning from the handler ends the response.
    """

    __slots__ = (
        "_chunk_size",
        "_chunker",
        "_finished",
        "_headers",
        "_send",
        "_sent",
        "_status",
        "frames_sent",
    )

    def __init__(self, send: SendMessage, chunk_size: int, capacity: int | None = None) -> None:
        self._send = send
        self._chunk_size = chunk_size
        self._chunker = Chunker(chunk_size, capacity if capacity is not None else 4 * chunk_size)
        self._status = 200
        self._headers: CIMultiDict[str] | CIMultiDictProxy[str] = CIMultiDict()
        self._sent = False
        self._finished = False
        self.frames_sent = 0

    @property
    def status(self) -> int:
        return self._status

    @status.setter
    def status(self, value: int) -> None:
        if self._sent:
            raise HeadersAlreadySent("response status cannot change after the response started")
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"status must be an int, not {type(value).__name__!r}")
        if not 0 <= value <= _INT32_MAX:
            raise ValueError(f"status {value} does not fit the wire's int32")
        # Other out-of-range values travel as set: the gateway answers 500.
        self._status = value

    @property
    def headers(self) -> CIMultiDict[str] | CIMultiDictProxy[str]:
        """Multi-valued, case-insensitive; read-only once the response started."""
        return self._headers

    @headers.setter
    def headers(
        self, value: Mapping[str, str] | Iterable[tuple[str, str]] | CIMultiDict[str]
    ) -> None:
        if self._sent:
            raise HeadersAlreadySent("response headers cannot change after the response started")
        self._headers = CIMultiDict(value)

    @property
    def headers_sent(self) -> bool:
        return self._sent

    @property
    def finished(self) -> bool:
        return self._finished

    def _init_message(self) -> bytes:
        init = http_pb2.ServeHTTPResponseInit(
            status_code=self._status, headers=headers_to_proto(self._headers.items())
        )
        return http_pb2.ServeHTTPResponse(init=init).SerializeToString()

    async def _emit(self, frame: bytes) -> None:
        if not self._sent:
            frame = self._init_message() + frame
            self._sent = True
            self._headers = CIMultiDictProxy(self._headers)
        self.frames_sent += 1
        await self._send(frame)

    async def write(self, data: Any, flush: bool = False) -> None:
        """Append bytes-like ``data`` (bytes, bytearray, memoryview, numpy array)."""
        if self._finished:
            raise RuntimeError("response already finished")
        chunker = self._chunker
        if type(data) is bytes and len(data) < self._chunk_size and len(data) <= chunker.free:
            # Small writes (token streaming) only land in the ring.
            chunker.write(data)
            if chunker.pending >= self._chunk_size:
                while (frame := chunker.pop_response_frame()) is not None:
                    await self._emit(frame)
            if flush:
                await self.flush()
            return
        view = _byte_view(data)
        size = view.nbytes
        chunk_size = self._chunk_size
        offset = 0
        while offset < size:
            if chunker.pending == 0 and size - offset >= chunk_size:
                # Whole chunks go straight from the caller's buffer into frames.
                await self._emit(encode_response_frame(view[offset : offset + chunk_size]))
                offset += chunk_size
                continue
            offset += chunker.write(view[offset:] if offset else view)
            while (frame := chunker.pop_response_frame()) is not None:
                await self._emit(frame)
        if flush:
            await self.flush()

    async def flush(self) -> None:
        """Send everything buffered now, marked flush; an empty flush frame if nothing is."""
        if self._finished:
            raise RuntimeError("response already finished")
        chunker = self._chunker
        if chunker.pending == 0:
            await self._emit(_EMPTY_FLUSH)
            return
        chunker.flush()
        while (frame := chunker.pop_response_frame()) is not None:
            await self._emit(frame)

    def _discard(self) -> None:
        """Forget what the handler buffered (only before anything was sent)."""
        assert not self._sent
        self._chunker = Chunker(self._chunk_size, self._chunker.capacity)
        self._status = 200
        self._headers = CIMultiDict()
        self._finished = False

    async def _finish(self) -> None:
        chunker = self._chunker
        if chunker.pending == 0:
            await self._emit(_EMPTY_COMPLETE)
        else:
            while (frame := chunker.pop_response_frame(final=True)) is not None:
                await self._emit(frame)
        self._finished = True

    def __repr__(self) -> str:
        state = "finished" if self._finished else "sent" if self._sent else "pending"
        return f"<Response {self._status} {state}>"
