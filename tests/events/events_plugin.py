"""A plugin whose handler publishes events (``chunkwire plugin events_plugin:plugin``)."""

from __future__ import annotations

import asyncio

from chunkwire import Plugin
from chunkwire.events import Publisher

plugin = Plugin("events")


@plugin.route("/publish", methods=["POST"])
async def publish(request, response):
    address = request.query["address"]
    topic = request.query["topic"]
    count = int(request.query.get("n", "1"))
    kind = request.query.get("type", "tick")
    async with Publisher(address) as publisher:
        for i in range(count):
            await publisher.publish(topic, kind, f"{topic}/{i}")
    await response.write(f"{count}\n".encode())


@plugin.route("/body", methods=["POST"])
async def body(request, response):
    total = 0
    async for chunk in request.body:
        total += len(chunk)
    await response.write(b"x" * total)


@plugin.route("/hold")
async def hold(request, response):
    await response.write(b"started\n", flush=True)
    await asyncio.sleep(60)  # until the client leaves (the handler is cancelled)
