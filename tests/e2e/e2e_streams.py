"""The plugin of the stream-semantics end-to-end tests (``e2e_streams:plugin``).

Handlers record what they saw (bytes written, bytes received, how a body or
a response ended) in ``state``; ``/state`` serves it as JSON.
"""

from __future__ import annotations

import asyncio
import json

from chunkwire import Plugin
from chunkwire.errors import ClientDisconnected
from chunkwire.plugin import Request, Response

BLOCK = bytes(range(256)) * 256  # 64 KiB
MIB = 1 << 20

plugin = Plugin("e2e-streams")

state: dict[str, object] = {"written": 0, "outcomes": {}}
_never_read: list[Request] = []


def _outcome(key: str, value: str) -> None:
    outcomes = state["outcomes"]
    assert isinstance(outcomes, dict)
    outcomes[key] = value


def _name(exc: BaseException) -> str:
    return type(exc).__name__


@plugin.route("/state")
async def show_state(request: Request, response: Response) -> None:
    data = dict(state)
    data["never_read_received"] = _never_read[-1].body.received if _never_read else -1
    response.headers["Content-Type"] = "application/json"
    await response.end(json.dumps(data).encode())


@plugin.route("/big-download")
async def big_download(request: Request, response: Response) -> None:
    """Writes ``size`` bytes in 64 KiB writes, counting what each write let through."""
    size = int(request.query["size"])
    state["written"] = 0
    response.headers["Content-Length"] = str(size)
    view = memoryview(BLOCK)
    try:
        while size > 0:
            piece = view[: min(size, len(view))]
            await response.write(piece)
            size -= len(piece)
            state["written"] = int(state["written"]) + len(piece)  # type: ignore[call-overload]
        await response.end()
    except ClientDisconnected:
        _outcome("big-download", "ClientDisconnected")
        return
    except asyncio.CancelledError:
        # The write waiting when the call was cancelled is cancelled with it.
        _outcome("big-download", "CancelledError")
        raise
    _outcome("big-download", "ended")


@plugin.route("/never-read", methods=["POST", "PUT"])
async def never_read(request: Request, response: Response) -> None:
    """Never reads the body; answers once the test says so (``/release``)."""
    _never_read.append(request)
    state["release"] = False
    while not state["release"]:
        await asyncio.sleep(0.05)
    await response.end(b"never read it")


@plugin.route("/release")
async def release(request: Request, response: Response) -> None:
    state["release"] = True
    await response.end(b"ok")


@plugin.route("/echo", methods=["POST", "PUT"])
async def echo(request: Request, response: Response) -> None:
    if request.content_length >= 0:
        response.headers["Content-Length"] = str(request.content_length)
    try:
        total = await response.pipe_from(request.body)
    except ClientDisconnected:
        _outcome("echo", "ClientDisconnected")
        return
    except BaseException as exc:
        _outcome("echo", _name(exc))
        raise
    _outcome("echo", f"piped {total}")


@plugin.route("/read-all", methods=["POST", "PUT"])
async def read_all(request: Request, response: Response) -> None:
    """Reads the body to its end; records how the body ended."""
    await response.write(b"reading\n", flush=True)
    total = 0
    try:
        async for chunk in request.body:
            total += len(chunk)
    except ClientDisconnected:
        _outcome("read-all", f"ClientDisconnected after {total}")
        return
    except asyncio.CancelledError:
        _outcome("read-all", f"CancelledError after {total}")
        raise
    _outcome("read-all", f"clean end after {total}")
    await response.end(f"{total}\n".encode())


@plugin.route("/expect", methods=["POST", "PUT"])
async def expect(request: Request, response: Response) -> None:
    """Reads the body (asking for it) unless ``?refuse=CODE``: then answers first."""
    refuse = request.query.get("refuse")
    await asyncio.sleep(float(request.query.get("delay", "0")))
    if refuse:
        response.status = int(refuse)
        await response.end(b"refused without reading\n")
        return
    total = 0
    async for chunk in request.body:
        total += len(chunk)
    await response.end(f"read {total}\n".encode())


@plugin.route("/abort-mid")
async def abort_mid(request: Request, response: Response) -> None:
    response.headers["Content-Length"] = str(4 * MIB)
    await response.write(bytes(MIB), flush=True)
    await asyncio.sleep(0.2)
    response.abort(RuntimeError("stopping on purpose"))


@plugin.route("/finished")
async def finished(request: Request, response: Response) -> None:
    """Writes a response of ``size`` bytes; records how ``finished`` settled.

    ``finished`` is awaited by its own task from the start: the handler's task
    itself is cancelled when the client goes away during a write.
    """
    key = request.query["key"]
    size = int(request.query["size"])

    async def watch() -> None:
        try:
            await response.finished
        except Exception as exc:
            _outcome(key, _name(exc))
        else:
            _outcome(key, "resolved")

    watcher = asyncio.ensure_future(watch())
    _watchers.add(watcher)
    watcher.add_done_callback(_watchers.discard)
    response.headers["Content-Length"] = str(size)
    view = memoryview(BLOCK)
    try:
        while size > 0:
            piece = view[: min(size, len(view))]
            await response.write(piece)
            size -= len(piece)
        await response.end()
    except ClientDisconnected:
        _outcome(key + ":handler", "ClientDisconnected")
    except asyncio.CancelledError:
        _outcome(key + ":handler", "CancelledError")
        raise


_watchers: set[asyncio.Future[None]] = set()


@plugin.route("/corked")
async def corked(request: Request, response: Response) -> None:
    count = int(request.query["count"])
    with response.cork():
        for _ in range(count):
            response.write_nowait(b"c" * 32)
    await response.end()
