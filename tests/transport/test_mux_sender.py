"""BatchSender: what leaves in one gRPC message, and response bodies encoded straight into it."""

from __future__ import annotations

import asyncio
import os

import pytest

from chunkwire._core import decode_batch, decode_response_frame, encode_response_frame
from chunkwire.transport.mux import (
    END,
    INITIAL_WINDOW,
    Connection,
    DataReceived,
    Kind,
    StreamOpened,
)
from chunkwire.transport.sender import BATCH_LIMIT, BatchSender, ResponseBody


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, 65536, 70001])
@pytest.mark.parametrize("complete", [False, True])
@pytest.mark.parametrize("flush", [False, True])
def test_response_body_counts_its_encoded_size(size: int, complete: bool, flush: bool) -> None:
    body = memoryview(os.urandom(size))
    encoded = encode_response_frame(body, complete=complete, flush=flush)
    assert len(ResponseBody(body, complete, flush)) == len(encoded)


async def _sent_batches(
    frames: list[tuple[bytes | ResponseBody, bool]],
) -> tuple[list[bytes], list[bytes]]:
    """Send ``frames`` on one stream acceptor -> opener: (the batches, each frame received)."""
    opener = Connection(opener=True, window=4 << 20)  # room for every frame here
    acceptor = Connection(opener=False)
    sid = opener.open(b"", end=True)
    assert [type(e) for e in acceptor.receive(opener.take_frames())] == [StreamOpened]
    # The opener grants its larger window once the response's first DATA
    # arrives; here the acceptor has it up front, to send every frame at once.
    acceptor.receive([(sid, Kind.WINDOW, (4 << 20) - INITIAL_WINDOW, b"")])
    batches: list[bytes] = []

    async def write(batch: bytes) -> None:
        batches.append(batch)

    sender = BatchSender(acceptor, write)
    sender.start()
    for payload, end in frames:
        acceptor.send_data(sid, payload, end=end)
    sender.kick()
    while sender.busy:
        await asyncio.sleep(0)
    await sender.close()
    received = []
    for batch in batches:
        for event in opener.receive(decode_batch(batch)):
            assert isinstance(event, DataReceived)
            received.append(bytes(event.payload))
    return batches, received


def test_response_bodies_arrive_as_the_frames_they_stand_for() -> None:
    blocks = [os.urandom(n) for n in (65536, 65536, 1000, 0, 65536)]
    flags = [(False, False), (False, True), (False, False), (False, True), (True, False)]
    frames = [
        (ResponseBody(memoryview(block), complete, flush), complete)
        for block, (complete, flush) in zip(blocks, flags, strict=True)
    ]
    _, received = asyncio.run(_sent_batches(frames))
    expected = [
        encode_response_frame(block, complete=complete, flush=flush)
        for block, (complete, flush) in zip(blocks, flags, strict=True)
    ]
    assert received == expected
    last = decode_response_frame(received[-1])
    assert last.complete and bytes(last.body) == blocks[-1]


def test_a_batch_carries_several_chunk_frames_and_stays_within_its_limit() -> None:
    chunk = 65536
    frames = [
        (ResponseBody(memoryview(os.urandom(chunk)), i == 19, False), i == 19) for i in range(20)
    ]
    batches, received = asyncio.run(_sent_batches(frames))
    assert len(received) == 20
    assert all(len(batch) <= BATCH_LIMIT for batch in batches)
    per_batch = [len(decode_batch(batch)) for batch in batches]
    assert per_batch[0] == 4, per_batch  # four 64 KiB frames per message
    assert sum(per_batch) == 20


def test_a_frame_kind_other_than_data_is_written_as_given() -> None:
    opener = Connection(opener=True)
    batches: list[bytes] = []

    async def main() -> None:
        async def write(batch: bytes) -> None:
            batches.append(batch)

        sender = BatchSender(opener, write)
        sender.start()
        opener.open(b"init", end=True)
        sender.kick()
        while sender.busy:
            await asyncio.sleep(0)
        await sender.close()

    asyncio.run(main())
    [(sid, kind, value, payload)] = decode_batch(batches[0])
    assert (sid, kind, value, bytes(payload)) == (1, Kind.OPEN, END, b"init")
