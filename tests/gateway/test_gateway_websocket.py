"""The gateway's WebSocket bridge called as an ASGI app: authentication, its own
message limit (under a server with a larger one), and what it accepts from plugins,
on every transport (the conftest's ``transport``): plugins are real ones or fakes
serving ServeWebSocket ("call") or WebSocket streams on Connect or a lane."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import gateway_fakes
import grpc
import grpc.aio
import pytest

from chunkwire import Plugin
from chunkwire import _websocket as wire
from chunkwire._core import decode_batch
from chunkwire._proto import http_pb2, plugin_pb2, websocket_pb2
from chunkwire._wire import identity
from chunkwire.errors import WebSocketClosed
from chunkwire.gateway import Gateway, Identity, Reject
from chunkwire.plugin.lane import LaneListener
from chunkwire.transport import CONNECT_METHOD, DESCRIBE_METHOD
from chunkwire.transport.mux import (
    Connection,
    CreditAvailable,
    DataReceived,
    StreamOpened,
    StreamReset,
)
from chunkwire.transport.sender import BatchSender

pytestmark = pytest.mark.timeout(60)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


_GATEWAYS: list[Gateway] = []


def new_gateway(address: str, **options: Any) -> Gateway:
    """A gateway to plugin "p" on the test's transport."""
    gateway = Gateway({"p": address}, transport=gateway_fakes.TRANSPORT, **options)
    _GATEWAYS.append(gateway)
    return gateway


@pytest.fixture(autouse=True)
def sessions_on_the_transport(transport: str) -> Iterator[None]:
    """Every session a test's gateways opened went over the test's transport."""
    _GATEWAYS.clear()
    yield
    for gateway in _GATEWAYS:
        counters = gateway._counters
        assert counters.get("websockets", 0) == counters.get(f"websockets_{transport}", 0)
    _GATEWAYS.clear()


class Client:
    """Plays the ASGI server's side of one WebSocket connection."""

    def __init__(self, path: str, *, headers=(), subprotocols=(), extension: bool = True):
        self.scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "scheme": "ws",
            "http_version": "1.1",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"gw.test"), *headers],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8080),
            "subprotocols": list(subprotocols),
            "extensions": {"websocket.http.response": {}} if extension else {},
        }
        self.incoming: asyncio.Queue[dict] = asyncio.Queue()
        self.incoming.put_nowait({"type": "websocket.connect"})
        self.sent: list[dict] = []
        self.changed = asyncio.Event()

    async def receive(self) -> dict:
        return await self.incoming.get()

    async def send(self, message: dict) -> None:
        self.sent.append(message)
        if message["type"] == "websocket.close":
            self.incoming.put_nowait(
                {"type": "websocket.disconnect", "code": message.get("code", 1000)}
            )
        self.changed.set()

    def push(self, text: str | None = None, data: bytes | None = None) -> None:
        message: dict[str, Any] = {"type": "websocket.receive"}
        if text is not None:
            message["text"] = text
        else:
            message["bytes"] = data
        self.incoming.put_nowait(message)

    async def wait_for(self, kind: str) -> dict:
        while True:
            for message in self.sent:
                if message["type"] == kind:
                    return message
            self.changed.clear()
            await self.changed.wait()


# Plugins listen on unix sockets in fresh directories: no TCP port is reused
# from one test to the next.


@contextlib.asynccontextmanager
async def plugin_server(plugin: Plugin) -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="chunkwire-ws-") as tmp:
        async with plugin.serving(f"unix:{tmp}/plugin.sock") as server:
            yield server.address


def echo_plugin(seen: dict) -> Plugin:
    plugin = Plugin("echo")

    @plugin.websocket("/echo")
    async def echo(ws):
        seen["user_id"] = ws.request.context.user_id
        seen["headers"] = dict(ws.request.headers)
        await ws.accept()
        try:
            async for message in ws:
                await ws.send(message)
        finally:
            seen["close"] = (ws.close_code, ws.close_reason)

    return plugin


def test_authenticate_reject_refuses_the_handshake():
    async def main():
        async with plugin_server(echo_plugin({})) as address:

            def authenticate(scope):
                raise Reject(401, "who are you")

            gateway = new_gateway(address, authenticate=authenticate)
            client = Client("/plugins/p/echo")
            await gateway(client.scope, client.receive, client.send)
            await gateway.aclose()
            return client.sent

    sent = run(main())
    assert sent[0] == {
        "type": "websocket.http.response.start",
        "status": 401,
        "headers": [(b"content-type", b"text/plain; charset=utf-8")],
    }
    assert sent[1]["body"] == b"who are you\n"


