"""The plugin side of the multiplexed transport: many requests on one Connect call.

Each stream drives the same Request/RequestBody/Response objects as a
ServeHTTP call, through the seams they already have: the body reads
messages from the stream's queue, the response writes frames into the
connection's batches. What the call transport infers from EOF timing is
explicit here: RESET cancels the handler, DELIVERED resolves
``response.finished``, CONTINUE asks for the body. No grace period exists.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from .._core import FrameError, decode_batch, decode_request_frame, decode_response_frame
from .._proto import http_pb2
from .._wire import flow_window
from ..errors import ClientDisconnected, ProtocolError
from ..transport.mux import (
    Connection,
    CreditAvailable,
    DataReceived,
    MuxError,
    ResetCode,
    StreamDelivered,
    StreamOpened,
    StreamReset,
)
from ..transport.sender import BatchSender, ResponseBody
from .handling import (
    aborted_reason,
    answer_failure,
    checked_init,
    expects_continue,
    failed_mid_response,
    matched,
    route,
)
from .request import Request, RequestBody
from .response import Response
from .stream_credit import CreditedStream
from .websocket_stream import open_session

if TYPE_CHECKING:
    from .app import Plugin
    from .plugin_service import PluginServiceHandler

log = logging.getLogger("chunkwire.plugin")

_EOF = object()  # the request messages of a closed stream have ended
_READ_EOF = grpc.aio.EOF  # what the context's read() returns at the end
class _Stop(Exception):
    """Ends a lane's pump: the batch's error (the connection fails), or None
    for a sender that broke."""

    def __init__(self, error: BaseException | None) -> None:
        super().__init__(error)
        self.error = error


_CLOSED = object()  # the gateway ended the connection
_CLIENT_GONE = "the client went away; the response cannot be sent"


class _Sent:
    __slots__ = ()
    __await__ = ().__iter__  # type: ignore[assignment]  # an empty iterator: done at once


_SENT = _Sent()  # what write_frame and write_body return once the frame is queued


class _Stream(CreditedStream):
    """One request on the connection: its received messages and its response's writes."""

    __slots__ = (
        "_conn",
        "_credit",
        "_draining",
        "_gone",
        "_messages",
        "_waiter",
        "response",
        "stream_id",
        "task",
    )

    def __init__(self, conn: _PluginConnection, stream_id: int) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self._messages: deque[memoryview] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._credit: asyncio.Future[None] | None = None
        self._gone: ClientDisconnected | None = None
        self._draining = False
        self.response: Response | None = None
        self.task: asyncio.Task[None] | None = None

    # -- driven by the connection -------------------------------------------------

    def received(self, payload: memoryview) -> None:
        if self._draining:
            self._conn.consumed(self.stream_id, payload.nbytes)
            return
        self._messages.append(payload)
        self._wake()

    def drain(self) -> None:
        """The handler is done: take and drop what the request still sends.

        The gateway keeps sending a body the handler left unread until the
        response reaches its client; taking it keeps that sender from
        waiting for credit that would never come.
        """
        self._draining = True
        messages = self._messages
        while messages:
            self._conn.consumed(self.stream_id, messages.popleft().nbytes)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        credit = self._credit
        if credit is not None and not credit.done():
            credit.set_result(None)

    def watch_delivery(self) -> None:
        """The response's delivery hook: bound ``await response.finished``
        by the plugin's finish_timeout.

        Armed only once someone awaits it (Response calls this hook when the
        response is complete and wanted): no timer per request otherwise.
        The stream lets go of the hook when it closes.
        """
        response = self.response
        if response is None:
            return
        future = response._finished_future()
        if future.done() or response._delivery_hook is None:
            return
        response._delivery_hook = None
        timeout = self._conn.plugin.finish_timeout
        timer = self._conn.loop.call_later(
            timeout,
            response._resolve,
            TimeoutError(f"no delivery acknowledgement within {timeout:g} s"),
        )
        future.add_done_callback(lambda _: timer.cancel())

    def credit(self) -> None:
        credit = self._credit
        if credit is not None and not credit.done():
            credit.set_result(None)

    def closed(self, error: ClientDisconnected | None) -> None:
        """Reset, delivered, or the connection ended: no more frames either way.

        Settles ``response.finished`` (delivered, or ClientDisconnected). A
        reset drops what is queued at once (the views hold whole received
        batches). The stream lets go of its response: the response's send
        refers back to the stream, and that cycle would keep both, and what
        they hold, until a gc pass.
        """
        if self._gone is None:
            self._gone = error or ClientDisconnected("the response was delivered")
        if error is not None:
            self._messages.clear()  # reset: nobody may read them
        response, self.response = self.response, None
        if response is not None:
            response._delivery_hook = None
            response._resolve(None if error is None else ClientDisconnected(*error.args))
        self._wake()

    # -- seams of RequestBody and Response ------------------------------------------

    async def read_message(self) -> Any:
        while True:
            messages = self._messages
            if messages:
                payload = messages.popleft()
                self._conn.consumed(self.stream_id, payload.nbytes)
                return payload
            if self._gone is not None:
                return _EOF
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def write(self, frame: bytes) -> None:
        await self.write_frame(frame, decode_response_frame(frame).complete)

    # write_frame and write_body queue the frame at once when the stream has
    # credit (the common case) and return an awaitable that is already done;
    # otherwise the returned coroutine waits for credit first.

    def write_frame(self, frame: bytes, complete: bool) -> Awaitable[None]:
        """An encoded response message and its body_complete (Response's ``send_frame``)."""
        proto = self._conn.proto
        if not proto.can_send(self.stream_id):
            return self._send_later(frame, complete)
        proto.send_data(self.stream_id, frame, end=complete)
        self._conn.sender.kick()
        return _SENT

    def write_body(self, body: memoryview, complete: bool, flush: bool) -> Awaitable[None]:
        """A body frame the batch encodes from ``body`` itself (Response's ``send_body``)."""
        proto = self._conn.proto
        if not proto.can_send(self.stream_id):
            return self._send_later(ResponseBody(body, complete, flush), complete)
        proto.send_data(self.stream_id, ResponseBody(body, complete, flush), end=complete)
        self._conn.sender.kick()
        return _SENT

    async def _send_later(self, payload: bytes | ResponseBody, complete: bool) -> None:
        await self._wait_credit(_CLIENT_GONE)
        self._conn.proto.send_data(self.stream_id, payload, end=complete)
        self._conn.sender.kick()

    async def ask_for_body(self) -> None:
        response = self.response
        if response is not None and response.headers_sent:
            return
        if self.stream_id in self._conn.proto.streams:
            self._conn.proto.request_body(self.stream_id)
            self._conn.sender.kick()


