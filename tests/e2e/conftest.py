"""Real processes started through the CLI: plugins and gateways, each a subprocess."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT / "src"), str(HERE), str(HERE.parent)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peak_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def _connectable_unix(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def _connectable_tcp(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Proc:
    """A chunkwire CLI process; stderr goes to a file (a pipe nobody reads could fill up)."""

    def __init__(
        self, args: list[str], ready, name: str, *, stdout=subprocess.DEVNULL, script: bool = False
    ) -> None:
        self.args = args
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix="chunkwire-e2e-", suffix=".log")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, *(args if script else ["-m", "chunkwire", *args])],
            env=_env(),
            stdout=stdout,
            stderr=self.log,
        )
        deadline = time.monotonic() + 30
        while not ready(self):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.stderr()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not become ready")
            time.sleep(0.02)

    def stderr(self) -> str:
        with open(self.log.name, errors="replace") as log:
            return log.read()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def peak_rss_mib(self) -> float:
        return peak_rss_kb(self.pid) / 1024

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()


def start_plugin(spec: str, sock: Path) -> Proc:
    return Proc(
        ["plugin", spec, "--listen", f"unix:{sock}"],
        lambda _: sock.exists() and _connectable_unix(str(sock)),
        f"plugin {spec}",
    )


def start_gateway(plugins: dict[str, str], *extra: str) -> tuple[Proc, str]:
    """A gateway on a port the kernel picks (no race for a free port); returns its URL."""
    args = ["gateway", "--port", "0", "--stats-path", "/_gw/stats"]
    for plugin_id, address in plugins.items():
        args += ["--plugin", f"{plugin_id}={address}"]
    args += list(extra)
    return _started_with_url(args)


def _started_with_url(args: list[str], *, script: bool = False) -> tuple[Proc, str]:
    found: list[str] = []

    def ready(proc: Proc) -> bool:
        # The server prints "... listening on URL" once it is bound.
        while select.select([proc.proc.stdout], [], [], 0)[0]:
            line = proc.proc.stdout.readline()
            if not line:
                return False
            if b"listening on " in line:
                found.append(line.split(b"listening on ", 1)[1].strip().decode())
                return True
        return False

    proc = Proc(args, ready, args[0], stdout=subprocess.PIPE, script=script)
    return proc, found[0]


def start_url_script(script: str, *args: str) -> tuple[Proc, str]:
    """A test script in this directory that serves HTTP and prints "listening on URL"."""
    return _started_with_url([str(HERE / script), *args], script=True)


class Stack:
    """A plugin and the gateways in front of it, on one transport ("mux" or "call")."""

    def __init__(self, tmp: Path, transport: str = "auto") -> None:
        self.tmp = tmp
        self.transport = transport
        self.sock = tmp / "e2e.sock"
        self.mm_sock = tmp / "mm.sock"
        self.plugin = start_plugin("e2e_apps:plugin", self.sock)
        self.mm = start_plugin("e2e_apps:mm_plugin", self.mm_sock)
        self.gateway, self.url = start_gateway(
            {"app": f"unix:{self.sock}", "mm": f"unix:{self.mm_sock}"},
            "--mattermost",
            "mm",
            "--transport",
            transport,
        )
        self.limited, self.limited_url = start_gateway(
            {"app": f"unix:{self.sock}"},
            "--transport",
            transport,
            "--max-body-size",
            "1m",
            "--response-timeout",
            "1",
        )

    def gateway_stats(self) -> dict:
        return httpx.get(self.url + "/_gw/stats").json()

    def plugin_stats(self) -> dict:
        return httpx.get(self.url + "/plugins/app/stats").json()

    def close(self) -> None:
        for proc in (self.limited, self.gateway, self.mm, self.plugin):
            proc.stop()


@pytest.fixture(scope="session", params=["mux", "call"])
def transport(request: pytest.FixtureRequest) -> str:
    """Gateway to plugin transport: every end-to-end test runs on both."""
    return request.param


@pytest.fixture(scope="session")
def stack(tmp_path_factory, transport: str) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("e2e"), transport)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="session")
def curl() -> str:
    """curl, which .ci/run installs: a missing one fails the tests that use it."""
    path = shutil.which("curl")
    if path is None:
        pytest.fail("the end-to-end tests need curl (apt-get install curl)")
    return path


def start_script(script: str, listen_path: Path, *args: str) -> Proc:
    """A test script in this directory (``rogue_plugin.py``...) listening on a unix socket."""
    return Proc(
        [str(HERE / script), f"unix:{listen_path}", *args],
        lambda _: listen_path.exists() and _connectable_unix(str(listen_path)),
        script,
        script=True,
    )


def start_demo(*extra: str) -> tuple[Proc, str]:
    """``chunkwire demo --port 0``; returns the process and the gateway's URL."""
    seen = bytearray()
    found: list[str] = []

    def ready(proc: Proc) -> bool:
        # The demo prints its usage, with "behind the gateway at URL/plugins/demo/",
        # in one write once bound: read the pipe's raw bytes, not lines.
        fd = proc.proc.stdout.fileno()
        while select.select([fd], [], [], 0)[0]:
            data = os.read(fd, 65536)
            if not data:
                return False
            seen.extend(data)
        match = re.search(rb"behind the gateway at (http://\S+)/plugins/demo/", seen)
        if match:
            found.append(match.group(1).decode())
        return bool(found)

    proc = Proc(["demo", "--port", "0", *extra], ready, "demo", stdout=subprocess.PIPE)
    return proc, found[0]
