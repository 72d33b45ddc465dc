"""What a plugin handler sees of an HTTP request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from multidict import CIMultiDict, MultiDict

from .._core import decode_request_frame
from .._paths import BadPath, decode_path, split_target
from .._proto import http_pb2
from .._wire import headers_from_proto
from ..errors import BodyTooLarge, ClientDisconnected, ProtocolError

DEFAULT_READ_LIMIT = 16 * 1024 * 1024

# Returns the next raw message, or the ``eof`` sentinel given to RequestBody.
ReadMessage = Callable[[], Awaitable[Any]]


class RequestBody:
    """The request body, streamed: never held whole unless ``read_all`` is asked.

    Reading is the flow control: a handler that stops reading stops the flow
    back to the HTTP client. Bound on the plugin side: this object holds at
    most one received message (one sender chunk); the plugin server's fixed
    HTTP/2 window (``chunkwire._wire.flow_window``, 1 MiB for 64 KiB chunks)
    bounds what gRPC takes in besides (measured: a client's upload got about
    1.6 MiB ahead of a handler that never reads, then stalled).

    ``async for chunk in request.body`` yields non-empty chunks as they
    arrive, each at most the sender's chunk_size. Chunks are read-only
    ``memoryview`` objects over the received message (no copy); they stay
    valid after iteration moves on, on every transport: the same-host lane
    copies each chunk out of its shared-memory ring, and returns the space,
    before the handler sees it, so no chunk can change or be released under
    a handler that keeps it. Use ``bytes(chunk)`` where bytes are needed.
    ``read(n)`` and ``read_all()`` return ``bytes``; ``readinto(buf)``
    copies straight from the received message into ``buf``. All of them can
    be mixed; each byte is delivered once.

    A stream that ends before ``body_complete`` (the client went away) raises
    ClientDisconnected from every read, never a clean end; a malformed frame
    raises ProtocolError.
    """

    __slots__ = (
        "_complete",
        "_content_length",
        "_continue",
        "_eof",
        "_gone",
        "_max_chunk",
        "_pending",
        "_read_message",
        "_received",
    )

    def __init__(
        self,
        first: memoryview,
        complete: bool,
        read_message: ReadMessage,
        eof: object,
        content_length: int | None = None,
        on_first_read: Callable[[], Awaitable[None]] | None = None,
        *,
        max_chunk_size: int | None = None,
    ) -> None:
        self._pending: memoryview | None = first if first.nbytes else None
        self._complete = complete
        self._read_message = read_message
        self._eof = eof
        self._content_length = content_length
        self._received = first.nbytes
        # Expect: 100-continue: asks the gateway for the body on the first read.
        self._continue = on_first_read if not complete and not first.nbytes else None
        self._gone = False
        self._max_chunk = max_chunk_size

    @property
    def complete(self) -> bool:
        """True once the last frame (``body_complete``) has arrived."""
        return self._complete

    @property
    def at_eof(self) -> bool:
        """True once every byte of a complete body has been read."""
        return self._complete and self._pending is None

    @property
    def received(self) -> int:
        """Body bytes received from the peer so far."""
        return self._received

    @property
    def disconnected(self) -> bool:
        """True once a read found the client gone (ClientDisconnected was raised)."""
        return self._gone

    async def _next(self) -> memoryview | None:
        pending = self._pending
        if pending is not None:
            self._pending = None
            return pending
        if self._complete:
            return None
        if self._gone:
            raise self._disconnected()
        if self._continue is not None:
            ask, self._continue = self._continue, None
            await ask()
        while not self._complete:
            try:
                message = await self._read_message()
            except ClientDisconnected:
                self._gone = True
                raise
            if message is self._eof:
                self._gone = True
                raise self._disconnected()
            try:
                frame = decode_request_frame(message)
            except ValueError as exc:
                raise ProtocolError(f"malformed request frame: {exc}") from exc
            if frame.init is not None:
                raise ProtocolError("request init repeated in a later frame")
            self._complete = frame.complete
            body = frame.body
            if self._max_chunk is not None and body.nbytes > self._max_chunk:
                raise ProtocolError(
                    f"request chunk of {body.nbytes} bytes is larger than {self._max_chunk}"
                )
            if body.nbytes:
                self._received += body.nbytes
                return body
        return None

    def _disconnected(self) -> ClientDisconnected:
        return ClientDisconnected(
            f"client went away after {self._received} request body bytes, "
            "before the body was complete"
        )

    def __aiter__(self) -> RequestBody:
        return self

    async def __anext__(self) -> memoryview:
        chunk = await self._next()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (at least one unless at the end); ``b""`` at the end.

        Returns what the next chunk holds rather than waiting to fill ``n``.
        ``n < 0`` reads everything, as ``read_all()`` with its default limit.
        """
        if n < 0:
            return await self.read_all()
        if n == 0:
            return b""
        chunk = await self._next()
        if chunk is None:
            return b""
        if chunk.nbytes > n:
            self._pending = chunk[n:]
            return bytes(chunk[:n])
        return bytes(chunk)

    async def readinto(self, buffer: Any) -> int:
        """Copy the next bytes straight into ``buffer``; return how many (0 at the end).

        ``buffer`` is any writable C-contiguous buffer (bytearray, memoryview,
        numpy array...). One copy, from the received message into it; what
        does not fit stays for the next read. Like ``read(n)``, returns what
        the next chunk holds rather than waiting to fill the buffer.
        """
        target = memoryview(buffer)
        if target.readonly:
            raise TypeError("readinto() needs a writable buffer")
        if target.format != "B" or target.ndim != 1:
            if not target.c_contiguous:
                raise BufferError("readinto() needs a C-contiguous buffer")
            target = target.cast("B")
        size = target.nbytes
        if size == 0:
            return 0
        chunk = await self._next()
        if chunk is None:
            return 0
        n = chunk.nbytes
        if n > size:
            target[:] = chunk[:size]
            self._pending = chunk[size:]
            return size
        target[:n] = chunk
        return n

    async def read_all(self, limit: int | None = DEFAULT_READ_LIMIT) -> bytes:
        """The rest of the body as bytes; BodyTooLarge past ``limit`` (None: no limit)."""
        if limit is not None and self._content_length is not None and self._content_length > limit:
            raise BodyTooLarge(limit, self._content_length)
        parts: list[memoryview] = []
        size = 0
        while (chunk := await self._next()) is not None:
            size += chunk.nbytes
            if limit is not None and size > limit:
                raise BodyTooLarge(limit)
            parts.append(chunk)
        if len(parts) == 1:
            return bytes(parts[0])
        return b"".join(parts)


