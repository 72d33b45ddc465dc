"""What every plugin servicer does with a request, whatever carries it.

The call servicer (one ServeHTTP call per request), the mux servicer (one
stream of a Connect call) and the WebSocket servicer share these pieces:
reading a call's first message, the plugin's limits on a request init,
routing (the 400, 404 and 405 answers), and what a failed handler's client
gets. Each servicer only says how its transport ends a stream.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import grpc

from .._proto import http_pb2
from ..errors import BodyTooLarge, ClientDisconnected, ProtocolError, ResponseAborted
from .request import Request
from .response import Response

if TYPE_CHECKING:
    from .app import Plugin

log = logging.getLogger("chunkwire.plugin")


class CallIO:
    """context.read/write; a failed call turns into ClientDisconnected.

    Writes are awaited directly. When the client cancels while a write waits
    on flow control, grpc.aio leaks that batch's native op array (~270 bytes,
    grpc#43360). Shielding each write in its own task cut that to ~55 bytes
    but cost a task and a loop turn per frame (64 KiB downloads ran 35-60%
    slower), so writes stay direct. After one failure no further operation
    reaches gRPC (each failed batch leaks too).
    """

    __slots__ = ("_context", "gone")

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context
        self.gone = False

    async def read(self) -> Any:
        if self.gone:
            raise ClientDisconnected("the ServeHTTP call ended")
        try:
            return await self._context.read()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.gone = True
            raise ClientDisconnected("the ServeHTTP call ended") from exc

    async def write(self, message: bytes) -> None:
        if self.gone:
            raise ClientDisconnected("the ServeHTTP call ended")
        try:
            await self._context.write(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A failed write means the call is over: for the handler, the
            # client is gone.
            self.gone = True
            raise ClientDisconnected("the client went away; the response cannot be sent") from exc


async def first_message(context: grpc.aio.ServicerContext, rpc: str) -> tuple[CallIO, Any]:
    """The call's reader/writer and its first message; an empty call is aborted.

    A call that fails before its first message was cancelled by the client:
    the RPC task is cancelled too (a cancelled call takes no status).
    """
    io = CallIO(context)
    try:
        first = await io.read()
    except ClientDisconnected:
        raise asyncio.CancelledError from None
    if first is grpc.aio.EOF:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"empty {rpc} stream")
    return io, first


class CallServicer:
    """A servicer of one RPC per request or session; ``active`` counts those running."""

    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin
        self.active = 0

    async def serve(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        self.active += 1
        try:
            await self._serve(context)
        finally:
            self.active -= 1

    async def _serve(self, context: grpc.aio.ServicerContext) -> None:
        raise NotImplementedError


def checked_init(plugin: Plugin, frame: Any) -> http_pb2.ServeHTTPRequestInit:
    """The request init of a first frame, within the plugin's limits."""
    if frame.init is None:
        raise ProtocolError("first ServeHTTP message carries no init")
    if len(frame.init) > plugin.max_init_size:
        raise ProtocolError(
            f"init of {len(frame.init)} bytes is larger than max_init_size {plugin.max_init_size}"
        )
    if frame.body.nbytes > plugin.max_chunk_size:
        raise ProtocolError(
            f"body chunk of {frame.body.nbytes} bytes is larger than "
            f"max_chunk_size {plugin.max_chunk_size}"
        )
    init = http_pb2.ServeHTTPRequestInit.FromString(frame.init)
    # Each value takes at least two bytes (tag, length): a small init
    # cannot hold too many, and counting them is skipped.
    if len(frame.init) // 2 <= plugin.max_header_count:
        return init
    count = sum(len(header.values) for header in init.headers)
    if count > plugin.max_header_count:
        raise ProtocolError(
            f"{count} header values, more than max_header_count {plugin.max_header_count}"
        )
    return init


def expects_continue(init: http_pb2.ServeHTTPRequestInit) -> bool:
    for header in init.headers:
        if header.key.lower() == "expect":
            return any(v.strip().lower() == b"100-continue" for v in header.values)
    return False


async def simple(response: Response, status: int, text: str, headers: Any = ()) -> None:
    response.status = status
    response.headers.clear()
    response.headers.extend(headers)
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    body = text.encode()
    response.headers["Content-Length"] = str(len(body))
    await response.end(body)


async def route(plugin: Plugin, request: Request, response: Response) -> Any:
    """The request's handler (``path_params`` set), or None once 400/404/405 was answered."""
    if request._path_error is not None:
        await simple(response, 400, f"Bad Request: {request._path_error}\n")
        return None
    handler, params, allowed = plugin.match(request.method, request.path)
    if handler is None:
        if allowed:
            await simple(response, 405, "Method Not Allowed\n", [("Allow", ", ".join(allowed))])
        else:
            await simple(response, 404, "Not Found\n")
        return None
    request.path_params = params
    return handler


def matched(plugin: Plugin, request: Request) -> Any:
    """The request's handler (``path_params`` set), or None: then ``route`` answers.

    The common case without awaiting ``route``: it only answers misses.
    """
    if request._path_error is None:
        handler, params, _ = plugin.match(request.method, request.path)
        if handler is not None:
            request.path_params = params
            return handler
    return None


async def run_handler(
    plugin: Plugin, request: Request, response: Response
) -> tuple[bool, Exception | None]:
    """Route the request and run its handler: (whether one ran, what it raised)."""
    handler = matched(plugin, request)
    if handler is None:
        handler = await route(plugin, request, response)
        if handler is None:
            return False, None
    try:
        await handler(request, response)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return True, exc
    return True, None


def aborted_reason(response: Response) -> str:
    """Why an aborted response ended, for the stream's status or reset."""
    error = response._aborted
    cause = error.__cause__ if error is not None else None
    detail = f"{type(cause).__name__}: {cause}" if cause is not None else "by the handler"
    return f"response aborted {detail}"[:200]


def failed_mid_response(request: Request, response: Response, exc: Exception) -> str:
    """A handler failed after its response started: logged; the reason the stream fails with."""
    log.error(
        "handler for %s %s failed after the response started",
        request.method,
        request.path,
        exc_info=exc,
    )
    response._resolve(ResponseAborted(f"handler failed: {exc!r}"))
    return f"handler failed: {type(exc).__name__}"


async def answer_failure(request: Request, response: Response, exc: Exception) -> None:
    """A handler failed before its response started: 413, 400 or 500 (logged) instead."""
    response._discard()
    if isinstance(exc, BodyTooLarge):
        await simple(response, 413, "Payload Too Large\n")
    elif isinstance(exc, ProtocolError):
        await simple(response, 400, f"Bad Request: {exc}\n")
    else:
        log.error("handler for %s %s failed", request.method, request.path, exc_info=exc)
        await simple(response, 500, "Internal Server Error\n")


def retrieve(task: asyncio.Task[Any]) -> None:
    """Done callback: a task's outcome is taken, so nothing logs it as unretrieved."""
    if not task.cancelled():
        task.exception()
