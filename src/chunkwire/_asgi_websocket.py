"""One WebSocket session of an ASGI app: the ``websocket`` scope over a plugin WebSocket.

The app's side of the handshake is a small state machine:

| state | app sends | goes to | the client sees |
| --- | --- | --- | --- |
| connecting | ``websocket.accept`` | open | the upgrade (subprotocol, headers) |
| connecting | ``websocket.close`` | closed | 403 |
| connecting | ``websocket.http.response.start`` | responding | (nothing yet) |
| responding | ``websocket.http.response.body`` (last) | closed | that status, headers, body |
| open | ``websocket.send`` | open | a text or binary message |
| open | ``websocket.close`` | closed | a close with the app's code and reason |

``receive()`` gives ``websocket.connect`` first, then waits for the
handshake's answer; once open, each call takes one client message from the
plugin WebSocket (which reads ahead by at most one message, so an app that
stops receiving stops the client). When the session is over it gives
``websocket.disconnect`` with the close code and reason, on every call.
``send()`` waits while the client is slow; once the client is gone it
raises ClientDisconnected (an OSError, as ASGI 2.4 asks).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from . import _websocket as wire
from .errors import ClientDisconnected, WebSocketClosed
from .plugin.websocket import WebSocket

log = logging.getLogger("chunkwire.asgi")

Message = MutableMapping[str, Any]

_CONNECTING, _RESPONDING, _OPEN, _CLOSED = "connecting", "responding", "open", "closed"

EXTENSIONS: dict[str, dict[str, Any]] = {"websocket.http.response": {}}


class WebSocketCycle:
    """receive/send of one ``websocket`` scope, and the task the app runs in.

    ``deny_limit`` bounds a ``websocket.http.response`` body: the refusal
    leaves as one message, so it is held whole until its last part.
    """

    def __init__(self, ws: WebSocket, deny_limit: int, disconnect_timeout: float) -> None:
        self.ws = ws
        self.state = _CONNECTING
        self.deny_limit = deny_limit
        self.disconnect_timeout = disconnect_timeout
        self._connect_sent = False
        self._answered = asyncio.Event()
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._lost = False  # the client left before the accept got through

    # -- receive ----------------------------------------------------------------

    async def receive(self) -> Message:
        if not self._connect_sent:
            self._connect_sent = True
            return {"type": "websocket.connect"}
        await self._answered.wait()
        if not self.ws.accepted:
            # Refused (or the client left during the handshake): never opened.
            return {"type": "websocket.disconnect", "code": wire.ABNORMAL, "reason": ""}
        try:
            message = await self.ws.receive()
        except WebSocketClosed as closed:
            return {"type": "websocket.disconnect", "code": closed.code, "reason": closed.reason}
        if isinstance(message, str):
            return {"type": "websocket.receive", "text": message}
        return {"type": "websocket.receive", "bytes": message}

    # -- send -------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        kind = message["type"]
        state = self.state
        if state == _OPEN:
            if kind == "websocket.send":
                await self._send_message(message)
            elif kind == "websocket.close":
                self.state = _CLOSED
                await self.ws.close(_close_code(message), message.get("reason") or "")
            else:
                raise RuntimeError(f"unexpected ASGI message {kind!r} on an open WebSocket")
        elif state == _CONNECTING:
            if kind == "websocket.accept":
                await self._accept(message)
            elif kind == "websocket.close":
                # Before accept: the handshake is refused, the client sees 403.
                self.state = _CLOSED
                try:
                    await self.ws.close(_close_code(message), message.get("reason") or "")
                finally:
                    self._answered.set()
            elif kind == "websocket.http.response.start":
                self._status = message["status"]
                # The refusal leaves whole; its length is the gateway's to write.
                self._headers = [
                    (bytes(k), bytes(v))
                    for k, v in message.get("headers", ())
                    if bytes(k).lower() != b"content-length"
                ]
                self.state = _RESPONDING
            else:
                raise RuntimeError(
                    f"unexpected ASGI message {kind!r} before the WebSocket handshake was answered"
                )
        elif state == _RESPONDING:
            if kind != "websocket.http.response.body":
                raise RuntimeError(f"unexpected ASGI message {kind!r} in a denial response")
            await self._deny_part(message)
        elif self._lost:
            raise ClientDisconnected("the client left during the handshake")
        else:
            raise RuntimeError(f"ASGI message {kind!r} after the session was closed or refused")

    async def _accept(self, message: Message) -> None:
        headers = [(bytes(k), bytes(v)) for k, v in message.get("headers") or ()]
        try:
            await self.ws.accept(message.get("subprotocol"), headers)
        except WebSocketClosed as closed:
            self.state = _CLOSED
            self._lost = True
            raise ClientDisconnected("the client left during the handshake") from closed
        finally:
            self._answered.set()
        self.state = _OPEN

    async def _send_message(self, message: Message) -> None:
        data = message.get("bytes")
        if data is None:
            data = message.get("text")
            if data is None:
                raise RuntimeError("websocket.send carries neither bytes nor text")
        try:
            await self.ws.send(data)
        except WebSocketClosed as closed:
            raise ClientDisconnected(f"the WebSocket session is over ({closed})") from closed

    async def _deny_part(self, message: Message) -> None:
        body = message.get("body", b"")
        self._body_size += len(body)
        if self._body_size > self.deny_limit:
            raise RuntimeError(
                f"WebSocket denial body larger than {self.deny_limit} bytes (the chunk size)"
            )
        if body:
            self._body.append(bytes(body))
        if message.get("more_body", False):
            return
        self.state = _CLOSED
        try:
            await self.ws.deny(self._status, self._headers, b"".join(self._body))
        finally:
            self._body.clear()
            self._answered.set()

    # -- the app's task -----------------------------------------------------------

    async def run(self, app: Callable[..., Awaitable[None]], scope: Any) -> None:
        task = asyncio.ensure_future(app(scope, self.receive, self.send))
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError:
            # The call was cancelled (the gateway gave up on the session): the
            # app hears websocket.disconnect, gets a moment, then is cancelled.
            self._gone()
            await self._wind_down(task)
            raise
        if task.cancelled():
            raise RuntimeError("the ASGI app's task was cancelled")
        error = task.exception()
        if error is not None:
            if self.ws.closed:
                self._ended_after_close(error)
                return
            raise error
        if self.state in (_CONNECTING, _RESPONDING):
            raise RuntimeError("the ASGI app returned without answering the WebSocket handshake")

    def _gone(self) -> None:
        # The plugin WebSocket's next gRPC read or write fails on the
        # cancelled call; a receive() still waiting on the handshake wakes.
        self._answered.set()

    async def _wind_down(self, task: asyncio.Future[None]) -> None:
        done, _ = await asyncio.wait((task,), timeout=self.disconnect_timeout)
        if not done:
            task.cancel()
            await asyncio.wait((task,))
        if not task.cancelled() and task.exception() is not None:
            self._ended_after_close(task.exception())

    def _ended_after_close(self, error: BaseException | None) -> None:
        # Starlette's WebSocketDisconnect and our ClientDisconnected are the
        # normal way for an app to stop once the session is over.
        log.debug(
            "WebSocket %s: the app ended with %r after the session ended",
            self.ws.request.path,
            error,
        )


def _close_code(message: Message) -> int:
    code = message.get("code")
    return wire.NORMAL if code is None else int(code)
