"""CoalescingTransport: a response head and its body leave as one write, in order."""

from __future__ import annotations

import asyncio

import pytest

from chunkwire.gateway.http_server import HOLD_MAX, CoalescingTransport

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n"

# Nothing here talks to a plugin: once is enough.
pytestmark = pytest.mark.only_transports("call")


class RecordingTransport:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", bytes(data)))

    def writelines(self, lines: object) -> None:
        self.calls.append(("writelines", [bytes(x) for x in lines]))  # type: ignore[attr-defined]

    def write_eof(self) -> None:
        self.calls.append(("eof", None))

    def close(self) -> None:
        self.calls.append(("close", None))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort", None))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str) -> object:
        return f"info:{name}"


def wrapped() -> tuple[CoalescingTransport, RecordingTransport]:
    inner = RecordingTransport()
    return CoalescingTransport(inner, asyncio.get_running_loop()), inner


async def next_turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def test_head_and_body_in_one_turn_are_one_write():
    async def body() -> None:
        transport, inner = wrapped()
        transport.write(HEAD)
        transport.write(memoryview(b"body"))
        assert inner.calls == [("write", HEAD + b"body")]
        await next_turn()
        assert len(inner.calls) == 1

    asyncio.run(body())


def test_a_lone_write_leaves_at_the_end_of_the_turn():
    async def body() -> None:
        transport, inner = wrapped()
        transport.write(HEAD)
        assert inner.calls == []
        assert transport.get_write_buffer_size() == 7 + len(HEAD)
        await next_turn()
        assert inner.calls == [("write", HEAD)]

    asyncio.run(body())


def test_large_writes_are_never_held_and_keep_their_order():
    async def body() -> None:
        transport, inner = wrapped()
        big = bytes(range(256)) * (HOLD_MAX // 256 + 1)
        transport.write(big)
        assert inner.calls == [("write", big)]
        transport.write(HEAD)
        transport.write(big)
        assert inner.calls[1:] == [("writelines", [HEAD, big])]

    asyncio.run(body())


def test_a_write_of_exactly_hold_max_is_held_one_more_is_not():
    async def body() -> None:
        transport, inner = wrapped()
        at_bound = b"HTTP/" + b"a" * (HOLD_MAX - 5)
        transport.write(at_bound)
        assert inner.calls == []
        await next_turn()
        past = b"HTTP/" + b"b" * (HOLD_MAX - 4)
        transport.write(past)
        assert inner.calls == [("write", at_bound), ("write", past)]

    asyncio.run(body())


def test_close_eof_and_writelines_send_the_held_write_first():
    async def body() -> None:
        for action, expected in (
            (lambda t: t.close(), ("close", None)),
            (lambda t: t.write_eof(), ("eof", None)),
            (lambda t: t.writelines([b"x"]), ("writelines", [b"x"])),
        ):
            transport, inner = wrapped()
            transport.write(HEAD)
            action(transport)
            assert inner.calls == [("write", HEAD), expected]
            await next_turn()
            assert len(inner.calls) == 2

    asyncio.run(body())


def test_abort_drops_the_held_write_and_a_closed_connection_gets_none():
    async def body() -> None:
        transport, inner = wrapped()
        transport.write(HEAD)
        transport.abort()
        await next_turn()
        assert inner.calls == [("abort", None)]

        transport, inner = wrapped()
        transport.write(HEAD)
        inner.closing = True  # the connection was lost meanwhile
        await next_turn()
        assert inner.calls == []

    asyncio.run(body())


def test_everything_else_is_the_wrapped_transports():
    async def body() -> None:
        transport, inner = wrapped()
        assert transport.get_extra_info("peername") == "info:peername"
        assert transport.is_closing() is False
        assert transport.transport is inner

    asyncio.run(body())


def test_body_writes_are_never_held():
    async def body() -> None:
        transport, inner = wrapped()
        # An event-stream connection: the head was sent long ago, events follow.
        for event in (b"data: 1\n\n", memoryview(b"data: 2\n\n"), bytearray(b"5\r\nhello\r\n")):
            transport.write(event)
            assert inner.calls[-1] == ("write", bytes(event))
        assert len(inner.calls) == 3
        await next_turn()
        assert len(inner.calls) == 3

    asyncio.run(body())


def test_a_held_head_waits_for_the_next_write_not_the_end_of_the_turn():
    async def body() -> None:
        transport, inner = wrapped()
        transport.hold(HEAD)
        await next_turn()
        assert inner.calls == []
        assert transport.get_write_buffer_size() == 7 + len(HEAD)
        transport.write(memoryview(b"body"))
        assert inner.calls == [("write", HEAD + b"body")]

        # close (and write_eof, writelines) send it first, abort drops it.
        transport, inner = wrapped()
        transport.hold(HEAD)
        transport.close()
        assert inner.calls == [("write", HEAD), ("close", None)]
        transport, inner = wrapped()
        transport.hold(HEAD)
        transport.abort()
        assert inner.calls == [("abort", None)]

    asyncio.run(body())


def test_hold_sends_what_was_held_before_first():
    async def body() -> None:
        transport, inner = wrapped()
        transport.write(HEAD)
        transport.hold(HEAD + b"2")
        assert inner.calls == [("write", HEAD)]
        transport.write(b"b")
        assert inner.calls == [("write", HEAD), ("write", HEAD + b"2b")]
        await next_turn()
        assert len(inner.calls) == 2

    asyncio.run(body())
