"""Event-stream rows of ``chunkwire bench``: one publisher, many SSE subscribers.

Processes: the gateway(s) under test (``chunkwire gateway``, started fresh),
a subscriber process holding every SSE connection (asyncio protocols that
count events; every ``--event-sample``-th connection also parses the publish
time stamped in each event's data), and this process as the publisher.
Reference, in the same run: a plain Starlette app with sse-starlette and one
asyncio.Queue per subscriber (what one would write by hand), fed by HTTP
POSTs of event batches over a keep-alive connection.

- delivered events/s: ``--event-count`` events published as fast as
  possible; every subscriber must receive all of them; deliveries divided
  by the time from the first publish to the last delivery.
- publish-to-receive p50/p99: ``--event-rate`` events/s for
  ``--event-seconds``; clocks are this machine's.

Like bench.py, only the standard library at the top: the reference app and
the subscriber process import what they need themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from .bench import Row, _env, _free_port, _stop, _tcp_ready, _unix_ready, _wait_ready

TOPIC = "bench"
_TIMESTAMP = re.compile(rb'"data": ?"(\d+)"')


def add_event_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("event streams")
    group.add_argument("--events-only", action="store_true",
                       help="run only the event-stream rows")
    group.add_argument("--event-subscribers", type=int, default=1000, metavar="N")
    group.add_argument("--event-count", type=int, default=300, metavar="N",
                       help="events published as fast as possible per throughput round")
    group.add_argument("--event-rate", type=float, default=100.0, metavar="R",
                       help="events/s for the latency rounds")
    group.add_argument("--event-seconds", type=float, default=5.0, metavar="S",
                       help="length of a latency round")
    group.add_argument("--event-sample", type=int, default=10, metavar="K",
                       help="every K-th subscriber measures latency")


# -- the reference app -------------------------------------------------------------


def reference_app() -> Any:
    """Starlette + sse-starlette + asyncio.Queue fan-out (``uvicorn --factory``)."""
    from sse_starlette.sse import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    subscribers: dict[str, set[asyncio.Queue]] = {}
    seqs: dict[str, int] = {}

    async def publish(request: Request) -> PlainTextResponse:
        events = json.loads(await request.body())
        now = time.time_ns() // 1_000_000
        for item in events:
            topic = item["topic"]
            seq = seqs[topic] = seqs.get(topic, 0) + 1
            payload = json.dumps({**item, "seq": seq, "ts": now})
            message = {"event": item["type"], "id": str(seq), "data": payload}
            for queue in subscribers.get(topic, ()):
                queue.put_nowait(message)
        return PlainTextResponse(str(len(events)))

    async def stream(request: Request) -> EventSourceResponse:
        topic = request.path_params["topic"]
        queue: asyncio.Queue = asyncio.Queue()
        subscribers.setdefault(topic, set()).add(queue)

        async def events() -> AsyncIterator[dict]:
            try:
                while True:
                    yield await queue.get()
            finally:
                subscribers[topic].discard(queue)

        return EventSourceResponse(events(), sep="\n", ping=3600)

    return Starlette(routes=[
        Route("/publish", publish, methods=["POST"]),
        Route("/events/{topic}", stream),
    ])


# -- targets ---------------------------------------------------------------------


class Target:
    def __init__(self, name: str, subscribe_url: str, publisher: Callable[[], Any],
                 procs: list[subprocess.Popen]) -> None:
        self.name = name
        self.subscribe_url = subscribe_url  # http://host:port
        self.publisher = publisher  # an async context manager factory
        self.procs = procs


def _popen(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, env=env)


@contextmanager
def chunkwire_target(nats: str | None = None) -> Iterator[Target]:
    env = _env(65536)
    py = [sys.executable, "-m", "chunkwire"]
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="chunkwire-bench-ev-") as tmp:
        try:
            plugin_sock = os.path.join(tmp, "plugin.sock")
            procs.append(_popen([*py, "plugin", "chunkwire.bench:bench_plugin",
                                 "--listen", f"unix:{plugin_sock}"], env))
            _wait_ready(_unix_ready(plugin_sock), procs[-1], "plugin")
            common = ["--plugin", f"bench=unix:{plugin_sock}", "--log-level", "error",
                      "--sse-keepalive", "3600", "--sse-timeout", "0"]
            if nats:
                common += ["--nats", nats]
            ports = []
            events_sock = os.path.join(tmp, "events.sock")
            for index in range(2 if nats else 1):
                port = _free_port()
                extra = ["--events-listen", f"unix:{events_sock}"] if index == 0 else []
                procs.append(_popen([*py, "gateway", "--port", str(port), *common, *extra], env))
                _wait_ready(_tcp_ready(port), procs[-1], "gateway")
                ports.append(port)
            _wait_ready(_unix_ready(events_sock), procs[1], "events socket")

            def publisher() -> Any:
                return _CwPublisher(f"unix:{events_sock}")

            # With NATS, the publisher uses the first gateway, subscribers the second.
            yield Target("chunkwire", f"http://127.0.0.1:{ports[-1]}", publisher, procs)
        finally:
            for proc in reversed(procs):
                _stop(proc)


@contextmanager
def reference_target() -> Iterator[Target]:
    port = _free_port()
    proc = _popen([sys.executable, "-m", "uvicorn", "--factory",
                   "chunkwire.bench_events:reference_app", "--port", str(port),
                   "--log-level", "error", "--no-access-log"], _env(65536))
    try:
        _wait_ready(_tcp_ready(port), proc, "reference app")
        yield Target("reference", f"http://127.0.0.1:{port}",
                     lambda: _RefPublisher(port), [proc])
    finally:
        _stop(proc)


@contextmanager
def nats_server() -> Iterator[str | None]:
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not os.path.exists(binary):
        yield None
        return
    port = _free_port()
    proc = subprocess.Popen([binary, "-a", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(_tcp_ready(port), proc, "nats-server")
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


class _CwPublisher:
    def __init__(self, address: str) -> None:
        from .events import Publisher

        self._publisher = Publisher(address)

    async def __aenter__(self) -> _CwPublisher:
        await self._publisher.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._publisher.close()

    async def send(self, datas: list[str]) -> None:
        for data in datas:
            await self._publisher.publish(TOPIC, "tick", data)

    async def flush(self) -> None:
        await self._publisher.flush()


class _RefPublisher:
    """POSTs JSON batches over one keep-alive HTTP/1.1 connection."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> _RefPublisher:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self._port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._writer is not None
        self._writer.close()

    async def send(self, datas: list[str]) -> None:
        assert self._reader is not None and self._writer is not None
        for start in range(0, len(datas), 256):
            body = json.dumps([{"topic": TOPIC, "type": "tick", "data": d}
                               for d in datas[start:start + 256]]).encode()
            self._writer.write(b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: "
                               b"application/json\r\nContent-Length: %d\r\n\r\n%s"
                               % (len(body), body))
            head = await self._reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
            await self._reader.readexactly(length)

    async def flush(self) -> None:
        pass


