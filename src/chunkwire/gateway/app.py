"""The ASGI application: routes ``/plugins/{id}/{rest}`` to plugin ``id`` as ``/{rest}``."""

from __future__ import annotations

import asyncio
import ctypes
import functools
import inspect
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import grpc

from .._core import DEFAULT_CHUNK_SIZE, encode_request_init
from .._paths import BadPath, route_plugin
from .._websocket import DEFAULT_MAX_MESSAGE_SIZE
from ..events.broker import Broker, InMemoryBroker
from ..events.model import DEFAULT_MAX_DATA
from ..events.service import EventsServer
from ..transport.lane import DEFAULT_SETTINGS, LaneSettings, lane_settings
from .forward import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_EMPTY_FRAMES,
    Forward,
    quiet_aborts,
    send_plain,
    send_plain_early,
)
from .request_checks import (
    DEFAULT_MAX_HEADER_COUNT,
    DEFAULT_MAX_HEADER_SIZE,
    BadRequestHead,
    RequestHead,
    read_request_head,
)
from .sse import AuthorizeTopic, EventStreams, ExpandTopic
from .types import WATCH_CLIENT, Receive, Scope, Send
from .upstream import Upstream
from .websocket import serve_websocket

log = logging.getLogger("chunkwire.gateway")

DEFAULT_IDENTITY_HEADERS = ("X-Chunkwire-User-Id",)
# Where the plugin is mounted (/plugins/{id}), for links it builds (ASGI root_path);
# set by the gateway only: a client's own value is dropped.
PREFIX_HEADER = b"x-forwarded-prefix"
_CONTEXT_FIELDS = frozenset(
    {"session_id", "request_id", "ip_address", "accept_language", "user_agent", "user_id"}
)


@dataclass
class Identity:
    """What ``authenticate`` found out about a request.

    ``context`` fills PluginContext fields (``user_id``, ``session_id``, ...);
    ``headers`` sets identity headers (only names listed in the gateway's
    ``identity_headers``). ``user_id`` also sets ``X-Chunkwire-User-Id`` when
    that name is an identity header and ``headers`` does not set it.
    """

    user_id: str = ""
    session_id: str = ""
    context: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str | bytes] = field(default_factory=dict)


class Reject(Exception):
    """Raised by ``authenticate`` to answer the request itself (401, 403, ...)."""

    def __init__(self, status: int = 401, text: str = "Unauthorized") -> None:
        super().__init__(status, text)
        self.status = status
        self.text = text


