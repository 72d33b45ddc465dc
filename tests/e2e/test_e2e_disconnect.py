"""Client disconnects cancel the plugin call; 200 of them leave no tasks or memory behind."""

from __future__ import annotations

import socket
import time

import pytest

pytestmark = pytest.mark.timeout(180)

ROUNDS = 200
WARMUP = 100  # gRPC's buffer pools in the plugin grow to a plateau over the first ~100


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def disconnect_mid_download(url: str) -> None:
    with socket.create_connection(_address(url)) as sock:
        sock.sendall(b"GET /plugins/app/endless-download HTTP/1.1\r\nHost: t\r\n\r\n")
        received = b""
        while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < 1000:
            data = sock.recv(65536)
            assert data, "closed before the body started"
            received += data
        assert received.startswith(b"HTTP/1.1 200")


def disconnect_mid_upload(url: str) -> None:
    with socket.create_connection(_address(url)) as sock:
        sock.sendall(
            b"POST /plugins/app/endless-upload HTTP/1.1\r\nHost: t\r\n"
            b"Content-Length: 1073741824\r\n\r\n"
        )
        sock.sendall(bytes(256 * 1024))
        received = b""
        while b"reading" not in received:
            data = sock.recv(65536)
            assert data, f"closed before the handler started: {received[:300]!r}"
            received += data
        sock.sendall(bytes(64 * 1024))


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in time: {predicate.__doc__}")
        time.sleep(0.05)


def settle(stack, downloads: int, uploads: int) -> tuple[dict, dict]:
    """Wait until the plugin saw every cancellation and nothing is in flight."""

    def done() -> bool:
        cancelled = stack.plugin_stats()["cancelled"]
        done.__doc__ = f"{cancelled} {stack.gateway_stats()}"
        return cancelled["download"] >= downloads and cancelled["upload"] >= uploads

    wait_for(done)
    wait_for(lambda: stack.gateway_stats()["active"] == 0)
    time.sleep(0.3)
    return stack.gateway_stats(), stack.plugin_stats()


def test_disconnects_cancel_handlers_and_leak_nothing(stack):
    base_down = stack.plugin_stats()["cancelled"]["download"]
    base_up = stack.plugin_stats()["cancelled"]["upload"]
    for _ in range(WARMUP):
        disconnect_mid_download(stack.url)
        disconnect_mid_upload(stack.url)
    gw_before, plugin_before = settle(stack, base_down + WARMUP, base_up + WARMUP)

    for _ in range(ROUNDS):
        disconnect_mid_download(stack.url)
        disconnect_mid_upload(stack.url)
    gw_after, plugin_after = settle(
        stack, base_down + WARMUP + ROUNDS, base_up + WARMUP + ROUNDS
    )

    print("gateway", gw_before, gw_after)
    print("plugin", plugin_before, plugin_after)
    # the handler saw every cancellation
    assert plugin_after["cancelled"]["download"] == base_down + WARMUP + ROUNDS
    assert plugin_after["cancelled"]["upload"] == base_up + WARMUP + ROUNDS
    # no growing task count
    assert gw_after["tasks"] <= gw_before["tasks"]
    assert plugin_after["tasks"] <= plugin_before["tasks"]
    # no call objects left behind (grpc/grpc#43462 keeps them alive in a cycle)
    assert gw_after["calls"]["app"] <= 1
    # memory: 400 more requests must not cost more than a few MiB. malloc's
    # in-use count is the leak measure (RSS also moves with heap
    # fragmentation: each cancelled upload can leave up to the plugin
    # server's 1 MiB stream window in gRPC's buffers).
    assert gw_after["vmrss"] - gw_before["vmrss"] < 4 * 1024
    assert gw_after["malloc_bytes"] - gw_before["malloc_bytes"] < 2 * 1024 * 1024
    assert plugin_after["malloc_bytes"] - plugin_before["malloc_bytes"] < 3 * 1024 * 1024
    assert plugin_after["vmrss"] - plugin_before["vmrss"] < 10 * 1024
