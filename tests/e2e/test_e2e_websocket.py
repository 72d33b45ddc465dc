"""WebSocket sessions through real processes: ``chunkwire plugin`` and ``chunkwire gateway``,
driven by the ``websockets`` client library."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_stack import start_gateway, start_plugin
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from ws_apps import stamped

pytestmark = pytest.mark.timeout(120)

MIB = 1 << 20
LIMIT = MIB  # the gateway's default max_message_size
BIG_LIMIT = 16 * MIB


class WsStack:
    def __init__(self, tmp: Path, transport: str) -> None:
        self.transport = transport
        self.sock = tmp / "ws.sock"
        self.small_sock = tmp / "ws-small.sock"
        self.plugin = start_plugin("ws_apps:plugin", self.sock)
        self.small = start_plugin("ws_apps:small", self.small_sock)
        plugins = {
            "ws": f"unix:{self.sock}",
            "small": f"unix:{self.small_sock}",
            "down": f"unix:{tmp / 'nobody-listens.sock'}",
        }
        self.gateway, url = start_gateway(plugins, "--transport", transport)
        self.big_gateway, big_url = start_gateway(
            plugins, "--transport", transport, "--max-message-size", "16m"
        )
        self.http = url
        self.ws = url.replace("http://", "ws://")
        self.big_ws = big_url.replace("http://", "ws://")

    def seen(self) -> dict:
        return httpx.get(f"{self.http}/plugins/ws/seen").json()

    def close(self) -> None:
        for proc in (self.big_gateway, self.gateway, self.small, self.plugin):
            proc.stop()


@pytest.fixture(scope="module")
def wss(tmp_path_factory, transport) -> Iterator[WsStack]:
    stack = WsStack(tmp_path_factory.mktemp("ws"), transport)
    try:
        yield stack
    finally:
        stack.close()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def closed_with(ws) -> tuple[int, str]:
    """Read until the server closes; the close code and reason it sent."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await ws.recv()
    assert info.value.rcvd is not None, "connection lost without a close frame"
    return info.value.rcvd.code, info.value.rcvd.reason


async def refused(url: str, **kwargs) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, **kwargs):
            pass
    return info.value


# -- messages ---------------------------------------------------------------------


def test_text_and_binary_echo(wss):
    async def go():
        rng = os.urandom
        async with connect(f"{wss.ws}/plugins/ws/echo") as ws:
            for size in (0, 1, 100, 65535, 65536, 65537, 300_000):
                binary = rng(size)
                await ws.send(binary)
                assert await ws.recv() == binary
                text = rng(size).hex()[:size] + "é✓"
                await ws.send(text)
                echoed = await ws.recv()
                assert isinstance(echoed, str)
                assert echoed == text

    run(go())


