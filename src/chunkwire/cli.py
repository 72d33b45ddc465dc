"""The ``chunkwire`` command: run plugins, the gateway, the demo and the benchmark."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .plugin import Plugin

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def parse_size(text: str) -> int:
    """``65536``, ``64k``, ``1m``, ``1g`` (binary units)."""
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def positive_size(text: str) -> int:
    """``parse_size`` for limits that must be at least one byte."""
    try:
        size = parse_size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}") from None
    if size < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte, got {text!r}")
    return size


def tune_malloc() -> None:
    """Keep glibc from trimming and re-growing the heap for every body chunk.

    Chunk-sized buffers are allocated and freed thousands of times a second;
    with the default thresholds each cycle costs brk calls and page faults
    (zeroing fresh pages), which is most of a server's system time. Freed
    memory stays in the heap instead, bounded by the peak. No-op elsewhere.
    """
    if os.environ.get("CHUNKWIRE_NO_MALLOPT") or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 * 1024 * 1024)
    mallopt(m_trim_threshold, 128 * 1024 * 1024)


def load_plugin(spec: str) -> Plugin:
    """Import ``MODULE:ATTR``; ATTR is a Plugin or a callable returning one."""
    from .plugin import Plugin

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"chunkwire: expected MODULE:ATTR, got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, Plugin) and callable(obj):
        obj = obj()
    if not isinstance(obj, Plugin):
        raise SystemExit(f"chunkwire: {spec} is not a chunkwire Plugin")
    return obj


def _parse_plugins(values: list[str]) -> dict[str, str]:
    plugins: dict[str, str] = {}
    for value in values:
        plugin_id, sep, address = value.partition("=")
        if not sep or not plugin_id or not address:
            raise SystemExit(f"chunkwire: --plugin takes ID=ADDRESS, got {value!r}")
        plugins[plugin_id] = address
    return plugins


def _uvicorn_server(
    app: Any,
    host: str,
    port: int,
    log_level: str,
    grace: float = 3.0,
    on_started: Callable[[str], None] | None = None,
    header_timeout: float | None = None,
) -> Any:
    import uvicorn

    from .gateway.http_server import limited_http_protocol

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started and on_started is not None and self.servers:
                # The bound port, which differs from --port 0.
                bound = self.servers[0].sockets[0].getsockname()
                on_started(f"http://{bound[0]}:{bound[1]}")

        async def shutdown(self, sockets: Any = None) -> None:
            # Responses still streaming after ``grace`` seconds are cut by
            # closing their connections: the client sees a truncated response
            # (never a clean end), the gateway cancels the plugin calls as for
            # any disconnect, and nothing is left for uvicorn to cancel (which
            # would log a traceback per request).
            async def cut() -> None:
                await asyncio.sleep(grace)
                for connection in list(self.server_state.connections):
                    cycle = getattr(connection, "cycle", None)
                    transport = getattr(connection, "transport", None)
                    if cycle is not None and transport is not None and not cycle.response_complete:
                        transport.close()

            cutter = asyncio.ensure_future(cut())
            try:
                await super().shutdown(sockets)
            finally:
                cutter.cancel()

        # uvicorn re-raises a captured SIGINT after shutting down, which ends
        # in a KeyboardInterrupt traceback; a clean stop is all we want.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            sigs = (signal.SIGINT, signal.SIGTERM)
            originals = {sig: signal.signal(sig, self.handle_exit) for sig in sigs}
            try:
                yield
            finally:
                for sig, handler in originals.items():
                    signal.signal(sig, handler)

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=limited_http_protocol(
            max_header_size=app.max_header_size,
            max_header_count=app.max_header_count,
            header_timeout=header_timeout,
        ),
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=grace + 5,
        access_log=log_level in ("info", "debug"),
        **app.uvicorn_options(),
    )
    return Server(config)


# -- commands ----------------------------------------------------------------


def _cmd_plugin(ns: argparse.Namespace) -> int:
    tune_malloc()
    logging.basicConfig(level=ns.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    plugin = load_plugin(ns.spec)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            plugin.run(ns.listen)
    except OSError as error:
        print(f"chunkwire: {error}", file=sys.stderr)
        return 2
    return 0


def _gateway_from(ns: argparse.Namespace, plugins: dict[str, str]) -> Any:
    from .gateway import Gateway

    tls = None
    if getattr(ns, "tls_ca", None):
        import grpc

        with open(ns.tls_ca, "rb") as ca:
            tls = grpc.ssl_channel_credentials(root_certificates=ca.read())
    return Gateway(
        plugins,
        tls=tls,
        chunk_size=ns.chunk_size,
        max_body_size=ns.max_body_size,
        response_timeout=ns.response_timeout if ns.response_timeout > 0 else None,
        mattermost=ns.mattermost,
        stats_path=ns.stats_path,
        idle_timeout=ns.idle_timeout if ns.idle_timeout > 0 else None,
        max_header_size=ns.max_header_size,
        max_header_count=ns.max_header_count,
        max_empty_frames=ns.max_empty_frames,
        max_message_size=ns.max_message_size,
        ws_ping_interval=ns.ws_ping_interval if ns.ws_ping_interval > 0 else None,
    )


def _cmd_gateway(ns: argparse.Namespace) -> int:
    tune_malloc()
    logging.basicConfig(level=ns.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    plugins = _parse_plugins(ns.plugin)
    if not plugins:
        raise SystemExit("chunkwire: gateway needs at least one --plugin ID=ADDRESS")
    server = _uvicorn_server(
        _gateway_from(ns, plugins),
        ns.host,
        ns.port,
        ns.log_level,
        grace=ns.graceful_timeout,
        on_started=lambda url: print(f"chunkwire gateway listening on {url}", flush=True),
        header_timeout=ns.header_timeout if ns.header_timeout > 0 else None,
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return 0 if server.started else 1


def _demo_usage(base: str) -> str:
    return f"""
