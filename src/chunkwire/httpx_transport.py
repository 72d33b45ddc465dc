"""An httpx transport that calls a chunkwire plugin over gRPC, without HTTP.

```python
transport = AsyncPluginTransport("unix:/run/files.sock")
async with httpx.AsyncClient(transport=transport, base_url="http://files") as http:
    async with http.stream("PUT", "/upload", content=chunks()) as resp:
        async for part in resp.aiter_bytes():
            ...
```

Both bodies stream: the request body (bytes, or an async iterable given as
``content=``) is framed as it is produced, while the response is read; the
response body arrives chunk by chunk through httpx's ``aiter_*``/``stream()``.
httpx's four timeouts apply, and errors are httpx's own:

| what happened | httpx raises |
| --- | --- |
| the plugin is not reachable (no socket, connection refused) | ``ConnectError`` |
| no gRPC connection within the connect timeout | ``ConnectTimeout`` |
| one request chunk (``chunk_size`` bytes) not taken within the write timeout | ``WriteTimeout`` |
| no response head within the read timeout | ``ReadTimeout`` |
| no next body chunk within the read timeout | ``ReadTimeout`` |
| no free slot within the pool timeout (``limits.max_connections``) | ``PoolTimeout`` |
| the plugin failed before its response head | ``RemoteProtocolError`` |
| the response was aborted or cut mid-body | ``RemoteProtocolError`` |
| the plugin broke the stream rules | ``RemoteProtocolError`` |

Connecting covers the gRPC channel's connection (a peer that accepts the
TCP connection but never speaks HTTP/2 is a ConnectTimeout) and the
transport negotiation of the first request. A write waits while the plugin
does not read (gRPC flow control), so a handler that never reads its body
is a WriteTimeout once the windows between are full. Every request is a
stream on one gRPC channel: ``limits.max_connections`` (httpx.Limits)
bounds how many are in flight at once, and the pool timeout how long a
request waits for a slot; unlimited by default.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx

from ._wire import DEFAULT_CHUNK_SIZE, SERVE_HTTP_METHOD
from .client import ClientResponse, PluginClient
from .errors import IncompleteResponse, PluginCallError, ProtocolError
from .transport.lane import DEFAULT_SETTINGS, LaneSettings

_Connectivity = grpc.ChannelConnectivity
_SETTLED = (_Connectivity.READY, _Connectivity.TRANSIENT_FAILURE, _Connectivity.SHUTDOWN)


class AsyncPluginTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncClient(transport=AsyncPluginTransport(address))`` for one plugin.

    ``address`` is ``unix:/path.sock`` or ``HOST:PORT``. The URL's host is
    only passed on as the request's Host; the path and query select the
    route. One gRPC channel, shared by every request; ``aclose()`` (or
    closing the AsyncClient) closes it. ``limits``: only
    ``max_connections`` applies, as the number of requests in flight.
    ``lane``: this side's limits on a same-host lane, as for PluginClient.
    """

    def __init__(
        self,
        address: str,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        method: str = SERVE_HTTP_METHOD,
        limits: httpx.Limits | None = None,
        lane: LaneSettings = DEFAULT_SETTINGS,
    ) -> None:
        self._client = PluginClient(address, chunk_size=chunk_size, method=method, lane=lane)
        self._chunk_size = chunk_size
        slots = limits.max_connections if limits is not None else None
        self._slots = asyncio.Semaphore(slots) if slots else None

    @property
    def address(self) -> str:
        return self._client.address

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        slot = await self._acquire(timeouts.get("pool"), request)
        try:
            return await self._handle(request, timeouts, slot)
        except BaseException:
            slot.release()
            raise

    async def _acquire(self, timeout: float | None, request: httpx.Request) -> _Slot:
        slots = self._slots
        if slots is None:
            return _Slot(None)
        try:
            await asyncio.wait_for(slots.acquire(), timeout)
        except asyncio.TimeoutError:
            raise httpx.PoolTimeout(
                f"no free slot for a request to {self.address} within {timeout:g} s",
                request=request,
            ) from None
        return _Slot(slots)

    async def _connect(self, timeout: float | None, request: httpx.Request) -> None:
        """Wait until the channel is connected (or failed) and the transport chosen."""
        client = self._client
        channel = client._open_channel()
        state = channel.get_state(try_to_connect=True)
        if state == _Connectivity.READY and client.transport is not None:
            return
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            while state not in _SETTLED:
                left = None if deadline is None else max(deadline - loop.time(), 0.0)
                await asyncio.wait_for(channel.wait_for_state_change(state), left)
                state = channel.get_state()
            if state == _Connectivity.READY:
                left = None if deadline is None else max(deadline - loop.time(), 0.0)
                await asyncio.wait_for(client._choice.get(), left)
        except asyncio.TimeoutError:
            raise httpx.ConnectTimeout(
                f"no connection to {self.address} within {timeout:g} s", request=request
            ) from None
        # A failed connection is left to the call, which fails at once: ConnectError.

    async def _handle(
        self, request: httpx.Request, timeouts: dict[str, Any], slot: _Slot
    ) -> httpx.Response:
        read_timeout = timeouts.get("read")
        content_length: int | None = None
        if "content-length" in request.headers:
            try:
                content_length = int(request.headers["content-length"])
            except ValueError:
                raise httpx.LocalProtocolError("invalid Content-Length", request=request) from None
        elif "transfer-encoding" not in request.headers:
            content_length = 0  # httpx sends neither header when there is no body
        await self._connect(timeouts.get("connect"), request)
        watch = _WriteWatch(timeouts.get("write") if content_length != 0 else None)
        body: Any = None
        if content_length != 0:
            body = _RequestBody(request.stream, self._chunk_size, watch)
        headers = [
            (name, value)
            for name, value in request.headers.raw
            if name.lower() not in (b"transfer-encoding", b"connection")
        ]
        started = self._client.request(
            request.method,
            request.url.raw_path.decode("ascii"),
            headers=headers,
            body=body,
            host=request.url.netloc.decode("ascii"),
            content_length=content_length,
            timeout=read_timeout,
        )
        try:
            if not watch.active:
                response = await started
            else:
                response = await _unless_expired(started, watch, request)
        except asyncio.TimeoutError:
            raise httpx.ReadTimeout(
                f"no response head from {self.address} within {read_timeout:g} s",
                request=request,
            ) from None
        except PluginCallError as exc:
            if exc.code == grpc.StatusCode.UNAVAILABLE:
                raise httpx.ConnectError(
                    f"plugin at {self.address} is not reachable: {exc.details}", request=request
                ) from exc
            raise httpx.RemoteProtocolError(
                f"plugin ended the call without a response: {exc}", request=request
            ) from exc
        except ProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        return httpx.Response(
            response.status,
            headers=[
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in response.headers.items()
            ],
            stream=_ResponseStream(response, request, read_timeout, watch, slot),
            extensions={"http_version": b"HTTP/1.1"},
            request=request,
        )

    async def aclose(self) -> None:
        await self._client.close()


