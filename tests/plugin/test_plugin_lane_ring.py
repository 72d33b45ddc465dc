"""Bodies through the lane's shared-memory rings, and peers that abuse them.

The test plays the gateway's end with the lane module's own connect (real
rings, real memfds over SCM_RIGHTS) and then breaks one rule at a time:
each failure is one log line, the lane closes, the plugin goes on serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket

import pytest
from plugin_helpers import State, init_message, make_plugin, pattern

from chunkwire._core import (
    decode_batch,
    encode_batch,
    encode_request_frame,
    encode_ring_descriptor,
)
from chunkwire.client import PluginClient
from chunkwire.errors import PluginCallError
from chunkwire.transport import lane as lane_module
from chunkwire.transport.lane import (
    FLUSH,
    RING,
    RING_CREDIT,
    RING_SIZE,
    RING_THRESHOLD,
    LaneLink,
    LaneSettings,
    Rings,
    accept_handshake,
    connect_lane,
    send_hello,
)
from chunkwire.transport.mux import END, Kind

RECORD = 4 << 20


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("chunkwire")
    ]


async def _round_trip(address: str) -> None:
    async with PluginClient(address, transport="lane") as client:
        body = pattern(300_000, 7)
        resp = await client.request("POST", "/echo", body=body)
        assert await resp.read() == body


async def _closed(link: LaneLink) -> None:
    """Read until the plugin closes the lane (a reset by it counts)."""
    try:
        while await link.read() is not None:
            pass
    except (ConnectionError, lane_module.LaneError):
        pass


def _get(url: str) -> bytes:
    return init_message("GET", url) + encode_request_frame(b"", complete=True)


def _open(stream_id: int = 1, url: str = "/echo") -> tuple[int, int, int, bytes]:
    return (stream_id, Kind.OPEN, 0, init_message("POST", url))


@pytest.mark.parametrize("size", [RING_THRESHOLD - 64, 300_000, 3_000_000])
async def test_bodies_above_the_threshold_go_through_the_rings(sock_dir, size) -> None:
    plugin = make_plugin(State())
    async with (
        plugin.serving(f"unix:{sock_dir}/p.sock") as server,
        PluginClient(server.address, chunk_size=65536) as client,
    ):
        body = pattern(size, 11)
        resp = await client.request("POST", "/echo", body=body)
        assert await resp.read() == body
        assert client.transport == "lane"
        (conn,) = client._pool.connections  # type: ignore[union-attr]
        (served,) = server.mux.connections
        through = size >= RING_THRESHOLD
        assert (conn.sender.ringed > 0) is through  # requests, gateway -> plugin
        assert (served.sender.ringed > 0) is through  # responses, plugin -> gateway
        rings = conn._call._rings
        # every chunk came back: both rings are empty again
        await asyncio.sleep(0)
        for _ in range(200):
            if rings.writer.used == 0 and rings.reader.used == 0:
                break
            await asyncio.sleep(0.01)
        assert rings.writer.used == 0 and rings.reader.used == 0


async def test_a_body_larger_than_the_ring_streams_through_it(sock_dir) -> None:
    # Many times the ring's size each way: the space must come back as credit.
    plugin = make_plugin(State())
    size = 5 * RING_SIZE + 12345
    async with (
        plugin.serving(f"unix:{sock_dir}/p.sock") as server,
        PluginClient(server.address) as client,
    ):
        resp = await client.request("GET", f"/download?size={size}&seed=5&write=100000")
        assert await resp.read() == pattern(size, 5)
        body = pattern(size, 6)
        resp = await client.request("POST", "/echo", body=body)
        assert await resp.read() == body


def _ring_id(link: LaneLink) -> int:
    assert link.rings.writer is not None
    return link.rings.writer.ring_id


HOSTILE = {
    "outside-the-ring": (
        lambda rid: (1, RING, 0, encode_ring_descriptor(rid, RING_SIZE + 10, 100)),
        "bad ring descriptor on stream 1",
    ),
    "past-the-end": (
        lambda rid: (1, RING, 0, encode_ring_descriptor(rid, RING_SIZE - 10, 100)),
        "bad ring descriptor on stream 1",
    ),
    "wrong-ring-id": (
        lambda rid: (1, RING, 0, encode_ring_descriptor(rid ^ 1, 0, 100)),
        "bad ring descriptor on stream 1",
    ),
    "not-where-written": (
        lambda rid: (1, RING, 0, encode_ring_descriptor(rid, 4096, 100)),
        "bad ring descriptor on stream 1",
    ),
    "short-descriptor": (
        lambda rid: (1, RING, 0, encode_ring_descriptor(rid, 0, 100)[:19]),
        "bad ring descriptor on stream 1",
    ),
    "flush-on-a-request": (
        lambda rid: (1, RING, END | FLUSH, encode_ring_descriptor(rid, 0, 100)),
        "RING frame on stream 1 with flags 3",
    ),
    "unknown-flag": (
        lambda rid: (1, RING, 4, encode_ring_descriptor(rid, 0, 100)),
        "with flags 4",
    ),
    "credit-never-lent": (
        lambda rid: (0, RING_CREDIT, 0, encode_ring_descriptor(rid, 0, 100)),
        "bad ring credit",
    ),
    "credit-not-whole": (
        lambda rid: (0, RING_CREDIT, 0, b"x" * 7),
        "RING_CREDIT of 7 bytes is not whole descriptors",
    ),
    "credit-on-a-stream": (
        lambda rid: (1, RING_CREDIT, 0, b"x" * 20),
        "RING_CREDIT on stream 1",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_a_bad_ring_frame_fails_the_lane_with_one_line(sock_dir, caplog, case) -> None:
    make_frame, reason = HOSTILE[case]
    plugin = make_plugin(State())
    async with plugin.serving(f"unix:{sock_dir}/p.sock") as server:
        link = await connect_lane(f"{sock_dir}/p.sock.lane", RECORD)
        try:
            # A ring id that is the plugin's for credit, ours for descriptors.
            ring_id = _ring_id(link)
            if "credit" in case:
                ring_id = link.rings.reader.ring_id  # type: ignore[union-attr]
            await link.write(encode_batch([_open(), make_frame(ring_id)]))
            await asyncio.wait_for(_closed(link), 30)
        finally:
            link.close()
        lines = _warnings(caplog)
        assert len(lines) == 1, lines
        assert reason in lines[0], lines
        await _round_trip(server.address)
        assert len(_warnings(caplog)) == 1


async def test_a_ring_frame_from_a_peer_without_a_ring_fails_the_lane(sock_dir, caplog) -> None:
    plugin = make_plugin(State())
    async with plugin.serving(f"unix:{sock_dir}/p.sock") as server:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, f"{sock_dir}/p.sock.lane")
        await send_hello(sock, None)
        peer = await lane_module.receive_hello(sock)
        link = await LaneLink.over(sock, RECORD, Rings(None, peer))
        try:
            frame = (1, RING, 0, encode_ring_descriptor(1, 0, 100))
            await link.write(encode_batch([_open(), frame]))
            await asyncio.wait_for(_closed(link), 30)
        finally:
            link.close()
        lines = _warnings(caplog)
        assert len(lines) == 1 and "the peer sent no ring" in lines[0], lines
        await _round_trip(server.address)


async def test_a_peer_that_returns_no_credit_fails_the_lane(sock_dir, caplog) -> None:
    state = State()
    plugin = make_plugin(state, lane=LaneSettings(credit_timeout=0.5))
    size = 4 * RING_SIZE
    async with plugin.serving(f"unix:{sock_dir}/p.sock") as server:
        link = await connect_lane(f"{sock_dir}/p.sock.lane", RECORD)
        try:
            # Open a download and grant far more stream and connection credit
            # than the ring holds; then read everything, returning no credit.
            grant = 8 * RING_SIZE
            await link.write(
                encode_batch(
                    [
                        (1, Kind.OPEN, END, _get(f"/download?size={size}")),
                        (1, Kind.WINDOW, grant, b""),
                        (0, Kind.WINDOW, grant, b""),
                    ]
                )
            )
            ringed = 0
            while (record := await asyncio.wait_for(link.read(), 30)) is not None:
                ringed += sum(1 for f in decode_batch(record) if f[1] == RING)
        finally:
            link.close()
        assert ringed > 0
        lines = _warnings(caplog)
        assert len(lines) == 1, lines
        assert "returned no ring credit for 0.5 s" in lines[0], lines
        for _ in range(500):
            if not server.mux.connections:
                break
            await asyncio.sleep(0.01)
        assert not server.mux.connections
        await _round_trip(server.address)


class _RoguePlugin:
    """A lane with a ring that answers the first stream with ``frame``."""

    def __init__(self, path: str, frame) -> None:  # type: ignore[no-untyped-def]
        self.path = path
        self.frame = frame
        self.server: asyncio.AbstractServer | None = None
        self.links: list[LaneLink] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def _accept(self, sock: socket.socket) -> None:
        rings = await accept_handshake(sock)
        link = await LaneLink.over(sock, RECORD, rings)
        self.links.append(link)
        try:
            assert await link.read() is not None  # the client's OPEN
            assert rings.writer is not None
            await link.write(encode_batch([self.frame(rings.writer.ring_id)]))
            await _closed(link)
        finally:
            link.close()

    async def __aenter__(self) -> _RoguePlugin:
        loop = asyncio.get_running_loop()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        listener.listen()
        listener.setblocking(False)
        self._listener = listener

        async def accept() -> None:
            while True:
                sock, _ = await loop.sock_accept(listener)
                sock.setblocking(False)
                task = loop.create_task(self._accept(sock))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        self._task = loop.create_task(accept())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._listener.close()


@pytest.mark.parametrize(
    "case", ["outside-the-ring", "past-the-end", "wrong-ring-id", "not-where-written"]
)
async def test_a_bad_ring_frame_from_the_plugin_fails_the_requests(
    sock_dir, caplog, case
) -> None:
    make_frame, reason = HOSTILE[case]
    plugin = make_plugin(State())
    async with plugin.serving(f"unix:{sock_dir}/p.sock") as server:
        assert server.lane is not None
        await server.lane.stop_accepting()
        async with (
            _RoguePlugin(f"{sock_dir}/p.sock.lane", make_frame),
            PluginClient(server.address, transport="lane") as client,
        ):
            with pytest.raises(PluginCallError):
                await client.request("POST", "/echo", body=b"x")
    lines = _warnings(caplog)
    assert len(lines) == 1, lines
    assert reason in lines[0], lines


def test_request_frames_are_what_the_receiver_rebuilds() -> None:
    # The byte count a RING frame stands for is the DATA payload's: the
    # receiver rebuilds the message, so the encodings must agree exactly.
    for size in (1, 127, 128, 16383, 16384, RING_THRESHOLD, 1 << 20):
        for complete in (False, True):
            message = encode_request_frame(b"x" * size, complete=complete)
            assert lane_module._message_size(size, complete, False) == len(message)


def _random_frames(rng: random.Random, ring_id: int, peer_ring: int) -> list:
    """Frames a confused or hostile gateway might send, around the rings' bounds."""
    frames = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice([Kind.OPEN, Kind.DATA, Kind.WINDOW, Kind.RESET, Kind.DELIVERED,
                           RING, RING, RING_CREDIT, RING_CREDIT, 0, 12])
        stream_id = rng.choice([0, 1, 1, 2, 7])
        value = rng.choice([0, 1, 2, 3, 4, 1 << 40])
        rid = rng.choice([ring_id, ring_id, peer_ring, 0, ring_id ^ 1])
        edge = [0, 1, RING_SIZE // 2, RING_SIZE - 1, RING_SIZE, RING_SIZE + 1, 1 << 63]
        offset, length = rng.choice(edge), rng.choice(edge)
        payload = rng.choice([
            b"",
            rng.randbytes(rng.randint(1, 64)),
            encode_ring_descriptor(rid, offset, length),
            encode_ring_descriptor(rid, offset, length)[: rng.randint(0, 19)],
            init_message("POST", "/echo"),
        ])
        frames.append((stream_id, kind, value, payload))
    return frames


async def test_random_frames_close_the_lane_with_one_line_or_none(sock_dir, caplog) -> None:
    # After each random record a PING tells whether the lane is still open:
    # open (PONG) means nothing was logged, closed means exactly one line.
    rng = random.Random(20261126)
    plugin = make_plugin(State())
    closed = 0
    async with plugin.serving(f"unix:{sock_dir}/p.sock") as server:
        for case in range(150):
            before = len(_warnings(caplog))
            link = await connect_lane(f"{sock_dir}/p.sock.lane", RECORD)
            try:
                frames = _random_frames(rng, _ring_id(link), link.rings.reader.ring_id)
                await link.write(encode_batch(frames))
                await link.write(encode_batch([(0, Kind.PING, case + 1, b"")]))
                alive = False
                while not alive:
                    try:
                        record = await asyncio.wait_for(link.read(), 30)
                    except (ConnectionError, lane_module.LaneError):
                        record = None
                    if record is None:
                        break
                    alive = any(f[1] == Kind.PONG and f[2] == case + 1
                                for f in decode_batch(record))
            finally:
                link.close()
            if not alive:
                # the plugin's side may log just after our read saw the close
                for _ in range(200):
                    if len(_warnings(caplog)) > before:
                        break
                    await asyncio.sleep(0.01)
            lines = _warnings(caplog)[before:]
            assert len(lines) == (0 if alive else 1), (case, frames, lines)
            closed += not alive
        assert not [r for r in caplog.records if r.exc_info]  # no traceback anywhere
        assert 10 < closed < 150  # the cases cover both outcomes
        await _round_trip(server.address)
