"""Unmodified FastAPI and Starlette WebSocket endpoints, served as plugins by ``chunkwire plugin``.

What the endpoints saw (disconnect codes, errors, counts) is read back by the
tests through the HTTP routes ``/seen`` and ``/stats`` of the same process.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from bodies import stamped
from fastapi import FastAPI, WebSocket, WebSocketDisconnect, WebSocketException
from fastapi.responses import PlainTextResponse
from starlette.applications import Starlette
from starlette.endpoints import WebSocketEndpoint
from starlette.routing import Route, WebSocketRoute

from chunkwire.gateway import memory_kb

SEEN: dict[str, list[Any]] = {"disconnects": [], "errors": [], "scopes": []}
RUNNING = {"sessions": 0, "flood_sent": 0, "stall_received": 0}
_GATES: dict[str, asyncio.Event] = {}

app = FastAPI()


@app.get("/seen")
async def seen() -> dict[str, list[Any]]:
    return SEEN


@app.get("/stats")
async def stats() -> dict[str, Any]:
    return {**RUNNING, "tasks": len(asyncio.all_tasks()), **memory_kb()}


@app.post("/release/{name}")
async def release(name: str) -> dict[str, str]:
    _GATES.setdefault(name, asyncio.Event()).set()
    return {"released": name}


class _Session:
    def __enter__(self) -> None:
        RUNNING["sessions"] += 1

    def __exit__(self, *exc: object) -> None:
        RUNNING["sessions"] -= 1


@app.websocket("/ws/echo")
async def echo(websocket: WebSocket) -> None:
    """Echoes text as text and bytes as bytes; records how the session ended."""
    with _Session():
        offered = websocket.scope["subprotocols"]
        await websocket.accept(
            subprotocol="chat.v2" if "chat.v2" in offered else None,
            headers=[(b"x-session", b"echo"), (b"x-multi", b"1"), (b"x-multi", b"2")],
        )
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                SEEN["disconnects"].append(["echo", message["code"], message.get("reason", "")])
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])


@app.websocket("/ws/digest")
async def digest(websocket: WebSocket) -> None:
    """Answers every binary message with its size and SHA-256, as text."""
    await websocket.accept()
    try:
        while True:
            data = await websocket.receive_bytes()
            await websocket.send_text(f"{len(data)} {hashlib.sha256(data).hexdigest()}")
    except WebSocketDisconnect as gone:
        SEEN["disconnects"].append(["digest", gone.code, gone.reason])


@app.websocket("/ws/send")
async def send_stamped(websocket: WebSocket, size: int, count: int = 1) -> None:
    """Sends ``count`` binary messages of ``size`` stamped bytes (the stream from offset 0)."""
    await websocket.accept()
    for i in range(count):
        await websocket.send_bytes(stamped(i * size, size))
    await websocket.close(1000, "all sent")


@app.websocket("/ws/scope/{name}")
async def scope(websocket: WebSocket, name: str) -> None:
    await websocket.accept()
    await websocket.send_json(
        {
            "name": name,
            "type": websocket.scope["type"],
            "scheme": websocket.scope["scheme"],
            "path": websocket.scope["path"],
            "raw_path": websocket.scope["raw_path"].decode(),
            "root_path": websocket.scope["root_path"],
            "query": websocket.scope["query_string"].decode(),
            "client": list(websocket.client) if websocket.client else None,
            "url": str(websocket.url),
            "link": str(websocket.url_for("scope", name="other")),
            "trace": websocket.headers.getlist("x-trace"),
            "extensions": sorted(websocket.scope["extensions"]),
            "asgi": websocket.scope["asgi"],
        }
    )
    await websocket.close()


@app.websocket("/ws/close/{code}")
async def close_with(websocket: WebSocket, code: int) -> None:
    await websocket.accept()
    await websocket.close(code, f"closing with {code}")


@app.websocket("/ws/refuse")
async def refuse(websocket: WebSocket) -> None:
    raise WebSocketException(code=1008, reason="not you")  # before accept: 403


@app.websocket("/ws/deny/{status}")
async def deny(websocket: WebSocket, status: int) -> None:
    await websocket.send_denial_response(
        PlainTextResponse(f"denied with {status}\n", status_code=status, headers={"X-Why": "test"})
    )


@app.websocket("/ws/deny-size/{size}")
async def deny_size(websocket: WebSocket, size: int) -> None:
    """A denial whose body is ``size`` bytes, sent in two parts."""
    body = stamped(0, size)
    await websocket.send(
        {
            "type": "websocket.http.response.start",
            "status": 400,
            "headers": [(b"x-size", b"%d" % size)],
        }
    )
    await websocket.send(
        {"type": "websocket.http.response.body", "body": body[:1000], "more_body": True}
    )
    await websocket.send({"type": "websocket.http.response.body", "body": body[1000:]})


@app.websocket("/ws/after-close")
async def after_close(websocket: WebSocket, request_id: str) -> None:
    """Closes, then breaks the rules: each mistake is recorded by the error it raised."""
    await websocket.accept()
    await websocket.close(4002, "closed first")
    raw_send = websocket._send  # past Starlette's own state checks, straight to the server
    for message in ({"type": "websocket.send", "text": "late"}, {"type": "websocket.close"}):
        try:
            await raw_send(message)
            SEEN["errors"].append([request_id, "no error"])
        except Exception as exc:
            SEEN["errors"].append([request_id, type(exc).__name__])
    message = await websocket._receive()
    SEEN["errors"].append([request_id, message["type"], message.get("code")])


@app.websocket("/ws/boom-before-accept")
async def boom_before(websocket: WebSocket) -> None:
    raise RuntimeError("boom before accept")


@app.websocket("/ws/boom-after-accept")
async def boom_after(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("accepted")
    raise RuntimeError("boom after accept")


@app.websocket("/ws/no-answer")
async def no_answer(websocket: WebSocket) -> None:
    return


@app.websocket("/ws/flood")
async def flood(websocket: WebSocket) -> None:
    """Sends 64 KiB messages as fast as send() lets it, until the client is gone."""
    await websocket.accept()
    RUNNING["flood_sent"] = 0
    with _Session():
        try:
            while True:
                await websocket.send_bytes(stamped(RUNNING["flood_sent"] * 65536, 65536))
                RUNNING["flood_sent"] += 1
        except WebSocketDisconnect as gone:
            SEEN["disconnects"].append(["flood", gone.code, gone.reason])


@app.websocket("/ws/stall/{gate}")
async def stall(websocket: WebSocket, gate: str) -> None:
    """Receives one message, then stops receiving until ``/release/{gate}``; then drains."""
    await websocket.accept()
    RUNNING["stall_received"] = 0
    with _Session():
        try:
            await websocket.receive_bytes()
            RUNNING["stall_received"] += 1
            await _GATES.setdefault(gate, asyncio.Event()).wait()
            while True:
                await websocket.receive_bytes()
                RUNNING["stall_received"] += 1
        except WebSocketDisconnect as gone:
            SEEN["disconnects"].append(["stall", gone.code, gone.reason])


@app.websocket("/ws/idle")
async def idle(websocket: WebSocket) -> None:
    """Echoes one message, then waits for the client to leave."""
    with _Session():
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        try:
            await websocket.receive_text()
        except WebSocketDisconnect as gone:
            SEEN["disconnects"].append(["idle", gone.code, gone.reason])


# -- Starlette ------------------------------------------------------------------


class Shout(WebSocketEndpoint):
    """A class endpoint: text in, upper-cased text out; subprotocol negotiated."""

    encoding = "text"

    async def on_connect(self, websocket: Any) -> None:
        offered = websocket.scope["subprotocols"]
        await websocket.accept(subprotocol=offered[-1] if offered else None)

    async def on_receive(self, websocket: Any, data: str) -> None:
        await websocket.send_text(data.upper())

    async def on_disconnect(self, websocket: Any, close_code: int) -> None:
        SEEN["disconnects"].append(["shout", close_code, ""])


async def s_seen(request: Any) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(SEEN)


starlette_app = Starlette(
    routes=[Route("/seen", s_seen), WebSocketRoute("/ws/shout", Shout)],
)
