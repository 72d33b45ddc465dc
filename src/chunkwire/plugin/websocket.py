"""What a WebSocket handler sees: one session with a client, through the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from .. import _websocket as wire
from ..errors import ClientDisconnected, WebSocketClosed
from .request import Request

ReadMessage = Callable[[], Awaitable[Any]]
WriteMessage = Callable[[bytes], Awaitable[None]]
Headers = Mapping[str, str] | Iterable[tuple[str, str]]

_CONNECTING, _OPEN, _CLOSED = "connecting", "open", "closed"


class WebSocket:
    """A WebSocket session on a plugin route (``@plugin.websocket(path)``).

    ``accept()`` or refuse (``deny(status)``, or ``close()`` before
    accepting, which the client sees as 403) first; then ``send``/``receive``
    str (text frames) or bytes-like (binary frames) messages, or iterate
    with ``async for`` until the client leaves. ``close_code`` and
    ``close_reason`` say how it ended (None while open).

    Backpressure: ``await send()`` returns once the message is handed to
    gRPC, which waits while the client is slow; at most one received
    message waits here for ``receive()``, so a handler that stops receiving
    stops the gateway reading the client's socket (a close from the client
    is then noticed only when the handler receives again, as on TCP).
    Messages larger than ``max_message_size`` close the session with 1009.
    """

    def __init__(
        self,
        request: Request,
        subprotocols: list[str],
        read: ReadMessage,
        write: WriteMessage,
        eof: object,
        *,
        chunk_size: int,
        max_message_size: int,
    ) -> None:
        self.request = request
        self.subprotocols = subprotocols
        self.max_message_size = max_message_size
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.close_reason: str = ""
        self._read = read
        self._write = write
        self._eof = eof
        self._state = _CONNECTING
        self._answered = False  # accept, deny or a refusing close went out
        self._accepted = False
        self._fragmenter = wire.Fragmenter(chunk_size)
        self._send_lock = asyncio.Lock()
        self._inbox: deque[str | bytes] = deque()
        self._changed = asyncio.Event()  # a message arrived, or the session closed
        self._taken = asyncio.Event()  # the inbox has room again
        self._reader: asyncio.Task[None] | None = None
        self._closed_by_peer = False

    # -- state ----------------------------------------------------------------

    @property
    def accepted(self) -> bool:
        """True once ``accept()`` went out (and stays True after the close)."""
        return self._accepted

    @property
    def answered(self) -> bool:
        """True once accept, deny or close went to the gateway."""
        return self._answered

    @property
    def closed(self) -> bool:
        return self._state == _CLOSED

    def _closed_error(self) -> WebSocketClosed:
        return WebSocketClosed(self.close_code or wire.ABNORMAL, self.close_reason)

    def _mark_closed(self, code: int, reason: str) -> None:
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        self.close_code = code
        self.close_reason = reason
        self._changed.set()
        self._taken.set()

    # -- handshake ------------------------------------------------------------

    async def accept(self, subprotocol: str | None = None, headers: Headers | None = None) -> None:
        """Complete the handshake; ``subprotocol`` must be one the client offered."""
        if self._answered:
            raise RuntimeError("the handshake was already answered")
        if subprotocol is not None and subprotocol not in self.subprotocols:
            raise ValueError(
                f"subprotocol {subprotocol!r} was not offered by the client "
                f"(offered: {self.subprotocols})"
            )
        pairs = list(headers.items() if isinstance(headers, Mapping) else headers or ())
        self._answered = True
        await self._put(wire.encode_accept(subprotocol, pairs))
        self.subprotocol = subprotocol
        self._accepted = True
        self._state = _OPEN
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())

    async def deny(
        self, status: int = 403, headers: Headers | None = None, body: bytes | str = b""
    ) -> None:
        """Refuse the handshake with an HTTP response (only before ``accept``)."""
        if self._answered:
            raise RuntimeError("deny() only before the handshake is answered")
        if not 300 <= status <= 599:
            raise ValueError(f"deny() takes an HTTP status within 300..599, got {status}")
        pairs = list(headers.items() if isinstance(headers, Mapping) else headers or ())
        raw = body.encode() if isinstance(body, str) else bytes(body)
        self._answered = True
        self._mark_closed(wire.POLICY_VIOLATION, f"denied with HTTP {status}")
        await self._put(wire.encode_deny(status, pairs, raw))

    # -- sending --------------------------------------------------------------

    async def send(self, message: str | Any) -> None:
        """Send a text (str) or binary (bytes-like) message; waits while the client is slow."""
        if self._state == _CONNECTING:
            raise RuntimeError("accept() the WebSocket before sending")
        if isinstance(message, str):
            payload: Any = message.encode()
            text = True
        else:
            payload = memoryview(message)
            text = False
        size = len(payload) if text else payload.nbytes
        async with self._send_lock:
            if self._state == _CLOSED:
                raise self._closed_error()
            if self.max_message_size and size > self.max_message_size:
                reason = f"message of {size} bytes exceeds {self.max_message_size}"
                await self._close(wire.MESSAGE_TOO_BIG, reason)
                raise self._closed_error()
            for frame in self._fragmenter.frames(payload, text):
                await self._put(frame)

    async def send_json(self, obj: Any) -> None:
        """``send(json.dumps(obj))``: a text message."""
        await self.send(json.dumps(obj))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the session (before ``accept``: refuse the handshake, the client sees 403)."""
        if not wire.sendable_close_code(code):
            raise ValueError(f"close code {code} cannot be sent (1000-1014 or 3000-4999)")
        if len(reason.encode()) > wire.MAX_REASON_BYTES:
            raise ValueError(f"close reason longer than {wire.MAX_REASON_BYTES} UTF-8 bytes")
        async with self._send_lock:
            if self._state == _CLOSED:
                return
            await self._close(code, reason)

    async def _close(self, code: int, reason: str) -> None:
        self._answered = True
        self._mark_closed(code, reason)
        with contextlib.suppress(WebSocketClosed):
            await self._put(wire.encode_close(code, reason))

    async def _put(self, frame: bytes) -> None:
        try:
            await self._write(frame)
        except ClientDisconnected:
            self._mark_closed(wire.ABNORMAL, "the gateway ended the session")
            raise self._closed_error() from None

    # -- receiving ------------------------------------------------------------

    async def receive(self) -> str | bytes:
        """The next message: str (text) or bytes (binary); WebSocketClosed once it ended."""
        if self._state == _CONNECTING:
            raise RuntimeError("accept() the WebSocket before receiving")
        while True:
            if self._inbox and (self._closed_by_peer or self._state != _CLOSED):
                message = self._inbox.popleft()
                self._taken.set()
                return message
            if self._state == _CLOSED:
                raise self._closed_error()
            self._changed.clear()
            await self._changed.wait()

    async def receive_json(self) -> Any:
        """The next message parsed as JSON (text or UTF-8 bytes)."""
        return json.loads(await self.receive())

    def __aiter__(self) -> WebSocket:
        return self

    async def __anext__(self) -> str | bytes:
        try:
            return await self.receive()
        except WebSocketClosed:
            raise StopAsyncIteration from None

    async def _read_loop(self) -> None:
        """Read frames ahead of ``receive()``, by at most one complete message."""
        assembler = wire.Assembler(self.max_message_size)
        while self._state != _CLOSED:
            if self._inbox:
                self._taken.clear()
                await self._taken.wait()
                continue
            try:
                raw = await self._read()
            except ClientDisconnected:
                self._mark_closed(wire.ABNORMAL, "the gateway ended the session")
                return
            if raw is self._eof:
                self._mark_closed(wire.ABNORMAL, "the gateway ended the session")
                return
            try:
                frame = wire.parse(raw)
            except Exception:  # protobuf's DecodeError
                await self._fail(wire.INTERNAL_ERROR, "malformed frame from the gateway")
                return
            kind = frame.WhichOneof("kind")
            if kind == "data":
                try:
                    message = assembler.add(frame.data)
                except wire.MessageTooBig as exc:
                    await self._fail(wire.MESSAGE_TOO_BIG, str(exc))
                    return
                except wire.BadFrame as exc:
                    await self._fail(wire.INVALID_DATA, str(exc))
                    return
                if message is not None:
                    self._inbox.append(message)
                    self._changed.set()
            elif kind == "close":
                self._closed_by_peer = True
                self._mark_closed(frame.close.code or wire.NO_STATUS, frame.close.reason)
                return
            else:
                await self._fail(wire.INTERNAL_ERROR, f"unexpected {kind} frame from the gateway")
                return

    async def _fail(self, code: int, reason: str) -> None:
        async with self._send_lock:
            await self._close(code, wire.clip_reason(reason))

    def __repr__(self) -> str:
        return f"<WebSocket {self.request.path} {self._state}>"
