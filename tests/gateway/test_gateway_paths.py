"""The canonical path: what the gateway routes on and the plugin sees, segment by segment."""

from __future__ import annotations

import pytest

from chunkwire._paths import BadPath, decode_path, route_plugin

# Nothing here talks to a plugin: once is enough.
pytestmark = pytest.mark.only_transports("call")


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("/", "/"),
        ("", ""),
        ("/a/b", "/a/b"),
        ("/app.js", "/app.js"),
        ("/a.b/c..d/...", "/a.b/c..d/..."),
        ("/.hidden", "/.hidden"),
        ("/..x/y", "/..x/y"),
        ("/a%20b", "/a b"),
        ("/%2e%2ex", "/..x"),
        ("/caf%C3%A9", "/café"),
    ],
)
def test_paths_with_one_meaning_decode(raw: str, decoded: str) -> None:
    assert decode_path(raw) == decoded


@pytest.mark.parametrize(
    "raw",
    [
        ".", "..", "./a", "../a", "/.", "/..", "/a/.", "/a/..", "/a/./b", "/a/../b",
        "/%2e", "/%2E%2e/b", "/.%2e", "/a%2fb", "/a%2F..%2fb", "/a%00b", "/a\x00b",
    ],
)
def test_ambiguous_paths_are_refused(raw: str) -> None:
    with pytest.raises(BadPath):
        decode_path(raw)


def test_routing_splits_before_decoding() -> None:
    assert route_plugin("/plugins/files/a%20b/c") == ("files", "/a%20b/c", "/a b/c")
    assert route_plugin("/plugins/files") == ("files", "/", "/")
    assert route_plugin("/other/files/x") is None
    with pytest.raises(BadPath):
        route_plugin("/plugins/a%2f..%2fb/x")
