"""uvicorn's httptools protocol with the header limits a proxy needs.

The ASGI app only sees a request once its whole header block has been
parsed, so two defences must live in the server: a bound on the header
block while it is read (uvicorn keeps every header of a block in a list
and has no limit of its own: a 14 MB block costs hundreds of MB), and a
timeout for a client that sends its headers slowly (slowloris: uvicorn's
keep-alive timer stops at the first byte of a request and nothing replaces
it). nginx's ``large_client_header_buffers`` and ``client_header_timeout``
are the model: 431 past the size or count, 408 past the time.

A response head waits for its body (``CoalescingTransport``): uvicorn
writes the head on its own, so without this a small response costs two
writes, two wake-ups of the client, instead of one.

The gateway checks the same limits on the scope it receives, for servers
other than this one.
"""

from __future__ import annotations

import asyncio
import functools
import urllib.parse
from typing import Any

import httptools
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from .types import BODY_FOLLOWS, WATCH_CLIENT

DEFAULT_HEADER_TIMEOUT = 30.0
# After a refusal, what the client still sends is read and dropped for a
# while (a lingering close, as nginx does), so that the kernel does not
# answer it with a reset that can destroy the refusal before it is read.
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 1 << 20


# A response head at most this large may wait for the next write (or the
# end of the loop turn); a larger one leaves at once.
HOLD_MAX = 16 * 1024
_HEAD = b"HTTP/"


class CoalescingTransport:
    """A transport that holds a response head until the next write or the end
    of the loop turn, whichever comes first, then sends both as one.

    Only a head (a write starting ``HTTP/``) waits: body writes, such as
    event-stream events, leave at once (with a held head before them), so a
    round of writes to many connections is not turned into all the Python
    work first and all the sends after. Nothing waits longer than the
    current loop turn, and what a connection writes keeps its order:
    closing, ``write_eof`` and ``writelines`` send the held head first.
    Everything else is the wrapped transport's.
    """

    __slots__ = ("_held", "_loop", "transport")

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: Any) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if len(data) <= HOLD_MAX:
                self.transport.write(held + data)
            else:
                self.transport.writelines((held, data))
        elif len(data) <= HOLD_MAX and data[:5] == _HEAD:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self.transport.write(data)

    def hold(self, head: bytes) -> None:
        """Keep ``head`` for the next write (or close) without a write of its
        own at the end of the loop turn: the caller writes again before it
        yields (see BODY_FOLLOWS)."""
        self.flush()
        self._held = head

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self.transport.is_closing():
                self.transport.write(held)

    def writelines(self, lines: Any) -> None:
        self.flush()
        self.transport.writelines(lines)

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._held = None
        self.transport.abort()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_write_buffer_size(self) -> int:
        held = self._held
        return self.transport.get_write_buffer_size() + (len(held) if held is not None else 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


# Header names seen before and found valid, as uvicorn writes them
# (lowercased). Responses send the same few names again and again; the cache
# stops growing at _MAX_NAMES (new names then cost the full check, never
# memory).
_NAMES: dict[bytes, bytes] = {}
_MAX_NAMES = 1024
# The names uvicorn's cycle acts on, beyond writing them.
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})
# The server's default headers (Date, Server; a new list every second), as
# written, for the list they were written from.
_defaults: tuple[list[tuple[bytes, bytes]] | None, bytes] = (None, b"")


