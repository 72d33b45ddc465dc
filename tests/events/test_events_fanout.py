"""The in-memory broker takes events from another thread (the Events service's):
waiting subscribers are woken on their loop, each subscriber gets every event of
its topics once and in order while others come and go, and the interpreter's
switch interval is lowered only while an Events service runs."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import threading

import pytest
from processes import HANG_GUARD

from chunkwire.events import Event, InMemoryBroker
from chunkwire.events.service import EventsServer
from chunkwire.events.threads import SWITCH_INTERVAL

STAY = 100


def _events(frames: list[bytes]) -> list[tuple[str, int]]:
    out = []
    for frame in frames:
        data = next(line for line in frame.split(b"\n") if line.startswith(b"data: "))
        event = json.loads(data[len(b"data: "):])
        out.append((event["topic"], event["seq"]))
    return out


def _in_thread(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def test_a_waiting_subscriber_is_woken_by_events_from_another_thread():
    asyncio.run(_woken())


async def _woken() -> None:
    broker = InMemoryBroker()
    sub = await broker.subscribe(["t"])
    data = os.urandom(8).hex()
    waiting = asyncio.ensure_future(sub.wait(3600.0))
    await asyncio.sleep(0)  # the subscriber is waiting now
    thread = _in_thread(broker.publish_threadsafe, [Event("t", "tick", data)])
    await asyncio.wait_for(waiting, HANG_GUARD)
    thread.join(HANG_GUARD)
    frames, dropped = sub.take()
    assert dropped == 0
    assert [json.loads(f.split(b"data: ")[1])["data"] for f in frames] == [data]
    assert broker.stats.published == 1
    sub.close()
    assert broker.stats.subscribers == 0


def test_every_subscriber_gets_its_events_once_in_order_while_others_come_and_go():
    interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)  # as while the Events service runs
    try:
        asyncio.run(_come_and_go())
    finally:
        sys.setswitchinterval(interval)


async def _come_and_go() -> None:
    broker = InMemoryBroker(replay=0, queue_size=1_000_000)
    topics = ["a", "b"]
    rng = random.Random(os.urandom(8))
    go, done = threading.Event(), threading.Event()
    published = 0
    errors: list[BaseException] = []

    def publish() -> None:
        nonlocal published
        go.wait(HANG_GUARD)
        try:
            for _ in range(800):
                batch = [
                    Event(rng.choice(topics), "tick", os.urandom(rng.randrange(1, 40)).hex())
                    for _ in range(rng.randrange(1, 8))
                ]
                broker.publish_threadsafe(batch)
                published += len(batch)
        except BaseException as error:
            errors.append(error)
            raise
        finally:
            done.set()

    seen: list[dict[str, list[int]]] = []
    subscribed = 0

    async def subscriber(watch: list[str], takes: int) -> dict[str, list[int]]:
        nonlocal subscribed
        sub = await broker.subscribe(watch)
        subscribed += 1
        if subscribed >= STAY * len(topics):
            go.set()
        got: dict[str, list[int]] = {}
        try:
            for _ in range(takes):
                if done.is_set() and not sub.pending():
                    break
                await sub.wait(0.01)  # a poll: the publisher may be done
                frames, dropped = sub.take()
                assert dropped == 0
                for topic, seq in _events(frames):
                    got.setdefault(topic, []).append(seq)
        finally:
            sub.close()
        seen.append(got)
        return got

    async def churn() -> None:
        while not done.is_set():
            watch = rng.sample(topics, rng.randrange(1, 3))
            await asyncio.gather(*(subscriber(watch, rng.randrange(1, 6))
                                   for _ in range(rng.randrange(1, 8))))

    thread = _in_thread(publish)
    try:
        # Many subscribers stay, so each delivery walks a long set while others come and go.
        stay = [subscriber([topic], 1 << 30) for topic in topics for _ in range(STAY)]
        results = await asyncio.gather(*stay, churn())
    finally:
        done.wait(HANG_GUARD)
        thread.join(HANG_GUARD)
    assert not errors, errors
    assert broker.stats.subscribers == 0
    assert broker.stats.published == published
    for topic, got in zip([t for t in topics for _ in range(STAY)], results[:-1], strict=True):
        assert got[topic], "a subscriber that stayed got nothing"
    for got in seen:
        for seqs in got.values():
            # Per topic: consecutive sequence numbers, none twice, none missing between.
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs


def test_the_switch_interval_is_lowered_while_an_events_service_runs(tmp_path):
    asyncio.run(_switch_interval(tmp_path))


async def _switch_interval(tmp_path) -> None:
    before = sys.getswitchinterval()
    if before <= SWITCH_INTERVAL:
        pytest.skip(f"the interpreter's switch interval is {before} already")
    broker = InMemoryBroker()
    first = EventsServer(broker, f"unix:{tmp_path / 'one.sock'}")
    second = EventsServer(broker, f"unix:{tmp_path / 'two.sock'}")
    await first.start()
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
    await second.start()
    await first.stop()
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
    await second.stop()
    assert sys.getswitchinterval() == before
