"""FastAPI and Starlette WebSocket endpoints, unmodified, as plugins: the ASGI ``websocket``
scope through real plugin and gateway processes, driven by the ``websockets`` client."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bodies import stamped
from e2e_stack import PluginsStack, start_gateway
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

pytestmark = pytest.mark.timeout(240)

MIB = 1 << 20
BLOCK = 65536


class WsAsgiStack(PluginsStack):
    def __init__(self, tmp: Path, transport: str) -> None:
        specs = {"fastapi": "asgi_ws_apps:app", "starlette": "asgi_ws_apps:starlette_app"}
        super().__init__(tmp, specs, "--max-message-size", "32m", "--transport", transport)
        self.transport = transport
        self.http = self.url
        self.ws = self.http.replace("http://", "ws://")
        self.fastapi = self.ws + "/plugins/fastapi"

    def seen(self) -> dict:
        return httpx.get(f"{self.http}/plugins/fastapi/seen").json()

    def stats(self) -> dict:
        return httpx.get(f"{self.http}/plugins/fastapi/stats").json()

    def gateway_stats(self) -> dict:
        return httpx.get(f"{self.http}/_gw/stats").json()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, transport) -> Iterator[WsAsgiStack]:  # type: ignore[no-untyped-def]
    s = WsAsgiStack(tmp_path_factory.mktemp("asgi-ws"), transport)
    try:
        yield s
    finally:
        s.close()


def run(coro, timeout: float = 120):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(predicate, what: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    # A hang guard, not a timing assertion.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(predicate):
        if loop.time() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what}")
        await asyncio.sleep(0.05)


async def until_stable(read, polls: int = 6, interval: float = 0.25) -> int:  # type: ignore[no-untyped-def]
    """Poll ``read()`` until it stops changing for ``polls`` polls in a row; its value then."""
    last, same = None, 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while same < polls:
        if loop.time() > deadline:
            raise AssertionError(f"still moving after 60 s: {last}")
        value = await asyncio.to_thread(read)
        same = same + 1 if value == last else 0
        last = value
        await asyncio.sleep(interval)
    return last  # type: ignore[return-value]


async def server_close(ws) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """Read until the server closes; the close code and reason it sent."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await ws.recv()
    assert info.value.rcvd is not None, "connection lost without a close frame"
    return info.value.rcvd.code, info.value.rcvd.reason


async def refusal(url: str) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url):
            pass
    return info.value


def disconnects(stack: WsAsgiStack, endpoint: str) -> list[list]:
    return [d for d in stack.seen()["disconnects"] if d[0] == endpoint]


# -- messages -----------------------------------------------------------------------


def test_text_and_binary_echo_subprotocol_and_accept_headers(stack: WsAsgiStack) -> None:
    before = len(disconnects(stack, "echo"))
    binary = stamped(3, 70_001)  # more than one chunk, not a multiple of it

    async def go() -> tuple:
        async with connect(f"{stack.fastapi}/ws/echo", subprotocols=["chat.v1", "chat.v2"]) as ws:
            headers = ws.response.headers
            await ws.send("héllo wörld")
            text = await ws.recv()
            await ws.send(binary)
            echoed = await ws.recv()
            await ws.send(b"")
            empty = await ws.recv()
            await ws.close(4001, "bye now")
            return ws.subprotocol, headers, text, echoed, empty

    subprotocol, headers, text, echoed, empty = run(go())
    assert subprotocol == "chat.v2"
    assert headers["x-session"] == "echo"
    assert headers.get_all("x-multi") == ["1", "2"]
    assert text == "héllo wörld" and isinstance(text, str)
    assert isinstance(echoed, bytes) and echoed == binary
    assert empty == b""
    run(until(lambda: len(disconnects(stack, "echo")) > before, "the echo saw the close"))
    assert disconnects(stack, "echo")[-1] == ["echo", 4001, "bye now"]


def test_concurrent_sessions_keep_their_own_messages(stack: WsAsgiStack) -> None:
    async def session(n: int) -> list[bytes]:
        async with connect(f"{stack.fastapi}/ws/echo") as ws:
            got = []
            for i in range(20):
                # each message is unique to its session and position
                await ws.send(stamped((n * 20 + i) * 5000, 5000 + n))
                got.append(await ws.recv())
            return got

    async def go() -> list[list[bytes]]:
        return await asyncio.gather(*(session(n) for n in range(30)))

    for n, got in enumerate(run(go())):
        assert got == [stamped((n * 20 + i) * 5000, 5000 + n) for i in range(20)], n


