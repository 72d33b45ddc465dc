"""One HTTP request forwarded over one ServeHTTP stream.

Two coroutines share the call: ``_pump`` moves the request body from ASGI
``receive`` into body frames (awaiting each gRPC write, so a slow plugin
stops the gateway reading from the client), and ``_relay`` turns response
frames into ASGI sends as they arrive.

The request stream is half-closed (``done_writing``) only after the last
response byte was handed to the client -- the final ``http.response.body``
send returned -- and after body_complete went out or the gateway stopped
sending the body: the plugin reads that end of stream as "delivered"
(``response.finished``), a cancelled call as "client gone".

``Expect: 100-continue``: the init leaves alone and ASGI ``receive()``
(which makes the server send "100 Continue") is not called until the
plugin's initial metadata asks for the body (``chunkwire-continue: 1``).
A response arriving first means the plugin answered without reading: no
"100 Continue" is ever sent, the body is not asked for (one the client sends
anyway is forwarded), and the connection closes after the answer.

Response framing is the gateway's (``response_head``): the head is checked
before it goes out, a declared Content-Length is enforced (more bytes or
fewer at the end abort the client connection, never a clean end), and 204,
304 and HEAD answers carry no body whatever the plugin sends.

Timeouts, as a proxy's: ``response_timeout`` runs from the end of the
request body (or, for ``Expect: 100-continue``, while the plugin has not
asked for it) to the response head; ``idle_timeout`` bounds each wait on
the plugin: a response frame after the head (the client connection is
aborted), or a request frame the plugin does not take (504 before the
head). A run of ``max_empty_frames`` frames with no body, flush or end is a
protocol error.

Everything that ends a request early (client gone, body too large, no
answer in time, plugin finished early) goes through ``call.cancel()`` plus
a recorded reason, never through cancelling a task that awaits a gRPC
operation: a task cancelled inside ``call.read()``/``call.write()`` leaks
that batch's C-side op array (grpc/grpc#43360).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math

import grpc
import grpc.aio

from .._core import decode_response_frame, encode_request_frame, join_request_frame
from .._errors import FrameError
from .response_head import BadResponse, check_raw_response_head
from .types import BODY_FOLLOWS, CHECKED_HEAD, Message, Receive, Send, WatchClient

log = logging.getLogger("chunkwire.gateway")

EOF = grpc.aio.EOF

_STATUS_GRACE = 5.0
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_MAX_EMPTY_FRAMES = 16
# Body messages smaller than this are copied as they arrive instead of
# being kept as views: a client sending one byte per segment then costs one
# byte per byte, not a bytes object and a view each.
_COPY_BELOW = 4096
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 32 * 1024 * 1024

CONTINUE_KEY = "chunkwire-continue"

_COMPLETE = encode_request_frame(b"", complete=True)


_CONTENT_LENGTH = b"content-length"

# Texts of a failed connection attempt, as gRPC core words them: the plugin
# was never reached (503), as opposed to a stream that broke (502).
_UNREACHABLE_HINTS = (
    "failed to connect",
    "connection refused",
    "no such file",
    "connect failed",
    "dns resolution failed",
    "name resolution",
    "deadline exceeded while waiting for connection",
)


class UpstreamAborted(Exception):
    """The plugin failed after the response started: the client connection must drop.

    The gateway has logged the reason (one line); raising is how an ASGI app
    makes the server drop the connection. ``quiet_aborts`` keeps the server
    from logging it again with a traceback.
    """


class _DropLoggedAborts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, UpstreamAborted)


_ABORT_FILTER = _DropLoggedAborts()


def quiet_aborts(logger_name: str = "uvicorn.error") -> None:
    """Drop the server's traceback for an abort the gateway already logged."""
    logger = logging.getLogger(logger_name)
    if _ABORT_FILTER not in logger.filters:
        logger.addFilter(_ABORT_FILTER)


def plain_response(status: int, text: str, *, close: bool = False) -> tuple[Message, Message]:
    body = text.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body, "more_body": False},
    )


async def send_plain(send: Send, status: int, text: str, *, close: bool = False) -> None:
    start, body = plain_response(status, text, close=close)
    await send(start)
    await send(body)


