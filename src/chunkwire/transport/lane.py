"""The same-host lane: the multiplexed protocol's batches on a plain unix socket.

A lane is one connection of the multiplexed protocol (docs/protocol.md)
whose batches travel as records on a unix stream socket instead of gRPC
messages: ``u32 length (little endian) | MuxBatch``. The plugin listens on
a socket of its own next to its gRPC socket (mode 0600; Describe names it);
nothing on the data path is gRPC. Each side starts with a fixed-size HELLO
(see :data:`HELLO`) carrying the memfd of its shared-memory ring, then only
records follow.

Bodies through the rings: each side writes the body of a DATA frame of at
least ``ring_threshold`` bytes into its own ring (a sealed memfd, see
``chunkwire._core.RingWriter``) and sends a RING frame with the chunk's
descriptor instead; the receiver reads the chunk from its mapping of the
peer's ring, turns it back into the DATA frame the stream code expects,
releases it and returns the space with a RING_CREDIT frame. The stream
protocol and its credit are untouched: a RING frame stands for exactly the
DATA frame it replaces, byte count included. A writer whose ring stays
full because the peer returns no credit for ``credit_timeout`` seconds
fails the lane. Sizes and timeouts are :class:`LaneSettings`, per side.

The stream protocol is unchanged: the same sans-I/O ``Connection`` runs on
both ends and the same stream code drives it. :class:`LaneCarrier` gives
the opener's ``MuxConnection`` the calls it makes on a gRPC Connect call
(``read``, ``write``, ``cancel``, ``code``, ``details``), and
:class:`LaneContext` gives the plugin's connection those it makes on a
servicer context (``read``, ``write``, ``abort``); both bring the sender
and decoder that handle the rings. A record that cannot be read (a
truncated length prefix or record, a length above the limit) fails the
connection with one log line; so does a bad ring descriptor or credit (a
``MuxError``, logged by the connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from .._core import (
    RING_DESCRIPTOR_SIZE,
    BatchWriter,
    FrameError,
    RingReader,
    RingWriter,
    decode_batch,
    decode_request_frame,
    decode_response_frame,
    encode_request_frame,
    encode_response_frame,
)
from .._errors import RingError
from .mux import END, Connection, Kind, MuxError
from .sender import BATCH_LIMIT, BatchSender, ResponseBody, add_frame

log = logging.getLogger("chunkwire.transport")

# magic, version, ring id (0: none; else one memfd rides with the HELLO), reserved
HELLO = struct.Struct("<6sHII")
MAGIC = b"CWLANE"
VERSION = 1
PREFIX = struct.Struct("<I")
HANDSHAKE_TIMEOUT = 5.0
# A batch of the smallest frames a sender writes (8 bytes each) within BATCH_LIMIT.
MAX_FRAMES = BATCH_LIMIT // 8

# Frame kinds of the lane only (chunkwire.v1.FrameKind): never on a Connect call.
RING = 10  # DATA whose body is in the sender's ring; value: END = 1, FLUSH = 2; payload: descriptor
RING_CREDIT = 11  # stream 0; payload: descriptors of released chunks, 20 bytes each
FLUSH = 2
# Kind.DATA as a module name: an IntEnum attribute lookup costs ~10x a global's (per frame).
_DATA = Kind.DATA

RING_SIZE = 8 * 1024 * 1024
RING_THRESHOLD = 16 * 1024
MAX_PEER_RING = 256 * 1024 * 1024
RING_CREDIT_TIMEOUT = 10.0
MAX_RING_SIZE = 1 << 30

_NO_METADATA = grpc.aio.Metadata()


class SettingError(ValueError):
    """A lane setting out of range; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"lane {field} {message}")
        self.field = field
        self.reason = message


