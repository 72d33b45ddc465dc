"""Fake plugins written directly with grpc.aio raw-bytes handlers, and an in-process gateway.

The fakes misbehave on purpose (invalid status, dying mid-response, never
answering) so every row of the gateway's error table can be provoked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import grpc
import grpc.aio
import uvicorn

from chunkwire._core import (
    decode_batch,
    decode_request_frame,
    decode_response_frame,
    encode_response_frame,
)
from chunkwire._proto import http_pb2, plugin_pb2
from chunkwire._wire import (
    MATTERMOST_SERVE_HTTP_METHOD,
    SERVE_HTTP_METHOD,
    headers_to_proto,
    identity,
)
from chunkwire.gateway import Gateway
from chunkwire.plugin.lane import LaneListener
from chunkwire.transport import CONNECT_METHOD, DESCRIBE_METHOD
from chunkwire.transport.mux import (
    Connection,
    CreditAvailable,
    DataReceived,
    ResetCode,
    StreamDelivered,
    StreamOpened,
    StreamReset,
)
from chunkwire.transport.sender import BatchSender

# What fake plugins offer: set per test by the ``transport`` fixture (conftest).
# "mux": Describe lists mux and Connect runs the same handlers per stream, so
# a gateway on "auto" negotiates it; "lane": the fake listens on a unix socket
# (a temporary one unless given) and also serves those streams on a lane
# next to it; "call": no Describe, ServeHTTP only.
TRANSPORT = "call"
STARTED: list[FakePlugin] = []  # fakes of the running test, for the conftest's check

FakeHandler = Callable[[http_pb2.ServeHTTPRequestInit, Any, "FakeLog"], Awaitable[None]]


class FakeLog:
    """What the fake plugin saw, for assertions."""

    def __init__(self) -> None:
        self.inits: list[http_pb2.ServeHTTPRequestInit] = []
        self.transports: list[str] = []  # how each request arrived
        self.cancelled: list[str] = []
        self.body_bytes = 0
        self.describes = 0  # Describe calls answered
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
        self.mux = TRANSPORT in ("mux", "lane") and not mattermost
        self.lane = TRANSPORT == "lane" and not mattermost
        self._lane: LaneListener | None = None
        self._tmp: str | None = None
        STARTED.append(self)
        self.log = FakeLog()
        self.server: grpc.aio.Server | None = None
        self.address = ""
        self.mattermost = mattermost

    async def _serve(self, request_iterator: Any, context: Any) -> None:
        await self._dispatch(await context.read(), context, "call")

    async def _dispatch(self, message: Any, context: Any, transport: str) -> None:
        first = decode_request_frame(message)
        assert first.init is not None
        init = http_pb2.ServeHTTPRequestInit.FromString(first.init)
        self.log.inits.append(init)
        self.log.transports.append(transport)
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

    @property
    def transport(self) -> str:
        """What a gateway on "auto" negotiates with this fake."""
        return "lane" if self.lane else "mux" if self.mux else "call"

    async def start(self, listen: str = "127.0.0.1:0") -> str:
        if self.lane and not listen.startswith("unix:"):
            self._tmp = tempfile.mkdtemp(prefix="cw-fake-", dir="/tmp")
            listen = f"unix:{self._tmp}/fake.sock"
        server = grpc.aio.server()
        handler = grpc.stream_stream_rpc_method_handler(
            self._serve, request_deserializer=None, response_serializer=None
        )
        method = MATTERMOST_SERVE_HTTP_METHOD if self.mattermost else SERVE_HTTP_METHOD
        service, name = method.lstrip("/").split("/")
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {name: handler}),)
        )
        if self.mux:
            info = plugin_pb2.PluginInfo(name="fake", transports=["call", "mux"])
            if self.lane:
                path = os.path.abspath(listen[len("unix:") :]) + ".lane"
                self._lane = LaneListener(
                    path, lambda context: _FakeConnection(self, context, "lane").run(), 1 << 21
                )
                info.transports.append("lane")
                info.lane_socket = path

            async def describe(request: bytes, context: Any) -> bytes:
                self.log.describes += 1
                return info.SerializeToString()

            plugin_service, describe_name = DESCRIBE_METHOD.lstrip("/").split("/")
            connect_name = CONNECT_METHOD.rsplit("/", 1)[1]
            methods = {
                describe_name: grpc.unary_unary_rpc_method_handler(
                    describe, request_deserializer=identity, response_serializer=identity
                ),
                connect_name: grpc.stream_stream_rpc_method_handler(
                    self._connect, request_deserializer=None, response_serializer=None
                ),
            }
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(plugin_service, methods),)
            )
        port = server.add_insecure_port(listen)
        await server.start()
        if self._lane is not None:
            await self._lane.start()
        self.server = server
        self.address = listen if listen.startswith("unix:") else f"127.0.0.1:{port}"
        return self.address

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
            self.server = None
        lane, self._lane = self._lane, None
        if lane is not None:
            await lane.close(0, lambda: False)
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


    async def _connect(self, request_iterator: Any, context: Any) -> None:
        await _FakeConnection(self, context).run()


class _Aborted(Exception):
    """context.abort() on a fake stream: ends the handler, as grpc's abort does."""


