"""The bundled demo plugin answers bad query parameters with 400, never 500."""

from __future__ import annotations

import pytest

from chunkwire.client import PluginClient
from chunkwire.demo import plugin


@pytest.mark.parametrize(
    ("target", "named"),
    [
        ("/ticks?n=abc", "n='abc'"),
        ("/ticks?n=-1", "n=-1"),
        ("/ticks?n=2&interval=x", "interval='x'"),
        ("/ticks?n=2&interval=nan", "interval=nan"),
        ("/ticks?n=2&interval=-0.5", "interval=-0.5"),
        ("/download?size=-5", "size=-5"),
        ("/download?size=1e3", "size='1e3'"),
        ("/download?size=", "size=''"),
    ],
)
async def test_bad_query_is_400(sock_dir: str, target: str, named: str) -> None:
    async with (
        plugin.serving(f"unix:{sock_dir}/demo.sock") as server,
        PluginClient(server.address) as client,
    ):
        resp = await client.request("GET", target)
        body = (await resp.read()).decode()
    assert resp.status == 400, body
    assert "Content-Length" not in resp.headers or resp.headers["Content-Length"] != "-5"
    assert body.startswith("Bad Request: ") and named in body, body


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/ticks?n=0", b""),
        ("/ticks?n=2&interval=0", b"tick 0\ntick 1\n"),
        ("/download?size=0", b""),
        ("/download?size=70000", (bytes(range(256)) * 274)[:70000]),
    ],
)
async def test_good_query_at_the_bounds(sock_dir: str, target: str, expected: bytes) -> None:
    async with (
        plugin.serving(f"unix:{sock_dir}/demo.sock") as server,
        PluginClient(server.address) as client,
    ):
        resp = await client.request("GET", target)
        assert resp.status == 200
        assert await resp.read() == expected


async def test_chunked_echo(sock_dir: str) -> None:
    async def parts():  # type: ignore[no-untyped-def]
        yield b"no "
        yield b"length"

    async with (
        plugin.serving(f"unix:{sock_dir}/demo.sock") as server,
        PluginClient(server.address) as client,
    ):
        resp = await client.request("POST", "/echo", body=parts())
        assert resp.status == 200
        assert await resp.read() == b"no length"
