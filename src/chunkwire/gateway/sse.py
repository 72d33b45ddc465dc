"""The gateway's Server-Sent Events endpoints.

``GET /events/{topic}`` streams one topic (``Last-Event-ID`` resumes it from
the broker's replay buffer); ``GET /events/{topic}/consolidated`` streams
the topic and every topic ``expand_topic`` returns for it, merged. Checks
happen before the stream starts: method (405), authentication (401),
topic syntax (400), ``authorize_topic`` (False: 403, None: 404).

A stream sends what its subscription holds, every queued event in one
write, and a ``: keep-alive`` comment after ``keepalive`` seconds without
any write; it ends cleanly after ``timeout`` seconds without an event, and
at once when the client goes away (a task waiting on ``receive()`` closes
the subscription). ``end_all()`` (the gateway stopping) ends every stream
cleanly once it has written what it holds; streams that start later end at
once.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import unquote

from ..errors import InvalidEvent
from ..events.broker import Broker
from ..events.fanout import Subscription, lagged_frame
from ..events.model import check_topic, topic_problem
from .forward import send_plain
from .types import Receive, Scope, Send

log = logging.getLogger("chunkwire.gateway")

AuthorizeTopic = Callable[[Any, str], "bool | Awaitable[bool | None] | None"]
ExpandTopic = Callable[[Any, str], "Sequence[str] | Awaitable[Sequence[str]]"]
Identify = Callable[[Scope], Awaitable[tuple[bool, Any]]]

KEEPALIVE = b": keep-alive\n\n"
_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class SSEStats:
    __slots__ = ("delivered", "streams")

    def __init__(self) -> None:
        self.delivered = 0
        self.streams = 0


class EventStreams:
    """Serves ``/events/...``; ``identify(scope)`` returns (authenticated, identity)
    or raises the gateway's Reject."""

    def __init__(
        self,
        broker: Broker,
        *,
        identify: Identify,
        reject_type: type[Exception],
        authorize_topic: AuthorizeTopic | None = None,
        expand_topic: ExpandTopic | None = None,
        keepalive: float = 15.0,
        timeout: float | None = 300.0,
    ) -> None:
        if keepalive <= 0:
            raise ValueError(f"sse_keepalive must be > 0, got {keepalive}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"sse_timeout must be > 0 (or None for never), got {timeout}")
        self.broker = broker
        self._identify = identify
        self._reject = reject_type
        self._authorize = authorize_topic
        self._expand = expand_topic
        self.keepalive = keepalive
        self.timeout = timeout
        self.stats = SSEStats()
        self._active: set[Subscription] = set()
        self._ending = False

    def end_all(self) -> None:
        """End every stream cleanly (a complete response), now and from now on."""
        self._ending = True
        for sub in self._active:
            sub.wake()

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Segments of the raw path, so an encoded "/" stays inside the topic (and fails it).
        raw: bytes = scope.get("raw_path") or b""
        if not raw.startswith(b"/events/"):
            raw = scope["path"].encode()
        parts = [unquote(part.decode("latin-1")) for part in raw[len(b"/events/") :].split(b"/")]
        consolidated = len(parts) == 2 and parts[1] == "consolidated"
        if len(parts) > 2 or (len(parts) == 2 and not consolidated):
            await send_plain(send, 404, "Not Found")
            return
        if scope["method"] not in ("GET", "HEAD"):
            await send_plain(send, 405, "Method Not Allowed")
            return
        topic = parts[0]
        try:
            authenticated, identity = await self._identify(scope)
        except self._reject as reject:
            await send_plain(send, reject.status, reject.text)  # type: ignore[attr-defined]
            return
        if not authenticated:
            await send_plain(send, 401, "Unauthorized")
            return
        problem = topic_problem(topic)
        if problem is not None:
            await send_plain(send, 400, problem)
            return
        allowed = await self._allowed(identity, topic)
        if allowed is not True:
            if allowed is None:
                await send_plain(send, 404, "Not Found")
            else:
                await send_plain(send, 403, "Forbidden")
            return
        topics = [topic]
        if consolidated:
            try:
                topics = await self._expanded(identity, topic)
            except InvalidEvent as error:
                log.warning("events: expand_topic(%r): %s", topic, error)
                await send_plain(send, 500, "Internal Server Error")
                return
        last_event_id = None if consolidated else _last_event_id(scope)
        if scope["method"] == "HEAD":
            await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        try:
            sub = await self.broker.subscribe(topics, last_event_id=last_event_id)
        except Exception as error:
            log.warning("events: cannot subscribe to %r: %s", topic, error)
            await send_plain(send, 503, "Service Unavailable")
            return
        await self._stream(sub, receive, send)

    async def _allowed(self, identity: Any, topic: str) -> bool | None:
        if self._authorize is None:
            return True
        result = await _maybe_await(self._authorize(identity, topic))
        return result if result is None else bool(result)

    async def _expanded(self, identity: Any, topic: str) -> list[str]:
        if self._expand is None:
            return [topic]
        children = await _maybe_await(self._expand(identity, topic))
        topics = [topic]
        for child in children:
            check_topic(child)
            # Tenant checks hold for every merged topic, not only the parent.
            if child != topic and await self._allowed(identity, child) is True:
                topics.append(child)
        return topics

    async def _stream(self, sub: Subscription, receive: Receive, send: Send) -> None:
        stats = self.stats
        stats.streams += 1
        self._active.add(sub)
        watcher = asyncio.ensure_future(_watch_disconnect(receive, sub))
        loop = asyncio.get_running_loop()
        keepalive = self.keepalive
        timeout = self.timeout
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
            now = loop.time()
            idle_deadline = now + timeout if timeout is not None else None
            keepalive_at = now + keepalive
            while not sub.closed:
                if sub.pending():
                    frames, dropped = sub.take()
                    if dropped:
                        frames.insert(0, lagged_frame(dropped))
                    count = len(frames) - (1 if dropped else 0)
                    await send(
                        {"type": "http.response.body", "body": b"".join(frames), "more_body": True}
                    )
                    stats.delivered += count
                    now = loop.time()
                    keepalive_at = now + keepalive
                    if count and timeout is not None:
                        idle_deadline = now + timeout
                    continue
                if self._ending:
                    break
                now = loop.time()
                if idle_deadline is not None and now >= idle_deadline:
                    break
                if now >= keepalive_at:
                    await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
                    keepalive_at = loop.time() + keepalive
                    continue
                wake = keepalive_at if idle_deadline is None else min(keepalive_at, idle_deadline)
                await sub.wait(wake - now)
            if not watcher.done():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            stats.streams -= 1
            self._active.discard(sub)
            sub.close()
            watcher.cancel()


async def _watch_disconnect(receive: Receive, sub: Subscription) -> None:
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
    finally:
        sub.close()


def _last_event_id(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"last-event-id":
            try:
                seq = int(value)
            except ValueError:
                return None
            return seq if seq >= 0 else None
    return None
