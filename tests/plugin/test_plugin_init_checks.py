"""checked_init's header value count, at the bound where counting is skipped."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from chunkwire._proto import http_pb2
from chunkwire.errors import ProtocolError
from chunkwire.plugin import Plugin
from chunkwire.plugin.handling import checked_init


@dataclass
class Frame:
    init: bytes
    body: memoryview = field(default_factory=lambda: memoryview(b""))


def empty_values(count: int) -> bytes:
    # The densest init there is: one nameless header of empty values, two
    # bytes each, so its size is the smallest that can hold ``count`` values.
    init = http_pb2.ServeHTTPRequestInit()
    init.headers.add(values=[b""] * count)
    return init.SerializeToString()


@pytest.mark.parametrize("limit", [1, 10, 1000])
def test_densest_init_at_the_limit_and_one_past(limit):
    plugin = Plugin("checks", max_header_count=limit)
    at_limit = empty_values(limit)
    assert len(checked_init(plugin, Frame(at_limit)).headers[0].values) == limit
    with pytest.raises(ProtocolError, match="max_header_count"):
        checked_init(plugin, Frame(empty_values(limit + 1)))


def test_values_spread_over_many_headers_count_alike():
    plugin = Plugin("checks", max_header_count=5)
    init = http_pb2.ServeHTTPRequestInit()
    for _ in range(6):
        init.headers.add(key="", values=[b""])
    with pytest.raises(ProtocolError, match="6 header values"):
        checked_init(plugin, Frame(init.SerializeToString()))
