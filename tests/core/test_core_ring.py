"""Shared-memory ring: a sealed memfd per direction, chunks as descriptors.

Every test runs on both implementations (``core``). The writer and reader
of a test share one ring through a duplicated file descriptor, or through
SCM_RIGHTS on a real socket pair, as a lane passes it.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chunkwire._errors import RingError

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
U64_MAX = 2**64 - 1

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="rings are memfds: Linux only"
)
fcntl = pytest.importorskip("fcntl")


def stamped(offset: int, size: int) -> bytes:
    """Bytes offset..offset+size of a stream where each 8-byte word holds its index.

    (tests/bodies.py's stamping; the core tests stay self-contained so that
    they also run from an installed wheel.)
    """
    first, last = offset // 8, (offset + size + 7) // 8
    words = np.arange(first, last, dtype="<u8") * np.uint64(0x9E3779B97F4A7C15)
    skip = offset - first * 8
    return words.tobytes()[skip : skip + size]


def pair(core: ModuleType, capacity: int, ring_id: int = 3) -> tuple[Any, Any]:
    writer = core.RingWriter(capacity, ring_id)
    reader = core.RingReader(os.dup(writer.fileno()), ring_id)
    return writer, reader


def desc(ring_id: int, offset: int, length: int) -> bytes:
    return struct.pack("<IQQ", ring_id, offset, length)


def outcome(fn: Callable[..., Any], *args: Any) -> tuple[Any, ...]:
    try:
        return ("ok", fn(*args))
    except Exception as exc:
        return ("raised", type(exc), str(exc))


def fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


# -- chunks through the ring -------------------------------------------------------


def test_chunk_round_trip_is_zero_copy_and_read_only(core: ModuleType) -> None:
    writer, reader = pair(core, 4096)
    body = stamped(0, 1000)
    descriptor = writer.write(body)
    assert descriptor == desc(3, 0, 1000)
    view = reader.read(descriptor)
    assert isinstance(view, memoryview)
    assert view.readonly
    assert bytes(view) == body
    assert reader.used == 1000 and writer.used == 1000
    writer.close()
    reader.close()


def test_chunk_passes_through_scm_rights(core: ModuleType) -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right, core.RingWriter(1 << 16, 9) as writer:
        socket.send_fds(left, [b"r"], [writer.fileno()])
        _, fds, _, _ = socket.recv_fds(right, 1, 1)
        with core.RingReader(fds[0], 9) as reader:
            body = stamped(5, 30000)
            view = reader.read(writer.write(body))
            assert bytes(view) == body
            writer.credit(reader.release(view))
            assert writer.used == 0 and reader.used == 0


def test_writes_from_any_buffer(core: ModuleType) -> None:
    writer, reader = pair(core, 4096)
    array = np.arange(100, dtype="<u4")
    for data in (bytearray(b"abc"), memoryview(b"xyz"), array):
        view = reader.read(writer.write(data))
        assert bytes(view) == bytes(memoryview(data).cast("B"))
    with pytest.raises(TypeError, match="bytes-like object, not 'str'"):
        writer.write("text")
    with pytest.raises(BufferError, match="C-contiguous"):
        writer.write(array[::2])
    writer.close()
    reader.close()


def test_chunk_size_at_half_the_ring_and_one_past(core: ModuleType) -> None:
    writer = core.RingWriter(1000)
    assert writer.max_chunk == 500
    assert writer.write(bytes(500)) is not None
    with pytest.raises(
        ValueError, match=r"chunk of 501 bytes is larger than half the ring \(500\)"
    ):
        writer.write(bytes(501))
    with pytest.raises(ValueError, match="empty chunk"):
        writer.write(b"")
    writer.close()


def test_full_ring_waits_for_credit_and_wraps(core: ModuleType) -> None:
    writer, reader = pair(core, 1000)
    first = writer.write(stamped(0, 400))
    second = writer.write(stamped(400, 400))
    assert writer.write(stamped(800, 300)) is None  # 200 left at the end, 0 at the start
    view1 = reader.read(first)
    view2 = reader.read(second)
    writer.credit(reader.release(view1))
    third = writer.write(stamped(800, 300))  # skips the last 200 bytes, starts at 0
    assert third == desc(3, 0, 300)
    assert writer.used == 400 + 200 + 300
    view3 = reader.read(third)
    assert bytes(view2) == stamped(400, 400)
    assert bytes(view3) == stamped(800, 300)
    writer.credit(reader.release(view2))
    writer.credit(reader.release(view3))
    assert writer.used == 0 and reader.used == 0
    writer.close()
    reader.close()


def test_space_returns_in_order_whatever_the_release_order(core: ModuleType) -> None:
    writer, reader = pair(core, 1000)
    views = [reader.read(writer.write(stamped(i * 100, 100))) for i in range(5)]
    writer.credit(reader.release(views[3]))
    writer.credit(reader.release(views[1]))
    assert writer.used == 500  # the oldest chunk still holds the front
    writer.credit(reader.release(views[0]))
    assert writer.used == 300
    assert reader.used == 300
    for index in (2, 4):
        assert bytes(views[index]) == stamped(index * 100, 100)
        writer.credit(reader.release(views[index]))
    assert writer.used == 0
    writer.close()
    reader.close()


# -- lifetime of a chunk view ---------------------------------------------------------


def test_use_after_release_is_a_clear_error(core: ModuleType) -> None:
    writer, reader = pair(core, 1000)
    view = reader.read(writer.write(b"secret"))
    copy = bytes(view)
    writer.credit(reader.release(view))
    with pytest.raises(ValueError, match="released memoryview"):
        view[0]
    with pytest.raises(ValueError, match="released memoryview"):
        bytes(view)
    writer.write(b"XXXXXXXXXXXXXXXXXXXX")  # reuses the space
    assert copy == b"secret"
    writer.close()
    reader.close()


def test_exported_view_keeps_its_space_until_the_export_goes(core: ModuleType) -> None:
    writer, reader = pair(core, 1000)
    view = reader.read(writer.write(stamped(0, 400)))
    held = struct.iter_unpack("<Q", view)  # holds a buffer export of the view itself
    with pytest.raises(BufferError):
        reader.release(view)
    assert reader.used == 400 and reader.outstanding == 1
    assert next(held) == struct.unpack_from("<Q", stamped(0, 8))
    del held
    writer.credit(reader.release(view))
    assert reader.used == 0 and writer.used == 0
    writer.close()
    reader.close()


def test_derived_views_stay_memory_safe_but_see_reuse(core: ModuleType) -> None:
    writer, reader = pair(core, 1000)
    view = reader.read(writer.write(stamped(0, 400)))
    derived = np.frombuffer(view, dtype=np.uint8)
    kept = bytes(view)
    writer.credit(reader.release(view))
    assert reader.used == 0
    writer.write(stamped(400, 400))
    writer.write(stamped(800, 400))  # wraps over the released chunk
    assert derived.tobytes() == stamped(800, 400)
    assert kept == stamped(0, 400)
    writer.close()
    reader.close()
    assert derived.tobytes() == stamped(800, 400)  # the mapping outlives the ring


def test_release_refuses_foreign_and_twice_released_views(core: ModuleType) -> None:
    writer, reader = pair(core, 1000)
    view = reader.read(writer.write(b"abc"))
    with pytest.raises(RingError, match="not an outstanding chunk"):
        reader.release(memoryview(b"abc"))
    reader.release(view)
    with pytest.raises(RingError, match="not an outstanding chunk"):
        reader.release(view)
    writer.close()
    reader.close()


def test_close_releases_views_and_never_unmaps_under_an_export(core: ModuleType) -> None:
    writer, reader = pair(core, 1 << 16)
    body = stamped(0, 1000)
    plain_view = reader.read(writer.write(body))
    exported_view = reader.read(writer.write(body))
    held = np.frombuffer(exported_view, dtype=np.uint8)  # a derived view
    fd = reader.fileno()
    reader.close()
    reader.close()
    assert reader.closed
    assert not fd_is_open(fd)
    with pytest.raises(ValueError, match="released memoryview"):
        plain_view[0]
    assert held.tobytes() == body  # still mapped while the export lives
    with pytest.raises(ValueError, match="the ring is closed"):
        reader.read(desc(3, 0, 1))
    writer.close()
    with pytest.raises(ValueError, match="the ring is closed"):
        writer.write(b"x")


def maps_and_fds() -> tuple[int, int]:
    with open("/proc/self/maps") as maps:
        return sum(1 for _ in maps), len(os.listdir("/proc/self/fd"))


def test_rings_leave_no_mapping_or_fd_behind(core: ModuleType) -> None:
    for _ in range(3):
        writer, reader = pair(core, 1 << 16)
        writer.close()
        reader.close()
    before = maps_and_fds()
    for n in range(50):
        writer, reader = pair(core, 1 << 16)
        views = [reader.read(writer.write(stamped(i, 1000))) for i in range(3)]
        writer.credit(reader.release(views[0]))
        if n % 2:  # dropped without close: the fd and mapping still go
            writer.close()
            reader.close()
        del views, writer, reader
    assert maps_and_fds() == before


# -- seals: a peer can never make the other fault -------------------------------------


def test_writer_seals_its_file(core: ModuleType) -> None:
    with core.RingWriter(1 << 16) as writer:
        seals = fcntl.fcntl(writer.fileno(), fcntl.F_GET_SEALS)
        assert seals & fcntl.F_SEAL_SHRINK
        assert seals & fcntl.F_SEAL_GROW
        assert seals & fcntl.F_SEAL_SEAL
        assert os.fstat(writer.fileno()).st_size == 1 << 16


def test_sealed_ring_cannot_shrink_under_a_reader(core: ModuleType) -> None:
    writer, reader = pair(core, 1 << 16)
    views = [reader.read(writer.write(stamped(i * 30000, 30000))) for i in range(2)]
    hostile = os.dup(writer.fileno())  # what a peer holding the fd can try
    try:
        for size in (0, 4096, (1 << 16) - 1):
            with pytest.raises(PermissionError):
                os.ftruncate(hostile, size)
        with pytest.raises(PermissionError):
            os.ftruncate(hostile, 1 << 20)
        with pytest.raises(PermissionError):
            fcntl.fcntl(hostile, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)
    finally:
        os.close(hostile)
    # the last page is still there: reading it cannot fault
    assert bytes(views[1][-1:]) == stamped(59999, 1)
    writer.close()
    reader.close()


def unsealed_memfd(size: int, seals: int = 0) -> int:
    fd = os.memfd_create("test", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


def test_reader_refuses_a_file_that_can_shrink(core: ModuleType) -> None:
    fd = unsealed_memfd(4096, fcntl.F_SEAL_GROW)
    with pytest.raises(RingError, match=r"not sealed against shrinking \(F_SEAL_SHRINK\)"):
        core.RingReader(fd)
    assert not fd_is_open(fd)


def test_reader_accepts_shrink_seal_alone(core: ModuleType) -> None:
    fd = unsealed_memfd(4096, fcntl.F_SEAL_SHRINK)
    with core.RingReader(fd) as reader:
        assert reader.capacity == 4096


def test_reader_refuses_files_that_are_not_memfds(core: ModuleType, tmp_path: Any) -> None:
    path = tmp_path / "plain"
    path.write_bytes(bytes(4096))
    fd = os.open(path, os.O_RDONLY)
    with pytest.raises(RingError, match="not a sealed memfd"):
        core.RingReader(fd)
    assert not fd_is_open(fd)
    rfd, wfd = os.pipe()
    os.close(wfd)
    with pytest.raises(RingError, match="not a sealed memfd"):
        core.RingReader(rfd)
    assert not fd_is_open(rfd)


def test_reader_size_limit_at_the_bound_and_one_past(core: ModuleType) -> None:
    with core.RingReader(unsealed_memfd(8192, fcntl.F_SEAL_SHRINK), 0, 8192) as reader:
        assert reader.capacity == 8192
    fd = unsealed_memfd(8193, fcntl.F_SEAL_SHRINK)
    with pytest.raises(RingError, match="ring fd is 8193 bytes, more than the limit of 8192"):
        core.RingReader(fd, 0, 8192)
    assert not fd_is_open(fd)
    fd = unsealed_memfd(0, fcntl.F_SEAL_SHRINK)
    with pytest.raises(RingError, match="ring fd is empty"):
        core.RingReader(fd)
    assert not fd_is_open(fd)


# -- descriptors ---------------------------------------------------------------------


def test_descriptor_layout(core: ModuleType) -> None:
    assert core.RING_DESCRIPTOR_SIZE == 20
    assert core.encode_ring_descriptor(2**32 - 1, U64_MAX, U64_MAX) == b"\xff" * 20
    assert core.encode_ring_descriptor(1, 2, 3) == desc(1, 2, 3)
    assert core.decode_ring_descriptor(desc(1, 2, 3), 1, 10) == (2, 3)
    for args, name in (
        ((2**32, 0, 0), "ring id"),
        ((0, 2**64, 0), "offset"),
        ((0, 0, 2**64), "length"),
        ((-1, 0, 0), "ring id"),
    ):
        with pytest.raises(OverflowError, match=name):
            core.encode_ring_descriptor(*args)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (desc(7, 0, 1)[:19], "ring descriptor must be 20 bytes, got 19"),
        (desc(7, 0, 1) + b"\0", "ring descriptor must be 20 bytes, got 21"),
        (b"", "ring descriptor must be 20 bytes, got 0"),
        (desc(8, 0, 1), "descriptor for ring 8, expected ring 7"),
        (desc(1007, 0, 1), "descriptor for ring 1007, expected ring 7"),
        (desc(7, 1000, 1), "descriptor offset 1000 is outside the ring of 1000 bytes"),
        (desc(7, U64_MAX, 1), f"descriptor offset {U64_MAX} is outside the ring"),
        (desc(7, 0, 0), "descriptor length is 0"),
        (desc(7, 999, 2), r"descriptor length 2 at offset 999 passes the ring end \(1000 bytes\)"),
        (desc(7, 0, 1001), "descriptor length 1001 at offset 0 passes the ring end"),
        (desc(7, 1, U64_MAX), f"descriptor length {U64_MAX} at offset 1 passes the ring end"),
    ],
)
def test_descriptor_errors(core: ModuleType, data: bytes, message: str) -> None:
    with pytest.raises(RingError, match=message):
        core.decode_ring_descriptor(data, 7, 1000)


def test_descriptor_bounds_accepted_exactly(core: ModuleType) -> None:
    assert core.decode_ring_descriptor(desc(7, 999, 1), 7, 1000) == (999, 1)
    assert core.decode_ring_descriptor(desc(7, 0, 1000), 7, 1000) == (0, 1000)
    assert core.decode_ring_descriptor(bytearray(desc(7, 10, 990)), 7, 1000) == (10, 990)


@SETTINGS
@given(data=st.binary(max_size=40), capacity=st.integers(0, U64_MAX), ring_id=st.integers(0, 3))
def test_descriptor_decoder_fuzz_matches_the_twin(
    core_c: ModuleType, core_py: ModuleType, data: bytes, capacity: int, ring_id: int
) -> None:
    c_result = outcome(core_c.decode_ring_descriptor, data, ring_id, capacity)
    assert c_result == outcome(core_py.decode_ring_descriptor, data, ring_id, capacity)
    if c_result[0] == "ok":
        offset, length = c_result[1]
        assert length >= 1 and offset + length <= capacity


@SETTINGS
@given(
    ring_id=st.integers(0, 3),
    offset=st.one_of(st.integers(0, 2100), st.integers(0, U64_MAX)),
    length=st.one_of(st.integers(0, 2100), st.integers(0, U64_MAX)),
)
def test_hostile_descriptors_never_reach_outside_the_ring(
    core: ModuleType, ring_id: int, offset: int, length: int
) -> None:
    writer, reader = pair(core, 2048, ring_id=1)
    try:
        try:
            view = reader.read(desc(ring_id, offset, length))
        except RingError:
            assert reader.used == 0 and reader.outstanding == 0
        else:
            assert (ring_id, offset) == (1, 0) and 1 <= length <= 2048
            assert len(view) == length
            view.tobytes()
        with pytest.raises(RingError):
            writer.credit(desc(ring_id, offset, length))
    finally:
        writer.close()
        reader.close()


def test_reader_refuses_chunks_out_of_sequence_or_over_unreleased_space(core: ModuleType) -> None:
    writer, reader = pair(core, 1000)
    with pytest.raises(
        RingError, match=r"offset 100 is not where the next chunk of 10 bytes starts \(0\)"
    ):
        reader.read(desc(3, 100, 10))
    first = reader.read(desc(3, 0, 600))
    with pytest.raises(
        RingError, match=r"offset 0 is not where the next chunk of 10 bytes starts \(600\)"
    ):
        reader.read(desc(3, 0, 10))
    with pytest.raises(
        RingError,
        match=r"chunk of 401 bytes at offset 0 overruns chunks not yet released \(400 bytes free\)",
    ):
        reader.read(desc(3, 0, 401))  # would skip 400 and overwrite the first
    with pytest.raises(RingError, match=r"length 401 at offset 600 passes the ring end"):
        reader.read(desc(3, 600, 401))
    assert reader.used == 600 and reader.outstanding == 1
    second = reader.read(desc(3, 600, 400))  # exactly the rest
    assert reader.used == 1000
    reader.release(first)
    reader.release(second)
    assert reader.used == 0
    writer.close()
    reader.close()


def test_credit_refuses_what_is_not_outstanding(core: ModuleType) -> None:
    writer, reader = pair(core, 1000)
    descriptor = writer.write(b"abcd")
    with pytest.raises(
        RingError, match=r"credit for a chunk not outstanding in ring 3 \(offset 0, length 5\)"
    ):
        writer.credit(desc(3, 0, 5))
    with pytest.raises(RingError, match="descriptor for ring 4, expected ring 3"):
        writer.credit(desc(4, 0, 4))
    writer.credit(descriptor)
    with pytest.raises(RingError, match="credit for a chunk not outstanding"):
        writer.credit(descriptor)
    assert writer.used == 0
    writer.close()
    reader.close()


# -- a model: writes, reads, releases in any order, on both implementations -----------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(1, 600)),
        st.tuples(st.just("read"), st.just(0)),
        st.tuples(st.just("release"), st.integers(0, 50)),
        st.tuples(st.just("credit"), st.integers(0, 50)),
    ),
    max_size=80,
)


def run_model(core: ModuleType, ops: list[tuple[str, int]]) -> list[Any]:
    """Drive one ring; check the invariants; return the trace for parity."""
    writer, reader = pair(core, 1200)
    trace: list[Any] = []
    sent: list[tuple[bytes, bytes]] = []  # written, not yet read
    views: list[tuple[memoryview, bytes]] = []  # read, not yet released
    credits: list[bytes] = []  # released, not yet credited
    held: dict[int, tuple[int, int]] = {}  # writer-side chunks: offset -> (length, stamp)
    position = 0
    try:
        for op, arg in ops:
            if op == "write":
                body = stamped(position, arg)
                descriptor = writer.write(body)
                trace.append(descriptor)
                if descriptor is not None:
                    _, offset, length = struct.unpack("<IQQ", descriptor)
                    for other, (other_len, _) in held.items():
                        assert offset + length <= other or other + other_len <= offset
                    held[offset] = (length, position)
                    position += arg
                    sent.append((descriptor, body))
            elif op == "read" and sent:
                descriptor, body = sent.pop(0)
                views.append((reader.read(descriptor), body))
            elif op == "release" and views:
                view, _ = views.pop(arg % len(views))
                credits.append(reader.release(view))
            elif op == "credit" and credits:
                credit = credits.pop(arg % len(credits))
                writer.credit(credit)
                held.pop(struct.unpack("<IQQ", credit)[1])
            for view, body in views:
                assert view == body  # nothing overwrote a chunk still in use
            trace.append((writer.used, reader.used))
        for descriptor, body in sent:
            views.append((reader.read(descriptor), body))
        for view, body in views:
            assert view == body
            writer.credit(reader.release(view))
        for credit in credits:
            writer.credit(credit)
        assert writer.used == 0 and reader.used == 0
        assert writer.write(bytes(writer.max_chunk)) is not None
    finally:
        writer.close()
        reader.close()
    return trace


@SETTINGS
@given(ops=operations)
def test_ring_model(core: ModuleType, ops: list[tuple[str, int]]) -> None:
    run_model(core, ops)


@SETTINGS
@given(ops=operations)
def test_ring_parity(core_c: ModuleType, core_py: ModuleType, ops: list[tuple[str, int]]) -> None:
    assert run_model(core_c, ops) == run_model(core_py, ops)


def test_ring_errors_parity(core_c: ModuleType, core_py: ModuleType) -> None:
    cases: list[Callable[[ModuleType], Any]] = [
        lambda m: m.RingWriter(1),
        lambda m: m.RingWriter(100, 2**32),
        lambda m: m.RingWriter("x"),
        lambda m: m.RingReader("x"),
        lambda m: m.encode_ring_descriptor(0, -1, 0),
        lambda m: m.decode_ring_descriptor(b"", -1, 10),
        lambda m: m.decode_ring_descriptor("x" * 20, 0, 10),
    ]
    for case in cases:
        assert outcome(case, core_c) == outcome(case, core_py)
        assert outcome(case, core_c)[0] == "raised"


SHRINK_AND_TOUCH = """
import os, sys
from chunkwire import {module} as core
writer = core.RingWriter(1 << 16, 1)
reader = core.RingReader(os.dup(writer.fileno()), 1)
view = reader.read(writer.write(bytes(30000)))
second = reader.read(writer.write(bytes(30000)))
hostile = os.dup(writer.fileno())
if sys.argv[1] == "unsealed-control":
    # what the seal prevents: a plain shared mapping whose file shrinks
    import mmap
    fd = os.memfd_create("control")
    os.ftruncate(fd, 1 << 16)
    mapping = mmap.mmap(fd, 1 << 16)
    os.ftruncate(fd, 0)
    mapping[60000]
else:
    try:
        os.ftruncate(hostile, 0)
    except PermissionError:
        print("refused")
print(bytes(second[-1:]) == b"\\0")
"""


@pytest.mark.parametrize("case", ["sealed-ring", "unsealed-control"])
def test_a_shrinking_peer_cannot_make_the_reader_fault(core: ModuleType, case: str) -> None:
    """In a child process: the ring survives the attempt; the unsealed control dies of SIGBUS."""
    code = SHRINK_AND_TOUCH.format(module=core.__name__.rpartition(".")[2])
    env = dict(os.environ)
    # under the ASan build, let the signal kill the child as it would unsanitised
    env["ASAN_OPTIONS"] = ":".join(filter(None, [env.get("ASAN_OPTIONS"), "handle_sigbus=0"]))
    proc = subprocess.run(
        [sys.executable, "-c", code, case], capture_output=True, text=True, timeout=120, env=env
    )
    if case == "unsealed-control":
        assert proc.returncode == -signal.SIGBUS, (proc.returncode, proc.stderr)
    else:
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == ["refused", "True"]
