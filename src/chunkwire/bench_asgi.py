"""``chunkwire bench`` rows for ASGI apps: one FastAPI app, served directly by
uvicorn and as a chunkwire plugin (``chunkwire plugin`` + ``chunkwire gateway``).

Needs FastAPI (the ``dev`` extra); the rows are left out without it.
``python -m chunkwire.bench_asgi --size 256m`` runs these rows alone. The
WebSocket rows echo messages through the app's ``/b/ws`` route with the
``websockets`` client (permessage-deflate off on both sides).
"""

# No ``from __future__ import annotations`` here: FastAPI evaluates the
# endpoints' annotations, and ``Request`` is only imported inside make_app.

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .bench import (
    _BLOCK,
    MIB,
    Row,
    Target,
    _env,
    _free_port,
    _median,
    _reference_env,
    _stop,
    _tcp_ready,
    _unix_ready,
    _wait_ready,
    download,
    requests_per_second,
    upload,
)

_SMALL = b"s" * 1024
APP_SPEC = "chunkwire.bench_asgi:make_app"
WS_SMALL = 1024
WS_LARGE = 256 * 1024


def make_app() -> Any:
    """The FastAPI app both sides serve: ``/b/upload``, ``/b/download?size=``, ``/b/small``,
    and the WebSocket echo ``/b/ws``."""
    from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
    from fastapi.responses import PlainTextResponse, Response, StreamingResponse

    app = FastAPI()

    @app.post("/b/upload")
    async def upload_route(request: Request) -> Response:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
        return PlainTextResponse(str(total))

    @app.get("/b/download")
    async def download_route(size: int) -> Response:
        async def blocks():  # type: ignore[no-untyped-def]
            view = memoryview(_BLOCK)
            left = size
            while left > 0:
                piece = view[: min(left, len(view))]
                left -= len(piece)
                yield piece

        return StreamingResponse(
            blocks(),
            media_type="application/octet-stream",
            headers={"Content-Length": str(size)},
        )

    @app.get("/b/small")
    async def small_route() -> Response:
        return Response(_SMALL, media_type="application/octet-stream")

    @app.websocket("/b/ws")
    async def ws_echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_bytes(await websocket.receive_bytes())
        except WebSocketDisconnect:
            pass

    return app


def available() -> bool:
    try:
        import fastapi  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def plugin_target(chunk_size: int, transport: str = "auto") -> Iterator[Target]:
    env = _env(chunk_size)
    with tempfile.TemporaryDirectory(prefix="chunkwire-bench-asgi-") as tmp:
        sock = os.path.join(tmp, "fastapi.sock")
        port = _free_port()
        py = [sys.executable, "-m", "chunkwire"]
        quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "env": env}
        plugin = subprocess.Popen([*py, "plugin", APP_SPEC, "--listen", f"unix:{sock}"], **quiet)
        procs = {"plugin": plugin}
        try:
            _wait_ready(_unix_ready(sock), plugin, "FastAPI plugin")
            gateway = subprocess.Popen(
                [*py, "gateway", "--plugin", f"fastapi=unix:{sock}", "--port", str(port),
                 "--chunk-size", str(chunk_size), "--log-level", "error",
                 "--transport", transport],
                **quiet,
            )
            procs["gateway"] = gateway
            _wait_ready(_tcp_ready(port), gateway, "gateway")
            yield Target(f"http://127.0.0.1:{port}/plugins/fastapi/b", procs)
        finally:
            for proc in reversed(list(procs.values())):
                _stop(proc)


@contextmanager
def uvicorn_target() -> Iterator[Target]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", APP_SPEC, "--factory", "--port", str(port),
         "--log-level", "error", "--no-access-log"],
        stdout=subprocess.DEVNULL,
        env=_reference_env(),
    )
    try:
        _wait_ready(_tcp_ready(port), proc, "uvicorn (FastAPI)")
        yield Target(f"http://127.0.0.1:{port}/b", {"uvicorn": proc})
    finally:
        _stop(proc)


def asgi_rows(ns: argparse.Namespace, log: Callable[[str], None]) -> list[Row]:
    """The same FastAPI app as a plugin vs directly under uvicorn."""
    if not available():
        log("  FastAPI rows skipped: fastapi is not installed (pip install fastapi)")
        return []
    size: int = ns.size
    rounds: int = ns.rounds
    chunk_size: int = ns.chunk_size[0]
    mb = size / 1e6
    human = f"{size / (1 << 30):g} GiB" if size >= 1 << 30 else f"{size / MIB:g} MiB"
    rows: list[Row] = []
    rss: dict[str, float] = {}

    def measure(target: Target, fn: Callable[[Target], float]) -> float:
        value = _median(lambda: fn(target), rounds)
        for name, peak in target.peak_rss().items():
            rss[name] = max(rss.get(name, 0.0), peak)
        return value

    log(f"  FastAPI upload/download {human} ...")
    with plugin_target(chunk_size) as target:
        cw_up = measure(target, lambda t: upload(t.url, size))
        cw_down = measure(target, lambda t: download(t.url, size))
    with uvicorn_target() as target:
        ref_up = measure(target, lambda t: upload(t.url, size))
        ref_down = measure(target, lambda t: download(t.url, size))
    note = "reference: the same FastAPI app under uvicorn"
    rows.append(Row(f"FastAPI upload {human}", mb / cw_up, mb / ref_up, "MB/s",
                    ref_up / cw_up, note))
    rows.append(Row(f"FastAPI download {human}", mb / cw_down, mb / ref_down, "MB/s",
                    ref_down / cw_down, note))
    for name in ("gateway", "plugin"):
        value = rss.get(name, float("nan"))
        rows.append(Row(f"  FastAPI peak RSS {name}", value, rss.get("uvicorn", float("nan")),
                        "MiB", value / rss.get("uvicorn", float("nan")), note))

    for concurrency in (1, 64):
        log(f"  FastAPI small requests c={concurrency} ...")
        tool = ""

        def rps(t: Target, c: int = concurrency) -> float:
            nonlocal tool
            value, tool = requests_per_second(t.url, c, ns.seconds)
            return value

        with plugin_target(chunk_size) as target:
            rps(target)  # warm-up
            cw = _median(lambda: rps(target), rounds)
        with uvicorn_target() as target:
            rps(target)
            ref = _median(lambda: rps(target), rounds)
        rows.append(Row(f"FastAPI 1 KiB requests/s, concurrency {concurrency}", cw, ref,
                        "req/s", cw / ref, f"load: {tool}"))
    rows += websocket_rows(ns, log)
    return rows


