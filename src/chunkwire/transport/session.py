"""A WebSocket session as one stream of a multiplexed connection (opener side).

:class:`SessionCall` is to a ServeWebSocket call what :class:`MuxCall` is to
a ServeHTTP call: the gateway's WebSocket bridge drives it through the same
grpc.aio call interface, so the bridge, and every rule it enforces, is the
same on every transport. Messages are ``WebSocketFrame`` bytes both ways,
as on ServeWebSocket. The mapping (docs/protocol.md, "WebSocket sessions"):

- the first ``write`` is the OPEN frame (flag WEBSOCKET) with the init;
  later ones are DATA frames, each waiting for the stream's credit;
- ``done_writing()``: an empty DATA frame with END (the half-close);
- ``read()``: the plugin's frames; EOF once the plugin's END arrived, which
  ends the session (as a ServeWebSocket call's status does); a RESET or a
  broken connection raises ``grpc.aio.AioRpcError``;
- ``cancel()``: RESET(CANCEL).
"""

from __future__ import annotations

from typing import Any

import grpc.aio

from .opener import MuxCall


class SessionCall(MuxCall):
    """One WebSocket session on a multiplexed connection, shaped like a grpc.aio call."""

    __slots__ = ()

    async def write(self, message: Any) -> None:
        self._check_writable()
        conn = self._conn
        if not self.stream_id:
            try:
                self.stream_id = conn.open(self, message, False, websocket=True)
            except grpc.aio.AioRpcError as error:
                self.failed(error)  # the connection broke before the session opened
                raise
            return
        await self._wait_credit("the session has ended")
        conn.proto.send_data(self.stream_id, message)
        conn.sender.kick()

    async def done_writing(self) -> None:
        if self._writing_done:
            return
        self._check_writable()
        self._writing_done = True
        state = self._conn.proto.streams.get(self.stream_id) if self.stream_id else None
        if state is not None and state.local_open:
            self._conn.proto.send_data(self.stream_id, b"", end=True)  # needs no credit
            self._conn.sender.kick()

    def received(self, payload: Any, end: bool) -> None:
        if end:
            # The plugin ended the session: its stream is closed on both
            # sides; what arrived before is still read, then EOF.
            self._response_ended = True
            if self._state == "open":
                self._state = "delivered"
            self._conn.calls.pop(self.stream_id, None)
        if payload.nbytes:
            super().received(payload, False)
        else:
            self._settle_metadata()
        if end or not payload.nbytes:
            self._wake()  # a write waiting for credit sees the end too
