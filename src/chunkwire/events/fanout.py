"""Local fan-out: per-topic sequence numbers, replay buffers and bounded subscriber queues.

Every broker delivers through one of these: the in-memory broker for each
published event, the NATS broker for each event its gateway publishes or
receives. An event is framed as a Server-Sent Event once, when it gets its
``seq``; subscribers share those bytes.

Bounds: a subscriber holds at most ``queue_size`` events (on overflow the
oldest go and the subscriber is told how many with a ``lagged`` event);
each topic replays its last ``replay`` events, and all replay buffers
together hold at most ``replay_bytes`` (the topics published least recently
give up their oldest events first) and ``max_topics`` topics without
subscribers.

Subscribers live on the gateway's event loop; events may be delivered from
another thread too (``deliver_all(..., from_thread=True)``, the Events
service's): the tables and queues are guarded by one lock, and the waiting
subscribers are woken on their loop. A stream that has not written yet in
the loop's current round then writes the new events in that round, rather
than one round later.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .._core import encode_sse
from .model import Event

DEFAULT_QUEUE_SIZE = 1024
DEFAULT_REPLAY = 1000
DEFAULT_REPLAY_BYTES = 64 << 20
DEFAULT_MAX_TOPICS = 10_000
_ENTRY_OVERHEAD = 100  # bytes a replay entry costs besides its frame


def lagged_frame(dropped: int) -> bytes:
    return encode_sse(json.dumps({"dropped": dropped}), event="lagged")


@dataclass
class BrokerStats:
    """Counters a broker keeps (read by the metrics and the JSON stats)."""

    published: int = 0
    dropped: int = 0
    publish_failed: int = 0
    subscribers: int = 0


class Subscription:
    """A subscriber's bounded queue of framed events (``take()`` empties it)."""

    __slots__ = ("_fanout", "_queue", "_timer", "_waiter", "closed", "dropped", "maxlen", "topics")

    def __init__(self, fanout: Fanout, topics: tuple[str, ...], maxlen: int) -> None:
        self._fanout = fanout
        self.topics = topics
        self.maxlen = maxlen
        self._queue: deque[bytes] = deque(maxlen=maxlen)
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.dropped = 0
        self.closed = False

    def _put(self, frames: list[bytes]) -> None:
        # Under the fanout's lock; the caller wakes the subscriber.
        queue = self._queue
        over = len(queue) + len(frames) - self.maxlen
        if over > 0:  # the deque drops the oldest itself
            self.dropped += over
            self._fanout.stats.dropped += over
        queue.extend(frames)

    def take(self) -> tuple[list[bytes], int]:
        """Queued frames, oldest first, and how many were dropped before them."""
        with self._fanout._lock:
            frames = list(self._queue)
            self._queue.clear()
            dropped, self.dropped = self.dropped, 0
        return frames, dropped

    def pending(self) -> int:
        return len(self._queue) + (1 if self.dropped else 0)

    async def wait(self, timeout: float) -> None:
        """Return when an event is queued, the subscription closed, or after ``timeout``."""
        if self._queue or self.dropped or self.closed:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        # One timer per deadline, not one per wait: a stream waits after every
        # write, and its deadlines only move later. A timer that fires early
        # costs one extra wake-up.
        when = loop.time() + timeout
        timer = self._timer
        if timer is None or timer.when() > when:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(when, self._on_timer)
        try:
            await waiter
        finally:
            self._waiter = None

    def _on_timer(self) -> None:
        self._timer = None
        self.wake()

    def wake(self) -> None:
        """Make a pending ``wait()`` return now (on the subscriber's loop)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_if_pending(self) -> None:
        if self._queue or self.dropped:
            self.wake()

    def close(self) -> None:
        """Stop receiving; the broker forgets the subscriber at once."""
        if self.closed:
            return
        self.closed = True
        with self._fanout._lock:
            self._queue.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._fanout._remove(self)
        self.wake()


class _Topic:
    __slots__ = ("replay", "seq", "subscribers")

    def __init__(self, replay: int) -> None:
        self.seq = 0
        self.replay: deque[tuple[int, bytes]] = deque()
        self.subscribers: set[Subscription] = set()


class Fanout:
    """Topic table of one gateway, used from its event loop; ``deliver_all`` may
    also be called from another thread with ``from_thread=True``."""

    def __init__(
        self,
        *,
        replay: int = DEFAULT_REPLAY,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        replay_bytes: int = DEFAULT_REPLAY_BYTES,
        max_topics: int = DEFAULT_MAX_TOPICS,
        on_idle: Callable[[str], None] | None = None,
    ) -> None:
        if replay < 0 or queue_size < 1 or replay_bytes < 0 or max_topics < 1:
            raise ValueError("replay, replay_bytes >= 0 and queue_size, max_topics >= 1")
        self.replay = replay
        self.queue_size = queue_size
        self.replay_bytes = replay_bytes
        self.max_topics = max_topics
        self.stats = BrokerStats()
        self._topics: OrderedDict[str, _Topic] = OrderedDict()
        self._replay_total = 0
        self._on_idle = on_idle
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None  # the subscribers'

    def has_subscribers(self, topic: str) -> bool:
        state = self._topics.get(topic)
        return state is not None and bool(state.subscribers)

    def deliver_all(
        self, events: Sequence[Event], *, from_thread: bool = False, count: bool = True
    ) -> None:
        """Give each event, in order, its topic's next seq, frame it and queue it for
        every subscriber; count them as published (unless not ``count``). A
        subscriber gets each run of events on one topic in one go (one wake-up,
        not one per event). ``from_thread``: called from a thread other than the
        subscribers' loop, which wakes them when it gets to it."""
        reached: list[Subscription] = []
        with self._lock:
            run: list[bytes] = []
            run_state: _Topic | None = None
            for event in events:
                _, frame, state = self._sequence(event)
                if state is not run_state:
                    if run_state is not None:
                        _put_run(run_state, run, reached)
                    run, run_state = [], state
                run.append(frame)
            if run_state is not None:
                _put_run(run_state, run, reached)
            if count:
                self.stats.published += len(events)
            loop = self._loop
        if not reached:
            return
        if from_thread:
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed: no one waits
                    loop.call_soon_threadsafe(_wake_pending, reached)
        else:
            for subscriber in reached:
                subscriber.wake()

    def _sequence(self, event: Event) -> tuple[Event, bytes, _Topic]:
        topics = self._topics
        state = topics.get(event.topic)
        if state is None:
            state = topics[event.topic] = _Topic(self.replay)
            if len(topics) > self.max_topics:
                self._evict_topics()
        else:
            topics.move_to_end(event.topic)
        state.seq += 1
        event = Event(event.topic, event.type, event.data, state.seq, event.ts)
        frame = encode_sse(event.to_json(), event=event.type, id=str(state.seq))
        if self.replay:
            replay = state.replay
            replay.append((state.seq, frame))
            self._replay_total += len(frame) + _ENTRY_OVERHEAD
            if len(replay) > self.replay:
                self._replay_total -= len(replay.popleft()[1]) + _ENTRY_OVERHEAD
            if self._replay_total > self.replay_bytes:
                self._trim_replay()
        return event, frame, state

    def count_dropped(self, count: int) -> None:
        with self._lock:
            self.stats.dropped += count

    def subscribe(
        self, topics: Iterable[str], last_event_id: int | None = None
    ) -> tuple[Subscription, list[str]]:
        """A new subscriber, with the replay after ``last_event_id`` already queued
        (single topic only). Also returns the topics that had no subscriber before."""
        names = tuple(dict.fromkeys(topics))
        sub = Subscription(self, names, self.queue_size)
        loop = asyncio.get_running_loop()
        with self._lock:
            self._loop = loop
            if last_event_id is not None and len(names) == 1:
                state = self._topics.get(names[0])
                if state is not None:
                    self._queue_replay(sub, state, last_event_id)
            new: list[str] = []
            for name in names:
                state = self._topics.get(name)
                if state is None:
                    state = self._topics[name] = _Topic(self.replay)
                if not state.subscribers:
                    new.append(name)
                state.subscribers.add(sub)
            self.stats.subscribers += 1
        return sub, new

    def _queue_replay(self, sub: Subscription, state: _Topic, last_event_id: int) -> None:
        if last_event_id >= state.seq:
            return
        missed = 0
        oldest = state.replay[0][0] if state.replay else state.seq + 1
        if oldest > last_event_id + 1:
            missed = oldest - last_event_id - 1
        sub.dropped += missed
        sub._put([frame for seq, frame in state.replay if seq > last_event_id])

    def _remove(self, sub: Subscription) -> None:
        idle: list[str] = []
        with self._lock:
            self.stats.subscribers -= 1
            for name in sub.topics:
                state = self._topics.get(name)
                if state is None:
                    continue
                state.subscribers.discard(sub)
                if not state.subscribers:
                    if not state.replay:
                        del self._topics[name]
                    idle.append(name)
        if self._on_idle is not None:
            for name in idle:
                self._on_idle(name)

    def close_all(self) -> None:
        with self._lock:
            subs = {sub for state in self._topics.values() for sub in state.subscribers}
        for sub in subs:
            sub.close()

    def _trim_replay(self) -> None:
        topics = self._topics
        while self._replay_total > self.replay_bytes and topics:
            name, state = next(iter(topics.items()))
            if state.replay:
                self._replay_total -= len(state.replay.popleft()[1]) + _ENTRY_OVERHEAD
            if not state.replay:
                if state.subscribers:
                    topics.move_to_end(name)
                else:
                    del topics[name]

    def _evict_topics(self) -> None:
        topics = self._topics
        # Down to 90%, so a stream of new topics does not scan the table each time.
        excess = len(topics) - self.max_topics * 9 // 10
        for name in [n for n, s in topics.items() if not s.subscribers][:excess]:
            state = topics.pop(name)
            self._replay_total -= sum(len(f) + _ENTRY_OVERHEAD for _, f in state.replay)


def _put_run(state: _Topic, frames: list[bytes], reached: list[Subscription]) -> None:
    for subscriber in state.subscribers:
        subscriber._put(frames)
    reached.extend(state.subscribers)


def _wake_pending(subscribers: list[Subscription]) -> None:
    # A subscriber that took its events meanwhile (while its loop's round ran) is not
    # woken again for nothing.
    for subscriber in subscribers:
        subscriber._wake_if_pending()
