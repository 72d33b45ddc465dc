"""Batch codec of the multiplexed connection: byte-identical to protobuf, reads
what protobuf reads, rejects bad input with a FrameError.

Deliberately stricter than protobuf (each case is tested below):
- a known field with another wire type (MuxBatch field 1 not length-delimited,
  MuxFrame fields 1-3 not varints, field 4 not length-delimited) is an error,
  where protobuf would keep it as an unknown field;
- a kind of 2**32 or more is an error, where protobuf truncates it to 32 bits.
And different in one value: a kind in 2**31..2**32-1 comes back unsigned,
where protobuf's int32 enum shows it negative (``protobuf_frames`` maps it).
Everything else, unknown fields and groups at both levels, repeated fields
(last wins), group depth limits, agrees with protobuf's own parser.
"""

from __future__ import annotations

import gc
import random
import tracemalloc
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chunkwire._proto import plugin_pb2

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

U64_MAX = 2**64 - 1
KIND_MAX = 2**31 - 1

Frame = tuple[int, int, int, bytes]


# -- references --------------------------------------------------------------


def protobuf_batch(frames: list[Frame]) -> bytes:
    return plugin_pb2.MuxBatch(
        frames=[
            plugin_pb2.MuxFrame(stream_id=s, kind=k, value=v, payload=bytes(p))
            for s, k, v, p in frames
        ]
    ).SerializeToString()


def protobuf_frames(data: bytes) -> list[Frame] | None:
    """What protobuf's parser reads from ``data``, or None if it rejects it."""
    try:
        batch = plugin_pb2.MuxBatch.FromString(data)
    except DecodeError:
        return None
    return [(f.stream_id, f.kind & 0xFFFFFFFF, f.value, f.payload) for f in batch.frames]


def plain(decoded: list[tuple[int, int, int, memoryview]]) -> list[Frame]:
    return [(s, k, v, bytes(p)) for s, k, v, p in decoded]


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:
        return ("raised", type(exc), str(exc))
    if isinstance(result, list):
        result = plain(result)
    return ("ok", result)


def randbytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


# -- hand-built wire data ----------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def length_delimited(field: int, payload: bytes) -> bytes:
    return tag(field, 2) + varint(len(payload)) + payload


def group(field: int, contents: list[bytes]) -> bytes:
    return tag(field, 3) + b"".join(contents) + tag(field, 4)


def entry(fields: bytes) -> bytes:
    """A MuxFrame's fields as an entry of a MuxBatch."""
    return length_delimited(1, fields)


MAX_FIELD = (1 << 29) - 1


def field_numbers(low: int) -> st.SearchStrategy[int]:
    return st.integers(low, 20) | st.integers(low, MAX_FIELD)


def leaf_fields(numbers: st.SearchStrategy[int]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.builds(lambda f, v: tag(f, 0) + varint(v), numbers, st.integers(0, U64_MAX)),
        st.builds(lambda f, b: tag(f, 1) + b, numbers, st.binary(min_size=8, max_size=8)),
        st.builds(length_delimited, numbers, st.binary(max_size=20)),
        st.builds(lambda f, b: tag(f, 5) + b, numbers, st.binary(min_size=4, max_size=4)),
    )


# Inside a group every field number is unknown, 1..4 included.
any_field = st.recursive(
    leaf_fields(field_numbers(1)),
    lambda inner: st.builds(group, field_numbers(1), st.lists(inner, max_size=4)),
    max_leaves=12,
)


def unknown_fields(low: int) -> st.SearchStrategy[bytes]:
    numbers = field_numbers(low)
    return leaf_fields(numbers) | st.builds(group, numbers, st.lists(any_field, max_size=4))


EDGES = [0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 2**32 - 1, 2**63, U64_MAX]
ids = st.sampled_from(EDGES) | st.integers(0, U64_MAX)
kinds = st.integers(0, 10) | st.sampled_from([127, 128, KIND_MAX]) | st.integers(0, KIND_MAX)
# Sizes where a length prefix (the payload's, or the frame's around it) grows a byte.
PREFIX_EDGES = [120, 125, 126, 127, 128, 129, 16375, 16380, 16383, 16384, 16385]
payloads = st.binary(max_size=300) | st.builds(
    randbytes, st.sampled_from(PREFIX_EDGES), st.integers(0, 2**16)
)
frames_st = st.tuples(ids, kinds, ids, payloads)


def known_frame_fields() -> st.SearchStrategy[bytes]:
    return st.one_of(
        ids.map(lambda v: tag(1, 0) + varint(v)),
        # Up to 2**32 - 1: the unsigned view of protobuf's int32 kinds.
        (kinds | st.integers(0, 2**32 - 1)).map(lambda v: tag(2, 0) + varint(v)),
        ids.map(lambda v: tag(3, 0) + varint(v)),
        st.binary(max_size=200).map(lambda p: length_delimited(4, p)),
    )


@st.composite
def batches(draw: st.DrawFn) -> list[bytes]:
    """A valid MuxBatch as its list of top-level fields: frames (with known and
    unknown fields, repeated, any order) and unknown fields of the batch."""
    frame_fields = st.lists(known_frame_fields() | unknown_fields(5), max_size=6)
    frame = frame_fields.map(lambda fields: entry(b"".join(fields)))
    return draw(st.lists(frame | unknown_fields(2), max_size=8))


