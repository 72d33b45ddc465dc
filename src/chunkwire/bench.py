"""``chunkwire bench``: end-to-end numbers, each against direct uvicorn in the same run.

Every scenario starts its processes fresh: a plugin (``chunkwire plugin``)
and a gateway (``chunkwire gateway``) as separate processes, and a plain
ASGI app doing the same work under uvicorn as the reference. The client is
this process (raw sockets, so it is never the bottleneck) or wrk when
installed. Figures are medians of ``--rounds`` runs.

This module imports only the standard library at the top: the reference
app must not pay for grpc in its memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .cli import parse_size

MIB = 1 << 20
_BLOCK = bytes(range(256)) * 4096  # 1 MiB
_SMALL = b"s" * 1024
_TINY = b"t" * 32
_TINY_WRITES = 100_000
_TTFB_REQUESTS = 1000


# -- the plugin and the reference app --------------------------------------


def bench_plugin() -> Any:
    """The benchmark plugin (``chunkwire plugin chunkwire.bench:bench_plugin``)."""
    from .plugin import Plugin

    chunk_size = int(os.environ.get("CHUNKWIRE_BENCH_CHUNK", "65536"))
    plugin = Plugin("bench", chunk_size=chunk_size)

    @plugin.route("/upload", methods=["POST", "PUT"])
    async def upload(request: Any, response: Any) -> None:
        total = 0
        async for chunk in request.body:
            total += len(chunk)
        await response.write(str(total).encode())

    @plugin.route("/download")
    async def download(request: Any, response: Any) -> None:
        size = int(request.query["size"])
        response.headers["Content-Length"] = str(size)
        block = memoryview(_BLOCK)
        while size >= len(block):
            await response.write(block)
            size -= len(block)
        if size:
            await response.write(block[:size])

    @plugin.route("/echo", methods=["POST", "PUT"])
    async def echo(request: Any, response: Any) -> None:
        if request.content_length is not None:
            response.headers["Content-Length"] = str(request.content_length)
        await response.pipe_from(request.body)

    @plugin.route("/tiny")
    async def tiny(request: Any, response: Any) -> None:
        for _ in range(_TINY_WRITES):
            await response.write(_TINY)

    @plugin.route("/small")
    async def small(request: Any, response: Any) -> None:
        await response.write(_SMALL)

    @plugin.route("/stall", methods=["POST"])
    async def stall(request: Any, response: Any) -> None:
        await asyncio.Event().wait()  # never reads the body: its stream's credit runs out

    @plugin.route("/ttfb")
    async def ttfb(request: Any, response: Any) -> None:
        await response.write(b"x", flush=True)
        await asyncio.sleep(0.02)

    return plugin


async def direct_app(scope: dict, receive: Callable, send: Callable) -> None:
    """The reference: the same routes as a plain ASGI app."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"].rsplit("/", 1)[-1]
    if path == "upload":
        total = 0
        more = True
        while more:
            message = await receive()
            total += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = str(total).encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif path == "download":
        size = int(scope["query_string"].decode().partition("size=")[2])
        headers = [(b"content-length", str(size).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        block = memoryview(_BLOCK)
        while size > 0:
            piece = block[: min(size, len(block))]
            size -= len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": size > 0})
    elif path == "echo":
        headers = [(n, v) for n, v in scope["headers"] if n == b"content-length"]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            more = message.get("more_body", False)
            await send({"type": "http.response.body", "body": message.get("body", b""),
                        "more_body": more})
    elif path == "tiny":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(_TINY_WRITES):
            await send({"type": "http.response.body", "body": _TINY, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "small":
        headers = [(b"content-length", b"1024")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": _SMALL})
    elif path == "ttfb":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        await asyncio.sleep(0.02)
        await send({"type": "http.response.body", "body": b""})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})


# -- processes ---------------------------------------------------------------


def _env(chunk_size: int) -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    env["CHUNKWIRE_BENCH_CHUNK"] = str(chunk_size)
    return env


_TUNED_REFERENCE = False


def _reference_env() -> dict[str, str]:
    env = _env(65536)
    if _TUNED_REFERENCE:
        # The malloc thresholds the chunkwire CLI sets in its servers
        # (cli.tune_malloc); plain uvicorn, as users run it, has glibc defaults.
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(32 * 1024 * 1024))
        env.setdefault("MALLOC_TRIM_THRESHOLD_", str(128 * 1024 * 1024))
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(check: Callable[[], bool], proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after 30 s")
        time.sleep(0.02)


def _tcp_ready(port: int) -> Callable[[], bool]:
    def check() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    return check


def _unix_ready(path: str) -> Callable[[], bool]:
    def check() -> bool:
        if not os.path.exists(path):
            return False
        with socket.socket(socket.AF_UNIX) as sock:
            return sock.connect_ex(path) == 0

    return check


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Target:
    """Base URL plus the processes behind it."""

    def __init__(self, url: str, procs: dict[str, subprocess.Popen]) -> None:
        self.url = url
        self.procs = procs

    def peak_rss(self) -> dict[str, float]:
        return {name: peak_rss_mib(p.pid) for name, p in self.procs.items()}


@contextmanager
def chunkwire_target(chunk_size: int, transport: str = "mux"):
    env = _env(chunk_size)
    with tempfile.TemporaryDirectory(prefix="chunkwire-bench-") as tmp:
        sock = os.path.join(tmp, "bench.sock")
        port = _free_port()
        py = [sys.executable, "-m", "chunkwire"]
        quiet = {"stdout": subprocess.DEVNULL, "env": env}
        plugin = subprocess.Popen(
            [*py, "plugin", "chunkwire.bench:bench_plugin", "--listen", f"unix:{sock}"], **quiet
        )
        procs = {"plugin": plugin}
        try:
            _wait_ready(_unix_ready(sock), plugin, "plugin")
            gateway = subprocess.Popen(
                [*py, "gateway", "--plugin", f"bench=unix:{sock}", "--port", str(port),
                 "--chunk-size", str(chunk_size), "--log-level", "error",
                 "--transport", transport],
                **quiet,
            )
            procs["gateway"] = gateway
            _wait_ready(_tcp_ready(port), gateway, "gateway")
            yield Target(f"http://127.0.0.1:{port}/plugins/bench", procs)
        finally:
            for proc in reversed(list(procs.values())):
                _stop(proc)


@contextmanager
def direct_target():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "chunkwire.bench:direct_app", "--port", str(port),
         "--log-level", "error", "--no-access-log"],
        stdout=subprocess.DEVNULL,
        env=_reference_env(),
    )
    try:
        _wait_ready(_tcp_ready(port), proc, "uvicorn")
        yield Target(f"http://127.0.0.1:{port}/direct", {"uvicorn": proc})
    finally:
        _stop(proc)


_NGINX_CONF = """
{user}
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log error;
daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream app {{ server unix:{sock}; keepalive 64; keepalive_requests 100000000; }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_request_buffering off;
        }}
    }}
}}
"""


@contextmanager
def nginx_target():
    """The peer: nginx reverse-proxying to the direct app under uvicorn on a unix socket."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory(prefix="chunkwire-nginx-") as tmp:
        sock = os.path.join(tmp, "app.sock")
        port = _free_port()
        conf = os.path.join(tmp, "nginx.conf")
        # Started as root, nginx's worker would run as nobody and could not
        # reach the socket in this private directory.
        user = "user root;" if os.geteuid() == 0 else ""
        Path(conf).write_text(_NGINX_CONF.format(user=user, tmp=tmp, sock=sock, port=port))
        app = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "chunkwire.bench:direct_app", "--uds", sock,
             "--log-level", "error", "--no-access-log"],
            stdout=subprocess.DEVNULL,
            env=_reference_env(),
        )
        procs = {"uvicorn": app}
        try:
            _wait_ready(_unix_ready(sock), app, "uvicorn")
            proxy = subprocess.Popen(
                [nginx, "-c", conf, "-p", tmp], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs["nginx"] = proxy
            _wait_ready(_tcp_ready(port), proxy, "nginx")
            yield Target(f"http://127.0.0.1:{port}/direct", procs)
        finally:
            for proc in reversed(list(procs.values())):
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()


def nginx_available() -> bool:
    return bool(shutil.which("nginx") or os.path.exists("/usr/sbin/nginx"))


# -- clients (raw sockets: cheap, so the server side is what is measured) ----


def _split(url: str) -> tuple[tuple[str, int], str]:
    rest = url.removeprefix("http://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    return (host, int(port)), "/" + path


def _read_head(sock: socket.socket, buf: bytearray) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            raise RuntimeError(f"connection closed in the response head: {data[:200]!r}")
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected response: {head[:200]!r}")
    return head, rest


def _read_to_eof(sock: socket.socket, buf: bytearray) -> int:
    total = 0
    view = memoryview(buf)
    while n := sock.recv_into(view):
        total += n
    return total


def upload(url: str, size: int) -> float:
    """Seconds to POST ``size`` bytes and read the answer."""
    address, path = _split(url)
    block = memoryview(_BLOCK)
    with socket.create_connection(address) as sock:
        start = time.perf_counter()
        sock.sendall(
            f"POST {path}/upload HTTP/1.1\r\nHost: b\r\nContent-Length: {size}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        left = size
        while left > 0:
            n = min(left, len(block))
            sock.sendall(block[:n])
            left -= n
        buf = bytearray(MIB)
        _, rest = _read_head(sock, buf)
        body = rest + bytes(buf[: _read_to_eof(sock, buf)])
        elapsed = time.perf_counter() - start
    if int(body) != size:
        raise RuntimeError(f"upload counted {body!r}, sent {size}")
    return elapsed


def download(url: str, size: int) -> float:
    address, path = _split(url)
    with socket.create_connection(address) as sock:
        start = time.perf_counter()
        sock.sendall(f"GET {path}/download?size={size} HTTP/1.1\r\nHost: b\r\n\r\n".encode())
        _read_response(sock, size, "download")
        return time.perf_counter() - start


def _read_response(sock: socket.socket, size: int, what: str) -> None:
    """Read a response head and ``size`` body bytes, discarding them."""
    buf = bytearray(MIB)
    _, rest = _read_head(sock, buf)
    got = len(rest)
    view = memoryview(buf)
    while got < size:
        n = sock.recv_into(view)
        if not n:
            raise RuntimeError(f"{what} ended at {got} of {size}")
        got += n


def echo(url: str, size: int) -> float:
    """Seconds to send ``size`` bytes and read them back, both at once (two threads)."""
    import threading

    address, path = _split(url)
    block = memoryview(_BLOCK)
    failure: list[BaseException] = []
    with socket.create_connection(address) as sock:

        def sender() -> None:
            try:
                left = size
                while left > 0:
                    n = min(left, len(block))
                    sock.sendall(block[:n])
                    left -= n
            except BaseException as exc:  # reported below
                failure.append(exc)

        start = time.perf_counter()
        sock.sendall(
            f"POST {path}/echo HTTP/1.1\r\nHost: b\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        thread = threading.Thread(target=sender, daemon=True)
        thread.start()
        _read_response(sock, size, "echo")
        elapsed = time.perf_counter() - start
        thread.join(30)
    if failure:
        raise failure[0]
    return elapsed


def slow_client(url: str, rate: int, seconds: float) -> float:
    """Read a 1 GiB download at ``rate`` bytes/s for ``seconds``; returns bytes/s achieved."""
    address, path = _split(url)
    with socket.socket() as sock:
        sock.connect(address)
        sock.sendall(f"GET {path}/download?size={1 << 30} HTTP/1.1\r\nHost: b\r\n\r\n".encode())
        buf = bytearray(64 * 1024)
        _, rest = _read_head(sock, buf)
        got = len(rest)
        view = memoryview(buf)
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            if got > elapsed * rate:
                time.sleep(min(0.01, got / rate - elapsed))
                continue
            n = sock.recv_into(view)
            if not n:
                raise RuntimeError("download ended early")
            got += n
        return got / seconds


def tiny_writes(url: str) -> float:
    address, path = _split(url)
    with socket.create_connection(address) as sock:
        start = time.perf_counter()
        sock.sendall(f"GET {path}/tiny HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
        buf = bytearray(MIB)
        _read_head(sock, buf)
        _read_to_eof(sock, buf)
        return time.perf_counter() - start


def first_byte(url: str) -> float:
    address, path = _split(url)
    with socket.create_connection(address) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        sock.sendall(f"GET {path}/ttfb HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            data += sock.recv(65536)
            _, sep, rest = data.partition(b"\r\n\r\n")
            # chunked: "1\r\nx\r\n"
            if sep and b"x" in rest:
                elapsed = time.perf_counter() - start
                break
        _read_to_eof(sock, bytearray(65536))
        return elapsed


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile: the smallest value with ``fraction`` of all at or below it."""
    ordered = sorted(values)
    rank = max(1, math.ceil(round(len(ordered) * fraction, 9)))
    return ordered[rank - 1]


def first_byte_p99(url: str, requests: int) -> float:
    """The 99th percentile of ``first_byte`` over ``requests`` sequential requests."""
    first_byte(url)  # warm-up: connections and channel
    return percentile([first_byte(url) for _ in range(requests)], 0.99)


def small_rps_beside_stalled_streams(url: str, concurrency: int, seconds: float,
                                     rounds: int) -> tuple[float, float]:
    """1 KiB requests/s undisturbed, then beside two stalled 1 GiB transfers.

    A handler that never reads holds a 1 GiB upload, and a client that
    never reads holds a 1 GiB download, both through the same gateway (on
    mux: the same connection). Returns (undisturbed, disturbed).
    """
    import threading

    address, path = _split(url)
    requests_per_second(url, concurrency, 1)  # warm-up
    alone = statistics.median(requests_per_second(url, concurrency, seconds)[0]
                              for _ in range(rounds))
    upload_sock = socket.create_connection(address)
    upload_sock.sendall(f"POST {path}/stall HTTP/1.1\r\nHost: b\r\n"
                        f"Content-Length: {1 << 30}\r\n\r\n".encode())

    def push() -> None:
        try:
            for _ in range(1024):
                upload_sock.sendall(_BLOCK)
        except OSError:
            pass

    threading.Thread(target=push, daemon=True).start()
    download_sock = socket.create_connection(address)
    download_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    download_sock.sendall(f"GET {path}/download?size={1 << 30} HTTP/1.1\r\nHost: b\r\n\r\n"
                          .encode())
    try:
        time.sleep(2)  # both stall: every buffer on their way fills
        beside = statistics.median(requests_per_second(url, concurrency, seconds)[0]
                                   for _ in range(rounds))
    finally:
        upload_sock.close()
        download_sock.close()
    return alone, beside


_WRK_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")


def requests_per_second(url: str, concurrency: int, seconds: float) -> tuple[float, str]:
    wrk = shutil.which("wrk")
    if wrk:
        threads = min(concurrency, 2)
        out = subprocess.run(
            [wrk, f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s",
             url + "/small"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        match = _WRK_RPS.search(out)
        if not match:
            raise RuntimeError(f"wrk output not understood: {out}")
        if "Non-2xx" in out or "Socket errors" in out:
            raise RuntimeError(f"wrk saw errors: {out}")
        return float(match.group(1)), "wrk"
    return asyncio.run(_load_loop(url + "/small", concurrency, seconds)), "asyncio loop"


async def _load_loop(url: str, concurrency: int, seconds: float) -> float:
    address, path = _split(url)
    request = f"GET {path} HTTP/1.1\r\nHost: b\r\n\r\n".encode()
    deadline = time.perf_counter() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(*address)
        try:
            while time.perf_counter() < deadline:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"content-length: (\d+)", head.lower()).group(1))
                await reader.readexactly(length)
                done += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


# -- scenarios ---------------------------------------------------------------


def _median(fn: Callable[[], float], rounds: int) -> float:
    return statistics.median(fn() for _ in range(rounds))


def load_average() -> float:
    """The 1-minute load average (a shared machine: numbers go with it)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


class Row:
    """One scenario's figures; ``load`` is the load average when they were taken."""

    def __init__(self, scenario: str, cw: float, ref: float, unit: str, ratio: float,
                 note: str = "") -> None:
        self.scenario = scenario
        self.cw = cw
        self.ref = ref
        self.unit = unit
        self.ratio = ratio
        self.note = note
        self.load = load_average()

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "chunkwire": self.cw,
            "reference": self.ref,
            "unit": self.unit,
            "ratio": self.ratio,
            "note": self.note,
            "load": self.load,
        }


