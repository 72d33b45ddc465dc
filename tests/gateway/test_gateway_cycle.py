"""GatewayCycle writes what uvicorn's RequestResponseCycle writes, and fails where it fails.

Heads marked CHECKED_HEAD take GatewayCycle's short way only when the gateway
could have sent them (lowercase token names, valid values, no
Transfer-Encoding); every other case is left unmarked and must pass through
uvicorn's send unchanged."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from chunkwire.gateway import http_server
from chunkwire.gateway.http_server import GatewayCycle
from chunkwire.gateway.types import BODY_FOLLOWS, CHECKED_HEAD

# Nothing here talks to a plugin: once is enough.
pytestmark = pytest.mark.only_transports("call")

DEFAULTS = [(b"date", b"Thu, 26 Nov 2026 21:00:00 GMT"), (b"server", b"uvicorn")]


class Recording:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", bytes(data)))

    def close(self) -> None:
        self.calls.append(("close", b""))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def new_cycle(
    cls: type[RequestResponseCycle],
    scope: dict[str, Any],
    transport: Any,
    flow_of: Any,
    *,
    defaults: list[tuple[bytes, bytes]] = DEFAULTS,
    access_log: bool = False,
    keep_alive: bool = True,
    on_response: Any = lambda: None,
) -> RequestResponseCycle:
    return cls(
        scope=scope,  # type: ignore[arg-type]
        transport=transport,
        flow=FlowControl(flow_of),
        logger=logging.getLogger("test.cycle"),
        access_logger=logging.getLogger("test.cycle.access"),
        access_log=access_log,
        default_headers=defaults,
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=on_response,
    )


def run(
    cls: type[RequestResponseCycle],
    messages: list[dict[str, Any]],
    *,
    method: str = "GET",
    keep_alive: bool = True,
    defaults: list[tuple[bytes, bytes]] = DEFAULTS,
    access_log: bool = False,
) -> tuple[list[tuple[str, bytes]], str | None, int, bool]:
    """What the cycle wrote, the error it raised, responses completed, keep-alive after."""

    async def body() -> tuple[list[tuple[str, bytes]], str | None, int, bool]:
        transport = Recording()
        completed = []
        scope = {
            "type": "http",
            "method": method,
            "path": "/p q",
            "query_string": b"a=1",
            "http_version": "1.1",
            "client": ("10.0.0.1", 5000),
        }
        cycle = new_cycle(
            cls, scope, transport, transport, defaults=defaults, access_log=access_log,
            keep_alive=keep_alive, on_response=lambda: completed.append(1),
        )
        error = None
        try:
            for message in messages:
                await cycle.send(message)
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        return transport.calls, error, len(completed), cycle.keep_alive

    return asyncio.run(body())


def start(status: int = 200, headers: Any = ()) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": headers}


def part(data: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


BODY = bytes(range(256)) * 3 + b"tail"
CASES: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {
    "content-length": ([start(200, [(b"Content-Length", b"772")]), part(BODY)], {}),
    "chunked by default": ([start(200, [(b"x-a", b"1")]), part(BODY, True), part(b"")], {}),
    "chunked declared": (
        [start(200, [(b"transfer-encoding", b"Chunked")]), part(b"ab", True), part(b"cd")],
        {},
    ),
    "transfer-encoding gzip is no framing": (
        [start(200, [(b"transfer-encoding", b"gzip")]), part(b"ab")],
        {},
    ),
    "second content-length is only written": (
        [start(200, [(b"content-length", b"2"), (b"Content-Length", b"5")]), part(b"ab")],
        {},
    ),
    "connection close": (
        [start(200, [(b"content-length", b"2"), (b"Connection", b"keep-alive, Close")]),
         part(b"ab")],
        {},
    ),
    "connection keep-alive": (
        [start(200, [(b"content-length", b"2"), (b"connection", b"keep-alive")]), part(b"ab")],
        {},
    ),
    "no keep-alive": ([start(200, [(b"content-length", b"2")]), part(b"ab")],
                      {"keep_alive": False}),
    "HEAD": ([start(200, [(b"content-length", b"9")]), part(b"")], {"method": "HEAD"}),
    "HEAD without length": ([start(200), part(b"")], {"method": "HEAD"}),
    "204": ([start(204), part(b"")], {}),
    "304": ([start(304, [(b"etag", b'"x"')]), part(b"")], {}),
    "memoryview body": ([start(200, [(b"content-length", b"4")]), part(memoryview(b"abcd"))], {}),
    "tab in value": ([start(200, [(b"x-t", b"a\tb"), (b"content-length", b"0")]), part(b"")], {}),
    "bytearray name": (
        [start(200, [(bytearray(b"X-B"), b"1"), (b"content-length", b"0")]), part(b"")],
        {},
    ),
    "longer than content-length": ([start(200, [(b"content-length", b"3")]), part(b"abcd")], {}),
    "shorter than content-length": ([start(200, [(b"content-length", b"5")]), part(b"abcd")], {}),
    "bad content-length": ([start(200, [(b"content-length", b"x")]), part(b"")], {}),
    "CR in value": ([start(200, [(b"x-a", b"a\rb")])], {}),
    "LF in value": ([start(200, [(b"x-a", b"a\nb")])], {}),
    "NUL in value": ([start(200, [(b"x-a", b"a\x00b")])], {}),
    "DEL in value": ([start(200, [(b"x-a", b"a\x7fb")])], {}),
    "space in name": ([start(200, [(b"x a", b"1")])], {}),
    "colon in name": ([start(200, [(b"x:a", b"1")])], {}),
    "bad name after a bad value": ([start(200, [(b"x-a", b"\r"), (b"x b", b"1")])], {}),
    "bad value after a bad name": ([start(200, [(b"x b", b"1"), (b"x-a", b"\r")])], {}),
    "invalid status": ([start(99)], {}),
    "body first": ([part(b"")], {}),
    "start twice": ([start(200, [(b"content-length", b"0")]), start(200)], {}),
    "after the end": ([start(200, [(b"content-length", b"0")]), part(b""), part(b"")], {}),
    "no defaults": ([start(200, [(b"content-length", b"1")]), part(b"a")], {"defaults": []}),
    "defaults with framing": (
        [start(200), part(b"ab", True), part(b"")],
        {"defaults": [(b"Connection", b"close"), (b"Content-Length", b"2")]},
    ),
    "bad default": ([start(200), part(b"")], {"defaults": [(b"x-d", b"\n")]}),
    "access log": ([start(200, [(b"content-length", b"0")]), part(b"")], {"access_log": True}),
}


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def gateway_could_send(message: dict[str, Any]) -> bool:
    """What response_head.py lets through: the promise CHECKED_HEAD makes."""
    if message.get("type") != "http.response.start" or message.get("status") not in range(100, 600):
        return False
    return all(
        type(name) is bytes
        and _TOKEN.fullmatch(name)
        and name != b"transfer-encoding"
        and not _BAD_VALUE.search(value)
        and (name != b"content-length" or value.isdigit())
        for name, value in message.get("headers", ())
    )


def marked(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**m, CHECKED_HEAD: True} if gateway_could_send(m) else m for m in messages]


CHECKABLE = [case for case in CASES if gateway_could_send(CASES[case][0][0])]
# Checked heads that take the short way: uvicorn's send writes the access log,
# and default headers that frame the response or are invalid.
SHORT = [
    case for case in CHECKABLE
    if not CASES[case][1].get("access_log") and case not in ("defaults with framing", "bad default")
]


def test_the_cases_cover_both_ways() -> None:
    assert len(CHECKABLE) >= 12
    assert len(CASES) - len(CHECKABLE) >= 12


@pytest.mark.parametrize("case", list(CASES))
def test_same_bytes_and_errors_as_uvicorn(case: str) -> None:
    messages, options = CASES[case]
    expected = run(RequestResponseCycle, messages, **options)
    # Twice: the second run takes the default headers already written once.
    assert run(GatewayCycle, marked(messages), **options) == expected
    assert run(GatewayCycle, marked(messages), **options) == expected


class CountingPattern:
    def __init__(self, pattern: re.Pattern[bytes]) -> None:
        self.pattern = pattern
        self.searches = 0

    def search(self, data: bytes) -> Any:
        self.searches += 1
        return self.pattern.search(data)


@pytest.mark.parametrize("case", SHORT)
def test_a_checked_head_is_written_without_searching_its_headers(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = CountingPattern(httptools_impl.HEADER_RE)
    values = CountingPattern(httptools_impl.HEADER_VALUE_RE)
    monkeypatch.setattr(httptools_impl, "HEADER_RE", names)
    monkeypatch.setattr(httptools_impl, "HEADER_VALUE_RE", values)
    monkeypatch.setattr(http_server, "HEADER_RE", names)
    monkeypatch.setattr(http_server, "HEADER_VALUE_RE", values)
    messages, options = CASES[case]
    expected = run(RequestResponseCycle, messages, **options)
    searched = names.searches + values.searches
    assert searched > 0  # uvicorn's send searches every header
    run(GatewayCycle, marked(messages), **options)  # writes the defaults once
    names.searches = values.searches = 0
    assert run(GatewayCycle, marked(messages), **options) == expected
    assert names.searches + values.searches == 0


def test_a_new_default_header_list_is_written_not_the_cached_one() -> None:
    first = [(b"date", b"Thu, 26 Nov 2026 21:00:00 GMT"), (b"server", b"uvicorn")]
    second = [(b"date", b"Thu, 26 Nov 2026 21:00:01 GMT"), (b"server", b"uvicorn")]
    messages = marked([start(200, [(b"content-length", b"0")]), part(b"")])
    assert CHECKED_HEAD in messages[0]
    for defaults in (first, second, first):
        calls, error, _, _ = run(GatewayCycle, messages, defaults=defaults)
        assert error is None
        assert calls == run(RequestResponseCycle, messages, defaults=defaults)[0]


def coalescing_cycle(inner: Recording, options: dict[str, Any]) -> RequestResponseCycle:
    """A GatewayCycle writing through chunkwire's CoalescingTransport to ``inner``."""
    scope = {"type": "http", "method": options.get("method", "GET"), "http_version": "1.1",
             "path": "/", "query_string": b""}
    transport = http_server.CoalescingTransport(inner, asyncio.get_running_loop())
    return new_cycle(GatewayCycle, scope, transport, inner,
                     keep_alive=options.get("keep_alive", True))


