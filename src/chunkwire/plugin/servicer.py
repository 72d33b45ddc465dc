"""The gRPC side of a plugin: one ServeHTTP bidi stream per HTTP request."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from .._core import FrameError, decode_request_frame
from .._proto import http_pb2
from .._wire import MATTERMOST_SERVE_HTTP_METHOD, SERVE_HTTP_METHOD
from ..errors import BodyTooLarge, ClientDisconnected, ProtocolError, ResponseAborted
from .request import Request, RequestBody
from .response import Response

if TYPE_CHECKING:
    from .app import Plugin

log = logging.getLogger("chunkwire.plugin")

# grpc.aio reports a read on a cancelled call as EOF and injects the task's
# cancellation a moment later; a truncated request stream waits this long for
# it before answering (a cancelled call must not get a status, grpc#43360).
_CANCEL_GRACE = 0.25
# A cancelled call's read ends as EOF too, like the gateway's half-close that
# acknowledges delivery; the cancellation of the RPC task follows within a
# loop turn or two, nearly always, and within 8 ms on a loaded 2-core box
# (measured). When ``finished`` is awaited, the EOF counts as delivery once
# this much time passed without it.
_DELIVERY_TURNS = 2
_DELIVERY_GRACE = 0.05
CONTINUE_METADATA = (("chunkwire-continue", "1"),)


class _CallIO:
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
    await response.end(body)


class _Delivery:
    """Waits for the request stream's EOF after body_complete: the gateway's
    acknowledgement that the client has the last byte (``response.finished``).

    When ``finished`` is awaited, the read runs in its own task so that a
    timeout never cancels a task inside a gRPC read (grpc#43360): on timeout
    the servicer just ends the RPC, which completes the read. Otherwise the
    servicer reads inline (no task per request); a timeout then cancels that
    read, which costs the leak once, on a rare path.
    """

    __slots__ = ("_inline", "_io", "_response", "_rpc_task", "_task", "_timeout", "_timer")

    def __init__(self, io: _CallIO, response: Response, timeout: float) -> None:
        self._io = io
        self._rpc_task = asyncio.current_task()
        self._response = response
        self._timeout = timeout
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._inline = False
        response._delivery_hook = self.start

    def start(self) -> None:
        if self._task is not None or self._inline:
            return
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._drain())
        self._task.add_done_callback(_retrieve)
        self._timer = loop.call_later(self._timeout, self._timed_out)
        self._response._finished_future().add_done_callback(self._settled)

    def _timed_out(self) -> None:
        self._response._resolve(
            TimeoutError(f"no delivery acknowledgement within {self._timeout:g} s")
        )

    def _settled(self, _: object) -> None:
        if self._timer is not None:
            self._timer.cancel()

    async def _drain(self) -> None:
        io = self._io
        response = self._response
        try:
            while await io.read() is not grpc.aio.EOF:
                pass  # request frames the handler left unread
        except ClientDisconnected as exc:
            response._resolve(ClientDisconnected(*exc.args))
            return
        # A cancelled call reads as EOF too (see _DELIVERY_GRACE): a
        # cancellation of the RPC task resolves ``finished`` meanwhile.
        for _ in range(_DELIVERY_TURNS):
            await asyncio.sleep(0)
        if response._wanted and not self._gone():
            # Only worth the wait when someone awaits ``finished``.
            await asyncio.wait((response._finished_future(),), timeout=_DELIVERY_GRACE)
        if self._gone():
            response._resolve(ClientDisconnected("the client went away"))
        else:
            response._resolve()

    def _gone(self) -> bool:
        rpc_task = self._rpc_task
        return rpc_task is not None and (rpc_task.cancelling() > 0 or rpc_task.done())

    async def _wait_inline(self) -> BaseException | None:
        self._inline = True
        task = asyncio.current_task()
        assert task is not None
        fired = False

        def timed_out() -> None:
            nonlocal fired
            fired = True
            task.cancel()

        timer = asyncio.get_running_loop().call_later(self._timeout, timed_out)
        future = self._response._finished_future()
        try:
            await self._drain()
        except asyncio.CancelledError:
            if fired and task.cancelling() == 1:
                task.uncancel()
                self._timed_out()
            else:
                self._response._resolve(ClientDisconnected("the client went away"))
                raise
        finally:
            timer.cancel()
        return future.exception()

    async def wait(self) -> BaseException | None:
        """Resolve ``finished``; the error it settled with, if any."""
        if self._task is None and not self._response._wanted:
            return await self._wait_inline()
        self.start()
        future = self._response._finished_future()
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            if not future.done():
                self._response._resolve(ClientDisconnected("the client went away"))
                raise
            if _cancel_requested():
                raise
        except Exception:
            pass
        return future.exception()


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


class ServeHTTPServicer:
    """Runs the plugin's handler for each ServeHTTP call.

    Wire messages are raw bytes (identity serializers); the core codec reads
    and writes them, so no protobuf object is built per body chunk. After
    body_complete the servicer stays in the RPC until the request stream's
    EOF (delivered) or cancellation (client gone), bounded by the plugin's
    ``finish_timeout``.
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
        try:
            first = await io.read()
        except ClientDisconnected:
            raise asyncio.CancelledError from None
        if first is grpc.aio.EOF:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty ServeHTTP stream")
        plugin = self.plugin
        try:
            frame = decode_request_frame(first)
            init = _checked_init(plugin, frame)
        except (FrameError, DecodeError, ProtocolError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad request init: {exc}")
        response = Response(io.write, plugin.chunk_size, high_water_mark=plugin.high_water_mark)
        content_length = init.content_length if init.content_length >= 0 else None
        ask = None
        if _expects_continue(init):
            ask = functools.partial(_ask_for_body, context, response)
        body = RequestBody(
            frame.body,
            frame.complete,
            io.read,
            grpc.aio.EOF,
            content_length,
            ask,
            max_chunk_size=plugin.max_chunk_size,
        )
        request = Request(init, body)
        delivery = _Delivery(io, response, plugin.finish_timeout)
        try:
            await self._respond(context, io, request, response)
        except asyncio.CancelledError:
            response._resolve(ClientDisconnected("the client went away"))
            raise
        except BaseException as exc:
            # context.abort's own error, mostly: the RPC ended non-OK.
            response._resolve(ClientDisconnected(f"the response failed: {exc!r}"))
            raise
        if not response.complete:
            return
        error = await delivery.wait()
        if isinstance(error, ClientDisconnected):
            # The call is gone: no status for it (grpc#43360).
            raise asyncio.CancelledError
        if isinstance(error, TimeoutError):
            log.debug("%s %s: %s", request.method, request.path, error)

    async def _respond(
        self,
        context: grpc.aio.ServicerContext,
        io: _CallIO,
        request: Request,
        response: Response,
    ) -> None:
        if request._path_error is not None:
            await _simple(response, 400, f"Bad Request: {request._path_error}\n")
            return
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
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(context, io, request, response, exc)
            return
        if _cancel_requested():
            # Finishing would send a status on a cancelled call (grpc#43360).
            raise asyncio.CancelledError
        if response.aborted:
            await self._aborted(context, io, response)
        if io.gone or request.body.disconnected:
            await self._client_gone(context, io, request, response)
            return
        if not response.complete:
            try:
                await response.end()
            except ClientDisconnected:
                await self._client_gone(context, io, request, response)

    async def _aborted(
        self, context: grpc.aio.ServicerContext, io: _CallIO, response: Response
    ) -> None:
        if _cancel_requested() or io.gone:
            raise asyncio.CancelledError
        error = response._aborted
        cause = error.__cause__ if error is not None else None
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else "by the handler"
        await context.abort(grpc.StatusCode.ABORTED, f"response aborted {detail}"[:200])

    async def _client_gone(
        self,
        context: grpc.aio.ServicerContext,
        io: _CallIO,
        request: Request,
        response: Response,
    ) -> None:
        if io.gone:
            # A gRPC operation failed: the call is over, it takes no status.
            response._resolve(ClientDisconnected("the client went away"))
            raise asyncio.CancelledError
        # The request stream ended early: a cancel (its cancellation lands in
        # a moment, nearly always within a loop turn or two) or a peer that
        # half-closed a truncated request.
        for _ in range(_DELIVERY_TURNS):
            await asyncio.sleep(0)
        await asyncio.sleep(_CANCEL_GRACE)
        if response.headers_sent:
            truncated = "request stream ended before body_complete"
            response._resolve(ResponseAborted(truncated))
            await context.abort(grpc.StatusCode.INTERNAL, truncated)
        response._discard()
        await _simple(response, 400, "Bad Request: request stream ended without body_complete\n")

    async def _failed(
        self,
        context: grpc.aio.ServicerContext,
        io: _CallIO,
        request: Request,
        response: Response,
        exc: Exception,
    ) -> None:
        if _cancel_requested():
            raise asyncio.CancelledError from exc
        if response.aborted:
            await self._aborted(context, io, response)
        if isinstance(exc, ClientDisconnected) or io.gone or request.body.disconnected:
            await self._client_gone(context, io, request, response)
            return
        if response.headers_sent:
            log.error(
                "handler for %s %s failed after the response started",
                request.method,
                request.path,
                exc_info=exc,
            )
            response._resolve(ResponseAborted(f"handler failed: {exc!r}"))
            await context.abort(grpc.StatusCode.INTERNAL, f"handler failed: {type(exc).__name__}")
        response._discard()
        if isinstance(exc, BodyTooLarge):
            await _simple(response, 413, "Payload Too Large\n")
        elif isinstance(exc, ProtocolError):
            await _simple(response, 400, f"Bad Request: {exc}\n")
        else:
            log.error("handler for %s %s failed", request.method, request.path, exc_info=exc)
            await _simple(response, 500, "Internal Server Error\n")


def _checked_init(plugin: Plugin, frame: Any) -> http_pb2.ServeHTTPRequestInit:
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
    count = sum(len(header.values) for header in init.headers)
    if count > plugin.max_header_count:
        raise ProtocolError(
            f"{count} header values, more than max_header_count {plugin.max_header_count}"
        )
    return init


def _expects_continue(init: http_pb2.ServeHTTPRequestInit) -> bool:
    for header in init.headers:
        if header.key.lower() == "expect":
            return any(v.strip().lower() == b"100-continue" for v in header.values)
    return False


async def _ask_for_body(context: grpc.aio.ServicerContext, response: Response) -> None:
    """Expect: 100-continue: tell the gateway to start sending the body."""
    if response.headers_sent:
        return  # answered already: initial metadata went with the response
    try:
        await context.send_initial_metadata(CONTINUE_METADATA)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise ClientDisconnected("the ServeHTTP call ended") from exc


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