class GatewayCycle(RequestResponseCycle):
    """uvicorn's request/response cycle with a cheaper ``send``.

    The same checks and the same bytes on the wire as uvicorn's: every header
    name must pass ``HEADER_RE`` and every value ``HEADER_VALUE_RE``, names
    are lowercased, Content-Length, Transfer-Encoding and Connection frame
    the response as uvicorn frames it. What changes is the cost: a name
    already found valid is looked up instead of searched again, and the
    server's default headers (the same list for a second) are checked and
    joined once per list instead of once per response.
    """

    def __init__(
        self,
        scope: Any,
        transport: Any,
        flow: Any,
        logger: Any,
        access_logger: Any,
        access_log: bool,
        default_headers: list[tuple[bytes, bytes]],
        message_event: asyncio.Event,
        expect_100_continue: bool,
        keep_alive: bool,
        on_response: Any,
    ) -> None:
        # uvicorn's, taking its arguments by position.
        self.scope = scope
        self.transport = transport
        self.flow = flow
        self.logger = logger
        self.access_logger = access_logger
        self.access_log = access_log
        self.default_headers = default_headers
        self.message_event = message_event
        self.on_response = on_response
        self.disconnected = False
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = expect_100_continue
        self.body = bytearray()
        self.more_body = True
        self.response_started = False
        self.response_complete = False
        self.chunked_encoding: bool | None = None
        self.expected_content_length = 0

    async def send(self, message: Any) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', but got '{message['type']}'."
                )
            self.response_started = True
            self.waiting_for_100_continue = False
            status_code = message["status"]
            scope = self.scope
            if self.access_log:
                self.access_logger.info(
                    '%s - "%s %s HTTP/%s" %d',
                    get_client_addr(scope),  # type: ignore[arg-type]
                    scope["method"],
                    get_path_with_query_string(scope),  # type: ignore[arg-type]
                    scope["http_version"],
                    status_code,
                )
            content = [STATUS_LINE[status_code]]
            close = self._add_defaults(content)
            if self._add_headers(content, message.get("headers", ())):
                close = True
            if not self.keep_alive and not close:
                content.append(b"connection: close\r\n")
            if (
                self.chunked_encoding is None
                and scope["method"] != "HEAD"
                and status_code not in (204, 304)
            ):
                # Neither content-length nor transfer-encoding specified
                self.chunked_encoding = True
                content.append(b"transfer-encoding: chunked\r\n")
            content.append(b"\r\n")
            if message.get(BODY_FOLLOWS) and type(self.transport) is CoalescingTransport:
                self.transport.hold(b"".join(content))
            else:
                self.transport.write(b"".join(content))
        elif not self.response_complete:
            if message["type"] != "http.response.body":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.body', but got '{message['type']}'."
                )
            body = message.get("body", b"")
            more_body = message.get("more_body", False)
            if self.scope["method"] == "HEAD":
                self.expected_content_length = 0
                if type(self.transport) is CoalescingTransport:
                    self.transport.flush()  # nothing else writes a held head
            elif self.chunked_encoding:
                chunk = [b"%x\r\n" % len(body), body, b"\r\n"] if body else []
                if not more_body:
                    chunk.append(b"0\r\n\r\n")
                self.transport.write(b"".join(chunk))
            else:
                size = len(body)
                if size > self.expected_content_length:
                    raise RuntimeError("Response content longer than Content-Length")
                self.expected_content_length -= size
                self.transport.write(body)
            if not more_body:
                if self.expected_content_length != 0:
                    raise RuntimeError("Response content shorter than Content-Length")
                self.response_complete = True
                self.message_event.set()
                if not self.keep_alive:
                    self.transport.close()
                self.on_response()
        else:
            raise RuntimeError(
                f"Unexpected ASGI message '{message['type']}' sent,"
                " after response already completed."
            )

    def _add_defaults(self, content: list[bytes]) -> bool:
        global _defaults
        defaults = self.default_headers
        cached, blob = _defaults
        if cached is defaults:
            content.append(blob)
            return False
        start = len(content)
        close = self._add_headers(content, defaults)
        if self.chunked_encoding is None and not close and not any(
            bytes(name).lower() in _FRAMING for name, _ in defaults
        ):
            # Plain headers only (uvicorn's own): the same bytes every time.
            _defaults = (defaults, b"".join(content[start:]))
        return close

    def _add_headers(self, content: list[bytes], headers: Any) -> bool:
        """Check and append ``headers`` as uvicorn does; True if one says Connection: close."""
        close = False
        names = _NAMES
        bad_value = HEADER_VALUE_RE.search
        for raw_name, value in headers:
            try:
                name = names.get(raw_name)
            except TypeError:  # a bytearray: checked every time
                name = None
            if name is None:
                if HEADER_RE.search(raw_name):
                    raise RuntimeError("Invalid HTTP header name.")
                name = bytes(raw_name).lower()
                if len(names) < _MAX_NAMES and type(raw_name) is bytes:
                    names[raw_name] = name
            if bad_value(value):
                raise RuntimeError("Invalid HTTP header value.")
            if name in _FRAMING:
                if name == b"content-length":
                    if self.chunked_encoding is None:
                        self.expected_content_length = int(value.decode())
                        self.chunked_encoding = False
                elif name == b"transfer-encoding":
                    if value.lower() == b"chunked":
                        self.expected_content_length = 0
                        self.chunked_encoding = True
                elif b"close" in [token.lower().strip() for token in value.split(b",")]:
                    self.keep_alive = False
                    close = True
            content += (name, b": ", value, b"\r\n")
        return close