def test_sixteen_mib_message_in_and_out(wss):
    data = stamped(BIG_LIMIT, seed=16)

    async def go():
        async with connect(f"{wss.big_ws}/plugins/ws/digest", max_size=None) as ws:
            await ws.send(data)
            assert json.loads(await ws.recv()) == {
                "type": "binary",
                "size": BIG_LIMIT,
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        async with connect(f"{wss.big_ws}/plugins/ws/produce", max_size=None) as ws:
            await ws.send(json.dumps({"size": BIG_LIMIT, "seed": 16, "text": True}))
            received = await ws.recv()
            assert isinstance(received, str)
            assert hashlib.sha256(received.encode()).digest() == hashlib.sha256(data).digest()

    run(go())


def test_message_at_the_limit_passes_client_to_plugin(wss):
    data = stamped(LIMIT, seed=1)

    async def go():
        async with connect(f"{wss.ws}/plugins/ws/digest") as ws:
            await ws.send(data)
            assert json.loads(await ws.recv())["sha256"] == hashlib.sha256(data).hexdigest()

    run(go())


def test_message_past_the_limit_closes_1009_client_to_plugin(wss):
    async def go():
        async with connect(f"{wss.ws}/plugins/ws/wait-close") as ws:
            await ws.send(stamped(LIMIT + 1))
            code, _ = await closed_with(ws)
            assert code == 1009

    run(go())


def test_message_at_the_limit_passes_plugin_to_client(wss):
    async def go():
        async with connect(f"{wss.ws}/plugins/ws/produce", max_size=None) as ws:
            await ws.send(json.dumps({"size": LIMIT, "seed": 2}))
            assert await ws.recv() == stamped(LIMIT, seed=2)

    run(go())


def test_message_past_the_limit_closes_1009_plugin_to_client(wss):
    async def go():
        async with connect(f"{wss.ws}/plugins/ws/send-too-big/{LIMIT + 1}", max_size=None) as ws:
            code, _ = await closed_with(ws)
            assert code == 1009

    run(go())
    assert ["send-too-big", 1009, f"message of {LIMIT + 1} bytes exceeds {LIMIT}"] in (
        wss.seen()["errors"]
    )


def test_plugin_route_limit_below_the_gateways(wss):
    async def go():
        async with connect(f"{wss.ws}/plugins/small/echo") as ws:
            await ws.send(b"s" * 1000)
            assert await ws.recv() == b"s" * 1000
            await ws.send(b"s" * 1001)
            code, _ = await closed_with(ws)
            assert code == 1009

    run(go())


# -- handshake ----------------------------------------------------------------------


def test_handshake_reaches_the_plugin_and_subprotocol_is_negotiated(wss):
    async def go():
        url = f"{wss.ws}/plugins/ws/rooms/lobby/42?a=1&a=2"
        async with connect(
            url,
            subprotocols=["v2.other", "chat.v1"],
            additional_headers={"X-Chunkwire-User-Id": "forged", "X-Trace": "t1"},
        ) as ws:
            assert ws.subprotocol == "chat.v1"
            assert ws.response.headers["X-Room"] == "lobby"
            seen = json.loads(await ws.recv())
            await ws.send("after")
            assert await ws.recv() == "after"
        assert seen["path"] == "/rooms/lobby/42"
        assert seen["path_params"] == {"room": "lobby", "user": "42"}
        assert seen["query"] == {"a": ["1", "2"]}
        assert seen["subprotocols"] == ["v2.other", "chat.v1"]
        assert seen["method"] == "GET"
        assert seen["headers"]["x-trace"] == ["t1"]
        # identity headers only the gateway may set are stripped
        assert "x-chunkwire-user-id" not in seen["headers"]
        assert seen["user_id"] == ""
        assert seen["ip_address"] == "127.0.0.1"
        assert len(seen["request_id"]) == 32

    run(go())


def test_no_subprotocol_offered_none_chosen(wss):
    async def go():
        async with connect(f"{wss.ws}/plugins/ws/rooms/r/1") as ws:
            assert ws.subprotocol is None
            assert json.loads(await ws.recv())["subprotocols"] == []

    run(go())


def test_deny_sends_the_plugins_status_headers_and_body(wss):
    error = run(refused(f"{wss.ws}/plugins/ws/deny/418"))
    assert error.response.status_code == 418
    assert error.response.headers["X-Why"] == "not today"
    assert error.response.body == b"go away\n"


def test_close_before_accept_is_403(wss):
    assert run(refused(f"{wss.ws}/plugins/ws/refuse-close")).response.status_code == 403


def test_handler_returning_without_answer_is_403(wss):
    assert run(refused(f"{wss.ws}/plugins/ws/no-answer")).response.status_code == 403


def test_handler_raising_before_accept_is_500(wss):
    assert run(refused(f"{wss.ws}/plugins/ws/raise-early")).response.status_code == 500


def test_no_route_is_404(wss):
    assert run(refused(f"{wss.ws}/plugins/ws/no/such/route")).response.status_code == 404


def test_unknown_plugin_is_404(wss):
    assert run(refused(f"{wss.ws}/plugins/nope/echo")).response.status_code == 404


def test_http_route_is_not_a_websocket_route(wss):
    assert run(refused(f"{wss.ws}/plugins/ws/stats")).response.status_code == 404


@pytest.mark.parametrize(
    "path", ["/plugins/ws/x/../echo", "/plugins/ws/./echo", "/plugins/ws/rooms%2Fa/1"]
)
def test_ambiguous_paths_are_400_as_for_http(wss, path):
    """The handshake goes through the gateway's path rules before any plugin sees it."""
    assert run(refused(f"{wss.ws}{path}")).response.status_code == 400


def test_header_limits_apply_to_the_handshake(wss):
    headers = [(f"X-Many-{i}", "v") for i in range(100)]
    error = run(refused(f"{wss.ws}/plugins/ws/echo", additional_headers=headers))
    assert error.response.status_code == 431


def test_plugin_unreachable_is_503(wss):
    assert run(refused(f"{wss.ws}/plugins/down/echo")).response.status_code == 503


# -- closing ------------------------------------------------------------------------


def test_plugin_closes_with_code_and_reason(wss):
    async def go():
        async with connect(f"{wss.ws}/plugins/ws/close/4001") as ws:
            await ws.send("now")
            assert await closed_with(ws) == (4001, "bye now")

    run(go())
    assert ["after-own-close", 4001, "bye now"] in wss.seen()["close_codes"]


def test_client_closes_with_code_and_reason(wss):
    async def go():
        async with connect(f"{wss.ws}/plugins/ws/wait-close") as ws:
            await ws.close(4002, "client leaves")

    run(go())

    async def wait_seen():
        while [4002, "client leaves", 4002] not in wss.seen()["close_codes"]:
            await asyncio.sleep(0.05)

    run(wait_seen())


def test_handler_raising_closes_1011(wss):
    async def go():
        async with connect(f"{wss.ws}/plugins/ws/raise") as ws:
            await ws.send("boom")
            assert (await closed_with(ws))[0] == 1011

    run(go())


def test_handler_returning_closes_1000(wss):
    async def go():
        async with connect(f"{wss.ws}/plugins/ws/return") as ws:
            assert await ws.recv() == "bye"
            assert await closed_with(ws) == (1000, "")

    run(go())


def test_plugin_killed_mid_session_closes_1011(tmp_path, transport):
    sock = tmp_path / "killed.sock"
    plugin = start_plugin("ws_apps:plugin", sock)
    gateway, url = start_gateway({"ws": f"unix:{sock}"}, "--transport", transport)
    try:

        async def go():
            async with connect(url.replace("http://", "ws://") + "/plugins/ws/echo") as ws:
                await ws.send("alive")
                assert await ws.recv() == "alive"
                plugin.kill()
                assert (await closed_with(ws))[0] == 1011
            # the plugin is gone now: the next handshake is refused with 503
            error = await refused(url.replace("http://", "ws://") + "/plugins/ws/echo")
            assert error.response.status_code == 503

        run(go())
    finally:
        gateway.stop()
        plugin.stop()


def test_keepalive_pings_at_the_configured_interval(wss, tmp_path):
    gateway, url = start_gateway(
        {"ws": f"unix:{wss.sock}"}, "--transport", wss.transport, "--ws-ping-interval", "0.2"
    )
    try:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(
                f"GET /plugins/ws/idle HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            received = b""
            while b"\r\n\r\n" not in received:
                received += sock.recv(4096)
            head, _, rest = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101")
            while len(rest) < 2:
                rest += sock.recv(4096)
            # a server frame: FIN + opcode 9 (ping), unmasked
            assert rest[0] == 0x89
    finally:
        gateway.stop()
