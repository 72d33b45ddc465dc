"""Small writes that only land in the ring: what ``write()`` may skip, and what it may not.

A write of bytes that fits below the chunk size and the mark, with no
flush and nothing else pending, returns an awaitable that is already done.
Everything that changes the response in between (a new mark, a failed
send, a flush, an end, a cork) must bring the full checks back.
"""

from __future__ import annotations

import asyncio
import inspect

import pytest

from chunkwire._core import decode_response_frame
from chunkwire.errors import ClientDisconnected, HeadersAlreadySent
from chunkwire.plugin import Response


class Sink:
    def __init__(self) -> None:
        self.frames: list = []
        self.gate: asyncio.Future[None] | None = None

    async def send(self, message: bytes) -> None:
        if self.gate is not None:
            await self.gate
        self.frames.append(decode_response_frame(message))

    @property
    def body(self) -> bytes:
        return b"".join(bytes(f.body) for f in self.frames)


async def test_small_writes_are_taken_without_a_coroutine() -> None:
    sink = Sink()
    response = Response(sink.send, 64)
    await response.write(b"first")  # fixes the head
    taken = response.write(b"abc")
    assert not inspect.iscoroutine(taken)
    await taken
    await response.write(b"def")
    assert sink.frames == []  # nothing due yet: one frame at the end
    await response.end()
    assert sink.body == b"firstabcdef"
    assert len(sink.frames) == 1 and sink.frames[0].complete


async def test_small_writes_fill_chunks_exactly() -> None:
    sink = Sink()
    response = Response(sink.send, 16)
    for i in range(100):
        await response.write(bytes([65 + i % 26]) * 3)
        assert response.buffered < response.high_water_mark
    await response.end()
    assert sink.body == b"".join(bytes([65 + i % 26]) * 3 for i in range(100))
    assert [f.body.nbytes for f in sink.frames] == [16] * 18 + [12]


async def test_a_lower_mark_applies_to_the_next_small_write() -> None:
    sink = Sink()
    response = Response(sink.send, 64)
    await response.write(b"a" * 10)
    response.high_water_mark = 5
    await response.write(b"b")
    assert response.buffered < 5
    assert sink.body == b"a" * 10 + b"b"


async def test_a_failed_send_fails_the_next_small_write() -> None:
    sink = Sink()
    response = Response(sink.send, 4, high_water_mark=100)
    await response.write(b"abcd")  # a whole chunk: sent in the background
    sink.gate = asyncio.get_running_loop().create_future()
    await asyncio.sleep(0)  # the chunk is in flight, held by the gate
    await response.write(b"x")
    sink.gate.set_exception(ClientDisconnected("gone"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    with pytest.raises(ClientDisconnected):
        await response.write(b"y")


async def test_flush_and_end_after_small_writes() -> None:
    sink = Sink()
    response = Response(sink.send, 64)
    await response.write(b"a")
    await response.write(b"b")
    await response.write(b"c", flush=True)
    assert sink.body == b"abc" and sink.frames[-1].flush
    await response.write(b"d")
    await response.end()
    with pytest.raises(RuntimeError, match="already ended"):
        await response.write(b"e")
    assert sink.body == b"abcd"


async def test_cork_holds_small_writes() -> None:
    sink = Sink()
    response = Response(sink.send, 8)
    await response.write(b"a")
    with response.cork():
        for _ in range(20):
            await response.write(b"bc")
        assert sink.frames == []
    await response.end()
    assert sink.body == b"a" + b"bc" * 20


async def test_head_is_fixed_after_small_writes() -> None:
    response = Response(Sink().send, 64)
    await response.write(b"a")
    await response.write(b"b")
    with pytest.raises(HeadersAlreadySent):
        response.status = 404
    with pytest.raises(TypeError):
        await response.write("text")
