"""Any ASGI 3 application (FastAPI, Starlette, a bare callable) served as a plugin.

```python
from chunkwire.asgi import ASGIPlugin
plugin = ASGIPlugin(app)          # or: chunkwire plugin myapp:app --listen ...
```

Each ServeHTTP call becomes one ASGI ``http`` scope:

- the request body streams in as ``http.request`` messages, one per
  received chunk, ``more_body`` True until the last;
- ``http.response.start`` sets status and headers; each
  ``http.response.body`` is written with ``flush`` (it leaves at once, as
  it would from uvicorn) and ``send`` waits while the client is slow (the
  response's high-water mark); ``more_body`` False ends the response;
- a client that goes away reaches the app as ``http.disconnect`` from
  ``receive()``, and ``send()`` then raises ClientDisconnected (an OSError,
  as ASGI 2.4 asks); the app gets ``disconnect_timeout`` seconds to finish,
  then it is cancelled;
- ``root_path`` is the gateway's prefix for this plugin (``/plugins/{id}``),
  which the gateway sends in the ``X-Forwarded-Prefix`` header (a client's
  own value is replaced); ``path`` and ``raw_path`` include it, as ASGI
  asks, so ``url_for`` builds links that work through the gateway. Called
  without a gateway (PluginClient, AsyncPluginTransport) the root path is
  empty unless the caller sends the header;
- ``client`` comes from the request's remote address, ``server`` and
  ``scheme`` from its Host and URL, ``headers`` are the request's, names
  lower-cased, every value in order;
- an exception before the response started gives 500, after it the client
  sees an aborted response; an app that returns without a response gives
  500, one that returns mid-body an aborted response.

The ``lifespan`` protocol runs when the plugin server starts (before it
listens) and stops: ``lifespan="auto"`` (default) runs it and carries on if
the app does not support it, ``"on"`` requires it, ``"off"`` skips it. A
failed startup raises LifespanError, and ``chunkwire plugin`` exits with
status 1 and one line naming the error. ``state`` filled at startup is
copied into every request's scope (``request.state`` in Starlette).

Each WebSocket session becomes one ASGI ``websocket`` scope (same
``root_path``, ``client``, ``server`` and headers; ``scheme`` ws or wss;
``subprotocols`` as offered) with the ``websocket.http.response``
extension; _asgi_websocket.py has the state machine. The app's accept,
denial or close answers the handshake; ``receive()`` takes one client
message at a time (the client is held back while the app does not
receive) and ``send()`` waits while the client is slow. A client that
leaves reaches the app as ``websocket.disconnect`` with its close code;
``send()`` then raises ClientDisconnected. An exception closes the session
with 1011 once accepted, and refuses the handshake with 500 before; so does
returning without answering the handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal
from urllib.parse import urlsplit

from ._asgi_websocket import EXTENSIONS as WS_EXTENSIONS
from ._asgi_websocket import WebSocketCycle
from ._wire import DEFAULT_CHUNK_SIZE
from .errors import ClientDisconnected, ProtocolError
from .plugin import Plugin, Request, Response, WebSocket
from .plugin.app import DEFAULT_FINISH_TIMEOUT
from .plugin.server import PluginServer

log = logging.getLogger("chunkwire.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ROOT_PATH_HEADER = "X-Forwarded-Prefix"
_ASGI = {"version": "3.0", "spec_version": "2.4"}
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_WEBSOCKET_SCHEMES = {"http": "ws", "https": "wss"}


class LifespanError(RuntimeError):
    """The app's lifespan startup failed (or, with ``lifespan="on"``, is unsupported)."""


def is_asgi_app(obj: Any) -> bool:
    """True for an ASGI 3 callable: ``async def app(scope, receive, send)`` or an
    object whose ``__call__`` is one (FastAPI, Starlette, middleware)."""
    if inspect.isclass(obj):
        return False
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(obj, "__call__", None)  # noqa: B004 - the method itself is inspected
    return call is not None and inspect.iscoroutinefunction(call)


