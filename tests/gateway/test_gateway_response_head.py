"""The response head check gives the same verdict for a header name every time it sees it."""

from __future__ import annotations

import pytest

from chunkwire._proto import http_pb2
from chunkwire.gateway import response_head
from chunkwire.gateway.response_head import (
    BadResponse,
    check_raw_response_head,
    check_response_head,
)

# Nothing here talks to a plugin: once is enough.
pytestmark = pytest.mark.only_transports("call")


def head(*pairs: tuple[str, list[bytes]], status: int = 200):
    init = http_pb2.ServeHTTPResponseInit(status_code=status)
    for key, values in pairs:
        init.headers.add(key=key, values=values)
    return check_response_head(init.status_code, init.headers, method="GET")


@pytest.mark.parametrize("attempt", ["first", "again"])
def test_names_are_classified_the_same_when_seen_again(attempt):
    result = head(
        ("X-Cached-Name", [b"a", b"b"]),
        ("Connection", [b"close"]),
        ("Proxy-Thing", [b"1"]),
        ("Content-Length", [b"3"]),
    )
    assert result.headers == [
        (b"x-cached-name", b"a"), (b"x-cached-name", b"b"), (b"content-length", b"3")
    ]
    assert result.content_length == 3
    with pytest.raises(BadResponse, match="both Content-Length and Transfer-Encoding"):
        head(("Content-Length", [b"3"]), ("Transfer-Encoding", [b"chunked"]))


@pytest.mark.parametrize("attempt", ["first", "again"])
def test_an_invalid_name_is_refused_every_time(attempt):
    with pytest.raises(BadResponse, match="invalid header name"):
        head(("Bad Name", [b"x"]))


def test_a_known_name_still_has_its_values_checked():
    head(("X-Value-Checked", [b"fine"]))
    with pytest.raises(BadResponse, match="invalid value in header 'X-Value-Checked'"):
        head(("X-Value-Checked", [b"split\r\nInjected: 1"]))


def test_names_a_plugin_invents_do_not_grow_the_cache_past_its_bound():
    for i in range(response_head._MAX_NAMES + 500):
        assert head((f"X-Invented-{i}", [b"v"])).headers == [(f"x-invented-{i}".encode(), b"v")]
    assert len(response_head._NAMES) == response_head._MAX_NAMES


RAW_CASES = [
    (200, []),
    (0, [("Content-Type", [b"text/plain"])]),
    (204, [("Content-Length", [b"0"]), ("X-A", [b"1", b"2"])]),
    (304, [("ETag", [b'"v1"'])]),
    (200, [("Content-Length", [b"12", b"12"]), ("Keep-Alive", [b"timeout=5"])]),
    (404, [("Set-Cookie", [b"a=1", b"b=2"]), ("Proxy-Authenticate", [b"x"])]),
]


def serialized(status: int, pairs: list[tuple[str, list[bytes]]]) -> bytes:
    init = http_pb2.ServeHTTPResponseInit(status_code=status)
    for key, values in pairs:
        init.headers.add(key=key, values=values)
    return init.SerializeToString()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("case", range(len(RAW_CASES)))
def test_raw_heads_are_checked_as_decoded_ones_and_the_same_when_seen_again(case, method):
    status, pairs = RAW_CASES[case]
    raw = serialized(status, pairs)
    init = http_pb2.ServeHTTPResponseInit.FromString(raw)
    expected = check_response_head(init.status_code, init.headers, method=method)
    first = check_raw_response_head(raw, method=method)
    assert first == expected
    first.headers.append((b"connection", b"close"))  # the caller's own list
    again = check_raw_response_head(memoryview(raw), method=method)
    assert again == expected
    again.headers.clear()
    assert check_raw_response_head(raw, method=method) == expected


@pytest.mark.parametrize("attempt", ["first", "again"])
def test_raw_heads_that_fail_fail_every_time(attempt):
    for raw, error in (
        (serialized(101, []), "not a final status"),
        (serialized(200, [("Content-Length", [b"1", b"2"])]), "two different"),
        (serialized(200, [("X-A", [b"a\r\nb"])]), "invalid value"),
    ):
        with pytest.raises(BadResponse, match=error):
            check_raw_response_head(raw, method="GET")
    with pytest.raises(Exception, match=r"(?i)error parsing|decode|truncated"):
        check_raw_response_head(b"\xff\xff\xff", method="GET")


def test_the_raw_head_cache_stops_growing(monkeypatch):
    monkeypatch.setattr(response_head, "_HEADS", {})
    monkeypatch.setattr(response_head, "_MAX_HEADS", 4)
    for n in range(10):
        raw = serialized(200, [("X-N", [b"%d" % n])])
        assert check_raw_response_head(raw, method="GET").headers == [(b"x-n", b"%d" % n)]
    assert len(response_head._HEADS) == 4
    big = serialized(200, [("X-Big", [b"v" * 600])])
    monkeypatch.setattr(response_head, "_HEADS", {})
    assert check_raw_response_head(big, method="GET").headers == [(b"x-big", b"v" * 600)]
    assert response_head._HEADS == {}
