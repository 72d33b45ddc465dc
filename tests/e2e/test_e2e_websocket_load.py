"""WebSocket sessions under load, through real processes: slow consumers stay bounded,
abrupt disconnects leave nothing behind, and many idle sessions cost little memory."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_stack import ROOT, start_gateway, start_plugin
from websockets.asyncio.client import connect
from ws_apps import stamped

pytestmark = pytest.mark.timeout(300)

BLOCK = 65536
MIB = 1 << 20


class LoadStack:
    def __init__(self, tmp: Path, transport: str) -> None:
        self.transport = transport
        self.sock = tmp / "load.sock"
        self.plugin = start_plugin("ws_apps:plugin", self.sock)
        self.gateway, self.http = start_gateway(
            {"ws": f"unix:{self.sock}"}, "--transport", transport
        )
        self.ws = self.http.replace("http://", "ws://") + "/plugins/ws"

    def gateway_stats(self) -> dict:
        return httpx.get(f"{self.http}/_gw/stats").json()

    def plugin_stats(self) -> dict:
        return httpx.get(f"{self.http}/plugins/ws/stats").json()

    @property
    def own_streams(self) -> int:
        """The plugin's stream table with nothing open but the stats request's own stream."""
        return 0 if self.transport == "call" else 1

    def close(self) -> None:
        self.gateway.stop()
        self.plugin.stop()


@pytest.fixture
def load(tmp_path, transport) -> Iterator[LoadStack]:
    stack = LoadStack(tmp_path, transport)
    try:
        yield stack
    finally:
        stack.close()


def run(coro, timeout: float = 240):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until_stable(read, polls: int = 6, interval: float = 0.25, timeout: float = 60) -> int:
    """Poll ``read()`` until it stops changing for ``polls`` polls in a row; its value then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last, same = None, 0
    while same < polls:
        if loop.time() > deadline:
            raise AssertionError(f"still moving after {timeout} s: {last}")
        value = await asyncio.to_thread(read)
        same = same + 1 if value == last else 0
        last = value
        await asyncio.sleep(interval)
    return last


async def until(predicate, what: str, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(predicate):
        if loop.time() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what}")
        await asyncio.sleep(0.1)


# -- slow consumers -----------------------------------------------------------------


def test_client_that_stops_reading_stops_the_plugin(load):
    """Plugin -> client: a handler sending 64 KiB messages as fast as it can is held
    back once the buffers between it and a client that reads nothing are full."""
    before = load.gateway_stats()

    async def go():
        async with connect(f"{load.ws}/flood", max_size=None) as ws:
            assert len(await ws.recv()) == BLOCK  # the session runs
            sent = await until_stable(lambda: load.plugin_stats()["flood_sent"])
            stats = await asyncio.to_thread(load.gateway_stats)
            ws.transport.abort()
            return sent, stats

    sent, during = run(go())
    print(f"flood stalled after {sent} messages ({sent * BLOCK / MIB:.1f} MiB); "
          f"gateway VmHWM {before['vmhwm']} -> {during['vmhwm']} kB")
    # Unbounded, it would have sent gigabytes by now; the chain holds a few MiB
    # (gRPC windows, one message in the gateway, the two sockets' buffers).
    assert sent * BLOCK < 32 * MIB
    assert during["vmhwm"] - before["vmhwm"] < 32 * 1024
    # the handler learns the client left, and the session ends
    run(until(lambda: load.plugin_stats()["sessions"] == 0, "flood session ended"))


def test_handler_that_stops_receiving_stops_the_client(load):
    """Client -> plugin: a handler that stops receiving makes the gateway stop reading
    the client's socket, so the client's sends stall."""
    before = load.gateway_stats()
    sent = 0
    block = os.urandom(BLOCK)  # incompressible: permessage-deflate cannot shrink it

    async def go():
        nonlocal sent
        async with connect(f"{load.ws}/stall") as ws:

            async def sender():
                nonlocal sent
                while True:
                    await ws.send(block)
                    sent += 1

            task = asyncio.create_task(sender())
            await until(lambda: load.plugin_stats()["stall_received"] == 1, "first message")

            def progress() -> int:
                return sent

            stalled_at = await until_stable(progress)
            stats = await asyncio.to_thread(load.gateway_stats)
            task.cancel()
            ws.transport.abort()
            return stalled_at, stats

    stalled_at, during = run(go())
    print(f"client stalled after {stalled_at} messages ({stalled_at * BLOCK / MIB:.1f} MiB); "
          f"gateway VmHWM {before['vmhwm']} -> {during['vmhwm']} kB")
    assert stalled_at * BLOCK < 32 * MIB
    assert during["vmhwm"] - before["vmhwm"] < 32 * 1024
    # the plugin never took more than the one message it received
    assert load.plugin_stats()["stall_received"] == 1
    # the client is gone and the plugin is not reading: the gateway ends the call
    run(until(lambda: load.plugin_stats()["sessions"] == 0, "stalled session ended"))


