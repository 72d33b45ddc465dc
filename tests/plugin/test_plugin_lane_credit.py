"""Ring credit on the lane leaves with the stream credit it goes with, not in records of its own.

The side receiving a transfer sends nothing but credit: ring space back
(RING_CREDIT) for every chunk it takes out of the ring, stream credit
(WINDOW) as its reader hands the chunks on. Both are due after the same
received record, so they leave as one record: about one record back per
record received, not two.
"""

from __future__ import annotations

from typing import Any

import pytest
from plugin_helpers import State, make_plugin, pattern

from chunkwire.client import PluginClient

SIZE = 24 << 20


def _client_connection(client: PluginClient) -> Any:
    assert client.transport == "lane"
    (conn,) = client._pool.connections  # type: ignore[union-attr]
    return conn


@pytest.mark.parametrize("direction", ["download", "upload"])
async def test_the_receiver_sends_about_one_record_per_record_received(
    sock_dir, direction: str
) -> None:
    plugin = make_plugin(State())
    async with (
        plugin.serving(f"unix:{sock_dir}/p.sock") as server,
        PluginClient(server.address) as client,
    ):
        resp = await client.request("GET", "/download?size=10")
        await resp.read()
        conn = _client_connection(client)
        (served,) = server.mux.connections
        (context,) = server.lane.contexts
        if direction == "download":
            receiver, received = conn.sender, conn._call
        else:
            receiver, received = served.sender, context
        sent_before, received_before = receiver.messages, received.records
        if direction == "download":
            resp = await client.request("GET", f"/download?size={SIZE}&seed=4&write=1048576")
            assert await resp.read() == pattern(SIZE, 4)
        else:
            body = pattern(SIZE, 5)
            chunks = [body[i : i + 65536] for i in range(0, SIZE, 65536)]
            resp = await client.request("POST", "/upload", body=chunks)
            assert resp.status == 200
            await resp.read()
        sent = receiver.messages - sent_before
        got = received.records - received_before
        assert served.sender.ringed + conn.sender.ringed >= SIZE // 65536 - 1
        assert got >= 8, got  # the transfer took many records
        # Credit in records of its own would make this about 2.
        assert sent <= 1.25 * got + 2, (sent, got)
