"""Publish events to a gateway's Events service from any process (a plugin handler...).

Events wait in a bounded queue; one task sends them in batches on a
``Publish`` call, which stays open while events keep coming. ``flush()``
ends the call: the gateway's acknowledgement says every event on it was
handed to the broker. A broken connection fails the events that were on
it (``flush()`` raises :class:`PublishError` saying how many); queued
events are sent again on a new call after a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from types import TracebackType

import grpc
import grpc.aio

from .._proto import events_pb2, events_pb2_grpc
from .._wire import grpc_target
from ..errors import InvalidEvent, PublishError
from .model import DEFAULT_MAX_DATA, check_event, data_size

log = logging.getLogger("chunkwire.events")

_BACKOFF_START = 0.05
_BACKOFF_MAX = 2.0


class Publisher:
    """``async with Publisher("unix:/run/cw-events.sock") as pub: await pub.publish(...)``.

    ``queue_size`` bounds the events waiting to be sent (``publish`` waits
    while it is full); a batch carries at most ``batch_size`` events and
    about ``batch_bytes`` of data. ``credentials`` are TLS channel
    credentials for a TCP gateway that is not on loopback.
    """

    def __init__(
        self,
        address: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        queue_size: int = 1024,
        max_data_size: int = DEFAULT_MAX_DATA,
        batch_size: int = 256,
        batch_bytes: int = 1 << 20,
    ) -> None:
        if queue_size < 1 or batch_size < 1 or batch_bytes < 1:
            raise ValueError("queue_size, batch_size and batch_bytes must be >= 1")
        self.address = address
        self._target = grpc_target(address)
        self._credentials = credentials
        self._queue_size = queue_size
        self._max_data = max_data_size
        self._batch_size = batch_size
        self._batch_bytes = batch_bytes
        self._queue: deque[tuple[str, str, str]] = deque()
        self._enqueued = 0  # events ever queued
        self._settled = 0  # events acknowledged or failed
        self._unreported: Exception | None = None  # a failure no flush() has raised yet
        self._flushes: list[tuple[int, asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        self._space: asyncio.Event | None = None
        self._channel: grpc.aio.Channel | None = None
        self._task: asyncio.Task[None] | None = None
        self._call: grpc.aio.StreamUnaryCall | None = None
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        if self._credentials is not None and not self._target.startswith("unix:"):
            self._channel = grpc.aio.secure_channel(self._target, self._credentials)
        else:
            self._channel = grpc.aio.insecure_channel(self._target)
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        """Stop sending; events not yet acknowledged are dropped (flush first to keep them)."""
        self._closing = True
        if self._call is not None:
            self._call.cancel()
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._channel is not None:
            await self._channel.close()
        error = PublishError("publisher closed", failed=len(self._queue))
        for _, future in self._flushes:
            if not future.done():
                future.set_exception(error)
        self._flushes.clear()

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                await self.flush()
        finally:
            await self.close()

    # -- publishing ----------------------------------------------------------------

    async def publish(self, topic: str, type: str, data: str) -> None:
        """Queue one event; waits only while the queue is full.

        Raises :class:`~chunkwire.errors.InvalidEvent` for a bad topic, type
        or data (larger than ``max_data_size`` bytes of UTF-8).
        """
        check_event(topic, type, data, self._max_data)
        if self._task is None or self._closing:
            raise RuntimeError("Publisher is not started (use 'async with Publisher(...)')")
        assert self._space is not None and self._wake is not None
        while len(self._queue) >= self._queue_size:
            self._space.clear()
            await self._space.wait()
            if self._closing:
                raise RuntimeError("Publisher closed")
        self._queue.append((topic, type, data))
        self._enqueued += 1
        self._wake.set()

    async def flush(self) -> None:
        """Return once the gateway handed every event published so far to its broker.

        Raises :class:`PublishError` if a connection broke (or could not be
        made) since the last flush, and :class:`InvalidEvent` if the gateway
        refused an event.
        """
        if self._task is None:
            raise RuntimeError("Publisher is not started")
        if self._unreported is None and self._settled >= self._enqueued:
            return
        if self._unreported is not None:
            error, self._unreported = self._unreported, None
            raise error
        future = asyncio.get_running_loop().create_future()
        self._flushes.append((self._enqueued, future))
        assert self._wake is not None
        self._wake.set()
        await future

    # -- the sender ------------------------------------------------------------------

    def _take_batch(self) -> list[events_pb2.Event]:
        queue = self._queue
        batch: list[events_pb2.Event] = []
        size = 0
        while queue and len(batch) < self._batch_size and (not batch or size < self._batch_bytes):
            topic, type_, data = queue.popleft()
            size += data_size(data) + len(topic) + len(type_)
            batch.append(events_pb2.Event(topic=topic, type=type_, data=data))
        if batch and self._space is not None:
            self._space.set()
        return batch

    async def _run(self) -> None:
        assert self._wake is not None and self._channel is not None
        stub = events_pb2_grpc.EventsStub(self._channel)
        backoff = 0.0
        while True:
            while not self._queue and not self._closing:
                self._wake.clear()
                await self._wake.wait()
            if self._closing:
                return
            if backoff:
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), backoff)
                if self._closing:
                    return
            in_flight = 0
            call = self._call = stub.Publish()
            try:
                while True:
                    batch = self._take_batch()
                    if batch:
                        in_flight += len(batch)
                        await call.write(events_pb2.EventBatch(events=batch))
                        continue
                    if self._flushes or self._closing:
                        break
                    self._wake.clear()
                    await self._wake.wait()
                await call.done_writing()
                await call
            except (grpc.RpcError, asyncio.InvalidStateError) as error:
                self._settled += in_flight
                self._fail(error, in_flight)
                backoff = min(_BACKOFF_MAX, max(_BACKOFF_START, backoff * 2))
                continue
            finally:
                self._call = None
            self._settled += in_flight
            backoff = 0.0
            self._settle()

    def _settle(self) -> None:
        done = [(t, f) for t, f in self._flushes if t <= self._settled]
        if not done:
            return
        self._flushes = [(t, f) for t, f in self._flushes if t > self._settled]
        for _, future in done:
            if not future.done():
                future.set_result(None)

    def _fail(self, error: BaseException, lost: int) -> None:
        if self._closing:
            return
        code = error.code() if isinstance(error, grpc.aio.AioRpcError) else None
        details = error.details() if isinstance(error, grpc.aio.AioRpcError) else str(error)
        failure: Exception
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            failure = InvalidEvent(f"the gateway refused an event: {details}")
        else:
            what = code.name if code is not None else type(error).__name__
            failure = PublishError(
                f"events to {self.address}: {what}: {details}; {lost} events may not have "
                f"reached the gateway, {len(self._queue)} queued events will be retried",
                failed=lost,
            )
        log.debug("publisher: %s", failure)
        waiters, self._flushes = self._flushes, []
        if not waiters:
            self._unreported = failure
        for _, future in waiters:
            if not future.done():
                future.set_exception(failure)
