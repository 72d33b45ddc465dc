"""The bundled example plugin that ``chunkwire demo`` serves.

Routes (behind the gateway at ``/plugins/demo``):

- ``GET /``: this text, or for browsers a page driving the WebSocket modes;
- ``POST /echo``: streams the request body back as it arrives (``pipe_from``);
- ``POST /upload``: counts the body and returns its size and sha256;
- ``GET /ticks?n=5&interval=0.5``: one line per tick, each flushed at once;
- ``GET /download?size=BYTES``: a large streamed body (default 100 MiB);
- ``GET /headers``: the request as the plugin sees it, as JSON;
- WebSocket ``/ws/stream/bidirectional``, ``/ws/stream/server?interval=1``
  and ``/ws/stream/client``: the three streaming modes (JSON messages with
  ``stream_id``, ``sequence_number``, ``timestamp``, ``message``);
- ``POST /generate?text=...&interval=0.2``: publishes the words of ``text``
  one by one as ``token`` events on topic ``demo.tokens`` (then a ``done``
  event); watch them at ``/events/demo.tokens``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from importlib import resources
from typing import Any

from . import demo_streams
from .plugin import Plugin, Request, Response

plugin = Plugin("demo")
demo_streams.register(plugin)

_PAGE_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "demo.js": "text/javascript; charset=utf-8",
    "demo.css": "text/css; charset=utf-8",
}

TOKENS_TOPIC = "demo.tokens"
_GENERATE_TEXT = "Tokens are published over gRPC and fanned out to every SSE subscriber ."
_events_address: str | None = None


def use_events(address: str | None) -> None:
    """Where ``/generate`` publishes: the gateway's Events service address."""
    global _events_address
    _events_address = address

_BLOCK = bytes(range(256)) * 256  # 64 KiB


class _BadQuery(ValueError):
    pass


def _number(request: Request, name: str, default: str, kind: type, low: float, high: float) -> Any:
    text = request.query.get(name, default)
    try:
        value = kind(text)
    except ValueError:
        raise _BadQuery(f"{name}={text!r} is not a number") from None
    if not low <= value <= high:
        raise _BadQuery(f"{name}={text} is outside {low:g}..{high:g}")
    return value


async def _bad_request(response: Response, error: _BadQuery) -> None:
    response.status = 400
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    await response.end(f"Bad Request: {error}\n".encode())


@plugin.route("/")
async def index(request: Request, response: Response) -> None:
    if "text/html" in request.headers.get("Accept", ""):
        await _page_file(response, "index.html")
        return
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    await response.write(__doc__.encode())


@plugin.route("/demo.js")
async def page_script(request: Request, response: Response) -> None:
    await _page_file(response, "demo.js")


@plugin.route("/demo.css")
async def page_style(request: Request, response: Response) -> None:
    await _page_file(response, "demo.css")


async def _page_file(response: Response, name: str) -> None:
    """A file of the page shipped in the package (demo_page/)."""
    body = resources.files("chunkwire").joinpath("demo_page", name).read_bytes()
    response.headers["Content-Type"] = _PAGE_TYPES[name]
    response.headers["Content-Length"] = str(len(body))
    response.headers["Cache-Control"] = "no-cache"
    await response.write(body)


@plugin.route("/echo", methods=["POST", "PUT"])
async def echo(request: Request, response: Response) -> None:
    content_type = request.headers.get("Content-Type", "application/octet-stream")
    response.headers["Content-Type"] = content_type
    if request.content_length is not None:
        response.headers["Content-Length"] = str(request.content_length)
    # Reads only as fast as the client takes the echo (the req.pipe(res) pattern).
    await response.pipe_from(request.body)


@plugin.route("/upload", methods=["POST", "PUT"])
async def upload(request: Request, response: Response) -> None:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.body:
        digest.update(chunk)
        size += len(chunk)
    response.headers["Content-Type"] = "application/json"
    await response.write(json.dumps({"bytes": size, "sha256": digest.hexdigest()}).encode() + b"\n")


@plugin.route("/ticks")
async def ticks(request: Request, response: Response) -> None:
    try:
        count = _number(request, "n", "5", int, 0, 1_000_000)
        interval = _number(request, "interval", "0.5", float, 0, 3600)
    except _BadQuery as error:
        await _bad_request(response, error)
        return
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    for i in range(count):
        if i:
            await asyncio.sleep(interval)
        await response.write(f"tick {i}\n".encode(), flush=True)


@plugin.route("/download")
async def download(request: Request, response: Response) -> None:
    try:
        size = _number(request, "size", str(100 * 1024 * 1024), int, 0, 1 << 40)
    except _BadQuery as error:
        await _bad_request(response, error)
        return
    response.headers["Content-Type"] = "application/octet-stream"
    response.headers["Content-Length"] = str(size)
    block = memoryview(_BLOCK)
    left = size
    while left >= len(block):
        await response.write(block)
        left -= len(block)
    if left:
        await response.write(block[:left])


@plugin.route("/headers")
async def headers(request: Request, response: Response) -> None:
    seen: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        seen.setdefault(name, []).append(value)
    ctx = request.context
    payload = {
        "method": request.method,
        "url": request.url,
        "path": request.path,
        "query": {key: request.query.getall(key) for key in request.query},
        "host": request.host,
        "remote_addr": request.remote_addr,
        "request_uri": request.request_uri,
        "proto": request.proto,
        "content_length": request.content_length,
        "headers": seen,
        "context": {
            "request_id": ctx.request_id,
            "ip_address": ctx.ip_address,
            "user_agent": ctx.user_agent,
            "accept_language": ctx.accept_language,
            "user_id": ctx.user_id,
            "session_id": ctx.session_id,
        },
    }
    response.headers["Content-Type"] = "application/json"
    await response.write(json.dumps(payload, indent=2).encode() + b"\n")


@plugin.route("/generate", methods=["POST"])
async def generate(request: Request, response: Response) -> None:
    from .events import Publisher

    response.headers["Content-Type"] = "application/json"
    if _events_address is None:
        response.status = 503
        await response.write(b'{"error": "no events service configured"}\n')
        return
    words = request.query.get("text", _GENERATE_TEXT).split()
    interval = float(request.query.get("interval", "0.2"))
    async with Publisher(_events_address) as publisher:
        for i, word in enumerate(words):
            if i:
                await asyncio.sleep(interval)
            await publisher.publish(TOKENS_TOPIC, "token", word)
        await publisher.publish(TOKENS_TOPIC, "done", str(len(words)))
    await response.write(json.dumps({"topic": TOKENS_TOPIC, "tokens": len(words)}).encode() + b"\n")
