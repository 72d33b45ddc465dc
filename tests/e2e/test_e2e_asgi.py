"""FastAPI and Starlette apps, unmodified, as plugins: real plugin and gateway processes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from e2e_stack import (
    HERE,
    PluginsStack,
    Proc,
    _connectable_unix,
    _env,
    peak_rss_kb,
)

from chunkwire.client import AsyncPluginTransport

pytestmark = pytest.mark.timeout(120)

GIB = 1 << 30
MIB = 1 << 20


ASGI_APPS = {
    "fastapi": "asgi_apps:app",
    "starlette": "asgi_apps:starlette_app",
    "bare": "asgi_apps:bare_app",
}


@pytest.fixture(scope="module")
def asgi(tmp_path_factory) -> Iterator[PluginsStack]:  # type: ignore[no-untyped-def]
    stack = PluginsStack(tmp_path_factory.mktemp("asgi"), ASGI_APPS)
    try:
        yield stack
    finally:
        stack.close()


def stamped_blocks(total: int, seed: int) -> Iterator[bytes]:
    """1 MiB blocks of random bytes, each 64 KiB piece stamped with its position."""
    base = bytearray(random.Random(seed).randbytes(MIB))
    for index in range(total // MIB):
        block = bytearray(base)
        for piece in range(16):
            block[piece * 65536 : piece * 65536 + 8] = (index * 16 + piece).to_bytes(8, "big")
        yield bytes(block)


def wait_for(predicate, what: str, limit: float = 30.0):  # type: ignore[no-untyped-def]
    # A hang guard, not a timing assertion.
    deadline = time.monotonic() + limit
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def test_lifespan_state_reaches_requests(asgi: PluginsStack) -> None:
    r = httpx.get(asgi.url + "/plugins/fastapi/state")
    assert r.status_code == 200
    assert r.json()["greeting"] == "set at startup"
    assert r.json()["events"][0] == "startup"
    r = httpx.get(asgi.url + "/plugins/starlette/hello")
    assert r.text.startswith("hello from starlette ")


def test_streaming_response_parts_arrive_while_the_app_runs(asgi: PluginsStack) -> None:
    base = asgi.url + "/plugins/fastapi"
    with httpx.stream("GET", base + "/stream/gate1", timeout=60) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        # The app is blocked until /release: part 0 was flushed while it runs.
        assert next(lines) == "part 0"
        assert "stream gate1 done" not in httpx.get(base + "/events").json()
        assert httpx.post(base + "/release/gate1").status_code == 200
        assert next(lines) == "part 1"
        assert list(lines) == []
    assert "stream gate1 done" in httpx.get(base + "/events").json()


def test_multi_value_headers_cookies_client_and_root_path(asgi: PluginsStack) -> None:
    r = httpx.get(
        asgi.url + "/plugins/fastapi/headers",
        headers=[
            ("X-Trace", "a"),
            ("X-Trace", "b"),
            ("Cookie", "k=v; other=w"),
            ("X-Forwarded-Prefix", "/not/from/clients"),
        ],
    )
    assert r.status_code == 200
    doc = r.json()
    assert doc["trace"] == ["a", "b"]
    assert doc["cookies"] == {"k": "v", "other": "w"}
    assert doc["client"][0] == "127.0.0.1" and doc["client"][1] > 0
    assert doc["root_path"] == "/plugins/fastapi"
    assert doc["url"] == asgi.url + "/plugins/fastapi/headers"
    assert doc["scheme"] == "http"
    assert r.headers.get_list("X-Multi") == ["one", "two"]
    cookies = r.headers.get_list("Set-Cookie")
    assert len(cookies) == 2 and cookies[0].startswith("first=1") and "HttpOnly" in cookies[1]
    assert dict(r.cookies) == {"first": "1", "second": "2"}


def test_url_for_builds_links_through_the_gateway(asgi: PluginsStack) -> None:
    link = httpx.get(asgi.url + "/plugins/fastapi/link").json()["item"]
    assert link == asgi.url + "/plugins/fastapi/items/3"
    assert httpx.get(link).json() == {"item_id": 3}
    text = httpx.get(asgi.url + "/plugins/starlette/hello").text
    assert text == f"hello from starlette {asgi.url}/plugins/starlette/items/x1\n"
    assert httpx.get(f"{asgi.url}/plugins/starlette/items/x%20y").text == "x y"
    # a bare ASGI callable sees the prefix in root_path and path, as ASGI asks
    r = httpx.get(asgi.url + "/plugins/bare/some/where")
    assert r.text == "bare /plugins/bare/some/where /plugins/bare"


def test_exception_gives_500_or_an_aborted_response(asgi: PluginsStack) -> None:
    r = httpx.get(asgi.url + "/plugins/fastapi/boom")
    assert r.status_code == 500
    with httpx.stream("GET", asgi.url + "/plugins/fastapi/boom-mid-stream") as r:
        assert r.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            r.read()


def test_client_disconnect_reaches_the_app_as_http_disconnect(asgi: PluginsStack) -> None:
    base = asgi.url + "/plugins/starlette"
    before = httpx.get(base + "/events").json().count("http.disconnect")
    with httpx.stream("GET", base + "/wait-disconnect") as r:
        assert next(r.iter_raw()) == b"ready\n"
    # leaving the block closed the connection
    wait_for(
        lambda: httpx.get(base + "/events").json().count("http.disconnect") == before + 1,
        "http.disconnect in the app",
    )


def test_request_stream_echo_chunked(asgi: PluginsStack) -> None:
    blocks = list(stamped_blocks(8 * MIB, seed=3))
    r = httpx.put(asgi.url + "/plugins/starlette/echo", content=iter(blocks), timeout=60)
    assert r.status_code == 200
    assert hashlib.sha256(r.content).digest() == hashlib.sha256(b"".join(blocks)).digest()


def test_websocket_handshakes_the_http_apps_do_not_route(asgi: PluginsStack) -> None:
    """No WebSocket route in FastAPI: it closes before accepting (403); the bare
    callable raises on a websocket scope (500)."""

    async def attempt(path: str) -> int:
        url = asgi.url.replace("http://", "ws://") + path
        try:
            async with websockets.connect(url):
                return 101
        except websockets.InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(attempt("/plugins/fastapi/ws")) == 403
    assert asyncio.run(attempt("/plugins/bare/ws")) == 500


def test_the_httpx_transport_reaches_an_asgi_plugin_directly(asgi: PluginsStack) -> None:
    async def call() -> tuple[dict[str, object], dict[str, object]]:
        transport = AsyncPluginTransport(f"unix:{asgi.socks['fastapi']}")
        async with httpx.AsyncClient(transport=transport, base_url="http://files") as http:
            headers = (await http.get("/headers")).json()
            upload = await http.post("/upload-stream", content=b"direct" * 1000)
            return headers, upload.json()

    headers, upload = asyncio.run(call())
    assert headers["root_path"] == ""  # no gateway, no prefix
    assert headers["url"] == "http://files/headers"
    assert upload["bytes"] == 6000


# -- lifespan at start and stop ---------------------------------------------------


def test_lifespan_startup_failure_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    env = _env()
    env["ASGI_APPS_FAIL_STARTUP"] = "1"
    sock = tmp_path / "fail.sock"
    result = subprocess.run(
        [sys.executable, "-m", "chunkwire", "plugin", "asgi_apps:app", "--listen", f"unix:{sock}"],
        env=env,
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "lifespan startup failed" in lines[0] and "database unreachable" in lines[0]
    assert not sock.exists()


def test_lifespan_shutdown_runs_when_the_plugin_stops(tmp_path: Path) -> None:
    marker = tmp_path / "shutdown.txt"
    sock = tmp_path / "p.sock"
    env = _env()
    env["ASGI_APPS_SHUTDOWN_MARKER"] = str(marker)
    proc = subprocess.Popen(
        [sys.executable, "-m", "chunkwire", "plugin", "asgi_apps:app", "--listen", f"unix:{sock}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: sock.exists() and _connectable_unix(str(sock)), "the plugin to listen")
        assert not marker.exists()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert marker.read_text() == "shutdown ran\n"


# -- 1 GiB through FastAPI --------------------------------------------------------


def _rss_mib(proc: Proc) -> float:
    return peak_rss_kb(proc.pid) / 1024


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_file_response_of_1_gib_with_bounded_memory(asgi: PluginsStack, tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    expected = hashlib.sha256()
    with open(path, "wb") as out:
        for block in stamped_blocks(GIB, seed=11):
            expected.update(block)
            out.write(block)
    digest = hashlib.sha256()
    size = 0
    with httpx.stream(
        "GET", asgi.url + "/plugins/fastapi/file", params={"path": str(path)}, timeout=120
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-length"] == str(GIB)
        for chunk in r.iter_raw(MIB):
            digest.update(chunk)
            size += len(chunk)
    path.unlink()
    assert size == GIB
    assert digest.hexdigest() == expected.hexdigest()
    print(
        f"peak RSS: plugin {_rss_mib(asgi.plugins['fastapi']):.0f} MiB, "
        f"gateway {asgi.gateway.peak_rss_mib():.0f} MiB"
    )
    assert _rss_mib(asgi.plugins["fastapi"]) < 128
    assert asgi.gateway.peak_rss_mib() < 100


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_raw_request_stream_upload_of_1_gib(asgi: PluginsStack) -> None:
    expected = hashlib.sha256()

    def body() -> Iterator[bytes]:
        for block in stamped_blocks(GIB, seed=12):
            expected.update(block)
            yield block

    r = httpx.post(asgi.url + "/plugins/fastapi/upload-stream", content=body(), timeout=120)
    assert r.status_code == 200
    assert r.json() == {"bytes": GIB, "sha256": expected.hexdigest()}
    print(f"peak RSS: plugin {_rss_mib(asgi.plugins['fastapi']):.0f} MiB")
    assert _rss_mib(asgi.plugins["fastapi"]) < 128
    assert asgi.gateway.peak_rss_mib() < 100


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_upload_file_of_1_gib(asgi: PluginsStack, tmp_path: Path) -> None:
    path = tmp_path / "upload.bin"
    expected = hashlib.sha256()
    with open(path, "wb") as out:
        for block in stamped_blocks(GIB, seed=13):
            expected.update(block)
            out.write(block)
    with open(path, "rb") as data:
        r = httpx.post(
            asgi.url + "/plugins/fastapi/upload-file",
            files={"file": ("upload.bin", data, "application/octet-stream")},
            timeout=300,
        )
    path.unlink()
    assert r.status_code == 200, r.text
    assert r.json() == {"filename": "upload.bin", "bytes": GIB, "sha256": expected.hexdigest()}
    print(f"peak RSS: plugin {_rss_mib(asgi.plugins['fastapi']):.0f} MiB")
    assert _rss_mib(asgi.plugins["fastapi"]) < 128
    assert asgi.gateway.peak_rss_mib() < 100


def test_stamped_blocks_are_not_periodic() -> None:
    blocks = list(stamped_blocks(4 * MIB, seed=1))
    assert len({hashlib.sha256(b).digest() for b in blocks}) == 4
    assert json.dumps(len(blocks)) == "4"