def _ws_url(target: Target) -> str:
    return target.url.replace("http://", "ws://", 1) + "/ws"


def ws_round_trips(url: str, seconds: float) -> float:
    """1 KiB messages echoed one at a time for ``seconds``: round trips per second."""
    return _ws_round_trips(url, seconds)[0]


def _ws_round_trips(url: str, seconds: float) -> tuple[float, int]:
    from websockets.asyncio.client import connect

    async def run() -> tuple[float, int]:
        payload = os.urandom(WS_SMALL)
        async with connect(url, compression=None, max_size=None) as ws:
            for _ in range(50):  # warm-up
                await ws.send(payload)
                await ws.recv()
            count = 0
            start = time.perf_counter()
            end = start + seconds
            while time.perf_counter() < end:
                await ws.send(payload)
                await ws.recv()
                count += 1
            return count / (time.perf_counter() - start), count

    return asyncio.run(run())


def ws_echo_seconds(url: str, total: int) -> float:
    """``total`` bytes of 256 KiB messages sent while the echoes are read: seconds."""
    from websockets.asyncio.client import connect

    async def run() -> float:
        payload = os.urandom(WS_LARGE)
        count = max(1, total // WS_LARGE)
        async with connect(url, compression=None, max_size=None) as ws:

            async def send() -> None:
                for _ in range(count):
                    await ws.send(payload)

            start = time.perf_counter()
            sender = asyncio.ensure_future(send())
            received = 0
            while received < count * WS_LARGE:
                received += len(await ws.recv())
            await sender
            return time.perf_counter() - start

    return asyncio.run(run())


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def websocket_rows(ns: argparse.Namespace, log: Callable[[str], None]) -> list[Row]:
    """A FastAPI WebSocket echo as a plugin, on each transport, vs directly under uvicorn.

    The round-trip rows also say the CPU time each process spent per round
    trip (from /proc, so the machine's load does not inflate it).
    """
    rounds: int = ns.rounds
    chunk_size: int = ns.chunk_size[0]
    total = min(ns.size, 64 * MIB)
    mb = max(1, total // WS_LARGE) * WS_LARGE / 1e6
    transports = getattr(ns, "transport", None) or ["lane", "mux", "call"]
    targets = [(t, lambda t=t: plugin_target(chunk_size, t)) for t in transports]
    results: dict[str, tuple[float, float, dict[str, float]]] = {}
    for name, opened in [*targets, ("uvicorn", uvicorn_target)]:
        log(f"  FastAPI WebSocket echo ({name}) ...")
        with opened() as target:
            url = _ws_url(target)
            ws_round_trips(url, 0.5)  # warm-up
            before = {p: _cpu_seconds(proc.pid) for p, proc in target.procs.items()}
            runs = [_ws_round_trips(url, ns.seconds) for _ in range(rounds)]
            count = sum(n for _, n in runs)
            cpu = {
                p: (_cpu_seconds(proc.pid) - before[p]) / count * 1e6
                for p, proc in target.procs.items()
            }
            rtt = sorted(rate for rate, _ in runs)[len(runs) // 2]
            seconds = _median(lambda url=url: ws_echo_seconds(url, total), rounds)
        results[name] = (rtt, mb / seconds, cpu)
    ref_rtt, ref_mbs, ref_cpu = results["uvicorn"]
    note = "reference: the same FastAPI app under uvicorn; one session"
    rows = []
    for transport in transports:
        rtt, mbs, cpu = results[transport]
        per = ", ".join(f"{p} {us:.0f}" for p, us in cpu.items())
        cpu_note = f"CPU us per round trip: {per} (uvicorn {ref_cpu['uvicorn']:.0f})"
        rows += [
            Row(f"FastAPI WebSocket 1 KiB echo round trips/s ({transport})", rtt, ref_rtt,
                "msg/s", rtt / ref_rtt, f"{note}; {cpu_note}"),
            Row(f"FastAPI WebSocket echo, 256 KiB messages, {total / MIB:g} MiB ({transport})",
                mbs, ref_mbs, "MB/s", mbs / ref_mbs, note),
        ]
    return rows


def main(argv: list[str] | None = None) -> int:
    from .bench import add_arguments, format_table

    parser = argparse.ArgumentParser(prog="python -m chunkwire.bench_asgi")
    add_arguments(parser)
    ns = parser.parse_args(argv)
    if ns.chunk_size is None:
        ns.chunk_size = [65536]

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    print(format_table(asgi_rows(ns, log)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
