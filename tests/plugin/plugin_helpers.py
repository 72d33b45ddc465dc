"""A plugin exercising every feature, and raw-wire helpers, for tests/plugin."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc

from chunkwire import Plugin
from chunkwire._core import decode_response_frame, encode_request_frame
from chunkwire._proto import http_pb2
from chunkwire._wire import SERVE_HTTP_METHOD
from chunkwire.client import PluginClient
from chunkwire.errors import ClientDisconnected, HeadersAlreadySent
from chunkwire.plugin import PluginServer, Request, Response

# Set per test by the ``transport`` fixture (conftest): what ``serve`` gives PluginClient.
CLIENT_TRANSPORT = "call"


def pattern(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class State:
    started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    errors: list[BaseException] = field(default_factory=list)
    seen: dict[str, object] = field(default_factory=dict)


def make_plugin(state: State, **kwargs: object) -> Plugin:
    plugin = Plugin("test", **kwargs)  # type: ignore[arg-type]

    @plugin.route("/echo", methods=["POST", "PUT"])
    async def echo(request: Request, response: Response) -> None:
        response.headers["Content-Type"] = request.headers.get(
            "Content-Type", "application/octet-stream"
        )
        async for chunk in request.body:
            await response.write(chunk)

    @plugin.route("/info")
    async def info(request: Request, response: Response) -> None:
        body = await request.body.read_all()
        doc = {
            "method": request.method,
            "url": request.url,
            "path": request.path,
            "raw_path": request.raw_path,
            "query": list(request.query.items()),
            "host": request.host,
            "remote_addr": request.remote_addr,
            "request_uri": request.request_uri,
            "proto": request.proto,
            "headers": list(request.headers.items()),
            "content_length": request.content_length,
            "user_id": request.context.user_id,
            "session_id": request.context.session_id,
            "path_params": request.path_params,
            "body": body.decode("latin-1"),
        }
        response.headers["Content-Type"] = "application/json"
        await response.write(json.dumps(doc).encode())

    @plugin.route("/items/{item_id}", methods=["GET", "DELETE"])
    async def item(request: Request, response: Response) -> None:
        await response.write(f"item {request.path_params['item_id']}".encode())

    @plugin.route("/items/{item_id}", methods=["PUT"])
    async def put_item(request: Request, response: Response) -> None:
        response.status = 201
        await response.write(f"put {request.path_params['item_id']}".encode())

    @plugin.route("/files/{rest:path}")
    async def files(request: Request, response: Response) -> None:
        await response.write(request.path_params["rest"].encode())

    @plugin.route("/download")
    async def download(request: Request, response: Response) -> None:
        size = int(request.query["size"])
        step = int(request.query.get("write", "65536"))
        data = memoryview(pattern(size, int(request.query.get("seed", "0"))))
        response.headers["Content-Length"] = str(size)
        for start in range(0, size, step):
            await response.write(data[start : start + step])

    @plugin.route("/upload", methods=["POST"])
    async def upload(request: Request, response: Response) -> None:
        digest = hashlib.sha256()
        chunks = 0
        largest = 0
        async for chunk in request.body:
            digest.update(chunk)
            chunks += 1
            largest = max(largest, len(chunk))
        doc = {
            "sha256": digest.hexdigest(),
            "size": request.body.received,
            "chunks": chunks,
            "largest": largest,
        }
        await response.write(json.dumps(doc).encode())

    @plugin.route("/writes")
    async def writes(request: Request, response: Response) -> None:
        n = int(request.query["n"])
        piece = b"x" * int(request.query["size"])
        for _ in range(n):
            await response.write(piece)

    @plugin.route("/small")
    async def small(request: Request, response: Response) -> None:
        response.headers.add("Set-Cookie", "a=1")
        response.headers.add("Set-Cookie", "b=2")
        await response.write(b"hello ")
        await response.write(b"world")

    @plugin.route("/empty")
    async def empty(request: Request, response: Response) -> None:
        return None

    @plugin.route("/status/{code:int}")
    async def status(request: Request, response: Response) -> None:
        response.status = int(request.path_params["code"])
        await response.write(b"status body")

    @plugin.route("/flush")
    async def flush(request: Request, response: Response) -> None:
        await response.write(b"first", flush=True)
        state.started.set()
        await state.release.wait()
        await response.write(b"second")

    @plugin.route("/flush-empty")
    async def flush_empty(request: Request, response: Response) -> None:
        await response.flush()
        state.started.set()
        await state.release.wait()
        await response.write(b"after")

    @plugin.route("/headers-after")
    async def headers_after(request: Request, response: Response) -> None:
        response.headers["X-Before"] = "yes"
        await response.write(b"part1", flush=True)
        for attempt in (
            lambda: response.headers.add("X-After", "no"),
            lambda: response.headers.__setitem__("X-Before", "changed"),
            lambda: setattr(response, "status", 500),
            lambda: setattr(response, "headers", {"X-New": "no"}),
        ):
            try:
                attempt()
            except (HeadersAlreadySent, TypeError, AttributeError) as exc:
                state.errors.append(exc)
        await response.write(b"part2")

    @plugin.route("/headers-after-small-write")
    async def headers_after_small_write(request: Request, response: Response) -> None:
        response.headers["X-Before"] = "yes"
        response.status = 201
        await response.write(b"part1")  # stays in the ring: nothing has left yet
        assert not response.headers_sent and response.headers_locked
        for attempt in (
            lambda: response.headers.add("X-After", "no"),
            lambda: response.headers.__setitem__("X-Before", "changed"),
            lambda: setattr(response, "status", 500),
            lambda: setattr(response, "headers", {"X-New": "no"}),
        ):
            try:
                attempt()
            except (HeadersAlreadySent, TypeError, AttributeError) as exc:
                state.errors.append(exc)
        await response.write(b"part2")

    @plugin.route("/headers-after-empty-flush")
    async def headers_after_empty_flush(request: Request, response: Response) -> None:
        await response.flush()
        try:
            response.status = 404
        except HeadersAlreadySent as exc:
            state.errors.append(exc)
        await response.write(b"flushed")

    @plugin.route("/fail-before")
    async def fail_before(request: Request, response: Response) -> None:
        response.status = 202
        response.headers["X-Leak"] = "no"
        await response.write(b"buffered, never sent")
        raise ValueError("boom before")

    @plugin.route("/fail-after")
    async def fail_after(request: Request, response: Response) -> None:
        await response.write(b"partial", flush=True)
        raise ValueError("boom after")

    @plugin.route("/slow")
    async def slow(request: Request, response: Response) -> None:
        if request.query.get("write"):
            await response.write(b"started", flush=True)
        state.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            state.cancelled.set()
            raise
        finally:
            state.finished.set()

    @plugin.route("/swallow")
    async def swallow(request: Request, response: Response) -> None:
        state.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            state.cancelled.set()
        await response.write(b"too late")

    @plugin.route("/slow-upload", methods=["POST"])
    async def slow_upload(request: Request, response: Response) -> None:
        try:
            async for _ in request.body:
                state.started.set()
        except (asyncio.CancelledError, ClientDisconnected) as exc:
            # A read on a cancelled call raises ClientDisconnected; the task's
            # cancellation may land first.
            state.errors.append(exc)
            state.cancelled.set()
            raise

    @plugin.route("/early", methods=["POST"])
    async def early(request: Request, response: Response) -> None:
        first = await request.body.read(10)
        state.seen["first"] = first
        response.status = 413
        await response.write(b"no thanks")

    @plugin.route("/readn", methods=["POST"])
    async def readn(request: Request, response: Response) -> None:
        n = int(request.query["n"])
        sizes = []
        parts = []
        while piece := await request.body.read(n):
            sizes.append(len(piece))
            parts.append(piece)
        state.seen["sizes"] = sizes
        await response.write(b"".join(parts))

    @plugin.route("/readall", methods=["POST"])
    async def readall(request: Request, response: Response) -> None:
        body = await request.body.read_all(limit=int(request.query["limit"]))
        await response.write(hashlib.sha256(body).hexdigest().encode())

    @plugin.route("/readall-catch", methods=["POST"])
    async def readall_catch(request: Request, response: Response) -> None:
        try:
            await request.body.read_all(limit=int(request.query["limit"]))
        except Exception as exc:
            state.errors.append(exc)
            response.status = 413
            await response.write(str(exc).encode())

    @plugin.route("/numpy")
    async def numpy_route(request: Request, response: Response) -> None:
        import numpy as np

        await response.write(np.arange(4, dtype=np.uint32))
        await response.write(bytearray(b"ba"))
        await response.write(memoryview(b"mv"))

    @plugin.route("/bad-write")
    async def bad_write(request: Request, response: Response) -> None:
        try:
            await response.write("text")  # type: ignore[arg-type]
        except TypeError as exc:
            state.errors.append(exc)
        try:
            response.status = "200"  # type: ignore[assignment]
        except TypeError as exc:
            state.errors.append(exc)
        await response.write(b"ok")

    return plugin


@asynccontextmanager
async def serve(
    plugin: Plugin, listen: str, chunk_size: int = 65536
) -> AsyncIterator[tuple[PluginServer, PluginClient]]:
    async with (
        plugin.serving(listen) as server,
        PluginClient(server.address, chunk_size=chunk_size, transport=CLIENT_TRANSPORT) as client,
    ):
        yield server, client


def init_message(method: str = "GET", url: str = "/", **fields: object) -> bytes:
    init = http_pb2.ServeHTTPRequestInit(method=method, url=url, request_uri=url, **fields)
    return http_pb2.ServeHTTPRequest(init=init).SerializeToString()


@dataclass
class RawResult:
    messages: list[bytes]
    code: grpc.StatusCode
    details: str

    @property
    def frames(self):  # type: ignore[no-untyped-def]
        return [decode_response_frame(m) for m in self.messages]

    @property
    def init(self) -> http_pb2.ServeHTTPResponseInit:
        first = self.frames[0]
        assert first.init is not None
        return http_pb2.ServeHTTPResponseInit.FromString(first.init)

    @property
    def body(self) -> bytes:
        return b"".join(bytes(f.body) for f in self.frames)


async def raw_call(
    address: str,
    method: str = "GET",
    url: str = "/",
    body: bytes = b"",
    *,
    grpc_method: str = SERVE_HTTP_METHOD,
    messages: list[bytes] | None = None,
) -> RawResult:
    """One ServeHTTP call with a raw stub; returns every message and the status."""
    if messages is None:
        messages = [
            init_message(method, url, content_length=len(body))
            + encode_request_frame(body, complete=True)
        ]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = channel.stream_stream(
            grpc_method, request_serializer=None, response_deserializer=None
        )
        call = stub()
        received = []
        try:
            for message in messages:
                await call.write(message)
            await call.done_writing()
            while (message := await call.read()) is not grpc.aio.EOF:
                received.append(message)
        except grpc.aio.AioRpcError:
            pass
        return RawResult(received, await call.code(), await call.details())
