"""Channel choice per plugin address: plaintext on loopback and unix sockets, TLS elsewhere."""

from __future__ import annotations

import asyncio
import logging

import grpc
import httpx
import pytest
from gateway_fakes import FakePlugin, response, run, serve_gateway

from chunkwire.gateway import Gateway
from chunkwire.gateway.upstream import Upstream, channel_options, is_loopback


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("unix:/tmp/p.sock", True),
        ("127.0.0.1:5000", True),
        ("127.8.9.1:5000", True),
        ("[::1]:5000", True),
        ("localhost:5000", True),
        ("10.0.0.2:5000", False),
        ("plugins.example:443", False),
    ],
)
def test_is_loopback(address, loopback):
    assert is_loopback(address) is loopback


def test_tls_only_where_not_loopback():
    assert Upstream("a", "127.0.0.1:1", chunk_size=65536)._credentials is None
    assert Upstream("a", "unix:/x.sock", chunk_size=65536)._credentials is None
    remote = Upstream("a", "10.1.2.3:443", chunk_size=65536)
    assert isinstance(remote._credentials, grpc.ChannelCredentials)
    explicit = grpc.ssl_channel_credentials()
    assert Upstream("a", "127.0.0.1:1", chunk_size=1, credentials=explicit)._credentials is explicit


@pytest.mark.parametrize("chunk", [65536, 1 << 20])
def test_message_limits_are_one_chunk_plus_the_head(chunk):
    options = dict(channel_options(chunk, 64 * 1024))
    for key in ("grpc.max_receive_message_length", "grpc.max_send_message_length"):
        assert chunk + 64 * 1024 <= options[key] <= chunk + 64 * 1024 + 4096
    assert options["grpc.max_reconnect_backoff_ms"] <= 1000
    assert options["grpc.initial_reconnect_backoff_ms"] <= 100
    # gRPC core uses the minimum backoff as each connection attempt's timeout.
    assert options["grpc.min_reconnect_backoff_ms"] >= 1000


def test_bad_address_is_rejected():
    with pytest.raises(ValueError):
        Upstream("a", "nonsense", chunk_size=1)


def test_window_is_fixed_and_bounds_unread_responses():
    import asyncio

    import grpc.aio

    from chunkwire.gateway.upstream import stream_window

    options = dict(channel_options(65536))
    assert options["grpc.http2.bdp_probe"] == 0
    assert options["grpc.http2.lookahead_bytes"] == stream_window(65536) == 256 * 1024
    assert stream_window(1 << 20) == 2 << 20

    async def main() -> int:
        written = 0

        async def handler(request_iterator, context):
            nonlocal written
            await context.read()
            block = bytes(65536)
            for _ in range(200):
                await context.write(block)
                written += 1

        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "t.S",
                    {
                        "C": grpc.stream_stream_rpc_method_handler(
                            handler, request_deserializer=None, response_serializer=None
                        )
                    },
                ),
            )
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(
                f"127.0.0.1:{port}", options=channel_options(65536)
            ) as channel:
                call = channel.stream_stream(
                    "/t.S/C", request_serializer=None, response_deserializer=None
                )()
                await call.write(b"go")
                await asyncio.sleep(1.0)  # the response is not read meanwhile
                stalled = written
                call.cancel()
        finally:
            await server.stop(0)
        return stalled

    # Writes complete while their bytes fit the window (plus one in the transport).
    assert asyncio.run(main()) * 65536 <= 256 * 1024 + 2 * 65536


def test_a_new_channel_asks_describe_once(caplog: pytest.LogCaptureFixture) -> None:
    # The transport choice and the connection watch (identity log) share one answer.
    async def ok(first, context, log):
        await context.write(response(200, b"ok"))

    async def main() -> int:
        fake = FakePlugin({"/ok": ok})
        fake.mux = True  # Describe is what is counted, on either fixture value
        address = await fake.start()
        try:
            gateway = Gateway({"fake": address})
            async with serve_gateway(gateway) as base, httpx.AsyncClient(base_url=base) as client:
                for _ in range(3):
                    assert (await client.get("/plugins/fake/ok")).text == "ok"
                for _ in range(500):  # hang guard: the watch logs once the channel is up
                    if any(" is 'fake' " in r.getMessage() for r in caplog.records):
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise AssertionError("the connection watch never introduced the plugin")
            return fake.log.describes
        finally:
            await fake.stop()

    with caplog.at_level(logging.INFO, logger="chunkwire.gateway"):
        assert run(main()) == 1
