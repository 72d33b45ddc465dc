"""Plugins the end-to-end tests run with ``chunkwire plugin e2e_apps:plugin``.

State the tests read (cancellations seen, task counts, memory) is served by
``/stats``; ``/flush-wait`` blocks until the test creates a file whose path
it passes in the query.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os

from bodies import stamped_blocks

from chunkwire import Plugin
from chunkwire.errors import ClientDisconnected
from chunkwire.plugin import Request, Response

BLOCK = bytes(range(256)) * 4096  # 1 MiB of filler for endless transfers

plugin = Plugin("e2e")
mm_plugin = Plugin("e2e-mm", mattermost_compat=True)
call_plugin = Plugin("e2e-call", transports=("call",))  # offers no mux: gateways fall back
mux_plugin = Plugin("e2e-mux", transports=("call", "mux"))  # no same-host lane

cancelled: dict[str, int] = {"download": 0, "upload": 0}
late_header_errors: list[str] = []


def pattern(size: int):
    """The bytes ``/download?size=`` sends (not periodic: a reordered chunk changes the hash)."""
    return stamped_blocks(size)


def _memory() -> dict[str, int]:
    import gc

    from chunkwire.gateway import memory_kb

    # Cyclic garbage (gRPC call objects sit in cycles) holds malloc'd memory
    # until a full collection, whose timing moves with how many objects the
    # process has imported: collect first, so only what stays reachable counts.
    gc.collect()
    return memory_kb()


async def upload(request: Request, response: Response) -> None:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.body:
        digest.update(chunk)
        size += len(chunk)
    response.headers["Content-Type"] = "application/json"
    await response.write(json.dumps({"bytes": size, "sha256": digest.hexdigest()}).encode())


async def download(request: Request, response: Response) -> None:
    size = int(request.query["size"])
    response.headers["Content-Length"] = str(size)
    for block in pattern(size):
        await response.write(block)


async def endless_download(request: Request, response: Response) -> None:
    try:
        await response.write(b"x" * 65536, flush=True)
        while True:
            await response.write(BLOCK)
    except (asyncio.CancelledError, ClientDisconnected):
        # The write in progress is cancelled, or the next one finds the call gone.
        cancelled["download"] += 1
        raise


async def endless_upload(request: Request, response: Response) -> None:
    try:
        # Tells the client the handler runs, so its disconnect lands mid-upload.
        await response.write(b"reading\n", flush=True)
        async for _ in request.body:
            pass
    except (asyncio.CancelledError, ClientDisconnected):
        cancelled["upload"] += 1
        raise
    await response.write(b"finished")


async def echo_request(request: Request, response: Response) -> None:
    body = await request.body.read_all(limit=1 << 20)
    ctx = request.context
    payload = {
        "method": request.method,
        "url": request.url,
        "path": request.path,
        "query": [[k, v] for k, v in request.query.items()],
        "query_string": request.query_string,
        "host": request.host,
        "remote_addr": request.remote_addr,
        "request_uri": request.request_uri,
        "proto": request.proto,
        "proto_major": request.init.proto_major,
        "proto_minor": request.init.proto_minor,
        "content_length": request.content_length,
        "headers": [[k, v] for k, v in request.headers.items()],
        "body": body.decode("latin-1"),
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
    await response.write(json.dumps(payload).encode())


async def multi_headers(request: Request, response: Response) -> None:
    response.headers.add("Set-Cookie", "a=1; Path=/")
    response.headers.add("Set-Cookie", "b=2; Path=/")
    response.headers.add("X-Trace", "first")
    response.headers.add("X-Trace", "second")
    await response.write(b"cookies")


async def flush_wait(request: Request, response: Response) -> None:
    path = request.query["file"]
    await response.write(b"before\n", flush=True)
    while not os.path.exists(path):
        await asyncio.sleep(0.01)
    await response.write(b"after\n")


async def status(request: Request, response: Response) -> None:
    response.status = int(request.query["code"])
    await response.write(b"status body")


async def late_header(request: Request, response: Response) -> None:
    await response.write(b"body-a;", flush=True)
    try:
        response.headers.add("X-Late", "1")
    except Exception as exc:
        late_header_errors.append(type(exc).__name__)
        await response.write(f"raised {type(exc).__name__}".encode())
    else:
        await response.write(b"did not raise")


async def early_413(request: Request, response: Response) -> None:
    response.status = 413
    await response.write(b"too large, not reading it\n")


async def stall_upload(request: Request, response: Response) -> None:
    """Read one chunk, then nothing until the test creates ``file``; then count the rest."""
    path = request.query["file"]
    body = request.body.__aiter__()
    total = len(await body.__anext__())
    while not os.path.exists(path):
        await asyncio.sleep(0.01)
    async for chunk in body:
        total += len(chunk)
    await response.write(str(total).encode())


async def hang(request: Request, response: Response) -> None:
    await asyncio.Event().wait()


async def exit_now(request: Request, response: Response) -> None:
    os._exit(3)


async def stats(request: Request, response: Response) -> None:
    data = {
        "tasks": len(asyncio.all_tasks()),
        "cancelled": cancelled,
        "late_header_errors": late_header_errors,
        **_memory(),
    }
    await response.write(json.dumps(data).encode())


for app in (plugin, mm_plugin, call_plugin, mux_plugin):
    app.add_route("/upload", upload, methods=["POST", "PUT"])
    app.add_route("/download", download)
    app.add_route("/endless-download", endless_download)
    app.add_route("/endless-upload", endless_upload, methods=["POST", "PUT"])
    app.add_route("/echo-request", echo_request)
    app.add_route("/multi-headers", multi_headers)
    app.add_route("/flush-wait", flush_wait)
    app.add_route("/status", status)
    app.add_route("/late-header", late_header)
    app.add_route("/early-413", early_413, methods=["POST", "PUT"])
    app.add_route("/hang", hang)
    app.add_route("/stall-upload", stall_upload, methods=["POST"])
    app.add_route("/exit", exit_now)
    app.add_route("/stats", stats)
