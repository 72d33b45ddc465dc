"""The ``chunkwire`` command: run plugins, the gateway, the demo and the benchmark."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import importlib
import inspect
import logging
import os
import signal
import socket
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from . import __version__

if TYPE_CHECKING:
    from .plugin import Plugin
    from .transport.lane import LaneSettings

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
SIZE_HELP = "bytes, or with a suffix k, m, g (KiB, MiB, GiB; 'kb', 'kib' also accepted)"


class UsageError(Exception):
    """A command-line mistake: reported as one line on stderr, exit status 2."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


class SizeError(ValueError, argparse.ArgumentTypeError):
    """Not a size ``parse_size`` understands."""


def parse_size(text: str) -> int:
    """``65536``, ``64k``, ``1m``, ``1g`` (binary units); SizeError otherwise."""
    cleaned = text.strip().lower().removesuffix("ib").removesuffix("b")
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    scale = 1
    if cleaned and cleaned[-1] in units:
        cleaned, scale = cleaned[:-1], units[cleaned[-1]]
    try:
        number = float(cleaned) if scale > 1 else int(cleaned)
    except ValueError:
        raise SizeError(f"invalid size {text!r}: use {SIZE_HELP}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise SizeError(f"invalid size {text!r}: use {SIZE_HELP}")
    return int(number * scale)


def positive_size(text: str) -> int:
    size = parse_size(text)
    if size < 1:
        raise SizeError(f"invalid size {text!r}: must be at least 1 byte")
    return size


def interval_seconds(text: str) -> float:
    """A finite number of seconds, >= 0 (0 turns the periodic thing off)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"invalid interval {text!r}: use seconds >= 0")
    return value


def port_number(text: str) -> int:
    """A TCP port, 1..65535, or 0 for one the system picks."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: not a number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"invalid port {port}: must be within 1..65535 (0 picks a free one)"
        )
    return port


def address(text: str) -> str:
    """``unix:/path.sock`` or ``HOST:PORT`` (port 0..65535), as plugins listen and gateways dial."""
    if text.startswith("unix:"):
        if not text[len("unix:") :]:
            raise argparse.ArgumentTypeError(f"invalid address {text!r}: empty socket path")
        return text
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port:
        raise argparse.ArgumentTypeError(
            f"invalid address {text!r}: expected unix:/path.sock or HOST:PORT"
        )
    try:
        port_number(port)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"invalid address {text!r}: {exc}") from None
    return text


def plugin_mapping(text: str) -> tuple[str, str]:
    """``ID=ADDRESS`` for ``--plugin``."""
    plugin_id, sep, target = text.partition("=")
    if not sep or not plugin_id or not target:
        raise argparse.ArgumentTypeError(
            f"invalid --plugin {text!r}: expected ID=ADDRESS (e.g. files=unix:/tmp/files.sock)"
        )
    if "/" in plugin_id:
        raise argparse.ArgumentTypeError(f"invalid --plugin {text!r}: ID cannot contain '/'")
    try:
        return plugin_id, address(target)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"--plugin {plugin_id}: {exc}") from None


def check_free(listen: str) -> None:
    """UsageError unless ``listen`` (``unix:/path`` or ``HOST:PORT``) can be bound now.

    Checked before the server binds so that the user reads one line rather
    than the server library's log and traceback.
    """
    if listen.startswith("unix:"):
        path = os.path.abspath(listen[len("unix:") :])
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            raise UsageError(f"cannot listen on {listen}: directory {directory} does not exist")
        if os.path.lexists(path) and not _unix_socket_free(path):
            raise UsageError(f"cannot listen on {listen}: the socket is in use by another server")
        return
    host, _, port_text = listen.rpartition(":")
    port = int(port_text)
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {listen}: {exc.strerror}") from None
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        if os.name != "nt":
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(f"cannot listen on {listen}: the port is in use") from None
            raise UsageError(f"cannot listen on {listen}: {exc.strerror}") from None