# -- encoding ----------------------------------------------------------------


def payload_as(kind: str, payload: bytes) -> Any:
    if kind == "bytes":
        return payload
    if kind == "bytearray":
        return bytearray(payload)
    if kind == "memoryview":
        return memoryview(b"--" + payload + b"--")[2:-2]
    if kind == "uint8":
        return np.frombuffer(payload, dtype=np.uint8)
    raise AssertionError(kind)


PAYLOAD_TYPES = ["bytes", "bytearray", "memoryview", "uint8"]


@SETTINGS
@given(
    frames=st.lists(frames_st, max_size=12),
    payload_type=st.sampled_from(PAYLOAD_TYPES),
)
def test_encode_matches_protobuf(
    core: ModuleType, frames: list[Frame], payload_type: str
) -> None:
    expected = protobuf_batch(frames)
    items = [(s, k, v, payload_as(payload_type, p)) for s, k, v, p in frames]
    wire = core.encode_batch(items)
    assert type(wire) is bytes
    assert wire == expected
    writer = core.BatchWriter(2**62)
    for s, k, v, p in items:
        assert writer.add(s, k, v, p) is True
    assert (len(writer), writer.nbytes) == (len(frames), len(expected))
    assert writer.take() == expected
    assert plain(core.decode_batch(wire)) == frames


@pytest.mark.parametrize(
    "size", sorted({n + d for n in (127, 16383, 2**21 - 1) for d in range(-5, 3)} | {0, 1})
)
def test_length_prefix_edges(core: ModuleType, size: int) -> None:
    """Payloads around where the payload's and the frame's length prefixes grow."""
    payload = randbytes(size, size)
    frames = [(1, 2, 0, payload), (U64_MAX, KIND_MAX, U64_MAX, payload), (0, 0, 0, payload)]
    expected = protobuf_batch(frames)
    assert core.encode_batch(frames) == expected
    writer = core.BatchWriter(len(expected))
    assert all(writer.add(*frame) for frame in frames)
    assert writer.take() == expected
    assert plain(core.decode_batch(expected)) == frames
    assert protobuf_frames(expected) == frames


def test_encode_examples(core: ModuleType) -> None:
    assert core.encode_batch([]) == b""
    assert core.encode_batch(iter([])) == b""
    assert core.encode_batch([(0, 0, 0, b"")]) == b"\x0a\x00"  # every frame is written
    assert core.encode_batch([(1, 2, 3, b"ab")]) == b"\x0a\x0a\x08\x01\x10\x02\x18\x03\x22\x02ab"
    assert core.encode_batch([[5, 0, 0, b""], (0, 0, 0, b"x")]) == (
        b"\x0a\x02\x08\x05\x0a\x03\x22\x01x"
    )
    assert core.encode_batch(((1, 1, 0, b""),) * 2) == b"\x0a\x04\x08\x01\x10\x01" * 2


def test_encode_wider_items(core: ModuleType) -> None:
    payloads = [np.arange(100, dtype=np.int32), np.arange(12, dtype=">u2").reshape(3, 4)]
    frames = [(1, 2, 0, p) for p in payloads]
    expected = protobuf_batch([(1, 2, 0, p.tobytes()) for p in payloads])
    assert core.encode_batch(frames) == expected
    writer = core.BatchWriter(10**6)
    for frame in frames:
        writer.add(*frame)
    assert writer.take() == expected


INT_FIELDS = [("stream_id", 0, U64_MAX), ("kind", 1, KIND_MAX), ("value", 2, U64_MAX)]


@pytest.mark.parametrize(("name", "index", "high"), INT_FIELDS)
def test_int_range_at_the_bound(core: ModuleType, name: str, index: int, high: int) -> None:
    frame = [0, 0, 0, b""]
    frame[index] = high
    assert core.decode_batch(core.encode_batch([tuple(frame)]))[0][index] == high
    assert core.encode_batch([tuple(frame)]) == protobuf_batch([tuple(frame)])  # type: ignore[list-item]


@pytest.mark.parametrize(("name", "index", "high"), INT_FIELDS)
@pytest.mark.parametrize("past", ["above", "negative"])
def test_int_range_one_past(
    core: ModuleType, name: str, index: int, high: int, past: str
) -> None:
    bad = high + 1 if past == "above" else -1
    frame: list[Any] = [0, 0, 0, b""]
    frame[index] = bad
    text = "2**64-1" if high == U64_MAX else "2**31-1"
    message = rf"^{name} out of range 0\.\.{text.replace('*', '[*]')}$"
    with pytest.raises(OverflowError, match=message):
        core.encode_batch([tuple(frame)])
    writer = core.BatchWriter(1000)
    with pytest.raises(OverflowError, match=message):
        writer.add(*frame)
    with pytest.raises(OverflowError, match=message):
        writer.add_body(frame[0], frame[1], b"x", response=True, value=frame[2])
    assert (len(writer), writer.nbytes, writer.take()) == (0, 0, b"")