@pytest.mark.parametrize("case", ["connection keep-alive", "204", "304", "no keep-alive"])
def test_body_follows_joins_head_and_body_into_one_write(case: str) -> None:
    messages, options = CASES[case]
    expected, error, completed, _ = run(RequestResponseCycle, messages, **options)
    assert error is None and completed == 1

    async def body() -> list[tuple[str, object]]:
        inner = Recording()
        cycle = coalescing_cycle(inner, options)
        await cycle.send({**marked(messages)[0], BODY_FOLLOWS: True})
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert inner.calls == []  # held for the body, not written at the end of the turn
        await cycle.send(messages[1])
        return inner.calls  # type: ignore[return-value]

    writes = b"".join(data for kind, data in expected if kind == "write")
    closes = [call for call in expected if call[0] == "close"]
    assert asyncio.run(body()) == [("write", writes), *closes]


def test_a_head_answer_is_written_at_once_even_if_its_body_follows() -> None:
    # A HEAD answer writes no body: a head held for one would never leave.
    messages, options = CASES["HEAD"]
    expected, error, _, _ = run(RequestResponseCycle, messages, **options)
    assert error is None

    async def body() -> list[tuple[str, bytes]]:
        inner = Recording()
        cycle = coalescing_cycle(inner, options)
        await cycle.send({**marked(messages)[0], BODY_FOLLOWS: True})
        await cycle.send(messages[1])
        await asyncio.sleep(0)
        return inner.calls

    assert asyncio.run(body()) == expected