async def linger(receive: Receive, send: Send) -> None:
    """Finish a response sent before the request body was read.

    The response (with its length known) is already out, so the client has
    it; reading and discarding a bounded amount of the body before the
    connection closes keeps the kernel from answering the client's further
    data with a reset that can destroy that response before it is read
    (curl, mid-upload, then reports no status at all).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _LINGER_SECONDS
    budget = _LINGER_BYTES
    while budget > 0:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            message = await asyncio.wait_for(receive(), remaining)
        except asyncio.TimeoutError:
            break
        if message.get("type") != "http.request":
            break
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def send_plain_early(receive: Receive, send: Send, status: int, text: str) -> None:
    """``send_plain`` for an answer given while the client may still be sending."""
    start, body = plain_response(status, text, close=True)
    body["more_body"] = True
    await send(start)
    await send(body)
    await linger(receive, send)


def unreachable(error: grpc.aio.AioRpcError) -> bool:
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    text = f"{error.details()} {error.debug_error_string()}".lower()
    return any(hint in text for hint in _UNREACHABLE_HINTS)


def _cancel_pending(task: asyncio.Future[object]) -> None:
    if not task.done():
        task.cancel()


class _SharedWakeups:
    """First wake-ups of many requests on one loop timer per second.

    A request's first wake-up (its earliest possible timeout, 30 s away by
    default) almost never happens: the request ends long before. Rather
    than a loop timer armed and cancelled per request, the requests due in
    the same second share one, armed at the start of that second: early,
    never late. A request it wakes with nothing due yet (``_check_timers``)
    arms its own timer for the exact moment, so every timeout fires when it
    did before.
    """

    __slots__ = ("_slots", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._slots: dict[int, set[Forward]] = {}

    def add(self, forward: Forward, when: float) -> float:
        """Wake ``forward`` no later than ``when``; returns when it will be woken."""
        slot = math.floor(when)
        members = self._slots.get(slot)
        if members is None:
            members = self._slots[slot] = set()
            self.loop.call_at(slot, self._fire, slot)
        members.add(forward)
        return float(slot)

    def discard(self, forward: Forward, at: float) -> None:
        members = self._slots.get(math.floor(at))
        if members is not None:
            members.discard(forward)

    def _fire(self, slot: int) -> None:
        for forward in self._slots.pop(slot, ()):
            forward._check_timers()


# A Forward's _watchdog while it waits in a _SharedWakeups slot.
_SHARED: asyncio.TimerHandle = object()  # type: ignore[assignment]
_shared_wakeups: _SharedWakeups | None = None


def _wakeups(loop: asyncio.AbstractEventLoop) -> _SharedWakeups:
    global _shared_wakeups
    shared = _shared_wakeups
    if shared is None or shared.loop is not loop:
        shared = _shared_wakeups = _SharedWakeups(loop)
    return shared


class Forward:
    """State of one forwarded request; ``run()`` returns when the client has its answer."""

    __slots__ = (
        "_body_allowed",
        "_body_done",
        "_call",
        "_chunk_size",
        "_continued",
        "_discard_budget",
        "_empty_run",
        "_expect",
        "_head_sent",
        "_idle_timeout",
        "_idle_waiter",
        "_init",
        "_linger",
        "_loop",
        "_max_body_size",
        "_max_empty",
        "_method",
        "_mux",
        "_plugin_id",
        "_reading_since",
        "_reason",
        "_receive",
        "_recv_task",
        "_remaining",
        "_request_id",
        "_response_deadline",
        "_response_done",
        "_response_timeout",
        "_send",
        "_shared",
        "_sized",
        "_started",
        "_stats",
        "_watch_client",
        "_watchdog",
        "_watchdog_at",
        "_write_first",
        "_writing",
        "_writing_since",
    )

    def __init__(
        self,
        call: grpc.aio.StreamStreamCall,
        receive: Receive,
        send: Send,
        init: bytes,
        *,
        plugin_id: str,
        chunk_size: int,
        max_body_size: int | None,
        response_timeout: float | None,
        stats: dict[str, int],
        body_expected: bool,
        expect_continue: bool = False,
        method: str = "GET",
        request_id: str = "",
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        max_empty_frames: int = DEFAULT_MAX_EMPTY_FRAMES,
        watch_client: WatchClient | None = None,
    ) -> None:
        self._call = call
        self._receive = receive
        self._send = send
        self._init = init
        self._plugin_id = plugin_id
        self._request_id = request_id
        self._method = method
        self._chunk_size = chunk_size
        self._max_body_size = max_body_size
        self._response_timeout = response_timeout
        self._idle_timeout = idle_timeout
        self._max_empty = max_empty_frames
        self._stats = stats
        stats.setdefault("received_bytes", 0)
        stats.setdefault("response_messages", 0)
        self._loop = asyncio.get_running_loop()
        self._reason: str | None = None
        self._started = False
        self._response_done = False
        self._body_done = False
        # One timer serves both timeouts (see _check_timers).
        self._response_deadline: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None  # or _SHARED
        self._watchdog_at = 0.0
        self._shared: _SharedWakeups | None = None
        # A mux stream's half-close never waits (no gRPC operation behind it).
        self._mux = getattr(call, "ready", None) is not None
        self._reading_since: float | None = None  # waiting for a response frame
        self._writing_since: float | None = None  # a request frame waits for the plugin
        self._recv_task: asyncio.Future[Message] | None = None
        self._sized = False  # the response's length is known to the client
        self._linger = False  # the response still needs its final (empty) send
        self._remaining: int | None = None  # declared Content-Length not yet relayed
        self._body_allowed = True
        self._discard_budget = 4 * chunk_size  # body of a bodiless answer, dropped
        self._empty_run = 0
        # Without a body the init and an empty complete frame leave as one message
        # before anything is read from the client.
        self._write_first = not body_expected
        # Expect: 100-continue: wait for the plugin to ask before reading the body.
        self._expect = expect_continue and body_expected
        self._continued = False
        # The response head went to the client: only the pump of an
        # Expect: 100-continue request waits for it.
        self._head_sent = asyncio.Event() if self._expect else None
        # A gRPC write is in progress (done_writing must not overlap one);
        # _idle_waiter, when set, is resolved as it ends.
        self._writing = False
        self._idle_waiter: asyncio.Future[None] | None = None
        self._watch_client = watch_client

    def _log(self, level: int, detail: str) -> None:
        log.log(level, "request %s to plugin %r: %s", self._request_id, self._plugin_id, detail)

    # -- ending the call early -------------------------------------------------

    def _abort(self, reason: str) -> None:
        if self._reason is None:
            self._reason = reason
            self._stats[reason] = self._stats.get(reason, 0) + 1
        self._call.cancel()

    def _timed_out(self) -> None:
        if not self._started:
            self._abort("timeout")

    def _arm_response_timer(self) -> None:
        # From the end of the request body (or a wait for the plugin to ask
        # for it) to the response head.
        timeout = self._response_timeout
        if timeout is not None and not self._started and self._response_deadline is None:
            deadline = self._loop.time() + timeout
            self._response_deadline = deadline
            if self._watchdog is None or self._watchdog_at > deadline:
                self._wake_at(deadline)

    def _disarm_response_timer(self) -> None:
        self._response_deadline = None  # the timer, when it fires, finds nothing due

    def _wake_at(self, when: float) -> None:
        self._drop_watchdog()
        self._watchdog = self._loop.call_at(when, self._check_timers)
        self._watchdog_at = when

    def _drop_watchdog(self) -> None:
        watchdog = self._watchdog
        if watchdog is not None:
            self._watchdog = None
            if watchdog is _SHARED:
                self._shared.discard(self, self._watchdog_at)  # type: ignore[union-attr]
            else:
                watchdog.cancel()

    def _check_timers(self) -> None:
        # One timer per request for both timeouts, re-armed lazily at the
        # earliest moment one can expire: no timer call per frame, and none
        # when the response timeout is armed or disarmed.
        self._watchdog = None
        if self._reason is not None or self._response_done:
            return
        now = self._loop.time()
        deadline = self._response_deadline
        if deadline is not None and now >= deadline:
            self._response_deadline = None
            self._timed_out()
            return
        due = deadline
        idle = self._idle_timeout
        if idle is not None:
            waits = [t for t in (self._writing_since, self._reading_since) if t is not None]
            if waits and now - min(waits) >= idle:
                self._abort("idle")
                return
            base = min(waits) if waits else now
            due = base + idle if due is None else min(due, base + idle)
        if due is not None:
            self._wake_at(due)

    def _on_received(self, task: asyncio.Future[Message]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        if task.result().get("type") == "http.disconnect" and not self._response_done:
            self._abort("disconnect")

    # -- request side -----------------------------------------------------------

    async def _write(self, data: bytes) -> bool:
        if self._response_done or self._reason is not None:
            return False
        if self._init:
            data = self._init + data
            self._init = b""
        self._writing = True
        self._writing_since = self._loop.time()
        try:
            await self._call.write(data)
        except (asyncio.CancelledError, asyncio.InvalidStateError, grpc.aio.AioRpcError):
            if self._call.done() or self._reason is not None or self._response_done:
                return False  # the response side reports what happened
            raise
        finally:
            self._writing_since = None
            self._writing = False
            waiter = self._idle_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        return True

    def _next_message(self) -> asyncio.Future[Message]:
        # Ask for the next message while frames are being written, so a client
        # that disconnects during a slow write is noticed at once.
        task = asyncio.ensure_future(self._receive())
        task.add_done_callback(self._on_received)
        self._recv_task = task
        return task

    async def _send_bodiless(self) -> None:
        # No body to pump: the init and body_complete leave as one message,
        # written here rather than in a task of their own (on mux the write
        # returns at once); only the disconnect watch needs a task.
        self._body_done = True
        self._arm_response_timer()
        if self._watch_client is None:
            self._recv_task = self._loop.create_task(self._watch_disconnect())
        try:
            await self._write(_COMPLETE)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as error:
            # As from a failed pump: the response side reports what happened.
            log.debug("request write failed: %r", error)

    def _client_gone(self) -> None:
        if not self._response_done:
            self._abort("disconnect")

    async def _watch_disconnect(self) -> None:
        try:
            while not self._response_done and self._reason is None:
                message = await self._receive()
                if message.get("type") == "http.disconnect":
                    if not self._response_done:
                        self._abort("disconnect")
                    return
        except Exception as error:
            log.debug("watching the client failed: %r", error)

    async def _pump(self) -> None:
        if self._expect:
            if not await self._write(b""):
                return
            self._arm_response_timer()
            if await self._await_continue():
                self._disarm_response_timer()
                await self._pump_body()
            else:
                await self._watch_refused()
        else:
            await self._pump_body()
        # Keep listening for a disconnect until the response is finished.
        while not self._response_done and self._reason is None:
            message = await self._next_message()
            if message.get("type") == "http.disconnect":
                return

    async def _await_continue(self) -> bool:
        # Resolves with the plugin's first message at the latest (gRPC sends
        # initial metadata before it), or empty when the call ends; waiting on
        # it holds no gRPC operation, so cancelling this wait is safe.
        metadata = await self._call.initial_metadata()
        if self._response_done or self._reason is not None or self._started:
            return False
        if metadata is None or metadata.get(CONTINUE_KEY) != "1":
            return False
        self._continued = True
        return True

    async def _watch_refused(self) -> None:
        # The plugin answered without asking for the body. Once the response
        # head is out, receive() no longer makes the server send "100
        # Continue", so it is safe to call: it notices a client that goes
        # away (a long answer is then cancelled), and a body the client
        # sends anyway (curl does after a second) is forwarded, with the
        # usual backpressure, for a handler that reads after answering.
        # The connection closes after the answer either way.
        assert self._head_sent is not None
        await self._head_sent.wait()
        if not self._response_done and self._reason is None:
            await self._pump_body()

    def _frame(self, pieces: list[memoryview | bytearray], complete: bool) -> bytes:
        # One copy from the received bytes into the frame (no ring in between).
        frame = join_request_frame(pieces, complete=complete)
        if self._init:
            # Only the request's first message carries the init.
            frame = self._init + frame
            self._init = b""
        return frame

    async def _pump_body(self) -> None:
        chunk_size = self._chunk_size
        limit = self._max_body_size
        received = 0
        # Received bytes not framed yet: never more than one chunk. Small
        # messages are copied into a bytearray at the end of ``pieces``.
        pieces: list[memoryview | bytearray] = []
        buffered = 0
        pending = self._next_message()
        if self._init:
            # Send the init right away unless the first body bytes are already
            # here; the plugin may answer before it reads anything.
            await asyncio.sleep(0)
            if not pending.done() and not await self._write(b""):
                return
        while True:
            message = await pending
            if message.get("type") != "http.request":
                return  # disconnect: _on_received aborted the call
            body = message.get("body", b"")
            more = message.get("more_body", False)
            self._stats["received_bytes"] += len(body)
            if more:
                pending = self._next_message()
            if body:
                received += len(body)
                if limit is not None and received > limit:
                    self._abort("too_large")
                    return
                view = memoryview(body)
                size = len(view)
                offset = 0
                while size - offset >= chunk_size - buffered:
                    end = offset + chunk_size - buffered
                    pieces.append(view[offset:end])
                    offset = end
                    frame = self._frame(pieces, False)
                    pieces.clear()
                    buffered = 0
                    if not await self._write(frame):
                        return
                if offset < size:
                    rest = view[offset:]
                    if len(rest) < _COPY_BELOW:
                        if pieces and isinstance(pieces[-1], bytearray):
                            pieces[-1] += rest
                        else:
                            pieces.append(bytearray(rest))
                    else:
                        pieces.append(rest)
                    buffered += size - offset
            if more and self._init and not await self._write(b""):
                return
            if not more:
                self._body_done = True
                frame = self._frame(pieces, True)
                pieces.clear()
                if await self._write(frame):
                    self._arm_response_timer()
                return

    # -- response side ----------------------------------------------------------

    async def run(self) -> None:
        # The first wake-up comes no later than either timeout could expire,
        # so arming the response timeout later needs no timer of its own.
        idle, response = self._idle_timeout, self._response_timeout
        first = idle if response is None else response if idle is None else min(idle, response)
        if first is not None:
            shared = self._shared = _wakeups(self._loop)
            self._watchdog_at = shared.add(self, self._loop.time() + first)
            self._watchdog = _SHARED
        if self._watch_client is not None:
            # The server says when the client goes, whatever the pump is
            # doing (a pump waiting for credit holds no receive() to hear it).
            self._watch_client(self._client_gone)
        pump: asyncio.Task[None] | None = None
        try:
            if self._write_first:
                await self._send_bodiless()
            else:
                pump = self._loop.create_task(self._pump())
            await self._relay()
        finally:
            self._response_done = True
            if self._head_sent is not None:
                self._head_sent.set()  # wakes a pump waiting for it; it sees the end
            self._disarm_response_timer()
            self._drop_watchdog()
            if not self._call.done():
                self._call.cancel()
            await self._stop_pump(pump)
        if self._linger:
            await linger(self._receive, self._send)

    async def _stop_pump(self, pump: asyncio.Task[None] | None) -> None:
        if pump is None:
            pass  # a bodiless request: only its disconnect watch is left
        elif not pump.done():
            recv = self._recv_task
            if recv is not None and not recv.done():
                # Waiting on the client only; no gRPC operation is interrupted.
                recv.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
        elif not pump.cancelled() and pump.exception() is not None:
            log.debug("request pump failed", exc_info=pump.exception())
        recv = self._recv_task
        if recv is not None and not recv.done():
            if pump is None:
                # The disconnect watch of a bodiless request: a server wakes
                # a pending receive() once the response is complete (uvicorn
                # does), and the watch then ends by itself, cheaper than a
                # cancellation; one that stays pending is cancelled next turn.
                self._loop.call_soon(_cancel_pending, recv)
            else:
                recv.cancel()
        self._recv_task = None

    def _body_refused(self) -> bool:
        # Expect: 100-continue and the plugin answered without asking for the
        # body: the client never sent it, so there is nothing to linger for.
        return self._expect and not self._continued

    async def _relay(self) -> None:
        stats = self._stats
        call = self._call
        # A mux stream says whether its next message is here already: body
        # frames that arrived together (a batch) then leave in one send, one
        # write to the client instead of one per chunk. Nothing waits for them.
        ready = getattr(call, "ready", None)
        if ready is not None:
            call.frames = True  # bodies from a lane's ring come decoded
        held: list[memoryview] = []
        while True:
            try:
                # A wait on the plugin, watched by the idle timeout once the
                # response has started (see _check_timers).
                self._reading_since = self._loop.time() if self._started else None
                try:
                    message = await call.read()
                finally:
                    self._reading_since = None
            except asyncio.CancelledError:
                if self._reason is None:
                    raise
                await self._ended_early()
                return
            except grpc.aio.AioRpcError as error:
                if self._reason is not None:
                    await self._ended_early()
                    return
                await self._failed(error)
                return
            if message is EOF:
                await self._failed(None)
                return
            try:
                if isinstance(message, (bytes, memoryview)):
                    frame = decode_response_frame(message)
                else:
                    frame = message  # a ResponseFrame already (MuxCall.frames)
            except FrameError as error:
                await self._send_held(held)
                await self._broken(f"malformed frame: {error}")
                return
            body = frame.body
            if not self._started:
                if frame.init is None:
                    await self._broken("first message has no response init")
                    return
                if not await self._start(frame.init, body, frame.complete):
                    return
            elif frame.init is not None:
                await self._send_held(held)
                await self._broken("response init repeated in a later frame")
                return
            stats["response_messages"] += 1
            if not self._body_allowed:
                if not await self._discard(body, frame.complete):
                    return
                continue
            size = len(body)
            remaining = self._remaining
            if remaining is not None:
                if size > remaining:
                    await self._send_held(held)
                    await self._broken("more body bytes than its Content-Length")
                    return
                remaining -= size
                self._remaining = remaining
                if frame.complete and remaining:
                    await self._send_held(held)
                    await self._broken(f"body ended {remaining} bytes short of its Content-Length")
                    return
            if frame.complete:
                self._response_done = True
                if held:
                    held.append(body)
                    body = b"".join(held)  # type: ignore[assignment]
                    held.clear()
                if not self._body_done and self._sized and not self._body_refused():
                    # Finished after the request body was cut short: run() lingers
                    # (the empty final send carries no byte of the response).
                    self._linger = True
                    await self._send(
                        {"type": "http.response.body", "body": body, "more_body": True}
                    )
                else:
                    await self._send(
                        {"type": "http.response.body", "body": body, "more_body": False}
                    )
                await self._finish_call()
                return
            if size:
                self._empty_run = 0
                held.append(body)
                if frame.flush or ready is None or not ready():
                    await self._send_held(held)
            elif frame.flush:
                self._empty_run = 0
                await self._send_held(held)
            else:
                await self._send_held(held)
                self._empty_run += 1
                if self._empty_run > self._max_empty:
                    await self._broken(f"{self._empty_run} empty frames in a row")
                    return

    async def _send_held(self, held: list[memoryview]) -> None:
        if not held:
            return
        body = held[0] if len(held) == 1 else b"".join(held)
        held.clear()
        await self._send({"type": "http.response.body", "body": body, "more_body": True})

    async def _discard(self, body: memoryview, complete: bool) -> bool:
        # The client already has the whole (bodiless) answer: drop what the
        # plugin sends, within a budget, until its end.
        self._discard_budget -= len(body)
        if complete:
            self._response_done = True
            await self._finish_call()
            return False
        if self._discard_budget < 0:
            self._log(logging.INFO, "body of a bodiless response dropped; call cancelled")
            self._response_done = True
            self._call.cancel()
            return False
        return True

    async def _start(self, raw_init: bytes, body: memoryview, complete: bool) -> bool:
        self._disarm_response_timer()
        try:
            head = check_raw_response_head(raw_init, method=self._method)
        except BadResponse as error:
            self._stats["bad_response"] = self._stats.get("bad_response", 0) + 1
            await self._refuse(error.status, error.reason)
            return False
        except Exception as error:  # protobuf's DecodeError
            await self._refuse(502, f"malformed response init: {error}")
            return False
        headers = head.headers
        self._body_allowed = head.body_allowed
        if head.content_length is not None:
            self._sized = True
            if head.body_allowed:
                self._remaining = head.content_length
        elif complete and head.status not in (204, 304):
            headers.append((_CONTENT_LENGTH, str(len(body)).encode()))
            self._sized = True
        if not self._body_done or self._body_refused():
            # The rest of the request body will not be read: the connection
            # cannot carry another request.
            headers.append((b"connection", b"close"))
        self._started = True
        start = {
            "type": "http.response.start",
            "status": head.status,
            "headers": headers,
            CHECKED_HEAD: True,
        }
        if complete or not head.body_allowed:
            # The body goes in this task step: below, or as _relay's next send.
            start[BODY_FOLLOWS] = True
        await self._send(start)
        if not head.body_allowed:
            # The answer is complete for the client now; what the plugin
            # still sends is dropped (``_discard``).
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})
        if self._head_sent is not None:
            self._head_sent.set()
        return True

    async def _refuse(self, status: int, reason: str) -> None:
        self._log(logging.WARNING, f"{reason}; answered {status}")
        self._response_done = True
        self._call.cancel()
        if status == 500:
            self._stats["invalid_status"] = self._stats.get("invalid_status", 0) + 1
            text = "Internal Server Error: invalid status from plugin"
        else:
            self._stats["bad_gateway"] = self._stats.get("bad_gateway", 0) + 1
            text = "Bad Gateway"
        await send_plain(self._send, status, text, close=not self._body_done)

    async def _finish_call(self) -> None:
        # The whole response is with the client. Half-close the request stream
        # (the plugin reads the end of stream as delivery), then collect the
        # plugin's status so the call is done (and freed) rather than left to
        # a later cancel. _response_done stops the pump's writes; a write in
        # progress is waited for, never interrupted (grpc/grpc#43360). A
        # plugin that never ends the RPC is cancelled after a grace period.
        call = self._call
        guard = None
        if not (self._mux and not self._writing):
            guard = self._loop.call_later(_STATUS_GRACE, call.cancel)
        try:
            while self._writing:
                self._idle_waiter = self._loop.create_future()
                await self._idle_waiter
            if self._reason is None and not call.done():
                # try/except rather than suppress(): no object per request here.
                try:  # noqa: SIM105
                    await call.done_writing()
                except (asyncio.InvalidStateError, asyncio.CancelledError, grpc.aio.AioRpcError):
                    pass
            if call.done():
                return  # a mux stream ends with its DELIVERED: no status to collect
            if guard is None:
                guard = self._loop.call_later(_STATUS_GRACE, call.cancel)
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await call.read()
        finally:
            if guard is not None:
                guard.cancel()

    def _aborted(self, detail: str) -> UpstreamAborted:
        self._stats["aborted"] = self._stats.get("aborted", 0) + 1
        self._log(logging.WARNING, f"{detail}; client connection aborted")
        return UpstreamAborted(f"plugin {self._plugin_id!r}: {detail}")

    async def _ended_early(self) -> None:
        reason = self._reason
        if reason == "disconnect":
            return
        if self._started:
            if reason == "idle":
                raise self._aborted(f"no response frame for {self._idle_timeout:g} s")
            raise self._aborted(str(reason))
        if reason == "too_large":
            self._log(logging.INFO, "request body over max_body_size; answered 413")
            start, body = plain_response(413, "Request Entity Too Large", close=True)
            body["more_body"] = True
            await self._send(start)
            await self._send(body)
            self._linger = True
        elif reason in ("timeout", "idle"):
            waited = self._response_timeout if reason == "timeout" else self._idle_timeout
            what = "no response head" if reason == "timeout" else "plugin stopped reading"
            self._log(logging.WARNING, f"{what} within {waited:g} s; answered 504")
            await send_plain(self._send, 504, "Gateway Timeout", close=not self._body_done)

    async def _failed(self, error: grpc.aio.AioRpcError | None) -> None:
        if self._started:
            detail = "stream ended without body_complete" if error is None else error.details()
            raise self._aborted(f"failed mid-response: {detail}")
        if error is not None and unreachable(error):
            self._stats["unreachable"] = self._stats.get("unreachable", 0) + 1
            self._log(logging.WARNING, f"plugin unreachable ({error.details()}); answered 503")
            await send_plain(self._send, 503, "Service Unavailable", close=not self._body_done)
            return
        self._stats["bad_gateway"] = self._stats.get("bad_gateway", 0) + 1
        detail = "stream ended before the response" if error is None else error.details()
        self._log(logging.WARNING, f"{detail}; answered 502")
        await send_plain(self._send, 502, "Bad Gateway", close=not self._body_done)

    async def _broken(self, detail: str) -> None:
        self._response_done = True
        self._call.cancel()
        if self._started:
            raise self._aborted(detail)
        self._stats["bad_gateway"] = self._stats.get("bad_gateway", 0) + 1
        self._log(logging.WARNING, f"{detail}; answered 502")
        await send_plain(self._send, 502, "Bad Gateway", close=not self._body_done)
