"""Serving: unix socket permissions and lifecycle, TCP ports, run() and signals."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from plugin_helpers import State, make_plugin, serve

from chunkwire.client import PluginClient

SRC = str(Path(__file__).resolve().parents[2] / "src")


async def test_unix_socket_is_0600_and_removed_on_stop(sock_dir: str) -> None:
    path = f"{sock_dir}/p.sock"
    old = os.umask(0o000)  # the server must not depend on the caller's umask
    try:
        async with serve(make_plugin(State()), f"unix:{path}") as (server, client):
            st = os.stat(path)
            assert stat.S_ISSOCK(st.st_mode)
            assert stat.S_IMODE(st.st_mode) == 0o600
            assert server.address == f"unix:{path}"
            assert await (await client.request("GET", "/small")).read() == b"hello world"
    finally:
        os.umask(old)
    assert not os.path.exists(path)
    # The process umask is left as it was.
    assert os.umask(old) == old


async def test_relative_unix_path(sock_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(sock_dir)
    async with serve(make_plugin(State()), "unix:rel.sock") as (server, client):
        assert server.address == "unix:" + os.path.abspath("rel.sock")
        assert await (await client.request("GET", "/small")).read() == b"hello world"
    assert not os.path.exists(os.path.join(sock_dir, "rel.sock"))


async def test_stale_socket_file_is_replaced(sock_dir: str) -> None:
    path = f"{sock_dir}/stale.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()  # the file stays, nobody listens
    assert os.path.exists(path)
    async with serve(make_plugin(State()), f"unix:{path}") as (_, client):
        assert await (await client.request("GET", "/small")).read() == b"hello world"


async def test_live_socket_is_not_stolen(sock_dir: str) -> None:
    path = f"{sock_dir}/live.sock"
    async with serve(make_plugin(State()), f"unix:{path}") as (_, client):
        with pytest.raises(OSError, match="in use"):
            await make_plugin(State()).start(f"unix:{path}")
        assert await (await client.request("GET", "/small")).read() == b"hello world"


async def test_regular_file_is_not_removed(sock_dir: str) -> None:
    path = f"{sock_dir}/file.sock"
    Path(path).write_text("keep me")
    with pytest.raises(FileExistsError):
        await make_plugin(State()).start(f"unix:{path}")
    assert Path(path).read_text() == "keep me"


async def test_tcp_port_zero_reports_bound_port() -> None:
    async with serve(make_plugin(State()), "127.0.0.1:0") as (server, client):
        assert server.port and server.port > 0
        assert server.address == f"127.0.0.1:{server.port}"
        assert await (await client.request("GET", "/small")).read() == b"hello world"


def test_bad_listen_address() -> None:
    with pytest.raises(ValueError):
        make_plugin(State()).run("nonsense")


_RUN_SCRIPT = textwrap.dedent(
    """
    import sys
    from chunkwire import Plugin

    plugin = Plugin("runner")

    @plugin.route("/hi")
    async def hi(request, response):
        await response.write(b"hi")

    plugin.run(sys.argv[1])
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_run_stops_cleanly_on_signal(sock_dir: str, sig: signal.Signals) -> None:
    path = f"{sock_dir}/run.sock"
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUN_SCRIPT, f"unix:{path}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the socket accepts
        assert f"listening on unix:{path}" in line, (line, proc.stderr and proc.stderr.read())
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        async with PluginClient(f"unix:{path}") as client:
            assert await (await client.request("GET", "/hi")).read() == b"hi"
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()
        assert not os.path.exists(path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_stop_ends_an_idle_clients_connection_instead_of_waiting_the_grace(
    sock_dir: str, transport: str
) -> None:
    """A client that made one request keeps its connection (mux, lane) open. stop()
    sends GOAWAY and, with no stream left, the plugin ends the connection itself: the
    client's pool sees it closed and stop() returns, far inside the 60 s grace."""
    import asyncio

    server = await make_plugin(State()).start(f"unix:{sock_dir}/plugin.sock")
    async with PluginClient(server.address, transport=transport) as client:
        response = await client.request("POST", "/echo", body=b"one")
        assert await response.read() == b"one"
        pool = client._pool
        assert (pool is not None) == (transport != "call")
        stopping = asyncio.ensure_future(server.stop(60))
        await asyncio.wait_for(stopping, 30)  # a hang guard: the grace is 60 s
        assert server.mux.connections == set()
        if pool is not None:
            for _ in range(1000):  # the client's reader sees the end of the connection
                if not pool.connections:
                    break
                await asyncio.sleep(0.01)
            assert pool.connections == []