@pytest.mark.parametrize("size", [16 * MIB, 16 * MIB - 3])
def test_large_binary_message_client_to_app(stack: WsAsgiStack, size: int) -> None:
    message = stamped(5, size)

    async def go() -> str:
        async with connect(f"{stack.fastapi}/ws/digest", max_size=None) as ws:
            await ws.send(message)
            return await ws.recv()

    assert run(go()) == f"{size} {hashlib.sha256(message).hexdigest()}"


def test_large_binary_messages_app_to_client(stack: WsAsgiStack) -> None:
    size = 9 * MIB + 11

    async def go() -> tuple[list[bytes], tuple[int, str]]:
        got = []
        async with connect(f"{stack.fastapi}/ws/send?size={size}&count=3", max_size=None) as ws:
            for _ in range(3):
                got.append(await ws.recv())
            return got, await server_close(ws)

    got, closed = run(go())
    for i, message in enumerate(got):
        assert message == stamped(i * size, size), f"message {i} differs"
    assert closed == (1000, "all sent")


def test_scope_root_path_url_for_and_headers(stack: WsAsgiStack) -> None:
    async def go() -> dict:
        async with connect(
            f"{stack.fastapi}/ws/scope/a%20b?x=1",
            additional_headers=[
                ("X-Trace", "one"),
                ("X-Trace", "two"),
                ("X-Forwarded-Prefix", "/not/from/clients"),
            ],
        ) as ws:
            return json.loads(await ws.recv())

    doc = run(go())
    assert doc["name"] == "a b"
    assert doc["type"] == "websocket"
    assert doc["scheme"] == "ws"
    assert doc["root_path"] == "/plugins/fastapi"
    assert doc["path"] == "/plugins/fastapi/ws/scope/a b"
    assert doc["query"] == "x=1"
    assert doc["client"][0] == "127.0.0.1" and doc["client"][1] > 0
    assert doc["raw_path"] == "/plugins/fastapi/ws/scope/a%20b"
    # Starlette builds the URL from the decoded path (under uvicorn too)
    assert doc["url"] == f"{stack.fastapi}/ws/scope/a b?x=1"
    assert doc["link"] == f"{stack.fastapi}/ws/scope/other"
    assert doc["trace"] == ["one", "two"]
    assert doc["extensions"] == ["websocket.http.response"]
    assert doc["asgi"] == {"version": "3.0", "spec_version": "2.4"}


def test_starlette_endpoint_class_with_subprotocol(stack: WsAsgiStack) -> None:
    url = f"{stack.ws}/plugins/starlette/ws/shout"

    async def go() -> tuple:
        async with connect(url, subprotocols=["a.v1", "b.v1"]) as ws:
            await ws.send("quiet please")
            answer = await ws.recv()
            return ws.subprotocol, answer

    assert run(go()) == ("b.v1", "QUIET PLEASE")

    def shout_closed() -> bool:
        doc = httpx.get(f"{stack.http}/plugins/starlette/seen").json()
        return any(d[0] == "shout" for d in doc["disconnects"])

    run(until(shout_closed, "the Starlette endpoint's on_disconnect"))
    doc = httpx.get(f"{stack.http}/plugins/starlette/seen").json()
    assert ["shout", 1000, ""] in doc["disconnects"]


# -- closing ------------------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 1001, 4000, 4999])
def test_app_closes_with_its_code_and_reason(stack: WsAsgiStack, code: int) -> None:
    async def go() -> tuple[int, str]:
        async with connect(f"{stack.fastapi}/ws/close/{code}") as ws:
            return await server_close(ws)

    assert run(go()) == (code, f"closing with {code}")


def test_close_before_accept_is_403(stack: WsAsgiStack) -> None:
    assert run(refusal(f"{stack.fastapi}/ws/refuse")).response.status_code == 403
    # a path with no WebSocket route: Starlette closes before accepting
    assert run(refusal(f"{stack.fastapi}/ws/nowhere")).response.status_code == 403


@pytest.mark.parametrize("status", [401, 429, 503])
def test_denial_response_carries_status_headers_and_body(stack: WsAsgiStack, status: int) -> None:
    response = run(refusal(f"{stack.fastapi}/ws/deny/{status}")).response
    assert response.status_code == status
    assert response.headers["X-Why"] == "test"
    assert response.body == f"denied with {status}\n".encode()


