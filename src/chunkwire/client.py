"""Call a chunkwire plugin from Python, without HTTP.

```python
async with PluginClient("unix:/run/files.sock") as client:
    async with client.request("POST", "/upload", body=chunks()) as resp:
        async for chunk in resp.body:
            ...
```

``AsyncPluginTransport(address)`` puts the same calls behind
``httpx.AsyncClient`` (see chunkwire.httpx_transport; needs httpx).

The request body is sent while the response is read; if the plugin answers
before taking the whole body, sending stops. Chunks of the response body are
read-only ``memoryview`` objects over the received messages (no copy).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterable, Generator, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import grpc
from google.protobuf.message import DecodeError
from multidict import CIMultiDict

from ._core import Chunker, decode_response_frame, encode_request_frame
from ._proto import http_pb2
from ._wire import (
    DEFAULT_CHUNK_SIZE,
    SERVE_HTTP_METHOD,
    flow_window,
    grpc_target,
    headers_from_proto,
    headers_to_proto,
)
from .errors import (
    BodyTooLarge,
    IncompleteResponse,
    InvalidStatus,
    PluginCallError,
    ProtocolError,
)
from .transport.lane import (
    DEFAULT_SETTINGS,
    LaneCarrier,
    LaneSettings,
    lane_or_unavailable,
    lane_settings,
)
from .transport.negotiate import TransportChoice, describer
from .transport.opener import MuxPool
from .transport.sender import BATCH_LIMIT

log = logging.getLogger("chunkwire.client")

if TYPE_CHECKING:
    from .httpx_transport import AsyncPluginTransport

DEFAULT_READ_LIMIT = 64 * 1024 * 1024
_HEADROOM = 16 * 1024 * 1024
_MIN_RECEIVE_CHUNK = 16 * 1024 * 1024

Body = bytes | bytearray | memoryview | AsyncIterable[Any] | Iterable[Any] | None
HeadersArg = Mapping[str, str] | Iterable[tuple[str, str | bytes]] | None


def channel_options(chunk_size: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", chunk_size + _HEADROOM),
        ("grpc.max_receive_message_length", max(chunk_size, _MIN_RECEIVE_CHUNK) + _HEADROOM),
        # Bounded windows, as on the plugin's server: the response flow is
        # the caller's reading.
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", flow_window(chunk_size)),
    ]


def _byte_view(data: Any) -> memoryview:
    if isinstance(data, str):
        raise TypeError("request body chunks must be bytes-like, not str")
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def _is_buffer(body: Any) -> bool:
    # Checked before iterability: a numpy array is both, and is one buffer.
    if isinstance(body, (bytes, bytearray, memoryview)):
        return True
    if isinstance(body, (str, AsyncIterable)):
        return False
    try:
        memoryview(body).release()
    except TypeError:
        return False
    return True


class ClientResponse:
    """A plugin's response: ``status``, ``headers``, and ``body`` as it streams in.

    Use it as an async context manager (or call ``aclose()``): leaving before
    the body was fully read cancels the call. A stream that ends without
    ``body_complete`` raises IncompleteResponse, never a silent clean end.
    """

    def __init__(
        self,
        call: grpc.aio.StreamStreamCall,
        sender: asyncio.Task[None],
        status: int,
        headers: CIMultiDict[str],
        first_body: memoryview,
        complete: bool,
        flush: bool = False,
        writer: _Writer | None = None,
    ) -> None:
        self._call = call
        self._sender = sender
        self._writer = writer
        self.status = status
        self.headers = headers
        self._pending: memoryview | None = first_body if first_body.nbytes else None
        self._complete = complete
        self._closed = False
        self.messages = 1
        self.flushes = int(flush)
        if complete:
            self._finished()

    @property
    def complete(self) -> bool:
        return self._complete

    @property
    def body(self) -> _ResponseBody:
        """Async-iterable over the body's chunks (read-only memoryviews)."""
        # A fresh object each time: storing it would make a reference cycle and
        # delay __del__ (which cancels an abandoned call) until a gc pass.
        return _ResponseBody(self)

    async def _next(self) -> memoryview | None:
        pending = self._pending
        if pending is not None:
            self._pending = None
            return pending
        call = self._call
        while not self._complete:
            if self._closed:
                raise RuntimeError("response was closed before its body was read")
            try:
                message = await call.read()
            except asyncio.CancelledError:
                self._closed = True
                raise _sender_error(self._sender) or asyncio.CancelledError() from None
            except grpc.aio.AioRpcError as exc:
                self._closed = True
                raise IncompleteResponse(
                    f"plugin call failed mid-response: {exc.code().name} {exc.details()}",
                    exc.code(),
                    exc.details(),
                ) from None
            if message is grpc.aio.EOF:
                self._closed = True
                code = await call.code()
                details = await call.details()
                raise IncompleteResponse(
                    f"response stream ended without body_complete ({code.name} {details})",
                    code,
                    details,
                )
            try:
                frame = decode_response_frame(message)
            except ValueError as exc:
                await self.aclose()
                raise ProtocolError(f"malformed response frame: {exc}") from exc
            self.messages += 1
            if frame.init is not None:
                await self.aclose()
                raise ProtocolError("response init repeated in a later frame")
            if frame.flush:
                self.flushes += 1
            if frame.complete:
                self._complete = True
                self._finished()
            body = frame.body
            if body.nbytes:
                return body
        return None

    def _finished(self) -> None:
        # The plugin answered: stop sending whatever body is left, then
        # half-close: the plugin reads that EOF as "delivered".
        if self._writer is not None:
            self._writer.stop(self._sender)
        elif not self._sender.done():
            self._sender.cancel()

    async def read(self, limit: int | None = DEFAULT_READ_LIMIT) -> bytes:
        """The rest of the body as bytes; BodyTooLarge past ``limit`` (None: no limit)."""
        parts: list[memoryview] = []
        size = 0
        try:
            while (chunk := await self._next()) is not None:
                size += chunk.nbytes
                if limit is not None and size > limit:
                    raise BodyTooLarge(limit)
                parts.append(chunk)
        except BaseException:
            await self.aclose()
            raise
        return b"".join(parts)

    async def aclose(self) -> None:
        """Cancel the call unless the body was read to the end."""
        if not self._complete and not self._closed:
            self._call.cancel()
        self._closed = True
        if self._complete and self._writer is not None:
            return  # the sender half-closes on its own (see _finished)
        await _stop_sender(self._sender)

    async def __aenter__(self) -> ClientResponse:
        return self

    def __del__(self) -> None:
        # Dropped unread: grpc.aio would keep the call in flight (grpc#43462).
        if not self._complete and not self._closed:
            self._call.cancel()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<ClientResponse {self.status} complete={self._complete}>"


