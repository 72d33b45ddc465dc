"""The plugin side of WebSocket routes: a session's handler, run for a
ServeWebSocket call (here) or for a stream of a multiplexed connection
(plugin/websocket_stream.py), with the same rules."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import grpc

from .. import _websocket as wire
from .._proto import websocket_pb2
from ..errors import ProtocolError, WebSocketClosed
from .handling import CallServicer, first_message, retrieve
from .request import Request, RequestBody
from .websocket import ReadMessage, WebSocket, WriteMessage

if TYPE_CHECKING:
    from .app import Plugin

log = logging.getLogger("chunkwire.plugin")

async def _no_body() -> Any:
    raise AssertionError("a WebSocket handshake has no body to read")


def session_init(first: Any) -> websocket_pb2.WebSocketInit:
    """The init of a session's first frame; ProtocolError when it is not one."""
    try:
        frame = wire.parse(first)
    except Exception as exc:  # protobuf's DecodeError
        raise ProtocolError(f"bad WebSocket init: {exc}") from None
    if frame.WhichOneof("kind") != "init":
        raise ProtocolError("first WebSocket message carries no init")
    return frame.init


async def run_session(
    plugin: Plugin,
    init: websocket_pb2.WebSocketInit,
    read: ReadMessage,
    write: WriteMessage,
    eof: object,
) -> None:
    """Run the plugin's WebSocket handler for one session, whatever carries it.

    The handler's outcome becomes the session's end: returning without
    closing closes with 1000, raising closes with 1011 (or refuses the
    handshake with 500 before ``accept``), returning without answering the
    handshake refuses it with 403.
    """
    body = RequestBody(memoryview(b""), True, _no_body, eof, 0)
    request = Request(init.request, body)
    handler, params, limit = plugin.match_websocket(request.path)
    if handler is None:
        await write(wire.encode_deny(404, [("Content-Type", "text/plain")], b"Not Found\n"))
        return
    request.path_params = params
    gateway_limit = init.max_message_size or wire.DEFAULT_MAX_MESSAGE_SIZE
    ws = WebSocket(
        request,
        list(init.subprotocols),
        read,
        write,
        eof,
        chunk_size=plugin.chunk_size,
        max_message_size=min(gateway_limit, limit) if limit else gateway_limit,
    )
    try:
        await _run(handler, ws)
    finally:
        reader = ws._reader
        if reader is not None and not reader.done():
            # Ending the call (or stream) ends the reader's read; it is never
            # cancelled inside a gRPC operation (grpc#43360).
            reader.add_done_callback(retrieve)


async def _run(handler: Any, ws: WebSocket) -> None:
    path = ws.request.path
    try:
        await handler(ws)
    except asyncio.CancelledError:
        raise
    except WebSocketClosed:
        return  # the session ended under the handler: nothing left to say
    except Exception as exc:
        if ws.closed:
            log.warning("WebSocket handler for %s failed after the close: %r", path, exc)
            return
        log.error("WebSocket handler for %s failed", path, exc_info=exc)
        await _end(ws, wire.INTERNAL_ERROR, "handler failed", 500)
        return
    await _end(ws, wire.NORMAL, "", 403)


async def _end(ws: WebSocket, code: int, reason: str, refuse_status: int) -> None:
    try:
        if not ws.answered:
            text = "Internal Server Error\n" if refuse_status == 500 else "Forbidden\n"
            await ws.deny(refuse_status, [("Content-Type", "text/plain")], text)
        elif not ws.closed:
            await ws.close(code, reason)
    except WebSocketClosed:
        pass


class ServeWebSocketServicer(CallServicer):
    """Runs the plugin's WebSocket handler for each ServeWebSocket call."""

    def __init__(self, plugin: Plugin) -> None:
        super().__init__(plugin)
        self.calls = 0  # ServeWebSocket calls served (sessions on this transport)

    async def _serve(self, context: grpc.aio.ServicerContext) -> None:
        self.calls += 1
        io, first = await first_message(context, "ServeWebSocket")
        try:
            init = session_init(first)
        except ProtocolError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        await run_session(self.plugin, init, io.read, io.write, grpc.aio.EOF)


class ServeWebSocketGenericHandler(grpc.GenericRpcHandler):
    """Answers SERVE_WEBSOCKET_METHOD with the plugin's WebSocket routes."""

    def __init__(self, plugin: Plugin) -> None:
        self.servicer = ServeWebSocketServicer(plugin)
        self._handler = grpc.stream_stream_rpc_method_handler(
            self.servicer.serve, request_deserializer=None, response_serializer=None
        )

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        if handler_call_details.method == wire.SERVE_WEBSOCKET_METHOD:
            return self._handler
        return None
