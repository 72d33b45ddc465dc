"""One gRPC channel per plugin, created on first use and shared by its requests."""

from __future__ import annotations

import ipaddress
from typing import Any

import grpc
import grpc.aio

from .._websocket import SERVE_WEBSOCKET_METHOD
from .._wire import MATTERMOST_SERVE_HTTP_METHOD, SERVE_HTTP_METHOD, grpc_target

# Reconnect quickly after a plugin restarts: gRPC's default backoff grows to
# two minutes, during which every request would get 503.
_RECONNECT_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
    ("grpc.keepalive_time_ms", 60_000),
]

_INIT_HEADROOM = 16 * 1024 * 1024


# HTTP/2 flow control of the responses the gateway receives: a fixed stream
# window (no BDP probing, which grows it to megabytes) bounds the response
# bytes in flight from a plugin to one slow client's stream. The window the
# plugin's server grants bounds the request direction the same way.
_MIN_WINDOW = 256 * 1024


def stream_window(chunk_size: int) -> int:
    """Initial HTTP/2 stream window of a gateway channel: two chunks, at least 256 KiB."""
    return min(max(2 * chunk_size, _MIN_WINDOW), 0x7FFFFFFF)


def channel_options(chunk_size: int) -> list[tuple[str, Any]]:
    limit = chunk_size + _INIT_HEADROOM
    return [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", stream_window(chunk_size)),
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
    """The channel to one plugin; gRPC reconnects it by itself when the plugin restarts."""

    def __init__(
        self,
        plugin_id: str,
        address: str,
        *,
        chunk_size: int,
        credentials: grpc.ChannelCredentials | None = None,
        mattermost: bool = False,
    ) -> None:
        self.plugin_id = plugin_id
        self.address = address
        self.target = grpc_target(address)
        self._options = channel_options(chunk_size)
        # TLS on anything that leaves the machine, unless credentials say otherwise.
        if credentials is None and not is_loopback(address):
            credentials = grpc.ssl_channel_credentials()
        self._credentials = credentials
        self.mattermost = mattermost
        self._method = MATTERMOST_SERVE_HTTP_METHOD if mattermost else SERVE_HTTP_METHOD
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._ws_stub: Any = None

    @property
    def channel(self) -> grpc.aio.Channel | None:
        return self._channel

    def open_call(self) -> grpc.aio.StreamStreamCall:
        """Start one ServeHTTP stream (raw bytes both ways)."""
        if self._stub is None:
            self._stub = self._open_channel().stream_stream(
                self._method, request_serializer=None, response_deserializer=None
            )
        return self._stub()

    def open_websocket(self) -> grpc.aio.StreamStreamCall:
        """Start one ServeWebSocket stream (raw bytes both ways)."""
        if self._ws_stub is None:
            self._ws_stub = self._open_channel().stream_stream(
                SERVE_WEBSOCKET_METHOD, request_serializer=None, response_deserializer=None
            )
        return self._ws_stub()

    def _open_channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
            else:
                self._channel = grpc.aio.secure_channel(
                    self.target, self._credentials, options=self._options
                )
        return self._channel

    def active_calls(self) -> int:
        if self._channel is None:
            return 0
        calls = getattr(self._channel, "_active_calls", None)
        return len(calls) if calls is not None else -1

    async def close(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        self._ws_stub = None
        if channel is not None:
            await channel.close()
