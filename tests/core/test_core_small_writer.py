"""SmallWriter: bytes within the room go to the ring; everything else to ``_write``."""

from __future__ import annotations

import asyncio
import inspect
from types import ModuleType
from typing import Any

import pytest


def writer(core: ModuleType, room: int, chunker: Any = None) -> Any:
    class Writer(core.SmallWriter):  # type: ignore[misc, name-defined]
        __slots__ = ("calls",)

        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[Any, Any]] = []

        def _write(self, data: Any, flush: Any) -> str:
            self.calls.append((data, flush))
            return "slow"

    w = Writer()
    w._ring = chunker if chunker is not None else core.Chunker(8, 16)
    w._room = room
    return w


def test_starts_without_room(core: ModuleType) -> None:
    class Plain(core.SmallWriter):  # type: ignore[misc, name-defined]
        def _write(self, data: Any, flush: Any) -> str:
            return "slow"

    w = Plain()
    assert w._room == 0 and w._ring is None
    assert w.write(b"") == "slow"  # no room: not even an empty write is taken


def test_takes_bytes_shorter_than_the_room(core: ModuleType) -> None:
    w = writer(core, 5)
    taken = w.write(b"abcd")
    assert taken != "slow" and not inspect.iscoroutine(taken)
    assert w._room == 1 and w._ring.pending == 4
    assert w.write(b"") is taken and w._room == 1  # one shared, done awaitable
    assert w.write(b"e") == "slow"  # not shorter than the room
    assert w.calls == [(b"e", False)]
    assert w._ring.pop(final=True) == (b"abcd", False)


def test_what_it_returns_is_done_when_awaited(core: ModuleType) -> None:
    w = writer(core, 10)

    async def main() -> None:
        assert await w.write(b"x") is None
        assert await asyncio.ensure_future(w.write(b"y")) is None

    asyncio.run(main())
    assert w._ring.pending == 2


@pytest.mark.parametrize(
    ("data", "flush"),
    [
        (b"ab", True),
        (b"ab", 1),
        (bytearray(b"ab"), False),
        (memoryview(b"ab"), False),
        ("ab", False),
        (None, False),
    ],
)
def test_everything_else_goes_to_write(core: ModuleType, data: Any, flush: Any) -> None:
    w = writer(core, 100)
    assert w.write(data, flush) == "slow"
    assert w.calls == [(data, flush)]
    assert w._room == 100 and w._ring.pending == 0


def test_bytes_subclasses_go_to_write(core: ModuleType) -> None:
    class Raw(bytes):
        pass

    w = writer(core, 100)
    assert w.write(Raw(b"ab")) == "slow"


def test_never_past_the_ring(core: ModuleType) -> None:
    w = writer(core, 100, core.Chunker(4, 4))  # a room larger than the ring
    assert w.write(b"abc") != "slow"
    assert w.write(b"de") == "slow"  # 2 > 1 free
    assert w._ring.pending == 3 and w._room == 97
    w._ring = None
    assert w.write(b"x") == "slow"


def test_write_keywords(core: ModuleType) -> None:
    w = writer(core, 100)
    assert w.write(data=b"a", flush=True) == "slow"
    assert w.write(b"b", flush=False) != "slow"
