"""Chunker: unit tests, hypothesis properties against a model, and c/py agreement."""

from __future__ import annotations

import array
import ctypes
import gc
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chunkwire._proto import http_pb2

PROPERTY_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """A comparable record of a call: its result, or its exception type and text."""
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:
        return ("raised", type(exc), str(exc))


# -- buffers -----------------------------------------------------------------

BUFFER_KINDS = ["bytes", "bytearray", "memoryview", "uint8", "int32", "int32-be", "uint16-2d"]


def make_buffer(kind: str, payload: bytes) -> tuple[Any, bytes]:
    """Wrap ``payload`` as a buffer of ``kind``; return it and the raw bytes it holds.

    Wider dtypes hold the payload cut down to a whole number of items.
    """
    if kind == "bytes":
        return bytes(payload), payload
    if kind == "bytearray":
        return bytearray(payload), payload
    if kind == "memoryview":
        # A slice at a non-zero offset of a larger buffer.
        return memoryview(b"<<" + payload + b">>")[2:-2], payload
    if kind == "uint8":
        return np.frombuffer(payload, dtype=np.uint8).copy(), payload
    if kind in ("int32", "int32-be"):
        raw = payload[: len(payload) - len(payload) % 4]
        dtype = np.dtype(np.int32) if kind == "int32" else np.dtype(">i4")
        return np.frombuffer(raw, dtype=dtype).copy(), raw
    if kind == "uint16-2d":
        raw = payload[: len(payload) - len(payload) % 4]
        items = np.frombuffer(raw, dtype=np.uint16)
        # Empty 2-D arrays have their own test (test_empty_buffers_of_any_shape).
        return (items.reshape(-1, 2) if raw else items).copy(), raw
    raise AssertionError(kind)


def buffers(chunk_size: int) -> st.SearchStrategy[tuple[str, bytes]]:
    return st.tuples(st.sampled_from(BUFFER_KINDS), st.binary(max_size=3 * chunk_size))


# -- the model ---------------------------------------------------------------


class Model:
    """The contract, written out plainly: a byte stream plus flush offsets."""

    def __init__(self, chunk_size: int, capacity: int) -> None:
        self.chunk_size = chunk_size
        self.capacity = capacity
        self.stream = bytearray()  # every accepted byte, in order
        self.read_pos = 0
        self.boundaries: list[int] = []  # stream offsets past read_pos

    @property
    def pending(self) -> int:
        return len(self.stream) - self.read_pos

    def write(self, raw: bytes) -> int:
        n = min(len(raw), self.capacity - self.pending)
        self.stream += raw[:n]
        return n

    def write_many(self, raws: list[bytes]) -> tuple[int, int]:
        """Return (bytes taken, buffers looked at)."""
        total = 0
        for i, raw in enumerate(raws):
            n = self.write(raw)
            total += n
            if n < len(raw):
                return total, i + 1
        return total, len(raws)

    def flush(self) -> None:
        end = len(self.stream)
        if self.pending and (not self.boundaries or self.boundaries[-1] != end):
            self.boundaries.append(end)

    def pop(self, final: bool) -> tuple[bytes, bool] | None:
        if self.boundaries:
            distance = self.boundaries[0] - self.read_pos
            size, at_flush = (
                (distance, True)
                if distance <= self.chunk_size
                else (
                    self.chunk_size,
                    False,
                )
            )
        elif self.pending >= self.chunk_size:
            size, at_flush = self.chunk_size, False
        elif final and self.pending:
            size, at_flush = self.pending, False
        else:
            return None
        chunk = bytes(self.stream[self.read_pos : self.read_pos + size])
        self.read_pos += size
        if at_flush:
            self.boundaries.pop(0)
        return chunk, at_flush


# -- operations --------------------------------------------------------------

POPS = ["pop", "pop_request_frame", "pop_response_frame"]


def operations(chunk_size: int) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.one_of(
        st.tuples(st.just("write"), buffers(chunk_size)),
        st.tuples(st.just("write_many"), st.lists(buffers(chunk_size), max_size=4)),
        st.just(("flush",)),
        st.tuples(st.sampled_from(POPS), st.booleans()),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, int | None, list[tuple[Any, ...]]]:
    chunk_size = draw(st.integers(1, 64))
    capacity = draw(st.none() | st.integers(chunk_size, 5 * chunk_size))
    ops = draw(st.lists(operations(chunk_size), max_size=50))
    return chunk_size, capacity, ops


