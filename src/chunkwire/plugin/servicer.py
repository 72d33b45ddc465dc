"""The gRPC side of a plugin: one ServeHTTP bidi stream per HTTP request."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from .._core import FrameError, decode_request_frame
from .._proto import http_pb2
from .._wire import MATTERMOST_SERVE_HTTP_METHOD, SERVE_HTTP_METHOD
from ..errors import BodyTooLarge, ProtocolError
from .request import Request, RequestBody
from .response import Response

if TYPE_CHECKING:
    from .app import Plugin

log = logging.getLogger("chunkwire.plugin")

# grpc.aio reports a read on a cancelled call as EOF and injects the task's
# cancellation a moment later; a truncated stream waits this long for it.
_CANCEL_GRACE = 0.25


class _CallIO:
    """context.read/write with a gone peer turned into asyncio.CancelledError.

    Writes are awaited directly. When the client cancels while a write waits
    on flow control, grpc.aio leaks that batch's native op array (~270 bytes,
    grpc#43360). Shielding each write in its own task cut that to ~55 bytes
    but cost a task and a loop turn per frame (64 KiB downloads ran 35-60%
    slower), so writes stay direct.
    """

    __slots__ = ("_context",)

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context

    async def read(self) -> Any:
        try:
            message = await self._context.read()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise asyncio.CancelledError("ServeHTTP call ended") from exc
        if message is grpc.aio.EOF:
            # Only reached before body_complete: a cancel, or a truncated stream.
            await asyncio.sleep(_CANCEL_GRACE)
        return message

    async def write(self, message: bytes) -> None:
        try:
            await self._context.write(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A failed write means the call is over: for the handler, the
            # client is gone.
            raise asyncio.CancelledError("ServeHTTP call ended") from exc


def _cancel_requested() -> bool:
    # A handler may swallow CancelledError; the task still remembers the request.
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling and cancelling())


async def _simple(response: Response, status: int, text: str, headers: Any = ()) -> None:
    response.status = status
    response.headers.clear()
    response.headers.extend(headers)
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    body = text.encode()
    response.headers["Content-Length"] = str(len(body))
    await response.write(body)
    await response._finish()


class ServeHTTPServicer:
    """Runs the plugin's handler for each ServeHTTP call.

    Wire messages are raw bytes (identity serializers); the core codec reads
    and writes them, so no protobuf object is built per body chunk.
    """

    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin
        self.active = 0

    async def serve_http(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        self.active += 1
        try:
            await self._serve(context)
        finally:
            self.active -= 1

    async def _serve(self, context: grpc.aio.ServicerContext) -> None:
        io = _CallIO(context)
        first = await io.read()
        if first is grpc.aio.EOF:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty ServeHTTP stream")
        try:
            frame = decode_request_frame(first)
            if frame.init is None:
                raise ProtocolError("first ServeHTTP message carries no init")
            init = http_pb2.ServeHTTPRequestInit.FromString(frame.init)
        except (FrameError, DecodeError, ProtocolError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad request init: {exc}")
        content_length = init.content_length if init.content_length >= 0 else None
        body = RequestBody(frame.body, frame.complete, io.read, grpc.aio.EOF, content_length)
        request = Request(init, body)
        response = Response(io.write, self.plugin.chunk_size)

        handler, params, allowed = self.plugin.match(request.method, request.path)
        if handler is None:
            if allowed:
                await _simple(
                    response, 405, "Method Not Allowed\n", [("Allow", ", ".join(allowed))]
                )
            else:
                await _simple(response, 404, "Not Found\n")
            return
        request.path_params = params

        try:
            await handler(request, response)
            if _cancel_requested():
                # Finishing would send a status on a cancelled call (grpc#43360).
                raise asyncio.CancelledError
            if not response.finished:
                await response._finish()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(context, request, response, exc)

    async def _failed(
        self,
        context: grpc.aio.ServicerContext,
        request: Request,
        response: Response,
        exc: Exception,
    ) -> None:
        if _cancel_requested():
            raise asyncio.CancelledError from exc
        if response.headers_sent:
            log.error(
                "handler for %s %s failed after the response started",
                request.method,
                request.path,
                exc_info=exc,
            )
            await context.abort(grpc.StatusCode.INTERNAL, f"handler failed: {type(exc).__name__}")
        response._discard()
        if isinstance(exc, BodyTooLarge):
            await _simple(response, 413, "Payload Too Large\n")
        elif isinstance(exc, ProtocolError):
            await _simple(response, 400, f"Bad Request: {exc}\n")
        else:
            log.error("handler for %s %s failed", request.method, request.path, exc_info=exc)
            await _simple(response, 500, "Internal Server Error\n")


def method_handler(plugin: Plugin) -> tuple[ServeHTTPServicer, grpc.RpcMethodHandler]:
    servicer = ServeHTTPServicer(plugin)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.serve_http, request_deserializer=None, response_serializer=None
    )
    return servicer, handler


class ServeHTTPGenericHandler(grpc.GenericRpcHandler):
    """Answers SERVE_HTTP_METHOD (and the Mattermost name when asked)."""

    def __init__(self, plugin: Plugin) -> None:
        self.servicer, self._handler = method_handler(plugin)
        self.methods = {SERVE_HTTP_METHOD}
        if plugin.mattermost_compat:
            self.methods.add(MATTERMOST_SERVE_HTTP_METHOD)

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        if handler_call_details.method in self.methods:
            return self._handler
        return None