def test_each_session_is_a_stream_of_the_connection_on_mux_and_lane(load):
    """Three open sessions: on mux and lane, three streams in both sides' tables and no
    ServeWebSocket call on either side; on call, three ServeWebSocket calls."""
    base = load.plugin_stats()

    async def go():
        sessions = [await connect(f"{load.ws}/idle") for _ in range(3)]
        for i, ws in enumerate(sessions):
            await ws.send(f"session {i}")
            assert await ws.recv() == f"session {i}"
        # One after the other: the plugin's stats request is a stream of its own
        # on the gateway's side while it runs.
        stats = (
            await asyncio.to_thread(load.gateway_stats),
            await asyncio.to_thread(load.plugin_stats),
        )
        for ws in sessions:
            await ws.close()
        return stats

    gw, plugin = run(go())
    assert gw[f"websockets_{load.transport}"] == 3
    assert gw["websockets"] == 3
    if load.transport == "call":
        assert plugin["ws_calls"] - base["ws_calls"] == 3
        assert gw["calls"]["ws"] >= 3
        assert gw["mux_streams"]["ws"] == 0
        assert plugin["mux_streams"] == 0
    else:
        assert plugin["ws_calls"] == 0
        assert gw["calls"]["ws"] <= 1  # the Connect call on mux, none on the lane
        assert gw["mux_streams"]["ws"] == 3
        assert plugin["mux_streams"] == 3 + load.own_streams
    run(until(lambda: load.plugin_stats()["sessions"] == 0, "sessions ended"))


def test_stalled_sessions_stop_only_themselves(load):
    """A session whose client stops reading and one whose handler stops receiving, on
    the plugin's connection: HTTP transfers of several stream windows each way and
    another session's 8 MiB of messages go through meanwhile, and the stalled two stay
    stalled (on mux and lane each holds only its own stream's credit)."""
    block = os.urandom(BLOCK)

    async def go():
        flood = await connect(f"{load.ws}/flood", max_size=None)
        assert len(await flood.recv()) == BLOCK
        stall = await connect(f"{load.ws}/stall")
        sent = 0

        async def sender():
            nonlocal sent
            while True:
                await stall.send(block)
                sent += 1

        task = asyncio.create_task(sender())
        await until(lambda: load.plugin_stats()["stall_received"] == 1, "first message")
        flooded = await until_stable(lambda: load.plugin_stats()["flood_sent"])
        stalled_at = await until_stable(lambda: sent)

        async with httpx.AsyncClient(timeout=60) as http:
            response = await http.get(f"{load.http}/plugins/ws/blob/{8 * MIB + 5}")
            assert response.content == stamped(8 * MIB + 5, seed=7)
            body = os.urandom(8 * MIB + 3)
            response = await http.post(f"{load.http}/plugins/ws/sha256", content=body)
            assert response.json() == {
                "size": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
            }
        async with connect(f"{load.ws}/echo", max_size=None) as other:
            for i in range(16):
                message = stamped(512 * 1024 + i, seed=i)
                await other.send(message)
                assert await other.recv() == message

        assert load.plugin_stats()["flood_sent"] == flooded
        assert sent == stalled_at
        task.cancel()
        flood.transport.abort()
        stall.transport.abort()
        return flooded, stalled_at

    flooded, stalled_at = run(go())
    print(f"flood held at {flooded} messages, client sends at {stalled_at}")
    run(until(lambda: load.plugin_stats()["sessions"] == 0, "stalled sessions ended"))


# -- abrupt disconnects ----------------------------------------------------------------

ROUNDS = 200
WARMUP = 50


async def abrupt_sessions(url: str, count: int) -> None:
    for i in range(count):
        ws = await connect(f"{url}/idle")
        message = f"session {i}"
        await ws.send(message)
        assert await ws.recv() == message
        ws.transport.abort()  # no close frame: the TCP connection is reset
        await asyncio.sleep(0)


def settled(load: LoadStack, closed: int) -> tuple[dict, dict]:
    async def wait():
        await until(
            lambda: sum(load.plugin_stats()["idle_closed"].values()) >= closed,
            f"{closed} sessions seen closed",
        )
        await until(
            lambda: load.gateway_stats().get("websockets_active", 0) == 0
            and load.plugin_stats()["sessions"] == 0,
            "no session left",
        )
        await until(
            lambda: load.gateway_stats()["mux_streams"]["ws"] == 0
            and load.plugin_stats()["mux_streams"] == load.own_streams,
            "stream tables empty",
        )

    run(wait())
    time.sleep(0.3)
    return load.gateway_stats(), load.plugin_stats()


