"""A plugin whose handlers fail in the ways the gateway must log as one line each."""

from __future__ import annotations

import asyncio

from chunkwire import Plugin
from chunkwire.plugin import Request, Response

plugin = Plugin("logs")


@plugin.route("/fail-after-head")
async def fail_after_head(request: Request, response: Response) -> None:
    await response.write(b"started\n", flush=True)
    raise RuntimeError("the handler broke after its head")


@plugin.route("/count", methods=["POST", "PUT"])
async def count(request: Request, response: Response) -> None:
    total = 0
    async for chunk in request.body:
        total += len(chunk)
    await response.write(f"{total}\n".encode())


@plugin.route("/ticks")
async def ticks(request: Request, response: Response) -> None:
    n = 0
    while True:
        await response.write(f"tick {n}\n".encode(), flush=True)
        n += 1
        await asyncio.sleep(0.05)


@plugin.route("/firehose")
async def firehose(request: Request, response: Response) -> None:
    block = bytes(range(256)) * 256
    while True:
        await response.write(block)


@plugin.route("/stall", methods=["POST"])
async def stall(request: Request, response: Response) -> None:
    # Never reads: the upload's credit runs out and the gateway stops reading.
    await asyncio.Event().wait()
