"""Sending on a plugin-side stream of the multiplexed connection: wait for credit."""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import ClientDisconnected


class CreditedStream:
    """Base of the plugin's streams on a multiplexed connection (requests and
    WebSocket sessions); the subclass holds the slots named below."""

    __slots__ = ()

    _conn: Any
    _credit: asyncio.Future[None] | None
    _gone: ClientDisconnected | None
    stream_id: int

    async def _wait_credit(self, gone: str) -> None:
        """Return once the stream may send; ClientDisconnected(gone) once it never will."""
        proto = self._conn.proto
        sid = self.stream_id
        while not proto.can_send(sid):
            state = proto.streams.get(sid)
            if self._gone is not None or state is None or not state.local_open:
                raise ClientDisconnected(gone)
            self._credit = asyncio.get_running_loop().create_future()
            try:
                await self._credit
            finally:
                self._credit = None
