"""The lane's settings (LaneSettings) on each side, each observed taking effect.

A plugin served on a unix socket and a PluginClient (the gateway's opener
code) in the same process, over the real lane: real sockets, real memfds
passed over SCM_RIGHTS. What one side sees of the other's ring is its own
mapping of the memfd it received.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
from typing import Any

import httpx
import pytest
from plugin_helpers import State, make_plugin, pattern

from chunkwire import LaneSettings
from chunkwire.client import PluginClient
from chunkwire.errors import PluginCallError
from chunkwire.httpx_transport import AsyncPluginTransport
from chunkwire.transport.lane import (
    MAX_RING_SIZE,
    LaneError,
    SettingError,
    connect_lane,
)

RECORD = 4 << 20


def _client_connection(client: PluginClient) -> Any:
    assert client.transport == "lane"
    (conn,) = client._pool.connections  # type: ignore[union-attr]
    return conn


def _client_rings(client: PluginClient) -> Any:
    return _client_connection(client)._call._rings


def _served(server: Any) -> Any:
    """The plugin's end of its one lane connection: (mux connection, rings)."""
    (served,) = server.mux.connections
    (context,) = server.lane.contexts
    return served, context._link.rings


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("chunkwire")
    ]


# -- validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"ring_size": 2 * 16384 - 1}, "ring_size"),
        ({"ring_size": -1}, "ring_size"),
        ({"ring_size": MAX_RING_SIZE + 1}, "ring_size"),
        ({"ring_size": 1.5e6}, "ring_size"),
        ({"ring_size": True}, "ring_size"),
        ({"ring_size": 65536, "ring_threshold": 32769}, "ring_size"),
        ({"ring_threshold": 0}, "ring_threshold"),
        ({"ring_threshold": "16k"}, "ring_threshold"),
        ({"max_peer_ring": 0}, "max_peer_ring"),
        ({"credit_timeout": 0}, "credit_timeout"),
        ({"credit_timeout": -1.0}, "credit_timeout"),
        ({"credit_timeout": float("inf")}, "credit_timeout"),
        ({"credit_timeout": float("nan")}, "credit_timeout"),
        ({"handshake_timeout": 0.0}, "handshake_timeout"),
        ({"handshake_timeout": None}, "handshake_timeout"),
    ],
)
def test_a_bad_setting_is_refused_by_name(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"^lane {field} ") as caught:
        LaneSettings(**kwargs)
    assert isinstance(caught.value, SettingError) and caught.value.field == field


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ring_size": 0},
        {"ring_size": 2 * 16384},
        {"ring_size": MAX_RING_SIZE},
        {"ring_size": 65536, "ring_threshold": 32768},
        {"ring_threshold": 1, "max_peer_ring": 1},
        {"credit_timeout": 0.001, "handshake_timeout": 1e-3},
    ],
)
def test_settings_at_their_bounds_are_accepted(kwargs: dict[str, Any]) -> None:
    settings = LaneSettings(**kwargs)
    assert dataclasses.asdict(settings).items() >= kwargs.items()


def test_every_side_takes_only_lane_settings() -> None:
    with pytest.raises(TypeError, match="LaneSettings"):
        make_plugin(State(), lane={"ring_size": 0})
    with pytest.raises(TypeError, match="LaneSettings"):
        PluginClient("unix:/tmp/x.sock", lane={"ring_size": 0})  # type: ignore[arg-type]


# -- each setting takes effect ------------------------------------------------


async def test_each_side_maps_the_ring_the_other_side_sized(sock_dir) -> None:
    # The client's ring at its lower bound (twice the threshold), the plugin's odd-sized.
    client_ring = 2 * 16384
    plugin_ring = 3 * 1024 * 1024 + 4097
    plugin = make_plugin(State(), lane=LaneSettings(ring_size=plugin_ring))
    async with (
        plugin.serving(f"unix:{sock_dir}/p.sock") as server,
        PluginClient(
            server.address, chunk_size=16384, lane=LaneSettings(ring_size=client_ring)
        ) as client,
    ):
        # Chunks of half the small ring (the most it takes), many times its
        # size in all: its space must come back as credit.
        body = pattern(40 * client_ring + 123, 3)
        resp = await client.request("POST", "/echo", body=body)
        assert await resp.read() == body
        served, plugin_rings = _served(server)
        client_rings = _client_rings(client)
        assert client_rings.writer.capacity == client_ring
        assert plugin_rings.reader.capacity == client_ring
        assert os.fstat(plugin_rings.reader.fileno()).st_size == client_ring
        assert plugin_rings.writer.capacity == plugin_ring
        assert client_rings.reader.capacity == plugin_ring
        assert os.fstat(client_rings.reader.fileno()).st_size == plugin_ring
        assert _client_connection(client).sender.ringed > 0
        assert served.sender.ringed > 0


