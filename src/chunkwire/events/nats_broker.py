"""A broker shared by several gateways through NATS (plain pub/sub, no JetStream).

Each gateway delivers the events it publishes to its own subscribers at
once and publishes them on ``{subject_prefix}.{topic}``; it subscribes in
NATS to the topics its SSE clients watch (one NATS subscription per topic,
removed with the last local subscriber), with ``no_echo`` so its own events
do not come back. Sequence numbers and the replay buffer are per gateway.

NATS gone while running: nats-py reconnects by itself and re-subscribes;
events published meanwhile still reach this gateway's subscribers but not
the other gateways', and are counted in ``stats.publish_failed`` (logged
once per outage). Outbound buffering while disconnected is off
(``pending_size=0``), so nothing is replayed late after a reconnect.

The NATS client runs on a thread and event loop of its own: on the
gateway's loop, busy writing to many SSE streams, each step of reading a
message (socket, parser, subscription task, delivery) waited for a whole
round of writes. Messages are delivered to the local fan-out from that
thread (see ``Fanout.deliver_all``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from .._proto import events_pb2
from .broker import BrokerUnavailable
from .fanout import (
    DEFAULT_MAX_TOPICS,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_REPLAY,
    DEFAULT_REPLAY_BYTES,
    Fanout,
    Subscription,
)
from .model import Event, event_problem
from .threads import LoopThread

log = logging.getLogger("chunkwire.events")

_SUBSCRIPTION_PENDING_BYTES = 16 << 20
_MAX_PAYLOAD_CHECK = 1 << 30
_REFUSAL_LOG_INTERVAL = 10.0


def subject_token(topic: str) -> str:
    """One NATS subject token per topic: ``_`` and ``.`` escaped, so no topic splits."""
    return topic.replace("_", "_5F").replace(".", "_2E")


class _Remote:
    """This gateway's NATS subscription for one topic."""

    __slots__ = ("nsub", "ready", "topic")

    def __init__(self, topic: str, ready: asyncio.Future[None]) -> None:
        self.topic = topic
        self.ready = ready
        self.nsub: Any = None


