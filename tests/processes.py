"""Real processes for the suites that run them (end-to-end, event streams): a
subprocess with its stderr in a file, readiness checks, free ports, peak RSS."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HANG_GUARD = 30.0


def process_env(*paths: Path) -> dict[str, str]:
    """This environment with ``src/`` and ``paths`` first on PYTHONPATH."""
    env = dict(os.environ)
    entries = [str(ROOT / "src"), *(str(p) for p in paths)]
    if env.get("PYTHONPATH"):
        entries.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(entries)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def connectable(address: tuple[str, int] | str) -> bool:
    """Whether something accepts connections at a unix socket path or (host, port)."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family) as sock:
        try:
            sock.connect(address)
        except OSError:
            return False
    return True


def peak_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


class Proc:
    """A subprocess whose stderr goes to a file (a pipe nobody reads could fill up);
    ``ready(proc)`` is polled until True."""

    def __init__(
        self,
        argv: list[str],
        ready: Callable[[Proc], bool],
        name: str,
        *,
        env: dict[str, str],
        stdout=subprocess.DEVNULL,
        log_prefix: str = "chunkwire-test-",
    ) -> None:
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=log_prefix, suffix=".log")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, env=env, stdout=stdout, stderr=self.log)
        deadline = time.monotonic() + HANG_GUARD
        while not ready(self):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.stderr()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not become ready: {self.stderr()[-3000:]}")
            time.sleep(0.02)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        with open(self.log.name, errors="replace") as log:
            return log.read()

    def peak_rss_mib(self) -> float:
        return peak_rss_kb(self.pid) / 1024

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()


def url_ready(found: list[str]) -> Callable[[Proc], bool]:
    """A readiness check for a server that prints "... listening on URL" once bound
    (start it with ``stdout=subprocess.PIPE``); the URL is appended to ``found``."""

    def ready(proc: Proc) -> bool:
        stdout = proc.proc.stdout
        assert stdout is not None
        while select.select([stdout], [], [], 0)[0]:
            line = stdout.readline()
            if not line:
                return False
            if b"listening on " in line:
                found.append(line.split(b"listening on ", 1)[1].strip().decode())
                return True
        return False

    return ready