def test_int_conversion(core: ModuleType, core_py: ModuleType) -> None:
    # __index__ is honoured (numpy ints, bools), anything else is a TypeError.
    frame = (np.uint64(U64_MAX), np.int32(7), True, b"")
    assert core.encode_batch([frame]) == protobuf_batch([(U64_MAX, 7, 1, b"")])
    for bad in (1.0, "1", None, b"1"):
        for index in range(3):
            frame_list: list[Any] = [0, 0, 0, b""]
            frame_list[index] = bad
            result = outcome(core.encode_batch, [tuple(frame_list)])
            assert result[:2] == ("raised", TypeError)
            assert result == outcome(core_py.encode_batch, [tuple(frame_list)])


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param(None, id="not-iterable"),
        pytest.param(5, id="int"),
        pytest.param([(1, 2, 3)], id="three-items"),
        pytest.param([(1, 2, 3, b"", 5)], id="five-items"),
        pytest.param([5], id="item-not-iterable"),
        pytest.param([(1, 2, 3, "text")], id="payload-str"),
        pytest.param([(1, 2, 3, None)], id="payload-none"),
        pytest.param([(1, 2, 3, b"ok"), (1, 2, 3, 7)], id="second-payload"),
        pytest.param([(1, 2, 3, np.arange(10)[::2])], id="payload-not-contiguous"),
    ],
)
def test_encode_bad_frames(core: ModuleType, core_py: ModuleType, frames: Any) -> None:
    result = outcome(core.encode_batch, frames)
    assert result[0] == "raised"
    assert result[1] in (TypeError, ValueError, BufferError)
    assert result == outcome(core_py.encode_batch, frames)


def test_encode_releases_buffers(core: ModuleType) -> None:
    data = bytearray(b"abc")
    core.encode_batch([(1, 2, 3, data), (1, 2, 3, data)])
    with pytest.raises(TypeError):
        core.encode_batch([(1, 2, 3, data), (1, 2, 3, None)])
    writer = core.BatchWriter(100)
    writer.add(1, 2, 3, data)
    writer.add_body(1, 2, data, response=False)
    data += b"x"  # no export left


class ClearsList:
    """An int whose conversion empties the list of frames being encoded."""

    def __init__(self, frames: list[Any], value: int) -> None:
        self.frames = frames
        self.value = value

    def __index__(self) -> int:
        self.frames.clear()
        gc.collect()
        return self.value


def test_encode_frames_list_changing_under_it(core: ModuleType) -> None:
    frames: list[Any] = []
    frames += [(ClearsList(frames, 5), 2, 0, b"x"), (1, 2, 3, randbytes(500, 9))]
    expected = protobuf_batch([(5, 2, 0, b"x"), (1, 2, 3, randbytes(500, 9))])
    assert core.encode_batch(frames) == expected
    assert frames == []


def test_writer_used_again_while_converting(core: ModuleType) -> None:
    writer = core.BatchWriter(1000)

    class AddsFirst:
        def __index__(self) -> int:
            writer.add(9, 9, 0, b"inner")
            return 1

    class TakesFirst:
        def __index__(self) -> int:
            self.taken = writer.take()
            return 2

    assert writer.add(AddsFirst(), 2, 0, b"outer") is True
    assert writer.take() == protobuf_batch([(9, 9, 0, b"inner"), (1, 2, 0, b"outer")])
    writer.add(7, 1)
    takes = TakesFirst()
    assert writer.add_body(takes, 2, b"body", response=False) is True
    assert takes.taken == protobuf_batch([(7, 1, 0, b"")])
    payload = core.encode_request_frame(b"body")
    assert writer.take() == protobuf_batch([(2, 2, 0, payload)])


# -- BatchWriter -------------------------------------------------------------


def test_writer_limit_exactly_at_the_bound(core: ModuleType) -> None:
    frames = [(1, 2, 0, randbytes(100, 1)), (3, 2, 0, randbytes(50, 2))]
    size = len(protobuf_batch(frames))
    writer = core.BatchWriter(size)
    assert writer.add(*frames[0]) is True
    assert writer.add(*frames[1]) is True
    assert (len(writer), writer.nbytes) == (2, size)
    assert writer.take() == protobuf_batch(frames)


def test_writer_limit_one_past_the_bound(core: ModuleType) -> None:
    frames = [(1, 2, 0, randbytes(100, 1)), (3, 2, 0, randbytes(50, 2))]
    size = len(protobuf_batch(frames))
    first = len(protobuf_batch(frames[:1]))
    writer = core.BatchWriter(size - 1)
    assert writer.add(*frames[0]) is True
    assert writer.add(*frames[1]) is False
    assert (len(writer), writer.nbytes) == (1, first)  # nothing of it was added
    assert writer.take() == protobuf_batch(frames[:1])
    assert writer.add(*frames[1]) is True  # the next batch takes it
    assert writer.take() == protobuf_batch(frames[1:])


def test_writer_oversized_frame_into_empty_batch(core: ModuleType) -> None:
    big = (7, 2, 0, randbytes(5000, 3))
    writer = core.BatchWriter(100)
    assert writer.add(*big) is True
    assert writer.nbytes == len(protobuf_batch([big])) > 100
    assert writer.add(1, 3, 1) is False  # the batch is over its limit already
    assert writer.add_body(1, 2, b"", response=True) is False
    assert writer.take() == protobuf_batch([big])
    assert writer.add(1, 3, 1) is True
    assert writer.take() == protobuf_batch([(1, 3, 1, b"")])