class NatsBroker:
    """Fan-out across gateways through the NATS server at ``url``."""

    def __init__(
        self,
        url: str,
        subject_prefix: str = "chunkwire.events",
        *,
        replay: int = DEFAULT_REPLAY,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        replay_bytes: int = DEFAULT_REPLAY_BYTES,
        max_topics: int = DEFAULT_MAX_TOPICS,
        connect_timeout: float = 2.0,
        flush_timeout: float = 2.0,
        reconnect_wait: float = 0.5,
    ) -> None:
        if not subject_prefix or any(c in subject_prefix for c in " *>\t\r\n"):
            raise ValueError(f"invalid NATS subject prefix {subject_prefix!r}")
        self.url = url
        self.subject_prefix = subject_prefix
        self.connect_timeout = connect_timeout
        self.flush_timeout = flush_timeout
        self.reconnect_wait = reconnect_wait
        self._fanout = Fanout(
            replay=replay,
            queue_size=queue_size,
            replay_bytes=replay_bytes,
            max_topics=max_topics,
            on_idle=self._topic_idle,
        )
        self.stats = self._fanout.stats
        self._nc: Any = None
        self._remote: dict[str, _Remote] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._outage_failed: int | None = None  # events failed in the current outage
        self._starting = False
        self._last_refusal_log = -_REFUSAL_LOG_INTERVAL
        self._thread: LoopThread | None = None  # where the client and _remote live

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        try:
            from nats.aio.client import Client  # noqa: F401
        except ImportError as error:
            raise BrokerUnavailable(
                "NatsBroker needs nats-py: pip install 'chunkwire[nats]'"
            ) from error
        if self._thread is not None:
            return
        thread = LoopThread("chunkwire-nats")
        try:
            await thread.call(self._connect())
        except BaseException:
            await thread.stop()
            raise
        self._thread = thread

    async def _connect(self) -> None:
        from nats.aio.client import Client

        loop = asyncio.get_running_loop()
        first_error: asyncio.Future[BaseException] = loop.create_future()
        self._starting = True

        async def error_cb(error: BaseException) -> None:
            if self._starting:
                if not first_error.done():
                    first_error.set_result(error)
                return
            self._on_error(error)

        nc = Client()
        connect = asyncio.ensure_future(
            nc.connect(
                servers=[self.url],
                error_cb=error_cb,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                name="chunkwire-gateway",
                no_echo=True,
                pending_size=0,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=self.reconnect_wait,
                connect_timeout=self.connect_timeout,
            )
        )
        try:
            await asyncio.wait(
                {connect, first_error},
                timeout=self.connect_timeout * 2 + 1,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if connect.done() and connect.exception() is None:
                self._nc = nc
                return
            if connect.done():
                reason: object = connect.exception()
            elif first_error.done():
                reason = first_error.result()
            else:
                reason = "no answer"
            connect.cancel()
            await asyncio.gather(connect, return_exceptions=True)
            await _quiet_close(nc)
            raise BrokerUnavailable(f"NATS at {self.url} is unreachable: {_describe(reason)}")
        finally:
            self._starting = False

    async def close(self) -> None:
        self._fanout.close_all()
        thread, self._thread = self._thread, None
        if thread is not None:
            try:
                await thread.call(self._disconnect())
            finally:
                await thread.stop()

    async def _disconnect(self) -> None:
        nc, self._nc = self._nc, None
        for task in list(self._tasks):
            task.cancel()
        if nc is not None:
            await _quiet_close(nc)

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    # -- publish ---------------------------------------------------------------

    async def publish(self, events: Sequence[Event]) -> None:
        self._fanout.deliver_all(events)
        thread = self._thread
        if thread is None:
            self._failed(len(events), "not connected")
            return
        await thread.call(self._publish_remote(events))

    async def _publish_remote(self, events: Sequence[Event]) -> None:
        nc = self._nc
        if nc is None or not nc.is_connected:
            self._failed(len(events), "not connected")
            return
        prefix = self.subject_prefix + "."
        try:
            for event in events:
                payload = events_pb2.Event(
                    topic=event.topic, type=event.type, data=event.data, ts=event.ts
                ).SerializeToString()
                await nc.publish(prefix + subject_token(event.topic), payload)
            await nc.flush(timeout=self.flush_timeout)
        except Exception as error:  # nats errors, OSError, timeouts: all mean "not sent"
            self._failed(len(events), _describe(error))

    def _failed(self, count: int, reason: str) -> None:
        self.stats.publish_failed += count
        if self._nc is not None and self._nc.is_connected:
            # Connected, yet refused (an event over NATS's max_payload...): not an
            # outage; log at most every few seconds.
            now = time.monotonic()
            if now - self._last_refusal_log >= _REFUSAL_LOG_INTERVAL:
                self._last_refusal_log = now
                log.warning("NATS at %s: %d events not published: %s", self.url, count, reason)
            return
        if self._outage_failed is None:
            self._outage_failed = 0
            log.warning(
                "NATS at %s: publishing failed (%s); events reach this gateway's "
                "subscribers only until it is back (counted as failed)",
                self.url,
                reason,
            )
        self._outage_failed += count

    # -- subscribe -------------------------------------------------------------

    async def subscribe(
        self, topics: Sequence[str], *, last_event_id: int | None = None
    ) -> Subscription:
        sub, _ = self._fanout.subscribe(topics, last_event_id)
        try:
            thread = self._thread
            if thread is None:
                raise BrokerUnavailable("the NATS broker is not started")
            await thread.call(self._watch(sub.topics))
        except BaseException:
            sub.close()
            raise
        return sub

    async def _watch(self, topics: Sequence[str]) -> None:
        for topic in topics:
            remote = self._remote.get(topic)
            if remote is None:
                remote = self._open(topic)
            await asyncio.shield(remote.ready)

    def _open(self, topic: str) -> _Remote:
        remote = _Remote(topic, asyncio.get_running_loop().create_future())
        self._remote[topic] = remote
        self._spawn(self._subscribe_remote(remote))
        return remote

    async def _subscribe_remote(self, remote: _Remote) -> None:
        nc = self._nc
        try:
            if nc is None:
                raise BrokerUnavailable("the NATS broker is not started")

            async def on_message(msg: Any) -> None:
                self._on_message(remote, msg.data)

            remote.nsub = await nc.subscribe(
                self.subject_prefix + "." + subject_token(remote.topic),
                cb=on_message,
                pending_bytes_limit=_SUBSCRIPTION_PENDING_BYTES,
            )
            if nc.is_connected:
                try:
                    await nc.flush(timeout=self.flush_timeout)
                except Exception as error:
                    # Re-sent by nats-py when the connection is back.
                    log.debug("NATS subscribe to %r not confirmed: %s", remote.topic, error)
        except BaseException as error:
            if self._remote.get(remote.topic) is remote:
                del self._remote[remote.topic]
            if not remote.ready.done():
                remote.ready.set_exception(error)
                remote.ready.exception()  # retrieved: a failure is reported to the subscriber
            if not isinstance(error, Exception):
                raise
            return
        if not remote.ready.done():
            remote.ready.set_result(None)

    def _topic_idle(self, topic: str) -> None:
        # On the gateway's loop (a subscriber closed); the NATS side runs on its thread,
        # after what was asked of it before, so a new subscriber's _watch comes later.
        thread = self._thread
        if thread is not None and not thread.loop.is_closed():
            thread.loop.call_soon_threadsafe(self._unwatch, topic)

    def _unwatch(self, topic: str) -> None:
        remote = self._remote.pop(topic, None)
        if remote is not None:
            self._spawn(self._unsubscribe(remote))

    async def _unsubscribe(self, remote: _Remote) -> None:
        try:
            await asyncio.shield(remote.ready)
            if remote.nsub is not None:
                await remote.nsub.unsubscribe()
        except Exception as error:
            log.debug("NATS unsubscribe from %r: %s", remote.topic, error)

    def _on_message(self, remote: _Remote, payload: bytes) -> None:
        if self._remote.get(remote.topic) is not remote:
            return  # a subscription being removed
        try:
            msg = events_pb2.Event.FromString(payload)
        except Exception:
            msg = None
        problem = (
            "not an Event message"
            if msg is None
            else event_problem(msg.topic, msg.type, msg.data, _MAX_PAYLOAD_CHECK)
        )
        if problem is None and msg is not None and msg.topic != remote.topic:
            problem = f"topic {msg.topic!r} on the subject of {remote.topic!r}"
        if problem is not None:
            log.warning("NATS: dropped a message on topic %r: %s", remote.topic, problem)
            return
        assert msg is not None
        self._fanout.deliver_all(
            [Event(msg.topic, msg.type, msg.data, 0, msg.ts)], from_thread=True, count=False
        )

    # -- connection events -------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_error(self, error: BaseException) -> None:
        name = type(error).__name__
        if name == "SlowConsumerError":
            self._fanout.count_dropped(1)
            return
        log.debug("NATS at %s: %s", self.url, _describe(error))

    async def _on_disconnected(self) -> None:
        if self._nc is not None and self._outage_failed is None:
            self._outage_failed = 0
            log.warning(
                "NATS at %s: connection lost; reconnecting (events published meanwhile "
                "are counted as failed)",
                self.url,
            )

    async def _on_reconnected(self) -> None:
        failed, self._outage_failed = self._outage_failed, None
        log.warning("NATS at %s: reconnected; %d events failed meanwhile", self.url, failed or 0)


def _describe(error: object) -> str:
    if isinstance(error, BaseException):
        text = str(error).strip() or type(error).__name__
        return text.splitlines()[0] if text else type(error).__name__
    return str(error)


async def _quiet_close(nc: Any) -> None:
    try:
        await asyncio.wait_for(nc.close(), 5)
    except Exception as error:
        log.debug("NATS close: %s", error)
