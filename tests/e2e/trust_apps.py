"""The honest plugin of the trust-boundary tests (``chunkwire plugin trust_apps:honest``)."""

from __future__ import annotations

import json

import e2e_apps

from chunkwire import Plugin
from chunkwire.plugin import Request, Response

honest = Plugin("trust-honest")
admin_hits = {"count": 0}


@honest.route("/hello")
async def hello(request: Request, response: Response) -> None:
    response.headers["X-Honest"] = "1"
    await response.write(b"honest hello")


@honest.route("/admin")
async def admin(request: Request, response: Response) -> None:
    admin_hits["count"] += 1
    await response.write(b"admin area")


@honest.route("/stats")
async def stats(request: Request, response: Response) -> None:
    await response.write(json.dumps({"admin_hits": admin_hits["count"]}).encode())


@honest.route("/target/{rest:path}")
async def target(request: Request, response: Response) -> None:
    fields = {
        "path": request.path,
        "raw_path": request.raw_path,
        "query": request.query_string,
        "request_uri": request.request_uri,
        "url": request.url,
        "host": request.host,
    }
    await response.write(json.dumps(fields).encode())

honest.add_route("/upload", e2e_apps.upload, methods=["POST", "PUT"])
