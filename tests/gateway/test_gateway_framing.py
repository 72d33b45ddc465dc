"""Request frames the gateway builds from received pieces equal the core codec's and protobuf's."""

from __future__ import annotations

import pytest

from chunkwire._core import encode_request_frame
from chunkwire._proto import http_pb2
from chunkwire.gateway.forward import Forward


def framer(init: bytes = b"") -> Forward:
    forward = Forward.__new__(Forward)
    forward._init = init
    return forward


SIZES = [[], [1], [5, 7], [127, 1], [128], [65536], [40000, 25536], [300000]]


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("complete", [False, True])
def test_frame_matches_codec_and_protobuf(sizes, complete):
    pieces = [memoryview(bytes([i % 251]) * n) for i, n in enumerate(sizes)]
    body = b"".join(pieces)
    frame = framer()._frame(pieces, complete)
    assert frame == encode_request_frame(body, complete=complete)
    message = http_pb2.ServeHTTPRequest.FromString(frame)
    assert message.body_chunk == body
    assert message.body_complete == complete


def test_first_frame_carries_the_init_once():
    init = http_pb2.ServeHTTPRequest(
        init=http_pb2.ServeHTTPRequestInit(method="POST", url="http://h/x")
    ).SerializeToString()
    forward = framer(init)
    first = forward._frame([memoryview(b"abc")], False)
    expected = http_pb2.ServeHTTPRequest(
        init=http_pb2.ServeHTTPRequestInit(method="POST", url="http://h/x"), body_chunk=b"abc"
    ).SerializeToString()
    assert first == expected
    assert forward._frame([memoryview(b"d")], True) == encode_request_frame(b"d", complete=True)
