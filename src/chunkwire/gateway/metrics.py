"""Prometheus metrics of one Gateway (its own CollectorRegistry).

The request path only touches plain ints and lists (``PluginHttpStats``);
prometheus-client reads them when the metrics are scraped, through a
custom collector. One wrapper around ``receive``/``send`` per forwarded
request counts body bytes, the response status and the duration.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ..events.fanout import BrokerStats
from .sse import SSEStats
from .types import Message, Receive, Scope, Send

DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)


class PluginHttpStats:
    __slots__ = ("active", "buckets", "bytes_in", "bytes_out", "duration_sum", "statuses")

    def __init__(self) -> None:
        self.active = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.statuses: dict[str, int] = {}
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)  # last one: +Inf only
        self.duration_sum = 0.0

    def observe(self, status: str, seconds: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.buckets[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.duration_sum += seconds


App = Callable[[Scope, Receive, Send], Awaitable[None]]


class GatewayMetrics:
    def __init__(
        self,
        plugin_ids: Iterable[str],
        broker_stats: BrokerStats,
        sse_stats: SSEStats,
    ) -> None:
        self.plugins = {plugin_id: PluginHttpStats() for plugin_id in plugin_ids}
        self._broker = broker_stats
        self._sse = sse_stats
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self))

    def plugin_of(self, path: str) -> PluginHttpStats | None:
        if not path.startswith("/plugins/"):
            return None
        return self.plugins.get(path[len("/plugins/") :].partition("/")[0])

    async def track(
        self, stats: PluginHttpStats, scope: Scope, receive: Receive, send: Send, app: App
    ) -> None:
        status = "aborted"
        complete = False

        async def counting_receive() -> Message:
            message = await receive()
            body = message.get("body")
            if body:
                stats.bytes_in += len(body)
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, complete
            kind = message["type"]
            if kind == "http.response.body":
                body = message.get("body")
                if body:
                    stats.bytes_out += len(body)
                if not message.get("more_body", False):
                    complete = True
            elif kind == "http.response.start":
                status = str(message["status"])
            await send(message)

        stats.active += 1
        started = time.perf_counter()
        try:
            await app(scope, counting_receive, counting_send)
        finally:
            stats.active -= 1
            stats.observe(status if complete else "aborted", time.perf_counter() - started)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def serve(self, send: Send) -> None:
        body = self.render()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", CONTENT_TYPE_LATEST.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})


class _Collector:
    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        broker, sse = m._broker, m._sse
        for name, doc, value in (
            ("chunkwire_events_published", "Events handed to the broker", broker.published),
            ("chunkwire_events_delivered", "Events written to SSE clients", sse.delivered),
            ("chunkwire_events_dropped", "Events dropped from full subscriber queues",
             broker.dropped),
            ("chunkwire_events_publish_failed", "Events the broker failed to publish",
             broker.publish_failed),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily(
            "chunkwire_event_subscribers_active", "SSE subscribers now", value=broker.subscribers
        )
        requests = CounterMetricFamily(
            "chunkwire_http_requests", "Forwarded HTTP requests by final status "
            "('aborted': no complete response)", labels=["plugin", "status"]
        )
        duration = HistogramMetricFamily(
            "chunkwire_http_request_duration_seconds", "Forwarded request duration",
            labels=["plugin"],
        )
        body_bytes = CounterMetricFamily(
            "chunkwire_body_bytes", "Body bytes from clients (in) and to them (out)",
            labels=["plugin", "direction"],
        )
        active = GaugeMetricFamily(
            "chunkwire_streams_active", "Requests being forwarded now", labels=["plugin"]
        )
        for plugin_id, stats in m.plugins.items():
            for status, count in stats.statuses.items():
                requests.add_metric([plugin_id, status], count)
            cumulative = 0
            buckets = []
            for bound, count in zip((*DURATION_BUCKETS, float("inf")), stats.buckets, strict=True):
                cumulative += count
                buckets.append((_bound(bound), cumulative))
            duration.add_metric([plugin_id], buckets, stats.duration_sum)
            body_bytes.add_metric([plugin_id, "in"], stats.bytes_in)
            body_bytes.add_metric([plugin_id, "out"], stats.bytes_out)
            active.add_metric([plugin_id], stats.active)
        yield requests
        yield duration
        yield body_bytes
        yield active


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)
