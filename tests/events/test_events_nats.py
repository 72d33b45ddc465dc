"""Several gateways (each started through the CLI) sharing events through a real
nats-server: order across gateways, subscriptions per topic, restart, unreachable."""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
import time

import httpx
from events_helpers import (
    BackgroundPublisher,
    SSEReader,
    env,
    free_port,
    publish,
    sse_client,
    wait_for,
)


def _metric(gw, name: str) -> float:
    return gw.metrics().get((name, ()), 0.0)


def test_events_through_one_gateway_reach_another_in_order(stack, nats_server):
    a = stack.gateway("--nats", nats_server.url)
    b = stack.gateway("--nats", nats_server.url)
    with sse_client() as client, \
            client.stream("GET", b.url + "/events/orders") as b1, \
            client.stream("GET", b.url + "/events/orders") as b2, \
            client.stream("GET", a.url + "/events/orders") as a1:
        sent = [("orders", "placed", f"order-{i}-{i * 7919 % 1000}") for i in range(500)]
        publish(a.events, sent)
        want = [d for _, _, d in sent]
        readers = [SSEReader(resp) for resp in (b1, b2, a1)]
        for reader in readers:
            got = reader.events(500)
            assert [e.json()["data"] for e in got] == want
            assert [e.id for e in got] == [str(i) for i in range(1, 501)]
        # And back the other way, from a plugin handler behind gateway B.
        reply = client.post(
            b.url + "/plugins/p/publish",
            params={"address": b.events, "topic": "orders", "n": 50},
        )
        assert reply.text == "50\n"
        got = readers[2].events(50)
        assert [e.json()["data"] for e in got] == [f"orders/{i}" for i in range(50)]
        assert got[0].id == "501"
    assert _metric(a, "chunkwire_events_publish_failed_total") == 0


def test_one_nats_subscription_per_watched_topic(stack, nats_server):
    gw = stack.gateway("--nats", nats_server.url)
    base = nats_server.subscriptions()
    with sse_client() as client:
        with client.stream("GET", gw.url + "/events/x") as one:
            assert one.status_code == 200
            assert nats_server.subscriptions() == base + 1
            with client.stream("GET", gw.url + "/events/x") as two, \
                    client.stream("GET", gw.url + "/events/y") as three:
                assert two.status_code == three.status_code == 200
                assert nats_server.subscriptions() == base + 2
            wait_for(lambda: nats_server.subscriptions() == base + 1, "y unsubscribed")
        wait_for(lambda: nats_server.subscriptions() == base, "x unsubscribed")


def test_nats_restart_counts_failed_events_and_streams_go_on(stack, nats_server):
    a = stack.gateway("--nats", nats_server.url)
    b = stack.gateway("--nats", nats_server.url)
    publisher = BackgroundPublisher(a.events)
    try:
        with sse_client() as client, \
                client.stream("GET", b.url + "/events/r") as remote, \
                client.stream("GET", a.url + "/events/r") as local:
            remote_events = _pump(SSEReader(remote))
            local_reader = SSEReader(local)
            publisher.send([("r", "t", "before")])
            assert remote_events.get(timeout=30).json()["data"] == "before"
            assert local_reader.next().json()["data"] == "before"

            nats_server.stop()
            outage = [("r", "t", f"outage-{i}") for i in range(7)]
            publisher.send(outage)  # the gateway takes them: publishing never waits for NATS
            got = [e.json()["data"] for e in local_reader.events(7)]
            assert got == [d for _, _, d in outage]  # local subscribers still get them
            wait_for(lambda: _metric(a, "chunkwire_events_publish_failed_total") == 7,
                     "7 failed publishes")
            assert _metric(a, "chunkwire_events_published_total") == 8

            nats_server.start()
            # Probe until events cross again: the same SSE connection on gateway
            # B, never re-opened (pub/sub: probes sent before the gateways have
            # reconnected and re-subscribed are lost).
            deadline = time.monotonic() + 30
            while True:
                assert time.monotonic() < deadline, "events never crossed after the restart"
                publisher.send([("r", "probe", "?")])
                try:
                    event = remote_events.get(timeout=0.2)
                except queue.Empty:
                    continue
                assert event.json()["data"] == "?", "an outage event arrived late"
                break
            after = [("r", "t", f"after-{i}") for i in range(50)]
            publisher.send(after)
            got = []
            while len(got) < 50:
                event = remote_events.get(timeout=30)
                if event.event != "probe":
                    got.append(event.json()["data"])
            assert got == [d for _, _, d in after]
        log = a.proc.stderr()
        outage_lines = [line for line in log.splitlines()
                        if "NATS at" in line and "reconnected" not in line]
        assert len(outage_lines) == 1, log  # logged once, not per event
        reconnected = re.findall(r"reconnected; (\d+) events failed meanwhile", log)
        assert reconnected and int(reconnected[0]) >= 7, log
    finally:
        publisher.close()


def _pump(reader: SSEReader) -> queue.Queue:
    """Events of ``reader`` as they arrive, from a thread."""
    events: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            while (event := reader.next()) is not None:
                events.put(event)
        except (httpx.HTTPError, ValueError):
            pass  # the test closed the response

    threading.Thread(target=run, daemon=True).start()
    return events


def test_nats_unreachable_at_start_is_one_line(stack, tmp_path):
    url = f"nats://127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "chunkwire", "gateway", "--port", "0",
         "--plugin", f"p={stack.plugin_address}", "--nats", url,
         "--events-listen", f"unix:{tmp_path / 'ev.sock'}"],
        env=env(), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"NATS at {url} is unreachable" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "ev.sock").exists()


def test_a_received_event_wakes_an_idle_subscriber_from_the_nats_thread(nats_server):
    """In one process: each broker's NATS client runs on its own thread; an event it
    receives must wake a subscriber whose loop has nothing else to do (the sender runs
    on another thread and loop, so nothing else wakes the receiver's)."""
    import asyncio
    import json
    import os

    from processes import HANG_GUARD

    from chunkwire.events import Event, NatsBroker

    data = os.urandom(8).hex()

    async def send() -> None:
        sender = NatsBroker(nats_server.url)
        await sender.start()
        try:
            await sender.publish([Event("idle.topic", "tick", data, 0, 1)])
        finally:
            await sender.close()

    async def receive() -> None:
        receiver = NatsBroker(nats_server.url)
        await receiver.start()
        try:
            sub = await receiver.subscribe(["idle.topic"])
            sender = threading.Thread(target=asyncio.run, args=(send(),))
            sender.start()
            woken = asyncio.ensure_future(sub.wait(3600.0))
            done, _ = await asyncio.wait({woken}, timeout=HANG_GUARD)
            sender.join(HANG_GUARD)
            assert done, "the subscriber was not woken"
            frames, _ = sub.take()
            assert [json.loads(f.split(b"data: ")[1])["data"] for f in frames] == [data]
            sub.close()
        finally:
            await receiver.close()

    # Debug mode: waking the subscriber from the wrong thread raises instead of waiting
    # for something else to wake the loop.
    asyncio.run(receive(), debug=True)
