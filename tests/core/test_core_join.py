"""join_*_frame: one frame from a chunk that arrived in pieces."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkwire._proto import http_pb2

PIECE = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(bytearray),
    st.binary(max_size=300).map(memoryview),
    st.binary(max_size=300).map(lambda b: np.frombuffer(b, dtype=np.uint8)),
)


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(PIECE, max_size=8), complete=st.booleans(), flush=st.booleans())
def test_join_equals_encode_of_the_concatenation(
    core: ModuleType, parts: list, complete: bool, flush: bool
) -> None:
    joined = b"".join(bytes(part) for part in parts)
    request = core.join_request_frame(parts, complete=complete)
    assert request == core.encode_request_frame(joined, complete=complete)
    assert request == http_pb2.ServeHTTPRequest(
        body_chunk=joined, body_complete=complete
    ).SerializeToString()
    response = core.join_response_frame(iter(parts), complete=complete, flush=flush)
    assert response == http_pb2.ServeHTTPResponse(
        body_chunk=joined, body_complete=complete, flush=flush
    ).SerializeToString()


def test_join_wider_items(core: ModuleType) -> None:
    parts = [np.arange(5, dtype=np.int32), np.zeros((0, 3)), b"x"]
    expected = np.arange(5, dtype=np.int32).tobytes() + b"x"
    assert core.join_request_frame(parts) == core.encode_request_frame(expected)


@pytest.mark.parametrize("parts", [5, None, [b"a", "text"], [b"a", 1], [np.arange(6)[::2]]])
def test_join_bad_parts(core: ModuleType, core_py: ModuleType, parts: object) -> None:
    with pytest.raises((TypeError, BufferError)) as ours:
        core.join_request_frame(parts)
    with pytest.raises(type(ours.value)) as pure:
        core_py.join_request_frame(parts)
    assert str(ours.value) == str(pure.value)


def test_join_releases_buffers_on_error(core: ModuleType) -> None:
    first = bytearray(b"abc")
    with pytest.raises(TypeError):
        core.join_request_frame([first, "text"])
    first.extend(b"d")  # raises BufferError if a view of it were still held
    assert first == b"abcd"