def run(
    core: ModuleType, chunk_size: int, capacity: int | None, ops: list[tuple[Any, ...]]
) -> list[Any]:
    """Apply ``ops`` to a Chunker, checking each step against the model.

    Returns a trace of everything observable, for comparing implementations.
    """
    chunker = core.Chunker(chunk_size, capacity)
    model = Model(chunk_size, 4 * chunk_size if capacity is None else capacity)
    assert (chunker.chunk_size, chunker.capacity) == (model.chunk_size, model.capacity)
    trace: list[Any] = []
    popped = bytearray()
    for op in ops:
        name = op[0]
        if name == "write":
            obj, raw = make_buffer(*op[1])
            taken = chunker.write(obj)
            assert type(taken) is int
            assert taken == model.write(raw)
            trace.append(taken)
        elif name == "write_many":
            made = [make_buffer(*spec) for spec in op[1]]
            looked_at = 0

            def source(made: list[tuple[Any, bytes]] = made) -> Iterator[Any]:
                nonlocal looked_at
                for obj, _ in made:
                    looked_at += 1
                    yield obj

            taken = chunker.write_many(source())
            assert (taken, looked_at) == model.write_many([raw for _, raw in made])
            trace.append((taken, looked_at))
        elif name == "flush":
            chunker.flush()
            model.flush()
        else:
            final = op[1]
            expected = model.pop(final)
            result = getattr(chunker, name)(final=final)
            if expected is None:
                assert result is None
            elif name == "pop":
                chunk, at_flush = result
                assert type(chunk) is bytes and type(at_flush) is bool
                assert (chunk, at_flush) == expected
                assert 1 <= len(chunk) <= chunk_size
            else:
                check_frame(core, name, result, expected, final and model.pending == 0)
            if expected is not None:
                popped += expected[0]
            trace.append(result)
        assert chunker.pending == model.pending
        assert chunker.pending + chunker.free == chunker.capacity
        assert 0 <= chunker.pending <= chunker.capacity
        trace.append((chunker.pending, chunker.free))
    assert popped == model.stream[: model.read_pos]
    # Draining with final gives back every byte accepted, in order.
    while (item := chunker.pop(final=True)) is not None:
        assert item == model.pop(True)
        popped += item[0]
        trace.append(item)
    assert model.pop(True) is None
    assert popped == model.stream
    assert chunker.pending == 0 and chunker.free == chunker.capacity
    trace.append(repr(chunker))
    return trace


def check_frame(
    core: ModuleType,
    name: str,
    frame: bytes,
    expected: tuple[bytes, bool],
    complete: bool,
) -> None:
    chunk, at_flush = expected
    assert type(frame) is bytes
    if name == "pop_request_frame":
        decoded = core.decode_request_frame(frame)
        message = http_pb2.ServeHTTPRequest(body_chunk=chunk, body_complete=complete)
    else:
        decoded = core.decode_response_frame(frame)
        assert decoded.flush is at_flush
        message = http_pb2.ServeHTTPResponse(
            body_chunk=chunk, body_complete=complete, flush=at_flush
        )
    assert decoded.init is None
    assert bytes(decoded.body) == chunk
    assert decoded.complete is complete
    assert frame == message.SerializeToString()


# -- properties --------------------------------------------------------------


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_chunker_follows_model(core: ModuleType, scenario: Any) -> None:
    run(core, *scenario)


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_chunker_c_and_py_agree(core_c: ModuleType, core_py: ModuleType, scenario: Any) -> None:
    assert run(core_c, *scenario) == run(core_py, *scenario)


@settings(max_examples=200, deadline=None)
@given(
    chunk_size=st.integers(1, 64),
    writes=st.lists(st.tuples(st.binary(max_size=200), st.booleans()), max_size=30),
)
def test_chunks_never_cross_a_flush(
    core: ModuleType, chunk_size: int, writes: list[tuple[bytes, bool]]
) -> None:
    """Written without the model: a flushed offset always ends a flagged chunk."""
    chunker = core.Chunker(chunk_size, capacity=chunk_size + 200)
    flushes: set[int] = set()
    offset = 0
    chunks: list[tuple[bytes, bool]] = []
    for data, flush in writes:
        assert chunker.write(data) == len(data)
        offset += len(data)
        if flush:
            chunker.flush()
            if chunker.pending:
                flushes.add(offset)
        while (item := chunker.pop()) is not None:
            chunks.append(item)
    while (item := chunker.pop(final=True)) is not None:
        chunks.append(item)
    assert b"".join(c for c, _ in chunks) == b"".join(d for d, _ in writes)
    ends = set()
    end = 0
    for i, (chunk, at_flush) in enumerate(chunks):
        assert 1 <= len(chunk) <= chunk_size
        end += len(chunk)
        if at_flush:
            ends.add(end)
        elif i < len(chunks) - 1:
            # Short chunks only end at a flush or at the very end.
            assert len(chunk) == chunk_size
        assert not any(end - len(chunk) < f < end for f in flushes), "chunk crosses a flush"
    assert ends == flushes


