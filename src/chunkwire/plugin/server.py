"""Serving a Plugin: a grpc.aio server on a unix socket or TCP."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import TYPE_CHECKING

import grpc

from .._sockets import add_private_unix_port, remove_unix_socket
from .._wire import flow_window, grpc_target
from ..transport.lane import lane_socket_path
from ..transport.sender import BATCH_LIMIT
from .lane import LaneListener
from .mux import serve_mux
from .plugin_service import PluginServiceHandler
from .servicer import ServeHTTPGenericHandler
from .websocket_servicer import ServeWebSocketGenericHandler

if TYPE_CHECKING:
    from .app import Plugin

log = logging.getLogger("chunkwire.plugin")

# Field tags and length prefixes around a chunk and an init.
_FRAMING = 1024


def server_options(plugin: Plugin) -> list[tuple[str, int]]:
    # The first request message may carry the init and a chunk; gRPC refuses
    # anything larger before it is parsed.
    receive = plugin.max_chunk_size + plugin.max_init_size + _FRAMING
    return [
        ("grpc.max_send_message_length", plugin.chunk_size + plugin.max_init_size + _FRAMING),
        ("grpc.max_receive_message_length", receive),
        ("grpc.so_reuseport", 0),
        # Bounded windows (no BDP-driven growth): reading is the flow control.
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", flow_window(plugin.chunk_size)),
    ]


class PluginServer:
    """A running plugin server. ``address`` is what a client or gateway dials.

    For ``HOST:0`` the bound port is in ``port`` and ``address``.
    """

    def __init__(self, plugin: Plugin, listen: str) -> None:
        self.plugin = plugin
        self.listen = listen
        self._target = grpc_target(listen)
        self.unix_path: str | None = None
        self.port: int | None = None
        self.address = listen
        self._server: grpc.aio.Server | None = None
        self._socket_ino: tuple[int, int] | None = None
        self._handler = ServeHTTPGenericHandler(plugin)
        self.websocket = ServeWebSocketGenericHandler(plugin)  # ServeWebSocket calls
        self.service = PluginServiceHandler(plugin)
        self.mux = serve_mux(self.service, plugin)
        self.lane: LaneListener | None = None
        self._stopped = False

    @property
    def active_calls(self) -> int:
        """Requests whose handler is running now (ServeHTTP calls and mux streams)."""
        return self._handler.servicer.active + self.mux.active

    @property
    def mux_streams(self) -> int:
        """Streams open on the multiplexed connections (0 once all ended)."""
        return self.mux.open_streams()

    async def start(self) -> None:
        server = grpc.aio.server(options=server_options(self.plugin))
        server.add_generic_rpc_handlers(
            (self._handler, self.service, self.websocket)
        )
        if self._target.startswith("unix:"):
            path = os.path.abspath(self._target[len("unix:") :])
            self._socket_ino = add_private_unix_port(server, path)
            self.unix_path = path
            self.address = f"unix:{path}"
            if "lane" in self.plugin.transports:
                await self._start_lane(lane_socket_path(path))
        else:
            try:
                port = server.add_insecure_port(self._target)
            except RuntimeError:
                port = 0
            if not port:
                raise OSError(f"{self.listen} is in use or cannot be bound")
            host = self._target.rpartition(":")[0]
            self.port = port
            self.address = f"{host}:{port}"
        self._server = server
        await server.start()
        log.info("plugin %r serving on %s", self.plugin.name, self.address)

    async def _start_lane(self, path: str) -> None:
        if len(os.fsencode(path)) >= 108:  # sun_path
            log.warning("plugin %r: no lane: %s is too long for a socket", self.plugin.name, path)
            return
        plugin = self.plugin
        record = max(BATCH_LIMIT, plugin.max_chunk_size + plugin.max_init_size) + 2 * _FRAMING
        lane = LaneListener(
            path, lambda context: self.mux.connect(None, context), record, plugin.lane
        )
        await lane.start()
        self.lane = lane
        self.service.transports.append("lane")
        self.service.lane_socket = path

    def _lane_busy(self) -> bool:
        lane = self.lane
        return lane is not None and any(
            c.streams for c in self.mux.connections if c.context in lane.contexts
        )

    async def wait_closed(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()

    async def stop(self, grace: float | None = 1.0) -> None:
        """Stop accepting, give running calls ``grace`` seconds, remove the socket."""
        if self._stopped or self._server is None:
            return
        self._stopped = True
        # Multiplexed connections take no new streams either (GOAWAY).
        self.mux.go_away()
        try:
            if self.lane is not None:
                await asyncio.gather(
                    self._server.stop(grace), self.lane.close(grace, self._lane_busy)
                )
            else:
                await self._server.stop(grace)
        finally:
            self._remove_socket()

    def _remove_socket(self) -> None:
        if self.unix_path is not None:
            remove_unix_socket(self.unix_path, self._socket_ino)

    async def __aenter__(self) -> PluginServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _run(plugin: Plugin, listen: str, grace: float) -> None:
    server = await plugin.start(listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        print(f"plugin {plugin.name!r} listening on {server.address}", flush=True)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.stop(grace)


def run(plugin: Plugin, listen: str, grace: float = 5.0) -> None:
    """Serve until SIGINT/SIGTERM, then stop gracefully and remove the socket."""
    asyncio.run(_run(plugin, listen, grace))
