"""Stream semantics end to end: backpressure both ways, bounded memory, premature ends,
``finished``, Expect: 100-continue, cork. Real processes (CLI) and raw sockets.

Each test prints what it measured (run with -s to see it).
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from bodies import stamped_blocks
from e2e_stack import Proc, start_gateway, start_plugin

MIB = 1 << 20
GIB = 1 << 30
BLOCK = bytes(range(256)) * 4096  # 1 MiB
# How a handler's body read ends when the client goes away: ClientDisconnected,
# or CancelledError when the gateway's cancel lands while the read waits on
# gRPC (the task-level cancellation the plugin keeps). Never a clean end.
GONE = ("ClientDisconnected after ", "CancelledError after ")

pytestmark = pytest.mark.timeout(180)


class Streams:
    def __init__(self, plugin: Proc, gateway: Proc, url: str) -> None:
        self.plugin = plugin
        self.gateway = gateway
        self.url = url
        self.address = _address(url)

    def state(self) -> dict:
        return httpx.get(self.url + "/plugins/s/state", timeout=10).json()

    def gateway_stats(self) -> dict:
        return httpx.get(self.url + "/_gw/stats", timeout=10).json()

    def outcome(self, key: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            value = self.state()["outcomes"].get(key)
            if value is not None:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"no outcome for {key!r}: {self.state()}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def streams(tmp_path_factory, transport: str) -> Iterator[Streams]:
    tmp = tmp_path_factory.mktemp("streams")
    sock = tmp / "streams.sock"
    plugin = start_plugin("e2e_streams:plugin", sock)
    try:
        gateway, url = start_gateway({"s": f"unix:{sock}"}, "--transport", transport)
        try:
            yield Streams(plugin, gateway, url)
        finally:
            gateway.stop()
    finally:
        plugin.stop()


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def vm_kb(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            raise AssertionError(f"closed in the head: {data[:300]!r}")
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def flat(samples: list[int], slack_kb: int) -> bool:
    return max(samples) - min(samples) <= slack_kb


# -- backpressure, response direction -------------------------------------------


def test_slow_client_bounds_handler_and_memory(streams):
    """A client reading 2 MiB/s against a 1 GiB response: the handler's writes wait."""
    rate = 2 * MIB
    seconds = 15.0
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
    sock.connect(streams.address)
    sock.sendall(f"GET /plugins/s/big-download?size={GIB} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    head, rest = read_head(sock)
    assert head.startswith(b"HTTP/1.1 200")
    got = len(rest)
    buf = bytearray(64 * 1024)
    start = time.monotonic()
    next_sample = start + 1.0
    samples: list[tuple[float, int, int, int, int]] = []  # t, read, written, gw, plugin
    while (now := time.monotonic()) - start < seconds:
        if got > (now - start) * rate:
            time.sleep(min(0.01, got / rate - (now - start)))
        else:
            n = sock.recv_into(buf)
            assert n, "response ended early"
            got += n
        if now >= next_sample:
            next_sample += 1.0
            written = streams.state()["written"]
            samples.append(
                (now - start, got, written, vm_kb(streams.gateway.pid), vm_kb(streams.plugin.pid))
            )
    sock.close()
    for t, read, written, gw, pl in samples:
        print(f"t={t:5.1f}s client read {read / MIB:7.1f} MiB, handler wrote {written / MIB:7.1f}"
              f" MiB (ahead {(written - read) / MIB:5.2f} MiB), RSS gateway {gw / 1024:.1f} MiB,"
              f" plugin {pl / 1024:.1f} MiB")
    steady = samples[2:]
    ahead = [written - read for _, read, written, _, _ in steady]
    # The handler tracks the reader: never more than a bounded amount ahead of it
    # (socket buffers + uvicorn + one message + HTTP/2 window + high-water mark).
    assert max(ahead) < 16 * MIB, ahead
    assert samples[-1][2] < 64 * MIB  # nowhere near 1 GiB
    assert samples[-1][1] > seconds * rate * 0.7  # the client did read at its pace
    assert flat([s[3] for s in steady], 8 * 1024)
    assert flat([s[4] for s in steady], 8 * 1024)
    assert streams.outcome("big-download") in ("ClientDisconnected", "CancelledError")


# -- backpressure, request direction --------------------------------------------


def test_never_reading_handler_stalls_the_upload(streams):
    """1 GiB upload to a handler that never reads: the client's sending stalls."""
    received_before = streams.gateway_stats()["received_bytes"]
    gw_before = vm_kb(streams.gateway.pid)
    sock = socket.socket()
    sock.connect(streams.address)
    sock.sendall(
        f"POST /plugins/s/never-read HTTP/1.1\r\nHost: t\r\nContent-Length: {GIB}\r\n\r\n".encode()
    )
    sock.setblocking(False)
    view = memoryview(BLOCK)
    sent = 0
    last_progress = time.monotonic()
    while time.monotonic() - last_progress < 2.0 and sent < GIB:
        try:
            n = sock.send(view[sent % len(view):])
        except BlockingIOError:
            time.sleep(0.01)
            continue
        sent += n
        last_progress = time.monotonic()
    stats = streams.gateway_stats()
    state = streams.state()
    gw_received = stats["received_bytes"] - received_before
    plugin_received = state["never_read_received"]
    gw_rss = vm_kb(streams.gateway.pid)
    print(f"client sent {sent / MIB:.2f} MiB before stalling; gateway received"
          f" {gw_received / MIB:.2f} MiB from uvicorn; plugin holds {plugin_received / MIB:.2f}"
          f" MiB unread; so {(sent - gw_received) / MIB:.2f} MiB sit in socket buffers and"
          f" uvicorn, {(gw_received - plugin_received) / MIB:.2f} MiB in the gateway and gRPC;"
          f" gateway RSS {gw_before / 1024:.1f} -> {gw_rss / 1024:.1f} MiB")
    assert sent < 32 * MIB
    # The gateway holds < one chunk + one ASGI message; the rest of this is the
    # HTTP/2 window the plugin's server grants.
    assert gw_received - plugin_received < 16 * MIB
    assert plugin_received < 4 * MIB
    assert gw_rss - gw_before < 8 * 1024
    # Let the handler answer without reading: the client gets that answer.
    assert httpx.get(streams.url + "/plugins/s/release").status_code == 200
    sock.setblocking(True)
    sock.settimeout(10)
    head, _ = read_head(sock)
    assert head.startswith(b"HTTP/1.1 200")
    assert b"connection: close" in head.lower()
    sock.close()


def test_echo_1gib_through_pipe_from(streams):
    """Upload 1 GiB while reading the echo concurrently; sha256 both ways; flat memory."""
    size = GIB
    sent_digest = hashlib.sha256()
    sock = socket.create_connection(streams.address)
    sock.sendall(
        f"POST /plugins/s/echo HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n".encode()
    )
    failure: list[BaseException] = []

    def sender() -> None:
        try:
            for piece in stamped_blocks(size):
                sent_digest.update(piece)
                sock.sendall(piece)
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    thread = threading.Thread(target=sender, daemon=True)
    start = time.monotonic()
    thread.start()
    head, rest = read_head(sock)
    assert head.startswith(b"HTTP/1.1 200"), head
    digest = hashlib.sha256(rest)
    got = len(rest)
    buf = bytearray(MIB)
    view = memoryview(buf)
    assert f"content-length: {size}".encode() in head.lower()
    while got < size:
        n = sock.recv_into(view)
        assert n, f"echo ended at {got} of {size}"
        digest.update(view[:n])
        got += n
    thread.join(60)
    elapsed = time.monotonic() - start
    # The client has every byte (Content-Length) perhaps before the empty last
    # frame reached the gateway: closing now could cut the response short.
    outcome = streams.outcome("echo")
    sock.close()
    assert not failure, failure
    gw_peak = vm_kb(streams.gateway.pid, "VmHWM")
    plugin_peak = vm_kb(streams.plugin.pid, "VmHWM")
    print(f"echo 1 GiB in {elapsed:.1f} s ({size / elapsed / 1e6:.0f} MB/s each way);"
          f" peak RSS gateway {gw_peak / 1024:.1f} MiB, plugin {plugin_peak / 1024:.1f} MiB")
    assert got == size
    assert digest.hexdigest() == sent_digest.hexdigest()
    assert outcome == f"piped {size}"
    assert gw_peak < 100 * 1024
    assert plugin_peak < 100 * 1024


# -- premature ends ---------------------------------------------------------------


def test_client_disconnect_mid_upload_is_client_disconnected(streams):
    sock = socket.create_connection(streams.address)
    sock.sendall(
        f"POST /plugins/s/read-all HTTP/1.1\r\nHost: t\r\nContent-Length: {GIB}\r\n\r\n".encode()
    )
    sock.sendall(bytes(256 * 1024))
    received = b""
    while b"reading" not in received:
        data = sock.recv(65536)
        assert data, received
        received += data
    sock.sendall(bytes(64 * 1024))
    sock.close()
    outcome = streams.outcome("read-all")
    print("handler saw:", outcome)
    assert outcome.startswith(GONE), outcome


def test_truncated_upload_is_never_a_clean_end(streams):
    # The client half-closes after 100 kB of a 1 MB body: for uvicorn that is a
    # disconnect, for the handler ClientDisconnected, never a clean end.
    sock = socket.create_connection(streams.address)
    sock.sendall(
        b"POST /plugins/s/read-all HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n"
    )
    received = b""
    while b"reading" not in received:
        data = sock.recv(65536)
        assert data, received
        received += data
    sock.sendall(bytes(100_000))
    sock.shutdown(socket.SHUT_WR)
    outcome = streams.outcome("read-all")
    sock.close()
    print("handler saw:", outcome)
    assert outcome.startswith(GONE), outcome


def test_plugin_abort_mid_response_leaves_it_incomplete(streams):
    sock = socket.create_connection(streams.address)
    sock.settimeout(20)
    sock.sendall(b"GET /plugins/s/abort-mid HTTP/1.1\r\nHost: t\r\n\r\n")
    head, rest = read_head(sock)
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length: 4194304" in head.lower()
    got = len(rest)
    try:
        while data := sock.recv(65536):
            got += len(data)
    except ConnectionResetError:
        pass
    sock.close()
    print(f"client got {got} of 4194304 bytes, then the connection dropped")
    assert MIB <= got < 4 * MIB
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(streams.url + "/plugins/s/abort-mid", timeout=20)


# -- finished -----------------------------------------------------------------------


def test_finished_resolves_once_delivered(streams):
    r = httpx.get(streams.url + "/plugins/s/finished?key=small&size=100000", timeout=20)
    assert r.status_code == 200 and len(r.content) == 100000
    assert streams.outcome("small") == "resolved"
    r = httpx.get(streams.url + f"/plugins/s/finished?key=large&size={64 * MIB}", timeout=60)
    assert len(r.content) == 64 * MIB
    assert streams.outcome("large") == "resolved"


def test_finished_raises_when_the_client_went_away(streams):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.connect(streams.address)
    sock.sendall(
        f"GET /plugins/s/finished?key=gone&size={256 * MIB} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    )
    head, _ = read_head(sock)
    assert head.startswith(b"HTTP/1.1 200")
    sock.recv(65536)
    sock.close()
    assert streams.outcome("gone") == "ClientDisconnected"
    # The handler's own task, inside a write when the call was cancelled, is
    # cancelled (or its next write raises).
    handler = streams.outcome("gone:handler")
    print("finished raised ClientDisconnected; the handler saw", handler)
    assert handler in ("CancelledError", "ClientDisconnected")


# -- Expect: 100-continue -----------------------------------------------------------


def _expect_request(streams: Streams, path: str, length: int) -> socket.socket:
    sock = socket.create_connection(streams.address)
    sock.settimeout(10)
    sock.sendall(
        f"POST /plugins/s/{path} HTTP/1.1\r\nHost: t\r\nContent-Length: {length}\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    return sock


def _read_until_close(sock: socket.socket) -> bytes:
    data = b""
    try:
        while piece := sock.recv(65536):
            data += piece
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def test_expect_continue_only_when_the_handler_reads(streams):
    length = 3 * MIB
    # The handler waits 1 s before reading: no "100 Continue" until then.
    sock = _expect_request(streams, "expect?delay=1", length)
    sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        sock.recv(65536)
    sock.settimeout(10)
    first = sock.recv(65536)
    assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(bytes(length))
    head, rest = read_head(sock)
    assert head.startswith(b"HTTP/1.1 200")
    while not rest.endswith(b"\n"):
        rest += sock.recv(65536)
    assert rest == f"read {length}\n".encode()
    sock.close()


@pytest.mark.parametrize("code", [417, 413])
def test_expect_answered_first_never_reads_the_body(streams, code):
    received_before = streams.gateway_stats()["received_bytes"]
    sock = _expect_request(streams, f"expect?refuse={code}", GIB)
    answer = _read_until_close(sock)  # the body is never sent
    sock.close()
    assert answer.startswith(f"HTTP/1.1 {code} ".encode()), answer[:200]
    assert b"100 Continue" not in answer
    assert b"connection: close" in answer.lower()
    assert answer.endswith(b"refused without reading\n")
    assert streams.gateway_stats()["received_bytes"] == received_before


def test_expect_with_curl(streams, curl):
    with tempfile.NamedTemporaryFile() as upload:
        upload.write(bytes(2 * MIB))
        upload.flush()
        for query, code, text, uploaded in (
            ("", "200", f"read {2 * MIB}\n", 2 * MIB),
            ("?refuse=417", "417", "refused without reading\n", 0),
        ):
            out = subprocess.run(
                [curl, "-sS", "-v", "-H", "Expect: 100-continue", "--data-binary",
                 f"@{upload.name}", "-o", "-", "-w", "\n%{http_code} %{size_upload}",
                 streams.url + "/plugins/s/expect" + query],
                capture_output=True, text=True, timeout=30,
            )
            body, _, tail = out.stdout.rpartition("\n")
            assert tail.split() == [code, str(uploaded)], (out.stdout, out.stderr)
            assert body == text
            assert ("HTTP/1.1 100 Continue" in out.stderr) == (code == "200"), out.stderr


# -- cork ---------------------------------------------------------------------------


def test_cork_leaves_as_few_messages(streams):
    before = streams.gateway_stats()["response_messages"]
    r = httpx.get(streams.url + "/plugins/s/corked?count=10000", timeout=20)
    assert r.content == b"c" * 320_000
    messages = streams.gateway_stats()["response_messages"] - before
    print(f"10,000 corked writes of 32 B: {messages} response messages")
    assert messages <= -(-320_000 // 65536) + 1