def test_identity_reaches_the_plugin_and_forged_headers_do_not():
    seen: dict = {}

    async def main():
        async with plugin_server(echo_plugin(seen)) as address:

            async def authenticate(scope):
                return Identity(user_id="u-7")

            gateway = new_gateway(address, authenticate=authenticate)
            client = Client(
                "/plugins/p/echo", headers=[(b"x-chunkwire-user-id", b"forged")]
            )
            task = asyncio.ensure_future(gateway(client.scope, client.receive, client.send))
            await client.wait_for("websocket.accept")
            client.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
            await task
            await gateway.aclose()

    run(main())
    assert seen["user_id"] == "u-7"
    assert seen["headers"]["X-Chunkwire-User-Id"] == "u-7"


# -- plugins that break the rules -------------------------------------------------------

FakeSession = Callable[[Any], Awaitable[None]]


class _SessionContext:
    """One WebSocket stream, with the read/write of a ServeWebSocket call's context."""

    def __init__(self, conn: _FakeSessions, stream_id: int, init: Any) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.messages: list[Any] = [init]
        self.wakeup = asyncio.Event()
        self.gone = False

    async def read(self) -> Any:
        proto = self.conn.proto
        while not self.messages:
            state = proto.streams.get(self.stream_id)
            if self.gone or state is None or not state.remote_open:
                return grpc.aio.EOF
            self.wakeup.clear()
            await self.wakeup.wait()
        message = self.messages.pop(0)
        self.conn.proto.consumed(self.stream_id, len(message))
        self.conn.sender.kick()
        return message

    async def write(self, message: bytes) -> None:
        proto = self.conn.proto
        while not proto.can_send(self.stream_id):
            if self.gone or self.stream_id not in proto.streams:
                raise RuntimeError("stream closed")
            self.wakeup.clear()
            await self.wakeup.wait()
        proto.send_data(self.stream_id, message)
        self.conn.sender.kick()


class _FakeSessions:
    """A Connect call (or lane connection) whose WebSocket streams each run ``serve``
    as a ServeWebSocket call would; its return is the stream's END."""

    def __init__(self, serve: Callable[[Any, Any], Awaitable[None]], context: Any) -> None:
        self.serve = serve
        self.context = context
        self.proto = Connection(opener=False)
        make_sender = getattr(context, "sender", None)
        if make_sender is None:
            self.sender = BatchSender(self.proto, context.write)
        else:
            self.sender = make_sender(self.proto)
        self.decode = getattr(context, "decode", decode_batch)
        self.streams: dict[int, _SessionContext] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        self.sender.start()
        try:
            while (data := await self.context.read()) is not grpc.aio.EOF:
                for event in self.proto.receive(self.decode(data)):
                    self.on(event)
                self.sender.kick()
        finally:
            for task in self.tasks:
                task.cancel()
            await self.sender.close()

    def on(self, event: Any) -> None:
        if isinstance(event, StreamOpened):
            assert event.websocket, "the fake takes WebSocket streams only"
            stream = _SessionContext(self, event.stream_id, event.payload)
            self.streams[event.stream_id] = stream
            task = asyncio.ensure_future(self._run(stream))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif isinstance(event, CreditAvailable):
            for stream in self.streams.values():
                stream.wakeup.set()
        elif isinstance(event, (DataReceived, StreamReset)):
            stream = self.streams.get(event.stream_id)
            if stream is None:
                return
            if isinstance(event, StreamReset):
                stream.gone = True
            elif len(event.payload):
                stream.messages.append(event.payload)
            stream.wakeup.set()

    async def _run(self, stream: _SessionContext) -> None:
        with contextlib.suppress(RuntimeError):
            await self.serve(None, stream)
        state = self.proto.streams.get(stream.stream_id)
        if state is not None and state.local_open:
            self.proto.send_data(stream.stream_id, b"", end=True)
            self.sender.kick()
        self.streams.pop(stream.stream_id, None)


