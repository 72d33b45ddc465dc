"""A hostile plugin cannot frame the client connection: every bad answer gets its documented end.

A rogue plugin (rogue_plugin.py, raw grpc.aio) and an honest one sit behind
one gateway process; clients are raw sockets parsed by h11, so smuggled
bytes, short and long bodies and aborts show up as a strict client sees
them. The gateway's log must hold one line per failure and no traceback.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from e2e_stack import start_gateway, start_plugin, start_script
from raw_http import Aborted, RawClient

pytestmark = pytest.mark.timeout(120)

REQUEST_ID = r"request [0-9a-f]{32} to plugin 'rogue'"


class Trust:
    def __init__(self, tmp) -> None:
        self.honest = start_plugin("trust_apps:honest", tmp / "honest.sock")
        self.rogue = start_script("rogue_plugin.py", tmp / "rogue.sock")
        self.gateway, self.url = start_gateway(
            {"honest": f"unix:{tmp / 'honest.sock'}", "rogue": f"unix:{tmp / 'rogue.sock'}"},
            "--idle-timeout", "4",
            "--log-level", "info",
        )

    def log(self) -> str:
        return self.gateway.stderr()

    def close(self) -> None:
        for proc in (self.gateway, self.rogue, self.honest):
            proc.stop()


@pytest.fixture(scope="module")
def trust(tmp_path_factory) -> Iterator[Trust]:
    stack = Trust(tmp_path_factory.mktemp("trust"))
    try:
        yield stack
    finally:
        log = stack.log()
        stack.close()
    assert "Traceback" not in log
    assert "Exception in ASGI application" not in log


def logged_once(trust: Trust, pattern: str, before: str) -> None:
    """``pattern`` appears in one new line of the gateway log, with the request id."""
    new = trust.log()[len(before):]
    lines = [line for line in new.splitlines() if re.search(pattern, line)]
    assert len(lines) == 1, new
    assert re.search(REQUEST_ID, lines[0]), lines[0]


def honest_answer_follows(client: RawClient) -> None:
    answer = client.request("GET", "/plugins/honest/hello")
    assert (answer.status, answer.body) == (200, b"honest hello")
    assert answer.header(b"set-cookie") == []


@pytest.mark.parametrize(("method", "status"), [("GET", 204), ("GET", 304), ("HEAD", 200)])
@pytest.mark.parametrize("declared", [False, True], ids=["no-length", "own-length"])
def test_body_after_bodiless_answer_never_reaches_the_next_request(
    trust, method, status, declared
):
    target = f"/plugins/rogue/forge?status={status}" + ("&cl=1" if declared else "")
    with RawClient(trust.url) as client:
        answer = client.request(method, target)
        assert answer.status == status
        assert answer.body == b""
        if status in (204, 304):
            assert answer.header(b"content-length") == []
        honest_answer_follows(client)


@pytest.mark.parametrize("status", [100, 101, 103, 199, 600, 999])
def test_status_the_client_cannot_get_is_502(trust, status):
    before = trust.log()
    with RawClient(trust.url) as client:
        answer = client.request("GET", f"/plugins/rogue/forge?status={status}")
        assert answer.status == 502
        assert b"stolen" not in answer.body
        honest_answer_follows(client)
    logged_once(trust, f"status {status}", before)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("cl=5&te=1&size=5", "both Content-Length and Transfer-Encoding"),
        ("cl=5,6&size=5", "two different Content-Length"),
        ("cl=-1&size=0", "malformed Content-Length"),
        ("cl=abc&size=0", "malformed Content-Length"),
        ("cl=%2B5&size=5", "malformed Content-Length"),
    ],
)
def test_bad_framing_headers_are_502(trust, query, reason):
    before = trust.log()
    with RawClient(trust.url) as client:
        answer = client.request("GET", f"/plugins/rogue/lengths?{query}")
        assert answer.status == 502
        honest_answer_follows(client)
    logged_once(trust, reason, before)


def test_repeated_equal_content_length_collapses(trust):
    with RawClient(trust.url) as client:
        answer = client.request("GET", "/plugins/rogue/lengths?cl=50,50&size=50")
        assert answer.status == 200
        assert answer.header(b"content-length") == [b"50"]
        assert answer.body == bytes(i % 253 for i in range(50))
        honest_answer_follows(client)


@pytest.mark.parametrize(("declared", "sent", "most"), [(100, 50, 25), (10, 50, 0)])
def test_body_not_matching_its_content_length_aborts(trust, declared, sent, most):
    """Fewer bytes at the end, or more than declared: never a clean end, never extra bytes."""
    before = trust.log()
    with RawClient(trust.url) as client, pytest.raises(Aborted) as aborted:
        client.request("GET", f"/plugins/rogue/lengths?cl={declared}&size={sent}")
    assert aborted.value.status == 200
    assert len(aborted.value.body) <= most
    which = "short of its Content-Length" if sent < declared else "more body bytes than"
    logged_once(trust, which, before)


def test_exact_content_length_passes(trust):
    with RawClient(trust.url) as client:
        answer = client.request("GET", "/plugins/rogue/lengths?cl=50&size=50")
        assert (answer.status, len(answer.body)) == (200, 50)


@pytest.mark.parametrize(
    "name", ["bad name", "", "x\ry", "x\ny", "x\x00y", "na\u00efve", "x:y", "x(y)"]
)
def test_invalid_header_name_is_502(trust, name):
    before = trust.log()
    with RawClient(trust.url) as client:
        answer = client.request("GET", f"/plugins/rogue/header?name={quote(name)}")
        assert answer.status == 502
        honest_answer_follows(client)
    logged_once(trust, "invalid header name", before)


@pytest.mark.parametrize("value", [b"a\rb", b"a\nb", b"a\x00b", b"a\x7fb", b"\r\nX-Forged: 1"])
def test_invalid_header_value_is_502(trust, value):
    before = trust.log()
    with RawClient(trust.url) as client:
        answer = client.request("GET", f"/plugins/rogue/header?name=X-V&value={value.hex()}")
        assert answer.status == 502
        assert answer.header(b"x-forged") == []
    logged_once(trust, "invalid value in header", before)


@pytest.mark.parametrize("value", [b"a\tb", b"caf\xe9", b""])
def test_unusual_but_valid_header_value_passes(trust, value):
    with RawClient(trust.url) as client:
        answer = client.request("GET", f"/plugins/rogue/header?name=X-V&value={value.hex()}")
        assert answer.status == 200
        assert answer.header(b"x-v") == [value]


def test_hop_by_hop_headers_are_dropped(trust):
    with RawClient(trust.url) as client:
        answer = client.request("GET", "/plugins/rogue/hop")
        assert (answer.status, answer.body) == (200, b"ok")
        names = {name for name, _ in answer.headers}
        for dropped in (b"connection", b"keep-alive", b"upgrade", b"proxy-authenticate",
                        b"te", b"trailer"):
            assert dropped not in names
        assert answer.header(b"x-kept") == [b"yes"]
        # The plugin's "Connection: close" did not close the client's connection.
        honest_answer_follows(client)


def test_plugin_silent_mid_body_is_cut_at_idle_timeout(trust):
    before = trust.log()
    start = time.monotonic()
    with RawClient(trust.url, timeout=30) as client, pytest.raises(Aborted) as aborted:
        client.request("GET", "/plugins/rogue/hang-mid-body")
    assert aborted.value.status == 200
    assert aborted.value.body == b"h" * 1000
    assert time.monotonic() - start < 25  # cut by the 4 s idle timeout, not the socket timeout
    logged_once(trust, "no response frame for 4 s", before)


def test_empty_frame_loop_is_a_protocol_error(trust):
    before = trust.log()
    with RawClient(trust.url) as client, pytest.raises(Aborted) as aborted:
        client.request("GET", "/plugins/rogue/empty-frames")
    assert aborted.value.body == b"start"
    logged_once(trust, "empty frames in a row", before)


def test_oversized_messages_to_slow_readers_keep_the_gateway_small(trust):
    """12 clients that never read, from a plugin sending 16 MiB messages: refused, bounded."""
    before = trust.log()
    socks = []
    for _ in range(12):
        sock = socket.create_connection(trust.url.removeprefix("http://").split(":"))
        sock.sendall(b"GET /plugins/rogue/oversized HTTP/1.1\r\nHost: t\r\n\r\n")
        socks.append(sock)
    ended = []

    def drain(sock: socket.socket) -> None:
        sock.settimeout(60)
        data = b""
        while piece := sock.recv(65536):
            data += piece
        ended.append(data)

    time.sleep(3)  # nobody reads while the plugin pushes
    threads = [threading.Thread(target=drain, args=(s,)) for s in socks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    for sock in socks:
        sock.close()
    assert len(ended) == 12
    for data in ended:
        assert data.startswith(b"HTTP/1.1 200")
        assert not data.endswith(b"0\r\n\r\n")  # aborted, never a clean chunked end
        assert len(data) < 64 * 1024
    assert trust.gateway.peak_rss_mib() < 100
    refused = [line for line in trust.log()[len(before):].splitlines()
               if "larger than max" in line and "client connection aborted" in line]
    assert len(refused) == 12
