"""Limits that bound what a client or a peer can make the gateway and a plugin hold.

Real processes: the honest plugin and a gateway started through the CLI,
with raw sockets and a raw gRPC client as the hostile peers. Each limit is
probed at its bound and one past it; memory is each process's peak RSS.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
from collections.abc import Iterator

import grpc
import grpc.aio
import pytest
from bodies import stamped
from e2e_stack import start_gateway, start_plugin
from raw_http import raw_exchange, read_until_closed, status_of

from chunkwire._core import decode_response_frame, encode_request_frame
from chunkwire._proto import http_pb2
from chunkwire._wire import SERVE_HTTP_METHOD

pytestmark = pytest.mark.timeout(180)
MIB = 1 << 20


class Limits:
    def __init__(self, tmp) -> None:
        self.sock = tmp / "honest.sock"
        self.honest = start_plugin("trust_apps:honest", self.sock)
        self.gateway, self.url = start_gateway({"honest": f"unix:{self.sock}"})
        host, port = self.url.removeprefix("http://").split(":")
        self.address = (host, int(port))

    def close(self) -> None:
        for proc in (self.gateway, self.honest):
            proc.stop()


@pytest.fixture(scope="module")
def limits(tmp_path_factory) -> Iterator[Limits]:
    stack = Limits(tmp_path_factory.mktemp("limits"))
    try:
        yield stack
    finally:
        logs = stack.gateway.stderr() + stack.honest.stderr()
        stack.close()
    assert "Traceback" not in logs


def hello_with(headers: list[tuple[str, str]], target: str = "/plugins/honest/hello") -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: t", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\nConnection: close\r\n\r\n").encode()


@pytest.mark.parametrize(("fields", "status"), [(100, 200), (101, 431)])
def test_header_count_at_the_limit(limits, fields, status):
    # Host and Connection count too.
    extra = [(f"X-{i}", "v") for i in range(fields - 2)]
    assert status_of(raw_exchange(limits.url, hello_with(extra))) == status


@pytest.mark.parametrize(("size", "status"), [(64 * 1024, 200), (64 * 1024 + 1, 431)])
def test_header_block_size_at_the_limit(limits, size, status):
    """The block counts the target, and each field as name + value + 4 (': ' and CRLF)."""
    target = "/plugins/honest/hello"
    fixed = len(target) + (4 + 1 + 4) + (10 + 5 + 4)  # target, "Host: t", "Connection: close"
    filler = size - fixed - (len("X-Filler") + 4)
    request = hello_with([("X-Filler", "f" * filler)], target)
    assert status_of(raw_exchange(limits.url, request)) == status


def test_a_14_mb_header_block_is_refused_early(limits):
    """Refused at 64 KiB while the client is still sending; the gateway stays small.

    The gateway reads and drops at most 1 MiB more before it closes, so the
    client cannot get its 14 MB through: a server that buffered the whole
    block would take it all.
    """
    sock = socket.create_connection(limits.address, timeout=30)
    sock.sendall(b"GET /plugins/honest/hello HTTP/1.1\r\nHost: t\r\n")
    line = b"X-Big: " + b"b" * 90 + b"\r\n"
    block = line * 1000
    sent = 0
    try:
        while sent < 14_000_000:
            sock.sendall(block)
            sent += len(block)
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = read_until_closed(sock)
    sock.close()
    assert status_of(answer) == 431
    assert sent < 14_000_000  # the gateway hung up long before the end
    assert limits.gateway.peak_rss_mib() < 100


def test_uploads_in_one_byte_segments_stay_bounded(limits):
    """20 uploads sent one byte per TCP segment: answered right, gateway memory bounded."""
    size = 20_000
    results: list[dict] = []
    errors: list[BaseException] = []

    def upload(index: int) -> None:
        try:
            body = stamped(index * size, size)
            sock = socket.create_connection(limits.address, timeout=60)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(
                f"POST /plugins/honest/upload HTTP/1.1\r\nHost: t\r\n"
                f"Content-Length: {size}\r\nConnection: close\r\n\r\n".encode()
            )
            for i in range(size):
                sock.send(body[i : i + 1])
            answer = read_until_closed(sock)
            sock.close()
            assert status_of(answer) == 200
            doc = json.loads(answer.partition(b"\r\n\r\n")[2])
            assert doc == {"bytes": size, "sha256": hashlib.sha256(body).hexdigest()}
            results.append(doc)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors[0]
    assert len(results) == 20
    assert limits.gateway.peak_rss_mib() < 100


# -- straight to the plugin: what any local peer can send ----------------------------------


def raw_call(sock, messages: list[bytes]) -> tuple[grpc.StatusCode, str, int]:
    """Send raw ServeHTTP messages; (status code, details, response status or 0)."""

    async def call() -> tuple[grpc.StatusCode, str, int]:
        options = [("grpc.max_send_message_length", 64 * MIB)]
        async with grpc.aio.insecure_channel(f"unix:{sock}", options=options) as channel:
            stub = channel.stream_stream(
                SERVE_HTTP_METHOD, request_serializer=None, response_deserializer=None
            )
            rpc = stub()
            status = 0
            try:
                for message in messages:
                    await rpc.write(message)
                async for message in rpc:
                    frame = decode_response_frame(message)
                    if frame.init is not None:
                        status = http_pb2.ServeHTTPResponseInit.FromString(frame.init).status_code
                    if frame.complete:
                        await rpc.done_writing()
                        break
            except grpc.aio.AioRpcError as error:
                return error.code(), error.details() or "", status
            code = await rpc.code()
            return code, await rpc.details() or "", status

    return asyncio.run(call())


def init_message(
    headers: int = 0, value_size: int = 1, path: str = "/hello", method: str = "GET"
) -> bytes:
    # Built by hand: protobuf objects for a million headers would cost the test seconds.
    header = b"\x0a\x01x\x12" + _varint(value_size) + b"v" * value_size
    entry = b"\x3a" + _varint(len(header)) + header
    base = http_pb2.ServeHTTPRequestInit(method=method, request_uri=path).SerializeToString()
    init = base + entry * headers
    return b"\x0a" + _varint(len(init)) + init


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


COMPLETE = encode_request_frame(b"", complete=True)


def test_a_million_header_init_is_refused_unparsed(limits):
    code, details, _ = raw_call(limits.sock, [init_message(headers=1_000_000) + COMPLETE])
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
    assert limits.honest.peak_rss_mib() < 100


@pytest.mark.parametrize(("count", "ok"), [(1000, True), (1001, False)])
def test_header_value_count_at_the_plugin_limit(limits, count, ok):
    """max_header_count: 1,000 header values by default."""
    code, details, status = raw_call(limits.sock, [init_message(headers=count) + COMPLETE])
    if ok:
        assert (code, status) == (grpc.StatusCode.OK, 200), details
    else:
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "max_header_count" in details


def _init_of_size(size: int) -> bytes:
    # One header whose value pads the init to exactly ``size`` bytes.
    value = size - 40
    while True:
        message = init_message(headers=1, value_size=value)
        init_len = len(http_pb2.ServeHTTPRequest.FromString(message).init.SerializeToString())
        if init_len == size:
            return message
        value += size - init_len


@pytest.mark.parametrize(("size", "ok"), [(MIB, True), (MIB + 1, False)])
def test_init_size_at_the_plugin_limit(limits, size, ok):
    code, details, status = raw_call(limits.sock, [_init_of_size(size) + COMPLETE])
    if ok:
        assert (code, status) == (grpc.StatusCode.OK, 200), details
    else:
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "max_init_size" in details


def test_a_30_mb_chunk_is_refused_unparsed(limits):
    chunk = encode_request_frame(b"c" * (30 * MIB), complete=True)
    code, details, _ = raw_call(limits.sock, [init_message() + chunk])
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
    assert limits.honest.peak_rss_mib() < 100


@pytest.mark.parametrize(("size", "status"), [(MIB, 200), (MIB + 1, 400)])
def test_request_chunk_at_the_plugin_limit(limits, size, status):
    """A later message's chunk: max_chunk_size (1 MiB) passes, one byte more is a 400."""
    first = init_message(path="/upload", method="PUT")
    _code, details, got = raw_call(
        limits.sock, [first, encode_request_frame(stamped(0, size), complete=True)]
    )
    assert got == status, details
