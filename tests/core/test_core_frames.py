"""Frame codec: byte-identical to protobuf, reads what protobuf writes, rejects bad input.

Deliberate difference from protobuf: a known field (1-3, and 4 in responses)
with the wrong wire type is a FrameError here, where protobuf would keep it
as an unknown field. The init message is returned as raw bytes and not
validated (the generated classes parse it). Everything else agrees with
protobuf's own parser.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chunkwire._proto import http_pb2

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

KINDS = ["request", "response"]
MESSAGE = {"request": http_pb2.ServeHTTPRequest, "response": http_pb2.ServeHTTPResponse}
INIT = {"request": http_pb2.ServeHTTPRequestInit, "response": http_pb2.ServeHTTPResponseInit}
FIRST_UNKNOWN = {"request": 4, "response": 5}


def decoder(core: ModuleType, kind: str) -> Callable[[Any], Any]:
    return core.decode_request_frame if kind == "request" else core.decode_response_frame


def encode(core: ModuleType, kind: str, body: Any, complete: bool, flush: bool) -> bytes:
    if kind == "request":
        return core.encode_request_frame(body, complete=complete)
    return core.encode_response_frame(body, complete=complete, flush=flush)


def values(frame: Any) -> tuple[Any, ...]:
    """What a decoded frame says, in plain values."""
    return (frame.init, bytes(frame.body), frame.complete, getattr(frame, "flush", None))


def outcome(fn: Callable[[Any], Any], data: Any) -> tuple[Any, ...]:
    try:
        frame = fn(data)
    except Exception as exc:
        return ("raised", type(exc), str(exc))
    return ("ok", *values(frame), repr(frame))


def protobuf_values(kind: str, data: bytes) -> tuple[Any, ...] | None:
    """The same values from protobuf's parser, or None if it rejects ``data``."""
    try:
        message = MESSAGE[kind].FromString(data)
    except DecodeError:
        return None
    init = message.init.SerializeToString() if message.HasField("init") else None
    flush = message.flush if kind == "response" else None
    return (init, message.body_chunk, message.body_complete, flush)


def comparable(kind: str, frame: Any) -> tuple[Any, ...]:
    """``values(frame)`` with the init re-serialised by protobuf, as protobuf_values has it."""
    init, body, complete, flush = values(frame)
    if init is not None:
        init = INIT[kind].FromString(init).SerializeToString()
    return (init, body, complete, flush)


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


MAX_FIELD = (1 << 29) - 1


def field_numbers(low: int) -> st.SearchStrategy[int]:
    return st.integers(low, 20) | st.integers(low, MAX_FIELD)


def leaf_fields(numbers: st.SearchStrategy[int]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.builds(lambda f, v: tag(f, 0) + varint(v), numbers, st.integers(0, 2**64 - 1)),
        st.builds(lambda f, b: tag(f, 1) + b, numbers, st.binary(min_size=8, max_size=8)),
        st.builds(length_delimited, numbers, st.binary(max_size=20)),
        st.builds(lambda f, b: tag(f, 5) + b, numbers, st.binary(min_size=4, max_size=4)),
    )


def group(field: int, contents: list[bytes]) -> bytes:
    return tag(field, 3) + b"".join(contents) + tag(field, 4)


# Inside a group every field number is unknown to the decoder, 1..4 included.
any_field = st.recursive(
    leaf_fields(field_numbers(1)),
    lambda inner: st.builds(group, field_numbers(1), st.lists(inner, max_size=4)),
    max_leaves=12,
)


def unknown_fields(kind: str) -> st.SearchStrategy[bytes]:
    numbers = field_numbers(FIRST_UNKNOWN[kind])
    return leaf_fields(numbers) | st.builds(group, numbers, st.lists(any_field, max_size=4))


