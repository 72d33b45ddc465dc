"""The lane's --lane-* flags on `chunkwire gateway` and `chunkwire plugin`, in real processes.

What each process maps is read from /proc/PID/smaps: its own ring (shared,
writable) and its peer's (shared, read-only), with the size the peer's
flag gave it; the pages a ring has touched (Rss) show whether bodies went
through it or inline, which is what the threshold flags decide.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from e2e_apps import pattern
from e2e_stack import ROOT, Proc, _connectable_unix, _env, start_gateway

pytestmark = pytest.mark.timeout(180)

MIB = 1 << 20
CHUNK = 64 * 1024  # the plugin's response chunks: 1 MiB writes at the default chunk size


def _start_plugin(sock: Path, *flags: str) -> Proc:
    return Proc(
        ["plugin", "e2e_apps:plugin", "--listen", f"unix:{sock}", *flags],
        lambda _: sock.exists() and _connectable_unix(str(sock)),
        f"plugin {sock.name}",
    )


def _rings(pid: int) -> list[tuple[str, int, int]]:
    """(permissions, size, rss) of each chunkwire ring mapped by process ``pid``, in bytes."""
    found: list[tuple[str, int, int]] = []
    current: list | None = None
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            head = re.match(r"^[0-9a-f]+-[0-9a-f]+ (\S+) ", line)
            if head:
                current = [head.group(1), 0, 0] if "memfd:chunkwire-ring" in line else None
                if current is not None:
                    found.append(current)  # type: ignore[arg-type]
            elif current is not None and line.startswith(("Size:", "Rss:")):
                current[1 if line.startswith("Size:") else 2] = int(line.split()[1]) * 1024
    return sorted((p, s, r) for p, s, r in found)


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _download(url: str, size: int) -> None:
    r = httpx.get(f"{url}?size={size}", timeout=60)
    assert r.status_code == 200
    assert r.content == b"".join(pattern(size))


def test_ring_flags_size_the_rings_and_thresholds_pick_ring_or_inline(tmp_path) -> None:
    # Plugin "at" sends its 64 KiB chunks through its ring (threshold exactly
    # the chunk), plugin "over" inline (one byte more). The gateway's ring
    # carries the upload to "at".
    at = _start_plugin(
        tmp_path / "at.sock", "--lane-ring-size", "3m", "--lane-ring-threshold", str(CHUNK)
    )
    over = _start_plugin(
        tmp_path / "over.sock", "--lane-ring-size", "3m", "--lane-ring-threshold", str(CHUNK + 1)
    )
    gateway, url = start_gateway(
        {"at": f"unix:{tmp_path}/at.sock", "over": f"unix:{tmp_path}/over.sock"},
        "--transport", "lane", "--lane-ring-size", "5m", "--lane-ring-threshold", "16k",
    )
    try:
        start = {proc.name: _rss(proc.pid) for proc in (gateway, at, over)}
        size = 8 * MIB
        _download(url + "/plugins/at/download", size)
        _download(url + "/plugins/over/download", size)
        body = b"".join(pattern(size))
        r = httpx.post(url + "/plugins/at/upload", content=body, timeout=60)
        assert r.status_code == 200 and r.json()["bytes"] == size

        own, peer = "rw-s", "r--s"
        at_rings = _rings(at.pid)
        assert [(p, s) for p, s, _ in at_rings] == [(peer, 5 * MIB), (own, 3 * MIB)]
        assert all(rss > 0 for _, _, rss in at_rings), at_rings
        over_rings = _rings(over.pid)
        assert [(p, s) for p, s, _ in over_rings] == [(peer, 5 * MIB), (own, 3 * MIB)]
        assert all(rss == 0 for _, _, rss in over_rings), over_rings  # nothing through either

        gateway_rings = _rings(gateway.pid)
        assert [(p, s) for p, s, _ in gateway_rings] == [
            (peer, 3 * MIB), (peer, 3 * MIB), (own, 5 * MIB), (own, 5 * MIB)
        ]
        touched = sorted(rss > 0 for _, _, rss in gateway_rings)
        assert touched == [False, False, True, True], gateway_rings  # "at"'s ring and its own

        # What the transfers added to each process: the rings it maps, and a few
        # chunk-sized buffers (measured: 5-6 MiB; the bound on the whole process
        # is a row of `chunkwire bench`).
        for proc, rings in ((gateway, gateway_rings), (at, at_rings), (over, over_rings)):
            grown = proc.peak_rss_mib() * MIB - start[proc.name]
            assert grown <= sum(s for _, s, _ in rings) + 12 * MIB, (proc.name, grown / MIB)
    finally:
        for proc in (gateway, at, over):
            proc.stop()


def test_ring_size_zero_sends_bodies_inline(tmp_path) -> None:
    plugin = _start_plugin(tmp_path / "p.sock", "--lane-ring-size", "0")
    gateway, url = start_gateway(
        {"p": f"unix:{tmp_path}/p.sock"}, "--transport", "lane", "--lane-ring-size", "0"
    )
    try:
        _download(url + "/plugins/p/download", 4 * MIB)
        body = b"".join(pattern(4 * MIB))
        r = httpx.post(url + "/plugins/p/upload", content=body, timeout=60)
        assert r.status_code == 200 and r.json()["bytes"] == 4 * MIB
        assert _rings(plugin.pid) == [] and _rings(gateway.pid) == []
    finally:
        gateway.stop()
        plugin.stop()


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chunkwire", *args],
        env=_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


BAD = [
    (["--lane-ring-size", "32767"], ["--lane-ring-size", "32768", "32767"]),
    (["--lane-ring-size", "1g", "--lane-ring-size", "1025m"], ["--lane-ring-size"]),
    (["--lane-ring-size", "-1"], ["--lane-ring-size"]),
    (["--lane-ring-size", "8q"], ["--lane-ring-size", "'8q'"]),
    (["--lane-ring-threshold", "0"], ["--lane-ring-threshold", "at least 1"]),
    (["--lane-ring-threshold", "4194305"], ["--lane-ring-size", "8388610"]),
    (["--lane-max-peer-ring", "0"], ["--lane-max-peer-ring"]),
    (["--lane-credit-timeout", "0"], ["--lane-credit-timeout"]),
    (["--lane-credit-timeout", "inf"], ["--lane-credit-timeout"]),
    (["--lane-handshake-timeout", "nan"], ["--lane-handshake-timeout"]),
    (["--lane-handshake-timeout", "soon"], ["--lane-handshake-timeout", "'soon'"]),
]


@pytest.mark.parametrize("command", ["gateway", "plugin"])
@pytest.mark.parametrize(("flags", "words"), BAD)
def test_a_bad_lane_flag_is_one_line_and_status_2(
    tmp_path, command: str, flags: list[str], words: list[str]
) -> None:
    if command == "gateway":
        args = ["gateway", "--plugin", f"a=unix:{tmp_path}/a.sock", "--port", "0", *flags]
    else:
        args = ["plugin", "e2e_apps:plugin", "--listen", f"unix:{tmp_path}/a.sock", *flags]
    result = _run_cli(*args)
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert not (tmp_path / "a.sock").exists()


def test_good_lane_flags_at_their_bounds_start_the_plugin(tmp_path) -> None:
    # The lowest ring for the threshold, the largest allowed, and the smallest timeouts.
    plugin = _start_plugin(
        tmp_path / "p.sock",
        "--lane-ring-size", "32k", "--lane-ring-threshold", "16k",
        "--lane-max-peer-ring", "1", "--lane-credit-timeout", "0.001",
        "--lane-handshake-timeout", "1e-3",
    )
    plugin.stop()
    gateway, _ = start_gateway(
        {"p": f"unix:{tmp_path}/p.sock"}, "--lane-ring-size", "1g"
    )
    gateway.stop()
