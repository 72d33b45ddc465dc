"""One gRPC channel per plugin, created on first use and shared by its requests.

Requests travel on the transport chosen once per plugin: the same-host
lane ("lane") to a plugin on a unix socket that offers one, the
multiplexed Connect call ("mux") when the plugin's Describe offers it, one
ServeHTTP call per request ("call") otherwise. Both hand the gateway a call-shaped
object, so Forward, and every rule it enforces, runs the same on either.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from typing import Any

import grpc
import grpc.aio

from .._proto import plugin_pb2
from .._websocket import SERVE_WEBSOCKET_METHOD
from .._wire import (
    DESCRIBE_METHOD,
    MATTERMOST_SERVE_HTTP_METHOD,
    SERVE_HTTP_METHOD,
    flow_window,
    grpc_target,
)
from ..transport.lane import DEFAULT_SETTINGS, LaneCarrier, LaneSettings, lane_or_unavailable
from ..transport.negotiate import TransportChoice
from ..transport.opener import MuxPool
from ..transport.sender import BATCH_LIMIT
from ..transport.session import SessionCall

log = logging.getLogger("chunkwire.gateway")
_DESCRIBE_TIMEOUT = 5.0

# Reconnect quickly after a plugin restarts: gRPC's default backoff grows to
# two minutes, during which every request would get 503. The minimum
# "backoff" is also each connection attempt's timeout in gRPC core
# (min_connect_timeout): at 100 ms a loaded machine failed handshakes with a
# live plugin (spurious 503s), so attempts get 5 s while retries after a
# refused connection still start 100 ms apart.
CONNECT_TIMEOUT_MS = 5000
_RECONNECT_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", CONNECT_TIMEOUT_MS),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
    ("grpc.keepalive_time_ms", 60_000),
]

# A response message carries one chunk, and the first one the response head:
# the gateway takes no more than that, so a plugin cannot make it hold a
# message far larger than a chunk per client.
DEFAULT_MAX_RESPONSE_HEAD = 64 * 1024
_FRAMING = 1024


# HTTP/2 flow control of the responses the gateway receives: a fixed stream
# window (no BDP probing, which grows it to megabytes) bounds the response
# bytes in flight from a plugin to one slow client's stream. The window the
# plugin's server grants bounds the request direction the same way.
_MIN_WINDOW = 256 * 1024


def stream_window(chunk_size: int) -> int:
    """Initial HTTP/2 stream window of a gateway channel: two chunks, at least 256 KiB."""
    return min(max(2 * chunk_size, _MIN_WINDOW), 0x7FFFFFFF)


def channel_options(
    chunk_size: int, max_response_head: int = DEFAULT_MAX_RESPONSE_HEAD
) -> list[tuple[str, Any]]:
    return [
        # Request messages: one chunk, the first with the init (whose
        # headers the gateway bounds before sending).
        ("grpc.max_send_message_length", chunk_size + max_response_head + _FRAMING),
        ("grpc.max_receive_message_length", chunk_size + max_response_head + _FRAMING),
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", stream_window(chunk_size)),
        *_RECONNECT_OPTIONS,
    ]


def mux_window(chunk_size: int) -> int:
    """Credit a plugin's response gets per mux stream: ``flow_window`` (1 MiB at 64 KiB chunks).

    A download moves at most one window per round trip of credit, and a
    round trip through two grpc.aio processes takes milliseconds: measured
    with 64 KiB chunks, 256 KiB windows held 1 GiB downloads near 250 MB/s,
    1 MiB near 300-460 MB/s (load 8-13). The connection's window (16 MiB)
    bounds what all streams together make the gateway hold.
    """
    return flow_window(chunk_size)


def lane_window(chunk_size: int) -> int:
    """Credit per stream on a same-host lane: two mux windows (2 MiB at 64 KiB chunks).

    A lane download moves one window per record each way, so the plugin
    idles while the gateway turns a window into credit. Measured with 512
    MiB downloads, 64 KiB chunks (load 2.3): 1 MiB windows 870-1150 MB/s,
    2 MiB 1050-1400, 4 MiB 1300-1530, at gateway peak RSS 62, 65 and 71
    MiB; two windows keep a download-heavy gateway well inside 64 MiB plus
    the ring.
    """
    return 2 * mux_window(chunk_size)


def mux_channel_options(
    chunk_size: int, max_response_head: int = DEFAULT_MAX_RESPONSE_HEAD
) -> list[tuple[str, Any]]:
    """The Connect call's own channel: messages are batches, up to BATCH_LIMIT
    or one frame (a chunk and a response head) when that is larger. The
    gateway holds one received batch at a time per connection; what it
    keeps of each stream is bounded by that stream's credit. The HTTP/2
    window is two stream windows, so that gRPC's own flow control does not
    halve what the mux credit lets through (four measured no faster, and
    cost the gateway 1-2 MiB of peak RSS)."""
    message = max(BATCH_LIMIT, chunk_size + max_response_head) + 2 * _FRAMING
    return [
        ("grpc.max_send_message_length", message),
        ("grpc.max_receive_message_length", message),
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", max(2 * mux_window(chunk_size), 2 * message)),
        *_RECONNECT_OPTIONS,
    ]


def is_loopback(address: str) -> bool:
    """True for unix sockets and TCP addresses on the loopback interface."""
    if address.startswith("unix:"):
        return True
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Upstream:
    """The channel to one plugin; gRPC reconnects it by itself when the plugin restarts.

    Each time the channel (re)connects, the plugin is asked to ``Describe``
    itself and the answer is logged: its name and chunkwire version at INFO,
    a different identity than before at the same address, or a peer that
    does not describe itself, at WARNING (a process squatting a plugin's
    socket shows up there).
    """

    def __init__(
        self,
        plugin_id: str,
        address: str,
        *,
        chunk_size: int,
        credentials: grpc.ChannelCredentials | None = None,
        mattermost: bool = False,
        max_response_head: int = DEFAULT_MAX_RESPONSE_HEAD,
        transport: str = "auto",
        mux_connections: int = 1,
        lane: LaneSettings = DEFAULT_SETTINGS,
    ) -> None:
        self.plugin_id = plugin_id
        self.address = address
        self.target = grpc_target(address)
        self._options = channel_options(chunk_size, max_response_head)
        # TLS on anything that leaves the machine, unless credentials say otherwise.
        if credentials is None and not is_loopback(address):
            credentials = grpc.ssl_channel_credentials()
        self._credentials = credentials
        self.mattermost = mattermost
        self._method = MATTERMOST_SERVE_HTTP_METHOD if mattermost else SERVE_HTTP_METHOD
        self.chunk_size = chunk_size
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._watcher: asyncio.Task[None] | None = None
        self._describing: asyncio.Future[plugin_pb2.PluginInfo] | None = None
        self.info: plugin_pb2.PluginInfo | None = None
        self._ws_stub: Any = None
        self._ws_streams: bool | None = None  # sessions as mux streams (Describe)
        # The Mattermost method name means a Mattermost-style peer: no mux.
        self.choice = TransportChoice(
            plugin_id,
            "call" if mattermost else transport,
            self.describe,
            log,
            forced_why="Mattermost method" if mattermost else "set by configuration",
            address=address,
            lane=lane,
        )
        self._mux_options = mux_channel_options(chunk_size, max_response_head)
        self._mux_channel: grpc.aio.Channel | None = None
        self._pool = MuxPool(
            self._ensure_mux_channel,
            window=mux_window(chunk_size),
            size=mux_connections,
            batch_limit=self._batch_limit,
        )
        lane_record = max(BATCH_LIMIT, chunk_size + max_response_head) + 2 * _FRAMING
        self._lane_pool = MuxPool(
            None,
            window=lane_window(chunk_size),
            size=mux_connections,
            batch_limit=self._batch_limit,
            carrier_factory=lambda: LaneCarrier(plugin_id, self._lane_path, lane_record, lane),
        )

    @property
    def channel(self) -> grpc.aio.Channel | None:
        return self._channel

    def _ensure_channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(self.target, options=self._options)
            else:
                channel = grpc.aio.secure_channel(
                    self.target, self._credentials, options=self._options
                )
            self._channel = channel
            self._stub = channel.stream_stream(
                self._method, request_serializer=None, response_deserializer=None
            )
            self._watcher = asyncio.get_running_loop().create_task(self._watch(channel))
        return self._channel

    def _ensure_mux_channel(self) -> grpc.aio.Channel:
        # Its own HTTP/2 connection: batches need a larger message limit
        # than ServeHTTP messages, and no ServeHTTP or WebSocket call
        # shares its flow-control window.
        if self._mux_channel is None:
            if self._credentials is None:
                self._mux_channel = grpc.aio.insecure_channel(
                    self.target, options=self._mux_options
                )
            else:
                self._mux_channel = grpc.aio.secure_channel(
                    self.target, self._credentials, options=self._mux_options
                )
        return self._mux_channel

    def _batch_limit(self) -> int:
        """Batches the plugin accepts: within its message limit, as Describe states it."""
        info = self.choice.info
        if info is None or not info.max_chunk_size or not info.max_init_size:
            return BATCH_LIMIT
        return max(1, min(BATCH_LIMIT, info.max_chunk_size + info.max_init_size))

    async def _lane_path(self) -> str:
        """Where the plugin's lane socket is, as its Describe says (asked if not yet)."""
        info = self.choice.info or self.info
        if info is None:
            info = await self.describe()
        return lane_or_unavailable(self.address, info, f"plugin {self.plugin_id!r}")

    async def open_call(self) -> Any:
        """One request's stream: a ServeHTTP call, or a stream on a Connect call or lane."""
        chosen = await self.choice.get()
        if chosen == "mux":
            return self._pool.open_call()
        if chosen == "lane":
            return self._lane_pool.open_call()
        self._ensure_channel()
        return self._stub()

    def open_streams(self) -> int:
        """Streams open on the multiplexed connections (0 once all ended)."""
        return self._pool.open_streams() + self._lane_pool.open_streams()

    async def open_websocket(self) -> tuple[Any, str]:
        """One WebSocket session's call and its transport: a stream on the
        plugin's multiplexed connection ("mux" or "lane") when its Describe
        lists "websocket" in ``mux_streams``, else a ServeWebSocket call
        ("call"; raw bytes both ways)."""
        chosen = await self.choice.get()
        if chosen in ("mux", "lane") and await self._session_streams(chosen):
            pool = self._pool if chosen == "mux" else self._lane_pool
            return pool.open_call(SessionCall), chosen
        if self._ws_stub is None:
            self._ws_stub = self._ensure_channel().stream_stream(
                SERVE_WEBSOCKET_METHOD, request_serializer=None, response_deserializer=None
            )
        return self._ws_stub(), "call"

    async def _session_streams(self, chosen: str) -> bool:
        """Whether the plugin takes WebSocket sessions as streams (asked once, logged once)."""
        offered = self._ws_streams
        if offered is None:
            info = self.choice.info or self.info
            if info is None:
                try:
                    info = await self.describe()
                except grpc.aio.AioRpcError as error:
                    if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                        return False  # not reachable now: ask again next time
                    info = plugin_pb2.PluginInfo()
            offered = "websocket" in info.mux_streams
            if self._ws_streams is None:  # not decided by a session that asked meanwhile
                self._ws_streams = offered
                how = f"streams on the {chosen} transport" if offered else "ServeWebSocket calls"
                log.info("plugin %r: WebSocket sessions as %s", self.plugin_id, how)
        return offered

    async def describe(self) -> plugin_pb2.PluginInfo:
        """Ask the plugin who it is (``chunkwire.v1.Plugin/Describe``).

        Callers that ask while a question is out share its answer: on a new
        channel the transport choice and the connection watch both ask.
        """
        asking = self._describing
        if asking is None or asking.done():
            asking = self._describing = asyncio.ensure_future(self._ask())
        return await asyncio.shield(asking)

    async def _ask(self) -> plugin_pb2.PluginInfo:
        method = self._ensure_channel().unary_unary(
            DESCRIBE_METHOD,
            request_serializer=None,
            response_deserializer=plugin_pb2.PluginInfo.FromString,
        )
        return await method(b"", timeout=_DESCRIBE_TIMEOUT)

    async def _watch(self, channel: grpc.aio.Channel) -> None:
        try:
            state = channel.get_state(try_to_connect=True)
            while True:
                if state == grpc.ChannelConnectivity.READY:
                    await self._introduce()
                await channel.wait_for_state_change(state)
                state = channel.get_state()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the channel was closed under it
            log.debug("plugin %r: connection watch ended: %r", self.plugin_id, error)

    async def _introduce(self) -> None:
        where = f"plugin {self.plugin_id!r} at {self.address}"
        try:
            if self.info is None and self.choice.info is not None:
                # The first connection: the transport choice asked on it already.
                info = self.choice.info
            else:
                info = await self.describe()
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                log.debug("%s: Describe failed: %s", where, error.details())
            elif self.mattermost:
                log.info("%s: a Mattermost-method plugin (no Describe)", where)
            else:
                log.warning("%s: the peer does not describe itself (no chunkwire plugin?)", where)
            return
        previous, self.info = self.info, info
        text = f"{where} is {info.name!r} (chunkwire {info.version}, {', '.join(info.transports)})"
        if previous is not None and (previous.name, previous.version) != (info.name, info.version):
            log.warning("%s; it was %r (chunkwire %s)", text, previous.name, previous.version)
        else:
            log.info("%s", text)
        if info.max_chunk_size and self.chunk_size > info.max_chunk_size:
            log.warning(
                "%s accepts chunks of at most %d bytes; the gateway sends %d: requests will fail",
                where, info.max_chunk_size, self.chunk_size,
            )
        if info.chunk_size > self.chunk_size:
            log.warning(
                "%s sends chunks of %d bytes; the gateway takes %d: responses will fail",
                where, info.chunk_size, self.chunk_size,
            )

    def active_calls(self) -> int:
        """gRPC calls open on this plugin's channels (a Connect call counts once)."""
        total = 0
        for channel in (self._channel, self._mux_channel):
            if channel is not None:
                calls = getattr(channel, "_active_calls", None)
                if calls is None:
                    return -1
                total += len(calls)
        return total

    async def close(self) -> None:
        await self._pool.close()
        await self._lane_pool.close()
        mux_channel, self._mux_channel = self._mux_channel, None
        if mux_channel is not None:
            await mux_channel.close()
        channel, self._channel, self._stub = self._channel, None, None
        self._ws_stub = None
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if channel is not None:
            await channel.close()