class _PluginConnection:
    def __init__(self, servicer: MuxServicer, context: grpc.aio.ServicerContext) -> None:
        self.servicer = servicer
        self.plugin = servicer.plugin
        self.context = context
        self.proto = Connection(opener=False, window=flow_window(self.plugin.chunk_size))
        # A same-host lane's context (transport/lane.py) brings its own sender and decoder.
        make_sender = getattr(context, "sender", None)
        if make_sender is None:
            self.sender = BatchSender(self.proto, context.write)
        else:
            self.sender = make_sender(self.proto)
        # Response bodies left for the batch to encode (ResponseBody): only
        # BatchSender's own loop and a lane's sender that says so take them.
        self.encodes_bodies = make_sender is None or getattr(context, "takes_bodies", False)
        self._decode = getattr(context, "decode", decode_batch)
        self.streams: dict[int, _Stream] = {}
        self.loop = asyncio.get_running_loop()

    def consumed(self, stream_id: int, size: int) -> None:
        self.proto.consumed(stream_id, size)
        if self.proto.has_frames:
            self.sender.kick()

    async def run(self) -> None:
        self.sender.start()
        self.sender.kick()  # a larger connection window, if any
        reason = "the gateway closed the connection"
        read = self.context.read
        sender = self.sender
        pump = getattr(self.context, "pump", None)
        try:
            if pump is not None:
                # A lane hands each batch over from its socket's callback as
                # it arrives: no task step per batch.
                try:
                    await pump(self._apply_or_stop)
                except _Stop as stop:
                    if stop.error is None:
                        reason = "the connection broke"
                    else:
                        await self._fail(stop.error)
                        return
                await self._end(reason)
                return
            while True:
                # The batch is applied in a call of its own: nothing here
                # holds it (or its frames) while the next read waits.
                error = self._apply(await read())
                if error is _CLOSED:
                    break
                if error is not None:
                    await self._fail(error)
                    return
                if sender.failed is not None and sender.done:
                    reason = "the connection broke"
                    break
        except asyncio.CancelledError:
            await self._end("the connection was cancelled")
            raise
        except Exception as exc:
            reason = f"the connection broke: {exc!r}"
        await self._end(reason)

    async def _fail(self, error: BaseException) -> None:
        what = "malformed batch: " if isinstance(error, FrameError) else ""
        reason = f"connection failed: {what}{error}"
        log.warning("multiplexed connection failed: %s%s", what, error)
        await self._end(reason)
        await self.context.abort(grpc.StatusCode.INVALID_ARGUMENT, reason[:200])

    def _apply_or_stop(self, data: Any) -> None:
        """``_apply`` as a lane's pump calls it: _Stop ends the pumping."""
        error = self._apply(data)
        if error is not None:
            raise _Stop(error)  # type: ignore[arg-type]
        sender = self.sender
        if sender.failed is not None and sender.done:
            raise _Stop(None)

    def _apply(self, data: Any) -> object:
        """One received batch: None, _CLOSED at the end, or the error that fails the connection."""
        if data is _READ_EOF:
            return _CLOSED
        try:
            events = self.proto.receive(self._decode(data))
        except (FrameError, MuxError) as exc:
            return exc
        handlers = _HANDLERS
        for event in events:
            handler = handlers.get(type(event))
            if handler is not None:
                handler(self, event)
        if self.proto.has_frames:
            self.sender.kick()
        return None

    async def _end(self, reason: str) -> None:
        for event in self.proto.lost(reason):
            self._closed(event.stream_id, ClientDisconnected(f"the client went away ({reason})"))
        tasks = [s.task for s in self.streams.values() if s.task is not None]
        for stream in list(self.streams.values()):
            self._closed(stream.stream_id, ClientDisconnected(reason))
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.sender.close()

    def _on_data(self, event: DataReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.received(event.payload)
        else:
            self.proto.consumed(event.stream_id, len(event.payload))

    def _on_credit(self, event: CreditAvailable) -> None:
        if event.stream_id == 0:
            for stream in self.streams.values():
                stream.credit()
        else:
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.credit()

    def _on_open(self, event: StreamOpened) -> None:
        if event.websocket:
            self._open_session(event.stream_id, event.payload)
        else:
            self._open(event.stream_id, event.payload, event.end)

    def _on_delivered(self, event: StreamDelivered) -> None:
        stream = self._forget(event.stream_id)
        if stream is not None:
            stream.closed(None)

    def _on_reset(self, event: StreamReset) -> None:
        reason = event.reason or ResetCode(event.code).name.lower()
        self._closed(event.stream_id, ClientDisconnected(f"the client went away ({reason})"))

    def _forget(self, stream_id: int) -> _Stream | None:
        # A request counts as active until its stream closes (delivered or
        # reset), as a ServeHTTP call does until its RPC ends. WebSocket
        # sessions are no requests (nor are ServeWebSocket calls counted).
        stream = self.streams.pop(stream_id, None)
        if type(stream) is _Stream:
            self.servicer.active -= 1
        return stream

    def _closed(self, stream_id: int, error: ClientDisconnected) -> None:
        stream = self._forget(stream_id)
        if stream is None:
            return
        stream.closed(error)
        task = stream.task
        if task is not None and not task.done():
            task.cancel()

    def _open(self, stream_id: int, payload: memoryview, end: bool) -> None:
        try:
            frame = decode_request_frame(payload)
            init = checked_init(self.plugin, frame)
            if frame.complete != end:
                raise ProtocolError("body_complete and the END flag disagree")
        except (FrameError, DecodeError, ProtocolError) as exc:
            self.proto.reset(stream_id, ResetCode.PROTOCOL, f"bad request init: {exc}")
            return
        stream = _Stream(self, stream_id)
        self.streams[stream_id] = stream
        self.servicer.active += 1
        stream.task = self.loop.create_task(self._serve(stream, init, frame.body, frame.complete))

    def _open_session(self, stream_id: int, payload: memoryview) -> None:
        session = open_session(self, stream_id, payload)
        if session is not None:
            self.streams[stream_id] = session  # type: ignore[assignment]

    async def _serve(
        self,
        stream: _Stream,
        init: http_pb2.ServeHTTPRequestInit,
        first: memoryview,
        complete: bool,
    ) -> None:
        plugin = self.plugin
        response = Response(
            stream.write,
            plugin.chunk_size,
            high_water_mark=plugin.high_water_mark,
            send_body=stream.write_body if self.encodes_bodies else None,
            send_frame=stream.write_frame,
        )
        stream.response = response
        response._delivery_hook = stream.watch_delivery
        length = init.content_length
        content_length = length if length >= 0 else None
        # A complete body is never asked for (RequestBody ignores ``ask``).
        ask = stream.ask_for_body if not complete and expects_continue(init) else None
        body = RequestBody(
            first,
            complete,
            stream.read_message,
            _EOF,
            content_length,
            ask,
            max_chunk_size=plugin.max_chunk_size,
        )
        request = Request(init, body)
        try:
            # Routing and the handler run here, not in coroutines of their
            # own (``run_handler``'s steps): one request, one coroutine.
            handler = matched(plugin, request)
            if handler is None:
                handler = await route(plugin, request, response)
            if handler is not None:
                error = None
                try:
                    await handler(request, response)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    error = exc
                if error is not None:
                    await self._failed(stream, request, response, error)
                elif stream.stream_id not in self.proto.streams:
                    pass  # reset meanwhile (a handler that swallowed the cancellation)
                elif response.aborted:
                    self._reset_aborted(stream, response)
                elif not response.complete:
                    await response.end()
        except asyncio.CancelledError:
            response._resolve(ClientDisconnected("the client went away"))
        except ClientDisconnected as exc:
            response._resolve(ClientDisconnected(*exc.args))
        finally:
            stream.task = None
            stream.drain()

    def _reset(self, stream: _Stream, code: ResetCode, reason: str) -> None:
        if self.proto.reset(stream.stream_id, code, reason):
            self.sender.kick()
        self._forget(stream.stream_id)
        stream.closed(ClientDisconnected(reason))

    def _reset_aborted(self, stream: _Stream, response: Response) -> None:
        self._reset(stream, ResetCode.ABORTED, aborted_reason(response))

    async def _failed(
        self, stream: _Stream, request: Request, response: Response, exc: Exception
    ) -> None:
        if stream.stream_id not in self.proto.streams:
            return  # the client is gone: nobody to answer
        if response.aborted:
            self._reset_aborted(stream, response)
            return
        if response.headers_sent:
            reason = failed_mid_response(request, response, exc)
            self._reset(stream, ResetCode.INTERNAL, reason)
            return
        await answer_failure(request, response, exc)


# The connection's handler of each event, by its exact class (the
# protocol's own dataclasses); other events need nothing here.
_HANDLERS: dict[type, Callable[[_PluginConnection, Any], None]] = {
    DataReceived: _PluginConnection._on_data,
    CreditAvailable: _PluginConnection._on_credit,
    StreamOpened: _PluginConnection._on_open,
    StreamDelivered: _PluginConnection._on_delivered,
    StreamReset: _PluginConnection._on_reset,
}


class MuxServicer:
    """Serves ``Connect``: one connection per call, many requests per connection."""

    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin
        self.active = 0
        self.connections: set[_PluginConnection] = set()
        self._tasks: dict[_PluginConnection, asyncio.Task[Any]] = {}
        self._drained: set[_PluginConnection] = set()
        self._watchers: set[asyncio.Task[None]] = set()

    async def connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        conn = _PluginConnection(self, context)
        self.connections.add(conn)
        task = asyncio.current_task()
        if task is not None:
            self._tasks[conn] = task
        try:
            await conn.run()
        except asyncio.CancelledError:
            if conn not in self._drained:
                raise
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+
            if uncancel is not None:
                uncancel()  # drained after GOAWAY: the call ends as finished
        finally:
            self.connections.discard(conn)
            self._tasks.pop(conn, None)
            self._drained.discard(conn)

    def go_away(self) -> None:
        """Refuse new streams on every connection; those running finish, then
        each connection ends (its call returns) instead of waiting for the
        server's grace period."""
        for conn in self.connections:
            conn.proto.go_away()
            conn.sender.kick()
            watcher = asyncio.get_running_loop().create_task(self._end_when_drained(conn))
            self._watchers.add(watcher)
            watcher.add_done_callback(self._watchers.discard)

    async def _end_when_drained(self, conn: _PluginConnection) -> None:
        # Polled: only while stopping (the lane's close waits the same way).
        while conn.streams or conn.proto.streams or conn.proto.has_frames or conn.sender.busy:
            if conn not in self.connections:
                return
            await asyncio.sleep(0.02)
        task = self._tasks.get(conn)
        if task is not None and not task.done():
            self._drained.add(conn)
            task.cancel()

    @property
    def busy(self) -> bool:
        """A connection has frames queued or a batch in gRPC's hands."""
        return any(conn.sender.busy for conn in self.connections)

    def open_streams(self) -> int:
        """Streams in the tables of every connection (for leak checks)."""
        return sum(len(c.proto.streams.keys() | c.streams.keys()) for c in self.connections)


def serve_mux(service: PluginServiceHandler, plugin: Plugin) -> MuxServicer:
    """Add ``Connect`` to the plugin's service, and "mux" to what Describe offers."""
    servicer = MuxServicer(plugin)
    if "mux" in plugin.transports:
        service.transports.append("mux")
        service.mux_streams.append("websocket")
        service.add(
            "Connect",
            grpc.stream_stream_rpc_method_handler(
                servicer.connect, request_deserializer=None, response_serializer=None
            ),
        )
    return servicer