class ASGIPlugin(Plugin):
    """A Plugin whose every HTTP request goes to the ASGI app ``app``.

    ``name`` defaults to the app's class (or function) name. The other
    options are Plugin's, plus ``lifespan`` and ``disconnect_timeout``
    (seconds an app may keep running after its client left).
    """

    def __init__(
        self,
        app: ASGIApp,
        name: str | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        high_water_mark: int | None = None,
        finish_timeout: float = DEFAULT_FINISH_TIMEOUT,
        lifespan: Literal["auto", "on", "off"] = "auto",
        disconnect_timeout: float = 5.0,
    ) -> None:
        if not is_asgi_app(app):
            raise TypeError(
                f"{app!r} is not an ASGI 3 application (async def app(scope, receive, send))"
            )
        if lifespan not in ("auto", "on", "off"):
            raise ValueError(f"lifespan must be 'auto', 'on' or 'off', got {lifespan!r}")
        if name is None:
            name = getattr(app, "__name__", None) or type(app).__name__
        super().__init__(
            name,
            chunk_size=chunk_size,
            high_water_mark=high_water_mark,
            finish_timeout=finish_timeout,
        )
        self.app = app
        self.disconnect_timeout = disconnect_timeout
        self.state: dict[str, Any] = {}
        self._lifespan = _Lifespan(app, self.state, lifespan)

    def match(self, method: str, path: str) -> tuple[Any, dict[str, str], list[str]]:
        return self._serve_http, {}, []

    def match_websocket(self, path: str) -> tuple[Any, dict[str, str], int | None]:
        return self._serve_websocket, {}, None

    async def _serve_http(self, request: Request, response: Response) -> None:
        await _HTTPCycle(self, request, response).run()

    async def _serve_websocket(self, ws: WebSocket) -> None:
        scope = _connection_scope(self, ws.request, "websocket")
        scope["subprotocols"] = list(ws.subprotocols)
        scope["extensions"] = {name: dict(value) for name, value in WS_EXTENSIONS.items()}
        cycle = WebSocketCycle(ws, self.chunk_size, self.disconnect_timeout)
        await cycle.run(self.app, scope)

    # -- lifespan around the server ---------------------------------------------

    async def start(self, listen: str) -> PluginServer:
        await self._lifespan.startup()
        server = _ASGIServer(self, listen)
        try:
            await server.start()
        except BaseException:
            await self._lifespan.shutdown()
            raise
        return server

    async def startup(self) -> None:
        """Run the app's lifespan startup (``start()`` does it for you)."""
        await self._lifespan.startup()

    async def shutdown(self) -> None:
        """Run the app's lifespan shutdown (stopping the server does it for you)."""
        await self._lifespan.shutdown()

    def __repr__(self) -> str:
        return f"<ASGIPlugin {self.name!r} app={self.app!r}>"


class _ASGIServer(PluginServer):
    async def stop(self, grace: float | None = 1.0) -> None:
        try:
            await super().stop(grace)
        finally:
            plugin = self.plugin
            assert isinstance(plugin, ASGIPlugin)
            await plugin._lifespan.shutdown()


# -- one HTTP request -------------------------------------------------------------


def _scope(plugin: ASGIPlugin, request: Request) -> Scope:
    scope = _connection_scope(plugin, request, "http")
    scope["method"] = request.method
    return scope


def _connection_scope(plugin: ASGIPlugin, request: Request, kind: str) -> Scope:
    """What the ``http`` and ``websocket`` scopes share, from the request init."""
    init = request.init
    split = urlsplit(init.url)
    scheme = split.scheme or "http"
    if kind == "websocket":
        scheme = _WEBSOCKET_SCHEMES.get(scheme, scheme)
    headers: list[tuple[bytes, bytes]] = []
    root_path = ""
    for header in init.headers:
        name = header.key.lower().encode("latin-1")
        for value in header.values:
            headers.append((name, value))
            if name == b"x-forwarded-prefix":
                root_path = value.decode("latin-1")
    if not root_path.startswith("/") or "?" in root_path or "#" in root_path:
        root_path = ""
    root_path = root_path.rstrip("/")
    major = init.proto_major or 1
    http_version = "2" if major == 2 else f"{major}.{init.proto_minor if init.proto else 1}"
    return {
        "type": kind,
        "asgi": dict(_ASGI),
        "http_version": http_version,
        "scheme": scheme,
        "path": root_path + request.path,
        "raw_path": (root_path + request.raw_path).encode("latin-1", "replace"),
        "query_string": request.query_string.encode("latin-1", "replace"),
        "root_path": root_path,
        "headers": headers,
        "client": _host_port(request.remote_addr, None),
        "server": _host_port(request.host or split.netloc, _DEFAULT_PORTS.get(scheme)),
        "state": dict(plugin.state),
        "extensions": {},
    }


def _host_port(text: str, default_port: int | None) -> tuple[str, int | None] | None:
    if not text:
        return None
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and (not host.startswith("[") or host.endswith("]")):
        return host.strip("[]"), int(port)
    if default_port is None:
        return None
    return text.strip("[]"), default_port


