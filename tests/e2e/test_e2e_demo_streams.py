"""The demo's three WebSocket streaming modes, through ``chunkwire demo``, message by message."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
from e2e_stack import start_demo
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

pytestmark = pytest.mark.timeout(120)

REPLY_KEYS = {"stream_id", "sequence_number", "timestamp", "response", "success"}


@pytest.fixture(scope="module")
def demo_ws() -> Iterator[str]:
    proc, url = start_demo()
    try:
        yield url.replace("http://", "ws://") + "/plugins/demo/ws/stream"
    finally:
        proc.stop()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def request(stream_id: str, sequence: int, message: str, **extra) -> str:
    return json.dumps(
        {
            "stream_id": stream_id,
            "sequence_number": sequence,
            "timestamp": int(time.time() * 1000),
            "message": message,
            **extra,
        }
    )


async def closed_with(ws) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await ws.recv()
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


def check_reply(raw: str, stream_id: str, sequence: int, response: str, before_ms: int) -> None:
    reply = json.loads(raw)
    assert set(reply) == REPLY_KEYS
    assert reply["stream_id"] == stream_id
    assert reply["sequence_number"] == sequence
    assert reply["response"] == response
    assert reply["success"] is True
    assert isinstance(reply["timestamp"], int)
    assert reply["timestamp"] >= before_ms


def test_bidirectional_answers_each_message_with_its_own_sequence(demo_ws):
    async def go():
        start = int(time.time() * 1000)
        async with connect(f"{demo_ws}/bidirectional") as ws:
            # the client's sequence numbers are not the server's
            for i, text in enumerate(["alpha", "béta", "", "gamma"], start=1):
                await ws.send(request("s-1", 100 + i, text))
                check_reply(await ws.recv(), "s-1", i, "from server: " + text, start)

    run(go())


def test_server_stream_sends_five_echoes_then_closes_1000(demo_ws):
    async def go():
        start = int(time.time() * 1000)
        async with connect(f"{demo_ws}/server?interval=0.05") as ws:
            await ws.send(request("srv", 1, "ping"))
            for i in range(1, 6):
                check_reply(await ws.recv(), "srv", i, f"from server: ping (echo {i}/5)", start)
            assert await closed_with(ws) == (1000, "")

    run(go())


def test_server_stream_default_interval_is_one_second(demo_ws):
    async def go():
        async with connect(f"{demo_ws}/server") as ws:
            await ws.send(request("srv", 1, "slow"))
            stamps = [json.loads(await ws.recv())["timestamp"] for _ in range(2)]
            await ws.close()
        return stamps

    first, second = run(go())
    assert second - first >= 900  # the server's own clock: one interval apart


def test_server_stream_refuses_a_bad_interval(demo_ws):
    async def go():
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"{demo_ws}/server?interval=soon"):
                pass
        return info.value.response

    response = run(go())
    assert response.status_code == 400
    assert b"interval" in response.body


def test_client_stream_counts_messages_until_end(demo_ws):
    async def go():
        start = int(time.time() * 1000)
        async with connect(f"{demo_ws}/client") as ws:
            for i in range(1, 8):
                await ws.send(request("c", i, f"part {i}"))
            await ws.send(request("c", 8, "", end=True))
            check_reply(await ws.recv(), "c", 7, "from server: received 7 messages", start)
            assert await closed_with(ws) == (1000, "")

    run(go())


def test_client_stream_end_at_once_counts_zero(demo_ws):
    async def go():
        async with connect(f"{demo_ws}/client") as ws:
            await ws.send(request("c0", 1, "", end=True))
            reply = json.loads(await ws.recv())
            assert reply["response"] == "from server: received 0 messages"
            assert reply["sequence_number"] == 0
            assert await closed_with(ws) == (1000, "")

    run(go())


@pytest.mark.parametrize("mode", ["bidirectional", "server", "client"])
def test_invalid_json_is_answered_and_the_stream_goes_on(demo_ws, mode):
    async def go():
        async with connect(f"{demo_ws}/{mode}?interval=0") as ws:
            for bad in ("not json", "[1, 2]", '"text"', b"\xff\x00"):
                await ws.send(bad)
                assert json.loads(await ws.recv()) == {
                    "success": False,
                    "response": "invalid message format",
                }
            await ws.send(request("after", 1, "ok", end=True))
            reply = json.loads(await ws.recv())
            assert reply["success"] is True
            assert reply["stream_id"] == "after"

    run(go())


@pytest.mark.parametrize("mode", ["bidirectional", "server", "client"])
@pytest.mark.parametrize("stream_id", [None, "", 7], ids=["missing", "empty", "not-a-string"])
def test_missing_stream_id_closes_1008(demo_ws, mode, stream_id):
    async def go():
        async with connect(f"{demo_ws}/{mode}") as ws:
            message = {"sequence_number": 1, "timestamp": 0, "message": "x"}
            if stream_id is not None:
                message["stream_id"] = stream_id
            await ws.send(json.dumps(message))
            assert await closed_with(ws) == (1008, "stream_id is required")

    run(go())
