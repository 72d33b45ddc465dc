"""The gRPC side of a plugin: one ServeHTTP bidi stream per HTTP request."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING

import grpc
from google.protobuf.message import DecodeError

from .._core import FrameError, decode_request_frame
from .._wire import MATTERMOST_SERVE_HTTP_METHOD, SERVE_HTTP_METHOD
from ..errors import ClientDisconnected, ProtocolError, ResponseAborted
from .handling import (
    CallIO,
    CallServicer,
    aborted_reason,
    answer_failure,
    checked_init,
    expects_continue,
    failed_mid_response,
    first_message,
    retrieve,
    run_handler,
    simple,
)
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


def _cancel_requested() -> bool:
    # A handler may swallow CancelledError; the task still remembers the request.
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling and cancelling())


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

    def __init__(self, io: CallIO, response: Response, timeout: float) -> None:
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
        self._task.add_done_callback(retrieve)
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


class ServeHTTPServicer(CallServicer):
    """Runs the plugin's handler for each ServeHTTP call.

    Wire messages are raw bytes (identity serializers); the core codec reads
    and writes them, so no protobuf object is built per body chunk. After
    body_complete the servicer stays in the RPC until the request stream's
    EOF (delivered) or cancellation (client gone), bounded by the plugin's
    ``finish_timeout``.
    """

    async def _serve(self, context: grpc.aio.ServicerContext) -> None:
        io, first = await first_message(context, "ServeHTTP")
        plugin = self.plugin
        try:
            frame = decode_request_frame(first)
            init = checked_init(plugin, frame)
        except (FrameError, DecodeError, ProtocolError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad request init: {exc}")
        response = Response(io.write, plugin.chunk_size, high_water_mark=plugin.high_water_mark)
        content_length = init.content_length if init.content_length >= 0 else None
        ask = None
        if expects_continue(init):
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
        io: CallIO,
        request: Request,
        response: Response,
    ) -> None:
        ran, error = await run_handler(self.plugin, request, response)
        if not ran:
            return
        if error is not None:
            await self._failed(context, io, request, response, error)
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
        self, context: grpc.aio.ServicerContext, io: CallIO, response: Response
    ) -> None:
        if _cancel_requested() or io.gone:
            raise asyncio.CancelledError
        await context.abort(grpc.StatusCode.ABORTED, aborted_reason(response))

    async def _client_gone(
        self,
        context: grpc.aio.ServicerContext,
        io: CallIO,
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
        await simple(response, 400, "Bad Request: request stream ended without body_complete\n")

    async def _failed(
        self,
        context: grpc.aio.ServicerContext,
        io: CallIO,
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
            reason = failed_mid_response(request, response, exc)
            await context.abort(grpc.StatusCode.INTERNAL, reason)
        await answer_failure(request, response, exc)


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
        servicer.serve, request_deserializer=None, response_serializer=None
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