chunkwire demo: plugin 'demo' behind the gateway at {base}/plugins/demo/

Open {base}/plugins/demo/ in a browser: a page driving the three WebSocket
streaming modes (ws/stream/bidirectional, ws/stream/server, ws/stream/client).

Try:
  curl -sS {base}/plugins/demo/
  # echo upload: the body streams back as it arrives
  curl -sS --data-binary @/etc/os-release {base}/plugins/demo/echo
  # upload, counted and hashed by the plugin
  head -c 50M /dev/urandom | curl -sS -T - {base}/plugins/demo/upload
  # ticks streamed with flush: each line arrives as it is written
  curl -sSN '{base}/plugins/demo/ticks?n=5&interval=0.5'
  # large download (1 GiB)
  curl -sS -o /dev/null -w '%{{size_download}} bytes, %{{speed_download}} B/s\\n' \\
       '{base}/plugins/demo/download?size=1073741824'
  # headers echo: the request as the plugin sees it
  curl -sS -H 'X-Trace: a' -H 'X-Trace: b' '{base}/plugins/demo/headers?q=1&q=2'

Ctrl-C stops.
"""


async def _run_demo(ns: argparse.Namespace) -> int:
    from .demo import plugin

    with tempfile.TemporaryDirectory(prefix="chunkwire-demo-") as tmp:
        listen = f"unix:{os.path.join(tmp, 'demo.sock')}"
        plugin_server = await plugin.start(listen)
        try:
            gateway = _gateway_from(ns, {"demo": plugin_server.address})
            server = _uvicorn_server(
                gateway,
                ns.host,
                ns.port,
                ns.log_level,
                grace=0.0,
                on_started=lambda url: print(_demo_usage(url), flush=True),
                header_timeout=ns.header_timeout if ns.header_timeout > 0 else None,
            )
            await server.serve()
            return 0 if server.started else 1
        finally:
            await plugin_server.stop(1.0)


def _cmd_demo(ns: argparse.Namespace) -> int:
    tune_malloc()
    logging.basicConfig(level=ns.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_run_demo(ns))
    except KeyboardInterrupt:
        return 0


def _cmd_bench(ns: argparse.Namespace) -> int:
    from .bench import run_bench

    return run_bench(ns)


def _add_gateway_options(parser: argparse.ArgumentParser, port: int = 8080) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--chunk-size", type=parse_size, default=65536, help="body chunk bytes")
    parser.add_argument("--max-body-size", type=parse_size, default=None, help="413 above this")
    parser.add_argument(
        "--response-timeout", type=float, default=30.0, metavar="S",
        help="504 when no response head comes S seconds after the request body ended (0: never)",
    )
    parser.add_argument(
        "--idle-timeout", type=float, default=60.0, metavar="S",
        help="cut a response when the plugin sends nothing for S seconds, 504 when it takes no "
        "request bytes for S seconds (0: never)",
    )
    parser.add_argument(
        "--header-timeout", type=float, default=30.0, metavar="S",
        help="408 when a client takes more than S seconds to send its request headers (0: never)",
    )
    parser.add_argument(
        "--max-header-size", type=parse_size, default=64 * 1024, metavar="SIZE",
        help="431 when the request header block is larger",
    )
    parser.add_argument(
        "--max-header-count", type=int, default=100, metavar="N",
        help="431 when a request has more header fields",
    )
    parser.add_argument(
        "--max-empty-frames", type=int, default=16, metavar="N",
        help="a plugin sending more empty response frames in a row fails the response",
    )
    parser.add_argument(
        "--mattermost", action="append", default=[], metavar="ID",
        help="call plugin ID with the Mattermost ServeHTTP method name",
    )
    parser.add_argument(
        "--stats-path", default=None, help="serve gateway stats as JSON at this path"
    )
    parser.add_argument(
        "--max-message-size", type=positive_size, default=1 << 20,
        help="WebSocket messages larger than this close the session with 1009 (default 1m)",
    )
    parser.add_argument(
        "--ws-ping-interval", type=float, default=20.0, metavar="S",
        help="WebSocket keep-alive ping every S seconds (0: off)",
    )
    parser.add_argument("--log-level", choices=_LOG_LEVELS, default="warning")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chunkwire", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the example plugin behind a gateway")
    _add_gateway_options(demo)
    demo.set_defaults(func=_cmd_demo)

    plugin = sub.add_parser("plugin", help="serve a Plugin over gRPC")
    plugin.add_argument("spec", metavar="MODULE:ATTR")
    plugin.add_argument("--listen", required=True, help="unix:/path.sock or HOST:PORT")
    plugin.add_argument("--log-level", choices=_LOG_LEVELS, default="warning")
    plugin.set_defaults(func=_cmd_plugin)

    gateway = sub.add_parser("gateway", help="serve HTTP and forward to plugins")
    gateway.add_argument(
        "--plugin", action="append", default=[], metavar="ID=ADDRESS",
        help="route /plugins/ID/ to ADDRESS (unix:/path.sock or HOST:PORT); repeatable",
    )
    _add_gateway_options(gateway)
    gateway.add_argument(
        "--tls-ca", metavar="PEM",
        help="CA bundle for TLS to TCP plugins (default: system roots for non-loopback "
        "addresses; loopback and unix sockets are plaintext)",
    )
    gateway.add_argument(
        "--graceful-timeout", type=float, default=3.0, metavar="S",
        help="on SIGINT/SIGTERM, let running responses finish for S seconds, then cut them",
    )
    gateway.set_defaults(func=_cmd_gateway)

    bench = sub.add_parser("bench", help="end-to-end benchmark vs direct uvicorn")
    from .bench import add_arguments

    add_arguments(bench)
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    return int(ns.func(ns) or 0)


if __name__ == "__main__":
    sys.exit(main())
