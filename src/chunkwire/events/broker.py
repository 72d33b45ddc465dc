"""What the gateway needs from a broker, and the in-memory one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .fanout import (
    DEFAULT_MAX_TOPICS,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_REPLAY,
    DEFAULT_REPLAY_BYTES,
    BrokerStats,
    Fanout,
    Subscription,
)
from .model import Event


class BrokerUnavailable(ConnectionError):
    """The broker cannot be reached at start (the message says where and why)."""


class Broker(Protocol):
    stats: BrokerStats

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, events: Sequence[Event]) -> None:
        """Hand validated events (``ts`` set, ``seq`` not yet) to every subscriber.

        A broker may also have ``publish_threadsafe(events)``, the same called from
        another thread: the Events service then delivers from its own thread,
        without a hop to the gateway's loop.
        """

    async def subscribe(
        self, topics: Sequence[str], *, last_event_id: int | None = None
    ) -> Subscription:
        """Subscribe to ``topics``; with one topic, replay what came after ``last_event_id``."""


class InMemoryBroker:
    """Fan-out inside one gateway process (the default)."""

    def __init__(
        self,
        *,
        replay: int = DEFAULT_REPLAY,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        replay_bytes: int = DEFAULT_REPLAY_BYTES,
        max_topics: int = DEFAULT_MAX_TOPICS,
    ) -> None:
        self._fanout = Fanout(
            replay=replay, queue_size=queue_size, replay_bytes=replay_bytes, max_topics=max_topics
        )
        self.stats = self._fanout.stats

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self._fanout.close_all()

    async def publish(self, events: Sequence[Event]) -> None:
        self._fanout.deliver_all(events)

    def publish_threadsafe(self, events: Sequence[Event]) -> None:
        """``publish`` from a thread other than the gateway's loop (the Events service's)."""
        self._fanout.deliver_all(events, from_thread=True)

    async def subscribe(
        self, topics: Sequence[str], *, last_event_id: int | None = None
    ) -> Subscription:
        sub, _ = self._fanout.subscribe(topics, last_event_id)
        return sub