def test_denial_body_at_the_bound_passes_one_past_is_500(stack: WsAsgiStack) -> None:
    limit = 65536  # the plugin's chunk size: a refusal leaves as one message
    response = run(refusal(f"{stack.fastapi}/ws/deny-size/{limit}")).response
    assert response.status_code == 400
    assert response.headers["X-Size"] == str(limit)
    assert bytes(response.body) == stamped(0, limit)
    assert run(refusal(f"{stack.fastapi}/ws/deny-size/{limit + 1}")).response.status_code == 500


def test_messages_after_the_apps_close_are_refused(stack: WsAsgiStack) -> None:
    async def go() -> tuple[int, str]:
        async with connect(f"{stack.fastapi}/ws/after-close?request_id=ac1") as ws:
            return await server_close(ws)

    assert run(go()) == (4002, "closed first")
    run(until(lambda: len([e for e in stack.seen()["errors"] if e[0] == "ac1"]) == 3, "app"))
    errors = [e[1:] for e in stack.seen()["errors"] if e[0] == "ac1"]
    assert errors == [["RuntimeError"], ["RuntimeError"], ["websocket.disconnect", 4002]]


def test_exception_before_accept_is_500(stack: WsAsgiStack) -> None:
    assert run(refusal(f"{stack.fastapi}/ws/boom-before-accept")).response.status_code == 500


def test_returning_without_answering_is_500(stack: WsAsgiStack) -> None:
    assert run(refusal(f"{stack.fastapi}/ws/no-answer")).response.status_code == 500


def test_exception_after_accept_closes_1011(stack: WsAsgiStack) -> None:
    async def go() -> tuple[str, tuple[int, str]]:
        async with connect(f"{stack.fastapi}/ws/boom-after-accept") as ws:
            first = await ws.recv()
            return first, await server_close(ws)

    first, (code, _) = run(go())
    assert first == "accepted"
    assert code == 1011


def test_client_that_vanishes_reaches_the_app_as_disconnect(stack: WsAsgiStack) -> None:
    before = len(disconnects(stack, "idle"))

    async def go() -> None:
        ws = await connect(f"{stack.fastapi}/ws/idle")
        await ws.send("are you there")
        assert await ws.recv() == "are you there"
        ws.transport.abort()  # no close frame: the TCP connection is reset

    run(go())
    run(until(lambda: len(disconnects(stack, "idle")) > before, "the app saw the disconnect"))
    # uvicorn reports a connection lost without a close as 1005
    assert disconnects(stack, "idle")[-1][1] in (1005, 1006)


def test_gateway_killed_mid_session_reaches_the_app_as_disconnect(stack: WsAsgiStack) -> None:
    before = len(disconnects(stack, "idle"))
    gateway, http = start_gateway(
        {"fastapi": f"unix:{stack.socks['fastapi']}"}, "--transport", stack.transport
    )
    try:

        async def go() -> None:
            ws = await connect(http.replace("http://", "ws://") + "/plugins/fastapi/ws/idle")
            await ws.send("still here")
            assert await ws.recv() == "still here"
            gateway.kill()  # the call is cut under the app, which waits in receive()
            ws.transport.abort()

        run(go())
        run(until(lambda: len(disconnects(stack, "idle")) > before, "the app saw the disconnect"))
    finally:
        gateway.stop()
    assert [d[:2] for d in disconnects(stack, "idle")[before:]] == [["idle", 1006]]
    run(until(lambda: stack.stats()["sessions"] == 0, "the session ended"))


# -- backpressure -------------------------------------------------------------------


def test_app_send_waits_while_the_client_does_not_read(stack: WsAsgiStack) -> None:
    before = len(disconnects(stack, "flood"))

    async def go() -> int:
        async with connect(f"{stack.fastapi}/ws/flood", max_size=None) as ws:
            assert await ws.recv() == stamped(0, BLOCK)
            sent = await until_stable(lambda: stack.stats()["flood_sent"])
            ws.transport.abort()
            return sent

    sent = run(go())
    print(f"the app's send stalled after {sent} messages ({sent * BLOCK / MIB:.1f} MiB)")
    # Unbounded it would have sent gigabytes by now; gRPC windows, one message
    # in the gateway and two sockets' buffers hold a few MiB.
    assert sent * BLOCK < 32 * MIB
    # once the client is gone, send() raises and the app ends
    run(until(lambda: len(disconnects(stack, "flood")) > before, "the flood ended"))
    assert disconnects(stack, "flood")[-1][1] == 1006  # Starlette's code for a failed send


