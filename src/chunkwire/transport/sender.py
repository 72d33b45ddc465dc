"""Moves a connection's queued frames into gRPC messages, batched."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from .._core import BatchWriter
from .mux import Connection

# One gRPC message carries at most this much (at least one frame): four
# 64 KiB chunk frames with their framing, since grpc.aio's cost is per
# message. Eight (512 KiB) measured no faster on 1 GiB transfers and took
# the gateway's peak RSS past 64 MiB; batches are held in three copies
# (writer, message, gRPC) on their way out.
BATCH_LIMIT = 256 * 1024 + 1024

Write = Callable[[bytes], Awaitable[object]]


def _varint_size(value: int) -> int:
    size = 1
    while value > 0x7F:
        value >>= 7
        size += 1
    return size


class ResponseBody:
    """A DATA payload encoded only when it joins a batch: a ServeHTTPResponse
    body message written straight from ``body`` (``BatchWriter.add_body``),
    without a frame of its own in between. ``body`` must not change until
    then (immutable bytes). ``len()`` is the encoded size, what credit counts.
    """

    __slots__ = ("_size", "body", "complete", "flush")

    def __init__(self, body: memoryview, complete: bool, flush: bool) -> None:
        self.body = body
        self.complete = complete
        self.flush = flush
        n = body.nbytes
        self._size = (1 + _varint_size(n) + n if n else 0) + 2 * complete + 2 * flush

    def __len__(self) -> int:
        return self._size


def add_frame(writer: BatchWriter, frame: tuple[int, int, int, object]) -> bool:
    """Add one queued frame to the batch; False when it does not fit."""
    stream_id, kind, value, payload = frame
    if type(payload) is ResponseBody:
        return writer.add_body(
            stream_id,
            kind,
            payload.body,
            response=True,
            complete=payload.complete,
            flush=payload.flush,
            value=value,
        )
    return writer.add(stream_id, kind, value, payload)


class _Ready:
    """An asyncio.Event for the one task that waits on it (the sender's), at
    less cost per batch: no waiter list, and the loop looked up once
    (``asyncio.Event.wait`` asks for the running loop each time, a getpid()
    system call on Python 3.11)."""

    __slots__ = ("_loop", "_value", "_waiter")

    def __init__(self) -> None:
        self._value = False
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if not self._value:
            self._value = True
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> None:
        if self._value:
            return
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None


class BatchSender:
    """One task per connection: whatever frames are queued when it runs leave together.

    ``kick()`` is cheap and idempotent within a loop turn: every frame that
    becomes ready before the sender's task runs joins the same batch.
    Awaiting the gRPC write is what paces it; frames queued meanwhile form
    the next batches. ``failed`` holds the write's error once one failed.
    """

    def __init__(self, proto: Connection, write: Write, limit: int = BATCH_LIMIT) -> None:
        self._proto = proto
        self._write = write
        self._limit = limit
        self._ready = _Ready()
        self._task: asyncio.Task[None] | None = None
        self.failed: BaseException | None = None
        self.messages = 0
        self.sent_at = 0.0  # loop time of the last batch handed to the write
        self._writing = False

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._time = loop.time
        self._task = loop.create_task(self._run())

    def kick(self) -> None:
        self._ready.set()

    async def _run(self) -> None:
        proto = self._proto
        writer = BatchWriter(self._limit)
        ready = self._ready
        while True:
            await ready.wait()
            ready.clear()
            while proto.has_frames:
                for frame in proto.take_frames():
                    if not add_frame(writer, frame):
                        await self._send(writer.take())
                        add_frame(writer, frame)
                if len(writer):
                    await self._send(writer.take())

    async def _send(self, batch: bytes) -> None:
        self.messages += 1
        self.sent_at = self._time()
        self._writing = True
        try:
            await self._write(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed = exc
            raise
        finally:
            self._writing = False

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    @property
    def busy(self) -> bool:
        """Frames are queued or a batch is being written."""
        return self._writing or self._ready.is_set() or self._proto.has_frames

    @property
    def done(self) -> bool:
        return self._task is None or self._task.done()
