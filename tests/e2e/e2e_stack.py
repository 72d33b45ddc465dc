"""Real processes started through the CLI: plugins and gateways, each a subprocess.

A module of its own name (not ``conftest``) so that test files import it
unambiguously when several test directories are collected together."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
from pathlib import Path

import httpx
import processes
from processes import ROOT as ROOT
from processes import free_port as free_port
from processes import peak_rss_kb as peak_rss_kb
from processes import url_ready

HERE = Path(__file__).resolve().parent
_connectable_unix = processes.connectable


def _env() -> dict[str, str]:
    return processes.process_env(HERE, HERE.parent)


class Proc(processes.Proc):
    """A chunkwire CLI process (``script``: a Python script given by path instead)."""

    def __init__(
        self, args: list[str], ready, name: str, *, stdout=subprocess.DEVNULL, script: bool = False
    ) -> None:
        self.args = args
        argv = [sys.executable, *(args if script else ["-m", "chunkwire", *args])]
        super().__init__(argv, ready, name, env=_env(), stdout=stdout, log_prefix="chunkwire-e2e-")


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
    proc = Proc(args, url_ready(found), args[0], stdout=subprocess.PIPE, script=script)
    return proc, found[0]


def start_url_script(script: str, *args: str) -> tuple[Proc, str]:
    """A test script in this directory that serves HTTP and prints "listening on URL"."""
    return _started_with_url([str(HERE / script), *args], script=True)


class Stack:
    """A plugin and the gateways in front of it, on one transport ("lane", "mux" or "call")."""

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


class PluginsStack:
    """Plugins from ``specs`` (name: "module:attr"), each on its own unix socket,
    behind one gateway started with ``gateway_args``."""

    def __init__(self, tmp: Path, specs: dict[str, str], *gateway_args: str) -> None:
        self.tmp = tmp
        self.socks = {name: tmp / f"{name}.sock" for name in specs}
        self.plugins: dict[str, Proc] = {}
        try:
            for name, spec in specs.items():
                self.plugins[name] = start_plugin(spec, self.socks[name])
            self.gateway, self.url = start_gateway(
                {name: f"unix:{sock}" for name, sock in self.socks.items()}, *gateway_args
            )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if hasattr(self, "gateway"):
            self.gateway.stop()
        for proc in self.plugins.values():
            proc.stop()


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