_UNREAD = object()  # a field of the init not read yet


class Request:
    """An HTTP request as the gateway forwarded it.

    ``path`` is what routes match: the path of ``request_uri`` (the target
    relative to the plugin, as the gateway routed it), percent-decoded
    segment by segment (``chunkwire._paths``; an ambiguous path raises
    BadPath, answered with 400). ``raw_path`` keeps it encoded. ``url`` is
    informative only: the gateway builds it from the client's Host header,
    so nothing is derived from it (unless a host sends no ``request_uri``).
    ``query`` holds every value of every key in order. ``headers`` is
    case-insensitive and multi-valued (values decoded as latin-1).
    ``content_length`` is None when unknown.
    """

    __slots__ = (
        "_context",
        "_headers",
        "_host",
        "_path_error",
        "_proto",
        "_query",
        "_remote_addr",
        "_url",
        "body",
        "content_length",
        "init",
        "method",
        "path",
        "path_params",
        "query_string",
        "raw_path",
        "request_uri",
    )

    def __init__(self, init: http_pb2.ServeHTTPRequestInit, body: RequestBody) -> None:
        # Each field of the init is read once (a read decodes a new str):
        # what routing needs now, the informative ones on first use.
        self.init = init
        self.method: str = init.method.upper() or "GET"
        self.request_uri: str = init.request_uri
        self._url: object = _UNREAD
        if self.request_uri:
            raw_path, query = split_target(self.request_uri)
        else:
            url = init.url
            self._url = url
            split = urlsplit(url or "/")
            raw_path, query = split.path or "/", split.query
        self.raw_path: str = raw_path
        self._path_error: BadPath | None = None
        try:
            self.path: str = decode_path(raw_path)
        except BadPath as exc:
            self.path = raw_path
            self._path_error = exc
        self.query_string: str = query
        self._query: MultiDict[str] | None = None
        self._host: object = _UNREAD
        self._remote_addr: object = _UNREAD
        self._proto: object = _UNREAD
        self._headers: CIMultiDict[str] | None = None
        content_length = init.content_length
        self.content_length: int | None = content_length if content_length >= 0 else None
        self._context: http_pb2.PluginContext | None = None
        self.path_params: dict[str, str] = {}
        self.body: RequestBody = body

    # url, host, remote_addr, proto: read from the init on first use.

    @property
    def url(self) -> str:
        url = self._url
        if url is _UNREAD:
            url = self._url = self.init.url
        return url  # type: ignore[return-value]

    @url.setter
    def url(self, value: str) -> None:
        self._url = value

    @property
    def host(self) -> str:
        host = self._host
        if host is _UNREAD:
            host = self._host = self.init.host
        return host  # type: ignore[return-value]

    @host.setter
    def host(self, value: str) -> None:
        self._host = value

    @property
    def remote_addr(self) -> str:
        remote_addr = self._remote_addr
        if remote_addr is _UNREAD:
            remote_addr = self._remote_addr = self.init.remote_addr
        return remote_addr  # type: ignore[return-value]

    @remote_addr.setter
    def remote_addr(self, value: str) -> None:
        self._remote_addr = value

    @property
    def proto(self) -> str:
        proto = self._proto
        if proto is _UNREAD:
            proto = self._proto = self.init.proto
        return proto  # type: ignore[return-value]

    @proto.setter
    def proto(self, value: str) -> None:
        self._proto = value

    @property
    def headers(self) -> CIMultiDict[str]:
        # Built on first use: many handlers never look.
        headers = self._headers
        if headers is None:
            headers = self._headers = headers_from_proto(self.init.headers)
        return headers

    @headers.setter
    def headers(self, value: CIMultiDict[str]) -> None:
        self._headers = value

    @property
    def query(self) -> MultiDict[str]:
        # Parsed on first use, as the headers are.
        query = self._query
        if query is None:
            string = self.query_string
            query = self._query = (
                MultiDict(parse_qsl(string, keep_blank_values=True)) if string else MultiDict()
            )
        return query

    @query.setter
    def query(self, value: MultiDict[str]) -> None:
        self._query = value

    @property
    def context(self) -> http_pb2.PluginContext:
        context = self._context
        if context is None:
            context = self._context = self.init.plugin_context
        return context

    @context.setter
    def context(self, value: http_pb2.PluginContext) -> None:
        self._context = value

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url}>"