short_text = st.text(max_size=12)
headers = st.lists(
    st.builds(
        http_pb2.HTTPHeader,
        key=short_text,
        values=st.lists(st.binary(max_size=12), max_size=3),
    ),
    max_size=3,
)
request_inits = st.builds(
    http_pb2.ServeHTTPRequestInit,
    plugin_context=st.builds(
        http_pb2.PluginContext,
        session_id=short_text,
        request_id=short_text,
        ip_address=short_text,
        accept_language=short_text,
        user_agent=short_text,
        user_id=short_text,
    ),
    method=st.sampled_from(["GET", "POST", ""]),
    url=short_text,
    proto=st.just("HTTP/1.1"),
    proto_major=st.integers(-(2**31), 2**31 - 1),
    proto_minor=st.integers(0, 9),
    headers=headers,
    host=short_text,
    remote_addr=short_text,
    request_uri=short_text,
    content_length=st.integers(-1, 2**63 - 1),
)
response_inits = st.builds(
    http_pb2.ServeHTTPResponseInit,
    status_code=st.integers(-(2**31), 2**31 - 1),
    headers=headers,
)
INITS = {"request": request_inits, "response": response_inits}


def known_fields(kind: str) -> st.SearchStrategy[bytes]:
    flag_values = st.sampled_from([0, 1]) | st.integers(0, 2**64 - 1)
    options = [
        INITS[kind].map(lambda init: length_delimited(1, init.SerializeToString())),
        st.binary(max_size=300).map(lambda body: length_delimited(2, body)),
        flag_values.map(lambda v: tag(3, 0) + varint(v)),
    ]
    if kind == "response":
        options.append(flag_values.map(lambda v: tag(4, 0) + varint(v)))
    return st.one_of(options)


@st.composite
def frames(draw: st.DrawFn, kind: str | None = None) -> tuple[str, list[bytes]]:
    """A valid frame as its list of top-level fields (known and unknown, any order)."""
    kind = kind or draw(st.sampled_from(KINDS))
    fields = draw(st.lists(known_fields(kind) | unknown_fields(kind), max_size=8))
    return kind, fields


# -- encoding ----------------------------------------------------------------


def body_as(kind: str, body: bytes) -> Any:
    if kind == "bytes":
        return body
    if kind == "bytearray":
        return bytearray(body)
    if kind == "memoryview":
        return memoryview(b"--" + body + b"--")[2:-2]
    if kind == "uint8":
        return np.frombuffer(body, dtype=np.uint8)
    raise AssertionError(kind)


@SETTINGS
@given(
    kind=st.sampled_from(KINDS),
    body=st.binary(max_size=600),
    body_type=st.sampled_from(["bytes", "bytearray", "memoryview", "uint8"]),
    complete=st.booleans(),
    flush=st.booleans(),
)
def test_encode_matches_protobuf(
    core: ModuleType, kind: str, body: bytes, body_type: str, complete: bool, flush: bool
) -> None:
    frame = encode(core, kind, body_as(body_type, body), complete, flush)
    assert type(frame) is bytes
    fields = {"body_chunk": body, "body_complete": complete}
    if kind == "response":
        fields["flush"] = flush
    else:
        flush = None
    assert frame == MESSAGE[kind](**fields).SerializeToString()
    assert values(decoder(core, kind)(frame)) == (None, body, complete, flush)


@pytest.mark.parametrize(
    "size", [0, 1, 127, 128, 16383, 16384, 65535, 65536, 65537, (1 << 21) - 1, 1 << 21]
)
def test_encode_length_prefix_sizes(core: ModuleType, size: int) -> None:
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    for complete in (False, True):
        expected = http_pb2.ServeHTTPResponse(body_chunk=body, body_complete=complete, flush=True)
        frame = core.encode_response_frame(body, complete=complete, flush=True)
        assert frame == expected.SerializeToString()
        decoded = core.decode_response_frame(frame)
        assert decoded.body.nbytes == size
        assert decoded.body == body


def test_encode_wider_items(core: ModuleType) -> None:
    body = np.arange(1000, dtype=np.int32)
    expected = http_pb2.ServeHTTPRequest(body_chunk=body.tobytes(), body_complete=True)
    assert core.encode_request_frame(body, complete=True) == expected.SerializeToString()
    two_d = np.arange(12, dtype=">u2").reshape(3, 4)
    expected = http_pb2.ServeHTTPResponse(body_chunk=two_d.tobytes())
    assert core.encode_response_frame(two_d) == expected.SerializeToString()


