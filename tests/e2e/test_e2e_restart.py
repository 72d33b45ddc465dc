"""A plugin that dies: mid-response (aborted), before answering (502), down (503), back."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest
from e2e_stack import start_gateway, start_plugin

pytestmark = pytest.mark.timeout(120)



@pytest.fixture
def own_stack(tmp_path, transport):
    sock = tmp_path / "p.sock"
    plugin = start_plugin("e2e_apps:plugin", sock)
    gateway, url = start_gateway({"app": f"unix:{sock}"}, "--transport", transport)
    procs = {"plugin": plugin}
    try:
        yield sock, procs, url
    finally:
        gateway.stop()
        procs["plugin"].stop()


def test_plugin_killed_mid_response_httpx(own_stack):
    _sock, procs, url = own_stack
    with httpx.stream("GET", url + "/plugins/app/endless-download", timeout=30) as r:
        assert r.status_code == 200
        chunks = r.iter_raw()
        next(chunks)
        procs["plugin"].kill()
        with pytest.raises(httpx.RemoteProtocolError):
            for _ in chunks:
                pass


def test_plugin_killed_mid_response_curl(own_stack, curl):
    _sock, procs, url = own_stack
    size = 1 << 40  # Content-Length far beyond what is sent before the kill
    curl = subprocess.Popen(
        [curl, "-sS", "-o", "/dev/null", url + f"/plugins/app/download?size={size}"],
        stderr=subprocess.PIPE,
    )
    time.sleep(0.5)  # let the transfer start; the assertion does not depend on timing
    procs["plugin"].kill()
    assert curl.wait(30) != 0
    curl.stderr.close()


def test_plugin_exit_before_answer_502_then_down_503_then_recovers(own_stack):
    sock, procs, url = own_stack
    assert httpx.get(url + "/plugins/app/stats").status_code == 200
    # the handler exits the process before writing: the stream fails before the init
    assert httpx.get(url + "/plugins/app/exit").status_code == 502
    procs["plugin"].proc.wait(10)
    assert httpx.get(url + "/plugins/app/stats").status_code == 503
    assert httpx.post(url + "/plugins/app/upload", content=b"x" * 100_000).status_code == 503
    procs["plugin"] = start_plugin("e2e_apps:plugin", sock)
    deadline = time.monotonic() + 10
    while True:
        status = httpx.get(url + "/plugins/app/stats").status_code
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status == 200
