"""Response framing against a model: random writes, flushes, corks and marks.

A fake send (no gRPC) that sometimes yields to the loop; every frame is
decoded and checked: bytes in order, chunk bounds, flush boundaries, one
body_complete at the very end, and write() returning under the mark.
"""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest

from chunkwire._core import decode_response_frame
from chunkwire.plugin import Response


class Sink:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.frames: list = []
        self.body = bytearray()

    async def send(self, message: bytes) -> None:
        if self.rng.random() < 0.3:
            await asyncio.sleep(0)
        frame = decode_response_frame(message)
        assert not any(f.complete for f in self.frames), "a frame after body_complete"
        self.frames.append(frame)
        self.body += frame.body


@pytest.mark.parametrize("seed", range(40))
async def test_random_write_sequences(seed: int) -> None:
    rng = random.Random(seed)
    chunk = rng.choice([7, 64, 1000, 65536])
    sink = Sink(rng)
    response = Response(sink.send, chunk)
    response.high_water_mark = rng.choice([1, chunk // 2 or 1, chunk, 3 * chunk + 1])
    expected = bytearray()
    corked = None
    for _ in range(rng.randrange(1, 60)):
        size = rng.choice(
            [0, 1, 5, chunk - 1, chunk, chunk + 1, 3 * chunk + 2, rng.randrange(1, 5 * chunk)]
        )
        data = rng.randbytes(size)
        kind = rng.choice(["bytes", "bytearray", "numpy", "memoryview"])
        buf = {
            "bytes": lambda d: d,
            "bytearray": bytearray,
            "numpy": lambda d: np.frombuffer(d, dtype=np.uint8).copy(),
            "memoryview": lambda d: memoryview(bytearray(d)),
        }[kind](data)
        if rng.random() < 0.1:
            # The mark may move mid-stream: writes honour the new one at once.
            response.high_water_mark = rng.choice([1, chunk // 2 or 1, chunk, 3 * chunk + 1])
        action = rng.random()
        if action < 0.5:
            await response.write(buf)
            if corked is None:
                assert response.buffered < response.high_water_mark
        elif action < 0.75:
            response.write_nowait(buf)
        elif action < 0.85:
            await response.write(buf, flush=True)
            if corked is None:
                assert bytes(sink.body) == bytes(expected + data), "flush left data behind"
        elif action < 0.9:
            await response.drain()
            expected += data
            await response.write(buf)
            continue
        elif corked is None:
            corked = response.cork()
            corked.__enter__()
            before = len(sink.frames)
            response.write_nowait(buf)
        else:
            assert len(sink.frames) == before, "frames left while corked"
            response.write_nowait(buf)
            corked.__exit__(None, None, None)
            corked = None
        expected += data
        if kind != "bytes" and rng.random() < 0.5:
            # The caller may reuse its buffer once write returns.
            mv = memoryview(buf).cast("B") if kind != "memoryview" else buf
            if not mv.readonly and mv.nbytes:
                mv[:] = b"\xee" * mv.nbytes
    if corked is not None:
        corked.__exit__(None, None, None)
    await response.end()
    assert response.complete and response.ended
    assert bytes(sink.body) == bytes(expected)
    assert all(f.body.nbytes <= chunk for f in sink.frames)
    assert sink.frames[-1].complete
    assert sum(f.complete for f in sink.frames) == 1
    assert response.buffered == 0