@dataclass(frozen=True)
class LaneSettings:
    """The same-host lane's limits on one side (each side applies its own).

    - ``ring_size``: bytes of this side's shared-memory ring, the one its
      bodies travel through (8 MiB); 0: no ring, every body goes inline on
      the socket. Its pages count in both processes' RSS once used.
    - ``ring_threshold``: body chunks of at least this many bytes go through
      the ring, smaller ones inline (16 KiB). Chunks above half the ring
      always go inline.
    - ``max_peer_ring``: the largest ring of the peer's that this side maps
      (256 MiB); a peer offering a larger one is refused (no lane).
    - ``credit_timeout``: seconds this side waits for the peer to return
      ring space before it fails the lane (10 s).
    - ``handshake_timeout``: seconds for the peer's HELLO (5 s).

    ValueError (a :class:`SettingError` naming the field) for a value out of
    range: ``ring_size`` 0 or 2 x ``ring_threshold`` .. 1 GiB, the others
    at least 1 (byte or second, finite).
    """

    ring_size: int = RING_SIZE
    ring_threshold: int = RING_THRESHOLD
    max_peer_ring: int = MAX_PEER_RING
    credit_timeout: float = RING_CREDIT_TIMEOUT
    handshake_timeout: float = HANDSHAKE_TIMEOUT

    def __post_init__(self) -> None:
        for name in ("ring_size", "ring_threshold", "max_peer_ring"):
            value = getattr(self, name)
            if type(value) is not int:
                raise SettingError(name, f"must be a whole number of bytes, got {value!r}")
        for name in ("credit_timeout", "handshake_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SettingError(name, f"must be a number of seconds, got {value!r}")
            if not 0 < value < math.inf:
                raise SettingError(name, f"must be more than 0 seconds and finite, got {value!r}")
        for name in ("ring_threshold", "max_peer_ring"):
            value = getattr(self, name)
            if value < 1:
                raise SettingError(name, f"must be at least 1 byte, got {value}")
        size = self.ring_size
        if size and not 2 * self.ring_threshold <= size <= MAX_RING_SIZE:
            raise SettingError(
                "ring_size",
                f"must be 0 (no ring) or from 2 x the ring threshold ({2 * self.ring_threshold}) "
                f"to {MAX_RING_SIZE}, got {size}",
            )


DEFAULT_SETTINGS = LaneSettings()


def lane_settings(value: object) -> LaneSettings:
    """``value`` when it is a LaneSettings; TypeError otherwise (a dict is a common slip)."""
    if not isinstance(value, LaneSettings):
        raise TypeError(f"lane must be a LaneSettings, got {type(value).__name__}")
    return value


class LaneError(Exception):
    """The lane's peer broke its framing or handshake: the connection must close."""


def no_hello(settings: LaneSettings) -> str:
    return f"timed out: no HELLO within {settings.handshake_timeout:g} s"


def lane_socket_path(grpc_socket: str) -> str:
    """Where a plugin listening on unix ``grpc_socket`` puts its lane socket."""
    return grpc_socket + ".lane"


def offered_lane(address: str, info: Any) -> str:
    """The lane socket a plugin at ``address`` offers in its Describe answer ``info``.

    LaneError, with the reason, unless the plugin offers "lane" and names a
    socket in the directory of its own unix socket: a plugin's answer never
    sends the gateway elsewhere.
    """
    if not address.startswith("unix:"):
        raise LaneError(f"{address} is not a unix socket")
    if "lane" not in info.transports or not info.lane_socket:
        raise LaneError("it does not offer the lane")
    path = info.lane_socket
    home = os.path.dirname(os.path.abspath(address[len("unix:") :]))
    if not os.path.isabs(path) or os.path.dirname(os.path.normpath(path)) != home:
        raise LaneError(f"its lane socket {path!r} is not next to its own socket")
    return path


def lane_or_unavailable(address: str, info: Any, who: str) -> str:
    """``offered_lane``, its refusal raised as the UNAVAILABLE error a request
    on a lane that is not there fails with (``who`` names the plugin)."""
    try:
        return offered_lane(address, info)
    except LaneError as error:
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            details=f"{who} has no lane: {error}",
        ) from None


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end of a unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def check_peer(sock: socket.socket, uid: int | None = None) -> int:
    """The peer's pid; LaneError unless it runs as user ``uid`` (default: this process's)."""
    if uid is None:
        uid = os.getuid()
    pid, peer_uid, _ = peer_credentials(sock)
    if peer_uid != uid:
        raise LaneError(f"peer pid {pid} runs as uid {peer_uid}, not {uid}: refused")
    return pid


async def _wait(sock: socket.socket, *, write: bool) -> None:
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    fd = sock.fileno()
    if write:
        loop.add_writer(fd, future.set_result, None)
    else:
        loop.add_reader(fd, future.set_result, None)
    try:
        await future
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def send_hello(sock: socket.socket, ring: RingWriter | None = None) -> None:
    """Send this side's HELLO, with its ring's memfd when it has one."""
    data = HELLO.pack(MAGIC, VERSION, ring.ring_id if ring is not None else 0, 0)
    while True:
        try:
            if ring is not None:
                sent = socket.send_fds(sock, [data], [ring.fileno()])
            else:
                sent = sock.send(data)
            break
        except (BlockingIOError, InterruptedError):
            await _wait(sock, write=True)
    if sent != len(data):  # a 16-byte send into an empty socket buffer is whole
        raise LaneError(f"HELLO sent short ({sent} of {len(data)} bytes)")


async def receive_hello(
    sock: socket.socket, max_peer_ring: int = MAX_PEER_RING
) -> RingReader | None:
    """The peer's HELLO, and a reader of the ring it carries (None when it has none);
    a ring above ``max_peer_ring`` bytes is a LaneError."""
    got = b""
    fds: list[int] = []
    try:
        while len(got) < HELLO.size:
            try:
                data, more, flags, _ = socket.recv_fds(sock, HELLO.size - len(got), 1)
            except (BlockingIOError, InterruptedError):
                await _wait(sock, write=False)
                continue
            fds.extend(more)
            if flags & socket.MSG_CTRUNC:
                raise LaneError("HELLO carried more than one file descriptor")
            if not data:
                raise LaneError(f"the peer closed the lane during the handshake ({len(got)} bytes)")
            got += data
        magic, version, ring_id, _ = HELLO.unpack(got)
        if magic != MAGIC:
            raise LaneError("the peer does not speak the lane protocol (bad HELLO)")
        if version != VERSION:
            raise LaneError(f"lane protocol version {version} is not supported (want {VERSION})")
        if (ring_id != 0) != (len(fds) == 1) or len(fds) > 1:
            raise LaneError(f"HELLO names ring {ring_id} but carries {len(fds)} descriptors")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    if not fds:
        return None
    try:
        return RingReader(fds[0], ring_id, max_peer_ring)  # owns the fd, also when refused
    except (RingError, OSError) as exc:
        raise LaneError(f"the peer's ring is refused: {exc}") from None