# -- examples ----------------------------------------------------------------


def test_small_writes_coalesce(core: ModuleType) -> None:
    chunker = core.Chunker(8)
    for _ in range(5):
        assert chunker.write(b"abc") == 3
    assert chunker.pop() == (b"abcabcab", False)
    assert chunker.pop() is None
    assert chunker.pop(final=True) == (b"cabcabc", False)
    assert chunker.pop(final=True) is None


def test_large_write_splits(core: ModuleType) -> None:
    chunker = core.Chunker(4, capacity=10)
    assert chunker.write(bytes(range(25))) == 10
    assert chunker.pending == 10 and chunker.free == 0
    assert chunker.write(b"x") == 0
    assert chunker.pop() == (bytes(range(4)), False)
    assert chunker.pop() == (bytes(range(4, 8)), False)
    assert chunker.pop() is None
    assert chunker.write(bytes(range(10, 25))) == 8  # wraps around the ring
    assert [chunker.pop(final=True) for _ in range(4)] == [
        (bytes(range(8, 12)), False),
        (bytes(range(12, 16)), False),
        (bytes(range(16, 18)), False),
        None,
    ]


def test_flush_ends_short_chunk(core: ModuleType) -> None:
    chunker = core.Chunker(8)
    chunker.write(b"hello")
    assert chunker.pop() is None
    chunker.flush()
    chunker.write(b" world")
    assert chunker.pop() == (b"hello", True)
    assert chunker.pop() is None
    assert chunker.pop(final=True) == (b" world", False)


def test_flush_at_chunk_size_is_flagged(core: ModuleType) -> None:
    chunker = core.Chunker(4)
    chunker.write(b"abcd")
    chunker.flush()
    assert chunker.pop() == (b"abcd", True)


def test_flush_past_chunk_size(core: ModuleType) -> None:
    chunker = core.Chunker(4)
    chunker.write(b"abcdefghij")
    chunker.flush()
    assert chunker.pop() == (b"abcd", False)
    assert chunker.pop() == (b"efgh", False)
    assert chunker.pop() == (b"ij", True)
    assert chunker.pop(final=True) is None


def test_final_stops_at_flush_first(core: ModuleType) -> None:
    chunker = core.Chunker(8)
    chunker.write(b"ab")
    chunker.flush()
    chunker.write(b"cd")
    assert chunker.pop(final=True) == (b"ab", True)
    assert chunker.pop(final=True) == (b"cd", False)


def test_flush_with_nothing_pending_yields_nothing(core: ModuleType) -> None:
    chunker = core.Chunker(8)
    chunker.flush()
    assert chunker.pop() is None
    assert chunker.pop(final=True) is None
    chunker.write(b"ab")
    assert chunker.pop() is None  # the earlier flush left no boundary behind
    chunker.flush()
    assert chunker.pop() == (b"ab", True)
    chunker.flush()  # nothing pending again
    chunker.write(b"c")
    assert chunker.pop() is None


def test_flush_rule_is_documented(core: ModuleType) -> None:
    """The Chunker docstring says a flush with nothing pending yields no empty chunk.

    The compiled module may keep its docstrings in its stub, as the house style allows.
    """
    docs = [core.Chunker.__doc__ or ""]
    stub = Path(core.__file__).with_name(core.__name__.rpartition(".")[2] + ".pyi")
    if core.COMPILED and stub.exists():
        docs.append(stub.read_text())
    assert any(
        "flush" in text and "pending == 0" in text and "no empty chunk" in text
        for text in (" ".join(doc.split()) for doc in docs)
    )


def test_repeated_flush_is_one_boundary(core: ModuleType) -> None:
    chunker = core.Chunker(8)
    chunker.write(b"ab")
    chunker.flush()
    chunker.flush()
    chunker.write(b"cd")
    chunker.flush()
    assert chunker.pop() == (b"ab", True)
    assert chunker.pop() == (b"cd", True)
    assert chunker.pop(final=True) is None


