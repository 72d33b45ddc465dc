"""What a handler sees of the request, and how the body streams in."""

from __future__ import annotations

import hashlib
import json

import pytest
from multidict import MultiDict
from plugin_helpers import State, init_message, make_plugin, pattern, raw_call, serve

from chunkwire._core import encode_request_frame
from chunkwire._proto import http_pb2
from chunkwire.plugin.request import Request, RequestBody

MiB = 1024 * 1024


async def test_every_request_field(listen: str) -> None:
    async with serve(make_plugin(State()), listen) as (server, _):
        headers = [
            http_pb2.HTTPHeader(key="X-Multi", values=[b"one", b"two"]),
            http_pb2.HTTPHeader(key="x-multi", values=[b"three"]),
            http_pb2.HTTPHeader(key="Content-Type", values=[b"text/plain"]),
            http_pb2.HTTPHeader(key="X-Latin", values=["caf\u00e9".encode("latin-1")]),
        ]
        ctx = http_pb2.PluginContext(user_id="u1", session_id="s1")
        message = init_message(
            "post",
            "/info?a=1&b=2&a=3&empty=&sp=x%20y",
            headers=headers,
            host="example.test",
            remote_addr="10.0.0.1:5555",
            proto="HTTP/1.1",
            proto_major=1,
            proto_minor=1,
            content_length=5,
            plugin_context=ctx,
        ) + encode_request_frame(b"hello", complete=True)
        result = await raw_call(server.address, messages=[message])
        assert result.code.name == "OK"
        doc = json.loads(result.body)
    assert doc["method"] == "POST"
    assert doc["url"] == "/info?a=1&b=2&a=3&empty=&sp=x%20y"
    assert doc["path"] == "/info"
    assert doc["query"] == [["a", "1"], ["b", "2"], ["a", "3"], ["empty", ""], ["sp", "x y"]]
    assert doc["host"] == "example.test"
    assert doc["remote_addr"] == "10.0.0.1:5555"
    assert doc["request_uri"] == "/info?a=1&b=2&a=3&empty=&sp=x%20y"
    assert doc["proto"] == "HTTP/1.1"
    assert doc["headers"] == [
        ["X-Multi", "one"],
        ["X-Multi", "two"],
        ["x-multi", "three"],
        ["Content-Type", "text/plain"],
        ["X-Latin", "caf\u00e9"],
    ]
    assert doc["content_length"] == 5
    assert (doc["user_id"], doc["session_id"]) == ("u1", "s1")
    assert doc["body"] == "hello"


async def test_unknown_content_length_is_none(listen: str) -> None:
    async with serve(make_plugin(State()), listen) as (_, client):

        async def body():  # type: ignore[no-untyped-def]
            yield b"abc"

        resp = await client.request("GET", "/info", body=body())
        doc = json.loads(await resp.read())
        assert doc["content_length"] is None
        assert doc["body"] == "abc"


async def test_client_sends_headers_and_query(listen: str) -> None:
    async with serve(make_plugin(State()), listen) as (_, client):
        resp = await client.request(
            "GET",
            "/info",
            headers=[("X-A", "1"), ("x-a", "2"), ("X-B", b"\xff")],
            query=[("q", "1"), ("q", "2 3")],
            host="h",
            remote_addr="r",
        )
        doc = json.loads(await resp.read())
    assert doc["headers"] == [["X-A", "1"], ["X-A", "2"], ["X-B", "\xff"]]
    assert doc["query"] == [["q", "1"], ["q", "2 3"]]
    assert (doc["host"], doc["remote_addr"]) == ("h", "r")


@pytest.mark.async_timeout(120)
async def test_upload_64mib_chunked_sha256(listen: str) -> None:
    data = pattern(64 * MiB, seed=7)
    async with serve(make_plugin(State()), listen) as (_, client):
        resp = await client.request("POST", "/upload", body=data)
        doc = json.loads(await resp.read())
    assert doc["sha256"] == hashlib.sha256(data).hexdigest()
    assert doc["size"] == len(data)
    assert doc["largest"] == 65536
    assert doc["chunks"] == 1024


async def test_upload_from_async_iterable_of_odd_pieces(listen: str) -> None:
    data = pattern(3 * MiB + 123, seed=3)

    async def pieces():  # type: ignore[no-untyped-def]
        sizes = [1, 7, 65535, 65537, 100, 200000, 3]
        pos = i = 0
        while pos < len(data):
            step = sizes[i % len(sizes)]
            yield memoryview(data)[pos : pos + step]
            pos += step
            i += 1

    async with serve(make_plugin(State()), listen, chunk_size=32768) as (_, client):
        resp = await client.request("POST", "/upload", body=pieces())
        doc = json.loads(await resp.read())
    assert doc["sha256"] == hashlib.sha256(data).hexdigest()
    assert doc["largest"] <= 32768


async def test_read_n(listen: str) -> None:
    state = State()
    data = pattern(200_000, seed=1)
    async with serve(make_plugin(state), listen) as (_, client):
        resp = await client.request("POST", "/readn", query={"n": 50_000}, body=data)
        assert await resp.read() == data
    sizes = state.seen["sizes"]
    assert all(0 < s <= 50_000 for s in sizes)  # type: ignore[attr-defined]
    assert sum(sizes) == len(data)  # type: ignore[arg-type]


