"""Response chunks a handler writes as bytes go through the lane's ring with their flags intact."""

from __future__ import annotations

from typing import Any

import pytest
from plugin_helpers import State, make_plugin, pattern

from chunkwire.client import PluginClient

CHUNK = 65536


@pytest.mark.parametrize("flush", [True, False])
async def test_flushed_and_plain_chunks_keep_their_flags_through_the_ring(
    sock_dir, flush: bool
) -> None:
    plugin = make_plugin(State())
    count = 12

    @plugin.route("/chunks")
    async def chunks(request: Any, response: Any) -> None:
        for index in range(count):
            await response.write(pattern(CHUNK, index), flush=flush)

    async with (
        plugin.serving(f"unix:{sock_dir}/p.sock") as server,
        PluginClient(server.address) as client,
    ):
        resp = await client.request("GET", "/chunks")
        got = [bytes(chunk) async for chunk in resp.body]
        assert b"".join(got) == b"".join(pattern(CHUNK, i) for i in range(count))
        assert client.transport == "lane"
        (served,) = server.mux.connections
        # The first chunk travels with the head; every other one through the ring.
        assert served.sender.ringed == count - 1
        assert resp.flushes == (count if flush else 0)
