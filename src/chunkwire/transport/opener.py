"""The opener's side of the multiplexed transport: gateway and PluginClient.

:class:`MuxCall` is one stream with the interface the call transport's code
uses from a ``grpc.aio`` stream-stream call (``write``, ``read``,
``done_writing``, ``cancel``, ``done``, ``initial_metadata``, ``code``,
``details``). That is deliberate: the gateway's Forward and PluginClient,
and everything they enforce (response-head checks, limits, timeouts,
Expect handling, disconnects), then run unchanged on both transports, so
every rule holds on both by construction and one test suite covers both.
The mapping:

- ``write(message)``: the first is the OPEN frame, later ones DATA frames
  (END when the message carries body_complete); waits for credit;
- ``read()``: the next response message (credit is granted back as each
  is handed out); EOF once the stream was delivered; a RESET or a broken
  connection raises ``grpc.aio.AioRpcError`` as a failed call would;
- ``done_writing()``: DELIVERED, once the response has ended (the call
  transport's half-close after the last response byte);
- ``cancel()``: RESET(CANCEL);
- ``initial_metadata()``: ``chunkwire-continue: 1`` when CONTINUE arrives,
  empty when the response starts first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio

from .._core import FrameError, ResponseFrame, decode_batch, decode_request_frame
from . import CONNECT_METHOD
from .lane import RingBody
from .mux import (
    Connection,
    ContinueRequested,
    CreditAvailable,
    DataReceived,
    GoAwayReceived,
    MuxError,
    ResetCode,
    StreamReset,
)
from .sender import BATCH_LIMIT, BatchSender

log = logging.getLogger("chunkwire.transport")

# DELIVERED is no reason to send a batch of its own: it rides with the next
# frames (at c=1, the next request's OPEN), or leaves alone once no batch
# went out for this long. Measured at concurrency 1 it saves one of the three
# gRPC messages per request.
DELIVERED_DELAY = 0.002

CONTINUE_METADATA = grpc.aio.Metadata(("chunkwire-continue", "1"))
_NO_METADATA = grpc.aio.Metadata()

_RESET_STATUS = {
    ResetCode.CANCEL: grpc.StatusCode.CANCELLED,
    ResetCode.REFUSED: grpc.StatusCode.UNAVAILABLE,
    ResetCode.INTERNAL: grpc.StatusCode.INTERNAL,
    ResetCode.PROTOCOL: grpc.StatusCode.INTERNAL,
    ResetCode.FLOW_CONTROL: grpc.StatusCode.INTERNAL,
    ResetCode.ABORTED: grpc.StatusCode.ABORTED,
}


def _reset_name(code: int) -> str:
    try:
        return ResetCode(code).name
    except ValueError:
        return f"code {code}"


def _error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, _NO_METADATA, _NO_METADATA, details=details)


def _ring_frame(first: RingBody, end: bool, messages: deque[Any]) -> tuple[Any, bool, int]:
    """``first`` and the ring bodies right after it in one buffer, as one
    ResponseFrame (a single view: one write to the client, no join); its
    end flag and the credit size of the DATA frames taken. Stops after a
    flush or the last frame."""
    last = first
    size = first.nbytes
    buffer = first.buffer
    while messages and not end and not last.flush:
        body, more_end = messages[0]
        if type(body) is not RingBody or body.buffer is not buffer or body.start != last.end:
            break
        messages.popleft()
        size += body.nbytes
        last = body
        end = more_end
    start, stop = first.start, last.end
    view = buffer if start == 0 and stop == len(buffer) else memoryview(buffer)[start:stop]
    return ResponseFrame(None, view, last.complete, last.flush), end, size


class MuxCall:
    """One stream on a :class:`MuxConnection`, shaped like a grpc.aio call (see the module)."""

    __slots__ = (
        "_conn",
        "_credit",
        "_delivered",
        "_error",
        "_messages",
        "_metadata",
        "_response_ended",
        "_settled",
        "_state",
        "_waiter",
        "_writing_done",
        "frames",
        "stream_id",
    )

    def __init__(self, conn: MuxConnection) -> None:
        self._conn = conn
        self.stream_id = 0  # assigned by the first write (OPEN)
        self._messages: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._credit: asyncio.Future[None] | None = None
        # The initial metadata once settled; a future only while someone waits for it.
        self._settled: grpc.aio.Metadata | None = None
        self._metadata: asyncio.Future[grpc.aio.Metadata] | None = None
        self._state = "open"  # open, delivered, cancelled, failed
        self._error: grpc.aio.AioRpcError | None = None
        self._response_ended = False
        self._writing_done = False
        self._delivered = False
        # The reader takes decoded frames where the lane hands bodies on
        # undecoded (RingBody): read() returns a ResponseFrame for those.
        self.frames = False

    # -- the grpc.aio call interface --------------------------------------------------

    def done(self) -> bool:
        return self._state != "open"

    def cancel(self) -> bool:
        if self._state != "open":
            return False
        self._state = "cancelled"
        self._messages.clear()
        if self.stream_id:
            self._conn.reset(self.stream_id, ResetCode.CANCEL, "cancelled by the client")
        self._settle_metadata()
        self._wake()
        return True

    async def write(self, message: Any) -> None:
        self._check_writable()
        conn = self._conn
        end = decode_request_frame(message).complete
        if not self.stream_id:
            try:
                self.stream_id = conn.open(self, message, end)
            except grpc.aio.AioRpcError as error:
                # The connection broke before this stream opened: the call
                # fails as a grpc.aio call does, so a reader waiting on it
                # gets the error too.
                self.failed(error)
                raise
            return
        await self._wait_credit("the stream has ended")
        proto = conn.proto
        sid = self.stream_id
        state = proto.streams[sid]
        if not state.local_open:
            raise asyncio.InvalidStateError("the request already ended")
        proto.send_data(sid, message, end=end)
        conn.sender.kick()

    async def _wait_credit(self, ended: str) -> None:
        """Return once the stream may send (and is still writable); cancelled, it resets."""
        proto = self._conn.proto
        sid = self.stream_id
        while not proto.can_send(sid):
            self._check_writable()
            if sid not in proto.streams:
                raise asyncio.InvalidStateError(ended)
            self._credit = self._conn.loop.create_future()
            try:
                await self._credit
            except asyncio.CancelledError:
                self.cancel()
                raise
            finally:
                self._credit = None
        self._check_writable()

    def _check_writable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._state != "open" or self._writing_done:
            raise asyncio.InvalidStateError("the stream has ended")

    async def done_writing(self) -> None:
        if self._writing_done:
            return
        self._check_writable()
        self._writing_done = True
        if self._response_ended:
            self._deliver()

    def ready(self) -> bool:
        """A response message is here: ``read()`` returns it without waiting."""
        return bool(self._messages)

    async def read(self) -> Any:
        while True:
            messages = self._messages
            if messages:
                payload, end = messages.popleft()
                conn = self._conn
                if type(payload) is RingBody:
                    if self.frames:
                        payload, end, size = _ring_frame(payload, end, messages)
                    else:
                        size = payload.nbytes
                        payload = payload.message()
                else:
                    size = payload.nbytes
                conn.consumed(self.stream_id, size)
                if end:
                    self._response_ended = True
                    if self._writing_done:
                        self._deliver()
                elif type(payload) is ResponseFrame and conn.sender.busy:
                    # Ring bodies go on to a client write that takes a while:
                    # the credit they free leaves first, so that the plugin
                    # writes the next ones meanwhile.
                    try:
                        await asyncio.sleep(0)
                    except asyncio.CancelledError:
                        self.cancel()
                        raise
                return payload
            if self._error is not None:
                raise self._error
            if self._state == "cancelled":
                raise asyncio.CancelledError
            if self._state == "delivered" or self._response_ended:
                return grpc.aio.EOF
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            except asyncio.CancelledError:
                self.cancel()  # as grpc.aio does with a call whose read is cancelled
                raise
            finally:
                self._waiter = None

    async def initial_metadata(self) -> grpc.aio.Metadata:
        if self._settled is None and (self._state != "open" or self._messages):
            self._settled = _NO_METADATA
        if self._settled is not None:
            return self._settled
        if self._metadata is None:
            self._metadata = asyncio.get_running_loop().create_future()
        return await asyncio.shield(self._metadata)

    async def code(self) -> grpc.StatusCode:
        return self._error.code() if self._error is not None else grpc.StatusCode.OK

    async def details(self) -> str:
        return (self._error.details() or "") if self._error is not None else ""

    # -- driven by the connection -------------------------------------------------------

    def _deliver(self) -> None:
        if self._state == "open":
            self._state = "delivered"
            self._conn.deliver(self.stream_id)

    def _wake(self) -> None:
        for future in (self._waiter, self._credit):
            if future is not None and not future.done():
                future.set_result(None)

    def _settle_metadata(self, metadata: grpc.aio.Metadata = _NO_METADATA) -> None:
        if self._settled is not None:
            return
        self._settled = metadata
        future = self._metadata
        if future is not None and not future.done():
            future.set_result(metadata)

    def received(self, payload: Any, end: bool) -> None:
        self._messages.append((payload, end))
        self._settle_metadata()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def credit(self) -> None:
        credit = self._credit
        if credit is not None and not credit.done():
            credit.set_result(None)

    def continue_requested(self) -> None:
        self._settle_metadata(CONTINUE_METADATA)

    def failed(self, error: grpc.aio.AioRpcError) -> None:
        if self._state == "open":
            self._state = "failed"
            self._error = error  # read() still hands out what arrived before
        self._settle_metadata()
        self._wake()


class MuxConnection:
    """One Connect call and the streams on it."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        window: int,
        on_closed: Any = None,
        batch_limit: int = BATCH_LIMIT,
        carrier: Any = None,
    ) -> None:
        self.proto = Connection(opener=True, window=window)
        self.loop = asyncio.get_running_loop()
        # The carrier moves batches: a Connect call, or a same-host lane
        # (transport/lane.py) with the same read/write/cancel calls.
        if carrier is None:
            self._call = channel.stream_stream(
                CONNECT_METHOD, request_serializer=None, response_deserializer=None
            )()
            self.sender = BatchSender(self.proto, self._call.write, batch_limit)
            self._decode = decode_batch
        else:
            self._call = carrier
            self.sender = carrier.sender(self.proto, batch_limit)
            self._decode = carrier.decode
        self.calls: dict[int, MuxCall] = {}
        self.closed = False
        self.proven = False  # a batch arrived: the plugin took the connection
        self.error: grpc.aio.AioRpcError | None = None
        self._on_closed = on_closed
        self._reader: asyncio.Task[None] | None = None
        self._late_kick: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.sender.start()
        self._reader = self.loop.create_task(self._read())

    @property
    def usable(self) -> bool:
        return not self.closed and self.proto.goaway_received is None

    @property
    def load(self) -> int:
        return len(self.calls)

    def new_call(self) -> MuxCall:
        return MuxCall(self)

    def open(self, call: MuxCall, message: Any, end: bool, websocket: bool = False) -> int:
        if self.closed:
            raise self.error or _error(grpc.StatusCode.UNAVAILABLE, "connection closed")
        sid = self.proto.open(message, end=end, websocket=websocket)
        self.calls[sid] = call
        self.sender.kick()
        return sid

    def reset(self, stream_id: int, code: ResetCode, reason: str) -> None:
        self.calls.pop(stream_id, None)
        if self.proto.reset(stream_id, code, reason):
            self.sender.kick()

    def deliver(self, stream_id: int) -> None:
        self.calls.pop(stream_id, None)
        if stream_id in self.proto.streams:
            self.proto.deliver(stream_id)
            if self._late_kick is None:
                self._late_kick = self.loop.call_later(
                    DELIVERED_DELAY, self._kick_late
                )

    def _kick_late(self) -> None:
        # While batches keep leaving, the next one takes what is queued: a
        # DELIVERED alone would cost both processes a wake-up.
        self._late_kick = None
        if not self.proto.has_frames:
            return  # it left with a batch meanwhile
        loop = self.loop
        due = self.sender.sent_at + DELIVERED_DELAY
        if due > loop.time():
            self._late_kick = loop.call_at(due, self._kick_late)
        else:
            self.sender.kick()

    def consumed(self, stream_id: int, size: int) -> None:
        self.proto.consumed(stream_id, size)
        if self.proto.has_frames:
            self.sender.kick()

    async def _read(self) -> None:
        call = self._call
        # A lane hands each batch over from its socket's callback as it
        # arrives (no task step per batch); a Connect call is read here.
        pump = getattr(call, "pump", None)
        error: grpc.aio.AioRpcError
        try:
            while True:
                if pump is not None:
                    await pump(self._received)
                    data = grpc.aio.EOF
                else:
                    data = await call.read()
                if data is grpc.aio.EOF:
                    code = await call.code()
                    details = await call.details()
                    error = _error(
                        grpc.StatusCode.UNAVAILABLE,
                        f"the plugin ended the connection ({code.name} {details})",
                    )
                    break
                self._received(data)
                del data  # not held while the next read waits
        except grpc.aio.AioRpcError as exc:
            error = exc
        except (FrameError, MuxError) as exc:
            what = "malformed batch: " if isinstance(exc, FrameError) else ""
            log.warning("multiplexed connection failed: %s%s", what, exc)
            error = _error(
                grpc.StatusCode.INTERNAL, f"the plugin broke the protocol: {what}{exc}"
            )
        except asyncio.CancelledError:
            error = _error(grpc.StatusCode.CANCELLED, "the connection was closed")
        except Exception as exc:  # a failed write surfaces here too
            error = _error(grpc.StatusCode.UNAVAILABLE, f"the connection broke: {exc!r}")
        self._fail(error)

    def _received(self, data: Any) -> None:
        self.proven = True
        self._apply(data)

    def _apply(self, data: Any) -> None:
        for event in self.proto.receive(self._decode(data)):
            self._dispatch(event)
        if self.proto.has_frames:
            self.sender.kick()

    def _fail(self, error: grpc.aio.AioRpcError) -> None:
        if self.closed:
            return
        self.closed = True
        self.error = error
        if self._late_kick is not None:
            self._late_kick.cancel()
            self._late_kick = None
        self.proto.lost(error.details() or "")
        calls, self.calls = self.calls, {}
        for call in calls.values():
            call.failed(error)
        self._call.cancel()
        if self._on_closed is not None:
            self._on_closed(self)
        asyncio.get_running_loop().create_task(self.sender.close())

    def _dispatch(self, event: Any) -> None:
        if isinstance(event, DataReceived):
            call = self.calls.get(event.stream_id)
            if call is None:
                self.proto.consumed(event.stream_id, event.payload.nbytes)
            else:
                call.received(event.payload, event.end)
        elif isinstance(event, CreditAvailable):
            if event.stream_id == 0:
                for call in self.calls.values():
                    call.credit()
            else:
                call = self.calls.get(event.stream_id)
                if call is not None:
                    call.credit()
        elif isinstance(event, StreamReset):
            call = self.calls.pop(event.stream_id, None)
            if call is not None:
                status = _RESET_STATUS.get(event.code, grpc.StatusCode.INTERNAL)
                name = _reset_name(event.code)
                call.failed(_error(status, f"stream reset ({name}): {event.reason}"))
        elif isinstance(event, ContinueRequested):
            call = self.calls.get(event.stream_id)
            if call is not None:
                call.continue_requested()
        elif isinstance(event, GoAwayReceived) and self._on_closed is not None:
            self._on_closed(self)  # no new streams here; open ones finish

    async def close(self) -> None:
        if not self.closed:
            self._fail(_error(grpc.StatusCode.CANCELLED, "the connection was closed"))
        reader = self._reader
        if reader is not None and not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        await self.sender.close()