def new_ring(size: int = RING_SIZE) -> RingWriter | None:
    """This side's ring, or None for size 0 or where shared memory is not
    available (bodies go inline)."""
    if not size:
        return None
    try:
        return RingWriter(size, secrets.randbits(32) or 1)
    except (RingError, OSError) as exc:
        log.debug("no shared-memory ring (bodies go inline): %s", exc)
        return None


class Rings:
    """One lane's two rings: this side's writer and the peer's reader (either may be None)."""

    def __init__(self, writer: RingWriter | None, reader: RingReader | None) -> None:
        self.writer = writer
        self.reader = reader
        self.owed: list[bytes] = []  # released here: to send back as RING_CREDIT
        self.wake = asyncio.Event()  # credit arrived, or credit is owed

    def close(self) -> None:
        for ring in (self.writer, self.reader):
            if ring is not None:
                ring.close()


class _Records(asyncio.Protocol):
    """The lane socket's protocol: records are cut out of the bytes as they
    arrive, in the loop's own callback, and wait in a queue for ``read()``;
    a reader that finds one queued gets it without a task switch. Reading
    pauses while more than ``limit`` bytes wait. ``pump(sink)`` instead
    hands each record to ``sink`` right in that callback."""

    def __init__(self, max_record: int) -> None:
        self.max_record = max_record
        self.limit = 2 * max_record + 2 * PREFIX.size
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._records: deque[bytes] = deque()
        self._queued = 0  # bytes in _records
        self._error: BaseException | None = None  # raised once the queue is empty
        self._eof = False
        self._lost = False
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._sink: Callable[[bytes], object] | None = None
        # The loop, once known: asyncio.get_running_loop() is a getpid() system
        # call on Python 3.11, and a reader waits once per record.
        self._loop: asyncio.AbstractEventLoop | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return
        buffer = self._buffer
        buffer += data
        size_of = PREFIX.unpack_from
        pos = 0
        end = len(buffer)
        with memoryview(buffer) as view:
            while end - pos >= PREFIX.size:
                (size,) = size_of(buffer, pos)
                if size > self.max_record:
                    self._error = LaneError(
                        f"record of {size} bytes is larger than the limit of {self.max_record}"
                    )
                    break
                if end - pos - PREFIX.size < size:
                    break
                start = pos + PREFIX.size
                self._records.append(bytes(view[start : start + size]))
                self._queued += size
                pos = start + size
        del buffer[:pos]
        if self._error is not None:
            buffer.clear()
        if self._sink is not None:
            self._deliver()
        if not self._paused and self._queued + len(buffer) > self.limit:
            self._paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        if self._sink is None or self._error is not None:
            self._wake()  # a pump waits only for the end: it took the records

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return True  # the write side stays open, as a stream's does

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._eof = True
        if exc is not None and self._error is None:
            self._error = exc
        self._wake()
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _future(self) -> asyncio.Future[None]:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.create_future()

    def _resume(self) -> None:
        if self._queued + len(self._buffer) <= self.limit // 2:
            self._paused = False
            if not self._lost:
                assert self.transport is not None
                self.transport.resume_reading()

    def _deliver(self) -> None:
        """The queued records to the sink, in order; an error it raises ends
        the reading (``pump`` raises it) and drops what was left."""
        sink = self._sink
        assert sink is not None
        records = self._records
        try:
            while records:
                record = records.popleft()
                self._queued -= len(record)
                sink(record)
            if self._paused:
                self._resume()
        except Exception as exc:
            self._sink = None
            if self._error is None:
                self._error = exc
            records.clear()
            self._queued = 0
            self._buffer.clear()
            self._wake()

    async def pump(self, sink: Callable[[bytes], object]) -> None:
        """Hand every record to ``sink(record)`` as it arrives, from the
        protocol's callback (no task step per record); those queued already
        first. Returns at a clean end; raises what ``read()`` would, or what
        the sink raised."""
        self._sink = sink
        try:
            if self._records:
                self._deliver()
            if await self.read() is not None:  # the queue stays empty while pumping
                raise AssertionError("a record was queued while pumping")
        finally:
            self._sink = None

    async def read(self) -> bytes | None:
        while True:
            records = self._records
            if records:
                record = records.popleft()
                self._queued -= len(record)
                if self._paused:
                    self._resume()
                return record
            if self._error is not None:
                raise self._error
            if self._eof:
                got = len(self._buffer)
                if not got:
                    return None
                if got < PREFIX.size:
                    raise LaneError(f"truncated length prefix ({got} of {PREFIX.size} bytes)")
                (size,) = PREFIX.unpack_from(self._buffer)
                raise LaneError(f"truncated record ({got - PREFIX.size} of {size} bytes)")
            self._waiter = self._future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def write_now(self, record: bytes) -> bool:
        """Queue one record on the socket; True when its buffer is full:
        ``drain()`` before the next one."""
        if self._lost:
            raise ConnectionResetError("Connection lost")
        transport = self.transport
        assert transport is not None
        transport.writelines((PREFIX.pack(len(record)), record))
        return self._write_paused

    async def drain(self) -> None:
        """Return once the socket's buffer has room (ConnectionResetError once lost)."""
        while self._write_paused and not self._lost:
            self._drained = self._future()
            try:
                await self._drained
            finally:
                self._drained = None
        if self._lost:
            raise ConnectionResetError("Connection lost")

    async def write(self, record: bytes) -> None:
        self.write_now(record)
        await self.drain()


