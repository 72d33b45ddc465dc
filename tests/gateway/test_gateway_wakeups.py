"""Forward's shared first wake-ups: one loop timer per second, early and never late."""

from __future__ import annotations

from typing import Any

import pytest

from chunkwire.gateway.forward import _SharedWakeups

# Nothing here talks to a plugin: once is enough.
pytestmark = pytest.mark.only_transports("call")


class FakeLoop:
    def __init__(self) -> None:
        self.timers: list[tuple[float, Any, tuple[Any, ...]]] = []

    def call_at(self, when: float, callback: Any, *args: Any) -> None:
        self.timers.append((when, callback, args))


class Waker:
    def __init__(self) -> None:
        self.woken = 0

    def _check_timers(self) -> None:
        self.woken += 1


def test_requests_due_in_one_second_share_a_timer_at_its_start() -> None:
    loop = FakeLoop()
    shared = _SharedWakeups(loop)  # type: ignore[arg-type]
    a, b, c, gone = Waker(), Waker(), Waker(), Waker()
    assert shared.add(a, 1030.25) == 1030.0
    assert shared.add(b, 1030.999) == 1030.0
    assert shared.add(gone, 1030.5) == 1030.0
    assert shared.add(c, 1031.0) == 1031.0  # the next second's, exactly at its start
    assert [when for when, _, _ in loop.timers] == [1030.0, 1031.0]
    shared.discard(gone, 1030.0)  # its request ended

    _, callback, args = loop.timers[0]
    callback(*args)
    assert (a.woken, b.woken, c.woken, gone.woken) == (1, 1, 0, 0)
    callback(*args)  # a slot fires once
    assert (a.woken, b.woken) == (1, 1)

    # A slot that fired is armed again for a request that comes later.
    shared.add(gone, 1030.75)
    assert [when for when, _, _ in loop.timers] == [1030.0, 1031.0, 1030.0]
    shared.discard(c, 1031.0)
    loop.timers[1][1](*loop.timers[1][2])
    assert c.woken == 0