class _ResponseBody:
    __slots__ = ("_response",)

    def __init__(self, response: ClientResponse) -> None:
        self._response = response

    def __aiter__(self) -> _ResponseBody:
        return self

    async def __anext__(self) -> memoryview:
        chunk = await self._response._next()
        if chunk is None:
            raise StopAsyncIteration
        return chunk


class _Stop(Exception):
    """The response is complete: send no more of the request body."""


class _Writer:
    """``call.write`` for the sender, which stops between writes once told to.

    The sender is only ever cancelled while it waits on the body source, never
    inside a gRPC operation (a task cancelled there leaks, grpc#43360).
    """

    __slots__ = ("call", "in_grpc", "stopping")

    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:
        self.call = call
        self.in_grpc = False
        self.stopping = False

    async def write(self, data: bytes) -> None:
        if self.stopping:
            raise _Stop
        self.in_grpc = True
        try:
            await self.call.write(data)
        finally:
            self.in_grpc = False
        if self.stopping:
            raise _Stop

    def stop(self, sender: asyncio.Task[None]) -> None:
        self.stopping = True
        if not sender.done() and not self.in_grpc:
            sender.cancel()


async def _send_request(writer: _Writer, init: bytes, body: Body, chunk_size: int) -> None:
    call = writer.call
    try:
        try:
            await _send_body(writer, init, body, chunk_size)
        except _Stop:
            pass
        except asyncio.CancelledError:
            if not writer.stopping:
                raise
            # Stopped while waiting on the body source: half-close all the same.
        writer.in_grpc = True
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        return  # the call ended (the plugin answered, or failed): the reader reports how
    except Exception:
        # The body source failed: a complete request can no longer be sent.
        call.cancel()
        raise


async def _send_body(call: _Writer, init: bytes, body: Body, chunk_size: int) -> None:
    if body is None:
        await call.write(init + encode_request_frame(b"", complete=True))
    elif _is_buffer(body):
        view = _byte_view(body)
        size = view.nbytes
        if size <= chunk_size:
            await call.write(init + encode_request_frame(view, complete=True))
        else:
            # Slices of the caller's buffer go straight into frames.
            first = True
            for start in range(0, size, chunk_size):
                end = min(start + chunk_size, size)
                frame = encode_request_frame(view[start:end], complete=end == size)
                if first:
                    frame = init + frame
                    first = False
                await call.write(frame)
    else:
        await _send_stream(call, init, body, chunk_size)