def test_empty_write(core: ModuleType) -> None:
    chunker = core.Chunker(4, capacity=4)
    assert chunker.write(b"") == 0
    assert chunker.write(b"abcd") == 4
    assert chunker.write(b"") == 0
    assert chunker.write(np.zeros(0, dtype=np.int32)) == 0


@pytest.mark.parametrize("shape", [(0,), (0, 2), (2, 0), (3, 0, 4)], ids=str)
@pytest.mark.parametrize("entry", ["write", "write_many", "encode", "decode"])
def test_empty_buffers_of_any_shape(core: ModuleType, shape: tuple[int, ...], entry: str) -> None:
    empty = np.zeros(shape, dtype=np.uint16)
    if entry == "write":
        assert core.Chunker(4).write(empty) == 0
    elif entry == "write_many":
        assert core.Chunker(4).write_many([b"ab", empty, b"cd"]) == 4
    elif entry == "encode":
        assert core.encode_response_frame(empty, flush=True) == b"\x20\x01"
    else:
        frame = core.decode_request_frame(empty)
        assert (frame.init, bytes(frame.body), frame.complete) == (None, b"", False)


def test_write_copies(core: ModuleType) -> None:
    chunker = core.Chunker(4)
    data = bytearray(b"abcd")
    chunker.write(data)
    data[:] = b"wxyz"
    assert chunker.pop() == (b"abcd", False)


def test_write_accepts_any_contiguous_buffer(core: ModuleType) -> None:
    class Pair(ctypes.Structure):
        _fields_ = [("a", ctypes.c_int32), ("b", ctypes.c_uint8)]

    structured = np.array([(1, 2), (3, 4)], dtype=[("a", "<i4"), ("b", "u1")])
    objects = [
        np.arange(6, dtype=">i4"),
        np.arange(12, dtype=np.float64).reshape(3, 4),
        np.int32(7),  # zero-dimensional
        structured,
        array.array("d", [1.5, 2.5]),
        (ctypes.c_int16 * 3)(1, 2, 3),
        Pair(1, 2),
        memoryview(bytearray(b"abcdef")).cast("H"),
        memoryview(b"abcdef").toreadonly(),
    ]
    for obj in objects:
        raw = bytes(memoryview(obj).cast("B"))
        chunker = core.Chunker(1024)
        assert chunker.write(obj) == len(raw), obj
        assert chunker.pop(final=True) == (raw, False), obj


def test_write_many(core: ModuleType) -> None:
    chunker = core.Chunker(4, capacity=8)
    assert chunker.write_many([]) == 0
    assert chunker.write_many([b"ab", bytearray(b"cd"), np.frombuffer(b"ef", np.uint8)]) == 6
    assert chunker.write_many(iter([b"gh", b"ij", b"kl"])) == 2
    assert chunker.pending == 8
    assert chunker.write_many([b"", b""]) == 0
    assert chunker.write_many([b"x"]) == 0
    assert chunker.pop() == (b"abcd", False)
    # The buffer that does not fit whole is taken in part; later ones untouched.
    assert chunker.write_many([b"123", b"456"]) == 4
    assert chunker.pop() == (b"efgh", False)
    assert chunker.pop() == (b"1234", False)
    assert chunker.pop(final=True) is None


def test_write_many_stops_pulling(core: ModuleType) -> None:
    pulled: list[bytes] = []

    def source() -> Iterator[bytes]:
        for item in (b"abc", b"def", b"ghi", b"jkl"):
            pulled.append(item)
            yield item

    chunker = core.Chunker(2, capacity=4)
    assert chunker.write_many(source()) == 4
    assert pulled == [b"abc", b"def"]


def test_write_many_error_keeps_earlier_buffers(core: ModuleType) -> None:
    chunker = core.Chunker(4)
    with pytest.raises(TypeError):
        chunker.write_many([b"ab", "cd", b"ef"])
    assert chunker.pending == 2
    with pytest.raises(TypeError):
        chunker.write_many(42)
    with pytest.raises(ZeroDivisionError):
        chunker.write_many(b"x" for _ in range(1) if 1 / 0)
    assert chunker.pop(final=True) == (b"ab", False)


