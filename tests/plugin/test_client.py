"""PluginClient: status validation, incomplete streams, cancellation, errors."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from plugin_helpers import State, make_plugin, serve

from chunkwire._core import encode_response_frame
from chunkwire._proto import http_pb2
from chunkwire._wire import SERVE_HTTP_METHOD
from chunkwire.client import PluginClient
from chunkwire.errors import (
    BodyTooLarge,
    IncompleteResponse,
    InvalidStatus,
    PluginCallError,
    ProtocolError,
)


@pytest.mark.parametrize("code", [42, 1000])
async def test_invalid_status_is_a_clear_error(listen: str, code: int) -> None:
    async with serve(make_plugin(State()), listen) as (_, client):
        with pytest.raises(InvalidStatus) as info:
            await client.request("GET", f"/status/{code}")
        assert info.value.status == code
        assert str(code) in str(info.value)


async def test_status_zero_means_200(listen: str) -> None:
    async with serve(make_plugin(State()), listen) as (_, client):
        resp = await client.request("GET", "/status/0")
        assert resp.status == 200


async def test_unreachable_plugin(sock_dir: str) -> None:
    async with PluginClient(f"unix:{sock_dir}/nobody.sock") as client:
        with pytest.raises(PluginCallError) as info:
            await client.request("GET", "/")
        assert info.value.code == grpc.StatusCode.UNAVAILABLE


async def test_read_limit(listen: str) -> None:
    async with serve(make_plugin(State()), listen) as (_, client):
        resp = await client.request("GET", "/download", query={"size": 300_000})
        with pytest.raises(BodyTooLarge):
            await resp.read(limit=100_000)


async def test_failing_body_source_raises_and_cancels(listen: str) -> None:
    state = State()

    async def body():  # type: ignore[no-untyped-def]
        yield b"x" * 10
        await asyncio.wait_for(state.started.wait(), 5)
        raise ValueError("source broke")

    async with serve(make_plugin(state), listen) as (_, client):
        with pytest.raises(ValueError, match="source broke"):
            await client.request("POST", "/slow-upload", body=body())
        await asyncio.wait_for(state.cancelled.wait(), 5)
        resp = await client.request("GET", "/small")
        assert await resp.read() == b"hello world"


async def test_timeout_waiting_for_init(listen: str) -> None:
    state = State()
    async with serve(make_plugin(state), listen) as (_, client):
        with pytest.raises(asyncio.TimeoutError):
            await client.request("GET", "/slow", timeout=0.2)
        await asyncio.wait_for(state.cancelled.wait(), 5)


async def test_both_context_manager_forms(listen: str) -> None:
    async with serve(make_plugin(State()), listen) as (_, client):
        async with client.request("GET", "/small") as resp:
            assert await resp.read() == b"hello world"
        async with await client.request("GET", "/small") as resp:
            assert await resp.read() == b"hello world"


async def test_concurrent_requests_share_the_channel(listen: str) -> None:
    async with serve(make_plugin(State()), listen) as (_, client):

        async def one(i: int) -> bytes:
            async with client.request("GET", f"/items/{i}") as resp:
                return await resp.read()

        results = await asyncio.gather(*(one(i) for i in range(50)))
    assert results == [f"item {i}".encode() for i in range(50)]


class _FakePlugin:
    """A raw server that breaks the stream rules in chosen ways."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    async def serve_http(self, request_iterator, context):  # type: ignore[no-untyped-def]
        await context.read()
        init = http_pb2.ServeHTTPResponse(
            init=http_pb2.ServeHTTPResponseInit(status_code=200)
        ).SerializeToString()
        if self.mode == "no-complete":
            await context.write(init + encode_response_frame(b"partial"))
        elif self.mode == "no-init":
            await context.write(encode_response_frame(b"x", complete=True))
        elif self.mode == "double-init":
            await context.write(init + encode_response_frame(b"a"))
            await context.write(init + encode_response_frame(b"b", complete=True))
        elif self.mode == "nothing":
            pass


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("no-complete", IncompleteResponse),
        ("no-init", ProtocolError),
        ("double-init", ProtocolError),
        ("nothing", PluginCallError),
    ],
)
async def test_broken_streams_are_errors(sock_dir: str, mode: str, error: type) -> None:
    server = grpc.aio.server()
    handler = grpc.stream_stream_rpc_method_handler(
        _FakePlugin(mode).serve_http, request_deserializer=None, response_serializer=None
    )
    service, method = SERVE_HTTP_METHOD.strip("/").split("/")
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service, {method: handler}),)
    )
    server.add_insecure_port(f"unix:{sock_dir}/fake.sock")
    await server.start()
    try:
        async with PluginClient(f"unix:{sock_dir}/fake.sock") as client:
            with pytest.raises(error):
                resp = await client.request("GET", "/")
                await resp.read()
    finally:
        await server.stop(None)


async def test_numpy_and_bytearray_bodies_are_one_buffer(listen: str) -> None:
    import hashlib
    import json

    import numpy as np

    array = np.arange(100_000, dtype=np.uint32)
    async with serve(make_plugin(State()), listen) as (_, client):
        for body in (array, bytearray(array.tobytes()), memoryview(array.tobytes())):
            resp = await client.request("POST", "/upload", body=body)
            doc = json.loads(await resp.read())
            assert doc["sha256"] == hashlib.sha256(array.tobytes()).hexdigest()
            assert doc["chunks"] == 7  # 400,000 bytes in 64 KiB chunks
            resp = await client.request("POST", "/info", body=body)
            # Sent as one buffer, so its length is known up front.
            assert json.loads(await resp.read())["content_length"] == 400_000


async def test_str_body_rejected(listen: str) -> None:
    async with serve(make_plugin(State()), listen) as (_, client):
        with pytest.raises(TypeError, match="not str"):
            await client.request("POST", "/upload", body="text")  # type: ignore[arg-type]
