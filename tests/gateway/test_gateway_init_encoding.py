"""Inits are wrapped into ServeHTTPRequest/Response without protobuf: the same bytes."""

from __future__ import annotations

import pytest

from chunkwire._proto import http_pb2
from chunkwire._wire import with_init

# Nothing here talks to a plugin: once is enough.
pytestmark = pytest.mark.only_transports("call")


@pytest.mark.parametrize("url_size", [0, 1, 100, 109, 110, 16_000, 16_364, 16_365, 2_100_000])
def test_wrapped_init_is_what_protobuf_serializes(url_size):
    init = http_pb2.ServeHTTPRequestInit(method="GET", url="u" * url_size, content_length=-1)
    raw = init.SerializeToString()
    expected = http_pb2.ServeHTTPRequest(init=init).SerializeToString()
    assert with_init(raw) == expected
    assert http_pb2.ServeHTTPRequest.FromString(with_init(raw)).init == init


@pytest.mark.parametrize("value_size", [0, 100, 16_400])
def test_wrapped_response_init_is_what_protobuf_serializes(value_size):
    init = http_pb2.ServeHTTPResponseInit(status_code=201)
    init.headers.add(key="X-A", values=[b"v" * value_size, b""])
    raw = init.SerializeToString()
    assert with_init(raw) == http_pb2.ServeHTTPResponse(init=init).SerializeToString()


def test_sizes_around_each_varint_bound_are_covered():
    sizes = {
        len(
            http_pb2.ServeHTTPRequestInit(
                method="GET", url="u" * n, content_length=-1
            ).SerializeToString()
        )
        for n in (109, 110, 16_364, 16_365)
    }
    assert sizes == {127, 128, 16_383, 16_384}
