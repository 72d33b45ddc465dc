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
Errors are httpx's own:

| what happened | httpx raises |
| --- | --- |
| the plugin is not reachable | ``ConnectError`` |
| no response head within the read timeout | ``ReadTimeout`` |
| no next body chunk within the read timeout | ``ReadTimeout`` |
| the plugin failed before its response head | ``RemoteProtocolError`` |
| the response was aborted or cut mid-body | ``RemoteProtocolError`` |
| the plugin broke the stream rules | ``RemoteProtocolError`` |

The connect timeout does not apply (gRPC fails at once when the plugin is
not there) and neither does the write timeout: sending is paced by the
plugin's reading, and a plugin that stops reading and never answers shows
as a ReadTimeout.
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


class AsyncPluginTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncClient(transport=AsyncPluginTransport(address))`` for one plugin.

    ``address`` is ``unix:/path.sock`` or ``HOST:PORT``. The URL's host is
    only passed on as the request's Host; the path and query select the
    route. One gRPC channel, shared by every request; ``aclose()`` (or
    closing the AsyncClient) closes it.
    """

    def __init__(
        self,
        address: str,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        method: str = SERVE_HTTP_METHOD,
    ) -> None:
        self._client = PluginClient(address, chunk_size=chunk_size, method=method)

    @property
    def address(self) -> str:
        return self._client.address

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        read_timeout = timeouts.get("read")
        content_length: int | None = None
        if "content-length" in request.headers:
            try:
                content_length = int(request.headers["content-length"])
            except ValueError:
                raise httpx.LocalProtocolError("invalid Content-Length", request=request) from None
        elif "transfer-encoding" not in request.headers:
            content_length = 0  # httpx sends neither header when there is no body
        body: Any = None if content_length == 0 else _RequestBody(request.stream)
        headers = [
            (name, value)
            for name, value in request.headers.raw
            if name.lower() not in (b"transfer-encoding", b"connection")
        ]
        try:
            response = await self._client.request(
                request.method,
                request.url.raw_path.decode("ascii"),
                headers=headers,
                body=body,
                host=request.url.netloc.decode("ascii"),
                content_length=content_length,
                timeout=read_timeout,
            )
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
            stream=_ResponseStream(response, request, read_timeout),
            extensions={"http_version": b"HTTP/1.1"},
            request=request,
        )

    async def aclose(self) -> None:
        await self._client.close()


class _RequestBody:
    """httpx's request stream as the async iterable PluginClient sends."""

    __slots__ = ("_stream",)

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._stream:
            if part:
                yield part


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(
        self, response: ClientResponse, request: httpx.Request, read_timeout: float | None
    ) -> None:
        self._response = response
        self._request = request
        self._timeout = read_timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        response = self._response
        while True:
            try:
                if self._timeout is None:
                    chunk = await response._next()
                else:
                    chunk = await asyncio.wait_for(response._next(), self._timeout)
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
        await self._response.aclose()


__all__ = ["AsyncPluginTransport"]