def run_scenarios(ns: argparse.Namespace, log: Callable[[str], None]) -> list[Row]:
    """Every scenario on each transport of ``ns.transport``, plus the nginx peer.

    Rows are labelled with the transport (``lane``, ``mux``, ``call``) or ``nginx``;
    ratios are always against direct uvicorn measured in the same run.
    """
    size: int = ns.size
    rounds: int = ns.rounds
    transports: list[str] = ns.transport
    peer = not ns.no_nginx and nginx_available()
    rows: list[Row] = []
    mb = size / 1e6
    rss: dict[str, float] = {}

    def each(scenario: str, chunk_size: int, measure: Callable[[Target], float],
             track_rss: bool = False) -> tuple[dict[str, float], float]:
        """(value per transport, and per "nginx" if measured), direct reference."""
        values: dict[str, float] = {}
        for transport in transports:
            log(f"  {scenario} ({transport}) ...")
            with chunkwire_target(chunk_size, transport) as target:
                values[transport] = _median(lambda: measure(target), rounds)
                if track_rss:
                    for name, value in target.peak_rss().items():
                        key = f"{name}@{chunk_size}/{transport}"
                        rss[key] = max(rss.get(key, 0), value)
        log(f"  {scenario} (direct) ...")
        with direct_target() as target:
            ref = _median(lambda: measure(target), rounds)
            if track_rss:
                rss["uvicorn"] = max(rss.get("uvicorn", 0), target.peak_rss()["uvicorn"])
        return values, ref

    def peer_value(scenario: str, measure: Callable[[Target], float]) -> float | None:
        if not peer:
            return None
        log(f"  {scenario} (nginx) ...")
        with nginx_target() as target:
            return _median(lambda: measure(target), rounds)

    def add(scenario: str, values: dict[str, float], ref: float, unit: str,
            ratio: Callable[[float, float], float], note: str = "") -> None:
        for transport, value in values.items():
            rows.append(Row(f"{scenario} ({transport})", value, ref, unit, ratio(value, ref),
                            note))

    human = f"{size / (1 << 30):g} GiB" if size >= 1 << 30 else f"{size / MIB:g} MiB"
    faster = lambda value, ref: value / ref  # noqa: E731 - higher is better
    for chunk_size in ns.chunk_size:
        tag = f"{chunk_size // 1024} KiB chunks"
        for what, fn in (("upload", upload), ("download", download)):
            scenario = f"{what} {human} [{tag}]"
            secs, ref = each(scenario, chunk_size, lambda t, fn=fn: fn(t.url, size),
                             track_rss=True)
            nginx = peer_value(scenario, lambda t, fn=fn: fn(t.url, size))
            if nginx is not None:
                secs["nginx"] = nginx
            add(scenario, {k: mb / v for k, v in secs.items()}, mb / ref, "MB/s", faster)

    chunk_size = ns.chunk_size[0]
    tag = f"{chunk_size // 1024} KiB chunks"

    for concurrency in (1, 64):
        tool = ""

        def rps(t: Target, c: int = concurrency) -> float:
            nonlocal tool
            value, tool = requests_per_second(t.url, c, ns.seconds)
            return value

        def warm_rps(t: Target) -> float:
            rps(t)  # warm-up: connections and channel
            return statistics.median(rps(t) for _ in range(rounds))

        scenario = f"1 KiB requests/s, concurrency {concurrency}"
        values: dict[str, float] = {}
        for transport in transports:
            log(f"  {scenario} ({transport}) ...")
            with chunkwire_target(chunk_size, transport) as target:
                values[transport] = warm_rps(target)
        log(f"  {scenario} (direct) ...")
        with direct_target() as target:
            ref = warm_rps(target)
        if peer:
            log(f"  {scenario} (nginx) ...")
            with nginx_target() as target:
                values["nginx"] = warm_rps(target)
        add(scenario, values, ref, "req/s", faster, f"load: {tool}")

    for concurrency in (1, 64):
        scenario = f"1 KiB requests/s beside a stalled upload and download, c={concurrency}"
        for transport in transports:
            log(f"  {scenario} ({transport}) ...")
            with chunkwire_target(chunk_size, transport) as target:
                alone, beside = small_rps_beside_stalled_streams(
                    target.url, concurrency, ns.seconds, rounds)
            rows.append(Row(f"{scenario} ({transport})", beside, alone, "req/s", beside / alone,
                            "reference: the same, undisturbed (head-of-line check)"))

    if ns.quick:
        _rss_rows(rows, rss, ns.chunk_size, transports)
        return rows

    echo_rss: dict[str, float] = {}

    def echo_round(t: Target) -> float:
        elapsed = echo(t.url, size)
        for name, value in t.peak_rss().items():
            echo_rss[name] = max(echo_rss.get(name, 0.0), value)
        return elapsed

    scenario = f"echo {human} via pipe_from [{tag}]"
    secs, ref = each(scenario, chunk_size, echo_round)
    add(scenario, {k: mb / v for k, v in secs.items()}, mb / ref, "MB/s each way", faster,
        "reference: receive/send echo app")

    slow_rate = 2 * MIB
    slow_rss: dict[str, float] = {}

    def slow_round(t: Target) -> float:
        achieved = slow_client(t.url, slow_rate, ns.slow_seconds)
        for name, value in t.peak_rss().items():
            slow_rss[name] = max(slow_rss.get(name, 0.0), value)
        return achieved

    scenario = f"slow client 2 MiB/s on a 1 GiB download, {ns.slow_seconds:g} s"
    values = {}
    for transport in transports:
        log(f"  slow client ({transport}) ...")
        with chunkwire_target(chunk_size, transport) as target:
            values[transport] = slow_round(target) / MIB
    with direct_target() as target:
        ref = slow_round(target) / MIB
    add(scenario, values, ref, "MiB/s", faster, "the client's pace")

    def tiny_round(t: Target) -> float:
        # A warm-up first, as for every other row: the first request of a
        # fresh gateway opens its plugin connections (and maps a lane's ring).
        tiny_writes(t.url)
        return tiny_writes(t.url)

    scenario = "100,000 writes of 32 B, flush at end"
    secs, ref = each(scenario, chunk_size, tiny_round)
    add(scenario, {k: v * 1e3 for k, v in secs.items()}, ref * 1e3, "ms",
        lambda value, ref: ref / value, "ratio = speedup over direct sends")

    # One run of 1,000 requests per target (not a median of rounds): the
    # 99th percentile needs them all in one sample.
    scenario = "time to first flushed byte"
    values = {}
    for transport in transports:
        log(f"  {scenario} ({transport}) ...")
        with chunkwire_target(chunk_size, transport) as target:
            values[transport] = first_byte_p99(target.url, _TTFB_REQUESTS)
    log(f"  {scenario} (direct) ...")
    with direct_target() as target:
        ref = first_byte_p99(target.url, _TTFB_REQUESTS)
    add(scenario, {k: v * 1e3 for k, v in values.items()}, ref * 1e3, "ms",
        lambda value, ref: value / ref,
        f"p99 of {_TTFB_REQUESTS:,} requests; ratio = chunkwire / direct (lower is better)")

    _rss_rows(rows, rss, ns.chunk_size, transports)
    return rows


