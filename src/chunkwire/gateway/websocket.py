"""WebSocket sessions: the ASGI ``websocket`` scope bridged to one ServeWebSocket call,
or to one stream of the plugin's multiplexed connection (transport/session.py's
SessionCall, the same call interface).

The handshake waits for the plugin's answer: accept (subprotocol, extra
headers) completes it; deny or a close before accepting refuses it with an
HTTP response (through the ``websocket.http.response`` ASGI extension when
the server has it; otherwise a close before accept, which servers answer
with 403). Then two coroutines share the call: ``_pump`` moves client
messages into data frames (awaiting each gRPC write, so a plugin that stops
receiving stops the gateway reading the client), ``_relay`` turns the
plugin's frames back into messages and sends them (the ASGI send waits
while the client is slow, so the gateway stops reading the plugin).

As for HTTP, everything that ends a session early goes through
``call.cancel()`` plus a recorded reason, never through cancelling a task
inside a gRPC operation (grpc/grpc#43360).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from .. import _websocket as wire
from .._proto import http_pb2
from .forward import unreachable
from .response_head import valid_header_name, valid_header_value
from .types import Message, Receive, Scope, Send

if TYPE_CHECKING:
    from .app import Gateway

log = logging.getLogger("chunkwire.gateway")

EOF = grpc.aio.EOF

# After either side closed, how long the other may take to end the call.
_CLOSE_GRACE = 5.0

# The handshake's own headers are the server's to write.
_RESERVED = frozenset(
    {
        b"connection",
        b"upgrade",
        b"content-length",
        b"transfer-encoding",
        b"sec-websocket-accept",
        b"sec-websocket-protocol",
        b"sec-websocket-extensions",
        b"sec-websocket-version",
    }
)


class BadAnswer(Exception):
    """The plugin's answer to the handshake breaks the rules."""


def _headers(headers: Any, reserved: frozenset[bytes] = _RESERVED) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for header in headers:
        if not valid_header_name(header.key):
            raise BadAnswer(f"invalid header name {header.key!r}")
        name = header.key.lower().encode("ascii")
        if name in reserved:
            raise BadAnswer(f"header {header.key!r} is set by the gateway")
        for value in header.values:
            if not valid_header_value(value):
                raise BadAnswer(f"invalid value in header {header.key!r}")
            out.append((name, value))
    return out


