"""WebSocket sessions on a raw Connect call: what the plugin sends on the wire."""

from __future__ import annotations

import asyncio

import grpc

from chunkwire import _websocket as wire
from chunkwire._core import decode_batch, encode_batch
from chunkwire._proto import http_pb2
from chunkwire.plugin import Plugin
from chunkwire.transport import CONNECT_METHOD
from chunkwire.transport.mux import END, WEBSOCKET, Kind


def _init(path: str) -> bytes:
    request = http_pb2.ServeHTTPRequestInit(
        method="GET", url=f"ws://plugin.test{path}", request_uri=path
    )
    return wire.encode_init(request, [], 0)


async def _frames_until(call, done) -> list:  # type: ignore[no-untyped-def]
    frames: list = []
    while not done(frames):
        frames += [
            (sid, kind, value, bytes(payload))
            for sid, kind, value, payload in decode_batch(await call.read())
        ]
    return frames


async def test_a_bad_session_init_resets_that_stream_and_a_session_ends_with_an_empty_end():
    plugin = Plugin("p")

    @plugin.websocket("/teapot")
    async def teapot(ws):  # type: ignore[no-untyped-def]
        await ws.deny(418, body="short and stout")

    async with (
        plugin.serving("127.0.0.1:0") as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        call = channel.stream_stream(
            CONNECT_METHOD, request_serializer=None, response_deserializer=None
        )()
        await call.write(encode_batch([(1, Kind.OPEN, WEBSOCKET, b"\xff\xff")]))
        frames = await _frames_until(call, lambda f: any(k == Kind.RESET for _, k, _, _ in f))
        (reset,) = [f for f in frames if f[1] == Kind.RESET]
        assert reset[:3] == (1, Kind.RESET, 4)  # PROTOCOL
        assert b"bad WebSocket init" in reset[3]

        await call.write(encode_batch([(2, Kind.OPEN, WEBSOCKET, _init("/teapot"))]))
        frames = await _frames_until(
            call, lambda f: any(s == 2 and v & END for s, k, v, _ in f if k == Kind.DATA)
        )
        data = [(value, payload) for sid, kind, value, payload in frames if kind == Kind.DATA]
        assert data[-1] == (END, b"")  # the session's end: an empty DATA frame with END
        (deny,) = [wire.parse(payload).deny for _, payload in data[:-1]]
        assert (deny.status_code, deny.body) == (418, b"short and stout")
        for _ in range(500):
            if server.mux_streams == 0:
                break
            await asyncio.sleep(0.01)
        assert server.mux_streams == 0  # closed on the plugin's side once END left
        assert server.websocket.servicer.calls == 0
        call.cancel()


async def test_a_stopping_plugin_ends_the_connection_once_its_session_ended():
    """GOAWAY, then the running session finishes, then the plugin ends the Connect call
    itself (status OK): stop() returns then, not after its grace period (60 s here)."""
    plugin = Plugin("p")
    release = asyncio.Event()

    @plugin.websocket("/wait")
    async def wait(ws):  # type: ignore[no-untyped-def]
        await ws.accept()
        await release.wait()
        await ws.close(4000, "done")

    server = await plugin.start("127.0.0.1:0")
    async with grpc.aio.insecure_channel(server.address) as channel:
        call = channel.stream_stream(
            CONNECT_METHOD, request_serializer=None, response_deserializer=None
        )()
        await call.write(encode_batch([(1, Kind.OPEN, WEBSOCKET, _init("/wait"))]))
        await _frames_until(call, lambda f: any(k == Kind.DATA for _, k, _, _ in f))
        stopping = asyncio.ensure_future(server.stop(60))
        frames = await _frames_until(call, lambda f: any(k == Kind.GOAWAY for _, k, _, _ in f))
        assert (0, Kind.GOAWAY, 1, b"") in frames
        assert not stopping.done()  # the session still runs
        release.set()
        frames = await _frames_until(
            call, lambda f: any(s == 1 and v & END for s, k, v, _ in f if k == Kind.DATA)
        )
        (close,) = [p for _, k, _, p in frames if k == Kind.DATA and p]
        assert wire.parse(close).close.code == 4000
        # The plugin ends the call (hang guards: the grace is 60 s).
        assert await asyncio.wait_for(call.read(), 30) is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
        await asyncio.wait_for(stopping, 30)