class _FakeStream:
    """A ServicerContext look-alike for one stream, so fake handlers run unchanged."""

    def __init__(self, conn: _FakeConnection, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.messages: list[Any] = []
        self.wakeup = asyncio.Event()
        self.closed = False
        self.was_cancelled = False
        self.task: asyncio.Task[None] | None = None

    def cancelled(self) -> bool:
        return self.was_cancelled

    async def read(self) -> Any:
        while not self.messages:
            if self.closed:
                return grpc.aio.EOF
            self.wakeup.clear()
            await self.wakeup.wait()
        message = self.messages.pop(0)
        self.conn.proto.consumed(self.stream_id, message.nbytes)
        self.conn.sender.kick()
        return message

    async def write(self, message: bytes) -> None:
        proto = self.conn.proto
        while not proto.can_send(self.stream_id):
            if self.closed or self.stream_id not in proto.streams:
                raise RuntimeError("stream closed")
            self.wakeup.clear()
            await self.wakeup.wait()
        proto.send_data(self.stream_id, message, end=decode_response_frame(message).complete)
        self.conn.sender.kick()

    async def send_initial_metadata(self, metadata: Any) -> None:
        if ("chunkwire-continue", "1") in tuple(metadata):
            self.conn.proto.request_body(self.stream_id)
            self.conn.sender.kick()

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.conn.proto.reset(self.stream_id, ResetCode.INTERNAL, details)
        self.conn.sender.kick()
        raise _Aborted(details)


class _FakeConnection:
    def __init__(self, plugin: FakePlugin, context: Any, transport: str = "mux") -> None:
        self.plugin = plugin
        self.context = context
        self.transport = transport
        self.proto = Connection(opener=False)
        # A lane brings its own sender and decoder (bodies through its rings).
        make_sender = getattr(context, "sender", None)
        if make_sender is None:
            self.sender = BatchSender(self.proto, context.write)
        else:
            self.sender = make_sender(self.proto)
        self._decode = getattr(context, "decode", decode_batch)
        self.streams: dict[int, _FakeStream] = {}

    async def run(self) -> None:
        self.sender.start()
        try:
            while (data := await self.context.read()) is not grpc.aio.EOF:
                for event in self.proto.receive(self._decode(data)):
                    self._on(event)
                self.sender.kick()
        finally:
            for stream in self.streams.values():
                stream.closed = True
                if stream.task is not None:
                    stream.task.cancel()
            await self.sender.close()

    def _on(self, event: Any) -> None:
        if isinstance(event, StreamOpened):
            stream = _FakeStream(self, event.stream_id)
            self.streams[event.stream_id] = stream
            stream.task = asyncio.ensure_future(self._run(stream, event.payload))
            return
        stream = self.streams.get(event.stream_id) if event.stream_id else None
        if isinstance(event, CreditAvailable):
            for each in self.streams.values() if event.stream_id == 0 else [stream]:
                if each is not None:
                    each.wakeup.set()
        elif stream is None:
            return
        elif isinstance(event, DataReceived):
            stream.messages.append(event.payload)
            stream.wakeup.set()
        elif isinstance(event, (StreamReset, StreamDelivered)):
            stream.closed = True
            stream.wakeup.set()
            self.streams.pop(event.stream_id, None)
            if isinstance(event, StreamReset) and stream.task is not None:
                stream.was_cancelled = True
                stream.task.cancel()

    async def _run(self, stream: _FakeStream, payload: Any) -> None:
        with contextlib.suppress(asyncio.CancelledError, _Aborted, RuntimeError):
            await self.plugin._dispatch(payload, stream, self.transport)
        state = self.proto.streams.get(stream.stream_id)
        if state is not None and state.local_open:
            # Returning without body_complete: the call transport's RPC would
            # end there, so the stream fails.
            self.proto.reset(stream.stream_id, ResetCode.INTERNAL, "handler returned")
            self.sender.kick()
            self.streams.pop(stream.stream_id, None)


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