def forwarded(trusted: Any, scope: dict[str, Any]) -> None:
    """What uvicorn's ProxyHeadersMiddleware does to an HTTP request's scope.

    The protocol applies it as the request's head completes and starts the
    application the middleware wraps: the same scope, without a coroutine and
    a call per request. ``trusted`` is the middleware's ``trusted_hosts``.
    """
    client = scope.get("client")
    if (client[0] if client else None) not in trusted:
        return
    proto: bytes | None = None
    forwarded_for: list[bytes] = []
    for name, value in scope["headers"]:
        if name == b"x-forwarded-proto":
            proto = value
        elif name == b"x-forwarded-for":
            forwarded_for.append(value)
    if proto is not None:
        scheme = proto.decode("latin1").strip()
        if scheme in {"http", "https", "ws", "wss"}:
            scope["scheme"] = scheme
    if forwarded_for:
        host, port = trusted.get_trusted_client_address(
            b", ".join(forwarded_for).decode("latin1")
        )
        if host:
            scope["client"] = (host, port)


def _plain(status: bytes, text: bytes) -> bytes:
    return b"".join(
        [
            b"HTTP/1.1 ", status, b"\r\n",
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: ", str(len(text)).encode(), b"\r\n",
            b"connection: close\r\n\r\n",
            text,
        ]
    )


