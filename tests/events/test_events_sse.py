"""SSE endpoints of a gateway started through the CLI, fed by Publishers (in this
process and in a plugin handler)."""

from __future__ import annotations

import json
import threading
import time

import httpx
from events_helpers import SSEReader, publish, sse_client


def test_stream_carries_each_event_with_id_type_and_json(stack):
    gw = stack.gateway()
    with sse_client() as client, client.stream("GET", gw.url + "/events/task-42") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "text/event-stream"
        assert resp.headers["cache-control"] == "no-cache"
        sent = [("task-42", "token", "hello"), ("task-42", "token", "wörld\nline two\r\nx"),
                ("task-42", "done", "")]
        before = time.time_ns() // 1_000_000
        publish(gw.events, sent)
        after = time.time_ns() // 1_000_000
        events = SSEReader(resp).events(3)
    for seq, (event, (topic, kind, data)) in enumerate(zip(events, sent, strict=True), 1):
        assert event.event == kind
        assert event.id == str(seq)
        payload = event.json()
        assert payload["topic"] == topic
        assert payload["type"] == kind
        assert payload["data"] == data
        assert payload["seq"] == seq
        assert before <= payload["ts"] <= after


def test_publisher_in_a_plugin_handler_reaches_subscribers_in_order(stack):
    gw = stack.gateway()
    with sse_client() as client, client.stream("GET", gw.url + "/events/jobs.7") as resp:
        reply = client.post(
            gw.url + "/plugins/p/publish",
            params={"address": gw.events, "topic": "jobs.7", "n": 300},
        )
        assert reply.status_code == 200 and reply.text == "300\n"
        events = SSEReader(resp).events(300)
    assert [e.json()["data"] for e in events] == [f"jobs.7/{i}" for i in range(300)]
    assert [e.id for e in events] == [str(i) for i in range(1, 301)]


def test_topics_are_separate_and_every_subscriber_gets_every_event(stack):
    gw = stack.gateway()
    with sse_client() as client, \
            client.stream("GET", gw.url + "/events/a") as a1, \
            client.stream("GET", gw.url + "/events/a") as a2, \
            client.stream("GET", gw.url + "/events/b") as b:
        publish(gw.events, [("a", "t", "a0"), ("b", "t", "b0"), ("a", "t", "a1")])
        got_a1 = [e.json()["data"] for e in SSEReader(a1).events(2)]
        got_a2 = [e.json()["data"] for e in SSEReader(a2).events(2)]
        got_b = SSEReader(b).events(1)
    assert got_a1 == got_a2 == ["a0", "a1"]
    assert got_b[0].json()["data"] == "b0" and got_b[0].id == "1"


def test_keepalive_comments_while_idle(stack):
    gw = stack.gateway("--sse-keepalive", "0.1")
    with sse_client() as client, client.stream("GET", gw.url + "/events/quiet") as resp:
        reader = SSEReader(resp)
        assert reader.comment_lines(3) == ["keep-alive"] * 3
        publish(gw.events, [("quiet", "t", "after")])
        event = reader.next()
    assert event is not None and event.json()["data"] == "after"


def test_timeout_ends_an_idle_stream_cleanly(stack):
    gw = stack.gateway("--sse-timeout", "0.3", "--sse-keepalive", "0.1")
    with sse_client() as client, client.stream("GET", gw.url + "/events/idle") as resp:
        reader = SSEReader(resp)
        assert reader.next() is None  # a clean end: httpx raises on a cut stream
    assert "keep-alive" in reader.comments
    wait_idle(gw)


