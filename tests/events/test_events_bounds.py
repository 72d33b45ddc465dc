"""Bounded subscriber queues (lagged, memory with a reader that stops) and
connect/disconnect cycles that must leave nothing behind."""

from __future__ import annotations

import json
import os
import re
import socket
import time

from events_helpers import BackgroundPublisher, SSEReader, peak_rss_kb, sse_client

EVENTS = 8000
CHUNK = 32
DATA = 4096


def _stalled_subscriber(url: str, path: str) -> socket.socket:
    """A raw HTTP client with a tiny receive buffer that reads the head, then stops."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "connection closed before the response head"
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    sock.settimeout(30)
    buf = bytearray()
    while marker not in buf:
        chunk = sock.recv(1 << 16)
        assert chunk, "stream ended early"
        buf += chunk
    return bytes(buf)


def test_a_reader_that_stops_loses_the_oldest_events_and_is_told(stack):
    gw = stack.gateway("--event-queue-size", "64", "--event-replay", "10")
    stalled = _stalled_subscriber(gw.url, "/events/flood")
    publisher = BackgroundPublisher(gw.events)
    try:
        with sse_client() as client, client.stream("GET", gw.url + "/events/flood") as resp:
            fast = SSEReader(resp)
            baseline = peak_rss_kb(gw.proc.pid)
            seq = 0
            for _ in range(EVENTS // CHUNK):
                batch = []
                for _ in range(CHUNK):
                    seq += 1
                    filler = os.urandom(DATA // 2 - 8).hex()
                    batch.append(("flood", "blob", f"{seq:08d}{filler}"))
                # Returns once the gateway has the events: the stalled reader
                # does not hold the publisher back...
                publisher.send(batch)
                # ...nor the other subscriber, which gets every event in order.
                got = fast.events(CHUNK)
                assert [e.id for e in got] == [str(s) for s in range(seq - CHUNK + 1, seq + 1)]
                assert [e.json()["data"] for e in got] == [d for _, _, d in batch]
            growth_kb = peak_rss_kb(gw.proc.pid) - baseline
        # Unbounded queueing would hold all 32 MB for the stalled reader.
        assert growth_kb < EVENTS * DATA // 1024 // 2, f"gateway grew {growth_kb} kB"

        raw = _read_until(stalled, f"id: {EVENTS}\n".encode())
        # (The body is chunked: chunk-size lines sit between some events.)
        delivered = raw.count(b"event: blob\n")
        dropped = sum(
            json.loads(m)["dropped"] for m in re.findall(rb"event: lagged\ndata: (.*)\n", raw)
        )
        assert dropped > 0, (len(raw), delivered, growth_kb)
        # Every event reached the stalled reader or was counted as dropped.
        assert delivered + dropped == EVENTS
        assert gw.metrics()[("chunkwire_events_dropped_total", ())] == dropped
        assert gw.metrics()[("chunkwire_events_delivered_total", ())] == EVENTS + delivered
    finally:
        stalled.close()
        publisher.close()


def _wait_idle(gw) -> dict:
    deadline = time.monotonic() + 30
    while True:
        stats = gw.stats()
        if stats["events"]["subscribers"] == 0 and stats["events"]["streams"] == 0:
            return stats
        assert time.monotonic() < deadline, stats["events"]
        time.sleep(0.02)


def test_thousand_connect_disconnect_cycles_leave_tasks_and_memory_flat(stack):
    gw = stack.gateway()
    url = gw.url + "/events/churn"
    with sse_client() as client:
        def cycles(count: int) -> None:
            for _ in range(count):
                with client.stream("GET", url) as resp:
                    assert resp.status_code == 200

        cycles(200)  # warm-up: allocator pools, lazily created objects
        before = _wait_idle(gw)
        cycles(1000)
        after = _wait_idle(gw)
    assert after["tasks"] == before["tasks"]
    assert after["events"]["subscribers"] == 0
    # A leak of 1 kB per cycle would show as 1 MB.
    assert after["malloc_bytes"] - before["malloc_bytes"] < 1_000_000, (before, after)
    assert after["vmrss"] - before["vmrss"] < 4096, (before["vmrss"], after["vmrss"])