def test_writer_limit_one(core: ModuleType) -> None:
    writer = core.BatchWriter(1)
    assert writer.limit == 1
    assert writer.add(0, 0) is True  # b"\x0a\x00": two bytes, alone in its batch
    assert writer.add(0, 0) is False
    assert writer.take() == b"\x0a\x00"


@pytest.mark.parametrize("limit", [0, -1])
def test_writer_limit_must_be_positive(core: ModuleType, limit: int) -> None:
    with pytest.raises(ValueError, match=f"limit must be >= 1, got {limit}"):
        core.BatchWriter(limit)


def test_writer_limit_types(core: ModuleType) -> None:
    with pytest.raises(TypeError):
        core.BatchWriter(1.5)
    with pytest.raises(TypeError):
        core.BatchWriter()
    assert core.BatchWriter(np.int64(10)).limit == 10
    assert core.BatchWriter(2**100).add(1, 1, 0, b"x" * 1000) is True


@SETTINGS
@given(frames=st.lists(frames_st, max_size=20), limit=st.integers(1, 3000))
def test_writer_splits_into_batches(core: ModuleType, frames: list[Frame], limit: int) -> None:
    """Frames split over batches: each batch within the limit unless it holds one
    frame, each frame refused only when it would pass it, order kept."""
    writer = core.BatchWriter(limit)
    batches: list[bytes] = []
    for frame in frames:
        before = writer.nbytes
        if not writer.add(*frame):
            assert len(writer) > 0
            assert before + len(protobuf_batch([frame])) > limit
            batches.append(writer.take())
            assert writer.add(*frame) is True
        assert writer.nbytes == before + len(protobuf_batch([frame])) or len(writer) == 1
    if len(writer):
        batches.append(writer.take())
    assert writer.take() == b""
    decoded = [frame for batch in batches for frame in plain(core.decode_batch(batch))]
    assert decoded == frames
    for batch in batches:
        assert len(batch) <= limit or len(core.decode_batch(batch)) == 1


def test_writer_reuse_after_take(core: ModuleType) -> None:
    writer = core.BatchWriter(1 << 20)
    for round_ in range(3):
        frames = [(i + round_, 2, i, randbytes(i * 37, i + round_)) for i in range(20)]
        for frame in frames:
            writer.add(*frame)
        assert writer.take() == protobuf_batch(frames)
        assert (len(writer), writer.nbytes) == (0, 0)
    assert "frames=0" in repr(writer)


def traced_growth(work: Callable[[], None]) -> int:
    """Bytes still allocated after ``work()`` (run once before, to warm caches)."""
    work()
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        work()
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before


def test_writer_lets_go_of_an_oversized_buffer(core: ModuleType) -> None:
    big = bytes(4 << 20)
    small = [randbytes(1000, i) for i in range(100)]
    gc.collect()
    tracemalloc.start()
    try:
        writer = core.BatchWriter(64 * 1024)
        writer.add(1, 2, 0, big)
        assert len(writer.take()) > 4 << 20
        for i, payload in enumerate(small):
            writer.add(i, 2, 0, payload)
        writer.take()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Without the release the 4 MiB buffer would stay allocated in the writer.
    assert held < 512 * 1024


def test_no_leaks(core: ModuleType) -> None:
    frames = [(i, 2, i, randbytes(300, i)) for i in range(8)]
    wire = protobuf_batch(frames)
    bad = [b"\x0a\x05abc", entry(b"\x08\x80"), b"\x0a\x00" * 3]

    def work() -> None:
        for _ in range(1000):
            assert len(core.decode_batch(wire)) == 8
            assert core.encode_batch(frames) == wire
            writer = core.BatchWriter(1000)
            writer.add(*frames[0])
            writer.add_body(1, 2, frames[1][3], response=True, complete=True)
            while writer.add(*frames[2]):
                pass
            writer.take()
            for data in bad:
                with pytest.raises(core.FrameError):
                    core.decode_batch(data, max_frames=2)
            with pytest.raises(OverflowError):
                core.encode_batch([frames[0], (-1, 0, 0, b"")])
            with pytest.raises(TypeError):
                writer.add(1, 2, 3, None)

    assert traced_growth(work) < 64 * 1024


# -- add_body ----------------------------------------------------------------


@SETTINGS
@given(
    stream_id=ids,
    kind=kinds,
    value=ids,
    body=payloads,
    body_type=st.sampled_from(PAYLOAD_TYPES),
    response=st.booleans(),
    complete=st.booleans(),
    flush=st.booleans(),
)
def test_add_body_is_the_nested_frame(
    core: ModuleType,
    stream_id: int,
    kind: int,
    value: int,
    body: bytes,
    body_type: str,
    response: bool,
    complete: bool,
    flush: bool,
) -> None:
    flush = flush and response
    if response:
        payload = core.encode_response_frame(body, complete=complete, flush=flush)
    else:
        payload = core.encode_request_frame(body, complete=complete)
    expected = protobuf_batch([(0, 2, 0, b"lead"), (stream_id, kind, value, payload)])
    writer = core.BatchWriter(len(expected))
    writer.add(0, 2, 0, b"lead")
    added = writer.add_body(
        stream_id,
        kind,
        payload_as(body_type, body),
        response=response,
        complete=complete,
        flush=flush,
        value=value,
    )
    assert added is True
    assert writer.take() == expected
    # The same limit rule as add: one byte less and it does not fit.
    writer = core.BatchWriter(len(expected) - 1)
    writer.add(0, 2, 0, b"lead")
    assert writer.add_body(stream_id, kind, body, response=response, complete=complete,
                           flush=flush, value=value) is False
    assert writer.take() == protobuf_batch([(0, 2, 0, b"lead")])


