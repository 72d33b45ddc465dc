"""Command-line mistakes: one line on stderr, exit status 2, never a traceback."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_stack import ROOT, Proc, _connectable_unix, _env, start_plugin

import chunkwire
from chunkwire.client import PluginClient

pytestmark = pytest.mark.timeout(120)


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chunkwire", *args],
        env=_env(),
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_usage_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["plugin", "e2e_apps", "--listen", "unix:/tmp/x.sock"], ["MODULE:ATTR"]),
        (["plugin", "e2e_apps.py:plugin", "--listen", "unix:/tmp/x.sock"], ["e2e_apps:plugin"]),
        (
            ["plugin", "some/dir/mod.py:app", "--listen", "unix:/tmp/x.sock"],
            ["mod:app --app-dir some/dir"],
        ),
        (
            ["plugin", "no_such_module_x:plugin", "--listen", "unix:/tmp/x.sock"],
            ["no_such_module_x"],
        ),
        (["plugin", "e2e_apps:no_such_attr", "--listen", "unix:/tmp/x.sock"], ["no_such_attr"]),
        (["plugin", "json:dumps", "--listen", "unix:/tmp/x.sock"], ["not a chunkwire Plugin"]),
        (["plugin", "e2e_apps:plugin", "--listen", "nowhere"], ["--listen", "'nowhere'"]),
        (["plugin", "e2e_apps:plugin", "--listen", "unix:"], ["empty socket path"]),
        (["plugin", "e2e_apps:plugin", "--listen", "127.0.0.1:65536"], ["65536", "1..65535"]),
        (["plugin", "e2e_apps:plugin", "--listen", "127.0.0.1:-1"], ["-1"]),
        (["plugin", "e2e_apps:plugin", "--listen", "127.0.0.1:http"], ["'http'"]),
        (["plugin", "e2e_apps:plugin"], ["--listen"]),
        (
            ["plugin", "e2e_apps:plugin", "--listen", "unix:/no/such/dir/x.sock"],
            ["/no/such/dir", "does not exist"],
        ),
        (
            ["plugin", "e2e_apps:plugin", "--listen", "unix:/x.sock", "--app-dir", "/no/dir"],
            ["--app-dir"],
        ),
        (["gateway"], ["--plugin"]),
        (["gateway", "--plugin", "a=unix:/tmp/a.sock", "--max-message-size", "0"], ["at least 1"]),
        (["gateway", "--plugin", "a=unix:/tmp/a.sock", "--max-message-size", "1x"], ["'1x'"]),
        (["gateway", "--plugin", "a=unix:/tmp/a.sock", "--ws-ping-interval", "-1"], ["'-1'"]),
        (["gateway", "--plugin", "a=unix:/tmp/a.sock", "--ws-ping-interval", "nan"], ["'nan'"]),
        (["gateway", "--plugin", "files"], ["ID=ADDRESS", "'files'"]),
        (["gateway", "--plugin", "=unix:/tmp/x.sock"], ["ID=ADDRESS"]),
        (["gateway", "--plugin", "files=somewhere"], ["'somewhere'"]),
        (["gateway", "--plugin", "files=127.0.0.1:99999"], ["99999"]),
        (
            ["gateway", "--plugin", "files=127.0.0.1:7000", "--transport", "lane"],
            ["'files'", "lane", "unix socket", "127.0.0.1:7000"],
        ),
        (
            ["gateway", "--plugin", "a=unix:/tmp/a.sock", "--plugin", "a=unix:/tmp/b.sock"],
            ["twice"],
        ),
        (["gateway", "--plugin", "a=unix:/tmp/a.sock", "--port", "80800"], ["80800", "1..65535"]),
        (["gateway", "--plugin", "a=unix:/tmp/a.sock", "--port", "-1"], ["-1", "1..65535"]),
        (["gateway", "--plugin", "a=unix:/tmp/a.sock", "--port", "x"], ["'x'"]),
        (
            ["gateway", "--plugin", "a=unix:/tmp/a.sock", "--chunk-size", "10x"],
            ["'10x'", "k, m, g"],
        ),
        (["gateway", "--plugin", "a=unix:/tmp/a.sock", "--chunk-size", "0"], ["at least 1"]),
        (["gateway", "--plugin", "a=unix:/tmp/a.sock", "--max-body-size", "1.5q"], ["'1.5q'"]),
        (["gateway", "--plugin", "a=unix:/tmp/a.sock", "--tls-ca", "/no/ca.pem"], ["/no/ca.pem"]),
        (["demo", "--port", "65536"], ["65536"]),
        (["bench", "--size", "10x"], ["'10x'"]),
        (["nonsense"], ["nonsense"]),
    ],
)
def test_bad_input_is_one_line_and_status_2(args: list[str], words: list[str]) -> None:
    assert_usage_error(run_cli(*args), *words)


@pytest.fixture
def busy_port():  # type: ignore[no-untyped-def]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_tcp_port_in_use(busy_port: int) -> None:
    assert_usage_error(
        run_cli("gateway", "--plugin", "a=unix:/tmp/a.sock", "--port", str(busy_port)), "in use"
    )
    assert_usage_error(run_cli("demo", "--port", str(busy_port)), "in use")
    assert_usage_error(
        run_cli("plugin", "e2e_apps:plugin", "--listen", f"127.0.0.1:{busy_port}"), "in use"
    )


def test_unix_socket_in_use(tmp_path: Path) -> None:
    sock = tmp_path / "p.sock"
    first = start_plugin("e2e_apps:plugin", sock)
    try:
        assert_usage_error(
            run_cli("plugin", "e2e_apps:plugin", "--listen", f"unix:{sock}"), "in use"
        )
        assert first.proc.poll() is None  # the running plugin is untouched
    finally:
        first.stop()


def test_not_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "file.sock"
    path.write_text("not a socket")
    assert_usage_error(
        run_cli("plugin", "e2e_apps:plugin", "--listen", f"unix:{path}"), "not a socket"
    )
    assert path.read_text() == "not a socket"


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"chunkwire {chunkwire.__version__}"


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (
            "gateway",
            ["(default: 8080)", "(default: 127.0.0.1)", "(default: 65536)", "(default: 30.0)"],
        ),
        ("demo", ["(default: 8080)", "k, m, g"]),
        ("plugin", ["(default: .)", "(default: warning)"]),
    ],
)
def test_help_shows_defaults(command: str, shown: list[str]) -> None:
    result = run_cli(command, "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for item in shown:
        assert item in text, text


PLUGIN_MODULE = """
from chunkwire import Plugin

plugin = Plugin("here")

@plugin.route("/where")
async def where(request, response):
    await response.write(b"imported from the app dir")
"""


@pytest.mark.parametrize("how", ["cwd", "app-dir"])
def test_plugin_module_from_current_directory_or_app_dir(tmp_path: Path, how: str) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "cw_local_plugin.py").write_text(PLUGIN_MODULE)
    sock = tmp_path / "p.sock"
    args = ["plugin", "cw_local_plugin:plugin", "--listen", f"unix:{sock}"]
    if how == "app-dir":
        args += ["--app-dir", str(app_dir)]
        cwd = tmp_path
    else:
        cwd = app_dir
    here = os.getcwd()
    os.chdir(cwd)  # Proc starts the process in the current directory
    try:
        proc = Proc(args, lambda _: sock.exists() and _connectable_unix(str(sock)), "plugin")
    finally:
        os.chdir(here)
    try:

        async def call() -> bytes:
            async with PluginClient(f"unix:{sock}") as client:
                resp = await client.request("GET", "/where")
                return await resp.read()

        assert asyncio.run(call()) == b"imported from the app dir"
    finally:
        proc.stop()