def _unix_socket_free(path: str) -> bool:
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise UsageError(f"cannot listen on unix:{path}: it exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(path)
        except OSError:
            return True  # stale: the server removes it
    return False


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


def tune_gc() -> None:
    """Keep what lives as long as the server out of garbage collection.

    Everything alive once the server is set up (modules, the app, gRPC and
    protobuf) stays for the life of the process: ``gc.freeze()`` takes it
    out of every collection's scan, so full collections no longer walk
    hundreds of thousands of objects. The young-generation threshold stays
    at its default: a cancelled upload leaves cycles holding its body
    buffers, and collecting them later (a threshold of 5,000) measured as
    15 MiB more RSS after 200 client disconnects.
    """
    if os.environ.get("CHUNKWIRE_NO_GC_TUNING"):
        return
    import gc

    gc.collect()
    gc.freeze()


def use_uvloop() -> None:
    """Run the plugin's event loop on uvloop when it is installed (as uvicorn does)."""
    if os.environ.get("CHUNKWIRE_LOOP") == "asyncio":
        return
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def load_object(spec: str, app_dir: str = ".") -> Any:
    """Import ``MODULE:ATTR`` (ATTR may be dotted) with ``app_dir`` first on sys.path.

    A module or attribute that does not exist is a UsageError; errors raised
    while the module itself runs propagate with their traceback.
    """
    module_name, sep, attr = spec.partition(":")
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        directory, _, filename = module_name.rpartition("/")
        hint = f"{filename.removesuffix('.py')}:{attr or 'ATTR'}"
        if directory:
            hint += f" --app-dir {directory}"
        raise UsageError(f"{spec!r} names a file, not a module: use {hint}")
    if not sep or not module_name or not attr:
        raise UsageError(f"expected MODULE:ATTR (e.g. files_plugin:plugin), got {spec!r}")
    directory = os.path.abspath(app_dir)
    if not os.path.isdir(directory):
        raise UsageError(f"--app-dir {app_dir}: not a directory")
    if directory in sys.path:
        sys.path.remove(directory)
    sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing != module_name and not module_name.startswith(missing + "."):
            raise  # the module was found; something it imports was not
        raise UsageError(
            f"cannot import module {module_name!r}: not found in {directory} "
            "or the installed packages (see --app-dir)"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def load_plugin(spec: str, app_dir: str = ".") -> Plugin:
    """``MODULE:ATTR`` as a Plugin: ATTR is a Plugin, an ASGI 3 app (served by
    ASGIPlugin), or a function returning either."""
    from .asgi import ASGIPlugin, is_asgi_app
    from .plugin import Plugin

    obj = load_object(spec, app_dir)
    if not isinstance(obj, Plugin) and not is_asgi_app(obj) and _is_factory(obj):
        obj = obj()
    if isinstance(obj, Plugin):
        return obj
    if is_asgi_app(obj):
        return ASGIPlugin(obj, name=spec.partition(":")[0].rpartition(".")[2])
    raise UsageError(
        f"{spec} is not a chunkwire Plugin or an ASGI application (got {type(obj).__name__})"
    )


def _is_factory(obj: Any) -> bool:
    """A plain function (or method) that can be called without arguments."""
    if not (inspect.isfunction(obj) or inspect.ismethod(obj)):
        return False
    if inspect.iscoroutinefunction(obj):
        return False
    try:
        inspect.signature(obj).bind()
    except (TypeError, ValueError):
        return False
    return True


def _parse_plugins(values: list[tuple[str, str]]) -> dict[str, str]:
    plugins: dict[str, str] = {}
    for plugin_id, target in values:
        if plugin_id in plugins:
            raise UsageError(f"--plugin {plugin_id} is given twice")
        plugins[plugin_id] = target
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
            # aborting their connections: the client sees a truncated response
            # (never a clean end), the gateway cancels the plugin calls as for
            # any disconnect, and nothing is left for uvicorn to cancel (which
            # would log a traceback per request).
            async def cut() -> None:
                await asyncio.sleep(grace)
                for connection in list(self.server_state.connections):
                    cycle = getattr(connection, "cycle", None)
                    transport = getattr(connection, "transport", None)
                    if cycle is not None and transport is not None and not cycle.response_complete:
                        # abort, not close: close waits for a client that
                        # stopped reading to take what is buffered.
                        transport.abort()

            # Event streams never end by themselves: end them cleanly first.
            end_event_streams = getattr(app, "end_event_streams", None)
            if end_event_streams is not None:
                end_event_streams()
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
    logging.getLogger("uvicorn.error").addFilter(_OneLineStartupFailure())
    return Server(config)


# -- commands ----------------------------------------------------------------


def _cmd_plugin(ns: argparse.Namespace) -> int:
    tune_malloc()
    logging.basicConfig(level=ns.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    from .asgi import LifespanError

    plugin = load_plugin(ns.spec, ns.app_dir)
    plugin.lane = lane_settings(ns, plugin.lane)
    check_free(ns.listen)
    use_uvloop()
    tune_gc()
    with contextlib.suppress(KeyboardInterrupt):
        try:
            plugin.run(ns.listen)
        except OSError as exc:  # the check above raced with another server
            raise UsageError(f"cannot listen on {ns.listen}: {exc}") from None
        except LifespanError as exc:
            raise UsageError(str(exc), status=1) from None
    return 0


def _add_lane_options(parser: argparse.ArgumentParser, side: str) -> None:
    """Flags for this side's lane limits; None (not given) keeps ``side``'s own settings."""
    from .transport.lane import DEFAULT_SETTINGS as lane

    keeps = "; a flag not given keeps the plugin's Plugin(lane=...)" if side == "plugin" else ""
    group = parser.add_argument_group(
        "same-host lane", f"this {side}'s side of each lane (docs/protocol.md){keeps}"
    )
    default = (lambda value: value) if side == "gateway" else (lambda value: None)
    group.add_argument(
        "--lane-ring-size", type=parse_size, default=default(lane.ring_size), metavar="SIZE",
        help="shared-memory ring for the bodies this side sends (0: none, bodies go inline; "
        f"default {lane.ring_size >> 20}m): {SIZE_HELP}",
    )
    group.add_argument(
        "--lane-ring-threshold", type=parse_size, default=default(lane.ring_threshold),
        metavar="SIZE",
        help=f"body chunks this large or larger go through the ring (default "
        f"{lane.ring_threshold >> 10}k)",
    )
    group.add_argument(
        "--lane-max-peer-ring", type=parse_size, default=default(lane.max_peer_ring),
        metavar="SIZE",
        help=f"refuse a lane whose peer offers a larger ring (default {lane.max_peer_ring >> 20}m)",
    )
    group.add_argument(
        "--lane-credit-timeout", type=float, default=default(lane.credit_timeout), metavar="S",
        help="fail a lane whose peer returns no ring space for S seconds (default "
        f"{lane.credit_timeout:g})",
    )
    group.add_argument(
        "--lane-handshake-timeout", type=float, default=default(lane.handshake_timeout),
        metavar="S",
        help=f"refuse a lane whose peer sends no HELLO within S seconds (default "
        f"{lane.handshake_timeout:g})",
    )


def lane_settings(ns: argparse.Namespace, base: LaneSettings | None = None) -> LaneSettings:
    """``base`` (default: the defaults) with the ``--lane-*`` flags given; UsageError
    naming the flag for a value out of range."""
    import dataclasses

    from .transport.lane import DEFAULT_SETTINGS, LaneSettings, SettingError

    given = {
        field.name: value
        for field in dataclasses.fields(LaneSettings)
        if (value := getattr(ns, f"lane_{field.name}", None)) is not None
    }
    try:
        return dataclasses.replace(base or DEFAULT_SETTINGS, **given)
    except SettingError as error:
        flag = "--lane-" + error.field.replace("_", "-")
        raise UsageError(f"{flag}: {error.reason}") from None


def _gateway_from(ns: argparse.Namespace, plugins: dict[str, str]) -> Any:
    from .gateway import Gateway

    tls = None
    if getattr(ns, "tls_ca", None):
        import grpc

        try:
            with open(ns.tls_ca, "rb") as ca:
                tls = grpc.ssl_channel_credentials(root_certificates=ca.read())
        except OSError as exc:
            raise UsageError(f"--tls-ca {ns.tls_ca}: {exc.strerror}") from None
    try:
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
            transport=ns.transport,
            lane=lane_settings(ns),
            **_event_options(ns),
        )
    except ValueError as error:
        raise UsageError(str(error)) from None


def _event_options(ns: argparse.Namespace) -> dict[str, Any]:
    from .events import InMemoryBroker, NatsBroker

    sizes = {"replay": ns.event_replay, "queue_size": ns.event_queue_size}
    broker = NatsBroker(ns.nats, **sizes) if ns.nats else InMemoryBroker(**sizes)
    return {
        "broker": broker,
        "events_listen": ns.events_listen,
        "events_credentials": _events_tls(ns),
        "max_event_size": ns.max_event_size,
        "sse_keepalive": ns.sse_keepalive,
        "sse_timeout": ns.sse_timeout if ns.sse_timeout > 0 else None,
        "metrics_path": ns.metrics_path,
    }


def _events_tls(ns: argparse.Namespace) -> Any:
    cert, key = ns.events_tls_cert, ns.events_tls_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise UsageError("--events-tls-cert and --events-tls-key go together: give both")
    if ns.events_listen is None or ns.events_listen.startswith("unix:"):
        raise UsageError("--events-tls-cert/--events-tls-key need a TCP --events-listen HOST:PORT")
    from .events.service import tls_credentials

    try:
        return tls_credentials(cert, key, labels=("--events-tls-cert", "--events-tls-key"))
    except ValueError as error:
        raise UsageError(str(error)) from None


class _OneLineStartupFailure(logging.Filter):
    # The gateway's own message already says what failed; uvicorn's generic
    # second line only repeats that it did.
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Application startup failed. Exiting."


def _cmd_gateway(ns: argparse.Namespace) -> int:
    tune_malloc()
    logging.basicConfig(level=ns.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    plugins = _parse_plugins(ns.plugin)
    if not plugins:
        raise UsageError("gateway needs at least one --plugin ID=ADDRESS")
    check_free(f"{ns.host}:{ns.port}")
    server = _uvicorn_server(
        _gateway_from(ns, plugins),
        ns.host,
        ns.port,
        ns.log_level,
        grace=ns.graceful_timeout,
        on_started=lambda url: print(f"chunkwire gateway listening on {url}", flush=True),
        header_timeout=ns.header_timeout if ns.header_timeout > 0 else None,
    )
    tune_gc()
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
  # event stream: watch topic demo.tokens (Server-Sent Events) in one terminal...
  curl -sSN {base}/events/demo.tokens
  # ...and make the plugin publish a token stream to it from another
  curl -sS -X POST '{base}/plugins/demo/generate?text=tokens+arrive+one+by+one'

Ctrl-C stops.
"""


async def _run_demo(ns: argparse.Namespace) -> int:
    from .demo import plugin, use_events

    with tempfile.TemporaryDirectory(prefix="chunkwire-demo-") as tmp:
        listen = f"unix:{os.path.join(tmp, 'demo.sock')}"
        if ns.events_listen is None:
            ns.events_listen = f"unix:{os.path.join(tmp, 'events.sock')}"
        use_events(ns.events_listen)
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
    check_free(f"{ns.host}:{ns.port}")
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
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=port_number, default=port, help="TCP port, 1..65535 (0: a free one)"
    )
    parser.add_argument(
        "--chunk-size", type=positive_size, default=65536, help=f"body chunk size: {SIZE_HELP}"
    )
    parser.add_argument(
        "--max-body-size", type=parse_size, default=None,
        help=f"413 for request bodies above this size: {SIZE_HELP}",
    )
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
        "--max-header-size", type=positive_size, default=64 * 1024, metavar="SIZE",
        help=f"431 when the request header block is larger: {SIZE_HELP}",
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
        help=f"WebSocket messages larger than this close the session with 1009: {SIZE_HELP}",
    )
    parser.add_argument(
        "--ws-ping-interval", type=interval_seconds, default=20.0, metavar="S",
        help="WebSocket keep-alive ping every S seconds (0: off)",
    )
    parser.add_argument(
        "--transport", choices=("auto", "lane", "mux", "call"), default="auto",
        help="to plugins: the same-host lane for unix sockets, else multiplexed, when "
        "offered (auto), or force lane, mux or call",
    )
    _add_lane_options(parser, "gateway")
    events = parser.add_argument_group("event streams")
    events.add_argument(
        "--events-listen", default=None, metavar="ADDR",
        help="serve the gRPC Events service for publishers on unix:/path.sock (mode 0600), "
        "a loopback HOST:PORT, or any HOST:PORT with --events-tls-cert/--events-tls-key",
    )
    events.add_argument(
        "--events-tls-cert", default=None, metavar="PEM",
        help="serve the Events service over TLS with this certificate (chain)",
    )
    events.add_argument(
        "--events-tls-key", default=None, metavar="PEM",
        help="the private key of --events-tls-cert",
    )
    events.add_argument(
        "--nats", default=None, metavar="URL",
        help="share events with other gateways through NATS (nats://HOST:PORT)",
    )
    events.add_argument(
        "--sse-keepalive", type=float, default=15.0, metavar="S",
        help="keep-alive comment after S seconds without a write",
    )
    events.add_argument(
        "--sse-timeout", type=float, default=300.0, metavar="S",
        help="end an event stream after S seconds without an event (0: never)",
    )
    events.add_argument(
        "--max-event-size", type=positive_size, default=1 << 20, metavar="BYTES",
        help="refuse events with more data than this",
    )
    events.add_argument(
        "--event-queue-size", type=int, default=1024, metavar="N",
        help="events queued per subscriber before the oldest are dropped",
    )
    events.add_argument(
        "--event-replay", type=int, default=1000, metavar="N",
        help="events kept per topic for Last-Event-ID",
    )
    parser.add_argument(
        "--metrics-path", default=None, metavar="PATH",
        help="serve Prometheus metrics at this path (e.g. /metrics)",
    )
    parser.add_argument("--log-level", choices=_LOG_LEVELS, default="warning", help="log level")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless it has none or the help names it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, [], False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action) or text


class _Parser(argparse.ArgumentParser):
    """Mistakes are one line on stderr and exit status 2 (no usage block)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="chunkwire", description=__doc__)
    parser.add_argument("--version", action="version", version=f"chunkwire {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser("demo", help="run the example plugin behind a gateway")
    _add_gateway_options(demo)
    demo.set_defaults(func=_cmd_demo)

    plugin = sub.add_parser(
        "plugin",
        help="serve a Plugin or an ASGI app over gRPC",
        description="Serve a chunkwire Plugin or any ASGI 3 app over gRPC until SIGINT or "
        "SIGTERM.",
    )
    plugin.add_argument(
        "spec", metavar="MODULE:ATTR",
        help="a Plugin or an ASGI app (FastAPI, Starlette...), or a function returning "
        "one, imported from --app-dir or the installed packages",
    )
    plugin.add_argument(
        "--listen", required=True, type=address, help="unix:/path.sock or HOST:PORT"
    )
    plugin.add_argument(
        "--app-dir", default=".", metavar="DIR", help="directory searched first for MODULE"
    )
    plugin.add_argument("--log-level", choices=_LOG_LEVELS, default="warning", help="log level")
    _add_lane_options(plugin, "plugin")
    plugin.set_defaults(func=_cmd_plugin)

    gateway = sub.add_parser("gateway", help="serve HTTP and forward to plugins")
    gateway.add_argument(
        "--plugin", action="append", default=[], metavar="ID=ADDRESS", type=plugin_mapping,
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
    try:
        return int(ns.func(ns) or 0)
    except UsageError as exc:
        print(f"chunkwire {ns.command}: error: {exc}", file=sys.stderr)
        return exc.status


if __name__ == "__main__":
    sys.exit(main())
