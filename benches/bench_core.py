"""Core benchmarks (BENCHMARKS.md, "Core"): compiled vs pure twin vs plain Python.

Each case is one uniquely named function, parametrised over the same
implementations: ``c`` (chunkwire._core_c), ``py`` (chunkwire._core_py) and
``plain`` (the obvious Python: a bytearray cut with slices, protobuf's
generated classes, hand formatting), plus references where they make sense:
``memcpy`` (one memmove of the same bytes: the limit; the chunker copies
every byte twice, in and out) and, for a single
call, the cost of calling anything at all.

Sizes (override with environment variables, same for every implementation):
- CHUNKWIRE_BENCH_SMALL_WRITES, default 1,000,000 writes of 32 bytes;
- CHUNKWIRE_BENCH_BULK_MIB, default 256 MiB per round (BENCHMARKS.md says
  1 GiB; a quarter keeps rounds short on a shared 2-core machine; the
  ratios are what matters);
- CHUNKWIRE_BENCH_SSE_EVENTS, default 10,000 events;
- batches: 64 frames of 1.1 KB and 16 frames of 64 KiB per MuxBatch, fixed.

Every round's work is checked once, outside the timing, so a benchmark never
measures a broken path. ``extra_info`` holds the bytes and operations per
round for benches/report_core.py.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import re
from collections.abc import Callable
from typing import Any

import pytest

from chunkwire._proto import http_pb2, plugin_pb2

CHUNK = 65536
SMALL_WRITES = int(os.environ.get("CHUNKWIRE_BENCH_SMALL_WRITES", 1_000_000))
BULK_BYTES = int(os.environ.get("CHUNKWIRE_BENCH_BULK_MIB", 256)) << 20
SSE_EVENTS = int(os.environ.get("CHUNKWIRE_BENCH_SSE_EVENTS", 10_000))
CALL_LOOP = 10_000

SOURCE = bytes(range(256)) * 4096  # 1 MiB, reused for every write

CORES = {"c": "chunkwire._core_c", "py": "chunkwire._core_py"}
CORE_AND_PLAIN = ["c", "py", "plain"]
WITH_MEMCPY = ["c", "py", "plain", "memcpy"]


def load_core(name: str) -> Any:
    """The compiled (``c``) or pure (``py``) core; a missing build fails the benchmark."""
    try:
        return importlib.import_module(CORES[name])
    except ImportError as exc:
        pytest.fail(f"{CORES[name]} is not importable ({exc})", pytrace=False)


def measure(benchmark: Any, target: Callable[[], Any], rounds: int, **info: Any) -> Any:
    benchmark.extra_info.update(info)
    return benchmark.pedantic(target, rounds=rounds, warmup_rounds=1, iterations=1)


# -- many small writes --------------------------------------------------------


def small_writes_core(core: Any) -> Callable[[], int]:
    piece = b"x" * 32

    def run() -> int:
        chunker = core.Chunker(CHUNK)
        write, pop = chunker.write, chunker.pop
        out = 0
        for _ in range(SMALL_WRITES):
            taken = write(piece)
            if taken < 32:  # full: drain, then write the rest
                while (item := pop()) is not None:
                    out += len(item[0])
                write(piece[taken:])
        while (item := pop(True)) is not None:
            out += len(item[0])
        return out

    return run


def small_writes_plain() -> Callable[[], int]:
    piece = b"x" * 32

    def run() -> int:
        buf = bytearray()
        out = 0
        for _ in range(SMALL_WRITES):
            buf += piece
            while len(buf) >= CHUNK:
                chunk = bytes(buf[:CHUNK])
                del buf[:CHUNK]
                out += len(chunk)
        if buf:
            out += len(bytes(buf))
        return out

    return run


@pytest.mark.benchmark(group="small_writes")
@pytest.mark.parametrize("impl", CORE_AND_PLAIN)
def test_small_writes(benchmark: Any, impl: str) -> None:
    run = small_writes_plain() if impl == "plain" else small_writes_core(load_core(impl))
    assert run() == 32 * SMALL_WRITES
    measure(benchmark, run, rounds=9, bytes=32 * SMALL_WRITES, ops=SMALL_WRITES)


# -- bulk throughput ----------------------------------------------------------


def bulk_core(core: Any, write_size: int, frames: bool) -> Callable[[], int]:
    source = memoryview(SOURCE)[:write_size]
    writes = BULK_BYTES // write_size

    def run() -> int:
        chunker = core.Chunker(CHUNK)
        write = chunker.write
        pop = chunker.pop_response_frame if frames else chunker.pop
        count = 0
        for _ in range(writes):
            view = source
            while True:
                taken = write(view)
                while pop() is not None:
                    count += 1
                if taken == len(view):
                    break
                view = view[taken:]
        while pop(True) is not None:
            count += 1
        return count

    return run


def bulk_plain(write_size: int, frames: bool) -> Callable[[], int]:
    source = memoryview(SOURCE)[:write_size]
    writes = BULK_BYTES // write_size
    message = http_pb2.ServeHTTPResponse

    def run() -> int:
        buf = bytearray()
        count = 0
        for _ in range(writes):
            buf += source
            while len(buf) >= CHUNK:
                chunk = bytes(buf[:CHUNK])
                del buf[:CHUNK]
                if frames:
                    message(body_chunk=chunk).SerializeToString()
                count += 1
        return count

    return run


def bulk_memcpy(write_size: int) -> Callable[[], int]:
    """One memmove per write into a fixed buffer: a single copy, the limit.

    (``bytearray`` slice assignment copies too, but measured here it is about
    1.6x slower than memmove for 64 KiB, so it would flatter the others.)
    """
    keep = bytearray(SOURCE[:write_size])
    source = ctypes.addressof((ctypes.c_char * write_size).from_buffer(keep))
    dest_buffer = (ctypes.c_char * write_size)()
    dest = ctypes.addressof(dest_buffer)
    memmove = ctypes.memmove
    writes = BULK_BYTES // write_size

    def run() -> int:
        for _ in range(writes):
            memmove(dest, source, write_size)
        assert keep and dest_buffer  # alive while run() is
        return BULK_BYTES // CHUNK

    return run


def bulk(benchmark: Any, impl: str, write_size: int, frames: bool) -> None:
    if impl == "plain":
        run = bulk_plain(write_size, frames)
    elif impl == "memcpy":
        run = bulk_memcpy(write_size)
    else:
        run = bulk_core(load_core(impl), write_size, frames)
    assert run() == BULK_BYTES // CHUNK
    measure(benchmark, run, rounds=7, bytes=BULK_BYTES, ops=BULK_BYTES // write_size)


@pytest.mark.benchmark(group="bulk_64k_writes")
@pytest.mark.parametrize("impl", WITH_MEMCPY)
def test_bulk_64k_writes(benchmark: Any, impl: str) -> None:
    bulk(benchmark, impl, 64 << 10, frames=False)


@pytest.mark.benchmark(group="bulk_1m_writes")
@pytest.mark.parametrize("impl", WITH_MEMCPY)
def test_bulk_1m_writes(benchmark: Any, impl: str) -> None:
    bulk(benchmark, impl, 1 << 20, frames=False)


@pytest.mark.benchmark(group="bulk_64k_frames")
@pytest.mark.parametrize("impl", WITH_MEMCPY)
def test_bulk_64k_frames(benchmark: Any, impl: str) -> None:
    bulk(benchmark, impl, 64 << 10, frames=True)


@pytest.mark.benchmark(group="bulk_1m_frames")
@pytest.mark.parametrize("impl", WITH_MEMCPY)
def test_bulk_1m_frames(benchmark: Any, impl: str) -> None:
    bulk(benchmark, impl, 1 << 20, frames=True)


# -- one small write ----------------------------------------------------------
#
# A single call is too short to time alone, so each round makes CALL_LOOP
# calls from a bound method in a local (the report divides). The loop costs
# the same for every row; the floors are the cheapest calls there are: a
# Cython method that returns at once (flush() with nothing pending) and a
# one-argument builtin method doing nothing ([].count).


def _loop(call: Callable[[Any], Any], arg: Any) -> None:
    for _ in range(CALL_LOOP):
        call(arg)


def _loop_no_arg(call: Callable[[], Any]) -> None:
    for _ in range(CALL_LOOP):
        call()


def _append_loop(buf: bytearray, piece: bytes) -> None:
    for _ in range(CALL_LOOP):
        buf += piece


@pytest.mark.benchmark(group="write_call_32b")
@pytest.mark.parametrize("impl", ["c", "py", "plain", "c-noop-call", "builtin-call"])
def test_write_call_32b(benchmark: Any, impl: str) -> None:
    piece = b"x" * 32
    if impl in ("c", "py"):
        core = load_core(impl)

        def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
            chunker = core.Chunker(CHUNK, capacity=32 * CALL_LOOP)
            return (chunker.write, piece), {}

        target: Callable[..., None] = _loop
        check = core.Chunker(CHUNK, capacity=32 * CALL_LOOP)
        _loop(check.write, piece)
        assert check.pending == check.capacity  # every call wrote, none hit "full"
    elif impl == "plain":

        def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
            return (bytearray(), piece), {}

        target = _append_loop
    elif impl == "c-noop-call":
        noop = load_core("c").Chunker(CHUNK).flush

        def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
            return (noop,), {}

        target = _loop_no_arg
    else:
        count = [].count

        def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
            return (count, piece), {}

        target = _loop
    benchmark.extra_info.update(bytes=32 * CALL_LOOP, ops=CALL_LOOP)
    benchmark.pedantic(target, setup=setup, rounds=300, warmup_rounds=10)


# -- a 64 KiB frame -----------------------------------------------------------

BODY = SOURCE[:CHUNK]
PROTOBUF_WIRE = http_pb2.ServeHTTPResponse(body_chunk=BODY, flush=True).SerializeToString()
FRAME_IMPLS = ["c", "py", "protobuf"]


def frame_encoder(impl: str) -> Callable[[], bytes]:
    if impl == "protobuf":
        message = http_pb2.ServeHTTPResponse
        return lambda: message(body_chunk=BODY, flush=True).SerializeToString()
    encode = load_core(impl).encode_response_frame
    return lambda: encode(BODY, flush=True)


def frame_decoder(impl: str) -> Callable[[bytes], int]:
    if impl == "protobuf":
        parse = http_pb2.ServeHTTPResponse.FromString
        return lambda wire: len(parse(wire).body_chunk)
    decode = load_core(impl).decode_response_frame
    return lambda wire: len(decode(wire).body)


@pytest.mark.benchmark(group="frame_encode_64k")
@pytest.mark.parametrize("impl", FRAME_IMPLS)
def test_frame_encode_64k(benchmark: Any, impl: str) -> None:
    encode = frame_encoder(impl)
    assert encode() == PROTOBUF_WIRE
    benchmark.extra_info.update(bytes=CHUNK, ops=1)
    benchmark(encode)


@pytest.mark.benchmark(group="frame_decode_64k")
@pytest.mark.parametrize("impl", FRAME_IMPLS)
def test_frame_decode_64k(benchmark: Any, impl: str) -> None:
    decode = frame_decoder(impl)
    assert decode(PROTOBUF_WIRE) == CHUNK
    benchmark.extra_info.update(bytes=CHUNK, ops=1)
    benchmark(decode, PROTOBUF_WIRE)


@pytest.mark.benchmark(group="frame_roundtrip_64k")
@pytest.mark.parametrize("impl", FRAME_IMPLS)
def test_frame_roundtrip_64k(benchmark: Any, impl: str) -> None:
    encode, decode = frame_encoder(impl), frame_decoder(impl)

    def roundtrip() -> int:
        return decode(encode())

    assert roundtrip() == CHUNK
    benchmark.extra_info.update(bytes=CHUNK, ops=1)
    benchmark(roundtrip)


# -- SSE ------------------------------------------------------------------------

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def plain_sse(data: str, *, event: str | None = None, id: str | None = None) -> bytes:
    out = []
    if event is not None:
        if "\n" in event or "\r" in event:
            raise ValueError("line break in event")
        out.append(f"event: {event}\n")
    if id is not None:
        if "\n" in id or "\r" in id or "\0" in id:
            raise ValueError("line break or NUL in id")
        out.append(f"id: {id}\n")
    for line in _LINE_BREAK.split(data):
        out.append(f"data: {line}\n")
    out.append("\n")
    return "".join(out).encode()


@pytest.mark.benchmark(group="sse_small_events")
@pytest.mark.parametrize("impl", CORE_AND_PLAIN)
def test_sse_small_events(benchmark: Any, impl: str) -> None:
    encode = plain_sse if impl == "plain" else load_core(impl).encode_sse
    events = [
        (f"token {i}" if i % 10 else f"line {i}\nline two", str(i)) for i in range(SSE_EVENTS)
    ]

    def run() -> int:
        return len(b"".join([encode(data, event="token", id=ident) for data, ident in events]))

    reference = load_core("py").encode_sse
    expected = b"".join(reference(data, event="token", id=ident) for data, ident in events)
    assert b"".join(encode(data, event="token", id=ident) for data, ident in events) == expected
    measure(benchmark, run, rounds=20, bytes=len(expected), ops=SSE_EVENTS)


# -- multiplexed batches ------------------------------------------------------
#
# A batch as the multiplexed connection sends it: DATA frames whose payloads
# are ServeHTTPResponse body messages, written with BatchWriter.add_body (c,
# py) or built with protobuf's generated classes (payload serialised, then
# the batch). Decoding reads every frame's payload. Two shapes: 64 frames of
# 1.1 KB (small responses) and 16 frames of 64 KiB (a download's chunks).
# ``memcpy``: one memmove of the whole batch, the floor for encoding.

BATCH_IMPLS = ["c", "py", "protobuf"]
DATA = 2  # FrameKind.FRAME_KIND_DATA


def batch_bodies(size: int, count: int) -> list[bytes]:
    """Distinct bodies: SOURCE at a different offset each."""
    return [(SOURCE[i * 977 :] + SOURCE)[:size] for i in range(count)]


def batch_encoder(impl: str, bodies: list[bytes]) -> Callable[[], bytes]:
    if impl == "protobuf":
        batch, frame = plugin_pb2.MuxBatch, plugin_pb2.MuxFrame
        body = http_pb2.ServeHTTPResponse

        def run_protobuf() -> bytes:
            frames = [
                frame(
                    stream_id=2 * i + 1,
                    kind=DATA,
                    payload=body(body_chunk=b, flush=True).SerializeToString(),
                )
                for i, b in enumerate(bodies)
            ]
            return batch(frames=frames).SerializeToString()

        return run_protobuf
    writer = load_core(impl).BatchWriter(1 << 30)
    add_body, take = writer.add_body, writer.take

    def run() -> bytes:
        for i, b in enumerate(bodies):
            add_body(2 * i + 1, DATA, b, response=True, flush=True)
        return take()

    return run


def batch_decoder(impl: str) -> Callable[[bytes], int]:
    if impl == "protobuf":
        parse = plugin_pb2.MuxBatch.FromString
        return lambda wire: sum(len(f.payload) for f in parse(wire).frames)
    decode = load_core(impl).decode_batch
    return lambda wire: sum(len(f[3]) for f in decode(wire))


def batch_memcpy(size: int) -> Callable[[], int]:
    keep = bytearray(size)
    source = ctypes.addressof((ctypes.c_char * size).from_buffer(keep))
    dest_buffer = (ctypes.c_char * size)()
    dest = ctypes.addressof(dest_buffer)
    memmove = ctypes.memmove

    def run() -> int:
        memmove(dest, source, size)
        assert keep and dest_buffer
        return size

    return run


def batch_case(benchmark: Any, impl: str, size: int, count: int, decode: bool) -> None:
    bodies = batch_bodies(size, count)
    wire = batch_encoder("protobuf", bodies)()
    benchmark.extra_info.update(bytes=len(wire), ops=count)
    if impl == "memcpy":
        benchmark(batch_memcpy(len(wire)))
        return
    if decode:
        run_decode = batch_decoder(impl)
        payloads = [f.payload for f in plugin_pb2.MuxBatch.FromString(wire).frames]
        assert run_decode(wire) == sum(map(len, payloads)) > size * count
        benchmark(run_decode, wire)
    else:
        run_encode = batch_encoder(impl, bodies)
        assert run_encode() == wire
        benchmark(run_encode)


@pytest.mark.benchmark(group="batch_encode_64x1k")
@pytest.mark.parametrize("impl", BATCH_IMPLS)
def test_batch_encode_64x1k(benchmark: Any, impl: str) -> None:
    batch_case(benchmark, impl, 1100, 64, decode=False)


@pytest.mark.benchmark(group="batch_decode_64x1k")
@pytest.mark.parametrize("impl", BATCH_IMPLS)
def test_batch_decode_64x1k(benchmark: Any, impl: str) -> None:
    batch_case(benchmark, impl, 1100, 64, decode=True)


@pytest.mark.benchmark(group="batch_encode_16x64k")
@pytest.mark.parametrize("impl", [*BATCH_IMPLS, "memcpy"])
def test_batch_encode_16x64k(benchmark: Any, impl: str) -> None:
    batch_case(benchmark, impl, CHUNK, 16, decode=False)


@pytest.mark.benchmark(group="batch_decode_16x64k")
@pytest.mark.parametrize("impl", BATCH_IMPLS)
def test_batch_decode_16x64k(benchmark: Any, impl: str) -> None:
    batch_case(benchmark, impl, CHUNK, 16, decode=True)


# -- shared ring ----------------------------------------------------------------
#
# One chunk at a time through a shared-memory ring: the writer copies it in,
# the reader gets a view, releases it and the writer takes the credit back;
# the reader touches one byte per chunk, as a consumer that hands the view on
# (to a socket send) would. Reference: one memmove of the same bytes.


def ring_core(core: Any, chunk: int) -> Callable[[], int]:
    source = memoryview(SOURCE)[:chunk]
    chunks = BULK_BYTES // chunk
    writer = core.RingWriter(8 * chunk, 1)
    reader = core.RingReader(os.dup(writer.fileno()), 1)

    def run() -> int:
        write, read, release, credit = writer.write, reader.read, reader.release, writer.credit
        count = 0
        for _ in range(chunks):
            view = read(write(source))
            count += view[0] >= 0
            credit(release(view))
        return count

    return run


def ring_memcpy(chunk: int) -> Callable[[], int]:
    keep = bytearray(SOURCE[:chunk])
    source = ctypes.addressof((ctypes.c_char * chunk).from_buffer(keep))
    dest_buffer = (ctypes.c_char * chunk)()
    dest = ctypes.addressof(dest_buffer)
    memmove = ctypes.memmove
    chunks = BULK_BYTES // chunk

    def run() -> int:
        for _ in range(chunks):
            memmove(dest, source, chunk)
        assert keep and dest_buffer
        return chunks

    return run


def ring(benchmark: Any, impl: str, chunk: int) -> None:
    run = ring_memcpy(chunk) if impl == "memcpy" else ring_core(load_core(impl), chunk)
    assert run() == BULK_BYTES // chunk
    measure(benchmark, run, rounds=7, bytes=BULK_BYTES, ops=BULK_BYTES // chunk)


@pytest.mark.benchmark(group="ring_64k_chunks")
@pytest.mark.parametrize("impl", ["c", "py", "memcpy"])
def test_ring_64k_chunks(benchmark: Any, impl: str) -> None:
    ring(benchmark, impl, 64 << 10)


@pytest.mark.benchmark(group="ring_1m_chunks")
@pytest.mark.parametrize("impl", ["c", "py", "memcpy"])
def test_ring_1m_chunks(benchmark: Any, impl: str) -> None:
    ring(benchmark, impl, 1 << 20)


@pytest.mark.benchmark(group="ring_4k_chunks")
@pytest.mark.parametrize("impl", ["c", "py", "memcpy"])
def test_ring_4k_chunks(benchmark: Any, impl: str) -> None:
    ring(benchmark, impl, 4 << 10)