class Refused(Exception):
    """``Gateway.admit`` turned a request away; ``status`` and ``text`` are the answer."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(status, text)
        self.status = status
        self.text = text


class Admission(NamedTuple):
    """A request ``Gateway.admit`` let through: where it goes, and as whom."""

    plugin_id: str
    upstream: Upstream
    raw_rest: str
    head: RequestHead
    identity: Identity | None


AuthResult = Identity | Mapping[str, Any] | None
Authenticate = Callable[[Scope], AuthResult | Awaitable[AuthResult]]


def _identity(result: AuthResult) -> Identity | None:
    if result is None or isinstance(result, Identity):
        return result
    data = dict(result)
    headers = data.pop("headers", {}) or {}
    user_id = data.pop("user_id", "") or ""
    session_id = data.pop("session_id", "") or ""
    unknown = set(data) - _CONTEXT_FIELDS
    if unknown:
        raise ValueError(f"authenticate returned unknown fields {sorted(unknown)}")
    return Identity(user_id=user_id, session_id=session_id, context=data, headers=headers)


@functools.lru_cache(maxsize=16)
def _proto_version(http_version: str) -> tuple[str, int, int]:
    major, _, minor = http_version.partition(".")
    try:
        return f"HTTP/{major}.{minor or 0}", int(major), int(minor or 0)
    except ValueError:
        return f"HTTP/{http_version}", 1, 1


class Gateway:
    r"""ASGI app forwarding ``/plugins/{id}/...`` to chunkwire plugins over gRPC.

    ``plugins`` maps plugin ids to addresses (``unix:/path.sock`` or
    ``HOST:PORT``). ``authenticate(scope)``, sync or async, returns an
    :class:`Identity`, a mapping with the same fields (``user_id``,
    ``session_id``, ``headers``, and any other PluginContext field), or None
    for an anonymous request; raising :class:`Reject` answers the request
    with its status. Identity headers sent by the client are always removed.
    Each request carries ``X-Forwarded-Prefix: /plugins/{id}`` (what a
    client sent under that name is dropped): ASGI plugins use it as
    ``root_path``.

    ``tls``: None uses TLS (system roots) for TCP addresses that are not
    loopback and plaintext otherwise; pass ``grpc.ChannelCredentials`` to
    use them for every TCP plugin. ``mattermost`` lists plugin ids to call
    with the Mattermost method name. ``stats_path`` serves :meth:`stats` as
    JSON on that path (for tests and debugging; off by default).

    Buffering is bounded at every layer, per request (C = ``chunk_size``):

    - request body, client -> plugin: the kernel's socket buffers; uvicorn
      stops reading the socket once it holds more than 64 KiB the app has
      not received (plus the last socket read, <= 256 KiB); the gateway
      holds the ASGI message it is framing and the next one (asked for
      early to notice a disconnect), so <= 2 x 320 KiB, and one frame
      being written; gRPC holds what the plugin server's HTTP/2 stream
      window grants (chunkwire plugins: max(1 MiB, 2 C) + 1 KiB) plus that
      one write; then the plugin's own buffer. A handler that stops reading
      stops each of these in turn, back to the client's socket (measured,
      64 KiB chunks: the gateway had taken 1.8 MB from uvicorn, the client
      stalled after 6-10 MB, the rest in the two sockets' kernel buffers).
    - response, plugin -> client: the plugin's high-water mark and one
      frame; the gateway channel's fixed HTTP/2 stream window,
      max(2 C, 256 KiB) (BDP probing off, so it never grows; 256 KiB costs
      no measurable throughput at 64 KiB chunks, 128 KiB cost 40%); one
      response message in the gateway, awaiting the ASGI send; uvicorn's
      transport buffer (it waits for the socket to drain above 64 KiB);
      the kernel's socket buffers (measured with a 2 MiB/s reader: the
      handler ran 4-5 MiB ahead of it, 4.2 MB of that in the gateway
      socket's send queue).

    WebSocket handshakes on the same paths go to the plugin's
    ``@plugin.websocket`` routes, with the same authentication, identity
    headers and PluginContext. ``max_message_size`` bounds every message,
    both ways (larger ones close the session with 1009);
    ``ws_ping_interval`` (seconds, None: off) is the keep-alive ping toward
    clients. Both belong to the ASGI server's WebSocket layer too: ASGI has
    no ping message, and only the server can refuse an oversized frame
    before buffering it whole. :meth:`uvicorn_options` gives them to
    uvicorn (the CLI does); the gateway checks the limit again on every
    message it receives, so a server with a larger limit is still safe.

    ``Expect: 100-continue`` is honoured per plugin decision: "100 Continue"
    goes out only once the plugin asks for the body; a plugin answering
    first gets its answer to the client, which never sends the body.

    Event streams: ``broker`` (default :class:`~chunkwire.events.InMemoryBroker`)
    fans events out to ``GET /events/{topic}`` and
    ``GET /events/{topic}/consolidated`` (Server-Sent Events). With
    ``events_listen`` (``unix:/path.sock``, created 0600, or a loopback
    ``HOST:PORT``; any other address needs ``events_credentials``) the gRPC
    Events service runs with the ASGI lifespan, for :class:`Publisher`\ s;
    events with more than ``max_event_size`` bytes of data are refused.
    SSE requests go through ``authenticate`` (None from it: 401; without
    ``authenticate`` every client may subscribe), then
    ``authorize_topic(identity, topic)`` (True, False: 403, None: 404; sync
    or async); ``expand_topic(identity, topic)`` lists the topics merged
    into the consolidated stream (each authorized as well). A stream sends
    a keep-alive comment every ``sse_keepalive`` seconds and ends after
    ``sse_timeout`` seconds without an event. ``metrics_path`` serves
    Prometheus metrics from a registry of this gateway's own.

    ``transport``: "auto" (default) asks each plugin's Describe once and uses
    the same-host lane for a plugin on a unix socket that offers it, else the
    multiplexed Connect call when offered, else one ServeHTTP call per
    request; "lane", "mux" or "call" force one ("lane" on a TCP plugin
    address is a ValueError). ``mattermost`` plugins always get
    the call transport. ``mux_connections``: Connect calls per plugin.
    ``lane``: the gateway's side of each lane (ring size, ring threshold,
    the largest plugin ring it maps, credit and handshake timeouts; see
    :class:`~chunkwire.transport.lane.LaneSettings`).
    """

    def __init__(
        self,
        plugins: Mapping[str, str],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_body_size: int | None = None,
        response_timeout: float | None = 30.0,
        identity_headers: Iterable[str] = DEFAULT_IDENTITY_HEADERS,
        authenticate: Authenticate | None = None,
        tls: grpc.ChannelCredentials | None = None,
        mattermost: Iterable[str] = (),
        stats_path: str | None = None,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
        max_header_count: int = DEFAULT_MAX_HEADER_COUNT,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        max_empty_frames: int = DEFAULT_MAX_EMPTY_FRAMES,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        ws_ping_interval: float | None = 20.0,
        broker: Broker | None = None,
        events_listen: str | None = None,
        events_credentials: grpc.ServerCredentials | None = None,
        max_event_size: int = DEFAULT_MAX_DATA,
        authorize_topic: AuthorizeTopic | None = None,
        expand_topic: ExpandTopic | None = None,
        sse_keepalive: float = 15.0,
        sse_timeout: float | None = 300.0,
        metrics_path: str | None = None,
        transport: str = "auto",
        mux_connections: int = 1,
        lane: LaneSettings = DEFAULT_SETTINGS,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if max_message_size < 1:
            raise ValueError(f"max_message_size must be >= 1, got {max_message_size}")
        if ws_ping_interval is not None and ws_ping_interval <= 0:
            raise ValueError(f"ws_ping_interval must be > 0 or None, got {ws_ping_interval}")
        self.lane = lane_settings(lane)
        self.max_message_size = max_message_size
        self.ws_ping_interval = ws_ping_interval
        mattermost_ids = set(mattermost)
        self.chunk_size = chunk_size
        self.max_body_size = max_body_size
        self.response_timeout = response_timeout
        self.idle_timeout = idle_timeout
        self.max_header_size = max_header_size
        self.max_header_count = max_header_count
        self.max_empty_frames = max_empty_frames
        self.identity_headers = tuple(identity_headers)
        self._identity_lower = {name.lower().encode("latin-1") for name in self.identity_headers}
        # Request headers never forwarded as the client sent them.
        self._dropped_headers = frozenset(self._identity_lower | {PREFIX_HEADER})
        self._authenticate = authenticate
        self._stats_path = stats_path
        self._upstreams = {
            plugin_id: Upstream(
                plugin_id,
                address,
                chunk_size=chunk_size,
                credentials=tls if not address.startswith("unix:") else None,
                mattermost=plugin_id in mattermost_ids,
                max_response_head=max_header_size,
                transport=transport,
                mux_connections=mux_connections,
                lane=lane,
            )
            for plugin_id, address in plugins.items()
        }
        quiet_aborts()
        self._counters: dict[str, int] = {
            "requests": 0,
            "active": 0,
            "received_bytes": 0,
            "response_messages": 0,
        }
        self.broker: Broker = broker if broker is not None else InMemoryBroker()
        self._events_server = (
            EventsServer(
                self.broker,
                events_listen,
                credentials=events_credentials,
                max_data_size=max_event_size,
            )
            if events_listen is not None
            else None
        )
        self._sse = EventStreams(
            self.broker,
            identify=self.admit_events,
            reject_type=Refused,
            authorize_topic=authorize_topic,
            expand_topic=expand_topic,
            keepalive=sse_keepalive,
            timeout=sse_timeout,
        )
        self._metrics_path = metrics_path
        self._metrics = None
        if metrics_path is not None:
            # prometheus-client is imported only by gateways that serve metrics.
            from .metrics import GatewayMetrics

            self._metrics = GatewayMetrics(self._upstreams, self.broker.stats, self._sse.stats)

    def uvicorn_options(self) -> dict[str, Any]:
        """The WebSocket settings of uvicorn that match this gateway's."""
        return {
            "ws_max_size": self.max_message_size,
            "ws_ping_interval": self.ws_ping_interval,
            "ws_ping_timeout": self.ws_ping_interval,
        }

    # -- ASGI -----------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            metrics = self._metrics
            if metrics is not None:
                plugin_stats = metrics.plugin_of(scope["path"])
                if plugin_stats is not None:
                    await metrics.track(plugin_stats, scope, receive, send, self._http)
                    return
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await serve_websocket(self, scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            try:
                message = await receive()
            except asyncio.CancelledError:
                # The server is being torn down without a shutdown event (a
                # second Ctrl-C): nothing is left to wait for.
                return
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as error:
                    await self.aclose()
                    text = str(error).strip().splitlines()
                    await send(
                        {
                            "type": "lifespan.startup.failed",
                            "message": text[0] if text else type(error).__name__,
                        }
                    )
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def end_event_streams(self) -> None:
        """End every SSE stream cleanly; call it when the server starts to stop,
        before it waits for open connections (the CLI does)."""
        self._sse.end_all()

    @property
    def events_address(self) -> str | None:
        """Where publishers reach the Events service (the bound port for ``HOST:0``)."""
        return self._events_server.address if self._events_server is not None else None

    async def start(self) -> None:
        """Start the broker and the Events service (the ASGI lifespan calls this)."""
        await self.broker.start()
        if self._events_server is not None:
            await self._events_server.start()

    async def aclose(self) -> None:
        """Close every plugin channel (they reopen on the next request), stop events."""
        if self._events_server is not None:
            await self._events_server.stop()
        await self.broker.close()
        for upstream in self._upstreams.values():
            await upstream.close()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path.startswith("/events/"):
            await self._sse.handle(scope, receive, send)
            return
        if self._metrics is not None and path == self._metrics_path:
            await self._metrics.serve(send)
            return
        if self._stats_path is not None and path == self._stats_path:
            body = json.dumps(self.stats()).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        try:
            admitted = await self.admit(scope)
        except Refused as refused:
            await send_plain(send, refused.status, refused.text, close=refused.status != 404)
            return
        plugin_id, upstream, head = admitted.plugin_id, admitted.upstream, admitted.head
        content_length = head.content_length
        expect_continue = head.expect_continue
        if self.max_body_size is not None and content_length > self.max_body_size:
            self._counters["too_large"] = self._counters.get("too_large", 0) + 1
            if expect_continue:
                # The client waits for "100 Continue" before sending the body:
                # answer without reading (receive() would invite the body).
                await send_plain(send, 413, "Request Entity Too Large", close=True)
            else:
                await send_plain_early(receive, send, 413, "Request Entity Too Large")
            return

        init, request_id = self._request_init(scope, admitted)
        try:
            call = await upstream.open_call()
        except Exception as error:  # a bad target or credentials
            log.warning("plugin %r: cannot open a call: %s", plugin_id, error)
            await send_plain(send, 503, "Service Unavailable", close=True)
            return
        counters = self._counters
        counters["requests"] += 1
        counters["active"] += 1
        extensions = scope.get("extensions")
        try:
            await Forward(
                call,
                receive,
                send,
                init,
                plugin_id=plugin_id,
                chunk_size=self.chunk_size,
                max_body_size=self.max_body_size,
                response_timeout=self.response_timeout,
                stats=counters,
                body_expected=content_length > 0 or head.chunked,
                # Mattermost-method plugins never ask for the body: 100 at once.
                expect_continue=expect_continue and not upstream.mattermost,
                method=scope["method"],
                request_id=request_id,
                idle_timeout=self.idle_timeout,
                max_empty_frames=self.max_empty_frames,
                watch_client=extensions.get(WATCH_CLIENT) if extensions else None,
            ).run()
        finally:
            counters["active"] -= 1

    async def admit(self, scope: Scope) -> Admission:
        """Route, check and authenticate a request or WebSocket handshake.

        Raises Refused with the status to answer: 404 (no such plugin), 400
        (an ambiguous path, a bad Host), 431 (header limits), or the
        status of ``authenticate``'s Reject. ``authenticate`` sees
        ``scope["chunkwire.plugin_id"]`` and ``scope["chunkwire.plugin_path"]``,
        the decoded path the plugin routes on (equal to ``scope["path"]``
        minus the prefix: see chunkwire._paths).
        """
        path: str = scope["path"]
        raw_path: bytes = scope.get("raw_path") or path.encode()
        try:
            routed = route_plugin(raw_path.decode("latin-1"))
        except BadPath as error:
            raise Refused(400, f"Bad Request: {error}") from None
        upstream = self._upstreams.get(routed[0]) if routed is not None else None
        if routed is None or upstream is None:
            raise Refused(404, "Not Found")
        plugin_id, raw_rest, plugin_path = routed
        head = self._checked_head(scope, f"plugin {plugin_id!r}")
        scope["chunkwire.plugin_id"] = plugin_id
        scope["chunkwire.plugin_path"] = plugin_path
        identity = None if self._authenticate is None else await self._authenticated(scope)
        return Admission(plugin_id, upstream, raw_rest, head, identity)

    async def admit_events(self, scope: Scope) -> tuple[bool, Identity | None]:
        """``admit``'s checks for an event stream: header limits, Host, authenticate.

        Returns (authenticated, identity): without ``authenticate`` every
        client counts as authenticated; with it, None from it does not.
        """
        self._checked_head(scope, "events")
        identity = await self._authenticated(scope)
        return self._authenticate is None or identity is not None, identity

    def _checked_head(self, scope: Scope, where: str) -> RequestHead:
        try:
            return read_request_head(
                scope["headers"], max_size=self.max_header_size, max_count=self.max_header_count
            )
        except BadRequestHead as error:
            log.info("%s: %d %s", where, error.status, error.reason)
            raise Refused(error.status, error.reason) from None

    async def _authenticated(self, scope: Scope) -> Identity | None:
        if self._authenticate is None:
            return None
        try:
            result = self._authenticate(scope)
            if inspect.isawaitable(result):
                result = await result
            return _identity(result)
        except Reject as reject:
            raise Refused(reject.status, reject.text) from None

    def _request_init(self, scope: Scope, admitted: Admission) -> tuple[bytes, str]:
        """The serialized request init message, and the request id it carries."""
        head = admitted.head
        identity = admitted.identity
        identity_lower = self._identity_lower
        dropped = self._dropped_headers
        headers: list[tuple[bytes, bytes]] = []
        host = head.host.decode("latin-1") if head.host is not None else ""
        user_agent = accept_language = ""
        for name, value in scope["headers"]:
            if name in dropped:
                continue
            if name == b"user-agent":
                user_agent = value.decode("latin-1")
            elif name == b"accept-language":
                accept_language = value.decode("latin-1")
            headers.append((name, value))
        headers.append((PREFIX_HEADER, f"/plugins/{admitted.plugin_id}".encode()))

        # 128 random bits as 32 hex digits, as uuid4().hex gave, at a fifth
        # of its cost.
        request_id = os.urandom(16).hex()
        client = scope.get("client")
        ip_address = client[0] if client else ""
        session_id = user_id = ""
        if identity is not None:
            extra: dict[str, str | bytes] = dict(identity.headers)
            for name in extra:
                if name.lower().encode("latin-1") not in identity_lower:
                    raise ValueError(f"{name!r} is not one of the identity headers")
            if identity.user_id:
                user_id = identity.user_id
                if b"x-chunkwire-user-id" in identity_lower and not any(
                    name.lower() == "x-chunkwire-user-id" for name in extra
                ):
                    extra["X-Chunkwire-User-Id"] = identity.user_id
            session_id = identity.session_id
            if identity.context:
                fields = {
                    "session_id": session_id,
                    "request_id": request_id,
                    "ip_address": ip_address,
                    "accept_language": accept_language,
                    "user_agent": user_agent,
                    "user_id": user_id,
                }
                for key, value in identity.context.items():
                    if key not in fields:
                        raise ValueError(f"{key!r} is not a PluginContext field")
                    fields[key] = value
                session_id, request_id, ip_address = (
                    fields["session_id"], fields["request_id"], fields["ip_address"]
                )
                accept_language, user_agent, user_id = (
                    fields["accept_language"], fields["user_agent"], fields["user_id"]
                )
            headers.extend(
                (name.encode("latin-1"), value if isinstance(value, bytes) else value.encode())
                for name, value in extra.items()
            )

        if not host:
            server = scope.get("server")
            if server:
                host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
        query: bytes = scope.get("query_string", b"")
        target = admitted.raw_rest  # the raw path, as latin-1 text
        if query:
            target += "?" + query.decode("latin-1")
        proto, major, minor = _proto_version(scope.get("http_version", "1.1"))
        message = encode_request_init(
            (session_id, request_id, ip_address, accept_language, user_agent, user_id),
            scope["method"],
            f"{scope.get('scheme', 'http')}://{host}{target}",
            proto,
            major,
            minor,
            headers,
            host,
            f"{client[0]}:{client[1]}" if client else "",
            target,
            head.content_length,
        )
        return message, request_id

    # -- introspection --------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters, open gRPC calls per plugin, asyncio task count, memory (kB)."""
        data: dict[str, Any] = dict(self._counters)
        data["calls"] = {pid: up.active_calls() for pid, up in self._upstreams.items()}
        events = self.broker.stats
        data["events"] = {
            "published": events.published,
            "delivered": self._sse.stats.delivered,
            "dropped": events.dropped,
            "publish_failed": events.publish_failed,
            "subscribers": events.subscribers,
            "streams": self._sse.stats.streams,
        }
        data["mux_streams"] = {pid: up.open_streams() for pid, up in self._upstreams.items()}
        try:
            data["tasks"] = len(asyncio.all_tasks())
        except RuntimeError:
            data["tasks"] = 0
        data.update(memory_kb())
        return data


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
            "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]


def _malloc_in_use() -> int | None:
    # glibc's count of bytes handed out by malloc: unlike RSS it sees a leak
    # of a few dozen bytes per request (grpc/grpc#43360 leaks 80-byte arrays).
    try:
        libc = ctypes.CDLL(None)
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)


def memory_kb() -> dict[str, int]:
    """VmRSS and VmHWM of this process in kB, and malloc'd bytes (Linux; empty elsewhere)."""
    out: dict[str, int] = {}
    in_use = _malloc_in_use()
    if in_use is not None:
        out["malloc_bytes"] = in_use
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key.lower()] = int(value.split()[0])
    except OSError:
        pass
    return out