def test_pop_frames(core: ModuleType) -> None:
    chunker = core.Chunker(4)
    assert chunker.pop_request_frame() is None
    assert chunker.pop_request_frame(final=True) is None
    assert chunker.pop_response_frame(final=True) is None
    chunker.write(b"abcdef")
    chunker.flush()
    chunker.write(b"gh")
    frame = chunker.pop_response_frame()
    assert frame == http_pb2.ServeHTTPResponse(body_chunk=b"abcd").SerializeToString()
    frame = chunker.pop_response_frame(final=True)
    assert frame == http_pb2.ServeHTTPResponse(body_chunk=b"ef", flush=True).SerializeToString()
    frame = chunker.pop_request_frame(final=True)
    expected = http_pb2.ServeHTTPRequest(body_chunk=b"gh", body_complete=True)
    assert frame == expected.SerializeToString()
    assert chunker.pending == 0
    assert chunker.pop_request_frame(final=True) is None


def test_pop_frame_complete_only_when_emptied(core: ModuleType) -> None:
    chunker = core.Chunker(2)
    chunker.write(b"abc")
    first = core.decode_request_frame(chunker.pop_request_frame(final=True))
    assert (bytes(first.body), first.complete) == (b"ab", False)
    last = core.decode_request_frame(chunker.pop_request_frame(final=True))
    assert (bytes(last.body), last.complete) == (b"c", True)
    # A flushed chunk that empties the buffer with final set: complete and flush.
    chunker.write(b"d")
    chunker.flush()
    frame = core.decode_response_frame(chunker.pop_response_frame(final=True))
    assert (bytes(frame.body), frame.complete, frame.flush) == (b"d", True, True)
    # Without final, never complete.
    chunker.write(b"e")
    chunker.flush()
    frame = core.decode_response_frame(chunker.pop_response_frame())
    assert (bytes(frame.body), frame.complete, frame.flush) == (b"e", False, True)


# -- construction and attributes ---------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((0,), {}), ((-1,), {}), ((4, 3), {}), ((4,), {"capacity": 0}), ((2,), {"capacity": -5})],
)
def test_bad_sizes(core: ModuleType, core_py: ModuleType, args: tuple, kwargs: dict) -> None:
    with pytest.raises(ValueError, match="must be >="):
        core.Chunker(*args, **kwargs)
    assert outcome(core.Chunker, *args, **kwargs) == outcome(core_py.Chunker, *args, **kwargs)


def test_sizes(core: ModuleType) -> None:
    assert (core.Chunker(5).capacity, core.Chunker(5, None).capacity) == (20, 20)
    chunker = core.Chunker(chunk_size=np.int64(3), capacity=3)
    assert (chunker.chunk_size, chunker.capacity) == (3, 3)


@pytest.mark.parametrize("bad", ["64", 64.0, b"64"], ids=["str", "float", "bytes"])
def test_sizes_must_be_integers(core: ModuleType, bad: Any) -> None:
    # Like bytearray(n): a size is an integer, never parsed or truncated from something else.
    with pytest.raises(TypeError):
        core.Chunker(bad)
    with pytest.raises(TypeError):
        core.Chunker(4, bad)


def test_read_only_attributes(core: ModuleType) -> None:
    chunker = core.Chunker(4)
    for name in ("pending", "free", "chunk_size", "capacity"):
        with pytest.raises(AttributeError):
            setattr(chunker, name, 1)
    assert (chunker.chunk_size, chunker.capacity, chunker.pending, chunker.free) == (4, 16, 0, 16)


def test_repr(core: ModuleType) -> None:
    chunker = core.Chunker(4, 8)
    chunker.write(b"abc")
    assert repr(chunker) == "<Chunker chunk_size=4 capacity=8 pending=3>"


# -- bad buffers -------------------------------------------------------------


def _released() -> memoryview:
    view = memoryview(b"abc")
    view.release()
    return view


BAD_BUFFERS: dict[str, tuple[Callable[[], Any], type[Exception]]] = {
    "str": (lambda: "abc", TypeError),
    "int": (lambda: 3, TypeError),
    "none": (lambda: None, TypeError),
    "list": (lambda: [1, 2], TypeError),
    "numpy-strided": (lambda: np.arange(10, dtype=np.uint8)[::2], BufferError),
    "numpy-fortran": (lambda: np.zeros((3, 4), dtype=np.uint8, order="F"), BufferError),
    "numpy-transposed": (lambda: np.arange(12, dtype=np.int32).reshape(3, 4).T, BufferError),
    "memoryview-strided": (lambda: memoryview(b"abcdef")[::2], BufferError),
    "released": (_released, ValueError),
}