class LaneLink:
    """Length-prefixed records on a connected unix stream socket, and the lane's rings.

    ``await read()``: the next record; None at a clean end (between
    records); LaneError otherwise. ``await pump(sink)``: every record to
    ``sink`` as it arrives, until that end. ``await write(record)``: queue one
    record, waiting while the socket's buffer is full; ``write_now(record)``
    queues it without waiting and says whether to ``await drain()`` first.
    """

    def __init__(self, records: _Records, max_record: int, rings: Rings) -> None:
        self._records = records
        self.max_record = max_record
        self.rings = rings
        # The protocol's own coroutines: no wrapper between them and the caller.
        self.read = records.read
        self.pump = records.pump
        self.write = records.write
        self.write_now = records.write_now
        self.drain = records.drain

    @classmethod
    async def over(cls, sock: socket.socket, max_record: int, rings: Rings) -> LaneLink:
        records = _Records(max_record)
        try:
            await asyncio.get_running_loop().create_unix_connection(lambda: records, sock=sock)
        except BaseException:
            rings.close()
            raise
        return cls(records, max_record, rings)

    def close(self) -> None:
        transport = self._records.transport
        if transport is not None:
            transport.close()
        self.rings.close()


def _varint_size(n: int) -> int:
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def _message_size(body: int, complete: bool, flush: bool) -> int:
    """Encoded size of a body-only ServeHTTPRequest/Response (as the core encodes it)."""
    return 1 + _varint_size(body) + body + 2 * complete + 2 * flush


def _size(payload: Any) -> int:
    return payload.nbytes if type(payload) is memoryview else len(payload)


def _body_size(payload: Any) -> int:
    """At least the body bytes a DATA payload could put in the ring (``_ringed``)."""
    if type(payload) is ResponseBody:
        return payload.body.nbytes
    return _size(payload)


class RingStalled(Exception):
    """The peer returned no ring credit in time."""