def test_app_that_stops_receiving_holds_back_the_client(stack: WsAsgiStack) -> None:
    sent = 0
    stop = False

    async def go() -> int:
        nonlocal sent, stop
        async with connect(f"{stack.fastapi}/ws/stall/g1", max_size=None) as ws:

            async def sender() -> None:
                nonlocal sent
                while not stop:
                    await ws.send(os.urandom(BLOCK))  # incompressible for permessage-deflate
                    sent += 1

            task = asyncio.create_task(sender())
            await until(lambda: stack.stats()["stall_received"] == 1, "first message")
            stalled_at = await until_stable(lambda: sent)
            received = await asyncio.to_thread(lambda: stack.stats()["stall_received"])
            assert received == 1  # the app took one message, nothing more was queued for it
            # released, the app drains everything the client sent, the stuck send included
            stop = True
            await asyncio.to_thread(httpx.post, f"{stack.http}/plugins/fastapi/release/g1")
            await task
            await until(lambda: stack.stats()["stall_received"] == sent, "all messages drained")
            return stalled_at

    stalled_at = run(go())
    print(f"the client stalled after {stalled_at} messages ({stalled_at * BLOCK / MIB:.1f} MiB)")
    assert stalled_at * BLOCK < 32 * MIB


def test_client_leaving_an_app_that_does_not_receive(stack: WsAsgiStack) -> None:
    """The client leaves while the app is not receiving and the pipe to it is
    full: once the app receives again it drains what arrived, then gets
    websocket.disconnect (as on TCP, the close waits behind unread messages)."""
    before = len(disconnects(stack, "stall"))

    async def go() -> None:
        ws = await connect(f"{stack.fastapi}/ws/stall/g2", max_size=None)
        block = os.urandom(BLOCK)
        sent = 0

        async def flood() -> None:
            nonlocal sent
            while True:
                await ws.send(block)
                sent += 1

        task = asyncio.create_task(flood())
        await until(lambda: stack.stats()["stall_received"] == 1, "first message")
        await until_stable(lambda: sent)  # the pipe to the app is full
        task.cancel()
        await asyncio.wait((task,))
        ws.transport.abort()
        await asyncio.to_thread(httpx.post, f"{stack.http}/plugins/fastapi/release/g2")
        await until(
            lambda: (
                stack.stats()["sessions"] == 0
                and stack.gateway_stats().get("websockets_active", 0) == 0
            ),
            "the session ended on both sides",
        )

    run(go())
    ended = disconnects(stack, "stall")[before:]
    assert len(ended) == 1 and ended[0][1] in (1005, 1006)


# -- nothing left behind ----------------------------------------------------------------

WARMUP = 40
ROUNDS = 200


async def sessions(url: str, count: int) -> None:
    for i in range(count):
        ws = await connect(f"{url}/ws/idle")
        message = f"session {i}"
        await ws.send(message)
        assert await ws.recv() == message
        if i % 2:
            ws.transport.abort()
        else:
            await ws.close()
        await asyncio.sleep(0)


def settled(stack: WsAsgiStack, ended: int) -> tuple[dict, dict]:
    async def wait() -> None:
        await until(lambda: len(disconnects(stack, "idle")) >= ended, f"{ended} sessions ended")
        await until(
            lambda: (
                stack.stats()["sessions"] == 0
                and stack.gateway_stats().get("websockets_active", 0) == 0
            ),
            "no session left",
        )

    run(wait())
    time.sleep(0.3)
    return stack.gateway_stats(), stack.stats()


def test_many_sessions_leave_nothing_behind(stack: WsAsgiStack) -> None:
    base = len(disconnects(stack, "idle"))
    run(sessions(stack.fastapi, WARMUP))
    gw_before, before = settled(stack, base + WARMUP)
    run(sessions(stack.fastapi, ROUNDS), timeout=200)
    gw_after, after = settled(stack, base + WARMUP + ROUNDS)
    print("plugin", before, after)
    codes = {d[1] for d in disconnects(stack, "idle")[base:]}
    assert codes <= {1000, 1005, 1006}
    assert after["tasks"] <= before["tasks"]
    assert gw_after["tasks"] <= gw_before["tasks"]
    assert gw_after["websockets_active"] == 0
    # a leak of 5 KiB per session would pass the bound
    assert after["malloc_bytes"] - before["malloc_bytes"] < 1 * MIB
