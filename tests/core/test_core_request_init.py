"""Request init encoder: byte-identical to the generated classes, clear errors for bad input."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chunkwire._proto import http_pb2
from chunkwire._wire import group_headers

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONTEXT_FIELDS = (
    "session_id", "request_id", "ip_address", "accept_language", "user_agent", "user_id"
)
# Lone surrogates cannot be UTF-8: they have their own test.
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
# Few distinct names, in both types and cases, so that repeats are common.
NAME = st.sampled_from(["Host", "host", "X-A", "x-a", "\u212a", "k", "K", "é", "É", ""]) | TEXT
LATIN1 = st.text(st.characters(max_codepoint=255), max_size=40)
HEADERS = st.lists(
    st.tuples(
        NAME.filter(lambda n: n.isascii()).map(str.encode) | NAME.filter(
            lambda n: all(ord(c) < 256 for c in n)).map(lambda n: n.encode("latin-1")) | NAME,
        st.binary(max_size=300) | LATIN1,
    ),
    max_size=8,
)


def reference(context: tuple[str, ...], method: str, url: str, proto: str, major: int,
              minor: int, headers: list[tuple[str | bytes, str | bytes]], host: str,
              remote_addr: str, request_uri: str, content_length: int) -> bytes:
    init = http_pb2.ServeHTTPRequestInit(
        plugin_context=http_pb2.PluginContext(**dict(zip(CONTEXT_FIELDS, context, strict=True))),
        method=method, url=url, proto=proto, proto_major=major, proto_minor=minor,
        host=host, remote_addr=remote_addr, request_uri=request_uri,
        content_length=content_length,
    )
    for key, values in group_headers(headers):
        init.headers.add(key=key, values=values)
    return http_pb2.ServeHTTPRequest(init=init).SerializeToString()


TYPICAL = (
    ("", "5f" * 16, "127.0.0.1", "en", "curl/8", ""),
    "GET", "http://h:1/x?q=1", "HTTP/1.1", 1, 1,
    [(b"host", b"h:1"), (b"accept", b"*/*"), ("Accept", "text/html"), (b"x-prefix", b"/p")],
    "h:1", "127.0.0.1:5", "/x?q=1", -1,
)


@given(st.tuples(st.tuples(*[TEXT] * 6), TEXT, TEXT, TEXT, INT32, INT32, HEADERS, TEXT, TEXT,
                 TEXT, INT64))
@example(TYPICAL)
# The context alone, present though empty:
@example((("",) * 6, "", "", "", 0, 0, [], "", "", "", 0))
@example((("",) * 6, "", "", "", -1, 2**31 - 1, [("", b"")], "", "", "", 2**63 - 1))
@SETTINGS
def test_encoding_matches_protobuf(core: ModuleType, args: tuple[Any, ...]) -> None:
    encoded = core.encode_request_init(*args)
    assert encoded == reference(*args)
    assert http_pb2.ServeHTTPRequest.FromString(encoded) == http_pb2.ServeHTTPRequest.FromString(
        reference(*args)
    )


def test_headers_may_be_any_iterable_of_pairs(core: ModuleType) -> None:
    args = list(TYPICAL)
    pairs = args[6]
    args[6] = ([name, value] for name, value in pairs)
    assert core.encode_request_init(*args) == reference(*TYPICAL)


def test_headers_group_case_insensitively_in_first_spelling(core: ModuleType) -> None:
    pairs = [(b"x-a", b"1"), ("Host", "h"), ("X-A", b"2"), (b"HOST", b"i"), ("x-A", "3")]
    init = http_pb2.ServeHTTPRequest.FromString(
        core.encode_request_init(*_with(6, pairs))
    ).init
    assert [(h.key, list(h.values)) for h in init.headers] == [
        ("x-a", [b"1", b"2", b"3"]), ("Host", [b"h", b"i"])
    ]


def _with(index: int, value: Any) -> list[Any]:
    args = list(TYPICAL)
    args[index] = value
    return args


@pytest.mark.parametrize(
    ("index", "value", "error", "text"),
    [
        (0, ("a",) * 5, ValueError, "context must have 6 fields, not 5"),
        (0, ("a",) * 7, ValueError, "context must have 6 fields, not 7"),
        (0, ("a", 1, "", "", "", ""), TypeError, "expected str, not 'int'"),
        (1, b"GET", TypeError, "expected str, not 'bytes'"),
        (4, 2**31, ValueError, "proto_major 2147483648 is outside int32"),
        (5, -(2**31) - 1, ValueError, "proto_minor -2147483649 is outside int32"),
        (5, 1.0, TypeError, "proto_minor must be an int, not 'float'"),
        (10, 2**63, ValueError, "content_length 9223372036854775808 is outside int64"),
        (6, [("host", bytearray(b"h"))], TypeError,
         "header values must be str or bytes, not 'bytearray'"),
        (6, [(1, b"h")], TypeError, "header names must be str or bytes, not 'int'"),
        (6, [("host", b"h", b"extra")], ValueError, "too many values to unpack"),
        (6, [("host", "\u0100")], UnicodeEncodeError, "latin-1"),
        (6, [("\udc80", b"v")], UnicodeEncodeError, "surrogates not allowed"),
        (7, "\udc80", UnicodeEncodeError, "surrogates not allowed"),
    ],
)
def test_bad_input_is_a_clear_error(core: ModuleType, index: int, value: Any,
                                    error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        core.encode_request_init(*_with(index, value))


def test_bounds_are_inclusive(core: ModuleType) -> None:
    for index, value in ((4, 2**31 - 1), (5, -(2**31)), (10, -(2**63))):
        args = _with(index, value)
        assert core.encode_request_init(*args) == reference(*args)


@pytest.mark.parametrize("url_size", [0, 1, 60, 61, 62, 16_300, 16_319, 16_320, 2_100_000])
def test_lengths_around_each_varint_bound(core: ModuleType, url_size: int) -> None:
    # The init and the whole message cross the 1-, 2- and 3-byte length bounds.
    args = _with(2, "u" * url_size)
    assert core.encode_request_init(*args) == reference(*args)