@contextlib.asynccontextmanager
async def fake_plugin(session: FakeSession) -> AsyncIterator[str]:
    """A plugin running ``session`` for each WebSocket session, on the test's transport:
    ServeWebSocket only ("call"), or WebSocket streams on Connect ("mux") and on a
    lane too ("lane")."""

    async def serve(request_iterator, context):
        first = wire.parse(await context.read())
        assert first.WhichOneof("kind") == "init"
        await session(context)

    transport = gateway_fakes.TRANSPORT
    server = grpc.aio.server()
    with tempfile.TemporaryDirectory(prefix="chunkwire-ws-") as tmp:
        address = f"unix:{tmp}/fake.sock"
        lane = None
        if transport == "call":
            handler = grpc.stream_stream_rpc_method_handler(
                serve, request_deserializer=None, response_serializer=None
            )
            service, name = wire.SERVE_WEBSOCKET_METHOD.lstrip("/").split("/")
            methods = {name: handler}
        else:
            info = plugin_pb2.PluginInfo(
                name="fake", transports=["call", "mux"], mux_streams=["websocket"]
            )
            if transport == "lane":
                info.lane_socket = f"{tmp}/fake.sock.lane"
                info.transports.append("lane")
                lane = LaneListener(
                    info.lane_socket, lambda context: _FakeSessions(serve, context).run(), 1 << 21
                )

            async def describe(request: bytes, context: Any) -> bytes:
                return info.SerializeToString()

            async def connect(request_iterator: Any, context: Any) -> None:
                await _FakeSessions(serve, context).run()

            service, describe_name = DESCRIBE_METHOD.lstrip("/").split("/")
            methods = {
                describe_name: grpc.unary_unary_rpc_method_handler(
                    describe, request_deserializer=identity, response_serializer=identity
                ),
                CONNECT_METHOD.rsplit("/", 1)[1]: grpc.stream_stream_rpc_method_handler(
                    connect, request_deserializer=None, response_serializer=None
                ),
            }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, methods),))
        server.add_insecure_port(address)
        await server.start()
        if lane is not None:
            await lane.start()
        try:
            yield address
        finally:
            await server.stop(0)
            if lane is not None:
                await lane.close(0, lambda: False)


def data_frame(payload: bytes, final: bool) -> bytes:
    data = websocket_pb2.WebSocketData(payload=payload, final=final)
    return websocket_pb2.WebSocketFrame(data=data).SerializeToString()


async def through_fake(session: FakeSession, **client_options) -> list[dict]:
    async with fake_plugin(session) as address:
        gateway = new_gateway(address, max_message_size=1000)
        client = Client("/plugins/p/x", **client_options)
        await gateway(client.scope, client.receive, client.send)
        await gateway.aclose()
        return client.sent


def test_gateway_enforces_its_limit_under_a_server_with_a_larger_one():
    """A plugin that takes anything: the gateway's own check is what refuses."""
    got: list = []

    async def session(context):
        await context.write(wire.encode_accept(None))
        while (raw := await context.read()) is not grpc.aio.EOF:
            frame = wire.parse(raw)
            kind = frame.WhichOneof("kind")
            value = len(frame.data.payload) if kind == "data" else frame.close.code
            got.append((kind, value))

    async def main():
        async with fake_plugin(session) as address:
            gateway = new_gateway(address, max_message_size=100)
            client = Client("/plugins/p/x")
            task = asyncio.ensure_future(gateway(client.scope, client.receive, client.send))
            await client.wait_for("websocket.accept")
            client.push(text="a" * 100)  # at the limit
            client.push(data=b"b" * 101)  # one past it
            await task
            await gateway.aclose()
            return client.sent

    sent = run(main())
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]
    assert sent[1]["code"] == 1009
    assert got == [("data", 100), ("close", 1009)]


def test_plugin_message_past_the_limit_closes_1009():
    async def session(context):
        await context.write(wire.encode_accept(None))
        await context.write(data_frame(bytes(600), False))
        await context.write(data_frame(bytes(401), True))
        await asyncio.sleep(10)

    sent = run(through_fake(session))
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]
    assert sent[1]["code"] == 1009


def test_plugin_message_at_the_limit_passes():
    async def session(context):
        await context.write(wire.encode_accept(None))
        await context.write(data_frame(bytes(600), False))
        await context.write(data_frame(bytes(400), True))
        await context.write(wire.encode_close(1000))

    sent = run(through_fake(session))
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["bytes"] == bytes(1000)


