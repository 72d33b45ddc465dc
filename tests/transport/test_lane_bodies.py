"""How response bodies that came through the lane's ring reach a stream's reader,
and which DATA frames a lane's sender puts in its ring."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from chunkwire._core import (
    ResponseFrame,
    RingReader,
    RingWriter,
    decode_response_frame,
    encode_batch,
    encode_request_frame,
    encode_response_frame,
)
from chunkwire.transport.lane import (
    FLUSH,
    RING,
    LaneSender,
    RingBody,
    Rings,
    decode_lane_batch,
)
from chunkwire.transport.mux import END, Connection, Kind
from chunkwire.transport.opener import MuxCall

RING_SIZE = 1 << 20
PEER_ID, OWN_ID = 5, 6


class _IdleSender:
    busy = False


class _Recorder:
    """What a MuxCall asks of its connection while it hands out messages."""

    sender: object = _IdleSender()

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def consumed(self, stream_id: int, size: int) -> None:
        self.sizes.append(size)

    def deliver(self, stream_id: int) -> None:
        pass


def _rings() -> tuple[RingWriter, Rings]:
    peer = RingWriter(RING_SIZE, PEER_ID)
    reader = RingReader(os.dup(peer.fileno()), PEER_ID, RING_SIZE)
    return peer, Rings(None, reader)


def _record(peer: RingWriter, frames: list[tuple[int, int, bytes]]) -> bytes:
    return encode_batch([(sid, RING, value, peer.write(body)) for sid, value, body in frames])


def _message_size(body: bytes, value: int) -> int:
    return len(encode_response_frame(body, complete=bool(value & END), flush=bool(value & FLUSH)))


def _read_all(frames_mode: bool, spec: list[tuple[int, int, bytes]]) -> tuple[list[Any], list[int]]:
    """Decode one record of RING frames, give stream 1's DATA to a MuxCall, read it out."""

    async def main() -> tuple[list[Any], list[int]]:
        peer, rings = _rings()
        try:
            decoded = decode_lane_batch(_record(peer, spec), rings, True)
            assert rings.reader is not None and rings.reader.outstanding == 0
            assert len(rings.owed) == len(spec)  # every chunk released at once
            recorder = _Recorder()
            call = MuxCall(recorder)  # type: ignore[arg-type]
            call.stream_id = 1
            call.frames = frames_mode
            for sid, kind, value, payload in decoded:
                assert kind == Kind.DATA
                if sid == 1:
                    call.received(payload, bool(value & END))
            out = []
            while call.ready():
                out.append(await call.read())
            return out, recorder.sizes
        finally:
            rings.close()
            peer.close()

    return asyncio.run(main())


A, B, C, D = (os.urandom(n) for n in (20000, 30000, 40000, 50000))


def test_bodies_of_a_stream_in_one_record_reach_a_frame_reader_as_one_view() -> None:
    spec = [(1, 0, A), (1, 0, B), (3, 0, C), (1, END, D)]
    out, sizes = _read_all(True, spec)
    assert all(type(frame) is ResponseFrame for frame in out)
    # A and B were copied out together and leave as one body; stream 3's
    # chunk between B and D splits the run, so D is a body of its own.
    assert [bytes(frame.body) for frame in out] == [A + B, D]
    assert [(frame.init, frame.complete, frame.flush) for frame in out] == [
        (None, False, False),
        (None, True, False),
    ]
    # The credit given back is that of the DATA frames the RING frames stood for.
    assert sizes == [_message_size(A, 0) + _message_size(B, 0), _message_size(D, END)]


def test_a_flush_ends_the_body_a_frame_reader_gets() -> None:
    out, sizes = _read_all(True, [(1, FLUSH, A), (1, 0, B), (1, END, C)])
    assert [bytes(frame.body) for frame in out] == [A, B + C]
    assert [frame.flush for frame in out] == [True, False]
    assert out[1].complete
    assert sizes == [_message_size(A, FLUSH), _message_size(B, 0) + _message_size(C, END)]


def test_other_readers_get_each_message_as_it_was_sent() -> None:
    spec = [(1, 0, A), (1, FLUSH, B), (1, END, C)]
    out, sizes = _read_all(False, spec)
    frames = [decode_response_frame(message) for message in out]
    assert [bytes(f.body) for f in frames] == [A, B, C]
    assert [(f.complete, f.flush) for f in frames] == [(False, False), (False, True), (True, False)]
    assert sizes == [len(message) for message in out]
    assert sizes == [_message_size(body, value) for _, value, body in spec]


def test_a_ring_body_stands_for_its_message() -> None:
    buffer = A + B
    body = RingBody(buffer, len(A), len(buffer), True, False)
    assert bytes(body.body) == B
    message = body.message()
    assert bytes(message) == encode_response_frame(B, complete=True)
    assert len(body) == body.nbytes == message.nbytes


def test_the_sender_rings_http_bodies_and_never_websocket_frames() -> None:
    """A session's DATA goes inline even when its bytes happen to read as a
    request body message (the kind of the stream decides, not the bytes)."""

    async def main() -> None:
        proto = Connection(opener=True)
        http = proto.open(encode_request_frame(b"init"))
        session = proto.open(b"upgrade", websocket=True)
        own = RingWriter(RING_SIZE, OWN_ID)
        rings = Rings(own, None)

        async def get_rings() -> Rings:
            return rings

        async def write(record: bytes) -> None:
            pass

        sender = LaneSender(
            proto, write, 1 << 20, get_rings, opener=True, on_stall=lambda reason: None
        )
        body = encode_request_frame(os.urandom(40000))
        try:
            ringed = await sender._ringed((http, Kind.DATA, 0, body), None, rings)  # type: ignore[arg-type]
            assert ringed[1] == RING and own.used == 40000
            inline = await sender._ringed((session, Kind.DATA, 0, body), None, rings)  # type: ignore[arg-type]
            assert inline == (session, Kind.DATA, 0, body) and own.used == 40000
            gone = await sender._ringed((99, Kind.DATA, 0, body), None, rings)  # type: ignore[arg-type]
            assert gone[1] == Kind.DATA
        finally:
            rings.close()

    asyncio.run(main())


class _BusySender:
    busy = True


class _Busy(_Recorder):
    sender: object = _BusySender()


def test_a_ring_body_lets_the_credit_it_frees_leave_before_the_reader_goes_on() -> None:
    """The reader of ring bodies writes them to its client next, which takes a
    while: the sender, with the credit just freed, runs first (one loop turn)."""

    async def main() -> list[str]:
        peer, rings = _rings()
        order: list[str] = []
        try:
            decoded = decode_lane_batch(_record(peer, [(1, 0, A), (1, END, B)]), rings, True)
            call = MuxCall(_Busy())  # type: ignore[arg-type]
            call.stream_id = 1
            call.frames = True
            call.received(decoded[0][3], False)
            asyncio.get_running_loop().call_soon(order.append, "sender")
            frame = await call.read()
            order.append("reader")
            assert bytes(frame.body) == A
            # The last body needs no credit back: no turn is given up.
            call.received(decoded[1][3], True)
            asyncio.get_running_loop().call_soon(order.append, "sender")
            frame = await call.read()
            order.append("reader")
            assert bytes(frame.body) == B and frame.complete
        finally:
            rings.close()
            peer.close()
        return order

    assert asyncio.run(main()) == ["sender", "reader", "reader", "sender"]
