"""Real processes for the event-stream tests: plugins, gateways (through the CLI or a
small uvicorn script with auth hooks), nats-server; an SSE reader on raw httpx streams.

A module of its own name (not ``conftest``) so that test files import it
unambiguously when several test directories are collected together."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import processes
from processes import HANG_GUARD, connectable, url_ready
from processes import free_port as free_port
from processes import peak_rss_kb as peak_rss_kb

HERE = Path(__file__).resolve().parent


def env() -> dict[str, str]:
    return processes.process_env(HERE)


def wait_for(check, what: str, timeout: float = HANG_GUARD) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


class Proc(processes.Proc):
    def __init__(self, argv: list[str], ready, name: str, *, stdout=subprocess.DEVNULL) -> None:
        super().__init__(argv, ready, name, env=env(), stdout=stdout,
                         log_prefix="chunkwire-events-")


@dataclass
class Gateway:
    proc: Proc
    url: str
    events: str  # the Events service address

    def stats(self) -> dict:
        return httpx.get(self.url + "/_gw/stats", timeout=HANG_GUARD).json()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(self.url + "/metrics", timeout=HANG_GUARD).text
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out


class Stack:
    """A plugin (tests/events/events_plugin.py) and gateways in front of it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []
        sock = tmp / "plugin.sock"
        self.plugin = Proc(
            [sys.executable, "-m", "chunkwire", "plugin", "events_plugin:plugin",
             "--listen", f"unix:{sock}"],
            lambda _: sock.exists() and connectable(str(sock)),
            "plugin",
        )
        self.plugin_address = f"unix:{sock}"
        self.procs.append(self.plugin)
        self._count = 0

    def gateway(self, *extra: str, events: str | None = None) -> Gateway:
        """``chunkwire gateway`` with an Events socket, stats and metrics paths."""
        self._count += 1
        events = events or f"unix:{self.tmp / f'events{self._count}.sock'}"
        argv = [sys.executable, "-m", "chunkwire", "gateway", "--port", "0",
                "--plugin", f"p={self.plugin_address}", "--stats-path", "/_gw/stats",
                "--metrics-path", "/metrics", "--events-listen", events, *extra]
        found: list[str] = []
        proc = Proc(argv, url_ready(found), "gateway", stdout=subprocess.PIPE)
        self.procs.append(proc)
        return Gateway(proc, found[0], events)

    def auth_gateway(self, *extra: str, events: str | None = None) -> Gateway:
        """tests/events/auth_gateway.py: a Gateway with authenticate/authorize/expand hooks."""
        self._count += 1
        events = events or f"unix:{self.tmp / f'events{self._count}.sock'}"
        argv = [sys.executable, str(HERE / "auth_gateway.py"), "--plugin", self.plugin_address,
                "--events-listen", events, *extra]
        found: list[str] = []
        printed = url_ready(found)

        def ready(proc: Proc) -> bool:
            if not found and not printed(proc):
                return False
            port = int(found[0].rpartition(":")[2])
            if events.startswith("unix:"):
                where: tuple[str, int] | str = events[len("unix:") :]
            else:
                host, _, events_port = events.rpartition(":")
                where = (host, int(events_port))
            return connectable(("127.0.0.1", port)) and connectable(where)

        proc = Proc(argv, ready, "auth gateway", stdout=subprocess.PIPE)
        self.procs.append(proc)
        return Gateway(proc, found[0], events)

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


# -- TLS ---------------------------------------------------------------------


def tls_certificate(directory: Path, name: str) -> tuple[bytes, Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost: (PEM, cert path, key path)."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl is not installed (apt-get install openssl)"
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    return cert.read_bytes(), cert, key


# -- nats-server ---------------------------------------------------------------


class NatsServer:
    """nats-server on 127.0.0.1 and a free port; ``stop()``/``start()`` keep the port."""

    def __init__(self) -> None:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        if not os.path.exists(binary):
            raise AssertionError("nats-server is not installed (apt-get install nats-server)")
        self.binary = binary
        self.port = free_port()
        self.monitor_port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-a", "127.0.0.1", "-p", str(self.port),
             "-m", str(self.monitor_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: connectable(("127.0.0.1", self.port)), "nats-server to listen")
        wait_for(lambda: connectable(("127.0.0.1", self.monitor_port)), "nats monitoring")

    def subscriptions(self) -> int:
        """Subscriptions the server holds (its monitoring endpoint)."""
        url = f"http://127.0.0.1:{self.monitor_port}/subsz"
        return httpx.get(url, timeout=HANG_GUARD).json()["num_subscriptions"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        self.proc = None


# -- SSE reading ---------------------------------------------------------------


@dataclass
class SSEEvent:
    event: str = "message"
    id: str | None = None
    data: str = ""
    comments: list[str] = field(default_factory=list)

    def json(self) -> dict:
        return json.loads(self.data)


class SSEReader:
    """Parses a text/event-stream from an httpx streaming response, line by line."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.iter_lines()
        self.comments: list[str] = []

    def next(self) -> SSEEvent | None:
        """The next event (comments are collected on the way), None at end of stream."""
        event = SSEEvent()
        data: list[str] = []
        seen = False
        for line in self._lines:
            if line == "":
                if seen:
                    event.data = "\n".join(data)
                    return event
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                event.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            seen = True
            if name == "event":
                event.event = value
            elif name == "id":
                event.id = value
            elif name == "data":
                data.append(value)
        return None

    def comment_lines(self, count: int) -> list[str]:
        """Read raw lines until ``count`` comment lines arrived; fails on an event line."""
        seen: list[str] = []
        for line in self._lines:
            if line.startswith(":"):
                seen.append(line[1:].strip())
                if len(seen) == count:
                    return seen
            elif line:
                raise AssertionError(f"expected only comments, got {line!r}")
        raise AssertionError(f"stream ended after {len(seen)} comments")

    def events(self, count: int) -> list[SSEEvent]:
        out = []
        for _ in range(count):
            event = self.next()
            assert event is not None, f"stream ended after {len(out)} of {count} events"
            out.append(event)
        return out


def sse_client() -> httpx.Client:
    return httpx.Client(timeout=httpx.Timeout(HANG_GUARD))


def publish(address: str, events: list[tuple[str, str, str]], **options) -> None:
    """Publish through a Publisher in this process and flush."""
    import asyncio

    from chunkwire.events import Publisher

    async def run() -> None:
        async with Publisher(address, **options) as publisher:
            for topic, kind, data in events:
                await publisher.publish(topic, kind, data)

    asyncio.run(run())


class BackgroundPublisher:
    """One Publisher on an event loop in a thread; ``send(events)`` returns once flushed."""

    def __init__(self, address: str, **options) -> None:
        import asyncio
        import threading

        from chunkwire.events import Publisher

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.publisher = Publisher(address, **options)
        self._call(self.publisher.start())

    def _call(self, coro):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(HANG_GUARD)

    def send(self, events: list[tuple[str, str, str]]) -> None:
        async def run() -> None:
            for topic, kind, data in events:
                await self.publisher.publish(topic, kind, data)
            await self.publisher.flush()

        self._call(run())

    def close(self) -> None:
        self._call(self.publisher.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(HANG_GUARD)
        self._loop.close()
