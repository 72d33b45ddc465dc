"""``chunkwire demo`` end to end: it serves, prints what to try, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
from e2e_stack import HERE, _env

pytestmark = pytest.mark.timeout(60)


def test_demo_serves_and_stops_cleanly():
    before = set(Path(tempfile.gettempdir()).glob("chunkwire-demo-*"))
    interrupted = False
    proc = subprocess.Popen(
        [sys.executable, "-m", "chunkwire", "demo", "--port", "0"],
        env=_env(),
        cwd=HERE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    printed = []
    match = None
    try:
        # the usage text names the bound address once the gateway listens
        for line in proc.stdout:
            printed.append(line)
            match = re.search(r"(http://127\.0\.0\.1:\d+)/plugins/demo", line)
            if match:
                break
        assert match, "".join(printed) + proc.stderr.read()
        for line in proc.stdout:  # the rest of the usage text
            printed.append(line)
            if "Ctrl-C" in line:
                break
        base = match.group(1) + "/plugins/demo"
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
    out = "".join(printed) + out
    assert "curl" in out and base in out
    # the plugin's socket lived in a temporary directory that is gone now
    assert set(Path(tempfile.gettempdir()).glob("chunkwire-demo-*")) <= before
