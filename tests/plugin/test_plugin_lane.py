"""The same-host lane: negotiation, the socket's owner check, broken or hostile peers.

Every behaviour test of the plugin suite also runs on the lane (the
``transport`` fixture); this file covers what only the lane has. Each
hostile case checks the connection fails with exactly one log line and
the plugin goes on serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import struct
import subprocess
import sys

import grpc
import pytest
from plugin_helpers import State, make_plugin, pattern

from chunkwire._core import encode_batch
from chunkwire._proto import plugin_pb2
from chunkwire._wire import identity
from chunkwire.client import PluginClient
from chunkwire.errors import PluginCallError
from chunkwire.gateway import Gateway
from chunkwire.transport import DESCRIBE_METHOD
from chunkwire.transport.lane import HELLO, MAGIC, MAX_FRAMES, VERSION, LaneSettings
from chunkwire.transport.mux import Kind

HELLO_BYTES = HELLO.pack(MAGIC, VERSION, 0, 0)


async def _describe(address: str) -> plugin_pb2.PluginInfo:
    async with grpc.aio.insecure_channel(f"unix:{address[len('unix:'):]}") as channel:
        call = channel.unary_unary(
            DESCRIBE_METHOD, request_serializer=identity, response_deserializer=identity
        )
        return plugin_pb2.PluginInfo.FromString(await call(b"", timeout=10))


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("chunkwire")
    ]


async def _round_trip(address: str, transport: str = "lane", expected: str | None = None) -> None:
    async with PluginClient(address, transport=transport) as client:
        body = pattern(300_000, 7)
        resp = await client.request("POST", "/echo", body=body)
        assert await resp.read() == body
        assert client.transport == (expected or transport)


async def test_describe_names_a_private_lane_socket_next_to_the_plugin(sock_dir) -> None:
    plugin = make_plugin(State())
    async with plugin.serving(f"unix:{sock_dir}/p.sock") as server:
        info = await _describe(server.address)
        lane = f"{sock_dir}/p.sock.lane"
        assert list(info.transports) == ["call", "mux", "lane"]
        assert info.lane_socket == lane
        st = os.stat(lane)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
    assert not os.path.exists(lane)  # removed on stop


async def test_no_lane_on_tcp() -> None:
    plugin = make_plugin(State())
    async with plugin.serving("127.0.0.1:0") as server:
        info = await _describe_tcp(server.address)
    assert list(info.transports) == ["call", "mux"]
    assert info.lane_socket == ""


async def _describe_tcp(address: str) -> plugin_pb2.PluginInfo:
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(
            DESCRIBE_METHOD, request_serializer=identity, response_deserializer=identity
        )
        return plugin_pb2.PluginInfo.FromString(await call(b"", timeout=10))


@pytest.mark.parametrize(
    ("transports", "expected"),
    [(None, "lane"), (("call", "mux"), "mux"), (("call",), "call")],
)
async def test_client_auto_prefers_the_lane_on_a_unix_socket(
    sock_dir, transports, expected
) -> None:
    kwargs = {} if transports is None else {"transports": transports}
    plugin = make_plugin(State(), **kwargs)
    async with (
        plugin.serving(f"unix:{sock_dir}/p.sock") as server,
        PluginClient(server.address) as client,
    ):
        body = pattern(200_000, 3)
        resp = await client.request("POST", "/echo", body=body)
        assert await resp.read() == body
        assert client.transport == expected


def test_lane_on_a_tcp_address_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match="lane transport needs a unix socket"):
        PluginClient("127.0.0.1:5000", transport="lane")
    with pytest.raises(ValueError, match=r"plugin 'x'.*unix socket.*127\.0\.0\.1:5000"):
        Gateway({"x": "127.0.0.1:5000"}, transport="lane")


async def test_forced_lane_on_a_plugin_without_it_fails_clearly(sock_dir) -> None:
    plugin = make_plugin(State(), transports=("call", "mux"))
    async with (
        plugin.serving(f"unix:{sock_dir}/p.sock") as server,
        PluginClient(server.address, transport="lane") as client,
    ):
        with pytest.raises(PluginCallError) as info:
            await client.request("GET", "/small")
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert "does not offer the lane" in str(info.value)


async def test_a_peer_of_another_user_is_refused(sock_dir, caplog) -> None:
    plugin = make_plugin(State())
    async with plugin.serving(f"unix:{sock_dir}/p.sock") as server:
        assert server.lane is not None
        server.lane.uid = os.getuid() + 1  # as if this process ran as someone else
        with pytest.raises(PluginCallError) as info:
            await _round_trip(server.address)
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        assert server.lane.refused == 1
        refusals = [w for w in _warnings(caplog) if "refused" in w]
        assert len(refusals) == 1, refusals
        assert f"runs as uid {os.getuid()}, not {os.getuid() + 1}" in refusals[0]
        server.lane.uid = os.getuid()
        await _round_trip(server.address)


async def test_auto_falls_back_to_mux_when_the_lane_refuses_this_user(sock_dir, caplog) -> None:
    plugin = make_plugin(State())
    async with plugin.serving(f"unix:{sock_dir}/p.sock") as server:
        assert server.lane is not None
        server.lane.uid = os.getuid() + 1  # as if the plugin ran as someone else
        caplog.set_level(logging.INFO, logger="chunkwire.client")
        await _round_trip(server.address, "auto", expected="mux")
    refusals = [w for w in _warnings(caplog) if "refused" in w]
    assert len(refusals) == 1, refusals  # the probe; no request went to the lane
    choice = [r.getMessage() for r in caplog.records if " uses the " in r.getMessage()]
    assert len(choice) == 1 and "uses the mux transport" in choice[0], choice
    assert f"no lane: it did not open ({sock_dir}/p.sock.lane: " in choice[0], choice


_OTHER_USER = """
import os, socket, sys
os.setgid(65534)
os.setuid(65534)
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
try:
    s.sendall(bytes.fromhex(sys.argv[2]))
    print(repr(s.recv(100)))
