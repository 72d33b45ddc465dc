"""WebSocket routes the end-to-end tests run with ``chunkwire plugin ws_apps:plugin``.

What the handlers saw (close codes, errors) is served as JSON by ``/seen``;
``/stats`` reports the sessions running now, asyncio tasks and memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os

from chunkwire import Plugin
from chunkwire.errors import WebSocketClosed
from chunkwire.plugin import Request, Response, WebSocket

plugin = Plugin("ws")
small = Plugin("ws-small")  # its own, smaller message limit on one route

seen: dict[str, list] = {"close_codes": [], "errors": [], "handshakes": []}
running = {"sessions": 0, "flood_sent": 0, "stall_received": 0}
idle_closed: dict[str, int] = {}


_servers: list = []  # the PluginServer serving ``plugin``, for its tables in /stats
_start = plugin.start


async def _start_and_keep(listen: str):  # type: ignore[no-untyped-def]
    server = await _start(listen)
    _servers.append(server)
    return server


plugin.start = _start_and_keep  # type: ignore[method-assign]


def _server_tables() -> dict[str, int]:
    """Streams on the plugin's multiplexed connections (this request's own included)
    and the ServeWebSocket calls it has served."""
    if not _servers:
        return {}
    server = _servers[-1]
    return {"mux_streams": server.mux_streams, "ws_calls": server.websocket.servicer.calls}


def _memory() -> dict[str, int]:
    from chunkwire.gateway import memory_kb

    return memory_kb()


@plugin.route("/stats")
async def stats(request: Request, response: Response) -> None:
    payload = {
        **running,
        "idle_closed": idle_closed,
        "tasks": len(asyncio.all_tasks()),
        **_server_tables(),
        **_memory(),
    }
    await response.write(json.dumps(payload).encode())


@plugin.route("/blob/{size:int}")
async def blob(request: Request, response: Response) -> None:
    """``size`` bytes stamped with their positions (seed 7)."""
    await response.write(stamped(int(request.path_params["size"]), seed=7))


@plugin.route("/sha256", methods=["POST"])
async def sha256(request: Request, response: Response) -> None:
    """The request body's size and sha256, read chunk by chunk."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.body:
        digest.update(chunk)
        size += len(chunk)
    await response.write(json.dumps({"size": size, "sha256": digest.hexdigest()}).encode())


@plugin.route("/seen")
async def seen_route(request: Request, response: Response) -> None:
    await response.write(json.dumps(seen).encode())


@plugin.websocket("/echo")
async def echo(ws: WebSocket) -> None:
    running["sessions"] += 1
    try:
        await ws.accept()
        async for message in ws:
            await ws.send(message)
        seen["close_codes"].append([ws.close_code, ws.close_reason])
    finally:
        running["sessions"] -= 1


@plugin.websocket("/rooms/{room}/{user:int}")
async def rooms(ws: WebSocket) -> None:
    """Answers with what the handshake carried, then echoes."""
    request = ws.request
    chosen = next((p for p in ws.subprotocols if p.startswith("chat.")), None)
    await ws.accept(subprotocol=chosen, headers={"X-Room": request.path_params["room"]})
    ctx = request.context
    await ws.send_json(
        {
            "path": request.path,
            "path_params": request.path_params,
            "query": {key: request.query.getall(key) for key in request.query},
            "headers": {k: request.headers.getall(k) for k in set(request.headers.keys())},
            "subprotocols": ws.subprotocols,
            "subprotocol": ws.subprotocol,
            "method": request.method,
            "user_id": ctx.user_id,
            "request_id": ctx.request_id,
            "ip_address": ctx.ip_address,
            "user_agent": ctx.user_agent,
        }
    )
    async for message in ws:
        await ws.send(message)


