"""encode_response_init: byte-identical to protobuf, same errors on both implementations."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chunkwire._proto import http_pb2
from chunkwire._wire import group_headers, with_init

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

INT32 = st.integers(-(2**31), 2**31 - 1)
KEYS = st.text(max_size=40) | st.sampled_from(["", "Content-Type", "Set-Cookie", "x" * 200])
VALUES = st.lists(st.binary(max_size=300), max_size=5)
HEADERS = st.lists(st.tuples(KEYS, VALUES), max_size=8)


def protobuf(status: int, headers: list[tuple[str, list[bytes]]]) -> bytes:
    init = http_pb2.ServeHTTPResponseInit(
        status_code=status,
        headers=[http_pb2.HTTPHeader(key=key, values=values) for key, values in headers],
    )
    return http_pb2.ServeHTTPResponse(init=init).SerializeToString()


def outcome(core: ModuleType, status: Any, headers: Any) -> tuple[Any, ...]:
    try:
        return ("ok", core.encode_response_init(status, headers))
    except Exception as exc:
        # Messages of the interpreter's own errors (unpacking) differ in wording.
        mine = str(exc).startswith(("header", "status_code"))
        return ("raised", type(exc), str(exc) if mine else None)


@SETTINGS
@given(status=INT32, headers=HEADERS)
@example(status=0, headers=[])
@example(status=200, headers=[("", [])])
@example(status=-1, headers=[("k", [b""])])
@example(status=2**31 - 1, headers=[("é", [b"\xff" * 200])])
def test_matches_protobuf(core: ModuleType, status: int, headers: list[Any]) -> None:
    try:
        expected = protobuf(status, headers)
    except ValueError:  # protobuf refuses some text (lone surrogates): so do we
        with pytest.raises(ValueError):
            core.encode_response_init(status, headers)
        return
    encoded = core.encode_response_init(status, headers)
    assert encoded == expected
    parsed = http_pb2.ServeHTTPResponse.FromString(encoded)
    assert parsed.init.status_code == status
    assert [(h.key, list(h.values)) for h in parsed.init.headers] == headers


def test_same_as_the_generated_classes_for_grouped_headers(core: ModuleType) -> None:
    pairs = [("Content-Type", "text/plain"), ("set-cookie", "a=1"), ("Set-Cookie", b"b=2")]
    init = http_pb2.ServeHTTPResponseInit(status_code=404)
    for key, values in group_headers(pairs):
        init.headers.add(key=key, values=values)
    expected = with_init(init.SerializeToString())
    assert core.encode_response_init(404, group_headers(pairs)) == expected
    assert core.encode_response_init(200, ()) == b"\n\x03\x08\xc8\x01"


def test_values_may_be_any_iterable(core: ModuleType) -> None:
    assert core.encode_response_init(200, [("a", (b"1", b"2"))]) == core.encode_response_init(
        200, iter([("a", iter([b"1", b"2"]))])
    )


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [
        (2**31, [], ValueError),
        (-(2**31) - 1, [], ValueError),
        (2**64, [], ValueError),
        ("200", [], TypeError),
        (200.0, [], TypeError),
        (200, [(b"key", [b"v"])], TypeError),
        (200, [("key", ["text"])], TypeError),
        (200, [("key", [bytearray(b"v")])], TypeError),
        (200, [("key", None)], TypeError),
        (200, [("\ud800", [])], UnicodeEncodeError),
        (200, [("key",)], ValueError),
        (200, None, TypeError),
    ],
)
def test_bad_input(
    core: ModuleType, core_py: ModuleType, status: Any, headers: Any, error: type
) -> None:
    with pytest.raises(error):
        core.encode_response_init(status, headers)
    assert outcome(core, status, headers) == outcome(core_py, status, headers)


def test_index_types_are_accepted(core: ModuleType) -> None:
    class Status:
        def __index__(self) -> int:
            return 201

    assert core.encode_response_init(Status(), []) == core.encode_response_init(201, [])
    assert core.encode_response_init(True, []) == protobuf(1, [])
