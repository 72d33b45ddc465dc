"""A plugin process reporting its own task count and memory (for leak checks).

Run: python leak_server.py unix:/path.sock
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import signal
import sys

from chunkwire import Plugin
from chunkwire.plugin import Request, Response

plugin = Plugin("leaks")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _malloc_in_use() -> int | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
    except (OSError, AttributeError):
        return None
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@plugin.route("/stats")
async def stats(request: Request, response: Response) -> None:
    # On the multiplexed transport, let the batch being written (WINDOW and
    # RESET frames) leave first: a write in gRPC's hands holds objects.
    for _ in range(400):
        if SERVER is None or not SERVER.mux.busy:
            break
        await asyncio.sleep(0.005)
    # Let cancelled tasks finish unwinding before counting.
    for _ in range(3):
        await asyncio.sleep(0)
    gc.collect()
    kinds: dict[str, int] = {"all": len(gc.get_objects())}
    for obj in gc.get_objects():
        name = type(obj).__name__
        if name in ("RPCState", "Request", "Response", "Task"):
            kinds[name] = kinds.get(name, 0) + 1
    doc = {
        "tasks": len(asyncio.all_tasks()),
        "rss": _rss(),
        "malloc": _malloc_in_use(),
        "objects": kinds,
        "mux_streams": SERVER.mux_streams if SERVER is not None else None,
    }
    await response.write(json.dumps(doc).encode())


@plugin.route("/wait")
async def wait(request: Request, response: Response) -> None:
    if request.query.get("write"):
        await response.write(b"started", flush=True)
    await asyncio.Event().wait()


@plugin.route("/upload", methods=["POST"])
async def upload(request: Request, response: Response) -> None:
    async for _ in request.body:
        if not response.headers_sent:
            await response.write(b"reading", flush=True)


@plugin.route("/firehose")
async def firehose(request: Request, response: Response) -> None:
    block = bytes(1 << 20)
    while True:
        await response.write(block)


@plugin.route("/swallow")
async def swallow(request: Request, response: Response) -> None:
    await response.write(b"started", flush=True)
    try:  # noqa: SIM105 - the pattern under test: swallowing the cancel
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        pass
    await response.write(b"after cancel")


SERVER = None  # the running PluginServer, for its stream table in /stats


async def _main(address: str) -> None:
    global SERVER
    SERVER = await plugin.start(address)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(f"plugin {plugin.name!r} listening on {SERVER.address}", flush=True)
    await stop.wait()
    await SERVER.stop(0)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1]))
