"""The lane sender's two ways out: a callback at the end of the loop turn for
batches that cannot wait, its task for those that may (ring space, a full
socket buffer). Both keep the frames in the order they were queued."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from chunkwire._core import RingWriter, decode_batch, encode_request_frame
from chunkwire.transport.lane import RING, LaneSender, Rings
from chunkwire.transport.mux import END, Connection, Kind

RING_SIZE = 1 << 20
OWN_ID = 6
THRESHOLD = 16 * 1024


class _Link:
    """A connected lane as the sender sees it: records out, a buffer that may fill."""

    def __init__(self, rings: Rings) -> None:
        self.rings = rings
        self.records: list[list[Any]] = []
        self.full_after: int | None = None  # write_now says "full" from this record on
        self.fail: BaseException | None = None
        self.drained = asyncio.Event()
        self.drains = 0
        self.task_writes = 0

    def write_now(self, record: bytes) -> bool:
        if self.fail is not None:
            raise self.fail
        self.records.append(decode_batch(record))
        return self.full_after is not None and len(self.records) >= self.full_after

    async def drain(self) -> None:
        self.drains += 1
        await self.drained.wait()

    async def write(self, record: bytes) -> None:
        self.task_writes += 1
        self.records.append(decode_batch(record))


def _sender(proto: Connection, link: _Link) -> LaneSender:
    async def rings() -> Rings:
        return link.rings

    return LaneSender(
        proto,
        link.write,
        1 << 20,
        rings,
        opener=True,
        on_stall=lambda reason: None,
        link=lambda: link,  # type: ignore[arg-type,return-value]
    )


def _frames(link: _Link) -> list[tuple[int, int, int, bytes]]:
    return [
        (sid, kind, value, bytes(payload))
        for record in link.records
        for sid, kind, value, payload in record
    ]


async def _turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_a_small_batch_leaves_from_the_callback_in_one_record() -> None:
    """Frames queued in one loop turn leave together, written by the callback
    (the task's own write is not used), and the sender is idle after."""

    async def main() -> None:
        proto = Connection(opener=True)
        link = _Link(Rings(None, None))
        sender = _sender(proto, link)
        sender.start()
        await _turns()  # the task has the rings and waits
        init = encode_request_frame(os.urandom(700), complete=True)
        sid = proto.open(init, end=True)
        sender.kick()
        sender.kick()
        assert sender.busy
        await _turns(1)
        assert _frames(link) == [(sid, Kind.OPEN, END, init)]
        assert link.task_writes == 0 and sender.messages == 1
        assert not sender.busy and not sender.done
        # Again: the task was never woken, the callback takes the next batch too.
        second = proto.open(encode_request_frame(b"x" * 10, complete=True), end=True)
        sender.kick()
        await _turns(1)
        assert [f[0] for f in _frames(link)] == [sid, second] and link.task_writes == 0
        await sender.close()

    asyncio.run(main())


def test_a_full_buffer_hands_the_next_batches_to_the_task_in_order() -> None:
    async def main() -> None:
        proto = Connection(opener=True)
        link = _Link(Rings(None, None))
        link.full_after = 1
        sender = _sender(proto, link)
        sender.start()
        await _turns()
        first = proto.open(encode_request_frame(b"first", complete=True), end=True)
        sender.kick()
        await _turns(1)
        assert [f[0] for f in _frames(link)] == [first]
        # The buffer is full: what comes next waits for the drain.
        second = proto.open(encode_request_frame(b"second", complete=True), end=True)
        sender.kick()
        await _turns()
        assert link.drains == 1 and len(link.records) == 1 and sender.busy
        third = proto.open(encode_request_frame(b"third", complete=True), end=True)
        sender.kick()
        link.full_after = None
        link.drained.set()
        await _turns()
        assert [f[0] for f in _frames(link)] == [first, second, third]
        assert not sender.busy
        await sender.close()

    asyncio.run(main())


def test_a_body_for_the_ring_goes_through_the_task_between_inline_frames() -> None:
    """A DATA frame at the ring threshold may wait for ring space: the task
    sends it, with the frames queued before and after it, in order; one
    byte under the threshold stays with the callback, inline."""

    async def main() -> None:
        proto = Connection(opener=True)
        own = RingWriter(RING_SIZE, OWN_ID)
        link = _Link(Rings(own, None))
        sender = _sender(proto, link)
        try:
            sender.start()
            await _turns()
            a = proto.open(encode_request_frame(b"init a"))
            small = encode_request_frame(os.urandom(THRESHOLD - 10))
            assert len(small) < THRESHOLD
            proto.send_data(a, small)
            sender.kick()
            await _turns(1)
            assert _frames(link)[-1] == (a, Kind.DATA, 0, small) and sender.ringed == 0
            big = encode_request_frame(os.urandom(THRESHOLD), complete=True)
            b = proto.open(encode_request_frame(b"init b"))
            proto.send_data(a, big, end=True)
            c = proto.open(encode_request_frame(b"init c"), end=True)
            sender.kick()
            await _turns()
            kinds = [(f[0], f[1]) for f in _frames(link)[2:]]
            assert kinds == [(b, Kind.OPEN), (a, RING), (c, Kind.OPEN)]
            assert sender.ringed == 1 and own.used == THRESHOLD
            assert not sender.busy
            # The task went back to idle: the callback takes small batches again.
            writes = link.task_writes
            d = proto.open(encode_request_frame(b"init d"), end=True)
            sender.kick()
            await _turns(1)
            assert _frames(link)[-1][0] == d and link.task_writes == writes
        finally:
            await sender.close()
            own.close()

    asyncio.run(main())


def test_a_failed_write_of_the_callback_stops_the_sender() -> None:
    async def main() -> None:
        proto = Connection(opener=True)
        link = _Link(Rings(None, None))
        sender = _sender(proto, link)
        sender.start()
        await _turns()
        link.fail = ConnectionResetError("Connection lost")
        proto.open(encode_request_frame(b"init"), end=True)
        sender.kick()
        await _turns()
        assert sender.done and isinstance(sender.failed, ConnectionResetError)
        await sender.close()

    asyncio.run(main())
