"""Plugin: a named set of routes, served over gRPC."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._wire import DEFAULT_CHUNK_SIZE
from ..transport.lane import DEFAULT_SETTINGS, LaneSettings, lane_settings

DEFAULT_HIGH_WATER_MARK = 65536
DEFAULT_FINISH_TIMEOUT = 30.0
DEFAULT_MAX_INIT_SIZE = 1 << 20
DEFAULT_MAX_HEADER_COUNT = 1000

if TYPE_CHECKING:
    from .request import Request
    from .response import Response
    from .server import PluginServer
    from .websocket import WebSocket

Handler = Callable[["Request", "Response"], Awaitable[None]]
WebSocketHandler = Callable[["WebSocket"], Awaitable[None]]

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(str|path|int))?\}")
_CONVERTERS = {"str": "[^/]+", "path": ".*", "int": "[0-9]+"}


@dataclass(frozen=True)
class Route:
    path: str
    methods: frozenset[str] | None
    handler: Handler
    pattern: re.Pattern[str]
    param_names: tuple[str, ...]

    def match(self, path: str) -> dict[str, str] | None:
        m = self.pattern.fullmatch(path)
        if m is None:
            return None
        return m.groupdict()


@dataclass(frozen=True)
class WebSocketRoute:
    path: str
    handler: WebSocketHandler
    pattern: re.Pattern[str]
    param_names: tuple[str, ...]
    max_message_size: int | None


def compile_path(path: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """``/files/{name}`` → a regex; ``{name:path}`` also matches slashes, ``{n:int}`` digits."""
    if not path.startswith("/"):
        raise ValueError(f"route path must start with '/', got {path!r}")
    regex = []
    names: list[str] = []
    pos = 0
    for m in _PARAM.finditer(path):
        regex.append(re.escape(path[pos : m.start()]))
        name, kind = m.group(1), m.group(2) or "str"
        if name in names:
            raise ValueError(f"duplicate path parameter {name!r} in {path!r}")
        names.append(name)
        regex.append(f"(?P<{name}>{_CONVERTERS[kind]})")
        pos = m.end()
    rest = path[pos:]
    if "{" in rest or "}" in rest:
        raise ValueError(f"malformed path parameter in {path!r}")
    regex.append(re.escape(rest))
    return re.compile("".join(regex)), tuple(names)


class Plugin:
    """HTTP routes served to a chunkwire gateway over gRPC streams.

    ``chunk_size`` bounds the response body chunks this plugin sends (the
    request side is chosen by the sender). With ``mattermost_compat`` the
    servicer also answers at ``/mattermost.pluginapi.v1.PluginHooks/ServeHTTP``.
    ``high_water_mark`` is each response's default (settable per response):
    64 KiB, or ``chunk_size`` if larger.
    ``finish_timeout`` bounds how long a call waits, after its last frame, for
    the gateway's acknowledgement that the client has the response
    (``response.finished`` then raises TimeoutError; the RPC ends OK).

    What the plugin accepts from any peer that can reach its socket:
    request body chunks of at most ``max_chunk_size`` bytes (default 1 MiB,
    or ``chunk_size`` if larger), request inits of at most
    ``max_init_size`` bytes (1 MiB) with at most ``max_header_count``
    header values (1,000). gRPC refuses larger messages before they are
    parsed; a peer past a limit gets INVALID_ARGUMENT (a chunkwire gateway
    never gets there: it answers 431 for more than 64 KiB of headers).
    ``transports`` lists what the plugin offers to gateways and clients:
    "call" (one ServeHTTP call per request, always served), "mux" (many
    requests on one Connect call, docs/protocol.md) and "lane" (the mux's
    frames on a unix socket next to the plugin's own, for same-host
    gateways; only when listening on a unix socket). ``lane``: the plugin's
    side of each lane (:class:`~chunkwire.transport.lane.LaneSettings`:
    its ring's size, the body size that goes through it, the largest
    gateway ring it maps, credit and handshake timeouts).
    """

    def __init__(
        self,
        name: str,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        mattermost_compat: bool = False,
        high_water_mark: int | None = None,
        finish_timeout: float = DEFAULT_FINISH_TIMEOUT,
        max_chunk_size: int | None = None,
        max_init_size: int = DEFAULT_MAX_INIT_SIZE,
        max_header_count: int = DEFAULT_MAX_HEADER_COUNT,
        transports: Iterable[str] = ("call", "mux", "lane"),
        lane: LaneSettings = DEFAULT_SETTINGS,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if high_water_mark is None:
            # Below the chunk size, every write would leave as a short frame.
            high_water_mark = max(DEFAULT_HIGH_WATER_MARK, chunk_size)
        if high_water_mark < 1:
            raise ValueError(f"high_water_mark must be >= 1, got {high_water_mark}")
        if not finish_timeout > 0:
            raise ValueError(f"finish_timeout must be > 0, got {finish_timeout}")
        if max_chunk_size is None:
            max_chunk_size = max(1 << 20, chunk_size)
        for option, value in (
            ("max_chunk_size", max_chunk_size),
            ("max_init_size", max_init_size),
            ("max_header_count", max_header_count),
        ):
            if value < 1:
                raise ValueError(f"{option} must be >= 1, got {value}")
        self.max_chunk_size = max_chunk_size
        self.max_init_size = max_init_size
        self.max_header_count = max_header_count
        transports = tuple(transports)
        unknown = set(transports) - {"call", "mux", "lane"}
        lane_alone = "lane" in transports and "mux" not in transports
        if unknown or "call" not in transports or lane_alone:
            raise ValueError(
                "transports must include 'call' and may add 'mux', and 'lane' with 'mux', "
                f"got {transports}"
            )
        self.transports = transports
        self.lane = lane_settings(lane)
        self.high_water_mark = high_water_mark
        self.finish_timeout = finish_timeout
        self.name = name
        self.chunk_size = chunk_size
        self.mattermost_compat = mattermost_compat
        self.routes: list[Route] = []
        # Routes without parameters by path, and the others, with their
        # places in ``routes``; rebuilt when ``routes`` changes length.
        self._index: tuple[list[Route], int, dict[str, list[tuple[int, Route]]],
                           list[tuple[int, Route]]] | None = None
        self.websocket_routes: list[WebSocketRoute] = []

    def route(
        self, path: str, methods: Iterable[str] | None = None
    ) -> Callable[[Handler], Handler]:
        """Register ``async def handler(request, response)`` for ``path``.

        ``methods`` None accepts any method. Routes are tried in registration
        order; the first whose path and method match wins.
        """
        if isinstance(methods, str):
            raise TypeError("methods must be a list of method names, not a str")
        pattern, names = compile_path(path)
        allowed = None if methods is None else frozenset(m.upper() for m in methods)

        def register(handler: Handler) -> Handler:
            self.routes.append(Route(path, allowed, handler, pattern, names))
            return handler

        return register

    def add_route(self, path: str, handler: Handler, methods: Iterable[str] | None = None) -> None:
        self.route(path, methods)(handler)

    def match(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], list[str]]:
        """(handler, path_params, allowed_methods); handler None means 404 or 405."""
        index = self._index
        routes = self.routes
        if index is None or index[0] is not routes or index[1] != len(routes):
            index = self._index = self._build_index()
        candidates = index[2].get(path, ())
        if index[3]:
            # Parametric routes: in registration order among the exact ones.
            matched = [item for item in index[3] if item[1].pattern.fullmatch(path)]
            if matched:
                candidates = sorted([*candidates, *matched], key=lambda item: item[0])
        allowed: set[str] = set()
        for _, route in candidates:
            if route.methods is None or method in route.methods:
                return route.handler, (route.match(path) or {}) if route.param_names else {}, []
            allowed |= route.methods
        if candidates:
            return None, {}, sorted(allowed)
        return None, {}, []

    def _build_index(
        self,
    ) -> tuple[list[Route], int, dict[str, list[tuple[int, Route]]], list[tuple[int, Route]]]:
        exact: dict[str, list[tuple[int, Route]]] = {}
        parametric: list[tuple[int, Route]] = []
        for place, route in enumerate(self.routes):
            if route.param_names:
                parametric.append((place, route))
            else:
                exact.setdefault(route.path, []).append((place, route))
        return self.routes, len(self.routes), exact, parametric

    def websocket(
        self, path: str, *, max_message_size: int | None = None
    ) -> Callable[[WebSocketHandler], WebSocketHandler]:
        """Register ``async def handler(ws)`` for WebSocket sessions on ``path``.

        Paths are written as for :meth:`route`. A session's message limit is
        the gateway's (``Gateway(max_message_size=...)``), or
        ``max_message_size`` here when that is smaller.
        """
        pattern, names = compile_path(path)
        if max_message_size is not None and max_message_size < 1:
            raise ValueError(f"max_message_size must be >= 1, got {max_message_size}")

        def register(handler: WebSocketHandler) -> WebSocketHandler:
            self.websocket_routes.append(
                WebSocketRoute(path, handler, pattern, names, max_message_size)
            )
            return handler

        return register

    def match_websocket(
        self, path: str
    ) -> tuple[WebSocketHandler | None, dict[str, str], int | None]:
        """(handler, path_params, max_message_size); handler None means 404."""
        for route in self.websocket_routes:
            m = route.pattern.fullmatch(path)
            if m is not None:
                return route.handler, m.groupdict(), route.max_message_size
        return None, {}, None

    # -- serving ---------------------------------------------------------------

    async def start(self, listen: str) -> PluginServer:
        """Start serving on ``listen`` (``unix:/path.sock`` or ``HOST:PORT``)."""
        from .server import PluginServer

        server = PluginServer(self, listen)
        await server.start()
        return server

    @asynccontextmanager
    async def serving(self, listen: str) -> AsyncIterator[PluginServer]:
        """``async with plugin.serving("127.0.0.1:0") as server: server.address``."""
        server = await self.start(listen)
        try:
            yield server
        finally:
            await server.stop()

    async def serve(self, listen: str) -> None:
        """Serve until cancelled, then stop cleanly."""
        server = await self.start(listen)
        try:
            await server.wait_closed()
        finally:
            await server.stop()

    def run(self, listen: str) -> None:
        """Serve until SIGINT or SIGTERM (blocking)."""
        from .server import run

        run(self, listen)

    def __repr__(self) -> str:
        return (
            f"<Plugin {self.name!r} routes={len(self.routes)} "
            f"websocket_routes={len(self.websocket_routes)}>"
        )