async def _send_stream(call: _Writer, init: bytes, body: Any, chunk_size: int) -> None:
    chunker = Chunker(chunk_size, 4 * chunk_size)
    head: bytes | None = init

    async def emit(frame: bytes) -> None:
        nonlocal head
        if head is not None:
            frame = head + frame
            head = None
        await call.write(frame)

    async def put(data: Any) -> None:
        view = _byte_view(data)
        size = view.nbytes
        offset = 0
        while offset < size:
            if chunker.pending == 0 and size - offset >= chunk_size:
                await emit(encode_request_frame(view[offset : offset + chunk_size]))
                offset += chunk_size
                continue
            offset += chunker.write(view[offset:] if offset else view)
            while (frame := chunker.pop_request_frame()) is not None:
                await emit(frame)
        if head is not None and chunker.pending:
            # The plugin gets the init with the first data, not after a full chunk.
            chunker.flush()
            while (frame := chunker.pop_request_frame()) is not None:
                await emit(frame)

    if isinstance(body, AsyncIterable):
        async for data in body:
            await put(data)
    else:
        for data in body:
            await put(data)
    if chunker.pending == 0:
        await emit(encode_request_frame(b"", complete=True))
    else:
        while (frame := chunker.pop_request_frame(final=True)) is not None:
            await emit(frame)


class _RequestContext:
    """``await client.request(...)`` or ``async with client.request(...) as resp``."""

    __slots__ = ("_coro", "_response")

    def __init__(self, coro: Any) -> None:
        self._coro = coro
        self._response: ClientResponse | None = None

    def __await__(self) -> Generator[Any, None, ClientResponse]:
        return self._coro.__await__()

    async def __aenter__(self) -> ClientResponse:
        self._response = await self._coro
        return self._response

    async def __aexit__(self, *exc: object) -> None:
        if self._response is not None:
            await self._response.aclose()


