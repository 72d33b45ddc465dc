"""What both ends of a ServeHTTP stream agree on, besides the frame codec.

Frames travel as raw bytes: gRPC is given identity (de)serializers and the
core's codec writes and reads the protobuf wire format itself, so body
chunks are never copied into message objects. Init messages go through the
generated classes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from multidict import CIMultiDict

from ._proto import http_pb2

SERVE_HTTP_METHOD = "/chunkwire.v1.HTTPPlugin/ServeHTTP"
MATTERMOST_SERVE_HTTP_METHOD = "/mattermost.pluginapi.v1.PluginHooks/ServeHTTP"
PLUGIN_SERVICE = "chunkwire.v1.Plugin"
DESCRIBE_METHOD = f"/{PLUGIN_SERVICE}/Describe"

DEFAULT_CHUNK_SIZE = 65536


def identity(data: bytes) -> bytes:
    return data


def group_headers(
    headers: Iterable[tuple[str | bytes, str | bytes]],
) -> Iterable[tuple[str, list[bytes]]]:
    """Group (name, value) pairs by name, keeping every value in order.

    Names keep the spelling of their first occurrence; values are bytes on
    the wire (str values are encoded as latin-1, as HTTP/1.1 does).
    """
    grouped: dict[str, tuple[str, list[bytes]]] = {}
    for name, value in headers:
        key = name.decode("latin-1") if isinstance(name, bytes) else name
        raw = value if isinstance(value, bytes) else value.encode("latin-1")
        slot = grouped.get(key.lower())
        if slot is None:
            grouped[key.lower()] = (key, [raw])
        else:
            slot[1].append(raw)
    return grouped.values()


def with_init(init: bytes) -> bytes:
    """A ServeHTTPRequest or ServeHTTPResponse carrying only ``init``, the serialized
    init (field 1 of both), as the generated class serializes it: no copy of the
    init into a wrapper message."""
    size = len(init)
    prefix = bytearray(b"\n")
    while size > 0x7F:
        prefix.append(size & 0x7F | 0x80)
        size >>= 7
    prefix.append(size)
    return bytes(prefix) + init


def headers_to_proto(
    headers: Iterable[tuple[str | bytes, str | bytes]],
) -> list[http_pb2.HTTPHeader]:
    """HTTPHeader messages of ``group_headers``."""
    return [http_pb2.HTTPHeader(key=key, values=values) for key, values in group_headers(headers)]


def headers_from_proto(headers: Iterable[http_pb2.HTTPHeader]) -> CIMultiDict[str]:
    """Case-insensitive multi-valued headers; values decoded as latin-1."""
    result: CIMultiDict[str] = CIMultiDict()
    for header in headers:
        for value in header.values:
            result.add(header.key, value.decode("latin-1"))
    return result


def grpc_target(address: str) -> str:
    """A gRPC target for a chunkwire address: ``unix:/path.sock`` or ``HOST:PORT``."""
    if address.startswith("unix:"):
        path = address[len("unix:") :]
        if not path:
            raise ValueError(f"empty unix socket path in {address!r}")
        return address if path.startswith("/") else f"unix:{path}"
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address must be 'unix:/path.sock' or 'HOST:PORT', got {address!r}")
    return address


def flow_window(chunk_size: int) -> int:
    """A fixed HTTP/2 stream window for chunkwire streams: 1 MiB, or two chunks if larger.

    Given as ``grpc.http2.lookahead_bytes`` with ``grpc.http2.bdp_probe`` 0,
    gRPC never grows it, so per stream and direction at most this many body
    bytes (plus one frame's framing) are in flight between a reader that
    stopped and its writer. Measured with tests/plugin/perf_plugin.py, 64 KiB
    chunks: windows of 2, 4 and 8 chunks cost 10-40% of the throughput of
    gRPC's BDP-grown windows; 1 MiB stays within a few percent.
    ``CHUNKWIRE_WINDOW`` (bytes) overrides it, for measurements.
    """
    override = os.environ.get("CHUNKWIRE_WINDOW")
    if override:
        return int(override)
    return max(1 << 20, 2 * chunk_size) + 1024


def valid_status(status: int) -> bool:
    """Status 0 means 200; anything else must be within 100..999."""
    return status == 0 or 100 <= status <= 999
