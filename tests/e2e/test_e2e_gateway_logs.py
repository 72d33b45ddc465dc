"""Expected failures are one gateway log line each, with the request id and the reason,
never a traceback: a handler failing after its head, a chunked upload over
--max-body-size, a plugin that stops mid-response, an unreachable plugin (503); and
a response whose client stopped reading is cut at the end of the graceful timeout."""

from __future__ import annotations

import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_stack import start_gateway, start_plugin

pytestmark = pytest.mark.timeout(120)

LINE = r"request [0-9a-f]{{32}} to plugin '{plugin}': "


class Logs:
    def __init__(self, tmp: Path) -> None:
        self.steady_sock = tmp / "steady.sock"
        self.steady = start_plugin("log_apps:plugin", self.steady_sock)
        self.doomed = start_plugin("log_apps:plugin", tmp / "doomed.sock")
        self.gateway, self.url = start_gateway(
            {
                "steady": f"unix:{tmp / 'steady.sock'}",
                "doomed": f"unix:{tmp / 'doomed.sock'}",
                "absent": f"unix:{tmp / 'absent.sock'}",
            },
            "--max-body-size",
            "1m",
            "--log-level",
            "info",
        )

    def log(self) -> str:
        return self.gateway.stderr()

    def close(self) -> None:
        for proc in (self.gateway, self.doomed, self.steady):
            proc.stop()


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Iterator[Logs]:  # type: ignore[no-untyped-def]
    stack = Logs(tmp_path_factory.mktemp("logs"))
    try:
        yield stack
    finally:
        log = stack.log()
        stack.close()
    assert "Traceback" not in log
    assert "Exception in ASGI application" not in log


def one_new_line(logs: Logs, before: str, plugin: str, reason: str) -> str:
    new = logs.log()[len(before) :]
    pattern = LINE.format(plugin=plugin) + ".*" + reason
    lines = [line for line in new.splitlines() if re.search(pattern, line)]
    assert len(lines) == 1, new
    assert "Traceback" not in new
    return lines[0]


def wait_logged(logs: Logs, before: str, plugin: str, reason: str) -> str:
    # The gateway logs when its side of the exchange ends; a hang guard only.
    deadline = time.monotonic() + 30
    while True:
        try:
            return one_new_line(logs, before, plugin, reason)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_handler_failing_after_its_head(logs: Logs) -> None:
    before = logs.log()
    with httpx.stream("GET", logs.url + "/plugins/steady/fail-after-head") as r:
        assert r.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            r.read()
    wait_logged(logs, before, "steady", "aborted")


def test_chunked_upload_over_max_body_size(logs: Logs) -> None:
    before = logs.log()

    def body() -> Iterator[bytes]:
        for _ in range(32):  # 2 MiB, no Content-Length
            yield bytes(65536)

    r = httpx.post(logs.url + "/plugins/steady/count", content=body(), timeout=30)
    assert r.status_code == 413
    wait_logged(logs, before, "steady", "max_body_size")
    # at the limit it passes
    r = httpx.post(logs.url + "/plugins/steady/count", content=iter([bytes(1 << 20)]))
    assert r.text == f"{1 << 20}\n"


def test_plugin_stopping_mid_response(logs: Logs) -> None:
    before = logs.log()
    with httpx.stream("GET", logs.url + "/plugins/doomed/ticks", timeout=30) as r:
        lines = r.iter_lines()
        assert next(lines) == "tick 0"
        logs.doomed.kill()
        with pytest.raises(httpx.RemoteProtocolError):
            for _ in lines:
                pass
    wait_logged(logs, before, "doomed", "aborted")


def test_unreachable_plugin_is_503_with_its_reason(logs: Logs) -> None:
    before = logs.log()
    r = httpx.get(logs.url + "/plugins/absent/anything")
    assert r.status_code == 503
    wait_logged(logs, before, "absent", "unreachable.*503")



def test_stop_cuts_a_response_whose_client_stopped_reading(logs: Logs) -> None:
    gateway, url = start_gateway(
        {"steady": f"unix:{logs.steady_sock}"}, "--graceful-timeout", "0", "--log-level", "info"
    )
    try:
        with httpx.stream("GET", f"{url}/plugins/steady/firehose", timeout=60) as r:
            assert r.status_code == 200
            # Not reading: the kernel buffers fill and the gateway's writes wait.
            gateway.proc.send_signal(signal.SIGINT)
            assert gateway.proc.wait(60) == 0
        log = gateway.stderr()
    finally:
        gateway.stop()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log
    assert "running task" not in log, log  # uvicorn had to cancel it
    lines = [line for line in log.splitlines() if re.search(LINE.format(plugin="steady"), line)]
    assert len(lines) <= 1, log


def _stalled_upload(url: str) -> socket.socket:
    """A connection whose upload the plugin never reads, sent until nothing more fits."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        b"POST /plugins/steady/stall HTTP/1.1\r\nHost: t\r\nContent-Length: 1073741824\r\n\r\n"
    )
    sock.setblocking(False)
    block = bytes(range(256)) * 256
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 1.0:  # nothing taken for a second: stalled
        try:
            if sock.send(block):
                idle_since = time.monotonic()
        except BlockingIOError:
            time.sleep(0.01)
    return sock


def test_stop_cuts_an_upload_the_plugin_stopped_reading(logs: Logs) -> None:
    gateway, url = start_gateway(
        {"steady": f"unix:{logs.steady_sock}"}, "--graceful-timeout", "0", "--log-level", "info"
    )
    sock = None
    try:
        sock = _stalled_upload(url)
        gateway.proc.send_signal(signal.SIGINT)
        assert gateway.proc.wait(60) == 0
        log = gateway.stderr()
    finally:
        if sock is not None:
            sock.close()
        gateway.stop()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log
    assert "running task" not in log, log  # uvicorn had to cancel it

