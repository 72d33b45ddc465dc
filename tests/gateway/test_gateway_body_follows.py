"""BODY_FOLLOWS: a response head is marked only when its body goes in the same task step."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gateway_fakes import FakePlugin, read_body, response, run

from chunkwire._core import encode_response_frame
from chunkwire.gateway import Gateway
from chunkwire.gateway.types import BODY_FOLLOWS

pytestmark = pytest.mark.timeout(60)

BODY = bytes(range(256)) * 4 + b"end"


async def whole(first, context, log):
    await read_body(context, first, log)
    await context.write(response(200, BODY))


async def no_content(first, context, log):
    await read_body(context, first, log)
    await context.write(response(204))


async def streamed(first, context, log):
    await read_body(context, first, log)
    await context.write(response(200, BODY[:100], complete=False))
    await asyncio.sleep(0.05)
    await context.write(encode_response_frame(BODY[100:], complete=True))


async def exchange(path: str, method: str = "GET") -> list[tuple[dict[str, Any], bool]]:
    """Each message the gateway sent, and whether a loop turn ended before it."""
    fake = FakePlugin({"/whole": whole, "/none": no_content, "/streamed": streamed})
    address = await fake.start()
    gateway = Gateway({"fake": address})
    loop = asyncio.get_running_loop()
    sent: list[tuple[dict[str, Any], bool]] = []
    turn = {"ended": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append((dict(message), turn["ended"]))
        turn["ended"] = False
        loop.call_soon(turn.__setitem__, "ended", True)

    async def receive() -> dict[str, Any]:
        if not received:
            received.append(1)
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    received: list[int] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": f"/plugins/fake{path}",
        "raw_path": f"/plugins/fake{path}".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"h")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    try:
        await gateway(scope, receive, send)
    finally:
        await gateway.aclose()
        await fake.stop()
    return sent


@pytest.mark.parametrize(
    ("path", "method"), [("/whole", "GET"), ("/none", "GET"), ("/whole", "HEAD")]
)
def test_a_whole_response_marks_its_head_and_the_body_follows_in_the_same_step(path, method):
    sent = run(exchange(path, method))
    (start, _), (body, turn_ended) = sent
    assert start["type"] == "http.response.start" and start.get(BODY_FOLLOWS) is True
    assert body["type"] == "http.response.body" and not body["more_body"]
    assert not turn_ended
    if path == "/whole" and method == "GET":
        assert bytes(body["body"]) == BODY


def test_a_streamed_response_does_not_mark_its_head():
    sent = run(exchange("/streamed"))
    start = sent[0][0]
    assert start["type"] == "http.response.start" and BODY_FOLLOWS not in start
    assert b"".join(bytes(m.get("body", b"")) for m, _ in sent[1:]) == BODY