def test_plugin_accepting_a_subprotocol_not_offered_is_502():
    async def session(context):
        await context.write(wire.encode_accept("mine"))

    sent = run(through_fake(session, subprotocols=["theirs"]))
    assert sent[0]["type"] == "websocket.http.response.start"
    assert sent[0]["status"] == 502


@pytest.mark.parametrize(
    "header", [("Sec-WebSocket-Accept", "x"), ("Bad Name", "x"), ("X-Ok", "a\r\nb")]
)
def test_plugin_accept_headers_are_validated(header):
    async def session(context):
        await context.write(wire.encode_accept(None, [header]))

    sent = run(through_fake(session))
    assert sent[0]["status"] == 502


def test_plugin_deny_with_invalid_status_is_502():
    async def session(context):
        await context.write(wire.encode_deny(200))

    sent = run(through_fake(session))
    assert sent[0]["status"] == 502


def test_plugin_closing_with_an_unsendable_code_closes_1011():
    async def session(context):
        await context.write(wire.encode_accept(None))
        await context.write(wire.encode_close(1006, "not for the wire"))

    sent = run(through_fake(session))
    assert sent[-1] == {"type": "websocket.close", "code": 1011, "reason": "not for the wire"}


def test_plugin_sending_data_before_accepting_is_502():
    async def session(context):
        await context.write(data_frame(b"early", True))

    assert run(through_fake(session))[0]["status"] == 502


def test_plugin_ending_without_a_close_is_1011():
    async def session(context):
        await context.write(wire.encode_accept(None))

    sent = run(through_fake(session))
    assert sent[-1]["type"] == "websocket.close"
    assert sent[-1]["code"] == 1011


def test_refusals_without_the_extension_are_closes():
    async def session(context):
        await context.write(wire.encode_deny(418))

    sent = run(through_fake(session, extension=False))
    assert sent == [{"type": "websocket.close", "code": 1008}]


# -- the plugin API, in process ------------------------------------------------------------


def test_send_after_close_raises_websocket_closed():
    errors: list = []
    plugin = Plugin("p")

    @plugin.websocket("/x")
    async def handler(ws):
        await ws.accept()
        await ws.close(4000, "done")
        try:
            await ws.send("late")
        except WebSocketClosed as exc:
            errors.append((exc.code, exc.reason))

    async def main():
        async with plugin_server(plugin) as address:
            gateway = new_gateway(address)
            client = Client("/plugins/p/x")
            await gateway(client.scope, client.receive, client.send)
            await gateway.aclose()
            return client.sent

    sent = run(main())
    assert sent[-1] == {"type": "websocket.close", "code": 4000, "reason": "done"}
    assert errors == [(4000, "done")]


def test_plugin_api_refuses_misuse():
    plugin = Plugin("p")
    errors: dict = {}

    @plugin.websocket("/x")
    async def handler(ws):
        for name, call in [
            ("send-before-accept", lambda: ws.send("x")),
            ("receive-before-accept", ws.receive),
            ("unoffered-subprotocol", lambda: ws.accept(subprotocol="nope")),
            ("bad-close-code", lambda: ws.close(1006)),
            ("bad-deny-status", lambda: ws.deny(200)),
        ]:
            with pytest.raises((RuntimeError, ValueError)) as info:
                await call()
            errors[name] = str(info.value)
        await ws.accept()
        with pytest.raises(RuntimeError):
            await ws.accept()

    async def main():
        async with plugin_server(plugin) as address:
            gateway = new_gateway(address)
            client = Client("/plugins/p/x")
            await gateway(client.scope, client.receive, client.send)
            await gateway.aclose()
            return client.sent

    sent = run(main())
    assert sent[0]["type"] == "websocket.accept"
    assert sent[-1]["code"] == 1000
    assert set(errors) == {
        "send-before-accept",
        "receive-before-accept",
        "unoffered-subprotocol",
        "bad-close-code",
        "bad-deny-status",
    }
    assert "not offered" in errors["unoffered-subprotocol"]