ENTRY_POINTS: dict[str, Callable[[ModuleType, Any], Any]] = {
    "write": lambda core, obj: core.Chunker(4).write(obj),
    "write_many": lambda core, obj: core.Chunker(4).write_many([b"ab", obj]),
    "encode_request_frame": lambda core, obj: core.encode_request_frame(obj),
    "encode_response_frame": lambda core, obj: core.encode_response_frame(obj, flush=True),
    "decode_request_frame": lambda core, obj: core.decode_request_frame(obj),
    "decode_response_frame": lambda core, obj: core.decode_response_frame(obj),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("bad", sorted(BAD_BUFFERS))
def test_bad_buffers(core: ModuleType, core_py: ModuleType, entry: str, bad: str) -> None:
    make, error = BAD_BUFFERS[bad]
    call = ENTRY_POINTS[entry]
    with pytest.raises(error):
        call(core, make())
    assert outcome(call, core, make()) == outcome(call, core_py, make())


def test_bad_buffer_leaves_chunker_unchanged(core: ModuleType) -> None:
    chunker = core.Chunker(4)
    chunker.write(b"ab")
    for make, error in BAD_BUFFERS.values():
        with pytest.raises(error):
            chunker.write(make())
    assert chunker.pending == 2
    assert chunker.pop(final=True) == (b"ab", False)


def test_buffer_released_after_write(core: ModuleType) -> None:
    data = bytearray(b"abcdef")
    chunker = core.Chunker(4, capacity=64)
    chunker.write(data)
    chunker.write_many([data, data])
    data += b"resizable again"  # raises BufferError if an export was kept
    with pytest.raises(TypeError):
        chunker.write_many([data, "x"])
    data += b"!"
    chunker.write_many([b"x" * 64, data])  # the second one is not taken at all
    data += b"!"


# -- memory bound ------------------------------------------------------------


def test_never_accepts_more_than_capacity(core: ModuleType) -> None:
    chunker = core.Chunker(16, capacity=40)
    big = bytes(1 << 20)
    assert chunker.write(big) == 40
    assert chunker.write(big) == 0
    assert chunker.write_many([big, big]) == 0
    chunker.pop()
    assert chunker.write_many([b"", big]) == 16
    assert chunker.pending == chunker.capacity == 40


def test_memory_stays_bounded(core: ModuleType) -> None:
    """Pushing 64 MiB through a 16 KiB chunker allocates about 16 KiB, not more."""
    chunk_size, capacity = 4096, 16384
    source = memoryview(bytes(1 << 20))
    gc.collect()
    tracemalloc.start()
    try:
        chunker = core.Chunker(chunk_size, capacity)
        after_init, _ = tracemalloc.get_traced_memory()
        for _ in range(64):
            offset = 0
            while offset < len(source):
                offset += chunker.write(source[offset:])
                while chunker.pop() is not None:
                    pass
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    slack = 32 * 1024  # one popped chunk alive at a time, interpreter noise
    assert after_init <= capacity + slack
    assert peak <= capacity + slack
    assert current <= capacity + slack
    del chunker


def _reentrant_trace(core: ModuleType) -> list[Any]:
    chunker = core.Chunker(3, capacity=7)
    trace: list[Any] = []

    def source() -> Iterator[bytes]:
        yield b"abcd"
        trace.append(chunker.pop())
        trace.append(chunker.write(b"XY"))
        yield b"efgh"
        chunker.flush()
        trace.append(chunker.pop_response_frame(final=True))
        yield b"ij"
        trace.append((chunker.pending, chunker.free))
        yield b"klmnop"

    trace.append(chunker.write_many(source()))
    while (item := chunker.pop(final=True)) is not None:
        trace.append(item)
    return trace


def test_write_many_source_may_use_the_chunker(core: ModuleType) -> None:
    """The iterable may pop and write between items: each item sees the current state."""
    assert _reentrant_trace(core) == [
        (b"abc", False),
        2,  # "dXY" pending
        b"\x12\x03dXY",  # the flush at "h" is further than one chunk
        (6, 1),  # "efghij"
        11,  # 4 + 4 + 2 + 1
        (b"efg", False),
        (b"h", True),
        (b"ijk", False),
    ]


def test_write_many_reentrant_c_and_py_agree(core_c: ModuleType, core_py: ModuleType) -> None:
    assert _reentrant_trace(core_c) == _reentrant_trace(core_py)
