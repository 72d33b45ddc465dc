"""Plugin restarts behind one gateway leave its file descriptors and mappings as they were.

Each lane brings two rings (memfds, mapped): a lane that outlived its
plugin, or a ring not closed with it, would show here as one more fd or
ring mapping per restart. Ring mappings must be back exactly, fds at most
where they were, all mappings within the allocator's arena slack.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import tempfile

import httpx
import pytest
from bodies import stamped
from gateway_fakes import run, serve_gateway

from chunkwire.gateway import Gateway
from chunkwire.plugin import Plugin, Request, Response

RESTARTS = 200


# Python's and malloc's own 1 MiB arenas come and go with the heap's
# fragmentation, whatever the lane does: all mappings together may differ by
# this much. A leak per restart would be RESTARTS.
ARENA_SLACK = 8


def _counts() -> tuple[int, int, int]:
    """(open fds, ring mappings, all mappings)."""
    gc.collect()  # garbage not yet collected holds arenas, and maybe sockets
    with open("/proc/self/maps") as maps:
        lines = maps.readlines()
    rings = sum("chunkwire-ring" in line for line in lines)
    return len(os.listdir("/proc/self/fd")), rings, len(lines)


def _back(now: tuple[int, int, int], before: tuple[int, int, int]) -> bool:
    # Fewer fds is fine: a connection of the warm-up's last plugin may still
    # have been closing when ``before`` was taken.
    fds, rings, maps = now
    return fds <= before[0] and rings == before[1] and maps <= before[2] + ARENA_SLACK


def _plugin() -> Plugin:
    plugin = Plugin("restarts")

    @plugin.route("/digest", methods=["POST"])
    async def digest(request: Request, response: Response) -> None:
        h = hashlib.sha256()
        async for chunk in request.body:
            h.update(chunk)
        await response.write(h.hexdigest().encode())

    return plugin


# The lane, and the call transport as the control (no lane, no ring).
@pytest.mark.only_transports("lane", "call")
def test_plugin_restarts_leave_fds_and_mappings_where_they_started(transport):
    async def main():
        with tempfile.TemporaryDirectory(prefix="cw-", dir="/tmp") as tmp:
            listen = f"unix:{tmp}/p.sock"
            plugin = _plugin()
            gateway = Gateway({"p": listen}, transport=transport)
            async with serve_gateway(gateway) as base, httpx.AsyncClient(base_url=base) as c:

                async def cycle(i: int) -> None:
                    server = await plugin.start(listen)
                    try:
                        body = stamped(i * 1000, 100_000 + i)  # through the rings on the lane
                        for _ in range(100):
                            r = await c.post("/plugins/p/digest", content=body)
                            if r.status_code == 200:
                                break
                            # the previous plugin's connection, not yet seen gone
                            assert r.status_code in (502, 503), r
                            await asyncio.sleep(0.02)
                        assert r.text == hashlib.sha256(body).hexdigest()
                    finally:
                        await server.stop(0)

                for i in range(3):
                    await cycle(i)
                await asyncio.sleep(0.2)
                before = _counts()
                for i in range(RESTARTS):
                    await cycle(i)
                # the last plugin's connection ends once its socket closes
                for _ in range(200):
                    if _back(_counts(), before):
                        break
                    await asyncio.sleep(0.02)
                assert _back(_counts(), before), (_counts(), before)

    run(main())