# -- one measurement ------------------------------------------------------------------


def _subscribers(target: Target, ns: argparse.Namespace, count: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "chunkwire.bench_events", "subscribe", target.subscribe_url,
         str(ns.event_subscribers), str(count), str(ns.event_sample)],
        stdout=subprocess.PIPE, env=_env(65536), text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"subscribers did not connect: {line!r}")
    return proc


def _result(proc: subprocess.Popen) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.wait(30)
    if not line:
        raise RuntimeError("the subscriber process gave no result")
    return json.loads(line)


def throughput(target: Target, ns: argparse.Namespace) -> float:
    """Delivered events/s with events published as fast as possible."""
    proc = _subscribers(target, ns, ns.event_count)

    async def publish() -> int:
        async with target.publisher() as pub:
            started = time.time_ns()
            await pub.send([str(time.time_ns()) for _ in range(ns.event_count)])
            await pub.flush()
            return started

    started = asyncio.run(publish())
    result = _result(proc)
    if result["incomplete"]:
        raise RuntimeError(f"{result['incomplete']} subscribers missed events")
    seconds = (result["last_ns"] - started) / 1e9
    return ns.event_count * ns.event_subscribers / seconds


def latency(target: Target, ns: argparse.Namespace) -> tuple[float, float]:
    """p50 and p99 publish-to-receive (ms) at ``--event-rate`` events/s."""
    count = int(ns.event_rate * ns.event_seconds)
    proc = _subscribers(target, ns, count)

    async def publish() -> None:
        loop = asyncio.get_running_loop()
        async with target.publisher() as pub:
            start = loop.time()
            for i in range(count):
                delay = start + i / ns.event_rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await pub.send([str(time.time_ns())])
            await pub.flush()

    asyncio.run(publish())
    result = _result(proc)
    lat = sorted(result["latencies_ms"])
    if result["incomplete"] or not lat:
        raise RuntimeError(f"{result['incomplete']} subscribers missed events")
    return lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]


