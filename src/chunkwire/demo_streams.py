"""The three streaming modes of the demo, as WebSocket routes.

JSON in: ``{"stream_id", "sequence_number", "timestamp", "message"}``;
JSON out: ``{"stream_id", "sequence_number", "timestamp", "response", "success"}``
(``timestamp``: Unix time in milliseconds).

- ``/ws/stream/bidirectional``: each message answered at once,
  ``"from server: " + message``, numbered 1, 2, 3... by the server;
- ``/ws/stream/server?interval=1``: the first message answered with five
  responses ``interval`` seconds apart, then a close 1000;
- ``/ws/stream/client``: messages counted; one with ``"end": true`` gets
  ``"from server: received N messages"`` and a close 1000.

In every mode a message that is not a JSON object gets
``{"success": false, "response": "invalid message format"}`` and the
stream goes on; a missing or empty ``stream_id`` closes with 1008.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

from .errors import WebSocketClosed
from .plugin import Plugin, WebSocket

SERVER_STREAM_COUNT = 5
MAX_INTERVAL = 60.0
INVALID = {"success": False, "response": "invalid message format"}


class _MissingStreamId(Exception):
    pass


def _now_ms() -> int:
    return int(time.time() * 1000)


def _reply(stream_id: str, sequence_number: int, response: str) -> dict[str, Any]:
    return {
        "stream_id": stream_id,
        "sequence_number": sequence_number,
        "timestamp": _now_ms(),
        "response": response,
        "success": True,
    }


async def _next_request(ws: WebSocket) -> dict[str, Any]:
    """The next message that is a JSON object with a stream_id; answers the others."""
    while True:
        raw = await ws.receive()
        try:
            request = json.loads(raw)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            await ws.send_json(INVALID)
            continue
        stream_id = request.get("stream_id")
        if not isinstance(stream_id, str) or not stream_id:
            await ws.close(1008, "stream_id is required")
            raise _MissingStreamId
        return request


def _message(request: dict[str, Any]) -> str:
    message = request.get("message", "")
    return message if isinstance(message, str) else json.dumps(message)


async def bidirectional(ws: WebSocket) -> None:
    await ws.accept()
    sequence = 0
    try:
        while True:
            request = await _next_request(ws)
            sequence += 1
            reply = _reply(request["stream_id"], sequence, "from server: " + _message(request))
            await ws.send_json(reply)
    except (WebSocketClosed, _MissingStreamId):
        return


def _interval(ws: WebSocket) -> float | None:
    text = ws.request.query.get("interval", "1")
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and 0 <= value <= MAX_INTERVAL else None


async def server_stream(ws: WebSocket) -> None:
    interval = _interval(ws)
    if interval is None:
        body = f"interval must be a number of seconds within 0..{MAX_INTERVAL:g}\n"
        await ws.deny(400, {"Content-Type": "text/plain; charset=utf-8"}, body)
        return
    await ws.accept()
    try:
        request = await _next_request(ws)
        stream_id, message = request["stream_id"], _message(request)
        for i in range(1, SERVER_STREAM_COUNT + 1):
            if i > 1:
                await asyncio.sleep(interval)
            text = f"from server: {message} (echo {i}/{SERVER_STREAM_COUNT})"
            await ws.send_json(_reply(stream_id, i, text))
        await ws.close(1000)
    except (WebSocketClosed, _MissingStreamId):
        return


async def client_stream(ws: WebSocket) -> None:
    await ws.accept()
    count = 0
    try:
        while True:
            request = await _next_request(ws)
            if request.get("end") is True:
                text = f"from server: received {count} messages"
                await ws.send_json(_reply(request["stream_id"], count, text))
                await ws.close(1000)
                return
            count += 1
    except (WebSocketClosed, _MissingStreamId):
        return


def register(plugin: Plugin) -> None:
    plugin.websocket("/ws/stream/bidirectional")(bidirectional)
    plugin.websocket("/ws/stream/server")(server_stream)
    plugin.websocket("/ws/stream/client")(client_stream)
