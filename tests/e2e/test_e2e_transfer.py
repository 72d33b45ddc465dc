"""1 GiB each way through gateway and plugin processes, hashed end to end, memory bounded."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from e2e_apps import pattern

GIB = 1 << 30
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_upload_1gib_from_generator(stack):
    digest = hashlib.sha256()

    def body():
        for block in pattern(GIB):
            digest.update(block)
            yield bytes(block)

    r = httpx.post(stack.url + "/plugins/app/upload", content=body(), timeout=120)
    assert r.status_code == 200
    assert r.json() == {"bytes": GIB, "sha256": digest.hexdigest()}
    assert stack.gateway.peak_rss_mib() < 100
    assert stack.plugin.peak_rss_mib() < 100


def test_download_1gib(stack):
    expected = hashlib.sha256()
    for block in pattern(GIB):
        expected.update(block)
    digest = hashlib.sha256()
    size = 0
    with httpx.stream(
        "GET", stack.url + f"/plugins/app/download?size={GIB}", timeout=120
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-length"] == str(GIB)
        for chunk in r.iter_raw(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    assert size == GIB
    assert digest.hexdigest() == expected.hexdigest()
    assert stack.gateway.peak_rss_mib() < 100
    assert stack.plugin.peak_rss_mib() < 100