def _rss_rows(rows: list[Row], rss: dict[str, float], chunk_sizes: list[int],
              transports: list[str]) -> None:
    ref = rss.get("uvicorn", float("nan"))
    for chunk_size in chunk_sizes:
        for transport in transports:
            for name in ("gateway", "plugin"):
                value = rss.get(f"{name}@{chunk_size}/{transport}", float("nan"))
                rows.append(Row(f"peak RSS {name} [{chunk_size // 1024} KiB chunks] ({transport})",
                                value, ref, "MiB", value / ref,
                                "upload+download; reference: direct uvicorn"))


def format_table(rows: list[Row]) -> str:
    header = ("scenario", "chunkwire", "reference", "load", "ratio")
    body = [
        (r.scenario, f"{r.cw:,.1f} {r.unit}", f"{r.ref:,.1f} {r.unit}", f"{r.load:.1f}",
         f"{r.ratio:.2f}x" + (f"  ({r.note})" if r.note else ""))
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(4)]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(header[:4], widths, strict=True)) + "  " + header[4],
        "  ".join("-" * w for w in widths) + "  -----",
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line[:4], widths, strict=True)) + "  " + line[4]
              for line in body]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=parse_size, default=1 << 30,
                        help="bytes per upload/download (default 1g)")
    parser.add_argument("--chunk-size", type=parse_size, action="append", default=None,
                        help="gateway/plugin chunk size; repeatable (default: 64k and 1m)")
    parser.add_argument("--rounds", type=int, default=3, help="median of this many runs")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each load run")
    parser.add_argument("--slow-seconds", type=float, default=10.0,
                        help="length of the slow-client (2 MiB/s) run")
    parser.add_argument("--json", type=Path, default=None, help="save raw numbers here")
    parser.add_argument("--transport", action="append", choices=("lane", "mux", "call"),
                        default=None,
                        help="gateway to plugin transport; repeatable (default: lane, mux, call)")
    parser.add_argument("--no-nginx", action="store_true",
                        help="skip the nginx peer rows (skipped anyway when nginx is missing)")
    parser.add_argument("--quick", action="store_true",
                        help="only transfers, small requests and peak RSS")
    parser.add_argument(
        "--tuned-reference", action="store_true",
        help="give the direct uvicorn reference the malloc thresholds chunkwire's CLI uses",
    )
    from .bench_events import add_event_arguments

    add_event_arguments(parser)