def run_event_scenarios(ns: argparse.Namespace, log: Callable[[str], None]) -> list[Row]:
    rounds = max(1, ns.rounds)
    subs = ns.event_subscribers
    measured: dict[str, dict[str, list[float]]] = {}

    def measure(name: str, target_cm: Any) -> None:
        data = measured.setdefault(name, {"rate": [], "p50": [], "p99": []})
        with target_cm as target:
            for _ in range(rounds):
                data["rate"].append(throughput(target, ns))
                p50, p99 = latency(target, ns)
                data["p50"].append(p50)
                data["p99"].append(p99)
        log(f"  events {name}: {statistics.median(data['rate']):,.0f} events/s, "
            f"p50 {statistics.median(data['p50']):.1f} ms, "
            f"p99 {statistics.median(data['p99']):.1f} ms")

    log(f"event streams: {subs} subscribers, {ns.event_count} events as fast as possible; "
        f"{ns.event_rate:g} events/s for {ns.event_seconds:g} s; {rounds} rounds")
    measure("reference", reference_target())
    measure("memory", chunkwire_target())
    with nats_server() as nats:
        if nats is not None:
            measure("nats", chunkwire_target(nats))
        else:
            log("  events nats: skipped (nats-server not installed)")
    ref = {k: statistics.median(v) for k, v in measured["reference"].items()}
    rows = []
    for name, label in (("memory", "in memory"), ("nats", "NATS, 2 gateways")):
        if name not in measured:
            continue
        got = {k: statistics.median(v) for k, v in measured[name].items()}
        rows.append(Row(f"events delivered, {subs} SSE subscribers, {label}",
                        got["rate"], ref["rate"], "events/s", got["rate"] / ref["rate"]))
        for key in ("p50", "p99"):
            rows.append(Row(
                f"publish-to-receive {key}, {ns.event_rate:g} events/s x {subs}, {label}",
                got[key], ref[key], "ms", ref[key] / got[key] if got[key] else float("inf"),
                "reference/chunkwire",
            ))
    return rows


# -- the subscriber process --------------------------------------------------------------


class _Subscriber(asyncio.Protocol):
    def __init__(self, path: bytes, expected: int, sample: bool, done: Callable[[], None],
                 connected: Callable[[], None]) -> None:
        self.path = path
        self.expected = expected
        self.sample = sample
        self.done = done
        self.connected = connected
        self.count = 0
        self.head = b""
        self.started = False
        self.buf = b""
        self.last = b""
        self.latencies: list[float] = []
        self.finished_ns = 0

    def connection_made(self, transport: Any) -> None:
        transport.write(b"GET " + self.path + b" HTTP/1.1\r\nHost: x\r\n"
                        b"Accept: text/event-stream\r\n\r\n")

    def data_received(self, data: bytes) -> None:
        if not self.started:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            head, _, data = self.head.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head[:200])
            self.started = True
            self.connected()
        now = time.time_ns()
        if self.sample:
            self.buf += data
            end = self.buf.rfind(b"\n\n")
            if end < 0:
                return
            complete, self.buf = self.buf[:end + 2], self.buf[end + 2:]
            self.count += complete.count(b"\n\n")
            self.latencies.extend((now - int(m)) / 1e6 for m in _TIMESTAMP.findall(complete))
        else:
            joined = self.last + data
            self.count += joined.count(b"\n\n") - self.last.count(b"\n\n")
            self.last = data[-1:]
        if self.count >= self.expected and not self.finished_ns:
            self.finished_ns = now
            self.done()


async def _subscribe(url: str, conns: int, expected: int, sample_every: int) -> None:
    host, port = url.removeprefix("http://").split(":")
    loop = asyncio.get_running_loop()
    connected = asyncio.Semaphore(0)
    remaining = conns
    all_done = loop.create_future()

    def one_done() -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0 and not all_done.done():
            all_done.set_result(None)

    subs = []
    for i in range(conns):
        sub = _Subscriber(f"/events/{TOPIC}".encode(), expected, i % sample_every == 0,
                          one_done, connected.release)
        await loop.create_connection(lambda sub=sub: sub, host, int(port))
        subs.append(sub)
    for _ in range(conns):
        await connected.acquire()
    print("ready", flush=True)
    with suppress(asyncio.TimeoutError):
        await asyncio.wait_for(all_done, 120.0)
    print(json.dumps({
        "last_ns": max(s.finished_ns for s in subs),
        "incomplete": sum(1 for s in subs if s.count < expected),
        "latencies_ms": [x for s in subs for x in s.latencies],
    }), flush=True)


def _main(argv: list[str]) -> int:
    if len(argv) != 5 or argv[0] != "subscribe":
        print("usage: python -m chunkwire.bench_events subscribe URL CONNS EVENTS SAMPLE",
              file=sys.stderr)
        return 2
    url, conns, expected, sample = argv[1], int(argv[2]), int(argv[3]), int(argv[4])
    try:
        import uvloop

        uvloop.run(_subscribe(url, conns, expected, sample))
    except ImportError:
        asyncio.run(_subscribe(url, conns, expected, sample))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
