"""Unmodified FastAPI and Starlette apps, served as plugins by ``chunkwire plugin``."""

from __future__ import annotations

import asyncio
import hashlib
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

# What the apps saw, read back by the tests through /events (one plugin process).
EVENTS: list[str] = []
_GATES: dict[str, asyncio.Event] = {}


def _gate(name: str) -> asyncio.Event:
    return _GATES.setdefault(name, asyncio.Event())


# -- FastAPI ----------------------------------------------------------------------


@asynccontextmanager
async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
    if os.environ.get("ASGI_APPS_FAIL_STARTUP"):
        raise RuntimeError("database unreachable")
    EVENTS.append("startup")
    yield {"greeting": "set at startup"}
    EVENTS.append("shutdown")
    marker = os.environ.get("ASGI_APPS_SHUTDOWN_MARKER")
    if marker:
        with open(marker, "w") as out:
            out.write("shutdown ran\n")


app = FastAPI(lifespan=lifespan)


@app.get("/state")
async def state(request: Request) -> dict[str, object]:
    return {"greeting": request.state.greeting, "events": EVENTS}


@app.get("/events")
async def events() -> list[str]:
    return EVENTS


@app.post("/release/{name}")
async def release(name: str) -> dict[str, str]:
    _gate(name).set()
    return {"released": name}


@app.get("/stream/{name}")
async def stream(name: str) -> StreamingResponse:
    async def parts():  # type: ignore[no-untyped-def]
        yield b"part 0\n"
        # The next part waits for the client: it has part 0 while the app runs.
        await asyncio.wait_for(_gate(name).wait(), 60)
        yield b"part 1\n"
        EVENTS.append(f"stream {name} done")

    return StreamingResponse(parts(), media_type="text/plain")


@app.get("/file")
async def file(path: str) -> FileResponse:
    return FileResponse(path, media_type="application/octet-stream")


@app.post("/upload-file")
async def upload_file(file: UploadFile = File(...)) -> dict[str, object]:  # noqa: B008
    digest = hashlib.sha256()
    size = 0
    while chunk := await file.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    return {"filename": file.filename, "bytes": size, "sha256": digest.hexdigest()}


@app.api_route("/upload-stream", methods=["POST", "PUT"])
async def upload_stream(request: Request) -> dict[str, object]:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return {"bytes": size, "sha256": digest.hexdigest()}


@app.get("/headers")
async def headers(request: Request) -> Response:
    response = JSONResponse(
        {
            "trace": request.headers.getlist("x-trace"),
            "cookies": dict(request.cookies),
            "client": list(request.client) if request.client else None,
            "url": str(request.url),
            "root_path": request.scope["root_path"],
            "scheme": request.url.scheme,
        }
    )
    response.headers.append("X-Multi", "one")
    response.headers.append("X-Multi", "two")
    response.set_cookie("first", "1")
    response.set_cookie("second", "2", httponly=True)
    return response


@app.get("/items/{item_id}", name="item")
async def item(item_id: int) -> dict[str, int]:
    return {"item_id": item_id}


@app.get("/link")
async def link(request: Request) -> dict[str, str]:
    return {"item": str(request.url_for("item", item_id=3))}


@app.get("/boom")
async def boom() -> None:
    raise RuntimeError("boom")


@app.get("/boom-mid-stream")
async def boom_mid_stream() -> StreamingResponse:
    async def parts():  # type: ignore[no-untyped-def]
        yield b"partial\n"
        raise RuntimeError("boom mid-stream")

    return StreamingResponse(parts())


# -- Starlette ------------------------------------------------------------------


class WaitForDisconnect:
    """A raw ASGI endpoint: answers a first line, then waits for http.disconnect."""

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ready\n", "more_body": True})
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                EVENTS.append("http.disconnect")
                return


async def s_hello(request):  # type: ignore[no-untyped-def]
    return PlainTextResponse(
        f"{request.state.greeting} {request.url_for('s_item', item_id='x1')}\n"
    )


async def s_item(request):  # type: ignore[no-untyped-def]
    return PlainTextResponse(request.path_params["item_id"])


async def s_events(request):  # type: ignore[no-untyped-def]
    return JSONResponse(EVENTS)


async def s_echo(request):  # type: ignore[no-untyped-def]
    async def body():  # type: ignore[no-untyped-def]
        async for chunk in request.stream():
            yield chunk

    return StreamingResponse(body(), media_type="application/octet-stream")


@asynccontextmanager
async def s_lifespan(app):  # type: ignore[no-untyped-def]
    yield {"greeting": "hello from starlette"}


starlette_app = Starlette(
    routes=[
        Route("/hello", s_hello),
        Route("/items/{item_id}", s_item, name="s_item"),
        Route("/events", s_events),
        Route("/echo", s_echo, methods=["POST", "PUT"]),
        Route("/wait-disconnect", WaitForDisconnect()),
    ],
    lifespan=s_lifespan,
)


# -- a bare ASGI callable without lifespan support --------------------------------


async def bare_app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        raise RuntimeError(f"bare_app does not handle {scope['type']!r}")
    body = b"bare " + scope["path"].encode() + b" " + scope["root_path"].encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