def test_encode_examples(core: ModuleType) -> None:
    assert core.encode_request_frame(b"") == b""
    assert core.encode_request_frame(b"", complete=True) == b"\x18\x01"
    assert core.encode_response_frame(b"", flush=True) == b"\x20\x01"
    assert core.encode_response_frame(b"hi", complete=True, flush=True) == (
        b"\x12\x02hi\x18\x01\x20\x01"
    )


def test_encode_flags_are_truthy(core: ModuleType, core_py: ModuleType) -> None:
    for flag in (0, 1, 2, None, "", "x", np.bool_(True), np.bool_(False)):
        frame = core.encode_response_frame(b"a", complete=flag, flush=flag)
        assert frame == core_py.encode_response_frame(b"a", complete=bool(flag), flush=bool(flag))
        assert core.encode_request_frame(b"a", complete=flag) == (
            core_py.encode_request_frame(b"a", complete=bool(flag))
        )


def test_encode_flags_are_keyword_only(core: ModuleType) -> None:
    with pytest.raises(TypeError):
        core.encode_request_frame(b"a", True)
    with pytest.raises(TypeError):
        core.encode_response_frame(b"a", True, True)
    with pytest.raises(TypeError):
        core.encode_request_frame(b"a", flush=True)


# -- decoding what protobuf writes ---------------------------------------------


@SETTINGS
@given(
    kind=st.sampled_from(KINDS),
    data=st.data(),
    body=st.binary(max_size=600),
    complete=st.booleans(),
    flush=st.booleans(),
    with_init=st.booleans(),
)
def test_decode_protobuf_output(
    core: ModuleType,
    kind: str,
    data: st.DataObject,
    body: bytes,
    complete: bool,
    flush: bool,
    with_init: bool,
) -> None:
    fields: dict[str, Any] = {"body_chunk": body, "body_complete": complete}
    if kind == "response":
        fields["flush"] = flush
    if with_init:
        fields["init"] = data.draw(INITS[kind])
    wire = MESSAGE[kind](**fields).SerializeToString()
    frame = decoder(core, kind)(wire)
    assert comparable(kind, frame) == protobuf_values(kind, wire)
    if with_init:
        assert INIT[kind].FromString(frame.init) == fields["init"]
        assert frame.init == fields["init"].SerializeToString()
    else:
        assert frame.init is None


@SETTINGS
@given(frame=frames())
def test_decode_agrees_with_protobuf(core: ModuleType, frame: tuple[str, list[bytes]]) -> None:
    """Unknown fields (groups too), repeated and out-of-order fields: as protobuf parses them."""
    kind, fields = frame
    wire = b"".join(fields)
    expected = protobuf_values(kind, wire)
    assert expected is not None
    assert comparable(kind, decoder(core, kind)(wire)) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_decode_examples(core: ModuleType, kind: str) -> None:
    decode = decoder(core, kind)
    flush = False if kind == "response" else None
    assert values(decode(b"")) == (None, b"", False, flush)
    assert values(decode(b"\x0a\x00")) == (b"", b"", False, flush)  # empty init is present
    # Repeated init merges (concatenation), the last body and flag win.
    wire = b"\x0a\x02\x08\x01\x12\x01a\x18\x01\x0a\x01\x10\x12\x01b\x18\x00"
    assert values(decode(wire)) == (b"\x08\x01\x10", b"b", False, flush)
    # The init is not validated here: the generated classes parse it.
    assert decode(b"\x0a\x01\xff").init == b"\xff"
    # Ten-byte varints, non-canonical flag values, padded tags.
    assert decode(b"\x18" + b"\xff" * 9 + b"\x01").complete is True
    assert decode(b"\x18" + b"\x80" * 9 + b"\x00").complete is False
    assert decode(b"\x98\x80\x80\x80\x00\x02").complete is True
    # Groups nested exactly to the limit protobuf allows.
    assert values(decode(b"\x2b" * 100 + b"\x2c" * 100)) == (None, b"", False, flush)