def limited_http_protocol(
    *, max_header_size: int, max_header_count: int, header_timeout: float | None
) -> type[HttpToolsProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` enforcing these limits."""

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        _header_bytes = 0
        _header_count = 0
        _refused = False
        # One timer per connection serves the header timeout and uvicorn's
        # keep-alive timeout (see _on_tick): none is armed per request.
        _head_since: float | None = None  # a request head is being read since
        _idle_since: float | None = None  # waiting for the next request since
        _tick: asyncio.TimerHandle | None = None
        _tick_at = 0.0
        # The request being answered and who to tell if its client goes
        # (the WATCH_CLIENT extension); _lost once the connection is gone.
        _client_watch: tuple[RequestResponseCycle, Any] | None = None
        _lost = False

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # uvicorn's proxy headers middleware (on by default) is applied by
            # on_headers_complete to HTTP requests (see ``forwarded``).
            app = self.app
            self._trusted = None
            self._http_app = app
            if type(app) is ProxyHeadersMiddleware and hasattr(
                app.trusted_hosts, "get_trusted_client_address"
            ):  # the middleware ``forwarded`` copies; older ones keep wrapping the app
                self._trusted = app.trusted_hosts
                self._http_app = app.app

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
            self._arm()

        def handle_websocket_upgrade(self) -> None:
            # The WebSocket protocol takes the connection's own transport.
            coalescing = self.transport
            if isinstance(coalescing, CoalescingTransport):
                coalescing.flush()
                self.transport = coalescing.transport
            super().handle_websocket_upgrade()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._tick is not None:
                self._tick.cancel()
                self._tick = None
            self._lost = True
            super().connection_lost(exc)
            watch = self._client_watch
            if watch is not None:
                self._client_watch = None
                cycle, callback = watch
                if not cycle.response_complete:
                    callback()

        def _watch_client(self, cycle: RequestResponseCycle, callback: Any) -> None:
            if self._lost:
                self.loop.call_soon(callback)
            elif not cycle.response_complete:
                self._client_watch = (cycle, callback)

        _linger_budget = _LINGER_BYTES

        # The parser callbacks below are uvicorn's with the limits folded in
        # (one call per callback, not two).

        def data_received(self, data: bytes) -> None:
            if not self._refused:
                self._idle_since = None  # _unset_keepalive_if_required
                try:
                    self.parser.feed_data(data)
                except httptools.HttpParserError:
                    msg = "Invalid HTTP request received."
                    self.logger.warning(msg)
                    self.send_400_response(msg)
                except httptools.HttpParserUpgrade:
                    if self._should_upgrade():
                        self.handle_websocket_upgrade()
                    else:
                        self._unsupported_upgrade_warning()
                return
            self._linger_budget -= len(data)
            if self._linger_budget < 0 and not self.transport.is_closing():
                self.transport.close()

        def send_400_response(self, msg: str) -> None:
            if not self._refused:
                super().send_400_response(msg)

        def _arm(self) -> None:
            if header_timeout is not None and self._head_since is None:
                now = self.loop.time()
                self._head_since = now
                self._ensure_tick(now, now + header_timeout)

        def _disarm(self) -> None:
            self._head_since = None

        def _unset_keepalive_if_required(self) -> None:
            self._idle_since = None

        def on_response_complete(self) -> None:
            # uvicorn's, but the keep-alive wait is kept on the connection's
            # one timer instead of a timer per response.
            self.server_state.total_requests += 1
            self._client_watch = None
            if self.transport.is_closing():
                return
            self._idle_since = None
            if self.flow.read_paused:
                self.flow.resume_reading()
            if self.pipeline:
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
            else:
                now = self.loop.time()
                self._idle_since = now
                deadline = now + self.timeout_keep_alive
                if self._tick is None or self._tick_at > deadline:
                    self._ensure_tick(now, deadline)

        def _ensure_tick(self, now: float, deadline: float) -> None:
            # The timer is never further away than the shortest timeout, so
            # a deadline set later is never earlier than it: re-arming is
            # needed only for the first deadline of a connection, if at all.
            tick = self._tick
            if tick is None:
                period = self.timeout_keep_alive
                if header_timeout is not None:
                    period = min(period, header_timeout)
                when = min(deadline, now + period)
            elif self._tick_at > deadline:
                tick.cancel()
                when = deadline
            else:
                return
            self._tick = self.loop.call_at(when, self._on_tick)
            self._tick_at = when

        def _on_tick(self) -> None:
            self._tick = None
            if self.transport.is_closing():
                return
            now = self.loop.time()
            head = self._head_since
            if head is not None and header_timeout is not None and now >= head + header_timeout:
                self._timed_out()
                return
            idle = self._idle_since
            if idle is not None and now >= idle + self.timeout_keep_alive:
                self._idle_since = None
                self.timeout_keep_alive_handler()
                return
            deadline = float("inf")
            if head is not None and header_timeout is not None:
                deadline = head + header_timeout
            if idle is not None:
                deadline = min(deadline, idle + self.timeout_keep_alive)
            self._ensure_tick(now, deadline)

        def _timed_out(self) -> None:
            self._head_since = None
            busy = self.cycle is not None and not self.cycle.response_complete
            # A response in progress must not get another one in its middle.
            self._refuse(None if busy else b"408 Request Timeout", "request header timeout")

        def _refuse(self, status: bytes | None, text: str) -> None:
            if self._refused:
                return
            self._refused = True
            self._disarm()
            transport = self.transport
            if not transport.is_closing():
                if status is None:
                    transport.close()
                else:
                    transport.write(_plain(status, text.encode()))
                    if transport.can_write_eof():
                        transport.write_eof()
                    self.loop.call_later(_LINGER_SECONDS, transport.close)
            self.logger.info("%s:%d - %s", *(self.client or ("?", 0)), text)

        def _check_limits(self) -> None:
            if self._header_count > max_header_count:
                self._refuse(
                    b"431 Request Header Fields Too Large",
                    f"more than {max_header_count} request header fields",
                )
            elif self._header_bytes > max_header_size:
                self._refuse(
                    b"431 Request Header Fields Too Large",
                    f"request header block larger than {max_header_size} bytes",
                )

        def on_message_begin(self) -> None:
            self._header_bytes = self._header_count = 0
            self.url = b""
            self.expect_100_continue = False
            self.headers = []
            self.scope = {  # type: ignore[typeddict-item]
                "type": "http",
                "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
                "http_version": "1.1",
                "server": self.server,
                "client": self.client,
                "scheme": self.scheme,  # type: ignore[typeddict-item]
                "root_path": self.root_path,
                "headers": self.headers,
                "state": self.app_state.copy(),
            }
            self._arm()

        def on_url(self, url: bytes) -> None:
            self._header_bytes += len(url)
            if (
                self._refused
                or self._header_bytes > max_header_size
                or self._header_count > max_header_count
            ):
                self._check_limits()
                return
            self.url += url

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            self._header_bytes += len(name) + len(value) + 4
            if (
                self._refused
                or self._header_bytes > max_header_size
                or self._header_count > max_header_count
            ):
                self._check_limits()
                return
            name = name.lower()
            if name == b"expect" and value.lower() == b"100-continue":
                self.expect_100_continue = True
            self.headers.append((name, value))

        def on_headers_complete(self) -> None:
            # uvicorn's, with a GatewayCycle for the request and the
            # WATCH_CLIENT extension in its scope.
            self._disarm()
            if self._refused:
                return
            parser = self.parser
            scope = self.scope
            http_version = parser.get_http_version()
            scope["method"] = parser.get_method().decode("ascii")
            if http_version != "1.1":
                scope["http_version"] = http_version
            if parser.should_upgrade() and self._should_upgrade():
                return
            parsed_url = httptools.parse_url(self.url)
            raw_path = parsed_url.path
            path = raw_path.decode("ascii")
            if "%" in path:
                path = urllib.parse.unquote(path)
            root_path = self.root_path
            if root_path:
                scope["path"] = root_path + path
                scope["raw_path"] = root_path.encode("ascii") + raw_path
            else:
                scope["path"] = path
                scope["raw_path"] = raw_path
            scope["query_string"] = parsed_url.query or b""

            # Handle 503 responses when 'limit_concurrency' is exceeded.
            limit = self.limit_concurrency
            if limit is not None and (
                len(self.connections) >= limit or len(self.tasks) >= limit
            ):
                app = service_unavailable
                self.logger.warning("Exceeded concurrency limit.")
            else:
                app = self._http_app
                if self._trusted is not None:
                    forwarded(self._trusted, scope)

            existing_cycle = self.cycle
            self.cycle = cycle = GatewayCycle(
                scope,
                self.transport,
                self.flow,
                self.logger,
                self.access_logger,
                self.access_log,
                self.server_state.default_headers,
                asyncio.Event(),
                self.expect_100_continue,
                http_version != "1.0" and parser.should_keep_alive(),
                self.on_response_complete,
            )
            scope["extensions"] = {WATCH_CLIENT: functools.partial(self._watch_client, cycle)}
            if existing_cycle is None or existing_cycle.response_complete:
                # Standard case - start processing the request.
                self._start_asgi_task(cycle, app)
            else:
                # Pipelined HTTP requests need to be queued up.
                self.flow.pause_reading()
                self.pipeline.appendleft((cycle, app))

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if self._refused:
                return
            if (
                self.parser.should_upgrade() and self._should_upgrade()
            ) or self.cycle.response_complete:
                return
            self.cycle.more_body = False
            self.cycle.message_event.set()

    return LimitedHttpToolsProtocol
