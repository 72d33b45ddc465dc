"""Every row of the gateway's error table, provoked with fake plugins."""

from __future__ import annotations

import asyncio
import os
import tempfile

import grpc
import httpx
import pytest
from gateway_fakes import FakePlugin, read_body, response, run, serve_gateway

from chunkwire._core import encode_response_frame
from chunkwire._proto import http_pb2
from chunkwire.gateway import Gateway

pytestmark = pytest.mark.timeout(60)


async def ok(first, context, log):
    await read_body(context, first, log)
    await context.write(response(200, b"ok"))


async def abort_before_init(first, context, log):
    await context.abort(grpc.StatusCode.INTERNAL, "boom")


async def return_silently(first, context, log):
    return


async def status_42(first, context, log):
    await context.write(response(42, b"x"))


async def status_1000(first, context, log):
    await context.write(response(1000, b"x"))


async def status_0(first, context, log):
    await context.write(response(0, b"zero"))


async def die_mid_response(first, context, log):
    await context.write(response(200, b"partial " * 100, complete=False))
    await context.write(encode_response_frame(b"more", flush=True))
    await context.abort(grpc.StatusCode.INTERNAL, "handler failed")


async def end_without_complete(first, context, log):
    await context.write(response(200, b"partial", complete=False))


async def never_answer(first, context, log):
    await asyncio.Event().wait()


async def stream_forever(first, context, log):
    await context.write(response(200, b"first\n", complete=False))
    while True:
        await context.write(encode_response_frame(b"x" * 65536))


async def read_all_body(first, context, log):
    size = await read_body(context, first, log)
    await context.write(response(200, str(size).encode()))


async def answer_early(first, context, log):
    await context.write(response(413, b"too big for me\n"))


ROUTES = {
    "/ok": ok,
    "/abort": abort_before_init,
    "/silent": return_silently,
    "/s42": status_42,
    "/s1000": status_1000,
    "/s0": status_0,
    "/die": die_mid_response,
    "/incomplete": end_without_complete,
    "/never": never_answer,
    "/forever": stream_forever,
    "/count": read_all_body,
    "/early": answer_early,
}


def sync_post(client, path, body):
    # httpx's sync transport reads an early response after a failed write; the
    # async one (anyio) cannot once the socket broke.
    with httpx.Client(timeout=20) as sync:
        return sync.post(str(client.base_url).rstrip("/") + path, content=body)


async def with_fake(test, **gateway_options):
    fake = FakePlugin(ROUTES)
    address = await fake.start()
    gateway = Gateway({"fake": address}, **gateway_options)
    try:
        async with serve_gateway(gateway) as base, httpx.AsyncClient(
            base_url=base + "/plugins/fake", timeout=20
        ) as client:
            await test(client, fake)
    finally:
        await fake.stop()


def test_unknown_plugin_and_outside_paths_are_404():
    async def test(client, fake):
        for url in ("/plugins/nope/x", "/", "/plugins/", "/other/fake/ok"):
            r = await client.get(client.base_url.join(url).copy_with(path=url))
            assert r.status_code == 404, url
        assert fake.log.inits == []

    run(with_fake(test))


def test_no_route_in_plugin_is_the_plugins_404():
    async def test(client, fake):
        r = await client.get("/missing")
        assert r.status_code == 404
        assert r.text == "no route\n"

    run(with_fake(test))


def test_plugin_not_reachable_is_503():
    async def main():
        with tempfile.TemporaryDirectory() as tmp:
            gateway = Gateway({"gone": f"unix:{tmp}/none.sock", "tcp": "127.0.0.1:1"})
            async with serve_gateway(gateway) as base, httpx.AsyncClient(base_url=base) as c:
                assert (await c.get("/plugins/gone/x")).status_code == 503
                assert (await c.post("/plugins/gone/x", content=b"a" * 100)).status_code == 503
                assert (await c.get("/plugins/tcp/x")).status_code == 503

    run(main())


@pytest.mark.parametrize("route", ["/abort", "/silent"])
def test_stream_failing_before_response_init_is_502(route):
    async def test(client, fake):
        r = await client.get(route)
        assert r.status_code == 502

    run(with_fake(test))


@pytest.mark.parametrize("route", ["/s42", "/s1000"])
def test_invalid_status_is_500(route):
    async def test(client, fake):
        r = await client.get(route)
        assert r.status_code == 500

    run(with_fake(test))


def test_status_zero_means_200():
    async def test(client, fake):
        r = await client.get("/s0")
        assert r.status_code == 200
        assert r.content == b"zero"
        assert r.headers["content-length"] == "4"

    run(with_fake(test))


@pytest.mark.parametrize("route", ["/die", "/incomplete"])
def test_failure_after_response_start_aborts_the_connection(route):
    async def test(client, fake):
        async with client.stream("GET", route) as r:
            assert r.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                await r.aread()

    run(with_fake(test))


def test_content_length_over_limit_is_413_without_calling_plugin():
    async def test(client, fake):
        r = await client.post("/count", content=b"a" * 2000)
        assert r.status_code == 413
        assert fake.log.inits == []
        r = await client.post("/count", content=b"a" * 1000)
        assert r.status_code == 200
        assert r.text == "1000"

    run(with_fake(test, max_body_size=1000))


