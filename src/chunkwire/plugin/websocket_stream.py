"""A WebSocket session as one stream of a multiplexed connection (plugin side).

The stream opens with the WEBSOCKET flag; its payloads are the
WebSocketFrame messages of a ServeWebSocket call, byte for byte, and the
same handler code runs on them (``run_session``). What ends a call ends
the stream: the handler done, the plugin sends END (an empty DATA frame,
no credit needed), which closes the session on both sides; a RESET from
the gateway cancels the handler as a cancelled call does; the gateway's
END is the call's half-close (the handler's reads see EOF). A stalled
session holds only its own credit.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from ..errors import ClientDisconnected, ProtocolError
from ..transport.mux import ResetCode
from .stream_credit import CreditedStream
from .websocket_servicer import run_session, session_init

log = logging.getLogger("chunkwire.plugin")

_EOF = object()  # the gateway ended its direction


class SessionStream(CreditedStream):
    """One session on a ``_PluginConnection``: its received frames and its writes.

    The connection drives it as it drives a request's stream
    (``received``, ``credit``, ``closed``, ``task``).
    """

    __slots__ = ("_conn", "_credit", "_gone", "_messages", "_waiter", "stream_id", "task")

    def __init__(self, conn: Any, stream_id: int) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self._messages: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._credit: asyncio.Future[None] | None = None
        self._gone: ClientDisconnected | None = None
        self.task: asyncio.Task[None] | None = None

    # -- driven by the connection -------------------------------------------------

    def received(self, payload: Any) -> None:
        if payload.nbytes:  # empty: the gateway's END alone
            self._messages.append(payload)
        self._wake()

    def credit(self) -> None:
        self._wake()

    def closed(self, error: ClientDisconnected | None) -> None:
        """Reset or the connection ended: no more frames either way."""
        if self._gone is None:
            self._gone = error or ClientDisconnected("the session ended")
        self._messages.clear()
        self._wake()

    def _wake(self) -> None:
        for future in (self._waiter, self._credit):
            if future is not None and not future.done():
                future.set_result(None)

    # -- the WebSocket's read and write ---------------------------------------------

    async def read(self) -> Any:
        while True:
            messages = self._messages
            if messages:
                payload = messages.popleft()
                self._conn.consumed(self.stream_id, payload.nbytes)
                return payload
            if self._gone is not None:
                raise self._gone
            state = self._conn.proto.streams.get(self.stream_id)
            if state is None or not state.remote_open:
                return _EOF  # the gateway's END: its half-close
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def write(self, frame: bytes) -> None:
        await self._wait_credit("the gateway ended the session")
        self._conn.proto.send_data(self.stream_id, frame)
        self._conn.sender.kick()

    # -- the session ----------------------------------------------------------------

    async def run(self, init: Any) -> None:
        conn = self._conn
        try:
            await run_session(conn.plugin, init, self.read, self.write, _EOF)
        except (asyncio.CancelledError, ClientDisconnected):
            pass  # reset by the gateway, or the connection ended
        except Exception:
            log.exception("WebSocket session on stream %d failed", self.stream_id)
            if conn.proto.reset(self.stream_id, ResetCode.INTERNAL, "session failed"):
                conn.sender.kick()
        finally:
            self.task = None
            state = conn.proto.streams.get(self.stream_id)
            if state is not None and state.local_open:
                conn.proto.send_data(self.stream_id, b"", end=True)  # closes the session
                conn.sender.kick()
            conn._forget(self.stream_id)
            self.closed(None)


def open_session(conn: Any, stream_id: int, payload: Any) -> SessionStream | None:
    """Start the session a WEBSOCKET OPEN asked for; None (and a RESET) for a bad init."""
    try:
        init = session_init(payload)
    except ProtocolError as exc:
        conn.proto.reset(stream_id, ResetCode.PROTOCOL, str(exc))
        return None
    stream = SessionStream(conn, stream_id)
    stream.task = asyncio.get_running_loop().create_task(stream.run(init))
    return stream
