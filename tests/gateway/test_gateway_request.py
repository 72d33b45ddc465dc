"""What the plugin sees of a request, identity handling, and how responses come back."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from gateway_fakes import FakePlugin, read_body, response, run, serve_gateway

from chunkwire._core import encode_response_frame
from chunkwire._wire import headers_from_proto
from chunkwire.gateway import Gateway, Identity, Reject

pytestmark = pytest.mark.timeout(60)


async def ok(first, context, log):
    await read_body(context, first, log)
    await context.write(response(200, b"ok"))


async def cookies(first, context, log):
    await context.write(
        response(
            201,
            b"c",
            [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-Trace", "t1"), ("X-Trace", "t2")],
        )
    )


async def flushed(first, context, log):
    await context.write(response(200, b"first\n", complete=False))
    await context.write(encode_response_frame(b"", flush=True))
    await log.event("release").wait()
    await context.write(encode_response_frame(b"last\n", complete=True))


ROUTES = {"/ok": ok, "/a/b": ok, "/cookies": cookies, "/flushed": flushed}


async def gateway_with(test, **options):
    fake = FakePlugin(ROUTES)
    address = await fake.start()
    try:
        async with serve_gateway(Gateway({"p": address}, **options)) as base, httpx.AsyncClient(
            base_url=base, timeout=20
        ) as client:
            await test(client, fake)
    finally:
        await fake.stop()


def test_request_fields():
    async def test(client, fake):
        r = await client.post(
            "/plugins/p/a/b?x=1&x=2&y=%20z",
            content=b"hello",
            headers=[
                ("X-Trace", "one"),
                ("X-Trace", "two"),
                ("Accept-Language", "fr"),
                ("User-Agent", "tester/1"),
                ("X-Chunkwire-User-Id", "forged"),
            ],
        )
        assert r.status_code == 200
        init = fake.log.inits[-1]
        port = client.base_url.port
        assert init.method == "POST"
        assert init.url == f"http://127.0.0.1:{port}/a/b?x=1&x=2&y=%20z"
        assert init.request_uri == "/a/b?x=1&x=2&y=%20z"
        assert (init.proto, init.proto_major, init.proto_minor) == ("HTTP/1.1", 1, 1)
        assert init.host == f"127.0.0.1:{port}"
        assert init.remote_addr.startswith("127.0.0.1:")
        assert init.content_length == 5
        headers = headers_from_proto(init.headers)
        assert headers.getall("x-trace") == ["one", "two"]
        assert "x-chunkwire-user-id" not in headers
        ctx = init.plugin_context
        assert len(ctx.request_id) == 32
        assert ctx.ip_address == "127.0.0.1"
        assert ctx.user_agent == "tester/1"
        assert ctx.accept_language == "fr"
        assert ctx.user_id == ""
        r = await client.get("/plugins/p/ok")
        assert fake.log.inits[-1].content_length == -1
        assert fake.log.inits[-1].plugin_context.request_id != ctx.request_id

    run(gateway_with(test))


def test_authenticate_sets_identity():
    async def authenticate(scope):
        headers = dict(scope["headers"])
        token = headers.get(b"authorization")
        if token == b"Bearer bad":
            raise Reject(401, "no")
        if token is None:
            return None
        return Identity(user_id="u1", session_id="s1", context={"accept_language": "de"})

    async def test(client, fake):
        r = await client.get("/plugins/p/ok", headers={"Authorization": "Bearer bad"})
        assert r.status_code == 401
        r = await client.get(
            "/plugins/p/ok",
            headers={"Authorization": "Bearer good", "X-Chunkwire-User-Id": "forged"},
        )
        assert r.status_code == 200
        init = fake.log.inits[-1]
        assert init.plugin_context.user_id == "u1"
        assert init.plugin_context.session_id == "s1"
        assert init.plugin_context.accept_language == "de"
        assert headers_from_proto(init.headers).getall("x-chunkwire-user-id") == ["u1"]
        await client.get("/plugins/p/ok", headers={"X-Chunkwire-User-Id": "forged"})
        assert "x-chunkwire-user-id" not in headers_from_proto(fake.log.inits[-1].headers)

    run(gateway_with(test, authenticate=authenticate))


def test_authenticate_sync_mapping():
    def authenticate(scope):
        return {"user_id": "u2", "headers": {"X-Chunkwire-User-Id": "other"}}

    async def test(client, fake):
        await client.get("/plugins/p/ok")
        init = fake.log.inits[-1]
        assert init.plugin_context.user_id == "u2"
        assert headers_from_proto(init.headers).getall("x-chunkwire-user-id") == ["other"]

    run(gateway_with(test, authenticate=authenticate))


def test_multi_value_response_headers():
    async def test(client, fake):
        r = await client.get("/plugins/p/cookies")
        assert r.status_code == 201
        assert r.headers.get_list("set-cookie") == ["a=1", "b=2"]
        assert r.headers.get_list("x-trace") == ["t1", "t2"]

    run(gateway_with(test))


def test_flushed_bytes_arrive_before_the_end():
    async def test(client, fake):
        async with client.stream("GET", "/plugins/p/flushed") as r:
            chunks = r.aiter_raw()
            first = await asyncio.wait_for(chunks.__anext__(), 5)
            assert first == b"first\n"
            fake.log.event("release").set()
            rest = b"".join([c async for c in chunks])
        assert rest == b"last\n"

    run(gateway_with(test))


def test_stats_path(transport):
    async def test(client, fake):
        await client.get("/plugins/p/ok")
        # No gRPC call left open; on mux, only the long-lived Connect call
        # (the lane is a unix socket, no gRPC call).
        calls = {"p": 1 if transport == "mux" else 0}
        # The app may still collect the plugin's status after the client has
        # its answer, and the channel's Describe (sent when it connects) may
        # still be in flight.
        for _ in range(100):
            stats = (await client.get("/_stats")).json()
            if stats["active"] == 0 and stats["calls"] == calls:
                break
            await asyncio.sleep(0.02)
        assert stats["requests"] == 1
        assert stats["active"] == 0
        assert stats["calls"] == calls
        assert stats["mux_streams"] == {"p": 0}
        assert fake.log.transports == [transport]
        assert stats["tasks"] > 0

    run(gateway_with(test, stats_path="/_stats"))
