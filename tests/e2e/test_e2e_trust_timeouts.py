"""Timeouts as a proxy's, header reading against slowloris, and who answers on a socket."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from bodies import stamped
from e2e_stack import HERE, _env, start_gateway, start_plugin, start_script
from raw_http import read_until_closed

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def honest(tmp_path_factory) -> Iterator:
    sock = tmp_path_factory.mktemp("timeouts") / "honest.sock"
    proc = start_plugin("trust_apps:honest", sock)
    try:
        yield sock
    finally:
        proc.stop()


def slow_upload(url: str, pieces: int, pause: float) -> httpx.Response:
    size = 10_000

    def body():
        for i in range(pieces):
            yield stamped(i * size, size)
            time.sleep(pause)

    return httpx.put(url, content=body(), timeout=120)


def expected_upload(pieces: int) -> dict:
    data = stamped(0, pieces * 10_000)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_response_timeout_counts_from_the_end_of_the_body(honest):
    """A 4 s upload under a 1 s response timeout: the plugin answers at once after it."""
    gateway, url = start_gateway({"honest": f"unix:{honest}"}, "--response-timeout", "1")
    try:
        r = slow_upload(url + "/plugins/honest/upload", pieces=8, pause=0.5)
        assert r.status_code == 200
        assert r.json() == expected_upload(8)
    finally:
        gateway.stop()


@pytest.mark.slow
def test_40_second_upload_with_default_settings(honest):
    gateway, url = start_gateway({"honest": f"unix:{honest}"})
    try:
        r = slow_upload(url + "/plugins/honest/upload", pieces=41, pause=1.0)
        assert r.status_code == 200
        assert r.json() == expected_upload(41)
        assert "Traceback" not in gateway.stderr()
    finally:
        gateway.stop()


@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "one-byte-a-second"])
def test_slow_request_headers_get_408(honest, trickle):
    gateway, url = start_gateway({"honest": f"unix:{honest}"}, "--header-timeout", "2")
    try:
        host, port = url.removeprefix("http://").split(":")
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.sendall(b"GET /plugins/honest/hello HTTP/1.1\r\nHost: t\r\n")
        start = time.monotonic()
        if trickle:
            sock.settimeout(1)
            answer = b""
            while not answer and time.monotonic() - start < 20:
                try:
                    sock.sendall(b"X")
                    answer = sock.recv(65536)
                except TimeoutError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
            sock.settimeout(30)
            answer += read_until_closed(sock)
        else:
            answer = read_until_closed(sock)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert time.monotonic() - start < 20
        # A client that sends its headers in time is unaffected.
        assert httpx.get(url + "/plugins/honest/hello").text == "honest hello"
    finally:
        gateway.stop()


def _answer(sock: socket.socket) -> bytes:
    received = b""
    while not received.endswith(b"honest hello"):
        piece = sock.recv(65536)
        assert piece, f"closed mid-answer: {received!r}"
        received += piece
    return received


def test_keep_alive_and_header_timeouts_on_one_connection(honest):
    # Both timeouts share one timer per connection: an idle connection is
    # still closed after uvicorn's keep-alive timeout (5 s), and a head that
    # starts on a kept-alive connection still gets its own header deadline.
    gateway, url = start_gateway({"honest": f"unix:{honest}"}, "--header-timeout", "2")
    request = b"GET /plugins/honest/hello HTTP/1.1\r\nHost: t\r\n\r\n"
    try:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(request)
            assert _answer(sock).startswith(b"HTTP/1.1 200 ")
            start = time.monotonic()
            assert read_until_closed(sock) == b""
            assert time.monotonic() - start < 20  # closed, not the read timing out

        with socket.create_connection((host, int(port)), timeout=30) as sock:
            for _ in range(2):
                sock.sendall(request)
                assert _answer(sock).startswith(b"HTTP/1.1 200 ")
                time.sleep(1)
            sock.sendall(request[:-2])  # the head never ends
            answer = read_until_closed(sock)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    finally:
        gateway.stop()


def test_second_plugin_on_a_used_socket_exits_with_one_line(honest):
    proc = subprocess.run(
        [sys.executable, "-m", "chunkwire", "plugin", "trust_apps:honest",
         "--listen", f"unix:{honest}"],
        env=_env(), cwd=HERE, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "in use" in proc.stderr
    assert str(honest) in proc.stderr


def test_gateway_logs_who_answers_on_each_socket(honest, tmp_path):
    rogue = start_script("rogue_plugin.py", tmp_path / "rogue.sock")
    gateway, url = start_gateway(
        {"honest": f"unix:{honest}", "rogue": f"unix:{tmp_path / 'rogue.sock'}"},
        "--log-level", "info",
    )
    try:
        assert httpx.get(url + "/plugins/honest/hello").status_code == 200
        assert httpx.get(url + "/plugins/rogue/forge?status=200").status_code == 200
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            log = gateway.stderr()
            if "does not describe itself" in log and "'trust-honest'" in log:
                break
            time.sleep(0.1)
        lines = gateway.stderr().splitlines()
        [honest_line] = [line for line in lines if "plugin 'honest' at" in line]
        assert f"unix:{honest}" in honest_line
        assert "is 'trust-honest' (chunkwire " in honest_line
        assert honest_line.startswith("INFO")
        [rogue_line] = [line for line in lines if "plugin 'rogue' at" in line]
        assert "does not describe itself" in rogue_line
        assert rogue_line.startswith("WARNING")
        stats = json.loads(httpx.get(url + "/_gw/stats").text)
        assert stats["requests"] == 2
    finally:
        gateway.stop()
        rogue.stop()