def test_each_event_restarts_the_timeout(stack):
    # Events 0.4 s apart over 2 s, with a 1.2 s timeout: only a timer that
    # restarts on each event keeps the stream open for all of them.
    gw = stack.gateway("--sse-timeout", "1.2", "--sse-keepalive", "0.1")
    with sse_client() as client, client.stream("GET", gw.url + "/events/drip") as resp:
        def drip() -> None:
            for i in range(5):
                time.sleep(0.4)
                publish(gw.events, [("drip", "t", str(i))])

        thread = threading.Thread(target=drip)
        thread.start()
        reader = SSEReader(resp)
        got = [reader.next() for _ in range(5)]
        thread.join()
        assert [e.json()["data"] for e in got if e is not None] == ["0", "1", "2", "3", "4"]
        assert reader.next() is None


def test_last_event_id_replays_from_the_bounded_buffer(stack):
    gw = stack.gateway("--event-replay", "5")
    publish(gw.events, [("log", "line", f"l{i}") for i in range(1, 13)])
    with sse_client() as client:
        with client.stream("GET", gw.url + "/events/log",
                           headers={"Last-Event-ID": "9"}) as resp:
            reader = SSEReader(resp)
            replayed = reader.events(3)
            publish(gw.events, [("log", "line", "l13")])
            live = reader.next()
        assert [e.id for e in replayed] == ["10", "11", "12"]
        assert live is not None and live.id == "13"
        # Older than the buffer (8..13 kept after 13 arrived): told how many are gone.
        with client.stream("GET", gw.url + "/events/log",
                           headers={"Last-Event-ID": "2"}) as resp:
            reader = SSEReader(resp)
            lagged = reader.next()
            rest = reader.events(5)
        assert lagged is not None and lagged.event == "lagged" and lagged.id is None
        assert json.loads(lagged.data) == {"dropped": 6}
        assert [e.id for e in rest] == ["9", "10", "11", "12", "13"]
        # No Last-Event-ID: live events only.
        with client.stream("GET", gw.url + "/events/log") as resp:
            publish(gw.events, [("log", "line", "l14")])
            first = SSEReader(resp).next()
        assert first is not None and first.id == "14"


def test_invalid_topic_in_the_path_is_400_and_200_chars_is_fine(stack):
    gw = stack.gateway()
    with sse_client() as client:
        for bad in ("bad%20topic", "a" * 201, "x%2Fy", "%C3%A9"):
            resp = client.get(gw.url + "/events/" + bad)
            assert resp.status_code == 400, bad
            assert "invalid topic" in resp.text
        with client.stream("GET", gw.url + "/events/" + "a" * 200) as resp:
            assert resp.status_code == 200
        assert client.get(gw.url + "/events/a/b").status_code == 404
        assert client.post(gw.url + "/events/a").status_code == 405


def wait_idle(gw, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        events = gw.stats()["events"]
        if events["subscribers"] == 0 and events["streams"] == 0:
            return
        assert time.monotonic() < deadline, f"subscribers left behind: {events}"
        time.sleep(0.02)


def test_disconnect_removes_the_subscriber_at_once(stack):
    gw = stack.gateway()
    with sse_client() as client:
        with client.stream("GET", gw.url + "/events/gone") as resp:
            assert resp.status_code == 200
            assert gw.stats()["events"]["subscribers"] == 1
        wait_idle(gw)
        metrics = gw.metrics()
        assert metrics[("chunkwire_event_subscribers_active", ())] == 0


def test_unknown_paths_still_reach_plugins(stack):
    gw = stack.gateway()
    resp = httpx.post(gw.url + "/plugins/p/body", content=b"abc")
    assert resp.status_code == 200 and resp.content == b"xxx"


def test_event_requests_get_the_gateways_header_checks(stack):
    gw = stack.gateway("--max-header-count", "20")
    url = gw.url + "/events/checked"
    with sse_client() as client:
        many = {f"X-H{i}": "v" for i in range(21)}  # plus Host, Accept...: past 20
        assert client.get(url, headers=many).status_code == 431
        few = {f"X-H{i}": "v" for i in range(10)}
        with client.stream("GET", url, headers=few) as resp:
            assert resp.status_code == 200
        assert client.get(url, headers={"Host": "bad/host"}).status_code == 400