class PluginClient:
    """One gRPC channel to one plugin (``unix:/path.sock`` or ``HOST:PORT``).

    ``transport``: "auto" (default) uses the plugin's same-host lane when
    ``address`` is a unix socket and its Describe offers one, else its
    multiplexed Connect call when offered, else one ServeHTTP call per
    request; "lane", "mux" or "call" force one ("lane" needs a unix socket).
    A ``method`` other than chunkwire's ServeHTTP (the Mattermost name)
    always uses the call transport. ``lane``: this side's lane limits
    (:class:`~chunkwire.transport.lane.LaneSettings`).
    """

    def __init__(
        self,
        address: str,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        method: str = SERVE_HTTP_METHOD,
        transport: str = "auto",
        lane: LaneSettings = DEFAULT_SETTINGS,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.address = address
        self.lane = lane_settings(lane)
        self.chunk_size = chunk_size
        self.method = method
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._choice = TransportChoice(
            address,
            transport if method == SERVE_HTTP_METHOD else "call",
            describer(self._open_channel),
            log,
            address=address,
            lane=lane,
        )
        self._pool: MuxPool | None = None

    def _open_channel(self) -> grpc.aio.Channel:
        self.open()
        assert self._channel is not None
        return self._channel

    @property
    def transport(self) -> str | None:
        """The transport in use: "lane", "mux" or "call"; None until the first request decides."""
        return self._choice.chosen

    def open_streams(self) -> int:
        """Streams open on the multiplexed connection (0 once all ended)."""
        return self._pool.open_streams() if self._pool is not None else 0

    async def _open_call(self) -> Any:
        chosen = await self._choice.get()
        if chosen in ("mux", "lane"):
            if self._pool is None:
                carrier = None
                if chosen == "lane":
                    chunk = max(self.chunk_size, _MIN_RECEIVE_CHUNK)
                    record = max(BATCH_LIMIT, chunk + _HEADROOM) + _HEADROOM
                    carrier = functools.partial(
                        LaneCarrier, self.address, self._lane_path, record, self.lane
                    )
                self._pool = MuxPool(
                    self._open_channel,
                    window=flow_window(self.chunk_size),
                    carrier_factory=carrier,
                )
            return self._pool.open_call()
        return self._stub()

    async def _lane_path(self) -> str:
        info = self._choice.info
        if info is None:
            info = await describer(self._open_channel)()
        return lane_or_unavailable(self.address, info, self.address)

    async def __aenter__(self) -> PluginClient:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def open(self) -> None:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                grpc_target(self.address), options=channel_options(self.chunk_size)
            )
            self._stub = self._channel.stream_stream(
                self.method, request_serializer=None, response_deserializer=None
            )

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: HeadersArg = None,
        body: Body = None,
        query: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
        host: str = "",
        remote_addr: str = "",
        content_length: int | None = None,
        context: http_pb2.PluginContext | None = None,
        timeout: float | None = None,
    ) -> _RequestContext:
        """Start a request; the returned object is awaitable and an async context manager.

        ``body`` is bytes-like, an (async) iterable of bytes-like chunks, or
        None. ``content_length`` defaults to the length of a bytes-like body,
        else unknown. ``timeout`` bounds the wait for the response init.
        """
        return _RequestContext(
            self._request(
                method,
                path,
                headers,
                body,
                query,
                host,
                remote_addr,
                content_length,
                context,
                timeout,
            )
        )

    async def _request(
        self,
        method: str,
        path: str,
        headers: HeadersArg,
        body: Body,
        query: Any,
        host: str,
        remote_addr: str,
        content_length: int | None,
        context: http_pb2.PluginContext | None,
        timeout: float | None,
    ) -> ClientResponse:
        if isinstance(body, str):
            raise TypeError("body must be bytes-like or an iterable of bytes-like chunks, not str")
        if self._channel is None:
            self.open()
        url = path
        if query:
            items = query.items() if isinstance(query, Mapping) else query
            url = f"{path}?{urlencode(list(items))}"
        if content_length is None:
            content_length = -1
            if body is None:
                content_length = 0
            elif _is_buffer(body):
                content_length = memoryview(body).nbytes
        header_items: Iterable[tuple[Any, Any]] = (
            headers.items() if isinstance(headers, Mapping) else (headers or ())
        )
        init = http_pb2.ServeHTTPRequestInit(
            method=method.upper(),
            url=url,
            request_uri=url,
            proto="HTTP/1.1",
            proto_major=1,
            proto_minor=1,
            headers=headers_to_proto(header_items),
            host=host,
            remote_addr=remote_addr,
            content_length=content_length,
            plugin_context=context,
        )
        init_message = http_pb2.ServeHTTPRequest(init=init).SerializeToString()

        call = await self._open_call()
        writer = _Writer(call)
        sender = asyncio.ensure_future(_send_request(writer, init_message, body, self.chunk_size))
        sender.add_done_callback(_retrieve)
        try:
            try:
                if timeout is None:
                    message = await call.read()
                else:
                    message = await asyncio.wait_for(call.read(), timeout)
            except asyncio.CancelledError:
                raise _sender_error(sender) or asyncio.CancelledError() from None
            if message is grpc.aio.EOF:
                code = await call.code()
                details = await call.details()
                raise PluginCallError(
                    f"plugin ended the call without a response ({code.name} {details})",
                    code,
                    details,
                )
            try:
                frame = decode_response_frame(message)
                if frame.init is None:
                    raise ProtocolError("first response message carries no init")
                resp_init = http_pb2.ServeHTTPResponseInit.FromString(frame.init)
            except (ValueError, DecodeError) as exc:
                raise ProtocolError(f"malformed response init: {exc}") from exc
            status = resp_init.status_code or 200
            if not 100 <= status <= 999:
                raise InvalidStatus(status)
            return ClientResponse(
                call,
                sender,
                status,
                headers_from_proto(resp_init.headers),
                frame.body,
                frame.complete,
                frame.flush,
                writer,
            )
        except grpc.aio.AioRpcError as exc:
            await _abandon(call, sender)
            sent_error = _sender_error(sender)
            if sent_error is not None:
                raise sent_error from exc
            raise PluginCallError(
                f"plugin call failed: {exc.code().name} {exc.details()}",
                exc.code(),
                exc.details(),
            ) from None
        except BaseException:
            await _abandon(call, sender)
            raise



def _sender_error(sender: asyncio.Task[None]) -> BaseException | None:
    if sender.done() and not sender.cancelled():
        return sender.exception()
    return None


async def _abandon(call: grpc.aio.StreamStreamCall, sender: asyncio.Task[None]) -> None:
    # An abandoned grpc.aio call is never collected, hence never cancelled
    # (grpc#43462): always cancel explicitly.
    call.cancel()
    await _stop_sender(sender)


async def _stop_sender(sender: asyncio.Task[None]) -> None:
    if not sender.done():
        sender.cancel()
        # wait() rather than await: a cancel of this task still propagates,
        # and the sender's own outcome is not raised here.
        await asyncio.wait((sender,))


def _retrieve(task: asyncio.Task[None]) -> None:
    # The sender's error, if any, is raised where it matters (_sender_error);
    # mark it retrieved so asyncio does not log it again.
    if not task.cancelled():
        task.exception()


def __getattr__(name: str) -> Any:
    # httpx is optional: only the transport needs it.
    if name == "AsyncPluginTransport":
        from .httpx_transport import AsyncPluginTransport

        return AsyncPluginTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AsyncPluginTransport", "ClientResponse", "PluginClient"]