def test_field_4_is_unknown_in_requests(core: ModuleType) -> None:
    for wire in (b"\x20\x01", b"\x22\x01x", b"\x25abcd", b"\x21abcdefgh", b"\x23\x24"):
        frame = core.decode_request_frame(wire)
        assert values(frame) == (None, b"", False, None)
        assert not hasattr(frame, "flush")
    assert core.decode_response_frame(b"\x20\x05").flush is True


# -- zero copy ---------------------------------------------------------------


def test_body_is_a_view_of_the_input(core: ModuleType) -> None:
    wire = bytearray(core.encode_response_frame(b"hello", flush=True))
    frame = core.decode_response_frame(wire)
    assert isinstance(frame.body, memoryview)
    assert (frame.body.format, frame.body.ndim, frame.body.nbytes) == ("B", 1, 5)
    wire[2:7] = b"HELLO"
    assert bytes(frame.body) == b"HELLO"


def test_body_shares_numpy_memory(core: ModuleType) -> None:
    arr = np.frombuffer(core.encode_request_frame(b"x" * 64), dtype=np.uint8).copy()
    frame = core.decode_request_frame(arr)
    assert np.shares_memory(np.frombuffer(frame.body, dtype=np.uint8), arr)
    arr[-1] = ord("y")
    assert bytes(frame.body) == b"x" * 63 + b"y"


def test_body_from_bytes_keeps_input(core: ModuleType) -> None:
    wire = core.encode_request_frame(b"abc" * 100, complete=True)
    frame = core.decode_request_frame(wire)
    body = frame.body
    del wire, frame
    assert bytes(body) == b"abc" * 100
    assert core.decode_request_frame(b"\x18\x01").body == b""


# -- malformed and truncated input -------------------------------------------

# (name, wire, kinds, match, protobuf rejects it too / None: not compared)
MALFORMED = [
    ("varint-11-bytes", b"\x18" + b"\xff" * 10 + b"\x01", KINDS, "varint longer", True),
    ("tag-11-bytes", b"\xff" * 10 + b"\x01", KINDS, "varint longer", True),
    ("length-11-bytes", b"\x12" + b"\x80" * 10 + b"\x00", KINDS, "varint longer", True),
    ("truncated-tag", b"\x80", KINDS, "truncated varint", True),
    ("truncated-value", b"\x18\x80", KINDS, "truncated varint", True),
    ("truncated-length", b"\x12", KINDS, "truncated varint", True),
    ("body-past-end", b"\x12\x05abc", KINDS, "past the end", True),
    ("init-past-end", b"\x0a\x02\x08", KINDS, "past the end", True),
    ("unknown-past-end", b"\x2a\x03ab", KINDS, "past the end", True),
    ("huge-length", b"\x12" + b"\xff" * 9 + b"\x01", KINDS, "past the end", True),
    ("length-2^31", b"\x2a\x80\x80\x80\x80\x08", KINDS, "past the end", True),
    ("fixed64-past-end", b"\x29abc", KINDS, "truncated 64-bit", True),
    ("fixed32-past-end", b"\x2dab", KINDS, "truncated 32-bit", True),
    ("wire-type-6", b"\x2e", KINDS, "wire type 6", True),
    ("wire-type-7", b"\x2f\x00", KINDS, "wire type 7", True),
    ("wire-type-6-known", b"\x0e", KINDS, "wire type 6", True),
    ("wire-type-7-in-group", b"\x2b\x0f\x2c", KINDS, "wire type 7", True),
    ("field-0-varint", b"\x00\x00", KINDS, "field number 0", True),
    ("field-0-bytes", b"\x02\x00", KINDS, "field number 0", True),
    ("field-0-end-group", b"\x04", KINDS, "field number 0", True),
    # upb accepts field 0 inside an unknown group (C++ protobuf does not).
    ("field-0-in-group", b"\x2b\x00\x00\x2c", KINDS, "field number 0", None),
    ("tag-over-32-bits", b"\x80\x80\x80\x80\x10\x01", KINDS, "tag out of range", True),
    ("stray-end-group", b"\x2c", KINDS, "end of group", True),
    ("stray-end-group-late", b"\x18\x01\x2c", KINDS, "end of group", True),
    ("mismatched-end-group", b"\x2b\x34", KINDS, "end of group", True),
    ("unterminated-group", b"\x2b\x08\x01", KINDS, "truncated", True),
    ("groups-too-deep", b"\x2b" * 101 + b"\x2c" * 101, KINDS, "nested deeper", True),
    ("groups-deep-unterminated", b"\x2b" * 10**5, KINDS, "nested deeper", True),
    # Known fields with the wrong wire type: protobuf keeps them as unknown.
    ("init-as-varint", b"\x08\x01", KINDS, "field 1 has wire type 0", False),
    ("init-as-group", b"\x0b\x0c", KINDS, "field 1 has wire type 3", False),
    ("body-as-fixed32", b"\x15abcd", KINDS, "field 2 has wire type 5", False),
    ("body-as-end-group", b"\x14", KINDS, "field 2 has wire type 4", True),
    ("complete-as-bytes", b"\x1a\x01\x01", KINDS, "field 3 has wire type 2", False),
    ("complete-as-fixed64", b"\x19abcdefgh", KINDS, "field 3 has wire type 1", False),
    ("flush-as-bytes", b"\x22\x00", ["response"], "field 4 has wire type 2", False),
]


