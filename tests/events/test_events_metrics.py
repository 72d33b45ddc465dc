"""Prometheus metrics, scraped from a gateway started through the CLI and parsed with
prometheus-client's parser; each check compares before and after one action."""

from __future__ import annotations

import os
import time

import httpx
from events_helpers import SSEReader, publish, sse_client

from chunkwire.gateway import Gateway


def _value(metrics, name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def _wait_value(gw, name: str, want: float, **labels: str) -> None:
    deadline = time.monotonic() + 30
    while _value(gw.metrics(), name, **labels) != want:
        assert time.monotonic() < deadline, (name, labels, _value(gw.metrics(), name, **labels))
        time.sleep(0.02)


def test_http_metrics_count_requests_statuses_bytes_and_durations(stack):
    gw = stack.gateway()
    before = gw.metrics()
    body = os.urandom(10_000)
    resp = httpx.post(gw.url + "/plugins/p/body", content=body)
    assert resp.status_code == 200 and len(resp.content) == 10_000
    assert httpx.get(gw.url + "/plugins/p/no-such-route").status_code == 404
    after = gw.metrics()

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("chunkwire_http_requests_total", plugin="p", status="200") == 1
    assert delta("chunkwire_http_requests_total", plugin="p", status="404") == 1
    assert delta("chunkwire_body_bytes_total", plugin="p", direction="in") == 10_000
    # out: the 10,000-byte echo and the 404's plain-text body
    assert delta("chunkwire_body_bytes_total", plugin="p", direction="out") == 10_000 + len(
        httpx.get(gw.url + "/plugins/p/no-such-route").content
    )
    assert delta("chunkwire_http_request_duration_seconds_count", plugin="p") == 2
    assert delta("chunkwire_http_request_duration_seconds_bucket", plugin="p", le="+Inf") == 2
    assert delta("chunkwire_http_request_duration_seconds_sum", plugin="p") > 0
    assert _value(after, "chunkwire_streams_active", plugin="p") == 0


def test_active_streams_and_aborted_requests(stack):
    gw = stack.gateway()
    url = gw.url + "/plugins/p/hold"
    with httpx.Client(timeout=30) as client, client.stream("GET", url) as resp:
        lines = resp.iter_lines()  # kept: a dropped iterator closes the response
        assert next(lines) == "started"
        assert _value(gw.metrics(), "chunkwire_streams_active", plugin="p") == 1
    _wait_value(gw, "chunkwire_streams_active", 0, plugin="p")
    _wait_value(gw, "chunkwire_http_requests_total", 1, plugin="p", status="aborted")


def test_unknown_plugins_and_event_paths_are_not_request_metrics(stack):
    gw = stack.gateway()
    assert httpx.get(gw.url + "/plugins/nobody/x").status_code == 404
    assert httpx.get(gw.url + "/events/bad%20topic").status_code == 400
    names = {(name, labels) for name, labels in gw.metrics() if name.startswith("chunkwire_http")}
    assert all(dict(labels).get("plugin") == "p" for _, labels in names)
    assert _value(gw.metrics(), "chunkwire_http_requests_total", plugin="p", status="404") == 0


def test_event_metrics_move_with_publishing_and_delivery(stack):
    gw = stack.gateway()
    with sse_client() as client, \
            client.stream("GET", gw.url + "/events/m") as one, \
            client.stream("GET", gw.url + "/events/m") as two:
        assert _value(gw.metrics(), "chunkwire_event_subscribers_active") == 2
        publish(gw.events, [("m", "t", str(i)) for i in range(5)] + [("nobody", "t", "x")])
        SSEReader(one).events(5)
        SSEReader(two).events(5)
        metrics = gw.metrics()
        assert _value(metrics, "chunkwire_events_published_total") == 6
        assert _value(metrics, "chunkwire_events_delivered_total") == 10
        assert _value(metrics, "chunkwire_events_dropped_total") == 0
        assert _value(metrics, "chunkwire_events_publish_failed_total") == 0
    _wait_value(gw, "chunkwire_event_subscribers_active", 0)


def test_two_gateways_in_one_process_have_their_own_registries():
    a = Gateway({"p": "unix:/nonexistent-a"}, metrics_path="/metrics")
    b = Gateway({"q": "unix:/nonexistent-b"}, metrics_path="/metrics")
    assert a._metrics is not None and b._metrics is not None
    text_a, text_b = a._metrics.render().decode(), b._metrics.render().decode()
    assert 'plugin="p"' in text_a and 'plugin="q"' not in text_a
    assert 'plugin="q"' in text_b and 'plugin="p"' not in text_b
