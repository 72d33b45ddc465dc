"""The response a plugin handler writes, cut into chunks by the core.

Buffering (bounds per response):
- the Chunker ring holds at most ``capacity`` bytes (2 chunks by default);
- ``await write()`` returns once the bytes buffered and not yet handed to
  gRPC are below ``high_water_mark``; a caller's buffer that does not fit is
  referenced until then, never copied whole, and what remains when write()
  returns (less than the mark) is copied into the ring;
- ``write_nowait()`` always takes the data (copied; an overflow deque holds
  what the ring cannot) and returns False above the mark: like Node's
  ``write()``, the bound is what the handler chooses to ignore;
- at most one frame is in flight in gRPC at a time (each write is awaited),
  under HTTP/2 windows bounded by the server options.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import (
    AsyncIterable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from contextlib import contextmanager
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from .._core import Chunker, SmallWriter, encode_response_frame, encode_response_init
from .._wire import group_headers
from ..errors import ClientDisconnected, HeadersAlreadySent, ResponseAborted

SendMessage = Callable[[bytes], Any]
# (body, complete, flush): one body message the transport encodes itself,
# straight from ``body`` (immutable bytes, never copied here).
SendBody = Callable[[memoryview, bool, bool], Any]
# (frame, complete): an encoded message, and whether it is the last one.
SendFrame = Callable[[bytes, bool], Any]

DEFAULT_HIGH_WATER_MARK = 65536

_EMPTY_COMPLETE = encode_response_frame(b"", complete=True)
_EMPTY_FLUSH = encode_response_frame(b"", flush=True)
_EMPTY_FLUSH_COMPLETE = encode_response_frame(b"", complete=True, flush=True)
_INT32_MAX = 2**31 - 1
_FLUSH = object()  # a flush boundary queued behind overflow data
_SPENT = Chunker(1, 1)  # the ring of a complete response: nothing is written to it


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


class _Body:
    """A body frame left for the transport to encode (see ``send_body``)."""

    __slots__ = ("body", "complete", "flush")

    def __init__(self, body: memoryview, complete: bool, flush: bool) -> None:
        self.body = body
        self.complete = complete
        self.flush = flush


def _immutable(view: memoryview) -> bool:
    # Views of bytes (received frames, bytes slices) can be kept without a copy.
    return view.readonly and type(view.obj) is bytes


_UNSETTLED = object()


class Finished:
    """``await response.finished``: the last byte reached the HTTP client.

    Raises ClientDisconnected when the client went away first, TimeoutError
    when no acknowledgement came in time (the plugin's ``finish_timeout``),
    ResponseAborted when the response was aborted. ``done()`` tells whether
    it is settled. Awaited in the handler's own task, a client that goes away
    cancels that task as it cancels any await there (CancelledError); from
    another task it raises ClientDisconnected. The acknowledgement is the
    gateway half-closing the request stream after its last send; a cancel
    whose signal arrives more than two loop turns after that EOF would be
    taken for delivery (measured: the same turn, nearly always).
    """

    __slots__ = ("_response",)

    def __init__(self, response: Response) -> None:
        self._response = response

    def __await__(self) -> Generator[Any, None, None]:
        response = self._response
        future = response._finished_future()
        if not future.done():
            response._want_delivery()
        return future.__await__()

    def done(self) -> bool:
        return self._response._finished_future().done()

    def __repr__(self) -> str:
        return f"<Finished done={self.done()}>"


class Response(SmallWriter):
    """Status, headers and a streamed body, with Node-like stream semantics.

    ``await write(data, flush=False)`` appends bytes-like ``data`` (bytes,
    bytearray, memoryview, numpy array) and returns once fewer than
    ``high_water_mark`` bytes are buffered; the caller's buffer may be
    reused then. Inside ``cork()`` it never waits.

    The first ``write()`` (of any kind, even empty), ``flush()`` or
    ``end()`` fixes ``status`` and ``headers``, as Go's ResponseWriter and
    Node's ``res.write`` do, although the head leaves with the first frame:
    from then on ``headers`` is a read-only view and assigning ``status`` or
    ``headers`` raises HeadersAlreadySent. Small writes are coalesced into chunks of up to
    ``chunk_size`` bytes; ``flush`` (or ``write(..., flush=True)``) sends what
    is buffered now.

    Backpressure: ``await write(data)`` returns once fewer than
    ``high_water_mark`` bytes are buffered (a slow HTTP client makes it
    wait); ``write_nowait(data)`` takes the data and returns False at or
    above the mark; ``await drain()`` waits for room. ``with cork():``
    holds writes back and emits them, in as few frames as the chunk size
    allows, when the outermost block ends. ``await end(data)`` sends the
    last frame; returning from the handler ends the response too.
    ``await finished`` resolves once the gateway handed the last byte to
    the client. ``abort()`` ends the stream incomplete.

    Once the client is gone, writes raise ClientDisconnected. A write
    interrupted by cancellation leaves the stream in an unknown state: later
    writes raise ClientDisconnected too.
    """

    __slots__ = (
        "_aborted",
        "_borrowed",
        "_chunk_size",
        "_complete",
        "_cork",
        "_delivery_hook",
        "_ending",
        "_error",
        "_finished",
        "_flush_requested",
        "_head_off",
        "_headers",
        "_hwm",
        "_inflight",
        "_locked",
        "_overflow",
        "_overflow_bytes",
        "_pumping",
        "_send",
        "_send_body",
        "_send_frame",
        "_sent",
        "_settled",
        "_status",
        "_task",
        "_waiters",
        "_wanted",
        "frames_sent",
    )

    def __init__(
        self,
        send: SendMessage,
        chunk_size: int,
        capacity: int | None = None,
        *,
        high_water_mark: int = DEFAULT_HIGH_WATER_MARK,
        send_body: SendBody | None = None,
        send_frame: SendFrame | None = None,
    ) -> None:
        self._send = send
        self._send_body = send_body
        # Instead of ``send``, for a transport that wants to know the last frame.
        self._send_frame = send_frame
        self._chunk_size = chunk_size
        # Two chunks: one filling, one ready; the overflow holds the rest.
        self._ring = Chunker(chunk_size, capacity if capacity is not None else 2 * chunk_size)
        # Data beyond the ring, in order: bytes/bytearray (owned), memoryview
        # (a caller's buffer, only while its write() is awaited) or _FLUSH.
        self._overflow: deque[Any] = deque()
        self._overflow_bytes = 0
        self._head_off = 0  # bytes of overflow[0] already taken
        self._borrowed = False
        self._inflight = 0
        # Bytes the next writes may put in the ring with nothing else to do
        # (see ``write``): 0 whenever anything but such a write changed state.
        self._room = 0
        self._hwm = self._check_mark(high_water_mark)
        self._status = 200
        self._headers: CIMultiDict[str] | CIMultiDictProxy[str] = CIMultiDict()
        self._sent = False
        self._locked = False
        self._ending = False
        self._complete = False
        self._error: BaseException | None = None
        self._aborted: BaseException | None = None
        self._pumping = False
        self._waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None
        self._cork = 0
        self._flush_requested = False
        self._finished: asyncio.Future[None] | None = None
        # How ``finished`` settled before anyone asked for it (no future then).
        self._settled: BaseException | object | None = _UNSETTLED
        self._wanted = False
        self._delivery_hook: Callable[[], None] | None = None
        self.frames_sent = 0

    # -- status and headers ------------------------------------------------------

    @property
    def status(self) -> int:
        return self._status

    @status.setter
    def status(self, value: int) -> None:
        if self._locked:
            raise HeadersAlreadySent("response status cannot change after the first write")
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
        if self._locked:
            raise HeadersAlreadySent("response headers cannot change after the first write")
        self._headers = CIMultiDict(value)

    @property
    def headers_locked(self) -> bool:
        """True once status and headers are fixed (the first write, flush or end)."""
        return self._locked

    @property
    def headers_sent(self) -> bool:
        """True once the head has left with the first frame."""
        return self._sent

    def _lock(self) -> None:
        if not self._locked:
            self._locked = True
            self._headers = CIMultiDictProxy(self._headers)

    # -- state -------------------------------------------------------------------

    @property
    def chunk_size(self) -> int:
        return self._chunk_size

    @staticmethod
    def _check_mark(value: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"high_water_mark must be an int, not {type(value).__name__!r}")
        if value < 1:
            raise ValueError(f"high_water_mark must be >= 1, got {value}")
        return value

    @property
    def high_water_mark(self) -> int:
        """Buffered bytes at which ``write()`` waits and ``write_nowait()`` says False."""
        return self._hwm

    @high_water_mark.setter
    def high_water_mark(self, value: int) -> None:
        self._hwm = self._check_mark(value)
        self._room = 0
        self._wake()

    @property
    def buffered(self) -> int:
        """Bytes accepted and not yet handed to gRPC (the frame in flight included)."""
        return self._ring.pending + self._overflow_bytes + self._inflight

    @property
    def writable(self) -> bool:
        """False once ended, aborted, or the client is gone."""
        return not self._ending and self._error is None

    @property
    def ended(self) -> bool:
        """True once ``end()`` was called (or the handler returned): no more writes."""
        return self._ending

    @property
    def complete(self) -> bool:
        """True once the last frame (``body_complete``) was handed to gRPC."""
        return self._complete

    @property
    def aborted(self) -> bool:
        return self._aborted is not None

    @property
    def finished(self) -> Finished:
        """Awaitable: resolves when the client has the whole response; raises if not."""
        return Finished(self)

    def _finished_future(self) -> asyncio.Future[None]:
        future = self._finished
        if future is None:
            future = self._finished = asyncio.get_running_loop().create_future()
            settled = self._settled
            if settled is not _UNSETTLED:
                self._settle(future, settled)  # type: ignore[arg-type]
        return future

    def _resolve(self, exc: BaseException | None = None) -> None:
        future = self._finished
        if future is None:
            # Nobody asked yet (most responses): no future until someone does.
            if self._settled is _UNSETTLED:
                self._settled = exc
            return
        self._settle(future, exc)

    @staticmethod
    def _settle(future: asyncio.Future[None], exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is None:
            future.set_result(None)
        else:
            future.set_exception(exc)
            future.exception()  # nobody has to await it: don't log it as unretrieved

    def _want_delivery(self) -> None:
        self._wanted = True
        if self._complete and self._delivery_hook is not None:
            self._delivery_hook()

    # -- accepting data ----------------------------------------------------------

    def _check_write(self) -> None:
        if self._error is not None:
            raise self._error_copy()
        if self._ending:
            raise RuntimeError("response already ended")

    def _error_copy(self) -> BaseException:
        error = self._error
        assert error is not None
        # A fresh exception per raise: one instance would collect tracebacks.
        fresh = type(error)(*error.args)
        fresh.__cause__ = error.__cause__
        return fresh

    def _accept(self, data: Any, copy: bool) -> None:
        self._room = 0
        if type(data) is bytes:
            view: Any = data
            size = len(data)
            owned = True
        else:
            view = _byte_view(data)
            size = view.nbytes
            owned = _immutable(view)
        if not size:
            return
        ring = self._ring
        chunk = self._chunk_size
        overflow = self._overflow
        if not overflow:
            if size < chunk and size <= ring.free:
                ring.write(view)
                return
            # Complete the partial chunk in the ring; whole chunks then go
            # straight from the caller's buffer into frames.
            partial = ring.pending % chunk
            if partial:
                fill = min(chunk - partial, ring.free, size)
                if type(view) is not memoryview:
                    view = memoryview(view)
                ring.write(view[:fill])
                view = view[fill:]
                size -= fill
                if not size:
                    return
        elif size < chunk:
            tail = overflow[-1]
            if type(tail) is bytearray and len(tail) < chunk:
                tail += view
                self._overflow_bytes += size
                return
            overflow.append(bytearray(view))
            self._overflow_bytes += size
            return
        if not owned:
            if copy:
                view = bytes(view)
            else:
                self._borrowed = True
        overflow.append(view)
        self._overflow_bytes += size

    def _release_borrowed(self) -> None:
        """Copy what is still referenced of a caller's buffer (its write() returns)."""
        if not self._borrowed:
            return
        self._borrowed = False
        self._room = 0
        overflow = self._overflow
        for i in range(len(overflow)):
            item = overflow[i]
            if type(item) is memoryview and not _immutable(item):
                if i == 0 and self._head_off:
                    item = item[self._head_off :]
                    self._head_off = 0
                if len(overflow) == 1 and item.nbytes <= self._ring.free:
                    self._ring.write(item)
                    overflow.clear()
                    self._overflow_bytes = 0
                    return
                overflow[i] = bytes(item)

    def _mark_flush(self) -> None:
        self._room = 0
        self._flush_requested = True
        if self._overflow or not self._ring.pending:
            self._overflow.append(_FLUSH)
        else:
            self._ring.flush()

    # -- cutting frames ----------------------------------------------------------

    def _next_frame(self, final: bool) -> tuple[bytes | _Body, int, bool] | None:
        """(frame, body bytes, complete) for the next ready frame, or None.

        Ready: a full chunk, the bytes up to a flush boundary, or with
        ``final`` everything left (the last frame carries body_complete).
        """
        ring = self._ring
        overflow = self._overflow
        chunk = self._chunk_size
        while True:
            before = ring.pending
            last = final and not overflow
            frame = ring.pop_response_frame(last)
            if frame is not None:
                return frame, before - ring.pending, last and not ring.pending
            if not overflow:
                if final:
                    return _EMPTY_COMPLETE, 0, True
                return None
            item = overflow[0]
            if item is _FLUSH:
                overflow.popleft()
                if before:
                    ring.flush()
                    continue
                if final and not overflow:
                    return _EMPTY_FLUSH_COMPLETE, 0, True
                return _EMPTY_FLUSH, 0, False
            off = self._head_off
            avail = len(item) - off
            if before == 0 and avail >= chunk:
                end = off + chunk
                flush = complete = False
                if avail == chunk:
                    overflow.popleft()
                    self._head_off = 0
                    if overflow and overflow[0] is _FLUSH:
                        overflow.popleft()
                        flush = True
                    complete = final and not overflow
                else:
                    self._head_off = end
                self._overflow_bytes -= chunk
                body = memoryview(item)[off:end]
                if self._send_body is not None and self._sent and _immutable(body):
                    # Bytes nobody can change: the transport encodes them
                    # into its batch directly (one copy fewer).
                    return _Body(body, complete, flush), chunk, complete
                frame = encode_response_frame(body, complete=complete, flush=flush)
                return frame, chunk, complete
            n = min(avail, chunk - before, ring.free)
            ring.write(memoryview(item)[off : off + n])
            self._overflow_bytes -= n
            if n == avail:
                overflow.popleft()
                self._head_off = 0
            else:
                self._head_off = off + n

    def _has_ready(self) -> bool:
        ring = self._ring
        return (
            ring.pending >= self._chunk_size
            or bool(self._overflow)
            or self._flush_requested
            or (ring.pending > 0 and self.buffered >= self._hwm)
        )

    # -- sending -----------------------------------------------------------------

    def _init_message(self) -> bytes:
        headers = self._headers
        return encode_response_init(self._status, group_headers(headers.items()) if headers else ())

    def _fail(self, error: BaseException) -> None:
        self._room = 0
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _wait_turn(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    async def _emit(self, frame: bytes | _Body, size: int, complete: bool) -> None:
        if not self._sent:
            self._lock()
            assert type(frame) is bytes
            frame = self._init_message() + frame
            self._sent = True
        self._inflight = size
        self.frames_sent += 1
        try:
            if type(frame) is _Body:
                assert self._send_body is not None
                await self._send_body(frame.body, frame.complete, frame.flush)
            elif self._send_frame is not None:
                await self._send_frame(frame, complete)
            else:
                await self._send(frame)
        except ClientDisconnected as exc:
            # Kept without its traceback: that holds this frame (and the
            # message) in a cycle with the response until a gc pass.
            self._fail(ClientDisconnected(*exc.args))
            raise
        except BaseException:
            # Cancelled mid-write: whether the frame left is unknown.
            self._fail(ClientDisconnected("the response stream was interrupted mid-write"))
            raise
        finally:
            self._inflight = 0
        if complete:
            self._complete = True
            self._ring = _SPENT  # the call may linger until delivery: keep little
            if self._wanted and self._delivery_hook is not None:
                self._delivery_hook()
        if self._waiters and self.buffered < self._hwm:
            self._wake()

    async def _pump(self, final: bool, until_room: bool) -> None:
        """Send frames; the caller has set ``_pumping``, cleared here."""
        try:
            while self._error is None and not self._complete:
                if self._cork and not final:
                    break
                if until_room and self.buffered < self._hwm:
                    break
                item = self._next_frame(final)
                if item is None:
                    ring = self._ring
                    if ring.pending and self.buffered >= self._hwm:
                        # A mark below the chunk size: send the partial chunk.
                        popped = ring.pop(final=True)
                        assert popped is not None
                        data, at_flush = popped
                        item = (encode_response_frame(data, flush=at_flush), len(data), False)
                    else:
                        self._flush_requested = False
                        break
                frame, size, complete = item
                item = None
                await self._emit(frame, size, complete)
                del frame  # freed before the next one is cut (heap reuse)
        finally:
            self._pumping = False
            self._wake()

    def _kick(self) -> None:
        """Let ready frames flow in the background while nobody awaits the response."""
        if self._pumping or self._cork or self._error is not None or self._complete:
            return
        if not self._has_ready():
            return
        self._pumping = True
        self._task = asyncio.get_running_loop().create_task(self._background())

    async def _background(self) -> None:
        try:
            await self._pump(final=False, until_room=False)
        except ClientDisconnected:
            pass  # recorded in _error: the handler's next write raises it
        finally:
            self._task = None

    async def _wait_room(self) -> None:
        while True:
            if self._error is not None:
                raise self._error_copy()
            if self._cork:
                return  # nothing leaves before the cork ends: waiting would never end
            if self.buffered < self._hwm:
                self._kick()
                return
            if self._pumping:
                await self._wait_turn()
                continue
            self._pumping = True
            await self._pump(final=False, until_room=True)

    async def _send_ready(self, final: bool) -> None:
        while True:
            if self._error is not None:
                raise self._error_copy()
            if self._complete:
                return
            if self._pumping:
                await self._wait_turn()
                continue
            self._pumping = True
            await self._pump(final=final, until_room=False)
            if not final:
                return

    # -- the public stream API ---------------------------------------------------

    # ``write`` (SmallWriter's): small writes (token streaming) while no
    # frame is due and the mark is far only land in the ring, and return an
    # awaitable that is already done. ``_room`` is what is left of that,
    # fixed by the last full write (``_write``) and zeroed by anything else
    # that changes the response (a flush, an end, an error, overflow).

    def _grant_room(self) -> None:
        """Set ``_room``: the bytes below the chunk size, the mark and the ring's free space."""
        ring = self._ring
        if (
            self._error is None
            and not self._ending
            and not self._overflow
            and not self._flush_requested
            and self._locked
        ):
            pending = ring.pending
            room = min(
                ring.free + 1,
                self._chunk_size - pending,
                self._hwm - pending - self._inflight,
            )
            self._room = room if room > 0 else 0
        else:
            self._room = 0

    async def _write(self, data: Any, flush: bool) -> None:
        """The whole of ``write``: what its fast path leaves here."""
        self._room = 0
        ring = self._ring
        if (
            type(data) is bytes
            and self._error is None
            and not self._ending
            and not self._overflow
            and len(data) < self._chunk_size
            and len(data) <= ring.free
        ):
            # Small writes (token streaming) only land in the ring; while no
            # frame is due and the mark is far, that is all there is to do.
            ring.write(data)
            if not self._locked:
                self._lock()
            if not flush and not self._flush_requested:
                pending = ring.pending
                if pending < self._chunk_size and pending + self._inflight < self._hwm:
                    self._grant_room()
                    return
        else:
            self._check_write()
            self._accept(data, copy=self._cork > 0)
            self._lock()
        try:
            if flush:
                self._mark_flush()
                if not self._cork:
                    await self._send_ready(final=False)
            if self.buffered >= self._hwm:
                await self._wait_room()
            else:
                self._kick()
        finally:
            self._release_borrowed()
        self._grant_room()

    def write_nowait(self, data: Any) -> bool:
        """Take ``data`` now (copied); False once ``high_water_mark`` is reached.

        Like Node's ``write()``: the data is accepted either way and leaves
        in the background; after False, ``await drain()`` before writing
        more. Ignoring False grows the buffer without bound.
        """
        self._check_write()
        self._accept(data, copy=True)
        self._lock()
        self._kick()
        return self.buffered < self._hwm

    async def drain(self) -> None:
        """Wait until fewer than ``high_water_mark`` bytes are buffered."""
        if self._error is not None:
            raise self._error_copy()
        await self._wait_room()

    async def flush(self) -> None:
        """Send everything buffered now, marked flush; an empty flush frame if nothing is."""
        self._lock()
        self._check_write()
        self._mark_flush()
        if not self._cork:
            await self._send_ready(final=False)

    @contextmanager
    def cork(self) -> Iterator[Response]:
        """Hold writes back until the outermost ``with`` block ends, then emit them.

        Many writes leave as the fewest frames the chunk size allows (the
        last one marked flush). Corks nest. ``end()`` uncorks.
        """
        if self._ending:
            raise RuntimeError("response already ended")
        self._cork += 1
        self._room = 0
        try:
            yield self
        finally:
            self._room = 0
            if self._cork:
                self._cork -= 1
                if not self._cork and self._error is None and not self._ending:
                    if self._ring.pending or self._overflow:
                        self._mark_flush()
                    self._kick()

    async def end(self, data: Any = None) -> None:
        """Write ``data`` (if any) and the last frame; no writes are accepted after.

        Calling it again once ended does nothing.
        """
        self._lock()
        if self._ending:
            if data is not None:
                raise RuntimeError("response already ended")
            if self._error is not None:
                raise self._error_copy()
            await self._send_ready(final=True)
            return
        if self._error is not None:
            raise self._error_copy()
        if data is not None:
            self._accept(data, copy=False)
        self._ending = True
        self._room = 0
        self._cork = 0
        try:
            if self._pumping:
                await self._send_ready(final=True)
                return
            # Nothing is being sent: the last frames are cut and sent here,
            # as ``_send_ready(final=True)`` would through ``_pump`` (a
            # final cut always yields a frame: the last is complete).
            self._pumping = True
            try:
                while self._error is None and not self._complete:
                    frame, size, complete = self._next_frame(True)  # type: ignore[misc]
                    await self._emit(frame, size, complete)
                    del frame  # freed before the next one is cut (heap reuse)
            finally:
                self._pumping = False
                self._wake()
            if self._error is not None:
                raise self._error_copy()
        finally:
            self._release_borrowed()

    def abort(self, exc: BaseException | None = None) -> None:
        """End the stream incomplete: the client sees an aborted response.

        The RPC is aborted with a non-OK status when the handler returns
        (before anything was sent, the gateway answers 502). Later writes
        raise ResponseAborted; ``finished`` raises it.
        """
        if self._complete or self._aborted is not None:
            return
        error = ResponseAborted(f"response aborted{f': {exc}' if exc is not None else ''}")
        error.__cause__ = exc
        self._aborted = error
        self._ending = True
        self._room = 0
        self._cork = 0
        self._ring = Chunker(self._chunk_size, self._ring.capacity)
        self._overflow.clear()
        self._overflow_bytes = 0
        self._head_off = 0
        self._borrowed = False
        self._fail(error)
        self._resolve(error)

    async def pipe_from(self, source: Any, *, end: bool = True) -> int:
        """Write everything ``source`` yields, with backpressure; then ``end()``.

        ``source`` is an async (or plain) iterable of bytes-like chunks, such
        as ``request.body`` (the proxy pattern). The next chunk is only read
        once the response has room. A source that fails aborts the response
        and its error is raised; a client that goes away stops the reading
        (the source is closed) and raises ClientDisconnected. Returns the
        number of bytes piped.
        """
        if isinstance(source, AsyncIterable):
            iterator: Any = source.__aiter__()
        elif isinstance(source, Iterable) and not isinstance(source, (str, bytes)):
            iterator = _AsyncOver(iter(source))
        else:
            raise TypeError(
                f"pipe_from() takes an (async) iterable of buffers, not {type(source).__name__!r}"
            )
        total = 0
        try:
            while True:
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    self.abort(exc)
                    raise
                size = len(chunk) if type(chunk) is bytes else _byte_view(chunk).nbytes
                await self.write(chunk)
                total += size
        except BaseException:
            await _close(iterator)
            raise
        if end:
            await self.end()
        return total

    # -- servicer side -------------------------------------------------------------

    def _discard(self) -> None:
        """Forget what the handler buffered (only before anything was sent)."""
        assert not self._sent
        if self._task is not None:
            self._task.cancel()  # not inside a gRPC write: nothing was sent yet
            self._task = None
        self._ring = Chunker(self._chunk_size, self._ring.capacity)
        self._room = 0
        self._overflow.clear()
        self._overflow_bytes = 0
        self._head_off = 0
        self._borrowed = False
        self._pumping = False
        self._status = 200
        self._headers = CIMultiDict()
        self._locked = False
        self._ending = False
        self._cork = 0
        self._flush_requested = False
        self._error = None
        self._aborted = None
        self._wake()

    def __repr__(self) -> str:
        state = (
            "complete"
            if self._complete
            else "aborted"
            if self._aborted is not None
            else "ended"
            if self._ending
            else "sent"
            if self._sent
            else "pending"
        )
        return f"<Response {self._status} {state}>"


class _AsyncOver:
    __slots__ = ("_it",)

    def __init__(self, it: Iterator[Any]) -> None:
        self._it = it

    async def __anext__(self) -> Any:
        try:
            return next(self._it)
        except StopIteration:
            raise StopAsyncIteration from None


async def _close(iterator: Any) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is None:
        return
    # The original error is what the caller sees; the source's own close error is not.
    with contextlib.suppress(Exception):
        await aclose()
