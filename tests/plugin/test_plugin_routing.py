"""Routing, path parameters, 404 and 405, over real sockets."""

from __future__ import annotations

from typing import Any

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


def test_match_keeps_registration_order_across_exact_and_parametric_routes() -> None:
    plugin = Plugin("order")

    async def first(request: Any, response: Any) -> None: ...
    async def second(request: Any, response: Any) -> None: ...
    async def third(request: Any, response: Any) -> None: ...
    async def fourth(request: Any, response: Any) -> None: ...

    plugin.add_route("/items/{id}", first, methods=["GET"])
    plugin.add_route("/items/new", second)
    plugin.add_route("/items/new", third, methods=["POST"])
    assert plugin.match("GET", "/items/new") == (first, {"id": "new"}, [])
    assert plugin.match("PUT", "/items/new") == (second, {}, [])
    assert plugin.match("GET", "/items/7") == (first, {"id": "7"}, [])
    assert plugin.match("POST", "/items/7") == (None, {}, ["GET"])
    # A route added after the first match is seen.
    plugin.add_route("/later", fourth, methods=["GET", "HEAD"])
    assert plugin.match("GET", "/later") == (fourth, {}, [])
    assert plugin.match("POST", "/later") == (None, {}, ["GET", "HEAD"])
    assert plugin.match("GET", "/none") == (None, {}, [])


def test_match_gathers_allowed_methods_of_every_matching_route() -> None:
    plugin = Plugin("allowed")

    async def handler(request: Any, response: Any) -> None: ...

    plugin.add_route("/a", handler, methods=["GET"])
    plugin.add_route("/{name}", handler, methods=["PUT"])
    plugin.add_route("/a", handler, methods=["DELETE"])
    assert plugin.match("POST", "/a") == (None, {}, ["DELETE", "GET", "PUT"])
    assert plugin.match("PUT", "/a") == (handler, {"name": "a"}, [])
    params = plugin.match("GET", "/a")[1]
    params["x"] = "1"  # a handler may change its path_params: never shared
    assert plugin.match("GET", "/a")[1] == {}
