"""Cancelled calls leave nothing behind (grpc.aio issues 43360 and 43462).

The plugin runs in its own process and reports its asyncio task count, live
objects and malloc'd bytes; 200 calls of each cancellation pattern must leave
them where they were.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chunkwire.client import ClientResponse, PluginClient

HERE = Path(__file__).resolve().parent
SRC = str(HERE.parents[1] / "src")
CALLS = 400
# Allocator noise after warm-up is a few KiB; a per-call leak of the size
# grpc#43360 causes (~270 B per failed batch) shows as 100+ KiB.
MALLOC_SLACK = 48 * 1024
# grpc.aio leaks that much per call whose write is in flight (blocked by flow
# control) when the client cancels; no plugin-side fix without a task per
# write (see the servicer). Bounded here so a bigger leak still fails.
KNOWN_LEAK_SLACK = 2 * 1024 * 1024
OBJECT_SLACK = 16
# A finished Task that grpc.aio's call object still references until its next
# call was seen once (+1); a per-call leak of any named kind shows as CALLS.
KIND_SLACK = 2


async def _stats(client: PluginClient) -> dict:  # type: ignore[type-arg]
    async with client.request("GET", "/stats") as resp:
        return json.loads(await resp.read())


async def _settled(client: PluginClient, base: dict) -> dict:  # type: ignore[type-arg]
    # Cancelled server tasks unwind asynchronously; nothing signals "done".
    for _ in range(100):
        stats = await _stats(client)
        if stats["tasks"] <= base["tasks"]:
            return stats
        await asyncio.sleep(0.05)
    return stats


async def _first_chunk(resp: ClientResponse) -> None:
    await resp.body.__anext__()


async def _one(client: PluginClient, scenario: str) -> None:
    if scenario == "close-after-first-chunk":
        async with client.request("GET", "/wait", query={"write": 1}) as resp:
            await _first_chunk(resp)
    elif scenario == "cancel-mid-upload":
        gate = asyncio.Event()

        async def body():  # type: ignore[no-untyped-def]
            yield b"x" * 1000
            await gate.wait()  # never set

        async with client.request("POST", "/upload", body=body()) as resp:
            await _first_chunk(resp)
    elif scenario == "cancel-mid-write":
        async with client.request("GET", "/firehose") as resp:
            await _first_chunk(resp)
    elif scenario == "handler-swallows-cancel":
        async with client.request("GET", "/swallow") as resp:
            await _first_chunk(resp)
    elif scenario == "cancel-task-awaiting-body":
        resp = await client.request("GET", "/wait", query={"write": 1})
        task = asyncio.ensure_future(resp.read())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    elif scenario == "abandoned-response":
        # Dropped without aclose(): grpc.aio would keep the call in flight
        # forever (grpc#43462); ClientResponse cancels it when collected.
        resp = await client.request("GET", "/wait", query={"write": 1})
        await _first_chunk(resp)
        del resp
    else:  # pragma: no cover
        raise AssertionError(scenario)


@pytest.fixture(scope="module")
def leak_server():  # type: ignore[no-untyped-def]
    import tempfile

    sock_dir = tempfile.mkdtemp(prefix="cw-leak-", dir="/tmp")
    address = f"unix:{sock_dir}/leak.sock"
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "leak_server.py"), address],
        stdout=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=SRC),
        text=True,
    )
    assert proc.stdout is not None
    assert "listening" in proc.stdout.readline()
    yield address
    proc.terminate()
    assert proc.wait(timeout=10) == 0
    os.rmdir(sock_dir)


@pytest.mark.async_timeout(120)
@pytest.mark.parametrize(
    "scenario",
    [
        "close-after-first-chunk",
        "cancel-mid-upload",
        "cancel-mid-write",
        "handler-swallows-cancel",
        "cancel-task-awaiting-body",
        "abandoned-response",
    ],
)
async def test_cancelled_calls_leave_nothing(
    leak_server: str, scenario: str, transport: str
) -> None:
    async with PluginClient(leak_server, transport=transport) as client:
        for _ in range(20):  # warm up allocator pools and grpc caches
            await _one(client, scenario)
        base = await _settled(client, await _stats(client))
        client_tasks = len(asyncio.all_tasks())
        for _ in range(CALLS):
            await _one(client, scenario)
        after = await _settled(client, base)
        gc.collect()
        await asyncio.sleep(0)
        assert len(asyncio.all_tasks()) <= client_tasks
    assert after["tasks"] == base["tasks"], (base, after)
    # All objects within a few one-time caches that a rare path fills on
    # first use (seen: +2 after some runs, never more). A per-call leak shows
    # as CALLS or more.
    objects, base_objects = dict(after["objects"]), dict(base["objects"])
    assert abs(objects.pop("all") - base_objects.pop("all")) <= OBJECT_SLACK, (base, after)
    for kind in objects.keys() | base_objects.keys():
        change = objects.get(kind, 0) - base_objects.get(kind, 0)
        assert abs(change) <= KIND_SLACK, (kind, base, after)
    if base["malloc"] is not None:
        slack = KNOWN_LEAK_SLACK if scenario == "cancel-mid-write" else MALLOC_SLACK
        assert after["malloc"] - base["malloc"] < slack, (base, after)


ABANDONED = 10_000
# Allocator noise after 10,000 streams at concurrency 64 reaches ~170 KiB; the
# smallest leak per stream (one Python object, >= 48 B) would pass 450 KiB.
SCALE_MALLOC_SLACK = 256 * 1024


@pytest.mark.async_timeout(600)
async def test_ten_thousand_abandoned_mux_streams_leave_empty_tables(leak_server: str) -> None:
    """Abandoned mid-stream, 64 at a time on one connection: both stream tables end empty."""
    async with PluginClient(leak_server, transport="mux") as client:

        async def abandon(n: int) -> None:
            for i in range(n):
                if i % 2:
                    await _one(client, "close-after-first-chunk")
                else:
                    await _one(client, "cancel-mid-upload")

        await asyncio.gather(*(abandon(8) for _ in range(64)))  # warm-up, same concurrency
        base = await _settled(client, await _stats(client))
        assert base["mux_streams"] == 1  # the stats request itself
        await asyncio.gather(*(abandon(-(-ABANDONED // 64)) for _ in range(64)))
        after = await _settled(client, base)
        assert client.transport == "mux"
        assert client.open_streams() == 0
    assert after["mux_streams"] == 1, after
    assert after["tasks"] == base["tasks"], (base, after)
    assert after["objects"] == base["objects"], (base, after)
    if base["malloc"] is not None:
        assert after["malloc"] - base["malloc"] < SCALE_MALLOC_SLACK, (base, after)