class LaneSender(BatchSender):
    """A BatchSender that moves large bodies into the ring and returns the peer's credit.

    ``opener``: this side sends requests (else responses). Body chunks of
    at least ``settings.ring_threshold`` bytes go through the ring.
    ``on_stall`` is called (once, with the reason) when the ring stayed full
    for ``settings.credit_timeout`` seconds; the sender stops. Ring credit
    with nothing else to send waits one loop turn, for the stream credit
    the same chunks lead to: the receiving side of a transfer writes about
    one record per record it reads, not two.

    ``link()``, once the lane is up, is the :class:`LaneLink` whose
    ``write_now`` takes the records (None: not yet, or no such link). With
    one, a kick while the sender's task is idle is a callback at the end of
    the loop turn that writes the batch itself, as long as nothing in it
    can wait: frames for the ring and a full socket buffer go on to the
    task, which also keeps the order. A small request then costs no task
    step, Event or future per batch on either side.
    """

    def __init__(
        self,
        proto: Connection,
        write: Callable[[bytes], Awaitable[object]],
        limit: int,
        rings: Callable[[], Awaitable[Rings]],
        *,
        opener: bool,
        on_stall: Callable[[str], None],
        settings: LaneSettings = DEFAULT_SETTINGS,
        link: Callable[[], LaneLink | None] | None = None,
    ) -> None:
        super().__init__(proto, write, limit)
        self._get_rings = rings
        self._get_link = link
        self._opener = opener
        self._on_stall = on_stall
        self._threshold = settings.ring_threshold
        self._credit_timeout = settings.credit_timeout
        self.ringed = 0  # DATA frames whose body went through the ring
        self._writer = BatchWriter(limit)
        self._rings: Rings | None = None
        self._link: LaneLink | None = None
        self._idle = False  # the task waits for a kick: the callback may write
        self._scheduled = False  # the callback is due this loop turn
        self._turned = False  # ring credit alone already waited its loop turn
        self._taken: list[Any] = []  # frames the callback left to the task, in order
        self._full = False  # the callback filled the socket's buffer: the task drains

    def start(self) -> None:
        super().start()
        self._loop = asyncio.get_running_loop()

    def kick(self) -> None:
        if not self._idle:
            self._ready.set()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    @property
    def busy(self) -> bool:
        return self._scheduled or bool(self._taken) or self._full or super().busy

    @property
    def done(self) -> bool:
        task = self._task
        return self.failed is not None or task is None or task.done()

    def _to_task(self) -> None:
        self._idle = False
        self._ready.set()

    def _flush(self) -> None:
        """The batch of this loop turn, written here unless part of it may wait."""
        self._scheduled = False
        if not self._idle:
            self._ready.set()
            return
        proto = self._proto
        rings = self._rings
        link = self._link
        assert rings is not None and link is not None
        if rings.owed and not proto.has_frames and not self._turned:
            self._turned = True  # as the task's sleep(0): one loop turn for stream credit
            self._scheduled = True
            self._loop.call_soon(self._flush)
            return
        self._turned = False
        writer = self._writer
        threshold = self._threshold
        ring = rings.writer
        try:
            while proto.has_frames or rings.owed:
                if rings.owed:
                    self._add_now(writer, self._credit(rings))
                frames = proto.take_frames()
                for index, frame in enumerate(frames):
                    if self._full or (
                        ring is not None
                        and frame[1] == _DATA
                        and _body_size(frame[3]) >= threshold
                    ):
                        # It may wait (for ring space, or for the socket): the
                        # task takes this frame and those after it, in order.
                        self._taken = frames[index:]
                        self._to_task()
                        return
                    self._add_now(writer, frame)
                if len(writer):
                    self._send_now(writer.take())
                if self._full:
                    self._to_task()
                    return
        except Exception as exc:  # the write failed: the lane is gone
            self.failed = exc
            self._to_task()

    def _add_now(self, writer: BatchWriter, frame: Any) -> None:
        if not add_frame(writer, frame):
            self._send_now(writer.take())
            add_frame(writer, frame)

    def _send_now(self, batch: bytes) -> None:
        assert self._link is not None
        self.messages += 1
        self.sent_at = self._time()
        if self._link.write_now(batch):
            self._full = True

    async def _run(self) -> None:
        rings = self._rings = await self._get_rings()
        proto = self._proto
        writer = self._writer
        ready = self._ready
        try:
            while True:
                if self.failed is not None:
                    raise self.failed  # a write of the callback's failed
                if self._full:
                    self._writing = True
                    try:
                        assert self._link is not None
                        await self._link.drain()
                    except Exception as exc:
                        self.failed = exc
                        raise
                    finally:
                        self._writing = False
                    self._full = False
                if self._taken:
                    taken, self._taken = self._taken, []
                    for frame in taken:
                        if frame[1] == _DATA and rings.writer is not None:
                            frame = await self._ringed(frame, writer, rings)
                        await self._add(writer, frame)
                    del taken, frame  # not held (with their bodies) while the task waits
                if len(writer) and not proto.has_frames and not rings.owed:
                    await self._send(writer.take())
                while proto.has_frames or rings.owed:
                    if rings.owed:
                        await self._add(writer, self._credit(rings))
                    for frame in proto.take_frames():
                        if frame[1] == _DATA and rings.writer is not None:
                            frame = await self._ringed(frame, writer, rings)
                        await self._add(writer, frame)
                    if len(writer):
                        await self._send(writer.take())
                if self._link is None and self._get_link is not None:
                    self._link = self._get_link()
                if self._link is not None and not ready.is_set():
                    self._idle = True  # kicks now go to the callback
                await ready.wait()
                ready.clear()
                self._idle = False
                if rings.owed and not proto.has_frames and not self._taken:
                    # Ring credit alone: one loop turn more lets the frames the
                    # chunks just received lead to (stream credit, once they are
                    # handed on) leave in the same record instead of the next.
                    await asyncio.sleep(0)
        except RingStalled as stall:
            self._on_stall(str(stall))
        finally:
            self._idle = False

    async def _add(self, writer: BatchWriter, frame: Any) -> None:
        if not add_frame(writer, frame):
            await self._send(writer.take())
            add_frame(writer, frame)

    @staticmethod
    def _credit(rings: Rings) -> tuple[int, int, int, bytes]:
        owed, rings.owed = rings.owed, []
        return (0, RING_CREDIT, 0, b"".join(owed))

    async def _ringed(self, frame: Any, writer: BatchWriter, rings: Rings) -> Any:
        stream_id, _, value, payload = frame
        threshold = self._threshold
        ring = rings.writer
        assert ring is not None
        if type(payload) is ResponseBody:  # a plugin's body, not encoded yet
            body = payload.body
            if not threshold <= body.nbytes <= ring.max_chunk:
                return frame
            flush = payload.flush
        else:
            size = _size(payload)
            if size < threshold:  # the body is smaller still
                return frame
            stream = self._proto.streams.get(stream_id)
            if stream is None or stream.session:
                return frame  # a WebSocket session's frame (or a stream gone): inline
            decode = decode_request_frame if self._opener else decode_response_frame
            try:
                message = decode(payload)
            except FrameError:
                return frame  # not a message this side can rebuild: inline
            if message.init is not None:
                return frame
            body = message.body
            if body.nbytes < threshold:
                return frame
            flush = not self._opener and message.flush
            rebuilt = _message_size(body.nbytes, message.complete, flush)
            if body.nbytes > ring.max_chunk or rebuilt != size:
                return frame  # not a body the peer can rebuild byte for byte: inline
        descriptor = ring.write(body)
        if descriptor is None:
            descriptor = await self._room(ring, body, writer, rings)
        self.ringed += 1
        return (stream_id, RING, (value & END) | (FLUSH if flush else 0), descriptor)

    async def _room(
        self, ring: RingWriter, body: memoryview, writer: BatchWriter, rings: Rings
    ) -> bytes:
        """Wait for the peer's credit until ``body`` fits; what is ready leaves meanwhile."""
        loop = asyncio.get_running_loop()
        timeout = self._credit_timeout
        deadline = loop.time() + timeout
        while True:
            if rings.owed:
                await self._add(writer, self._credit(rings))
            if len(writer):
                await self._send(writer.take())
            rings.wake.clear()
            descriptor = ring.write(body)
            if descriptor is not None:
                return descriptor
            if rings.owed:
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RingStalled(f"the peer returned no ring credit for {timeout:g} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rings.wake.wait(), remaining)


class RingBody:
    """A response body that came through the peer's ring, as the opener's
    decoder hands it on: the DATA payload of a RING frame, not encoded into
    a message.

    The chunk was copied out of the ring (and its space released) when the
    record was decoded; the bytes are ``buffer[start:end]``. The chunks of
    one stream that arrive together in a record share one buffer, back to
    back, so that a reader taking several at once hands them on as one view
    (``MuxCall.read``), without a copy of its own. ``nbytes`` (and ``len()``)
    is the size of the DATA frame the RING frame stands for, what the
    stream's credit counts; ``message()`` is that ServeHTTPResponse.
    """

    __slots__ = ("buffer", "complete", "end", "flush", "nbytes", "start")

    def __init__(self, buffer: bytes, start: int, end: int, complete: bool, flush: bool) -> None:
        self.buffer = buffer
        self.start = start
        self.end = end
        self.complete = complete
        self.flush = flush
        self.nbytes = _message_size(end - start, complete, flush)

    def __len__(self) -> int:
        return self.nbytes

    @property
    def body(self) -> memoryview:
        return memoryview(self.buffer)[self.start : self.end]

    def message(self) -> memoryview:
        """The ServeHTTPResponse this body stands for (a copy)."""
        return memoryview(
            encode_response_frame(self.body, complete=self.complete, flush=self.flush)
        )


def decode_lane_batch(record: Any, rings: Rings | None, opener: bool) -> list[Any]:
    """Frames of one record, RING frames turned back into the DATA frames they stand for.

    Each chunk is copied out of the peer's ring and released at once; its
    credit joins ``rings.owed``. On the opener's side a DATA payload is a
    :class:`RingBody` (the consecutive RING frames of one stream are copied
    into one buffer); on the acceptor's side the request message itself. A
    bad descriptor, credit or flag is a MuxError (the connection fails).
    """
    frames = decode_batch(record, max_frames=MAX_FRAMES)
    out: list[Any] | None = None
    run: list[tuple[int, int, memoryview]] = []  # opener: RING frames of one stream in a row
    try:
        for index, frame in enumerate(frames):
            kind = frame[1]
            if kind != RING and kind != RING_CREDIT:
                if out is not None:
                    if run:
                        _copy_run(run, rings, out)  # type: ignore[arg-type]
                    out.append(frame)
                continue
            if out is None:
                out = frames[:index]
            if rings is None:
                raise MuxError("a ring frame before the lane was set up")
            if kind == RING:
                if not opener:
                    out.append(_unring(frame, rings))
                    continue
                if run and run[0][0] != frame[0]:
                    _copy_run(run, rings, out)
                run.append(_ring_view(frame, rings, opener))
            else:
                _credited(frame, rings)
        if run:
            _copy_run(run, rings, out)  # type: ignore[arg-type]
    except BaseException:
        if run and rings is not None and rings.reader is not None:
            for _, _, view in run:
                rings.owed.append(rings.reader.release(view))
            rings.wake.set()
        raise
    return frames if out is None else out


def _ring_view(frame: Any, rings: Rings, opener: bool) -> tuple[int, int, memoryview]:
    """``(stream id, flags, view)`` of a RING frame's chunk; the view is outstanding."""
    stream_id, _, value, payload = frame
    reader = rings.reader
    if reader is None:
        raise MuxError("RING frame, but the peer sent no ring")
    if value & ~(END | FLUSH) or (value & FLUSH and not opener):
        raise MuxError(f"RING frame on stream {stream_id} with flags {value}")
    try:
        return stream_id, value, reader.read(payload)
    except RingError as exc:
        raise MuxError(f"bad ring descriptor on stream {stream_id}: {exc}") from None


def _copy_run(run: list[tuple[int, int, memoryview]], rings: Rings, out: list[Any]) -> None:
    """Copy a run of one stream's chunks into one buffer, release them, add their DATA frames."""
    reader = rings.reader
    assert reader is not None
    entries = run[:]
    run.clear()
    sizes = [view.nbytes for _, _, view in entries]
    try:
        if len(entries) == 1:
            buffer = entries[0][2].tobytes()
        else:
            buffer = b"".join([view for _, _, view in entries])
    finally:
        owed = rings.owed
        for _, _, view in entries:
            owed.append(reader.release(view))
        rings.wake.set()
    start = 0
    for (stream_id, value, _), size in zip(entries, sizes, strict=True):
        end = start + size
        body = RingBody(buffer, start, end, bool(value & END), bool(value & FLUSH))
        out.append((stream_id, _DATA, value & END, body))
        start = end


def _unring(frame: Any, rings: Rings) -> Any:
    """The acceptor's side: a RING frame of a request as the DATA frame with its message."""
    stream_id, value, view = _ring_view(frame, rings, False)
    reader = rings.reader
    assert reader is not None
    try:
        message = encode_request_frame(view, complete=bool(value & END))
    finally:
        rings.owed.append(reader.release(view))
        rings.wake.set()
    # Payloads are views, as decode_batch hands them out (the stream code counts .nbytes).
    return (stream_id, _DATA, value & END, memoryview(message))


def _credited(frame: Any, rings: Rings) -> None:
    stream_id, _, _, payload = frame
    if stream_id != 0:
        raise MuxError(f"RING_CREDIT on stream {stream_id}: it belongs to stream 0")
    writer = rings.writer
    if writer is None:
        raise MuxError("RING_CREDIT, but this side has no ring")
    size = len(payload)
    if not size or size % RING_DESCRIPTOR_SIZE:
        raise MuxError(f"RING_CREDIT of {size} bytes is not whole descriptors")
    try:
        for offset in range(0, size, RING_DESCRIPTOR_SIZE):
            writer.credit(payload[offset : offset + RING_DESCRIPTOR_SIZE])
    except RingError as exc:
        raise MuxError(f"bad ring credit: {exc}") from None
    rings.wake.set()


def _error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, _NO_METADATA, _NO_METADATA, details=details)