async def test_read_all_within_limit(listen: str) -> None:
    data = pattern(1 * MiB, seed=2)
    async with serve(make_plugin(State()), listen) as (_, client):
        resp = await client.request("POST", "/readall", query={"limit": MiB}, body=data)
        assert (resp.status, await resp.read()) == (200, hashlib.sha256(data).hexdigest().encode())


async def test_read_all_over_limit_raises_body_too_large(listen: str) -> None:
    state = State()
    async with serve(make_plugin(state), listen) as (_, client):

        async def body():  # type: ignore[no-untyped-def]
            for _ in range(20):
                yield b"x" * 1000

        resp = await client.request("POST", "/readall-catch", query={"limit": 5000}, body=body())
        text = await resp.read()
        assert resp.status == 413
    assert b"5000" in text
    assert type(state.errors[0]).__name__ == "BodyTooLarge"
    assert state.errors[0].limit == 5000  # type: ignore[attr-defined]


async def test_read_all_refuses_by_content_length_up_front(listen: str) -> None:
    async with serve(make_plugin(State()), listen) as (_, client):
        resp = await client.request("POST", "/readall", query={"limit": 10}, body=b"y" * 11)
        # Uncaught BodyTooLarge before anything was sent becomes 413.
        assert resp.status == 413
        await resp.read()


async def test_body_spread_over_frames_with_init_alone(listen: str) -> None:
    async with serve(make_plugin(State()), listen) as (server, _):
        messages = [
            init_message("POST", "/echo", content_length=-1),
            encode_request_frame(b"ab"),
            encode_request_frame(b""),
            encode_request_frame(b"cd", complete=True),
        ]
        result = await raw_call(server.address, messages=messages)
    assert result.code.name == "OK"
    assert result.body == b"abcd"


async def test_stream_without_body_complete_is_bad_request(listen: str) -> None:
    async with serve(make_plugin(State()), listen) as (server, _):
        messages = [init_message("POST", "/echo") + encode_request_frame(b"abc")]
        result = await raw_call(server.address, messages=messages)
    # The echoed "abc" was still buffered, so the 400 goes out cleanly.
    assert result.init.status_code == 400
    assert b"without body_complete" in result.body


async def test_first_message_without_init_is_rejected(listen: str) -> None:
    async with serve(make_plugin(State()), listen) as (server, _):
        result = await raw_call(
            server.address, messages=[encode_request_frame(b"x", complete=True)]
        )
        assert result.code.name == "INVALID_ARGUMENT"
        result = await raw_call(server.address, messages=[b"\xff\xff"])
        assert result.code.name == "INVALID_ARGUMENT"


async def test_empty_stream_is_rejected(listen: str) -> None:
    async with serve(make_plugin(State()), listen) as (server, _):
        result = await raw_call(server.address, messages=[])
    assert result.code.name == "INVALID_ARGUMENT"
    assert result.messages == []


def _request(uri: str) -> Request:
    init = http_pb2.ServeHTTPRequestInit(
        method="GET",
        request_uri=uri,
        plugin_context=http_pb2.PluginContext(request_id="r1", user_id="u1"),
    )

    async def no_more() -> object:
        raise AssertionError("no body expected")

    return Request(init, RequestBody(memoryview(b""), True, no_more, object()))


def test_query_and_context_are_read_once_and_keep_changes() -> None:
    request = _request("/a?x=1&y=&x=2")
    query = request.query
    assert list(query.items()) == [("x", "1"), ("y", ""), ("x", "2")]
    query.add("z", "3")
    assert request.query is query and request.query.getall("z") == ["3"]
    assert request.context.request_id == "r1" and request.context is request.context
    request.query = MultiDict([("w", "0")])
    assert list(request.query.items()) == [("w", "0")]
    empty = _request("/b")
    assert len(empty.query) == 0 and empty.query is empty.query
    assert empty.query_string == ""


def test_informative_fields_come_from_the_init_and_keep_changes() -> None:
    init = http_pb2.ServeHTTPRequestInit(
        method="GET",
        url="http://h.example/plugins/p/a?x=1",
        request_uri="/a?x=1",
        host="h.example",
        remote_addr="10.0.0.1:4321",
        proto="HTTP/1.1",
    )

    async def no_more() -> object:
        raise AssertionError("no body expected")

    request = Request(init, RequestBody(memoryview(b""), True, no_more, object()))
    assert (request.url, request.host, request.remote_addr, request.proto) == (
        "http://h.example/plugins/p/a?x=1",
        "h.example",
        "10.0.0.1:4321",
        "HTTP/1.1",
    )
    assert request.request_uri == "/a?x=1" and request.path == "/a"
    request.url = "http://other/"
    request.host = ""
    request.remote_addr = "x"
    request.proto = "HTTP/2"
    assert (request.url, request.host, request.remote_addr, request.proto) == (
        "http://other/",
        "",
        "x",
        "HTTP/2",
    )
    assert repr(request) == "<Request GET http://other/>"
    # Without a request_uri, the path comes from the url (read once, kept).
    fallback = _request("")
    fallback.init.url = "http://h/b/c?q=2"
    fallback = Request(fallback.init, fallback.body)
    assert (fallback.path, fallback.query_string, fallback.url) == (
        "/b/c",
        "q=2",
        "http://h/b/c?q=2",
    )
    assert _request("/z").url == ""