def test_streamed_body_over_limit_is_413_and_plugin_call_cancelled():
    async def test(client, fake):
        def body():
            for _ in range(64):
                yield b"b" * 65536

        r = await asyncio.to_thread(sync_post, client, "/count", body())
        assert r.status_code == 413
        await asyncio.wait_for(fake.log.event("cancelled:/count").wait(), 5)

    run(with_fake(test, max_body_size=1_000_000))


def test_no_response_init_in_time_is_504_and_cancels():
    async def test(client, fake):
        r = await client.get("/never")
        assert r.status_code == 504
        await asyncio.wait_for(fake.log.event("cancelled:/never").wait(), 5)

    run(with_fake(test, response_timeout=0.3))


def test_client_disconnect_cancels_the_call():
    async def test(client, fake):
        async with client.stream("GET", "/forever") as r:
            async for _ in r.aiter_bytes():
                break
        await asyncio.wait_for(fake.log.event("cancelled:/forever").wait(), 5)

    run(with_fake(test))


def test_early_response_stops_sending_the_body():
    async def test(client, fake):
        sent = 0

        def body():
            nonlocal sent
            # 128 MiB: more than any buffer between us plus what the gateway
            # reads and discards before closing (32 MiB)
            for _ in range(2048):
                sent += 65536
                yield b"e" * 65536

        r = await asyncio.to_thread(sync_post, client, "/early", body())
        assert r.status_code == 413
        assert r.text == "too big for me\n"
        assert r.headers.get("connection") == "close"
        assert sent < 2048 * 65536

    run(with_fake(test))


@pytest.mark.parametrize("extension", [True, False], ids=["http-response", "close"])
def test_websocket_to_unreachable_plugin_is_refused(extension):
    async def main():
        gateway = Gateway({"fake": "127.0.0.1:1"})
        sent = []

        async def receive():
            return {"type": "websocket.connect"}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "websocket",
            "path": "/plugins/fake/ws",
            "headers": [(b"host", b"t")],
            "subprotocols": [],
            "extensions": {"websocket.http.response": {}} if extension else {},
        }
        await gateway(scope, receive, send)
        if extension:
            assert sent[0]["type"] == "websocket.http.response.start"
            assert sent[0]["status"] == 503
        else:
            # closing before accept: the server answers the handshake with 403
            assert sent == [{"type": "websocket.close", "code": 1008}]

    run(main())


def test_channel_recovers_when_the_plugin_restarts():
    async def main():
        with tempfile.TemporaryDirectory() as tmp:
            listen = f"unix:{os.path.join(tmp, 'p.sock')}"
            fake = FakePlugin(ROUTES)
            await fake.start(listen)
            gateway = Gateway({"fake": listen})
            async with serve_gateway(gateway) as base, httpx.AsyncClient(base_url=base) as c:
                assert (await c.post("/plugins/fake/ok")).status_code == 200
                await fake.stop()
                # A call racing the plugin's GOAWAY fails on the old connection
                # (502: the stream broke); then the plugin is unreachable (503).
                seen = [(await c.post("/plugins/fake/ok")).status_code]
                while seen[-1] != 503 and len(seen) < 20:
                    seen.append((await c.post("/plugins/fake/ok")).status_code)
                assert seen[-1] == 503 and set(seen) <= {502, 503}, seen
                fake = FakePlugin(ROUTES)
                await fake.start(listen)
                deadline = asyncio.get_running_loop().time() + 10
                while True:
                    r = await c.post("/plugins/fake/ok")
                    if r.status_code == 200 or asyncio.get_running_loop().time() > deadline:
                        break
                    await asyncio.sleep(0.05)
                assert r.status_code == 200
                await fake.stop()

    run(main())


def test_mattermost_method_name():
    async def main():
        fake = FakePlugin(ROUTES, mattermost=True)
        address = await fake.start()
        gateway = Gateway({"mm": address, "plain": address}, mattermost=["mm"])
        async with serve_gateway(gateway) as base, httpx.AsyncClient(base_url=base) as c:
            r = await c.post("/plugins/mm/ok")
            assert (r.status_code, r.text) == (200, "ok")
            # the chunkwire method name is not served by this fake
            assert (await c.post("/plugins/plain/ok")).status_code == 502
        await fake.stop()

    run(main())


def test_lifespan_closes_channels():
    async def main():
        gateway = Gateway({"fake": "127.0.0.1:1"})
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
        sent = []

        async def receive():
            return next(messages)

        async def send(message):
            sent.append(message["type"])

        await gateway({"type": "lifespan"}, receive, send)
        assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]

    run(main())


def test_init_message_is_protobufs_own_serialisation():
    # the gateway's first message must parse as one ServeHTTPRequest
    async def test(client, fake):
        await client.post("/ok", content=b"x" * 10)
        init = fake.log.inits[0]
        assert http_pb2.ServeHTTPRequestInit.FromString(init.SerializeToString()) == init
        assert init.content_length == 10

    run(with_fake(test))
