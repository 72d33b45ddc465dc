"""Event rules (checked by the Publisher and by the gateway's Events service), the
Events socket, and how a Publisher reports a broken gateway connection."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys

import grpc
import pytest
from events_helpers import SSEReader, env, free_port, publish, sse_client

from chunkwire._proto import events_pb2, events_pb2_grpc
from chunkwire.errors import InvalidEvent, PublishError
from chunkwire.events import Publisher

LOCAL_CASES = [
    ("", "t", "d", "invalid topic ''"),
    ("a" * 201, "t", "d", "invalid topic"),
    ("has space", "t", "d", "invalid topic 'has space'"),
    ("slash/no", "t", "d", "invalid topic"),
    ("ok", "", "d", "invalid type: it must be a non-empty string"),
    ("ok", "two\nlines", "d", "must be a single line"),
    ("ok", "cr\rline", "d", "must be a single line"),
    ("ok", "t", "x" * (1 << 20) + "y",
     "data too large: 1048577 bytes, more than the limit of 1048576"),
    ("ok", "t", b"bytes", "invalid data: it must be a str"),
]


@pytest.mark.parametrize(("topic", "kind", "data", "message"), LOCAL_CASES)
def test_publish_refuses_invalid_events_locally(stack, topic, kind, data, message):
    gw = stack.gateway()

    async def run() -> None:
        async with Publisher(gw.events) as publisher:
            with pytest.raises(InvalidEvent) as info:
                await publisher.publish(topic, kind, data)
            assert message in str(info.value)

    asyncio.run(run())


def test_limits_at_the_bound_are_accepted(stack):
    gw = stack.gateway()
    topic = "Az09._:-" + "t" * 192
    big = "x" * (1 << 20)
    with sse_client() as client, client.stream("GET", f"{gw.url}/events/{topic}") as resp:
        publish(gw.events, [(topic, "T" * 200, big), (topic, "t", "é" * (1 << 19))])
        first, second = SSEReader(resp).events(2)
    assert first.json()["data"] == big and first.event == "T" * 200
    assert second.json()["data"] == "é" * (1 << 19)


def _raw_publish(address: str, batches: list[list[tuple[str, str, str]]]):
    async def run():
        async with grpc.aio.insecure_channel(address) as channel:
            stub = events_pb2_grpc.EventsStub(channel)
            requests = [
                events_pb2.EventBatch(
                    events=[events_pb2.Event(topic=t, type=k, data=d) for t, k, d in batch]
                )
                for batch in batches
            ]
            return await stub.Publish(iter(requests))

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (("bad topic", "t", "d"), "event 2: invalid topic 'bad topic'"),
        (("ok", "", "d"), "event 2: invalid type"),
        (("ok", "a\nb", "d"), "event 2: invalid type 'a\\nb': it must be a single line"),
        (("ok", "t", "x" * 1001),
         "event 2: data too large: 1001 bytes, more than the limit of 1000"),
        (("ok", "t", "é" * 500 + "a"), "event 2: data too large: 1001 bytes"),
    ],
)
def test_gateway_answers_invalid_argument_naming_the_event(stack, event, message):
    gw = stack.gateway("--max-event-size", "1000")
    with sse_client() as client, client.stream("GET", gw.url + "/events/ok") as resp:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            _raw_publish(gw.events, [[("ok", "t", "x" * 1000), ("ok", "t", "é" * 500)],
                                     [event, ("ok", "t", "never")]])
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in info.value.details()
        # The batch before the invalid one was published; nothing of its own batch was.
        publish(gw.events, [("ok", "t", "marker")])
        got = [e.json()["data"] for e in SSEReader(resp).events(3)]
    assert got == ["x" * 1000, "é" * 500, "marker"]


def test_publish_ack_counts_the_events(stack):
    gw = stack.gateway()
    ack = _raw_publish(gw.events, [[("a", "t", "1"), ("b", "t", "2")], [("a", "t", "3")], []])
    assert ack.accepted == 3


def test_gateway_refusal_reaches_flush_as_invalid_event(stack):
    gw = stack.gateway("--max-event-size", "1000")

    async def run() -> None:
        async with Publisher(gw.events, max_data_size=10_000) as publisher:
            await publisher.publish("ok", "t", "y" * 1001)
            with pytest.raises(InvalidEvent, match="data too large: 1001 bytes"):
                await publisher.flush()
            await publisher.publish("ok", "t", "fine")
            await publisher.flush()

    asyncio.run(run())


def test_flush_reports_an_unreachable_gateway_and_recovers(stack, tmp_path):
    missing = f"unix:{tmp_path / 'later.sock'}"

    async def first() -> None:
        async with Publisher(missing) as publisher:
            await publisher.publish("late", "t", "lost")
            with pytest.raises(PublishError) as info:
                await publisher.flush()
            assert info.value.failed == 1
            assert "UNAVAILABLE" in str(info.value)

    asyncio.run(first())
    gw = stack.gateway(events=missing)
    with sse_client() as client, client.stream("GET", gw.url + "/events/late") as resp:
        publish(gw.events, [("late", "t", "delivered")])
        event = SSEReader(resp).next()
    assert event is not None and event.json()["data"] == "delivered"


def test_publisher_survives_a_gateway_restart(stack, tmp_path):
    address = f"unix:{tmp_path / 'ev.sock'}"
    gw = stack.gateway(events=address)

    async def run() -> None:
        nonlocal gw
        async with Publisher(address) as publisher:
            await publisher.publish("r", "t", "before")
            await publisher.flush()
            gw.proc.proc.kill()
            gw.proc.proc.wait()
            os.unlink(address[len("unix:"):])
            await publisher.publish("r", "t", "into the void")
            with pytest.raises(PublishError):
                await publisher.flush()
            gw = stack.gateway(events=address)
            with sse_client() as client, client.stream("GET", gw.url + "/events/r") as resp:
                for _ in range(200):  # the publisher retries with backoff
                    await publisher.publish("r", "t", "after")
                    try:
                        await publisher.flush()
                        break
                    except PublishError:
                        await asyncio.sleep(0.05)
                event = SSEReader(resp).next()
        assert event is not None and event.json()["data"] == "after"

    asyncio.run(run())


def test_events_socket_is_private(stack):
    gw = stack.gateway()
    mode = os.stat(gw.events[len("unix:"):]).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def _gateway_cli(stack, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chunkwire", "gateway", "--port", "0",
         "--plugin", f"p={stack.plugin_address}", *extra],
        env=env(), capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("address", ["0.0.0.0:0", "192.0.2.1:5000", "[::]:0"])
def test_events_listen_off_loopback_without_tls_is_refused_at_start(stack, address):
    proc = _gateway_cli(stack, "--events-listen", address)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("chunkwire gateway: error: events_listen ")
    assert f"events_listen {address!r} is not a unix socket or a loopback address" in lines[0]


def test_events_listen_malformed_is_refused(stack):
    proc = _gateway_cli(stack, "--events-listen", "nonsense")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "chunkwire gateway: error: events_listen: address must be 'unix:/path.sock' or "
        "'HOST:PORT', got 'nonsense'"
    ]


def test_events_socket_in_use_is_one_line_at_start(stack):
    gw = stack.gateway()
    proc = _gateway_cli(stack, "--events-listen", gw.events)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "is in use: another process is listening on it" in lines[0]


def test_tcp_loopback_events_port(stack):
    address = f"127.0.0.1:{free_port()}"
    gw = stack.gateway(events=address)
    with sse_client() as client, client.stream("GET", gw.url + "/events/tcp") as resp:
        publish(address, [("tcp", "t", "over tcp")])
        event = SSEReader(resp).next()
    assert event is not None and event.json()["data"] == "over tcp"