class _Slot:
    """One request's place under ``max_connections``; released once."""

    __slots__ = ("_semaphore",)

    def __init__(self, semaphore: asyncio.Semaphore | None) -> None:
        self._semaphore = semaphore

    def release(self) -> None:
        if self._semaphore is not None:
            self._semaphore.release()
            self._semaphore = None


class _WriteWatch:
    """Times each hand-over of a request chunk to gRPC against the write timeout.

    Armed when the body yields a chunk, disarmed when the sender comes back
    for the next one: in between, the sender is writing it (waiting while
    the plugin does not read). ``expired`` resolves when one write overran.
    """

    __slots__ = ("_timer", "expired", "finished", "timeout")

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.finished = False  # the whole body was handed over
        self.expired: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def active(self) -> bool:
        """A write may still overrun."""
        return self.timeout is not None and not self.finished

    def arm(self) -> None:
        if self.timeout is not None and not self.expired.done():
            self._timer = asyncio.get_running_loop().call_later(self.timeout, self._expire)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if not self.expired.done():
            self.expired.set_result(None)

    def error(self, request: httpx.Request) -> httpx.WriteTimeout:
        return httpx.WriteTimeout(
            f"the plugin took no request data for {self.timeout:g} s", request=request
        )


async def _unless_expired(
    started: Any, watch: _WriteWatch, request: httpx.Request
) -> ClientResponse:
    """The response head, or WriteTimeout when a write overran before it came."""
    task = asyncio.ensure_future(started)
    try:
        await asyncio.wait((task, watch.expired), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task.done():
        return task.result()
    task.cancel()  # the request ends its call and stops its sender
    await asyncio.wait((task,))
    if not task.cancelled() and task.exception() is None:
        await task.result().aclose()
    raise watch.error(request)


class _RequestBody:
    """httpx's request stream as the async iterable PluginClient sends, in
    pieces of at most one chunk so that each is one write for the watch."""

    __slots__ = ("_chunk_size", "_stream", "_watch")

    def __init__(self, stream: Any, chunk_size: int, watch: _WriteWatch) -> None:
        self._stream = stream
        self._chunk_size = chunk_size
        self._watch = watch

    async def __aiter__(self) -> AsyncIterator[Any]:
        size = self._chunk_size
        watch = self._watch
        try:
            async for part in self._stream:
                view = memoryview(part)
                for start in range(0, view.nbytes, size):
                    watch.arm()
                    yield view[start : start + size]
                    watch.disarm()
            watch.finished = True
        finally:
            watch.disarm()


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(
        self,
        response: ClientResponse,
        request: httpx.Request,
        read_timeout: float | None,
        watch: _WriteWatch,
        slot: _Slot,
    ) -> None:
        self._response = response
        self._request = request
        self._timeout = read_timeout
        self._watch = watch
        self._slot = slot

    async def _next(self) -> memoryview | None:
        response = self._response
        watch = self._watch
        if not watch.active or response.complete:
            if self._timeout is None:
                return await response._next()
            return await asyncio.wait_for(response._next(), self._timeout)
        # The request body may still be going out: a stalled write counts too.
        task = asyncio.ensure_future(response._next())
        try:
            done, _ = await asyncio.wait(
                (task, watch.expired), timeout=self._timeout, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task in done:
            return task.result()
        task.cancel()
        await asyncio.wait((task,))
        await response.aclose()
        if watch.expired.done():
            raise watch.error(self._request)
        raise asyncio.TimeoutError

    async def __aiter__(self) -> AsyncIterator[bytes]:
        response = self._response
        while True:
            try:
                chunk = await self._next()
            except asyncio.TimeoutError:
                await response.aclose()
                raise httpx.ReadTimeout(
                    f"no response body within {self._timeout:g} s", request=self._request
                ) from None
            except IncompleteResponse as exc:
                raise httpx.RemoteProtocolError(
                    f"response ended before its end: {exc}", request=self._request
                ) from exc
            except ProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc), request=self._request) from exc
            if chunk is None:
                return
            yield bytes(chunk)

    async def aclose(self) -> None:
        self._watch.disarm()
        self._slot.release()
        await self._response.aclose()


__all__ = ["AsyncPluginTransport"]
