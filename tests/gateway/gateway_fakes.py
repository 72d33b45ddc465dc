"""Fake plugins written directly with grpc.aio raw-bytes handlers, and an in-process gateway.

The fakes misbehave on purpose (invalid status, dying mid-response, never
answering) so every row of the gateway's error table can be provoked.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import grpc
import grpc.aio
import uvicorn

from chunkwire._core import decode_request_frame, encode_response_frame
from chunkwire._proto import http_pb2
from chunkwire._wire import MATTERMOST_SERVE_HTTP_METHOD, SERVE_HTTP_METHOD, headers_to_proto
from chunkwire.gateway import Gateway

FakeHandler = Callable[[http_pb2.ServeHTTPRequestInit, Any, "FakeLog"], Awaitable[None]]


class FakeLog:
    """What the fake plugin saw, for assertions."""

    def __init__(self) -> None:
        self.inits: list[http_pb2.ServeHTTPRequestInit] = []
        self.cancelled: list[str] = []
        self.body_bytes = 0
        self.events: dict[str, asyncio.Event] = {}

    def event(self, name: str) -> asyncio.Event:
        return self.events.setdefault(name, asyncio.Event())


def response(status: int, body: bytes = b"", headers: Any = (), *, complete: bool = True) -> bytes:
    init = http_pb2.ServeHTTPResponseInit(status_code=status, headers=headers_to_proto(headers))
    return http_pb2.ServeHTTPResponse(init=init).SerializeToString() + encode_response_frame(
        body, complete=complete
    )


async def read_body(context: Any, first: Any, log: FakeLog) -> int:
    """Read the request body to the end; return its size."""
    total = first.body.nbytes
    complete = first.complete
    while not complete:
        message = await context.read()
        if message is grpc.aio.EOF:
            break
        frame = decode_request_frame(message)
        total += frame.body.nbytes
        log.body_bytes = total
        complete = frame.complete
    return total


class FakePlugin:
    """A grpc.aio server whose ServeHTTP dispatches on the request path to ``routes``."""

    def __init__(self, routes: dict[str, FakeHandler], *, mattermost: bool = False) -> None:
        self.routes = routes
        self.log = FakeLog()
        self.server: grpc.aio.Server | None = None
        self.address = ""
        self.mattermost = mattermost

    async def _serve(self, request_iterator: Any, context: Any) -> None:
        first = decode_request_frame(await context.read())
        assert first.init is not None
        init = http_pb2.ServeHTTPRequestInit.FromString(first.init)
        self.log.inits.append(init)
        path = urlsplit(init.url).path
        handler = self.routes.get(path)
        try:
            if handler is None:
                await context.write(response(404, b"no route\n"))
                return
            await handler(first, context, self.log)
        except asyncio.CancelledError:
            self._cancelled(path)
            raise
        except Exception as exc:
            # A write racing the cancel fails instead of being cancelled.
            if context.cancelled() or type(exc).__name__ == "ExecuteBatchError":
                self._cancelled(path)
            raise

    def _cancelled(self, path: str) -> None:
        self.log.cancelled.append(path)
        self.log.event(f"cancelled:{path}").set()

    async def start(self, listen: str = "127.0.0.1:0") -> str:
        server = grpc.aio.server()
        handler = grpc.stream_stream_rpc_method_handler(
            self._serve, request_deserializer=None, response_serializer=None
        )
        method = MATTERMOST_SERVE_HTTP_METHOD if self.mattermost else SERVE_HTTP_METHOD
        service, name = method.lstrip("/").split("/")
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {name: handler}),)
        )
        port = server.add_insecure_port(listen)
        await server.start()
        self.server = server
        self.address = listen if listen.startswith("unix:") else f"127.0.0.1:{port}"
        return self.address

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
            self.server = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def serve_gateway(gateway: Gateway) -> AsyncIterator[str]:
    """Run ``gateway`` under uvicorn in this loop; yield its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(gateway, log_level="critical", lifespan="on", loop="asyncio")
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        sock.close()


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]