class MuxPool:
    """The multiplexed connections to one plugin, opened on demand.

    Every Connect call of a plugin rides the same gRPC channel, hence the
    same HTTP/2 connection, and both ends run one event loop: extra calls
    add no parallelism on the wire or in the processes, only another
    ordered queue and reader task, and fewer frames per batch. Measured
    (``chunkwire bench``'s loads, 64 KiB chunks, 2 cores, medians of 3
    interleaved rounds): 1 KiB requests at concurrency 64 ran at 2,781
    req/s on one connection, 2,157 on two, 2,121 on four; at concurrency
    1 and for 256 MiB downloads the sizes were within the noise of each
    other (647-702 req/s, 327-385 MB/s). So one connection carries every
    stream unless ``size`` asks for more.
    Streams go to the least loaded connection. A broken connection fails
    its streams; the next request opens a new one, except within a backoff
    (0.1 s doubling to 1 s) after connections that never reached the
    plugin, during which requests fail at once with that error (503), as
    gRPC's own channel backoff does on the call transport.
    """

    def __init__(
        self,
        channel_factory: Any,
        *,
        window: int,
        size: int = 1,
        batch_limit: Callable[[], int] = lambda: BATCH_LIMIT,
        carrier_factory: Callable[[], Any] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self._channel_factory = channel_factory
        self._window = window
        self._batch_limit = batch_limit
        self._carrier_factory = carrier_factory
        self.size = size
        self.connections: list[MuxConnection] = []
        self._backoff = 0.0
        self._retry_at = 0.0
        self._last_error: grpc.aio.AioRpcError | None = None

    def open_call(self, kind: Callable[[Any], MuxCall] = MuxCall) -> MuxCall:
        """A new stream (``kind``: MuxCall, or a subclass for other stream kinds)."""
        connections = self.connections
        if len(connections) == 1 and self.size == 1:
            conn = connections[0]
            if conn.usable:
                return kind(conn)
        live = [c for c in connections if c.usable]
        if len(live) < self.size:
            retry = self._last_error is not None and not live
            if retry and asyncio.get_running_loop().time() < self._retry_at:
                call = kind(None)
                call.failed(self._last_error)
                return call
            carrier = self._carrier_factory
            conn = MuxConnection(
                None if carrier else self._channel_factory(),
                window=self._window,
                on_closed=self._closed,
                batch_limit=self._batch_limit(),
                carrier=carrier() if carrier else None,
            )
            conn.start()
            self.connections.append(conn)
            live.append(conn)
        conn = min(live, key=lambda c: c.load)
        return kind(conn)

    def _closed(self, conn: MuxConnection) -> None:
        if conn.closed and conn in self.connections:
            self.connections.remove(conn)
        if conn.closed and not conn.proven:
            self._backoff = min(max(self._backoff * 2, 0.1), 1.0)
            self._retry_at = asyncio.get_running_loop().time() + self._backoff
            self._last_error = conn.error
        elif conn.proven:
            self._backoff = 0.0
            self._last_error = None

    def open_streams(self) -> int:
        return sum(len(c.proto.streams.keys() | c.calls.keys()) for c in self.connections)

    async def close(self) -> None:
        connections, self.connections = self.connections, []
        for conn in connections:
            await conn.close()