def test_add_body_examples(core: ModuleType) -> None:
    writer = core.BatchWriter(1000)
    writer.add_body(1, 2, b"", response=False)  # an empty payload is left out
    writer.add_body(1, 2, b"", response=True, complete=True)
    writer.add_body(3, 2, b"hi", response=True, flush=True)
    assert writer.take() == (
        b"\x0a\x04\x08\x01\x10\x02"
        + b"\x0a\x08\x08\x01\x10\x02\x22\x02\x18\x01"
        + b"\x0a\x0c\x08\x03\x10\x02\x22\x06\x12\x02hi\x20\x01"
    )


def test_add_body_flush_only_in_responses(core: ModuleType) -> None:
    writer = core.BatchWriter(1000)
    with pytest.raises(ValueError, match="flush is only for response bodies"):
        writer.add_body(1, 2, b"x", response=False, flush=True)
    assert (len(writer), writer.nbytes) == (0, 0)
    with pytest.raises(TypeError):
        writer.add_body(1, 2, b"x")  # response is required
    with pytest.raises(TypeError):
        writer.add_body(1, 2, b"x", True)
    with pytest.raises(TypeError):
        writer.add_body(1, 2, "text", response=True)


def test_add_body_flags_are_truthy(core: ModuleType) -> None:
    for flag in (0, 1, 2, None, "", "x", np.bool_(True), np.bool_(False)):
        writer = core.BatchWriter(1000)
        writer.add_body(1, 2, b"a", response=True, complete=flag, flush=flag)
        payload = core.encode_response_frame(b"a", complete=bool(flag), flush=bool(flag))
        assert writer.take() == protobuf_batch([(1, 2, 0, payload)])


# -- decoding ----------------------------------------------------------------


@SETTINGS
@given(fields=batches())
def test_decode_agrees_with_protobuf(core: ModuleType, fields: list[bytes]) -> None:
    """Unknown fields and groups at both levels, repeated fields: as protobuf parses them."""
    wire = b"".join(fields)
    expected = protobuf_frames(wire)
    assert expected is not None
    assert plain(core.decode_batch(wire)) == expected


@SETTINGS
@given(frames=st.lists(frames_st, max_size=12))
def test_decode_protobuf_output(core: ModuleType, frames: list[Frame]) -> None:
    wire = protobuf_batch(frames)
    decoded = core.decode_batch(wire)
    assert plain(decoded) == frames
    for stream_id, kind, value, payload in decoded:
        assert (type(stream_id), type(kind), type(value)) == (int, int, int)
        assert type(payload) is memoryview
        assert (payload.format, payload.ndim, payload.readonly) == ("B", 1, True)


def test_decode_examples(core: ModuleType) -> None:
    assert core.decode_batch(b"") == []
    assert plain(core.decode_batch(b"\x0a\x00")) == [(0, 0, 0, b"")]
    # Last occurrence wins inside a frame; each field-1 entry is its own frame.
    wire = entry(b"\x08\x01\x10\x02\x22\x01a\x08\x03\x10\x04\x18\x05\x22\x01b\x18\x00")
    wire += entry(b"\x22\x00")
    assert plain(core.decode_batch(wire)) == [(3, 4, 0, b"b"), (0, 0, 0, b"")]
    assert protobuf_frames(wire) == [(3, 4, 0, b"b"), (0, 0, 0, b"")]
    # Unknown fields of every wire type, in the batch and in a frame.
    unknown = b"\x28\x01\x31" + b"x" * 8 + b"\x3a\x01y\x3b\x08\x01\x3c\x45abcd"
    wire = unknown + entry(unknown + b"\x08\x09") + unknown
    assert plain(core.decode_batch(wire)) == [(9, 0, 0, b"")]
    assert protobuf_frames(wire) == [(9, 0, 0, b"")]
    # Ten-byte varints, padded tags and lengths.
    wire = entry(b"\x08" + b"\xff" * 9 + b"\x01" + b"\x98\x80\x80\x80\x00\x07")
    assert plain(core.decode_batch(wire)) == [(U64_MAX, 0, 7, b"")]
    assert plain(core.decode_batch(b"\x0a\x82\x80\x00\x08\x01")) == [(1, 0, 0, b"")]


def test_decode_kind_range(core: ModuleType) -> None:
    # Unsigned where protobuf's int32 enum says -1.
    wire = entry(b"\x10\xff\xff\xff\xff\x0f")
    assert plain(core.decode_batch(wire)) == [(0, 2**32 - 1, 0, b"")]
    assert plugin_pb2.MuxBatch.FromString(wire).frames[0].kind == -1
    # 2**32 and above: protobuf truncates (or, for some encodings, rejects).
    for value in (2**32, 2**32 + 1, U64_MAX):
        wire = entry(b"\x10" + varint(value))
        with pytest.raises(core.FrameError, match=f"^frame 0: kind {value} out of range"):
            core.decode_batch(wire)