class _HTTPCycle:
    """receive/send for one request, and the task the app runs in."""

    __slots__ = (
        "body_done",
        "complete",
        "disconnected",
        "plugin",
        "request",
        "response",
        "started",
    )

    def __init__(self, plugin: ASGIPlugin, request: Request, response: Response) -> None:
        self.plugin = plugin
        self.request = request
        self.response = response
        self.started = False
        self.complete = False
        self.body_done = False
        self.disconnected = asyncio.Event()

    async def receive(self) -> Message:
        if not self.body_done and not self.disconnected.is_set():
            body = self.request.body
            try:
                chunk = await body.__anext__()
            except StopAsyncIteration:
                self.body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            except (ClientDisconnected, ProtocolError):
                self.disconnected.set()
                return {"type": "http.disconnect"}
            more = not body.at_eof
            self.body_done = not more
            return {"type": "http.request", "body": bytes(chunk), "more_body": more}
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.disconnected.is_set():
            raise ClientDisconnected("the client went away")
        response = self.response
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            response.status = message["status"]
            headers = response.headers
            for name, value in message.get("headers", ()):
                headers.add(bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
            self.started = True
        elif kind == "http.response.body":
            if not self.started:
                raise RuntimeError("http.response.body sent before http.response.start")
            if self.complete:
                raise RuntimeError("http.response.body sent after the response was complete")
            body = message.get("body", b"")
            if message.get("more_body", False):
                if body:
                    await response.write(body, flush=True)
            else:
                self.complete = True
                await response.end(body or None)
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in an http scope")

    async def run(self) -> None:
        scope = _scope(self.plugin, self.request)
        task = asyncio.ensure_future(self.plugin.app(scope, self.receive, self.send))
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError:
            # The client left (the call was cancelled): tell the app, give it
            # a moment to finish, then cancel it.
            self.disconnected.set()
            await self._wind_down(task)
            raise
        error = task.exception()
        if error is not None:
            if self.disconnected.is_set() or isinstance(error, ClientDisconnected):
                log.debug(
                    "%s %s: the app ended with %r after its client left",
                    self.request.method,
                    self.request.path,
                    error,
                )
                raise ClientDisconnected("the client went away") from error
            if self.complete:
                # Starlette answers 500 itself, then re-raises: the client
                # has its response, the error is for the log.
                log.error(
                    "%s %s: the ASGI app raised after its response",
                    self.request.method,
                    self.request.path,
                    exc_info=error,
                )
                return
            raise error
        if not self.started:
            raise RuntimeError("the ASGI app returned without starting a response")
        if not self.complete:
            log.warning(
                "%s %s: the ASGI app returned without completing its response",
                self.request.method,
                self.request.path,
            )
            self.response.abort(RuntimeError("the ASGI app returned mid-response"))

    async def _wind_down(self, task: asyncio.Future[None]) -> None:
        done, _ = await asyncio.wait((task,), timeout=self.plugin.disconnect_timeout)
        if not done:
            task.cancel()
            await asyncio.wait((task,))
        if not task.cancelled() and task.exception() is not None:
            log.debug(
                "%s %s: the app ended with %r after its client left",
                self.request.method,
                self.request.path,
                task.exception(),
            )


# -- lifespan ---------------------------------------------------------------------


class _Lifespan:
    """The ASGI lifespan protocol, run in its own task for the plugin's lifetime."""

    def __init__(self, app: ASGIApp, state: dict[str, Any], mode: str) -> None:
        self.app = app
        self.state = state
        self.mode = mode
        self._task: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[Message] | None = None
        self._started: asyncio.Future[None] | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._running = False

    async def startup(self) -> None:
        if self.mode == "off" or self._task is not None:
            return
        loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._started = loop.create_future()
        self._stopped = loop.create_future()
        self._task = loop.create_task(self._main())
        self._task.add_done_callback(_retrieve)
        await self._queue.put({"type": "lifespan.startup"})
        await asyncio.wait((self._task, self._started), return_when=asyncio.FIRST_COMPLETED)
        if self._started.done():
            self._started.result()  # raises LifespanError on lifespan.startup.failed
            self._running = True
            return
        error = self._task.exception()
        if self.mode == "on":
            raise LifespanError(f"ASGI lifespan startup failed: {_describe(error)}") from error
        log.info(
            "the ASGI app does not support lifespan (%s); serving without it", _describe(error)
        )

    async def shutdown(self) -> None:
        if not self._running:
            return
        self._running = False
        assert self._queue is not None and self._stopped is not None and self._task is not None
        await self._queue.put({"type": "lifespan.shutdown"})
        await asyncio.wait((self._task, self._stopped), return_when=asyncio.FIRST_COMPLETED)
        if self._stopped.done():
            error = self._stopped.exception()
            if error is not None:
                log.error("%s", error)
        elif not self._task.cancelled() and self._task.exception() is not None:
            log.error("ASGI lifespan shutdown failed: %s", _describe(self._task.exception()))
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": dict(_ASGI), "state": self.state}
        await self.app(scope, self._receive, self._send)

    async def _receive(self) -> Message:
        assert self._queue is not None
        return await self._queue.get()

    async def _send(self, message: Message) -> None:
        assert self._started is not None and self._stopped is not None
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            _settle(self._started)
        elif kind == "lifespan.startup.failed":
            reason = _last_line(message.get("message", ""))
            _settle(self._started, LifespanError(f"ASGI lifespan startup failed: {reason}"))
        elif kind == "lifespan.shutdown.complete":
            _settle(self._stopped)
        elif kind == "lifespan.shutdown.failed":
            reason = _last_line(message.get("message", ""))
            _settle(self._stopped, LifespanError(f"ASGI lifespan shutdown failed: {reason}"))
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in a lifespan scope")


def _retrieve(task: asyncio.Task[None]) -> None:
    # Reported where it matters (startup, shutdown); never "never retrieved".
    if not task.cancelled():
        task.exception()


def _settle(future: asyncio.Future[None], error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _last_line(text: str) -> str:
    # Starlette sends the whole traceback; its last line names the error.
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no reason given"


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "the lifespan task ended without answering"
    return f"{type(error).__name__}: {error}"


__all__ = ["ROOT_PATH_HEADER", "ASGIPlugin", "LifespanError", "is_asgi_app"]
