"""The response head check gives the same verdict for a header name every time it sees it."""

from __future__ import annotations

import pytest

from chunkwire._proto import http_pb2
from chunkwire.gateway import response_head
from chunkwire.gateway.response_head import BadResponse, check_response_head

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