async def test_the_httpx_transport_passes_its_lane_settings_on(sock_dir) -> None:
    plugin = make_plugin(State())
    async with plugin.serving(f"unix:{sock_dir}/p.sock") as server:
        transport = AsyncPluginTransport(
            server.address, lane=LaneSettings(ring_size=2 * 1024 * 1024 + 3)
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://plugin") as client:
            r = await client.get("/download?size=100000")
            assert r.content == pattern(100000, 0)
            (context,) = server.lane.contexts
            assert context._link.rings.reader.capacity == 2 * 1024 * 1024 + 3


@pytest.mark.parametrize("side", ["client", "plugin"])
async def test_ring_size_zero_sends_every_body_inline(sock_dir, side: str) -> None:
    none, default = LaneSettings(ring_size=0), LaneSettings()
    plugin = make_plugin(State(), lane=none if side == "plugin" else default)
    async with (
        plugin.serving(f"unix:{sock_dir}/p.sock") as server,
        PluginClient(server.address, lane=none if side == "client" else default) as client,
    ):
        body = pattern(3_000_000, 4)
        resp = await client.request("POST", "/echo", body=body)
        assert await resp.read() == body
        served, plugin_rings = _served(server)
        client_rings = _client_rings(client)
        sender = _client_connection(client).sender if side == "client" else served.sender
        other = served.sender if side == "client" else _client_connection(client).sender
        assert sender.ringed == 0
        assert other.ringed > 0
        without, peer = (
            (client_rings, plugin_rings) if side == "client" else (plugin_rings, client_rings)
        )
        assert without.writer is None and peer.reader is None


CLIENT_THRESHOLD = 20_000
PLUGIN_THRESHOLD = 30_001


@pytest.mark.parametrize("below", [1, 0], ids=["one-byte-less", "exactly"])
async def test_the_threshold_decides_ring_or_inline_on_each_side(sock_dir, below: int) -> None:
    # Each side applies its own threshold to the body chunks it sends.
    plugin = make_plugin(State(), lane=LaneSettings(ring_threshold=PLUGIN_THRESHOLD))

    @plugin.route("/head-then-body")
    async def head_then_body(request: Any, response: Any) -> None:
        await response.flush()  # the head leaves alone; the body is one chunk after it
        await response.write(pattern(int(request.query["size"]), 2))

    async with (
        plugin.serving(f"unix:{sock_dir}/p.sock") as server,
        PluginClient(server.address, lane=LaneSettings(ring_threshold=CLIENT_THRESHOLD)) as client,
    ):
        # The first chunk travels with the request head (always inline); the
        # second, of the size under test, alone (the chunk size is 64 KiB).
        size = CLIENT_THRESHOLD - below
        body = pattern(size + 1, 8)
        resp = await client.request("POST", "/upload", body=[body[:1], body[1:]])
        assert resp.status == 200
        await resp.read()
        served, _ = _served(server)
        assert _client_connection(client).sender.ringed == (0 if below else 1)
        assert served.sender.ringed == 0  # the upload's answer is small

        size = PLUGIN_THRESHOLD - below
        resp = await client.request("GET", f"/head-then-body?size={size}")
        assert await resp.read() == pattern(size, 2)
        assert served.sender.ringed == (0 if below else 1)


@pytest.mark.parametrize(("less", "transport"), [(0, "lane"), (1, "mux")])
async def test_a_peer_ring_above_max_peer_ring_is_refused(
    sock_dir, caplog, less: int, transport: str
) -> None:
    plugin_ring = 1 << 20
    plugin = make_plugin(State(), lane=LaneSettings(ring_size=plugin_ring))
    limit = LaneSettings(max_peer_ring=plugin_ring - less)
    async with (
        plugin.serving(f"unix:{sock_dir}/p.sock") as server,
        PluginClient(server.address, lane=limit) as client,
    ):
        body = pattern(200_000, 9)
        resp = await client.request("POST", "/echo", body=body)
        assert await resp.read() == body
        assert client.transport == transport  # auto: the lane, or mux when it is refused
        async with PluginClient(server.address, lane=limit, transport="lane") as forced:
            if less:
                with pytest.raises(PluginCallError, match="peer's ring is refused"):
                    await forced.request("GET", "/download?size=10")
            else:
                resp = await forced.request("GET", "/download?size=10")
                await resp.read()


async def test_the_plugin_refuses_a_gateway_ring_above_its_max_peer_ring(
    sock_dir, caplog
) -> None:
    client_ring = 1 << 20
    plugin = make_plugin(State(), lane=LaneSettings(max_peer_ring=client_ring - 1))
    async with plugin.serving(f"unix:{sock_dir}/p.sock") as server:
        with pytest.raises(LaneError):
            link = await connect_lane(
                f"{sock_dir}/p.sock.lane", RECORD, LaneSettings(ring_size=client_ring)
            )
            link.close()
        assert server.lane is not None and server.lane.refused == 1
        lines = _warnings(caplog)
        assert len(lines) == 1 and "peer's ring is refused" in lines[0], lines
        link = await connect_lane(
            f"{sock_dir}/p.sock.lane", RECORD, LaneSettings(ring_size=client_ring - 1)
        )
        link.close()


async def test_the_opener_gives_up_on_a_silent_lane_after_its_handshake_timeout(
    sock_dir,
) -> None:
    path = f"{sock_dir}/silent.lane"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    try:
        with pytest.raises(LaneError, match=r"no HELLO within 0\.25 s"):
            await connect_lane(path, RECORD, LaneSettings(handshake_timeout=0.25))
    finally:
        listener.close()


async def test_the_plugin_gives_up_on_a_silent_peer_after_its_handshake_timeout(
    sock_dir, caplog
) -> None:
    plugin = make_plugin(State(), lane=LaneSettings(handshake_timeout=0.3))
    async with plugin.serving(f"unix:{sock_dir}/p.sock") as server:
        reader, writer = await asyncio.open_unix_connection(f"{sock_dir}/p.sock.lane")
        assert await asyncio.wait_for(reader.read(100), 30) == b""
        writer.close()
        assert server.lane is not None and server.lane.refused == 1
    lines = _warnings(caplog)
    assert len(lines) == 1 and "no HELLO within 0.3 s" in lines[0], lines