except (BrokenPipeError, ConnectionResetError):
    print("b''")  # closed before (or while) the HELLO went out
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as another user")
async def test_a_real_process_of_another_user_is_refused(sock_dir, caplog) -> None:
    plugin = make_plugin(State())
    async with plugin.serving(f"unix:{sock_dir}/p.sock"):
        lane = f"{sock_dir}/p.sock.lane"
        os.chmod(sock_dir, 0o755)
        os.chmod(lane, 0o666)  # let the other user reach it: only SO_PEERCRED stands
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _OTHER_USER, lane, HELLO_BYTES.hex(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err
        assert out.strip() == b"b''"  # closed without a HELLO
        refusals = [w for w in _warnings(caplog) if "refused" in w]
        assert len(refusals) == 1 and "runs as uid 65534" in refusals[0], refusals


async def _raw_lane(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(HELLO_BYTES)  # no ring of ours; the plugin's memfd is dropped unread
    magic, version, ring_id, _ = HELLO.unpack(await reader.readexactly(HELLO.size))
    assert (magic, version) == (MAGIC, VERSION) and ring_id != 0
    return reader, writer


async def _until_closed(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


def _frames(count: int) -> bytes:
    # The smallest frame: every field left out.
    return b"\x0a\x00" * count


HOSTILE_RECORDS = {
    "truncated-prefix": (b"\x01\x00", "truncated length prefix (2 of 4 bytes)"),
    "oversized": (struct.pack("<I", 0xFFFFFFFF), "record of 4294967295 bytes is larger"),
    "truncated-record": (struct.pack("<I", 100) + b"x" * 10, "truncated record (10 of 100 bytes)"),
    "malformed-batch": (struct.pack("<I", 3) + b"\xff\xff\xff", "malformed batch"),
    "too-many-frames": (
        struct.pack("<I", 2 * (MAX_FRAMES + 1)) + _frames(MAX_FRAMES + 1),
        f"more than {MAX_FRAMES} frames",
    ),
    "protocol-break": (
        struct.pack("<I", len(b := encode_batch([(5, Kind.DATA, 0, b"x")]))) + b,
        "DATA on stream 5, which was never opened",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_RECORDS))
async def test_a_broken_record_from_the_gateway_fails_that_lane_with_one_line(
    sock_dir, caplog, case
) -> None:
    data, reason = HOSTILE_RECORDS[case]
    plugin = make_plugin(State())
    async with plugin.serving(f"unix:{sock_dir}/p.sock") as server:
        reader, writer = await _raw_lane(f"{sock_dir}/p.sock.lane")
        writer.write(data)
        await writer.drain()
        if case.startswith("truncated"):
            writer.write_eof()
        await asyncio.wait_for(_until_closed(reader), 30)
        writer.close()
        lines = _warnings(caplog)
        assert len(lines) == 1, lines
        assert reason in lines[0], lines
        await _round_trip(server.address)  # the plugin serves new lanes
        assert len(_warnings(caplog)) == 1


async def test_a_clean_record_boundary_close_is_no_error(sock_dir, caplog) -> None:
    plugin = make_plugin(State())
    async with plugin.serving(f"unix:{sock_dir}/p.sock") as server:
        reader, writer = await _raw_lane(f"{sock_dir}/p.sock.lane")
        writer.write_eof()
        await asyncio.wait_for(_until_closed(reader), 30)
        writer.close()
        await _round_trip(server.address)
    assert _warnings(caplog) == []


@pytest.mark.parametrize(
    ("hello", "reason"),
    [
        (b"NOTLANE" + bytes(9), "does not speak the lane protocol"),
        (HELLO.pack(MAGIC, VERSION + 1, 0, 0), f"version {VERSION + 1} is not supported"),
        (HELLO.pack(MAGIC, VERSION, 7, 0), "names ring 7 but carries 0 descriptors"),
        (HELLO_BYTES[:5], "closed the lane during the handshake (5 bytes)"),
    ],
)
async def test_a_bad_hello_is_refused_with_one_line(sock_dir, caplog, hello, reason) -> None:
    plugin = make_plugin(State())
    async with plugin.serving(f"unix:{sock_dir}/p.sock") as server:
        reader, writer = await asyncio.open_unix_connection(f"{sock_dir}/p.sock.lane")
        writer.write(hello)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(100), 30) == b""
        writer.close()
        assert server.lane is not None and server.lane.refused == 1
        lines = _warnings(caplog)
        assert len(lines) == 1 and reason in lines[0], lines
        await _round_trip(server.address)


async def test_a_silent_peer_is_refused_after_the_handshake_timeout(sock_dir, caplog) -> None:
    plugin = make_plugin(State(), lane=LaneSettings(handshake_timeout=0.2))
    async with plugin.serving(f"unix:{sock_dir}/p.sock"):
        reader, writer = await asyncio.open_unix_connection(f"{sock_dir}/p.sock.lane")
        assert await asyncio.wait_for(reader.read(100), 30) == b""
        writer.close()
    lines = _warnings(caplog)
    assert len(lines) == 1 and "timed out" in lines[0], lines


class _RogueLane:
    """Takes the place of a plugin's lane socket: HELLO, then ``data``, then waits."""

    def __init__(self, path: str, data: bytes, hello: bytes = HELLO_BYTES) -> None:
        self.path = path
        self.data = data
        self.hello = hello
        self.server: asyncio.AbstractServer | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readexactly(HELLO.size)
            writer.write(self.hello + self.data)
            await writer.drain()
            if self.data and self.data[:4] in (b"\x01\x00", struct.pack("<I", 100)):
                writer.write_eof()
            await _until_closed(reader)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> _RogueLane:
        self.server = await asyncio.start_unix_server(self._serve, path=self.path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


@pytest.mark.parametrize("case", sorted(set(HOSTILE_RECORDS) - {"protocol-break"}))
async def test_a_broken_record_from_the_plugin_fails_the_requests_with_one_line(
    sock_dir, caplog, case
) -> None:
    data, reason = HOSTILE_RECORDS[case]
    plugin = make_plugin(State())
    async with plugin.serving(f"unix:{sock_dir}/p.sock") as server:
        assert server.lane is not None
        await server.lane.stop_accepting()
        async with (
            _RogueLane(f"{sock_dir}/p.sock.lane", data),
            PluginClient(server.address, transport="lane") as client,
        ):
            with pytest.raises(PluginCallError) as info:
                await client.request("GET", "/small")
    assert info.value.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE)
    lines = _warnings(caplog)
    assert len(lines) == 1, lines
    assert reason in lines[0], lines


async def test_a_plugin_lane_of_another_version_fails_the_requests_clearly(sock_dir) -> None:
    plugin = make_plugin(State())
    async with plugin.serving(f"unix:{sock_dir}/p.sock") as server:
        assert server.lane is not None
        await server.lane.stop_accepting()
        hello = HELLO.pack(MAGIC, VERSION + 1, 0, 0)
        async with (
            _RogueLane(f"{sock_dir}/p.sock.lane", b"", hello),
            PluginClient(server.address, transport="lane") as client,
        ):
            with pytest.raises(PluginCallError) as info:
                await client.request("GET", "/small")
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert f"version {VERSION + 1} is not supported" in str(info.value)


async def test_a_lane_socket_elsewhere_is_not_dialled(sock_dir) -> None:
    from chunkwire.transport.lane import LaneError, offered_lane

    info = plugin_pb2.PluginInfo(transports=["call", "mux", "lane"])
    address = f"unix:{sock_dir}/p.sock"
    for bad in ("/tmp/other/p.sock.lane", "relative.lane", f"{sock_dir}/../x.lane", ""):
        info.lane_socket = bad
        with pytest.raises(LaneError):
            offered_lane(address, info)
    info.lane_socket = f"{sock_dir}/p.sock.lane"
    assert offered_lane(address, info) == f"{sock_dir}/p.sock.lane"


async def test_lane_survives_many_streams_at_once(sock_dir) -> None:
    plugin = make_plugin(State())
    async with (
        plugin.serving(f"unix:{sock_dir}/p.sock") as server,
        PluginClient(server.address) as client,
    ):
        bodies = [pattern(1000 + 7919 * i, i) for i in range(64)]

        async def one(body: bytes) -> bytes:
            resp = await client.request("POST", "/echo", body=body)
            return await resp.read()

        assert await asyncio.gather(*(one(b) for b in bodies)) == bodies
        assert client.transport == "lane"
        assert client.open_streams() == 0

