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


def test_reading_pauses_while_records_wait_and_resumes_once_they_are_read() -> None:
    async def main() -> None:
        records = _Records(MAX)
        transport = _Transport()
        records.connection_made(transport)  # type: ignore[arg-type]
        record = b"r" * MAX
        fed = 0
        while not transport.paused and fed < 10:
            records.data_received(_wire([record]))
            fed += 1
        assert transport.paused
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