def test_decode_group_depth_as_protobuf(core: ModuleType) -> None:
    """Protobuf counts the frame as one level: 100 groups in the batch, 99 in a frame."""

    def nested(n: int) -> bytes:
        return b"\x2b" * n + b"\x2c" * n

    for wire, ok in [
        (nested(100), True),
        (nested(101), False),
        (entry(nested(99)), True),
        (entry(nested(100)), False),
    ]:
        assert (protobuf_frames(wire) is not None) is ok
        if ok:
            core.decode_batch(wire)
        else:
            with pytest.raises(core.FrameError, match="groups nested deeper than"):
                core.decode_batch(wire)


def test_decode_input_types(core: ModuleType) -> None:
    frames = [(1, 2, 3, randbytes(300, 5)), (4, 5, 6, b"")]
    wire = protobuf_batch(frames)
    for data in (
        wire,
        bytearray(wire),
        memoryview(b"xx" + wire)[2:],
        np.frombuffer(wire, dtype=np.uint8),
        np.frombuffer(wire[: len(wire) // 2 * 2], dtype=np.uint16),
    ):
        expected = frames if len(data) * getattr(data, "itemsize", 1) == len(wire) else None
        if expected is not None:
            assert plain(core.decode_batch(data)) == expected
        else:
            with pytest.raises(core.FrameError):
                core.decode_batch(data)
    with pytest.raises(TypeError, match="bytes-like"):
        core.decode_batch("text")
    with pytest.raises(BufferError):
        core.decode_batch(np.frombuffer(wire, dtype=np.uint8)[::2])


def test_decode_max_frames(core: ModuleType) -> None:
    wire = b"\x0a\x00" * 5
    assert len(core.decode_batch(wire, max_frames=5)) == 5
    with pytest.raises(core.FrameError, match=r"^more than 4 frames in the batch$"):
        core.decode_batch(wire, max_frames=4)
    assert core.decode_batch(b"", max_frames=0) == []
    with pytest.raises(core.FrameError, match="more than 0 frames"):
        core.decode_batch(b"\x0a\x00", max_frames=0)
    assert len(core.decode_batch(wire, max_frames=2**80)) == 5
    with pytest.raises(ValueError, match="max_frames must be >= 0, got -1"):
        core.decode_batch(wire, max_frames=-1)
    with pytest.raises(TypeError):
        core.decode_batch(wire, max_frames=1.0)
    with pytest.raises(TypeError):
        core.decode_batch(wire, 5)  # keyword only


def test_decode_many_frames(core: ModuleType) -> None:
    wire = b"\x0a\x00" * 100_000
    frames = core.decode_batch(wire)
    assert len(frames) == 100_000
    assert plain(frames[-1:]) == [(0, 0, 0, b"")]


# -- zero copy ---------------------------------------------------------------


def test_payload_is_a_view_of_a_bytearray(core: ModuleType) -> None:
    wire = bytearray(core.encode_batch([(1, 2, 0, b"hello"), (3, 2, 0, b"world")]))
    (_, _, _, first), (_, _, _, second) = core.decode_batch(wire)
    assert first.readonly and second.readonly
    start = wire.index(b"world")
    wire[start : start + 5] = b"WORLD"
    assert bytes(second) == b"WORLD"
    assert bytes(first) == b"hello"
    with pytest.raises(TypeError):
        second[0] = 0  # read-only even over a writable source


def test_payload_shares_numpy_memory(core: ModuleType) -> None:
    wire = core.encode_batch([(1, 2, 0, b"x" * 64)])
    arr = np.frombuffer(wire, dtype=np.uint8).copy()
    ((_, _, _, payload),) = core.decode_batch(arr)
    assert np.shares_memory(np.frombuffer(payload, dtype=np.uint8), arr)
    arr[-1] = ord("y")
    assert bytes(payload) == b"x" * 63 + b"y"


def test_payload_view_keeps_the_input(core: ModuleType) -> None:
    wire = core.encode_batch([(1, 2, 0, b"abc" * 100)])
    ((_, _, _, payload),) = core.decode_batch(wire)
    del wire
    gc.collect()
    assert bytes(payload) == b"abc" * 100


def test_payload_views_hold_the_buffer_until_dropped(core: ModuleType) -> None:
    wire = bytearray(core.encode_batch([(1, 2, 0, b"abc"), (1, 6, 0, b"")]))
    frames = core.decode_batch(wire)
    with pytest.raises(BufferError):
        wire += b"x"
    payload = frames[0][3]
    del frames
    gc.collect()
    with pytest.raises(BufferError):
        wire += b"x"
    del payload
    gc.collect()
    wire += b"x"


@pytest.mark.parametrize(
    "wire", [b"\x80", b"\x0a\x05abc", b"\x0a\x00\x0a\x02\x08\x80", b"\x08\x01", b"\x2c"]
)
def test_failed_decode_releases_the_buffer(core: ModuleType, wire: bytes) -> None:
    data = bytearray(wire)
    with pytest.raises(core.FrameError):
        core.decode_batch(data)
    data += b"x"


# -- malformed and truncated input -------------------------------------------

# (name, wire, match, protobuf rejects it too / None: not compared)
MALFORMED = [
    ("truncated-tag", b"\x80", "^truncated varint at offset 1$", True),
    ("truncated-frame-length", b"\x0a", "^truncated varint at offset 1$", True),
    ("frame-past-end", b"\x0a\x05abc", "^length 5 of field 1 runs past the end at offset 2$", True),
    ("frame-past-end-huge", b"\x0a" + b"\xff" * 9 + b"\x01", "past the end", True),
    ("frame-length-11-bytes", b"\x0a" + b"\x80" * 10 + b"\x00", "varint longer than 10", True),
    ("tag-11-bytes", b"\xff" * 10 + b"\x01", "varint longer than 10", True),
    ("stream-id-11-bytes", entry(b"\x08" + b"\xff" * 10 + b"\x01"), "^frame 0: varint long", True),
    ("truncated-stream-id", entry(b"\x08\x80"), "^frame 0: truncated varint at offset 4$", True),
    ("truncated-value", b"\x0a\x00" + entry(b"\x18"), "^frame 1: truncated varint", True),
    ("truncated-payload-length", entry(b"\x22"), "^frame 0: truncated varint", True),
    ("payload-past-frame", entry(b"\x22\x05abc"), "^frame 0: length 5 of field 4 runs past", True),
    (
        "payload-past-frame-not-batch",
        b"\x0a\x03\x22\x05abc" + b"xx",
        "^frame 0: length 5 of field 4 runs past the end at offset 4$",
        True,
    ),
    ("unknown-past-frame", entry(b"\x2a\x05ab"), "^frame 0: length 5 of field 5", True),
    ("unknown-past-batch", b"\x12\x05ab", "^length 5 of field 2 runs past", True),
    ("fixed64-past-end", b"\x11abc", "truncated 64-bit field 2", True),
    ("fixed32-past-frame", entry(b"\x2dab"), "^frame 0: truncated 32-bit field 5", True),
    ("wire-type-6", b"\x16", "^invalid wire type 6 for field 2$", True),
    ("wire-type-7", b"\x17\x00", "^invalid wire type 7 for field 2$", True),
    ("wire-type-6-in-frame", entry(b"\x2e"), "^frame 0: invalid wire type 6", True),
    ("wire-type-7-in-frame", entry(b"\x0f"), "^frame 0: field 1 has wire type 7", True),
    ("wire-type-7-in-group", entry(b"\x2b\x0f\x2c"), "^frame 0: invalid wire type 7", True),
    ("field-0", b"\x00\x00", "^field number 0 at offset 0$", True),
    ("field-0-in-frame", entry(b"\x02\x00"), "^frame 0: field number 0 at offset 2$", True),
    ("field-0-end-group", b"\x04", "field number 0", True),
    # upb accepts field 0 inside an unknown group (C++ protobuf does not).
    ("field-0-in-group", entry(b"\x2b\x00\x00\x2c"), "field number 0", None),
    ("tag-over-32-bits", b"\x80\x80\x80\x80\x10\x01", "tag out of range", True),
    ("stray-end-group", b"\x14", "^end of group 2 without a start$", True),
    ("stray-end-group-in-frame", entry(b"\x2c"), "^frame 0: end of group 5 without a start$", True),
    ("frame-as-end-group", b"\x0c", "^field 1 has wire type 4, expected 2", True),
    ("mismatched-end-group", b"\x2b\x34", "does not close group 5", True),
    ("unterminated-group", b"\x2b\x08\x01", "truncated", True),
    ("unterminated-group-in-frame", entry(b"\x2b\x08\x01"), "^frame 0: truncated", True),
    ("group-past-frame", b"\x0a\x01\x2b\x2c", "^frame 0: truncated varint at offset 3$", True),
    ("groups-too-deep", b"\x2b" * 101 + b"\x2c" * 101, "nested deeper than 100", True),
    ("groups-deep-unterminated", b"\x2b" * 10**5, "nested deeper than 100", True),
    ("error-in-third-frame", b"\x0a\x00\x0a\x00" + entry(b"\x80"), "^frame 2: ", True),
    # Known fields with another wire type: protobuf keeps them as unknown.
    ("frame-as-varint", b"\x08\x01", "^field 1 has wire type 0, expected 2 at offset 0$", False),
    ("frame-as-fixed32", b"\x0dabcd", "field 1 has wire type 5", False),
    ("frame-as-group", b"\x0b\x0c", "field 1 has wire type 3", False),
    ("stream-as-bytes", entry(b"\x0a\x00"), "^frame 0: field 1 has wire type 2, expected", False),
    ("kind-as-fixed64", entry(b"\x11abcdefgh"), "^frame 0: field 2 has wire type 1", False),
    ("value-as-fixed32", entry(b"\x1dabcd"), "^frame 0: field 3 has wire type 5", False),
    ("payload-as-varint", entry(b"\x20\x01"), "^frame 0: field 4 has wire type 0, expected", False),
    ("payload-as-end-group", entry(b"\x24"), "^frame 0: field 4 has wire type 4", True),
    # protobuf keeps the low 32 bits of this one and rejects others.
    ("kind-2^32+1", entry(b"\x10" + varint(2**32 + 1)), "^frame 0: kind 4294967297 out", False),
    ("kind-2^64-1", entry(b"\x10" + b"\xff" * 9 + b"\x01"), "kind 18446744073709551615", False),
]


@pytest.mark.parametrize(
    ("wire", "match", "protobuf_rejects"),
    [pytest.param(*case[1:], id=case[0]) for case in MALFORMED],
)
def test_malformed(
    core: ModuleType, core_py: ModuleType, wire: bytes, match: str, protobuf_rejects: bool | None
) -> None:
    with pytest.raises(core.FrameError, match=match):
        core.decode_batch(wire)
    assert outcome(core.decode_batch, wire) == outcome(core_py.decode_batch, wire)
    if protobuf_rejects is not None:
        assert (protobuf_frames(wire) is None) is protobuf_rejects


@SETTINGS
@given(fields=batches())
def test_truncated_at_every_offset(core: ModuleType, fields: list[bytes]) -> None:
    """A prefix is a valid batch exactly when it ends between two top-level fields,
    for protobuf and for us; where valid, both read the same frames."""
    wire = b"".join(fields)
    between_fields = {0}
    offset = 0
    for field in fields:
        offset += len(field)
        between_fields.add(offset)
    for cut in range(len(wire) + 1):
        prefix = wire[:cut]
        expected = protobuf_frames(prefix)
        assert (expected is not None) is (cut in between_fields), cut
        if expected is None:
            with pytest.raises(core.FrameError):
                core.decode_batch(prefix)
        else:
            assert plain(core.decode_batch(prefix)) == expected


def test_truncated_protobuf_batch(core: ModuleType) -> None:
    frames = [(1, 1, 0, randbytes(200, 7)), (1, 2, 9, b""), (2**40, 4, 3, b"reason")]
    wire = protobuf_batch(frames)
    ends = {0}
    for i in range(1, len(frames) + 1):
        ends.add(len(protobuf_batch(frames[:i])))
    for cut in range(len(wire) + 1):
        if cut in ends:
            assert plain(core.decode_batch(wire[:cut])) == protobuf_frames(wire[:cut])
        else:
            with pytest.raises(core.FrameError):
                core.decode_batch(wire[:cut])
            assert protobuf_frames(wire[:cut]) is None


# -- fuzzing -----------------------------------------------------------------

STRICTER = ("has wire type", "kind", "field number 0")


def check_against_protobuf(core: ModuleType, wire: bytes) -> None:
    """Decoding succeeds or raises FrameError; it succeeds only where protobuf
    does, and then reads the same frames; it fails where protobuf succeeds only
    for the deliberate differences in the module docstring (and field 0 inside
    an unknown group, which upb lets through)."""
    expected = protobuf_frames(wire)
    try:
        frames = plain(core.decode_batch(wire))
    except core.FrameError as exc:
        if expected is not None:
            assert any(text in str(exc) for text in STRICTER), exc
        return
    assert frames == expected


@st.composite
def mutated_batches(draw: st.DrawFn) -> bytes:
    wire = bytearray(b"".join(draw(batches())))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(wire)))
        action = draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "insert" or not wire:
            wire[pos:pos] = draw(st.binary(min_size=1, max_size=3))
        elif action == "delete":
            del wire[min(pos, len(wire) - 1)]
        else:
            wire[min(pos, len(wire) - 1)] ^= 1 << draw(st.integers(0, 7))
    return bytes(wire)