@plugin.websocket("/digest")
async def digest(ws: WebSocket) -> None:
    """Each message answered with its type, size and sha256."""
    await ws.accept()
    async for message in ws:
        raw = message.encode() if isinstance(message, str) else message
        kind = "text" if isinstance(message, str) else "binary"
        await ws.send_json(
            {"type": kind, "size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
        )


@plugin.websocket("/produce")
async def produce(ws: WebSocket) -> None:
    """``{"size": N, "seed": S, "text": bool}`` -> one message of N bytes stamped with positions."""
    await ws.accept()
    async for message in ws:
        spec = json.loads(message)
        data = stamped(spec["size"], spec.get("seed", 0))
        await ws.send(data.decode("ascii") if spec.get("text") else data)


def stamped(size: int, seed: int = 0) -> bytes:
    """``size`` bytes of 16-byte records stamped with their position: reordering shows."""
    records = (f"{seed:06d}:{i:08x}\n".encode() for i in range(size // 16 + 1))
    return b"".join(records)[:size]


@plugin.websocket("/deny/{status:int}")
async def deny(ws: WebSocket) -> None:
    await ws.deny(
        int(ws.request.path_params["status"]), {"X-Why": "not today"}, body="go away\n"
    )


@plugin.websocket("/refuse-close")
async def refuse_close(ws: WebSocket) -> None:
    await ws.close(4003, "no")


@plugin.websocket("/no-answer")
async def no_answer(ws: WebSocket) -> None:
    return


@plugin.websocket("/close/{code:int}")
async def close_with(ws: WebSocket) -> None:
    """Accepts, waits for one message, then closes with the code in the path."""
    await ws.accept()
    message = await ws.receive()
    await ws.close(int(ws.request.path_params["code"]), f"bye {message}")
    try:
        await ws.receive()
    except WebSocketClosed as exc:
        seen["close_codes"].append(["after-own-close", exc.code, exc.reason])


@plugin.websocket("/return")
async def returns(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send("bye")


@plugin.websocket("/raise")
async def raises(ws: WebSocket) -> None:
    await ws.accept()
    await ws.receive()
    raise RuntimeError("handler failed on purpose")


@plugin.websocket("/raise-early")
async def raises_early(ws: WebSocket) -> None:
    raise RuntimeError("handler failed before accepting")


@plugin.websocket("/wait-close")
async def wait_close(ws: WebSocket) -> None:
    """Records how the client closed."""
    running["sessions"] += 1
    try:
        await ws.accept()
        try:
            while True:
                await ws.receive()
        except WebSocketClosed as exc:
            seen["close_codes"].append([exc.code, exc.reason, ws.close_code])
    finally:
        running["sessions"] -= 1


@plugin.websocket("/idle")
async def idle(ws: WebSocket) -> None:
    """Echoes until the client leaves; counts how sessions ended by close code."""
    running["sessions"] += 1
    try:
        await ws.accept()
        async for message in ws:
            await ws.send(message)
        code = str(ws.close_code)
        idle_closed[code] = idle_closed.get(code, 0) + 1
    finally:
        running["sessions"] -= 1


@plugin.websocket("/stall")
async def stall(ws: WebSocket) -> None:
    """Receives one message, then never receives again; sends a heartbeat now and then
    (a handler that neither reads nor writes cannot notice a client that vanished)."""
    running["sessions"] += 1
    try:
        await ws.accept()
        await ws.receive()
        running["stall_received"] += 1
        while True:
            await asyncio.sleep(0.2)
            await ws.send("heartbeat")
    finally:
        running["sessions"] -= 1


@plugin.websocket("/flood")
async def flood(ws: WebSocket) -> None:
    """Sends 64 KiB messages until the client leaves; the count goes to /seen."""
    running["sessions"] += 1
    block = os.urandom(65536)  # incompressible: permessage-deflate cannot shrink it
    sent = 0
    try:
        await ws.accept()
        while True:
            await ws.send(block)
            sent += 1
            running["flood_sent"] += 1
    except WebSocketClosed as exc:
        seen["errors"].append(["flood", sent, exc.code])
    finally:
        running["sessions"] -= 1


@plugin.websocket("/send-too-big/{size:int}")
async def send_too_big(ws: WebSocket) -> None:
    await ws.accept()
    try:
        await ws.send(b"x" * int(ws.request.path_params["size"]))
    except WebSocketClosed as exc:
        seen["errors"].append(["send-too-big", exc.code, exc.reason])
        raise


@small.websocket("/echo", max_message_size=1000)
async def small_echo(ws: WebSocket) -> None:
    await ws.accept()
    async for message in ws:
        await ws.send(message)
