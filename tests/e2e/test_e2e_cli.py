"""``chunkwire demo`` end to end: it serves, prints what to try, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from conftest import HERE, _connectable_tcp, _env, free_port

pytestmark = pytest.mark.timeout(60)


def test_demo_serves_and_stops_cleanly():
    before = set(Path(tempfile.gettempdir()).glob("chunkwire-demo-*"))
    port = free_port()
    interrupted = False
    proc = subprocess.Popen(
        [sys.executable, "-m", "chunkwire", "demo", "--port", str(port)],
        env=_env(),
        cwd=HERE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not _connectable_tcp(port):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        base = f"http://127.0.0.1:{port}/plugins/demo"
        with httpx.stream("GET", base + "/ticks?n=3&interval=0.01") as r:
            assert r.read() == b"tick 0\ntick 1\ntick 2\n"
        r = httpx.post(base + "/echo", content=b"echo me")
        assert r.content == b"echo me"
        r = httpx.post(base + "/upload", content=b"x" * 100_000)
        assert r.json()["bytes"] == 100_000
        r = httpx.get(base + "/download?size=3000000")
        assert len(r.content) == 3_000_000
        r = httpx.get(base + "/headers?q=1", headers={"X-Trace": "a"})
        assert r.json()["headers"]["x-trace"] == ["a"]
        # Ctrl-C while a response is still streaming: it is cut, not ended cleanly
        with httpx.stream("GET", base + "/ticks?n=1000&interval=0.05") as r:
            lines = r.iter_lines()
            assert next(lines) == "tick 0"
            proc.send_signal(signal.SIGINT)
            interrupted = True
            with pytest.raises(httpx.RemoteProtocolError):
                for _ in lines:
                    pass
    finally:
        if proc.poll() is None and not interrupted:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "Traceback" not in err
    assert "curl" in out and f"127.0.0.1:{port}/plugins/demo" in out
    # the plugin's socket lived in a temporary directory that is gone now
    assert set(Path(tempfile.gettempdir()).glob("chunkwire-demo-*")) <= before