def test_abrupt_disconnects_leave_nothing_behind(load):
    run(abrupt_sessions(load.ws, WARMUP))
    gw_before, plugin_before = settled(load, WARMUP)
    run(abrupt_sessions(load.ws, ROUNDS))
    gw_after, plugin_after = settled(load, WARMUP + ROUNDS)
    print("gateway", gw_before, gw_after)
    print("plugin", plugin_before, plugin_after)
    # every handler saw the client leave without a close code (uvicorn reports
    # a lost connection as 1005, others as 1006)
    closed = plugin_after["idle_closed"]
    assert set(closed) <= {"1005", "1006"}
    assert sum(closed.values()) == WARMUP + ROUNDS
    assert gw_after["websockets"] == WARMUP + ROUNDS
    # each session was a stream of the multiplexed connection (mux, lane), or a
    # ServeWebSocket call (call), and the stream tables are empty on both sides
    assert gw_after[f"websockets_{load.transport}"] == WARMUP + ROUNDS
    calls = WARMUP + ROUNDS if load.transport == "call" else 0
    assert plugin_after["ws_calls"] == calls
    assert gw_after["mux_streams"]["ws"] == 0
    assert plugin_after["mux_streams"] == load.own_streams
    # no tasks, calls or memory left behind on either side
    assert gw_after["tasks"] <= gw_before["tasks"]
    assert plugin_after["tasks"] <= plugin_before["tasks"]
    assert gw_after["calls"]["ws"] <= 1
    # malloc's in-use count moves by +-0.6 MiB from round to round of 200 in
    # the gateway without growing (measured over 6 rounds); a leak of 10 KiB
    # per session would exceed the bound.
    assert gw_after["malloc_bytes"] - gw_before["malloc_bytes"] < 2 * MIB
    assert plugin_after["malloc_bytes"] - plugin_before["malloc_bytes"] < 1 * MIB


# -- many idle sessions -----------------------------------------------------------------

IDLE = 1000


@pytest.mark.slow
@pytest.mark.parametrize("compression", ["deflate", None], ids=["deflate", "no-compression"])
def test_thousand_idle_websockets_memory_per_connection(load, compression):
    """1,000 concurrent idle sessions through one gateway: memory per connection,
    reported (printed and in test-artifacts/websocket-idle-memory-*.json), with and
    without permessage-deflate (each compressed session keeps zlib state)."""

    async def go():
        warm = [await connect(f"{load.ws}/idle", compression=compression) for _ in range(10)]
        await until(lambda: load.plugin_stats()["sessions"] == 10, "warm-up sessions")
        gw_before, plugin_before = await asyncio.gather(
            asyncio.to_thread(load.gateway_stats), asyncio.to_thread(load.plugin_stats)
        )
        sockets = []
        for start in range(0, IDLE, 50):
            sockets += await asyncio.gather(
                *(
                    connect(f"{load.ws}/idle", compression=compression)
                    for _ in range(start, min(start + 50, IDLE))
                )
            )
        await until(lambda: load.plugin_stats()["sessions"] == IDLE + 10, "all sessions open")
        gw_after, plugin_after = await asyncio.gather(
            asyncio.to_thread(load.gateway_stats), asyncio.to_thread(load.plugin_stats)
        )
        # every session still answers
        for i, ws in enumerate(sockets[::100]):
            await ws.send(f"still here {i}")
            assert await ws.recv() == f"still here {i}"
        for ws in sockets + warm:
            await ws.close()
        return gw_before, gw_after, plugin_before, plugin_after

    gw_before, gw_after, plugin_before, plugin_after = run(go())
    report = {
        "connections": IDLE,
        "compression": compression or "none",
        "gateway_rss_kb_per_connection": (gw_after["vmrss"] - gw_before["vmrss"]) / IDLE,
        "gateway_malloc_bytes_per_connection": (
            gw_after["malloc_bytes"] - gw_before["malloc_bytes"]
        ) / IDLE,
        "plugin_rss_kb_per_connection": (plugin_after["vmrss"] - plugin_before["vmrss"]) / IDLE,
        "plugin_malloc_bytes_per_connection": (
            plugin_after["malloc_bytes"] - plugin_before["malloc_bytes"]
        ) / IDLE,
        "gateway_tasks": [gw_before["tasks"], gw_after["tasks"]],
        "plugin_tasks": [plugin_before["tasks"], plugin_after["tasks"]],
    }
    print(json.dumps(report, indent=2))
    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    name = f"websocket-idle-memory-{compression or 'none'}.json"
    (out / name).write_text(json.dumps(report, indent=2) + "\n")
    assert gw_after["websockets_active"] == IDLE + 10
    # generous bounds: a leak of a buffer per session would be far above them
    assert report["gateway_rss_kb_per_connection"] < 256
    assert report["plugin_rss_kb_per_connection"] < 256
