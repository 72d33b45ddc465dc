"""httpx.AsyncClient over AsyncPluginTransport: a real plugin server, bodies streamed both ways."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random

import httpx
import pytest

from chunkwire import Plugin
from chunkwire.client import AsyncPluginTransport
from chunkwire.plugin import Request, Response

KiB = 1024
MiB = 1024 * KiB


def blocks(count: int, size: int = 64 * KiB, seed: int = 0) -> list[bytes]:
    # Each block is random and distinct: reordering or a repeat changes the digest.
    rng = random.Random(seed)
    return [rng.randbytes(size) for _ in range(count)]


def make_plugin() -> Plugin:
    plugin = Plugin("httpx")

    @plugin.route("/info", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def info(request: Request, response: Response) -> None:
        body = await request.body.read_all()
        response.headers.add("X-Multi", "one")
        response.headers.add("X-Multi", "two")
        response.headers.add("Set-Cookie", "a=1; Path=/")
        response.headers.add("Set-Cookie", "b=2; Path=/")
        response.headers["Content-Type"] = "application/json"
        doc = {
            "method": request.method,
            "path": request.path,
            "query": list(request.query.items()),
            "host": request.host,
            "content_length": request.content_length,
            "trace": request.headers.getall("X-Trace", []),
            "body": body.decode("latin-1"),
        }
        await response.write(json.dumps(doc).encode())

    @plugin.route("/echo", methods=["POST", "PUT"])
    async def echo(request: Request, response: Response) -> None:
        async for chunk in request.body:
            await response.write(chunk, flush=True)

    @plugin.route("/stall-head")
    async def stall_head(request: Request, response: Response) -> None:
        await asyncio.Event().wait()

    @plugin.route("/stall-body")
    async def stall_body(request: Request, response: Response) -> None:
        await response.write(b"first", flush=True)
        await asyncio.Event().wait()

    @plugin.route("/abort")
    async def abort(request: Request, response: Response) -> None:
        await response.write(b"partial", flush=True)
        raise RuntimeError("failed mid-response")

    @plugin.route("/cut")
    async def cut(request: Request, response: Response) -> None:
        response.headers["Content-Length"] = "100"
        await response.write(b"x" * 10, flush=True)
        response.abort()

    @plugin.route("/fail")
    async def fail(request: Request, response: Response) -> None:
        raise RuntimeError("failed before the head")

    @plugin.route("/download")
    async def download(request: Request, response: Response) -> None:
        for block in blocks(int(request.query["n"]), seed=7):
            await response.write(block)

    @plugin.route("/slow-read", methods=["POST"])
    async def slow_read(request: Request, response: Response) -> None:
        digest = hashlib.sha256()
        async for chunk in request.body:
            digest.update(chunk)
            await asyncio.sleep(0.1)
        await response.write(digest.hexdigest().encode())

    return plugin


async def test_request_and_response_heads(sock_dir: str) -> None:
    async with make_plugin().serving(f"unix:{sock_dir}/p.sock") as server:
        transport = AsyncPluginTransport(server.address)
        async with httpx.AsyncClient(transport=transport, base_url="http://files") as http:
            resp = await http.post(
                "/info?q=1&q=2",
                content=b"hello",
                headers=[("X-Trace", "a"), ("X-Trace", "b")],
            )
            empty = await http.get("/info")
            missing = await http.get("/nowhere")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["method"] == "POST"
    assert doc["path"] == "/info"
    assert doc["query"] == [["q", "1"], ["q", "2"]]
    assert doc["host"] == "files"
    assert doc["content_length"] == 5
    assert doc["trace"] == ["a", "b"]
    assert doc["body"] == "hello"
    assert resp.headers.get_list("X-Multi") == ["one", "two"]
    assert resp.headers.get_list("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert dict(resp.cookies) == {"a": "1", "b": "2"}
    assert empty.json()["content_length"] == 0
    assert missing.status_code == 404


async def test_streams_both_ways_at_once(sock_dir: str) -> None:
    parts = blocks(64, seed=1)  # 4 MiB
    echoed: list[asyncio.Event] = [asyncio.Event() for _ in parts]

    async def source():  # type: ignore[no-untyped-def]
        for i, part in enumerate(parts):
            yield part
            # The next part is produced only once this one came back: the
            # response streams while the request is still being sent.
            await asyncio.wait_for(echoed[i].wait(), 30)

    async with make_plugin().serving(f"unix:{sock_dir}/p.sock") as server:
        transport = AsyncPluginTransport(server.address)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://files") as http,
            http.stream("PUT", "/echo", content=source()) as resp,
        ):
            assert resp.status_code == 200
            digest = hashlib.sha256()
            received = 0
            async for data in resp.aiter_raw():
                digest.update(data)
                received += len(data)
                done = received // (64 * KiB)
                for i in range(done):
                    echoed[i].set()
    assert received == len(parts) * 64 * KiB
    assert digest.hexdigest() == hashlib.sha256(b"".join(parts)).hexdigest()


async def test_large_download_streams(sock_dir: str) -> None:
    n = 160  # 10 MiB
    async with make_plugin().serving(f"unix:{sock_dir}/p.sock") as server:
        transport = AsyncPluginTransport(server.address)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://files") as http,
            http.stream("GET", f"/download?n={n}") as resp,
        ):
            digest = hashlib.sha256()
            sizes = []
            async for data in resp.aiter_raw():
                digest.update(data)
                sizes.append(len(data))
    assert sum(sizes) == n * 64 * KiB
    assert max(sizes) <= 64 * KiB  # chunk by chunk, never the whole body
    assert digest.hexdigest() == hashlib.sha256(b"".join(blocks(n, seed=7))).hexdigest()


async def test_read_timeouts(sock_dir: str) -> None:
    async with make_plugin().serving(f"unix:{sock_dir}/p.sock") as server:
        transport = AsyncPluginTransport(server.address)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://files", timeout=httpx.Timeout(5, read=0.3)
        ) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get("/stall-head")
            async with http.stream("GET", "/stall-body") as resp:
                assert resp.status_code == 200
                chunks = resp.aiter_raw()
                assert await chunks.__anext__() == b"first"
                with pytest.raises(httpx.ReadTimeout):
                    await chunks.__anext__()
            # the channel still serves afterwards
            assert (await http.get("/info")).status_code == 200
        await _until(lambda: server.active_calls == 0)


async def test_aborted_response_is_a_remote_protocol_error(sock_dir: str) -> None:
    async with make_plugin().serving(f"unix:{sock_dir}/p.sock") as server:
        transport = AsyncPluginTransport(server.address)
        async with httpx.AsyncClient(transport=transport, base_url="http://files") as http:
            for path in ("/abort", "/cut"):
                async with http.stream("GET", path) as resp:
                    assert resp.status_code == 200
                    with pytest.raises(httpx.RemoteProtocolError):
                        async for _ in resp.aiter_raw():
                            pass
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get("/abort")
            failed = await http.get("/fail")
    assert failed.status_code == 500


async def test_unreachable_plugin_is_a_connect_error(sock_dir: str) -> None:
    transport = AsyncPluginTransport(f"unix:{os.path.join(sock_dir, 'nobody.sock')}")
    async with httpx.AsyncClient(transport=transport, base_url="http://files") as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("/info")


# -- connect, write and pool timeouts ------------------------------------------------


async def _endless_body(size: int = 64 * KiB):  # type: ignore[no-untyped-def]
    rng = random.Random(11)
    while True:
        yield rng.randbytes(size)


@pytest.mark.parametrize("family", ["tcp", "unix"])
async def test_a_peer_that_never_answers_the_connection_is_a_connect_timeout(
    sock_dir: str, family: str
) -> None:
    import socket

    # Listening but never accepting: the kernel completes the connection,
    # nobody speaks HTTP/2 on it.
    if family == "tcp":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{listener.getsockname()[1]}"
    else:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(f"{sock_dir}/mute.sock")
        address = f"unix:{sock_dir}/mute.sock"
    listener.listen(8)
    try:
        transport = AsyncPluginTransport(address)
        timeout = httpx.Timeout(None, connect=0.5)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://files", timeout=timeout
        ) as http:
            with pytest.raises(httpx.ConnectTimeout):
                await http.get("/info")
            with pytest.raises(httpx.ConnectTimeout):
                await http.post("/info", content=b"x" * 100)
    finally:
        listener.close()


async def test_connect_timeout_does_not_touch_a_connected_plugin(sock_dir: str) -> None:
    async with make_plugin().serving(f"unix:{sock_dir}/p.sock") as server:
        transport = AsyncPluginTransport(server.address)
        timeout = httpx.Timeout(30, connect=0.5)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://files", timeout=timeout
        ) as http:
            for i in range(3):
                assert (await http.post("/info", content=b"n%d" % i)).json()["body"] == f"n{i}"


async def test_a_handler_that_never_reads_is_a_write_timeout(sock_dir: str) -> None:
    async with make_plugin().serving(f"unix:{sock_dir}/p.sock") as server:
        transport = AsyncPluginTransport(server.address)
        timeout = httpx.Timeout(None, write=0.5)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://files", timeout=timeout
        ) as http:
            # no head: the stall shows while waiting for it
            with pytest.raises(httpx.WriteTimeout):
                await http.post("/stall-head", content=_endless_body())
            # a head, then the stall shows while the body is read
            async with http.stream("POST", "/stall-body", content=_endless_body()) as resp:
                assert resp.status_code == 200
                chunks = resp.aiter_raw()
                assert await chunks.__anext__() == b"first"
                with pytest.raises(httpx.WriteTimeout):
                    await chunks.__anext__()
            # a single part far larger than the windows stalls the same way
            with pytest.raises(httpx.WriteTimeout):
                await http.post("/stall-head", content=os.urandom(8 * MiB))
            # the channel still serves afterwards
            assert (await http.get("/info")).status_code == 200
        await _until(lambda: server.active_calls == 0)


async def test_write_timeout_bounds_each_write_not_the_upload(sock_dir: str) -> None:
    """The plugin takes a chunk every 0.1 s: the upload lasts several write timeouts."""
    body = b"".join(blocks(40, seed=3))
    async with make_plugin().serving(f"unix:{sock_dir}/p.sock") as server:
        transport = AsyncPluginTransport(server.address)
        timeout = httpx.Timeout(60, write=1.5)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://files", timeout=timeout
        ) as http:
            resp = await http.post("/slow-read", content=body)
    assert resp.text == hashlib.sha256(body).hexdigest()


async def test_max_connections_and_the_pool_timeout(sock_dir: str) -> None:
    async with make_plugin().serving(f"unix:{sock_dir}/p.sock") as server:
        transport = AsyncPluginTransport(server.address, limits=httpx.Limits(max_connections=1))
        timeout = httpx.Timeout(30, pool=0.3)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://files", timeout=timeout
        ) as http:
            async with http.stream("GET", "/stall-body") as held:
                assert held.status_code == 200
                with pytest.raises(httpx.PoolTimeout):
                    await http.get("/info")
            # the slot is free again once the first response is closed
            assert (await http.get("/info")).status_code == 200
            # failures give their slot back too
            with pytest.raises(httpx.ReadTimeout):
                await http.get("/stall-head", timeout=httpx.Timeout(30, read=0.2))
            assert (await http.get("/info")).status_code == 200


async def _until(predicate, limit: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    # A hang guard, not a timing assertion.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)