@pytest.mark.parametrize(
    ("wire", "kinds", "match", "protobuf_rejects"),
    [pytest.param(*case[1:], id=case[0]) for case in MALFORMED],
)
@pytest.mark.parametrize("kind", KINDS)
def test_malformed(
    core: ModuleType,
    core_py: ModuleType,
    kind: str,
    wire: bytes,
    kinds: list[str],
    match: str,
    protobuf_rejects: bool | None,
) -> None:
    if kind not in kinds:
        assert outcome(decoder(core, kind), wire)[0] == "ok"
        return
    with pytest.raises(core.FrameError, match=match):
        decoder(core, kind)(wire)
    assert outcome(decoder(core, kind), wire) == outcome(decoder(core_py, kind), wire)
    if protobuf_rejects is not None:
        assert (protobuf_values(kind, wire) is None) is protobuf_rejects


@SETTINGS
@given(frame=frames())
def test_truncated_at_every_offset(core: ModuleType, frame: tuple[str, list[bytes]]) -> None:
    """A prefix is a valid frame exactly when it ends between two top-level fields."""
    kind, fields = frame
    wire = b"".join(fields)
    between_fields = {0}
    offset = 0
    for field in fields:
        offset += len(field)
        between_fields.add(offset)
    decode = decoder(core, kind)
    for cut in range(len(wire) + 1):
        prefix = wire[:cut]
        expected = protobuf_values(kind, prefix)
        assert (expected is not None) is (cut in between_fields), cut
        if expected is None:
            with pytest.raises(core.FrameError):
                decode(prefix)
        else:
            assert comparable(kind, decode(prefix)) == expected


def test_truncated_protobuf_message(core: ModuleType) -> None:
    message = http_pb2.ServeHTTPResponse(
        init=http_pb2.ServeHTTPResponseInit(
            status_code=201, headers=[http_pb2.HTTPHeader(key="a", values=[b"1", b"2"])]
        ),
        body_chunk=b"x" * 200,
        body_complete=True,
        flush=True,
    )
    wire = message.SerializeToString()
    init_end = 2 + len(message.init.SerializeToString())
    valid = {0, init_end, init_end + 3 + 200, init_end + 3 + 200 + 2, len(wire)}
    for cut in range(len(wire) + 1):
        if cut in valid:
            frame = core.decode_response_frame(wire[:cut])
            assert comparable("response", frame) == protobuf_values("response", wire[:cut])
        else:
            with pytest.raises(core.FrameError):
                core.decode_response_frame(wire[:cut])
            assert protobuf_values("response", wire[:cut]) is None


# -- fuzzing -----------------------------------------------------------------


