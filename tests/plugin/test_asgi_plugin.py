"""ASGIPlugin in process: scope, receive/send messages, backpressure, disconnect, lifespan."""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import pytest

from chunkwire._wire import flow_window
from chunkwire.asgi import ASGIPlugin, LifespanError, is_asgi_app
from chunkwire.client import PluginClient
from chunkwire.errors import IncompleteResponse

KiB = 1024


class Recorder:
    """A bare ASGI app that records what it is given and echoes the body."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan here")
        self.scopes.append(scope)
        parts = []
        while True:
            message = await receive()
            self.messages.append(message)
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 201, "headers": [(b"x-a", b"1")]})
        await send({"type": "http.response.body", "body": b"".join(parts)})


async def test_scope_and_streamed_request_body(sock_dir: str) -> None:
    app = Recorder()
    blocks = [random.Random(i).randbytes(40 * KiB) for i in range(5)]

    async def body():  # type: ignore[no-untyped-def]
        for block in blocks:
            yield block

    async with (
        ASGIPlugin(app).serving(f"unix:{sock_dir}/p.sock") as server,
        PluginClient(server.address, chunk_size=64 * KiB) as client,
    ):
        resp = await client.request(
            "PUT",
            "/some/p%20ath",
            query=[("q", "1"), ("q", "2")],
            headers=[("X-Trace", "a"), ("X-Trace", "b"), ("X-Forwarded-Prefix", "/plugins/p")],
            host="example.org:8443",
            remote_addr="10.1.2.3:4567",
            body=body(),
        )
        echoed = await resp.read()
        plain = await client.request("GET", "/")
        await plain.read()
    assert resp.status == 201 and resp.headers["x-a"] == "1"
    assert echoed == b"".join(blocks)
    scope = app.scopes[0]
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["method"] == "PUT"
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "http"
    assert scope["root_path"] == "/plugins/p"
    assert scope["path"] == "/plugins/p/some/p ath"
    assert scope["raw_path"] == b"/plugins/p/some/p%20ath"
    assert scope["query_string"] == b"q=1&q=2"
    assert scope["client"] == ("10.1.2.3", 4567)
    assert scope["server"] == ("example.org", 8443)
    assert [v for k, v in scope["headers"] if k == b"x-trace"] == [b"a", b"b"]
    assert all(k == k.lower() for k, _ in scope["headers"])
    # several http.request messages, more_body until the last
    last = next(i for i, m in enumerate(app.messages) if not m["more_body"])
    assert last >= 2
    assert all(m["type"] == "http.request" and m["more_body"] for m in app.messages[:last])
    assert app.messages[last]["type"] == "http.request"
    second = app.scopes[1]
    assert second["root_path"] == "" and second["path"] == "/"
    assert second["client"] is None


class Firehose:
    def __init__(self) -> None:
        self.sent = 0
        self.ended_with: BaseException | None = None

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        block = random.Random(5).randbytes(64 * KiB)
        try:
            while True:
                await send({"type": "http.response.body", "body": block, "more_body": True})
                self.sent += len(block)
        except BaseException as exc:
            self.ended_with = exc
            raise


async def _stalled(read) -> int:  # type: ignore[no-untyped-def]
    last, still = -1, 0
    while still < 5:
        await asyncio.sleep(0.05)
        now = read()
        still = still + 1 if now == last else 0
        last = now
    return last


async def test_send_waits_while_the_client_does_not_read(sock_dir: str) -> None:
    app = Firehose()
    plugin = ASGIPlugin(app, lifespan="off")
    async with (
        plugin.serving(f"unix:{sock_dir}/p.sock") as server,
        PluginClient(server.address) as client,
    ):
        async with client.request("GET", "/") as resp:
            await resp.body.__anext__()
            sent = await _stalled(lambda: app.sent)
            bound = plugin.high_water_mark + 2 * flow_window(65536) + 64 * KiB
            print(f"the app got {sent} bytes through while the client stalled (bound {bound})")
            assert sent <= bound
            for _ in range(64):
                await resp.body.__anext__()
            assert app.sent > sent
        # the client left: the app's next send raised an OSError
        for _ in range(200):
            if app.ended_with is not None:
                break
            await asyncio.sleep(0.05)
    assert isinstance(app.ended_with, OSError)


async def test_client_leaving_is_http_disconnect(sock_dir: str) -> None:
    seen: list[str] = []
    started = asyncio.Event()

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ready", "more_body": True})
        started.set()
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "http.disconnect":
                return

    async with (
        ASGIPlugin(app, lifespan="off").serving(f"unix:{sock_dir}/p.sock") as server,
        PluginClient(server.address) as client,
    ):
        resp = await client.request("GET", "/")
        assert bytes(await resp.body.__anext__()) == b"ready"
        await started.wait()
        await resp.aclose()
        for _ in range(200):
            if "http.disconnect" in seen:
                break
            await asyncio.sleep(0.05)
    assert seen == ["http.request", "http.disconnect"]


@pytest.mark.parametrize(
    ("script", "outcome"),
    [
        ([], 500),
        ([{"type": "http.response.start", "status": 200}], "aborted"),
        (
            [
                {"type": "http.response.start", "status": 200},
                {"type": "http.response.body", "body": b"half", "more_body": True},
            ],
            "aborted",
        ),
        (
            [{"type": "http.response.start", "status": 200}, {"type": "http.response.start"}],
            500,
        ),
        ([{"type": "http.response.body", "body": b"x"}], 500),
        ([{"type": "websocket.accept"}], 500),
        ([{"type": "http.response.start", "status": 204}, {"type": "http.response.body"}], 204),
    ],
)
async def test_incomplete_or_wrong_responses(sock_dir: str, script, outcome) -> None:  # type: ignore[no-untyped-def]
    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        for message in script:
            await send(message)

    async with (
        ASGIPlugin(app, lifespan="off").serving(f"unix:{sock_dir}/p.sock") as server,
        PluginClient(server.address) as client,
    ):
        try:
            resp = await client.request("GET", "/")
            await resp.read()
            got: Any = resp.status
        except IncompleteResponse:
            got = "aborted"
        except Exception as exc:  # an abort before any frame: no head at all
            got = "aborted" if "ABORTED" in str(exc) or "INTERNAL" in str(exc) else exc
    assert got == outcome


# -- lifespan ---------------------------------------------------------------------


def lifespan_app(events: list[str], *, fail: str | None = None):  # type: ignore[no-untyped-def]
    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                events.append(message["type"])
                if message["type"] == "lifespan.startup":
                    if fail:
                        await send({"type": "lifespan.startup.failed", "message": fail})
                        return
                    scope["state"]["counter"] = [0]
                    scope["state"]["name"] = "from startup"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        state = scope["state"]
        state["name"] = "changed by a request"  # a copy: the next request sees the original
        state["counter"][0] += 1  # shallow: shared objects stay shared, as in uvicorn
        body = f"{scope['state'].get('name')} {state['counter'][0]}".encode()
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": body})

    return app


async def test_lifespan_runs_around_serving_and_state_is_copied(sock_dir: str) -> None:
    events: list[str] = []
    plugin = ASGIPlugin(lifespan_app(events))
    async with plugin.serving(f"unix:{sock_dir}/p.sock") as server:
        assert events == ["lifespan.startup"]
        async with PluginClient(server.address) as client:
            for n in (1, 2):
                resp = await client.request("GET", "/")
                assert await resp.read() == f"changed by a request {n}".encode()
        assert plugin.state["name"] == "from startup"
    assert events == ["lifespan.startup", "lifespan.shutdown"]


async def test_lifespan_startup_failure_raises(sock_dir: str) -> None:
    events: list[str] = []
    plugin = ASGIPlugin(lifespan_app(events, fail="Traceback...\nOSError: no database"))
    with pytest.raises(LifespanError, match="startup failed: OSError: no database"):
        await plugin.start(f"unix:{sock_dir}/p.sock")
    assert not os.path.exists(f"{sock_dir}/p.sock")


async def test_lifespan_modes(sock_dir: str) -> None:
    # "auto": an app that raises on lifespan is served without it
    async with (
        ASGIPlugin(Recorder()).serving(f"unix:{sock_dir}/a.sock") as server,
        PluginClient(server.address) as client,
    ):
        assert (await client.request("GET", "/")).status == 201
    # "on": it must be supported
    with pytest.raises(LifespanError, match="no lifespan here"):
        await ASGIPlugin(Recorder(), lifespan="on").start(f"unix:{sock_dir}/b.sock")
    # "off": never called
    events: list[str] = []
    async with ASGIPlugin(lifespan_app(events), lifespan="off").serving(f"unix:{sock_dir}/c.sock"):
        pass
    assert events == []


def test_what_counts_as_an_asgi_app() -> None:
    async def bare(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        pass

    def factory() -> None:
        pass

    assert is_asgi_app(bare)
    assert is_asgi_app(Recorder())
    assert not is_asgi_app(Recorder)  # a class, not an app instance
    assert not is_asgi_app(factory)
    with pytest.raises(TypeError, match="not an ASGI 3 application"):
        ASGIPlugin(factory)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lifespan"):
        ASGIPlugin(bare, lifespan="maybe")  # type: ignore[arg-type]
    assert ASGIPlugin(bare).name == "bare"
    assert ASGIPlugin(Recorder(), name="rec").name == "rec"


async def test_the_bench_fastapi_app_serves_as_a_plugin(sock_dir: str) -> None:
    import httpx

    from chunkwire.bench_asgi import make_app
    from chunkwire.client import AsyncPluginTransport

    async with ASGIPlugin(make_app()).serving(f"unix:{sock_dir}/p.sock") as server:
        transport = AsyncPluginTransport(server.address)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            data = random.Random(2).randbytes(300_000)
            assert (await http.post("/b/upload", content=data)).text == "300000"
            down = await http.get("/b/download", params={"size": 1_500_000})
            assert down.headers["content-length"] == "1500000" and len(down.content) == 1_500_000
            assert len((await http.get("/b/small")).content) == 1024