async def serve_websocket(gateway: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    """Route one ``websocket`` scope to its plugin (``gateway.__call__`` dispatches here)."""
    message = await receive()
    if message.get("type") != "websocket.connect":
        return
    http_response = "websocket.http.response" in scope.get("extensions", {})
    refuse = _Refusal(send, http_response)
    from .app import Refused

    try:
        admitted = await gateway.admit(scope)
    except Refused as refused:
        await refuse(refused.status, refused.text)
        return
    plugin_id, upstream = admitted.plugin_id, admitted.upstream
    if upstream.mattermost:
        # Mattermost hosts have no WebSocket method on their plugins.
        await refuse(404, "Not Found")
        return
    # The same request init as HTTP (identity headers stripped, PluginContext
    # filled); a handshake is a GET without a body.
    raw, _ = gateway._request_init(dict(scope, method="GET"), admitted)
    request = http_pb2.ServeHTTPRequest.FromString(raw).init
    request.content_length = 0
    init = wire.encode_init(request, scope.get("subprotocols") or (), gateway.max_message_size)
    try:
        call, transport = await upstream.open_websocket()
    except Exception as error:  # a bad target or credentials
        log.warning("plugin %r: cannot open a call: %s", plugin_id, error)
        await refuse(503, "Service Unavailable")
        return
    stats = gateway._counters
    stats["websockets"] = stats.get("websockets", 0) + 1
    key = f"websockets_{transport}"  # sessions per transport: _call, _mux, _lane
    stats[key] = stats.get(key, 0) + 1
    stats["websockets_active"] = stats.get("websockets_active", 0) + 1
    try:
        await WebSocketBridge(
            call,
            receive,
            send,
            init,
            refuse=refuse,
            offered=list(scope.get("subprotocols") or ()),
            plugin_id=plugin_id,
            request_id=request.plugin_context.request_id,
            chunk_size=gateway.chunk_size,
            max_message_size=gateway.max_message_size,
            handshake_timeout=gateway.response_timeout,
            stats=stats,
        ).run()
    finally:
        stats["websockets_active"] -= 1


class _Refusal:
    """Answers a handshake with an HTTP status instead of the upgrade."""

    def __init__(self, send: Send, http_response: bool) -> None:
        self._send = send
        self._http_response = http_response

    async def __call__(
        self,
        status: int,
        text: str = "",
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes | None = None,
    ) -> None:
        if body is None:
            body = f"{text}\n".encode() if text else b""
        if headers is None:
            headers = [(b"content-type", b"text/plain; charset=utf-8")]
        try:
            if self._http_response:
                await self._send(
                    {"type": "websocket.http.response.start", "status": status, "headers": headers}
                )
                await self._send({"type": "websocket.http.response.body", "body": body})
            else:
                # Without the extension the server answers a close before accept with 403.
                await self._send({"type": "websocket.close", "code": wire.POLICY_VIOLATION})
        except (OSError, RuntimeError):
            pass  # the client is gone


class WebSocketBridge:
    """One WebSocket session: ``run()`` returns once both sides are done with it."""

    def __init__(
        self,
        call: grpc.aio.StreamStreamCall,
        receive: Receive,
        send: Send,
        init: bytes,
        *,
        refuse: _Refusal,
        offered: list[str],
        plugin_id: str,
        request_id: str,
        chunk_size: int,
        max_message_size: int,
        handshake_timeout: float | None,
        stats: dict[str, int],
    ) -> None:
        self._call = call
        self._receive = receive
        self._send = send
        self._init = init
        self._refuse = refuse
        self._offered = offered
        self._plugin_id = plugin_id
        self._request_id = request_id
        self._chunk_size = chunk_size
        self._limit = max_message_size
        self._handshake_timeout = handshake_timeout
        self._stats = stats
        self._reason: str | None = None
        self._client_open = False  # accepted and not closed yet
        self._plugin_closed = False  # the plugin sent its close
        self._write_lock = asyncio.Lock()
        self._writing = False
        self._recv_task: asyncio.Future[Message] | None = None
        self._end_timer: asyncio.TimerHandle | None = None

    def _where(self) -> str:
        return f"plugin {self._plugin_id!r} WebSocket {self._request_id}"

    def _abort(self, reason: str) -> None:
        if self._reason is None:
            self._reason = reason
            self._stats[f"ws_{reason}"] = self._stats.get(f"ws_{reason}", 0) + 1
        self._call.cancel()

    def _arm_end_timer(self) -> None:
        if self._end_timer is None:
            loop = asyncio.get_running_loop()
            self._end_timer = loop.call_later(_CLOSE_GRACE, self._abort, "close_timeout")

    async def run(self) -> None:
        try:
            if await self._handshake():
                await self._session()
        finally:
            if self._end_timer is not None:
                self._end_timer.cancel()
            if not self._call.done():
                self._call.cancel()

    # -- handshake --------------------------------------------------------------

    async def _handshake(self) -> bool:
        call = self._call
        timer = None
        if self._handshake_timeout is not None:
            timer = asyncio.get_running_loop().call_later(
                self._handshake_timeout, self._abort, "timeout"
            )
        try:
            try:
                await call.write(self._init)
                raw = await call.read()
            except (asyncio.CancelledError, grpc.aio.AioRpcError, asyncio.InvalidStateError) as err:
                if self._reason == "timeout":
                    log.warning("%s: no answer to the handshake in time", self._where())
                    await self._refuse(504, "Gateway Timeout")
                    return False
                if isinstance(err, asyncio.CancelledError):
                    raise
                await self._call_failed()
                return False
        finally:
            if timer is not None:
                timer.cancel()
        if raw is EOF:
            await self._bad_gateway("the call ended before the handshake was answered")
            return False
        try:
            frame = wire.parse(raw)
            return await self._answer(frame)
        except BadAnswer as error:
            await self._bad_gateway(str(error))
            return False
        except Exception as error:  # protobuf's DecodeError
            await self._bad_gateway(f"malformed handshake answer: {error}")
            return False

    async def _call_failed(self) -> None:
        try:
            await self._call.read()
        except grpc.aio.AioRpcError as error:
            if unreachable(error):
                self._stats["ws_unreachable"] = self._stats.get("ws_unreachable", 0) + 1
                log.warning("%s: plugin not reachable", self._where())
                await self._refuse(503, "Service Unavailable")
                return
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                await self._refuse(404, "Not Found")
                return
            await self._bad_gateway(f"call failed: {error.code().name} {error.details()}")
            return
        except (asyncio.CancelledError, asyncio.InvalidStateError):
            pass
        await self._bad_gateway("the call ended before the handshake was answered")

    async def _bad_gateway(self, detail: str) -> None:
        self._stats["ws_bad_gateway"] = self._stats.get("ws_bad_gateway", 0) + 1
        log.warning("%s: %s", self._where(), detail)
        self._call.cancel()
        await self._refuse(502, "Bad Gateway")

    async def _answer(self, frame: Any) -> bool:
        kind = frame.WhichOneof("kind")
        if kind == "accept":
            accept = frame.accept
            subprotocol = accept.subprotocol or None
            if subprotocol is not None and subprotocol not in self._offered:
                raise BadAnswer(f"plugin accepted subprotocol {subprotocol!r}, not offered")
            message: dict[str, Any] = {
                "type": "websocket.accept",
                "subprotocol": subprotocol,
                "headers": _headers(accept.headers),
            }
            try:
                await self._send(message)
            except (OSError, RuntimeError):
                self._call.cancel()
                return False
            self._client_open = True
            return True
        if kind == "deny":
            deny = frame.deny
            if not 300 <= deny.status_code <= 599:
                raise BadAnswer(f"plugin denied with invalid status {deny.status_code}")
            headers = _headers(deny.headers, _RESERVED | {b"content-length"})
            await self._refuse(deny.status_code, headers=headers, body=deny.body)
            await self._finish()
            return False
        if kind == "close":
            await self._refuse(403, "Forbidden")
            await self._finish()
            return False
        raise BadAnswer(f"plugin answered the handshake with {kind or 'an empty frame'}")

    async def _finish(self) -> None:
        # Collect the plugin's status so the call is freed now.
        guard = asyncio.get_running_loop().call_later(_CLOSE_GRACE, self._call.cancel)
        try:
            with contextlib.suppress(asyncio.InvalidStateError, grpc.aio.AioRpcError):
                await self._call.done_writing()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                while await self._call.read() is not EOF:
                    pass
        finally:
            guard.cancel()

    # -- session ----------------------------------------------------------------

    async def _session(self) -> None:
        loop = asyncio.get_running_loop()
        pump = loop.create_task(self._pump())
        try:
            await self._relay()
        finally:
            if not self._call.done():
                self._call.cancel()
            recv = self._recv_task
            if recv is not None and not recv.done():
                # Waiting on the client only; no gRPC operation is interrupted.
                recv.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump

    async def _close_client(self, code: int, reason: str) -> None:
        if not self._client_open:
            return
        self._client_open = False
        with contextlib.suppress(OSError, RuntimeError):
            await self._send({"type": "websocket.close", "code": code, "reason": reason})

    async def _relay(self) -> None:
        call = self._call
        assembler = wire.Assembler(self._limit)
        while True:
            try:
                raw = await call.read()
            except (asyncio.CancelledError, asyncio.InvalidStateError):
                if self._reason is None:
                    raise
                await self._close_client(wire.INTERNAL_ERROR, "session ended by the gateway")
                return
            except grpc.aio.AioRpcError as error:
                if self._reason is None and not self._plugin_closed:
                    self._stats["ws_failed"] = self._stats.get("ws_failed", 0) + 1
                    log.warning(
                        "%s: plugin failed mid-session: %s %s",
                        self._where(),
                        error.code().name,
                        error.details(),
                    )
                await self._close_client(wire.INTERNAL_ERROR, "plugin failed")
                return
            if raw is EOF:
                if self._client_open:
                    log.warning("%s: plugin ended the session without a close", self._where())
                    await self._close_client(wire.INTERNAL_ERROR, "plugin ended the session")
                return
            try:
                frame = wire.parse(raw)
            except Exception as error:  # protobuf's DecodeError
                await self._plugin_broke(f"malformed frame: {error}")
                return
            kind = frame.WhichOneof("kind")
            if kind == "data" and not self._plugin_closed:
                try:
                    message = assembler.add(frame.data)
                except wire.MessageTooBig as error:
                    await self._plugin_broke(str(error), wire.MESSAGE_TOO_BIG)
                    return
                except wire.BadFrame as error:
                    await self._plugin_broke(str(error))
                    return
                if message is not None and self._client_open:
                    await self._to_client(message)
            elif kind == "close" and not self._plugin_closed:
                self._plugin_closed = True
                code = frame.close.code
                if not wire.sendable_close_code(code):
                    log.warning("%s: plugin closed with invalid code %d", self._where(), code)
                    code = wire.INTERNAL_ERROR
                await self._close_client(code, wire.clip_reason(frame.close.reason))
                self._arm_end_timer()
            else:
                await self._plugin_broke(f"unexpected {kind or 'empty'} frame mid-session")
                return

    async def _to_client(self, message: str | bytes) -> None:
        key = "text" if isinstance(message, str) else "bytes"
        try:
            await self._send({"type": "websocket.send", key: message})
        except (OSError, RuntimeError):
            # The client is gone. The pump hears of it from receive() and
            # tells the plugin, unless it is stuck writing to a plugin that
            # does not read: then the call ends after the grace period.
            self._client_open = False
            self._arm_end_timer()

    async def _plugin_broke(self, detail: str, code: int = wire.INTERNAL_ERROR) -> None:
        self._stats["ws_bad_plugin"] = self._stats.get("ws_bad_plugin", 0) + 1
        log.warning("%s: %s", self._where(), detail)
        await self._close_client(code, "message too big" if code == wire.MESSAGE_TOO_BIG else "")
        self._abort("bad_plugin")

    # -- client to plugin -------------------------------------------------------

    async def _write(self, frame: bytes) -> bool:
        if self._reason is not None or self._call.done():
            return False
        async with self._write_lock:
            self._writing = True
            try:
                await self._call.write(frame)
            except (asyncio.CancelledError, asyncio.InvalidStateError, grpc.aio.AioRpcError):
                if self._call.done() or self._reason is not None:
                    return False
                raise
            finally:
                self._writing = False
        return True

    def _next_message(self) -> asyncio.Future[Message]:
        task = asyncio.ensure_future(self._receive())
        task.add_done_callback(self._on_received)
        self._recv_task = task
        return task

    def _on_received(self, task: asyncio.Future[Message]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        if task.result().get("type") == "websocket.disconnect" and self._writing:
            # The client left while the plugin is not reading: its close
            # cannot get through; end the call if the plugin stays stuck.
            self._client_open = False
            self._arm_end_timer()

    async def _pump(self) -> None:
        fragmenter = wire.Fragmenter(self._chunk_size)
        limit = self._limit
        pending = self._next_message()
        while True:
            message = await pending
            kind = message.get("type")
            if kind == "websocket.receive":
                pending = self._next_message()  # notices a disconnect during slow writes
                text = message.get("text")
                payload: Any = text.encode() if text is not None else message.get("bytes") or b""
                if limit and len(payload) > limit:
                    reason = f"message of {len(payload)} bytes exceeds {limit}"
                    await self._close_client(wire.MESSAGE_TOO_BIG, "message too big")
                    await self._client_gone(wire.MESSAGE_TOO_BIG, reason)
                    return
                for frame in fragmenter.frames(payload, text is not None):
                    if not await self._write(frame):
                        return
            elif kind == "websocket.disconnect":
                self._client_open = False
                code = message.get("code") or wire.NO_STATUS
                await self._client_gone(code, message.get("reason") or "")
                return
            else:
                return

    async def _client_gone(self, code: int, reason: str) -> None:
        """Tell the plugin how the client left, then end the request stream."""
        self._arm_end_timer()
        if not self._plugin_closed:
            await self._write(wire.encode_close(code, reason))
        if self._reason is None and not self._call.done():
            async with self._write_lock:
                with contextlib.suppress(asyncio.InvalidStateError, grpc.aio.AioRpcError):
                    await self._call.done_writing()
