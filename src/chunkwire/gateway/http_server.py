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
from typing import Any

from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from .types import BODY_FOLLOWS, CHECKED_HEAD, WATCH_CLIENT

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


# The names whose values frame a response (length, chunking, keep-alive).
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})
# The server's default headers (Date, Server: a new list every second) as
# written, for the list they were written from; b"" while that list cannot
# take the short way.
_defaults: tuple[object, bytes | None] = (None, None)


def _written_defaults(defaults: list[tuple[bytes, bytes]]) -> bytes | None:
    """The default header lines, or None if they need uvicorn's send (they
    frame the response, or one of them is invalid: uvicorn raises for it)."""
    global _defaults
    if _defaults[0] is defaults:
        return _defaults[1]
    lines: bytes | None = b""
    for name, value in defaults:
        if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
            lines = None
            break
        lower = bytes(name).lower()
        if lower in _FRAMING:
            lines = None
            break
        lines += lower + b": " + bytes(value) + b"\r\n"
    _defaults = (defaults, lines)
    return lines


class GatewayCycle(RequestResponseCycle):
    """uvicorn's request/response cycle, with a short way for the heads the gateway checked.

    uvicorn's ``send`` searches every header name and value of a response,
    and the server's Date and Server headers, with its patterns. A start
    message marked CHECKED_HEAD comes from the gateway, which has checked
    its headers already, more strictly (``response_head.py``): lowercase
    RFC 9110 token names, values without control characters but HTAB, no
    Transfer-Encoding. Such a head is written here with the bytes and the
    framing state (length, chunking, keep-alive) uvicorn's ``send`` gives it,
    without the searches; the default headers are checked and joined once
    per list. Every other message, and a head while writing is paused, the
    client is gone or the access log is on, goes through uvicorn's ``send``.
    """

    async def send(self, message: Any) -> None:
        if (
            message.get(CHECKED_HEAD)
            and not self.response_started
            and not self.access_log
            and not self.flow.write_paused
            and not self.disconnected
        ):
            defaults = _written_defaults(self.default_headers)
            if defaults is not None:
                head = self._checked_head(message, defaults)
                transport = self.transport
                if (
                    message.get(BODY_FOLLOWS)
                    and type(transport) is CoalescingTransport
                    and self.scope["method"] != "HEAD"  # a HEAD answer writes no body
                ):
                    transport.hold(head)
                else:
                    transport.write(head)
                return
        await super().send(message)

    def _checked_head(self, message: Any, defaults: bytes) -> bytes:
        self.response_started = True
        self.waiting_for_100_continue = False
        status = message["status"]
        lines = [STATUS_LINE[status], defaults]
        close = False
        for name, value in message["headers"]:
            if name in _FRAMING:
                if name == b"content-length":
                    if self.chunked_encoding is None:
                        self.chunked_encoding = False
                        self.expected_content_length = int(value)
                elif name == b"connection":
                    if b"close" in [token.strip().lower() for token in value.split(b",")]:
                        self.keep_alive = False
                        close = True
                elif value.lower() == b"chunked":
                    self.chunked_encoding = True
                    self.expected_content_length = 0
            lines += (name, b": ", value, b"\r\n")
        if not self.keep_alive and not close:
            lines.append(b"connection: close\r\n")
        if (
            self.chunked_encoding is None
            and status not in (204, 304)
            and self.scope["method"] != "HEAD"
        ):
            self.chunked_encoding = True
            lines.append(b"transfer-encoding: chunked\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)


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

        def data_received(self, data: bytes) -> None:
            if not self._refused:
                super().data_received(data)
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

        def _grow(self, size: int) -> bool:
            self._header_bytes += size
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
            return not self._refused

        def on_message_begin(self) -> None:
            self._header_bytes = self._header_count = 0
            super().on_message_begin()
            self._arm()

        def on_url(self, url: bytes) -> None:
            if self._grow(len(url)):
                super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            if self._grow(len(name) + len(value) + 4):
                super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._disarm()
            if not self._refused:
                super().on_headers_complete()
                cycle = self.cycle
                if cycle is not None and cycle.scope is self.scope:
                    # uvicorn built the cycle; the gateway's adds a send path only.
                    if type(cycle) is RequestResponseCycle:
                        cycle.__class__ = GatewayCycle
                    self.scope["extensions"] = {
                        WATCH_CLIENT: functools.partial(self._watch_client, cycle)
                    }

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if not self._refused:
                super().on_message_complete()

    return LimitedHttpToolsProtocol
