"""Routing, path parameters, 404 and 405, over real sockets."""

from __future__ import annotations

import pytest
from plugin_helpers import State, make_plugin, raw_call, serve

from chunkwire import Plugin
from chunkwire._wire import MATTERMOST_SERVE_HTTP_METHOD


async def test_route_and_path_params(listen: str) -> None:
    async with serve(make_plugin(State()), listen) as (_, client):
        resp = await client.request("GET", "/items/42")
        assert (resp.status, await resp.read()) == (200, b"item 42")
        resp = await client.request("PUT", "/items/a%20b")
        assert (resp.status, await resp.read()) == (201, b"put a b")
        resp = await client.request("GET", "/files/a/b/c.txt")
        assert await resp.read() == b"a/b/c.txt"


async def test_unknown_path_is_404(listen: str) -> None:
    async with serve(make_plugin(State()), listen) as (_, client):
        for path in ("/nope", "/items", "/items/1/more", "/status/abc"):
            resp = await client.request("GET", path)
            assert resp.status == 404, path
            assert await resp.read() == b"Not Found\n"


async def test_wrong_method_is_405_with_allow(listen: str) -> None:
    async with serve(make_plugin(State()), listen) as (_, client):
        resp = await client.request("POST", "/items/1")
        assert resp.status == 405
        assert resp.headers["Allow"] == "DELETE, GET, PUT"
        await resp.read()
        resp = await client.request("get", "/echo")
        assert resp.status == 405
        assert resp.headers.getall("Allow") == ["POST, PUT"]


async def test_methods_none_accepts_any(listen: str) -> None:
    async with serve(make_plugin(State()), listen) as (_, client):
        for method in ("GET", "POST", "PATCH", "OPTIONS", "X-CUSTOM"):
            resp = await client.request(method, "/files/x")
            assert resp.status == 200, method
            await resp.read()


def test_route_definitions_rejected() -> None:
    plugin = Plugin("p")
    with pytest.raises(ValueError, match="start with '/'"):
        plugin.route("items")
    with pytest.raises(ValueError, match="duplicate"):
        plugin.route("/{a}/{a}")
    with pytest.raises(ValueError, match="malformed"):
        plugin.route("/{a")
    with pytest.raises(TypeError):
        plugin.route("/x", methods="GET")


async def test_mattermost_name_answers_identically(sock_dir: str) -> None:
    listen = f"unix:{sock_dir}/mm.sock"
    async with serve(make_plugin(State(), mattermost_compat=True), listen) as (server, _):
        ours = await raw_call(server.address, "GET", "/small")
        theirs = await raw_call(
            server.address, "GET", "/small", grpc_method=MATTERMOST_SERVE_HTTP_METHOD
        )
        assert ours.messages == theirs.messages
        assert theirs.code.name == "OK"
        assert theirs.body == b"hello world"


async def test_mattermost_name_off_by_default(sock_dir: str) -> None:
    listen = f"unix:{sock_dir}/mm.sock"
    async with serve(make_plugin(State()), listen) as (server, _):
        result = await raw_call(
            server.address, "GET", "/small", grpc_method=MATTERMOST_SERVE_HTTP_METHOD
        )
        assert result.code.name == "UNIMPLEMENTED"
        assert result.messages == []