def run_bench(ns: argparse.Namespace) -> int:
    global _TUNED_REFERENCE
    _TUNED_REFERENCE = ns.tuned_reference
    if ns.chunk_size is None:
        ns.chunk_size = [65536, 1 << 20]
    if ns.transport is None:
        ns.transport = ["lane", "mux", "call"]

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    try:
        import httptools  # noqa: F401

        http = "httptools"
    except ImportError:
        http = "h11"
    if not ns.no_nginx and not nginx_available():
        log("nginx is not installed: no peer rows (apt-get install nginx)")
    log(f"chunkwire bench: size={ns.size} chunk sizes={ns.chunk_size} rounds={ns.rounds} "
        f"transports={ns.transport} "
        f"(uvicorn with {loop} + {http}; reference malloc "
        f"{'tuned like chunkwire' if ns.tuned_reference else 'glibc defaults'})")
    from .bench_asgi import asgi_rows
    from .bench_events import run_event_scenarios

    rows = [] if ns.events_only else run_scenarios(ns, log) + asgi_rows(ns, log)
    rows += run_event_scenarios(ns, log)
    print(format_table(rows))
    if ns.json is not None:
        ns.json.write_text(json.dumps({
            "size": ns.size,
            "chunk_sizes": ns.chunk_size,
            "rounds": ns.rounds,
            "loop": loop,
            "http": http,
            "tuned_reference": ns.tuned_reference,
            "transports": ns.transport,
            "rows": [r.as_dict() for r in rows],
        }, indent=2))
    return 0