def test_request_init_matches_http():
    """The handshake's init is the HTTP request init: method GET, ws URL, no body."""
    seen: dict = {}
    plugin = Plugin("p")

    @plugin.websocket("/x")
    async def handler(ws):
        seen["init"] = ws.request.init
        await ws.deny(403)

    async def main():
        async with plugin_server(plugin) as address:
            gateway = new_gateway(address)
            client = Client("/plugins/p/x", headers=[(b"user-agent", b"t/1")])
            await gateway(client.scope, client.receive, client.send)
            await gateway.aclose()

    run(main())
    init: http_pb2.ServeHTTPRequestInit = seen["init"]
    assert init.method == "GET"
    assert init.url == "ws://gw.test/x"
    assert init.request_uri == "/x"
    assert init.content_length == 0
    assert init.plugin_context.user_agent == "t/1"
    assert init.remote_addr == "127.0.0.1:5000"


# -- which carrier a session takes ---------------------------------------------------------


@pytest.mark.parametrize("offers", [True, False], ids=["websocket-streams", "older-plugin"])
def test_session_is_a_stream_only_where_the_plugin_offers_it(transport, offers, caplog):
    """A plugin's Describe lists "websocket" in mux_streams: on mux and lane each session
    is a stream of the connection and no ServeWebSocket call reaches the plugin. A plugin
    that offers mux but not WebSocket streams (an older chunkwire) gets a ServeWebSocket
    call per session, whatever carries its HTTP requests."""
    seen: dict = {}

    async def main():
        with tempfile.TemporaryDirectory(prefix="chunkwire-ws-") as tmp:
            async with echo_plugin(seen).serving(f"unix:{tmp}/plugin.sock") as server:
                if not offers:
                    server.service.mux_streams.clear()
                gateway = Gateway({"p": server.address}, transport=transport)
                sessions = []
                for _ in range(2):  # the second session: no new question, no new log line
                    client = Client("/plugins/p/echo")
                    task = asyncio.ensure_future(
                        gateway(client.scope, client.receive, client.send)
                    )
                    await client.wait_for("websocket.accept")
                    client.push(text="one")
                    await client.wait_for("websocket.send")
                    sessions.append((client, task))
                during = (
                    server.websocket.servicer.calls,
                    server.mux_streams,
                    gateway.stats()["mux_streams"]["p"],
                )
                assert server.active_calls == 0  # sessions are no requests, on any transport
                for client, task in sessions:
                    client.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
                    await task
                await gateway.aclose()
                return during, gateway._counters

    caplog.set_level(logging.INFO, "chunkwire.gateway")
    (calls, plugin_streams, gateway_streams), counters = run(main())
    streams = offers and transport != "call"
    assert calls == (0 if streams else 2)
    assert plugin_streams == gateway_streams == (2 if streams else 0)
    assert counters[f"websockets_{transport if streams else 'call'}"] == 2
    assert seen["close"] == (1000, "")
    said = [r.getMessage() for r in caplog.records if "WebSocket sessions as" in r.getMessage()]
    if transport == "call":
        assert said == []  # nothing to decide: the call transport has no streams
    else:
        how = f"streams on the {transport} transport" if offers else "ServeWebSocket calls"
        assert said == [f"plugin 'p': WebSocket sessions as {how}"]


def test_a_session_runs_on_while_its_plugin_stops_and_new_ones_are_refused(transport):
    """The plugin stops with a grace period while a session is open: the session keeps
    working (on mux and lane: a stream the GOAWAY let finish), and once the plugin is
    gone a new session is refused with 503."""
    seen: dict = {}

    async def main():
        with tempfile.TemporaryDirectory(prefix="chunkwire-ws-") as tmp:
            server = await echo_plugin(seen).start(f"unix:{tmp}/plugin.sock")
            gateway = new_gateway(server.address)
            client = Client("/plugins/p/echo")
            task = asyncio.ensure_future(gateway(client.scope, client.receive, client.send))
            await client.wait_for("websocket.accept")
            stopping = asyncio.ensure_future(server.stop(2.0))
            while not server._stopped:
                await asyncio.sleep(0.01)
            client.push(text="still here")
            echoed = await client.wait_for("websocket.send")
            client.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
            await task
            await stopping
            late = Client("/plugins/p/echo")
            await gateway(late.scope, late.receive, late.send)
            await gateway.aclose()
            return echoed, late.sent

    echoed, late = run(main())
    assert echoed["text"] == "still here"
    assert seen["close"] == (1000, "")
    assert late[0]["status"] == 503
