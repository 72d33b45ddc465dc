"""The multiplexed transports end to end: head-of-line blocking, negotiation, fallback."""

from __future__ import annotations

import hashlib
import json
import random
import socket
import threading
import time

import httpx
import pytest
from e2e_stack import start_gateway, start_plugin

pytestmark = pytest.mark.timeout(180)

GIB = 1 << 30


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _stalled_upload(url: str, never: str) -> tuple[socket.socket, threading.Thread]:
    """A 1 GiB upload to a handler that stops reading after one chunk."""
    sock = socket.create_connection(_address(url))
    sock.sendall(
        f"POST /plugins/app/stall-upload?file={never} HTTP/1.1\r\nHost: t\r\n"
        f"Content-Length: {GIB}\r\n\r\n".encode()
    )
    block = random.Random(1).randbytes(1 << 20)

    def send() -> None:
        try:
            for _ in range(GIB // len(block)):
                sock.sendall(block)  # blocks once every buffer on the way is full
        except OSError:
            pass  # closed by the test

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return sock, thread


def _slow_download(url: str) -> socket.socket:
    """A 1 GiB download whose client reads the head and then nothing."""
    sock = socket.create_connection(_address(url))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(f"GET /plugins/app/download?size={GIB} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def _settled(read, what: str) -> int:
    """Wait until ``read()`` stops growing (a stalled stream holds its window)."""
    deadline = time.monotonic() + 60
    last = read()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = read()
        if now == last:
            return now
        last = now
    raise AssertionError(f"{what} never stalled")


@pytest.mark.parametrize("transport", ["mux", "lane"])
def test_small_requests_pass_a_stalled_upload_and_a_stalled_download(tmp_path, transport):
    sock_path = tmp_path / "p.sock"
    plugin = start_plugin("e2e_apps:plugin", sock_path)
    gateway, url = start_gateway(
        {"app": f"unix:{sock_path}"}, "--transport", transport, "--response-timeout", "0"
    )
    upload_sock = download_sock = None
    try:
        stats = lambda: httpx.get(url + "/_gw/stats", timeout=10).json()  # noqa: E731
        assert httpx.get(url + "/plugins/app/stats", timeout=10).status_code == 200
        upload_sock, sender = _stalled_upload(url, str(tmp_path / "never"))
        download_sock = _slow_download(url)
        # Both hold their stream's full credit: the plugin got at least the
        # upload's window (1 MiB), the gateway took what the socket allowed.
        received = _settled(lambda: stats()["received_bytes"], "the upload")
        assert received >= 1 << 20
        assert sender.is_alive()  # the client cannot send the rest
        assert stats()["active"] == 2
        # The same connection (one per plugin) carries small requests both ways.
        with httpx.Client(base_url=url + "/plugins/app", timeout=30) as client:
            for i in range(40):
                body = random.Random(i).randbytes(100_000 + i)  # several DATA frames
                r = client.post("/upload", content=body)
                assert r.status_code == 200
                assert json.loads(r.content) == {
                    "bytes": len(body),
                    "sha256": hashlib.sha256(body).hexdigest(),
                }
                r = client.get("/download", params={"size": 300_000 + i})
                assert r.status_code == 200 and len(r.content) == 300_000 + i
        after = stats()
        assert after["active"] == 2  # the stalled ones are still there
        # one Connect call carried all of it; on the lane, no gRPC call did
        assert after["calls"]["app"] == (1 if transport == "mux" else 0)
    finally:
        for sock in (upload_sock, download_sock):
            if sock is not None:
                sock.close()
        gateway.stop()
        plugin.stop()


@pytest.mark.parametrize(
    ("spec", "options", "expected", "why"),
    [
        ("e2e_apps:plugin", [], "lane", "it offers call, mux, lane"),
        ("e2e_apps:mux_plugin", [], "mux", "it offers call, mux"),
        ("e2e_apps:plugin", ["--transport", "mux"], "mux", "set by configuration"),
        ("e2e_apps:plugin", ["--transport", "lane"], "lane", "set by configuration"),
        ("e2e_apps:call_plugin", [], "call", "it offers call"),
        ("e2e_apps:plugin", ["--transport", "call"], "call", "set by configuration"),
        ("e2e_apps:mm_plugin", ["--mattermost", "app"], "call", "Mattermost method"),
    ],
)
def test_transport_negotiation_and_its_log_line(tmp_path, spec, options, expected, why):
    sock_path = tmp_path / "p.sock"
    plugin = start_plugin(spec, sock_path)
    gateway, url = start_gateway({"app": f"unix:{sock_path}"}, "--log-level", "info", *options)
    try:
        for _ in range(3):
            r = httpx.post(url + "/plugins/app/upload", content=b"abc", timeout=10)
            assert r.status_code == 200
            assert json.loads(r.content)["bytes"] == 3
        stats = httpx.get(url + "/_gw/stats", timeout=10).json()
        # mux keeps its Connect call open; ServeHTTP calls end with their
        # request; the lane is a unix socket, no gRPC call.
        assert stats["calls"]["app"] == (1 if expected == "mux" else 0)
        lines = [line for line in gateway.stderr().splitlines() if " uses the " in line]
    finally:
        gateway.stop()
        plugin.stop()
    assert lines == [f"INFO chunkwire.gateway: plugin 'app' uses the {expected} transport ({why})"]
