"""The bench plugin's echo route through real plugin and gateway processes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bodies import stamped_blocks, stamped_digest
from e2e_stack import Proc, start_gateway, start_plugin

pytestmark = pytest.mark.timeout(120)

SIZE = 5 * (1 << 20) + 17


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Iterator[str]:  # type: ignore[no-untyped-def]
    sock: Path = tmp_path_factory.mktemp("bench") / "bench.sock"
    plugin: Proc = start_plugin("chunkwire.bench:bench_plugin", sock)
    try:
        gateway, url = start_gateway({"bench": f"unix:{sock}"})
        try:
            yield url + "/plugins/bench"
        finally:
            gateway.stop()
    finally:
        plugin.stop()


def echo(url: str, content) -> tuple[httpx.Response, str, int]:  # type: ignore[no-untyped-def]
    digest = hashlib.sha256()
    size = 0
    with httpx.stream("PUT", url + "/echo", content=content, timeout=60) as r:
        for part in r.iter_raw():
            digest.update(part)
            size += len(part)
    return r, digest.hexdigest(), size


def test_echo_of_a_chunked_upload(bench: str) -> None:
    # a generator: httpx sends Transfer-Encoding: chunked, the plugin sees no length
    r, digest, size = echo(bench, stamped_blocks(SIZE, 100_003))
    assert r.status_code == 200
    assert "content-length" not in r.headers
    assert (size, digest) == (SIZE, stamped_digest(SIZE))


def test_echo_of_an_upload_with_a_length(bench: str) -> None:
    body = b"".join(stamped_blocks(SIZE))
    r, digest, size = echo(bench, body)
    assert r.status_code == 200
    assert r.headers["content-length"] == str(SIZE)
    assert (size, digest) == (SIZE, stamped_digest(SIZE))