async def _open_handshake(sock: socket.socket, settings: LaneSettings) -> Rings:
    ring = new_ring(settings.ring_size)
    try:
        await send_hello(sock, ring)
        peer = await receive_hello(sock, settings.max_peer_ring)
    except BaseException:
        if ring is not None:
            ring.close()
        raise
    return Rings(ring, peer)


async def accept_handshake(
    sock: socket.socket, settings: LaneSettings = DEFAULT_SETTINGS
) -> Rings:
    """The acceptor's side of the HELLOs: the opener's first, then ours."""
    peer = await receive_hello(sock, settings.max_peer_ring)
    ring = new_ring(settings.ring_size)
    try:
        await send_hello(sock, ring)
    except BaseException:
        if peer is not None:
            peer.close()
        if ring is not None:
            ring.close()
        raise
    return Rings(ring, peer)


async def connect_lane(
    path: str, max_record: int, settings: LaneSettings = DEFAULT_SETTINGS
) -> LaneLink:
    """Dial a plugin's lane socket, check its user, exchange HELLOs and rings."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, path)
        check_peer(sock)
        try:
            rings = await asyncio.wait_for(
                _open_handshake(sock, settings), settings.handshake_timeout
            )
        except TimeoutError:
            raise LaneError(no_hello(settings)) from None
        return await LaneLink.over(sock, max_record, rings)
    except BaseException:
        sock.close()
        raise


LanePath = Callable[[], Awaitable[str]]


class LaneCarrier:
    """The opener's lane, shaped as the gRPC Connect call ``MuxConnection`` drives.

    Connects on first use (``lane_path()`` says where: the plugin's Describe).
    A failure to connect, a broken socket, or a record that cannot be read
    surfaces as the ``AioRpcError`` a broken Connect call would raise: 503
    before the response starts when the plugin is unreachable, 502 when it
    broke the protocol, an aborted client connection after.
    """

    def __init__(
        self,
        name: str,
        lane_path: LanePath,
        max_record: int,
        settings: LaneSettings = DEFAULT_SETTINGS,
    ) -> None:
        self._name = name
        self._lane_path = lane_path
        self._max_record = max_record
        self.settings = settings
        self.records = 0  # records received
        self._link: asyncio.Future[LaneLink] | None = None
        self._connected: LaneLink | None = None  # the link, once connected (no shield then)
        self._rings: Rings | None = None
        self._sender: LaneSender | None = None
        self._closed = False

    def sender(self, proto: Connection, limit: int) -> BatchSender:
        self._sender = LaneSender(
            proto,
            self.write,
            limit,
            self._get_rings,
            opener=True,
            on_stall=self._stalled,
            settings=self.settings,
            link=lambda: self._connected,
        )
        return self._sender

    def decode(self, record: Any) -> list[Any]:
        self.records += 1
        rings = self._rings
        frames = decode_lane_batch(record, rings, True)
        if rings is not None and rings.owed and self._sender is not None:
            self._sender.kick()
        return frames

    def _stalled(self, reason: str) -> None:
        log.warning("lane to plugin %r failed: %s", self._name, reason)
        self.cancel()

    async def _connect(self) -> LaneLink:
        try:
            path = await self._lane_path()
            link = await connect_lane(path, self._max_record, self.settings)
        except grpc.aio.AioRpcError:
            raise
        except (OSError, LaneError, TimeoutError) as exc:
            raise _error(
                grpc.StatusCode.UNAVAILABLE,
                f"cannot open the lane to plugin {self._name!r}: {exc}",
            ) from None
        self._rings = link.rings
        if not self._closed:
            self._connected = link
        return link

    def _get_link(self) -> asyncio.Future[LaneLink]:
        if self._link is None:
            self._link = asyncio.ensure_future(self._connect())
        return self._link

    async def _get_rings(self) -> Rings:
        link = self._connected
        if link is None:
            link = await asyncio.shield(self._get_link())
        return link.rings

    def _failed(self, exc: LaneError | OSError) -> grpc.aio.AioRpcError:
        """The call error a broken lane becomes (read and pump raise it)."""
        if isinstance(exc, LaneError):
            log.warning("lane to plugin %r failed: %s", self._name, exc)
            return _error(grpc.StatusCode.INTERNAL, f"the plugin broke the lane protocol: {exc}")
        return _error(grpc.StatusCode.UNAVAILABLE, f"the lane broke: {exc}")

    async def read(self) -> Any:
        link = self._connected
        if link is None:
            link = await asyncio.shield(self._get_link())
        try:
            record = await link.read()
        except (LaneError, OSError) as exc:
            raise self._failed(exc) from None
        if record is None:
            return grpc.aio.EOF
        return record

    async def pump(self, sink: Callable[[bytes], object]) -> None:
        """``read()`` for every record, each handed to ``sink`` from the socket's
        callback as it arrives; returns where ``read()`` would return EOF."""
        link = self._connected
        if link is None:
            link = await asyncio.shield(self._get_link())
        try:
            await link.pump(sink)
        except (LaneError, OSError) as exc:
            raise self._failed(exc) from None

    async def write(self, record: bytes) -> None:
        link = self._connected
        if link is None:
            link = await asyncio.shield(self._get_link())
        await link.write(record)

    def cancel(self) -> bool:
        if self._closed:
            return False
        self._closed = True
        self._connected = None
        future = self._link
        if future is not None:
            if future.done():
                if not future.cancelled() and future.exception() is None:
                    future.result().close()
            else:
                future.cancel()
        return True

    async def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    async def details(self) -> str:
        return "lane closed"


class LaneContext:
    """The acceptor's lane, shaped as the servicer context the plugin's connection drives.

    Its sender takes response bodies unencoded (``ResponseBody``): a chunk
    bound for the ring is copied there straight from the handler's bytes.
    """

    takes_bodies = True

    def __init__(
        self, link: LaneLink, peer: str, settings: LaneSettings = DEFAULT_SETTINGS
    ) -> None:
        self._link = link
        self.peer = peer
        self.settings = settings
        self.records = 0  # records received
        self._sender: LaneSender | None = None

    def sender(self, proto: Connection, limit: int = BATCH_LIMIT) -> BatchSender:
        self._sender = LaneSender(
            proto,
            self.write,
            limit,
            self._get_rings,
            opener=False,
            on_stall=self._stalled,
            settings=self.settings,
            link=lambda: self._link,
        )
        return self._sender

    def decode(self, record: Any) -> list[Any]:
        self.records += 1
        rings = self._link.rings
        frames = decode_lane_batch(record, rings, False)
        if rings.owed and self._sender is not None:
            self._sender.kick()
        return frames

    async def _get_rings(self) -> Rings:
        return self._link.rings

    def _stalled(self, reason: str) -> None:
        log.warning("lane from %s failed: %s", self.peer, reason)
        self.close()

    async def read(self) -> Any:
        try:
            record = await self._link.read()
        except LaneError as exc:
            log.warning("lane from %s failed: %s", self.peer, exc)
            return grpc.aio.EOF
        except OSError:
            return grpc.aio.EOF
        return grpc.aio.EOF if record is None else record

    async def pump(self, sink: Callable[[bytes], object]) -> None:
        """``read()`` for every record, each handed to ``sink`` from the socket's
        callback as it arrives; returns where ``read()`` would return EOF. What
        the sink raises ends the pumping and is raised here."""
        try:
            await self._link.pump(sink)
        except LaneError as exc:
            log.warning("lane from %s failed: %s", self.peer, exc)
        except OSError:
            pass

    async def write(self, record: bytes) -> None:
        await self._link.write(record)

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.close()

    def close(self) -> None:
        self._link.close()