def check_against_protobuf(core: ModuleType, kind: str, wire: bytes) -> None:
    """Decoding succeeds or raises FrameError; where protobuf also parses, they agree."""
    try:
        frame = decoder(core, kind)(wire)
    except core.FrameError as exc:
        if protobuf_values(kind, wire) is not None:
            # The deliberate difference (see the module docstring), or field 0
            # inside an unknown group, which upb lets through.
            assert "has wire type" in str(exc) or "field number 0" in str(exc)
        return
    expected = protobuf_values(kind, wire)
    if expected is None:
        return  # e.g. an invalid init, which this codec does not parse
    init = frame.init
    if init is not None:
        try:
            INIT[kind].FromString(init)
        except DecodeError:
            pytest.fail("protobuf parsed the frame but not its init")
    assert comparable(kind, frame) == expected


@st.composite
def mutated_frames(draw: st.DrawFn) -> tuple[str, bytes]:
    kind, fields = draw(frames())
    wire = bytearray(b"".join(fields))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(wire)))
        action = draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "insert" or not wire:
            wire[pos:pos] = draw(st.binary(min_size=1, max_size=3))
        elif action == "delete":
            del wire[min(pos, len(wire) - 1)]
        else:
            wire[min(pos, len(wire) - 1)] ^= 1 << draw(st.integers(0, 7))
    return kind, bytes(wire)


fuzz_inputs = st.tuples(st.sampled_from(KINDS), st.binary(max_size=200)) | mutated_frames()


@settings(SETTINGS, max_examples=500)
@given(case=fuzz_inputs)
@example(case=("response", b"\x2b" * 200))
@example(case=("request", b"\x0a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"))
def test_fuzz_decode(core: ModuleType, case: tuple[str, bytes]) -> None:
    check_against_protobuf(core, *case)


@settings(SETTINGS, max_examples=500)
@given(case=fuzz_inputs)
def test_fuzz_c_and_py_agree(
    core_c: ModuleType, core_py: ModuleType, case: tuple[str, bytes]
) -> None:
    kind, wire = case
    for data in (wire, bytearray(wire), np.frombuffer(wire, dtype=np.uint8)):
        assert outcome(decoder(core_c, kind), data) == outcome(decoder(core_py, kind), data)


@SETTINGS
@given(
    kind=st.sampled_from(KINDS),
    body=st.binary(max_size=300),
    complete=st.booleans(),
    flush=st.booleans(),
)
def test_encode_c_and_py_agree(
    core_c: ModuleType, core_py: ModuleType, kind: str, body: bytes, complete: bool, flush: bool
) -> None:
    assert encode(core_c, kind, body, complete, flush) == encode(
        core_py, kind, body, complete, flush
    )


def test_body_view_holds_the_buffer_until_dropped(core: ModuleType) -> None:
    wire = bytearray(core.encode_request_frame(b"abc", complete=True))
    frame = core.decode_request_frame(wire)
    with pytest.raises(BufferError):
        wire += b"x"  # exported to the body view
    body = frame.body
    del frame
    assert bytes(body) == b"abc"
    with pytest.raises(BufferError):
        wire += b"x"
    del body
    gc.collect()
    wire += b"x"


@pytest.mark.parametrize("wire", [b"\x80", b"\x12\x05abc", b"\x2c", b"\x08\x01"])
def test_failed_decode_releases_the_buffer(core: ModuleType, wire: bytes) -> None:
    data = bytearray(wire)
    with pytest.raises(core.FrameError):
        core.decode_response_frame(data)
    data += b"x"


def test_encode_releases_the_buffer(core: ModuleType) -> None:
    data = bytearray(b"abc")
    core.encode_request_frame(data)
    core.encode_response_frame(data, flush=True)
    data += b"x"


@pytest.mark.parametrize(
    "wire", [b"", b"\x0a\x00", b"\x0a\x02\x08\x01\x12\x01a\x18\x05\x20\x02", b"\x18\x00\x20\x00"]
)
def test_decoded_types(core: ModuleType, wire: bytes) -> None:
    for frame in (core.decode_request_frame(wire), core.decode_response_frame(wire)):
        assert frame.init is None or type(frame.init) is bytes
        assert type(frame.body) is memoryview
        assert type(frame.complete) is bool
    assert type(core.decode_response_frame(wire).flush) is bool
