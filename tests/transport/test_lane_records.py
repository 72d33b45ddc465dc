"""The lane socket's record reader: records cut out of bytes however they arrive."""

from __future__ import annotations

import asyncio
import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkwire.transport.lane import LaneError, _Records

MAX = 1000


class _Transport:
    def __init__(self) -> None:
        self.paused = False
        self.written: list[bytes] = []

    def pause_reading(self) -> None:
        assert not self.paused
        self.paused = True

    def resume_reading(self) -> None:
        assert self.paused
        self.paused = False

    def writelines(self, data: tuple[bytes, ...]) -> None:
        self.written.append(b"".join(data))


def _wire(records: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(r)) + r for r in records)


def _feed(wire: bytes, cuts: list[int]) -> tuple[list[bytes], Exception | None]:
    async def main() -> tuple[list[bytes], Exception | None]:
        records = _Records(MAX)
        records.connection_made(_Transport())  # type: ignore[arg-type]
        points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
        for a, b in itertools.pairwise(points):
            records.data_received(wire[a:b])
        records.eof_received()
        out: list[bytes] = []
        try:
            while (record := await records.read()) is not None:
                out.append(record)
        except LaneError as error:
            return out, error
        return out, None

    return asyncio.run(main())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=MAX), max_size=8),
    st.lists(st.integers(min_value=0, max_value=20_000), max_size=12),
)
def test_records_come_out_whole_however_the_bytes_are_split(
    records: list[bytes], cuts: list[int]
) -> None:
    assert _feed(_wire(records), cuts) == (records, None)


@given(st.lists(st.integers(min_value=0, max_value=100), max_size=6))
def test_a_truncated_prefix_or_record_is_refused_after_the_whole_ones(cuts: list[int]) -> None:
    good = [b"a" * 10, b"b" * 20]
    out, error = _feed(_wire(good) + b"\x05\x00", cuts)
    assert out == good and str(error) == "truncated length prefix (2 of 4 bytes)"
    out, error = _feed(_wire(good) + struct.pack("<I", 50) + b"x" * 7, cuts)
    assert out == good and str(error) == "truncated record (7 of 50 bytes)"


def test_a_record_above_the_limit_is_refused_after_the_ones_before() -> None:
    out, error = _feed(_wire([b"ok"]) + struct.pack("<I", MAX + 1) + b"x" * 50, [3, 9])
    assert out == [b"ok"]
    assert str(error) == f"record of {MAX + 1} bytes is larger than the limit of {MAX}"


def _filled_until_paused() -> tuple[_Records, _Transport, bytes, int]:
    """Records of MAX bytes fed until reading pauses: the protocol, its
    transport, the record and how many were fed."""
    records = _Records(MAX)
    transport = _Transport()
    records.connection_made(transport)  # type: ignore[arg-type]
    record = b"r" * MAX
    fed = 0
    while not transport.paused and fed < 10:
        records.data_received(_wire([record]))
        fed += 1
    assert transport.paused
    return records, transport, record, fed


def test_reading_pauses_while_records_wait_and_resumes_once_they_are_read() -> None:
    async def main() -> None:
        records, transport, record, fed = _filled_until_paused()
        assert fed * MAX > records.limit >= (fed - 1) * MAX
        got = 0
        while transport.paused and got < fed:
            assert await records.read() == record
            got += 1
        assert not transport.paused and got < fed  # resumed before the queue ran dry
        for _ in range(fed - got):
            assert await records.read() == record

    asyncio.run(main())


def test_a_lost_connection_ends_reads_and_writes() -> None:
    async def main() -> None:
        records = _Records(MAX)
        transport = _Transport()
        records.connection_made(transport)  # type: ignore[arg-type]
        await records.write(b"hello")
        assert transport.written == [struct.pack("<I", 5) + b"hello"]
        records.data_received(_wire([b"last"]))
        records.connection_lost(ConnectionResetError("reset by peer"))
        assert await records.read() == b"last"
        with pytest.raises(ConnectionResetError):
            await records.read()
        with pytest.raises(ConnectionResetError):
            await records.write(b"more")

    asyncio.run(main())


def _pump(wire: bytes, cuts: list[int], queued: int = 0) -> tuple[list[bytes], Exception | None]:
    """Records handed to a sink as they arrive; ``queued`` bytes arrive before the pump starts."""

    async def main() -> tuple[list[bytes], Exception | None]:
        records = _Records(MAX)
        records.connection_made(_Transport())  # type: ignore[arg-type]
        if queued:
            records.data_received(wire[:queued])
        out: list[bytes] = []
        pump = asyncio.ensure_future(records.pump(out.append))
        await asyncio.sleep(0)
        waiter = records._waiter
        later = {p for p in (c % (len(wire) + 1) for c in cuts) if p > queued}
        points = sorted({queued, len(wire)} | later)
        for a, b in itertools.pairwise(points):
            seen = len(out)
            records.data_received(wire[a:b])
            # Whole records reach the sink in the callback itself: no task step,
            # and the pump's own wait is not woken.
            assert len(out) == seen + _whole(wire, b) - _whole(wire, a)
            assert waiter is records._waiter and waiter is not None and not waiter.done()
        records.eof_received()
        try:
            await pump
        except LaneError as error:
            return out, error
        return out, None

    return asyncio.run(main())


def _whole(wire: bytes, end: int) -> int:
    """Whole records in ``wire[:end]``."""
    count = pos = 0
    while end - pos >= 4:
        (size,) = struct.unpack_from("<I", wire, pos)
        if size > MAX or end - pos - 4 < size:
            break
        pos += 4 + size
        count += 1
    return count


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.binary(max_size=MAX), max_size=8),
    st.lists(st.integers(min_value=0, max_value=20_000), max_size=12),
    st.integers(min_value=0, max_value=3000),
)
def test_a_pump_hands_every_record_to_its_sink_as_it_arrives(
    records: list[bytes], cuts: list[int], queued: int
) -> None:
    wire = _wire(records)
    assert _pump(wire, cuts, min(queued, len(wire))) == (records, None)


def test_a_pump_ends_with_the_error_a_read_would_raise() -> None:
    good = [b"a" * 10, b"b" * 20]
    out, error = _pump(_wire(good) + struct.pack("<I", 50) + b"x" * 7, [5, 40])
    assert out == good and str(error) == "truncated record (7 of 50 bytes)"


def test_a_sink_that_raises_ends_the_pump_and_drops_the_rest() -> None:
    async def main() -> None:
        records = _Records(MAX)
        records.connection_made(_Transport())  # type: ignore[arg-type]
        seen: list[bytes] = []

        def sink(record: bytes) -> None:
            seen.append(record)
            if record == b"bad":
                raise ValueError("bad batch")

        pump = asyncio.ensure_future(records.pump(sink))
        await asyncio.sleep(0)
        records.data_received(_wire([b"one", b"bad", b"after"]))
        records.data_received(_wire([b"later"]))
        with pytest.raises(ValueError, match="bad batch"):
            await pump
        assert seen == [b"one", b"bad"]

    asyncio.run(main())


def test_a_pump_resumes_reading_paused_while_records_waited() -> None:
    async def main() -> None:
        records, transport, record, fed = _filled_until_paused()
        out: list[bytes] = []
        pump = asyncio.ensure_future(records.pump(out.append))
        await asyncio.sleep(0)
        assert out == [record] * fed and not transport.paused
        records.eof_received()
        await pump

    asyncio.run(main())
