"""The plugin's end of the same-host lane: a unix socket next to its gRPC socket.

Each accepted connection is checked (the peer must run as this process's
user: SO_PEERCRED), greeted (HELLO both ways), then served by the plugin's
multiplexed connection code over a :class:`~chunkwire.transport.lane.LaneContext`
instead of a gRPC Connect call: same streams, same handlers, same rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable

from .._sockets import listen_private_unix, remove_unix_socket
from ..transport.lane import (
    DEFAULT_SETTINGS,
    LaneContext,
    LaneError,
    LaneLink,
    LaneSettings,
    accept_handshake,
    check_peer,
    no_hello,
)

log = logging.getLogger("chunkwire.plugin")

Serve = Callable[[LaneContext], Awaitable[None]]


class LaneListener:
    """Accepts lane connections on ``path`` (created 0600) and hands each to ``serve``."""

    def __init__(
        self,
        path: str,
        serve: Serve,
        max_record: int,
        settings: LaneSettings = DEFAULT_SETTINGS,
    ) -> None:
        self.path = path
        self._serve = serve
        self._max_record = max_record
        self.settings = settings
        self._sock: socket.socket | None = None
        self._ino: tuple[int, int] | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.contexts: set[LaneContext] = set()
        self.refused = 0
        self.uid = os.getuid()  # the only user whose processes may connect

    async def start(self) -> None:
        self._sock, self._ino = listen_private_unix(self.path)
        self._sock.setblocking(False)
        self._accepting = asyncio.get_running_loop().create_task(self._accept())

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._sock is not None
        while True:
            conn, _ = await loop.sock_accept(self._sock)
            task = loop.create_task(self._handle(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, conn: socket.socket) -> None:
        try:
            conn.setblocking(False)
            pid = check_peer(conn, self.uid)
            settings = self.settings
            rings = await asyncio.wait_for(
                accept_handshake(conn, settings), settings.handshake_timeout
            )
            link = await LaneLink.over(conn, self._max_record, rings)
        except (LaneError, OSError, TimeoutError) as exc:
            self.refused += 1
            what = no_hello(self.settings) if isinstance(exc, TimeoutError) else str(exc)
            log.warning("lane connection on %s refused: %s", self.path, what)
            conn.close()
            return
        except BaseException:
            conn.close()
            raise
        context = LaneContext(link, f"pid {pid}", self.settings)
        self.contexts.add(context)
        try:
            await self._serve(context)
        finally:
            self.contexts.discard(context)
            context.close()

    async def stop_accepting(self) -> None:
        """Close the listening socket and remove it; running connections go on."""
        accepting, self._accepting = self._accepting, None
        if accepting is not None:
            # Done before the close: the loop must let go of the fd first, or
            # its number, reused, would lose a later socket's registration.
            accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await accepting
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
            remove_unix_socket(self.path, self._ino)

    async def close(self, grace: float | None, busy: Callable[[], bool]) -> None:
        """Stop accepting; give running streams ``grace`` seconds (while ``busy()``), then close."""
        await self.stop_accepting()
        tasks = list(self._tasks)
        if tasks and grace:
            deadline = asyncio.get_running_loop().time() + grace
            while busy() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
        for context in list(self.contexts):
            context.close()
        for task in tasks:
            if not task.done():
                task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
