"""The plugin's Plugin service: Describe, Connect's rules, GOAWAY on stop."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from plugin_helpers import State, make_plugin, pattern

import chunkwire
from chunkwire._core import encode_batch
from chunkwire._proto import plugin_pb2
from chunkwire._wire import identity
from chunkwire.client import PluginClient
from chunkwire.errors import PluginCallError
from chunkwire.plugin import Plugin
from chunkwire.transport import CONNECT_METHOD, DESCRIBE_METHOD
from chunkwire.transport.mux import END, Kind


async def _describe(address: str) -> plugin_pb2.PluginInfo:
    async with grpc.aio.insecure_channel(address.removeprefix("tcp:")) as channel:
        call = channel.unary_unary(
            DESCRIBE_METHOD, request_serializer=identity, response_deserializer=identity
        )
        return plugin_pb2.PluginInfo.FromString(await call(b"", timeout=10))


@pytest.mark.parametrize(
    ("transports", "expected"), [(None, ["call", "mux"]), (("call",), ["call"])]
)
async def test_describe_lists_what_the_plugin_offers(transports, expected) -> None:
    kwargs = {} if transports is None else {"transports": transports}
    plugin = Plugin("described", **kwargs)
    async with plugin.serving("127.0.0.1:0") as server:
        info = await _describe(server.address)
    assert info.name == "described"
    assert info.version == chunkwire.__version__
    assert list(info.transports) == expected


def test_transports_must_include_call() -> None:
    with pytest.raises(ValueError, match="transports"):
        Plugin("x", transports=("mux",))
    with pytest.raises(ValueError, match="transports"):
        Plugin("x", transports=("call", "lane"))


@pytest.mark.parametrize(
    ("transports", "expected"), [(("call", "mux"), "mux"), (("call",), "call")]
)
async def test_client_auto_negotiates(transports, expected) -> None:
    plugin = make_plugin(State(), transports=transports)
    async with plugin.serving("127.0.0.1:0") as server, PluginClient(server.address) as client:
        assert client.transport is None
        resp = await client.request("POST", "/echo", body=pattern(200_000, 3))
        assert await resp.read() == pattern(200_000, 3)
        assert client.transport == expected


async def test_forced_mux_on_a_plugin_without_it_fails_clearly() -> None:
    plugin = make_plugin(State(), transports=("call",))
    async with (
        plugin.serving("127.0.0.1:0") as server,
        PluginClient(server.address, transport="mux") as client,
    ):
        with pytest.raises(PluginCallError) as info:
            await client.request("GET", "/small")
        assert info.value.code == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (b"\x0a\x05\x08", "malformed batch"),  # truncated
        (encode_batch([(3, Kind.DATA, 0, b"x")]), "never opened"),
        (encode_batch([(0, Kind.PING, 0, b""), (0, Kind.GOAWAY, 0, b"")]), "opener"),
    ],
)
async def test_a_bad_batch_fails_the_connection_with_a_clear_status(batch, message) -> None:
    plugin = make_plugin(State())
    async with (
        plugin.serving("127.0.0.1:0") as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        call = channel.stream_stream(
            CONNECT_METHOD, request_serializer=None, response_deserializer=None
        )()
        await call.write(batch)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            while await call.read() is not grpc.aio.EOF:
                pass  # a PONG, if any
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in info.value.details()
        # The plugin still serves other connections.
        async with PluginClient(server.address, transport="mux") as client:
            resp = await client.request("GET", "/small")
            assert await resp.read() == b"hello world"
        for _ in range(500):  # the plugin sees the DELIVERED, or the end of the call
            if server.mux_streams == 0:
                break
            await asyncio.sleep(0.01)
        assert server.mux_streams == 0


async def test_bad_init_resets_only_that_stream() -> None:
    plugin = make_plugin(State())
    async with (
        plugin.serving("127.0.0.1:0") as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        call = channel.stream_stream(
            CONNECT_METHOD, request_serializer=None, response_deserializer=None
        )()
        await call.write(encode_batch([(1, Kind.OPEN, END, b"\xff\xff")]))
        from chunkwire._core import decode_batch

        frames = []
        while not any(kind == Kind.RESET for _, kind, _, _ in frames):
            frames += decode_batch(await call.read())
        (reset,) = [f for f in frames if f[1] == Kind.RESET]
        assert reset[0] == 1 and reset[2] == 4  # PROTOCOL
        assert b"bad request init" in bytes(reset[3])
        call.cancel()


async def test_stop_sends_goaway_lets_running_streams_finish_and_refuses_new_ones() -> None:
    state = State()
    plugin = make_plugin(state)
    server = await plugin.start("127.0.0.1:0")
    try:
        async with PluginClient(server.address, transport="mux") as client:
            resp = await client.request("GET", "/flush")
            assert await resp.body.__anext__() == b"first"
            await state.started.wait()
            stopping = asyncio.ensure_future(server.stop(grace=10))
            for _ in range(100):
                await asyncio.sleep(0.01)
                if client._pool is not None and not any(c.usable for c in client._pool.connections):
                    break
            else:
                raise AssertionError("no GOAWAY reached the client")
            state.release.set()
            assert await resp.read() == b"second"
            with pytest.raises(PluginCallError):
                await client.request("GET", "/small")
            await stopping
    finally:
        await server.stop(0)