fuzz_inputs = st.binary(max_size=200) | mutated_batches()


@settings(SETTINGS, max_examples=500)
@given(wire=fuzz_inputs)
@example(wire=b"\x2b" * 200)
@example(wire=b"\x0a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01")
@example(wire=entry(b"\x10\x80\x80\x80\x80\x10"))
def test_fuzz_decode(core: ModuleType, wire: bytes) -> None:
    check_against_protobuf(core, wire)


@settings(SETTINGS, max_examples=500)
@given(wire=fuzz_inputs, max_frames=st.none() | st.integers(0, 4))
def test_fuzz_c_and_py_agree(
    core_c: ModuleType, core_py: ModuleType, wire: bytes, max_frames: int | None
) -> None:
    for data in (wire, bytearray(wire), np.frombuffer(wire, dtype=np.uint8)):
        assert outcome(core_c.decode_batch, data, max_frames=max_frames) == outcome(
            core_py.decode_batch, data, max_frames=max_frames
        )


@SETTINGS
@given(frames=st.lists(frames_st, max_size=8), limit=st.integers(1, 1000))
def test_encode_c_and_py_agree(
    core_c: ModuleType, core_py: ModuleType, frames: list[Frame], limit: int
) -> None:
    assert core_c.encode_batch(frames) == core_py.encode_batch(frames)
    writers = [core_c.BatchWriter(limit), core_py.BatchWriter(limit)]
    for frame in frames:
        assert len({w.add(*frame) for w in writers}) == 1
        assert len({w.add_body(*frame[:2], frame[3], response=True) for w in writers}) == 1
        assert len({(len(w), w.nbytes) for w in writers}) == 1
    assert len({w.take() for w in writers}) == 1
