"""Hypothesis feeds the lane's record decoder frames a broken or hostile peer could send.

Real rings (a memfd written by the "peer", mapped read-only by the side
under test), records built from random frames: honest RING frames for
chunks the peer wrote, descriptors with random ring ids, offsets and
lengths, random flags, credit for chunks never lent, arbitrary payloads.
Every record either decodes, each RING frame into the DATA frame it stands
for, or fails with a MuxError (the connection's error); never another
exception, and no chunk view is left outstanding.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from chunkwire._core import (
    RING_DESCRIPTOR_SIZE,
    RingReader,
    RingWriter,
    decode_response_frame,
    encode_batch,
    encode_ring_descriptor,
)
from chunkwire.transport.lane import (
    FLUSH,
    RING,
    RING_CREDIT,
    RingBody,
    Rings,
    decode_lane_batch,
)
from chunkwire.transport.mux import END, Kind, MuxError

PEER_RING = 64 * 1024
OWN_RING = 32 * 1024
PEER_ID, OWN_ID = 7, 9

numbers = st.integers(min_value=0, max_value=2**64 - 1)
small = st.sampled_from([0, 1, 2, 3, 4095, 4096, PEER_RING // 2, PEER_RING - 1, PEER_RING])


def _descriptor(ring_id: int, offset: int, length: int) -> bytes:
    return encode_ring_descriptor(ring_id & 0xFFFFFFFF, offset, length)


LENT = _descriptor(OWN_ID, 0, 1000)  # the one chunk this side has lent the peer


@st.composite
def frames(draw: st.DrawFn) -> list[tuple]:
    out = []
    # Mostly what an honest peer sends, so that whole records get through
    # too; then one thing wrong at a time.
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        choice = draw(
            st.sampled_from(["honest"] * 6 + ["descriptor", "credit", "bytes", "other"] * 1)
        )
        stream = draw(st.sampled_from([1, 1, 3, 3, 0, 2**31]))
        value = draw(st.sampled_from([0, 0, 0, END, END, FLUSH, END | FLUSH, 4, 2**63]))
        if choice == "honest":
            size = draw(st.integers(min_value=1, max_value=PEER_RING // 2))
            out.append(("honest", stream, value, size))
        elif choice == "descriptor":
            ring_id = draw(st.sampled_from([PEER_ID, OWN_ID, 0, 2**32 - 1]))
            offset = draw(st.one_of(small, numbers))
            length = draw(st.one_of(small, numbers))
            out.append((stream, RING, value, _descriptor(ring_id, offset, length)))
        elif choice == "credit":
            stream = draw(st.sampled_from([0, 0, 0, 1]))
            count = draw(st.integers(min_value=0, max_value=3))
            parts = [
                draw(st.sampled_from([LENT, LENT, _descriptor(OWN_ID, 0, 100)]))
                if draw(st.booleans())
                else _descriptor(draw(st.sampled_from([OWN_ID, PEER_ID])), draw(small), draw(small))
                for _ in range(count)
            ]
            tail = draw(st.sampled_from([b"", b"", b"x", b"\0" * (RING_DESCRIPTOR_SIZE - 1)]))
            out.append((stream, RING_CREDIT, 0, b"".join(parts) + tail))
        elif choice == "bytes":
            kind = draw(st.sampled_from([RING, RING_CREDIT]))
            out.append((stream, kind, value, draw(st.binary(max_size=48))))
        else:
            kind = draw(st.sampled_from([int(Kind.DATA), int(Kind.WINDOW), 12, 2**31 - 1]))
            out.append((stream, kind, value & 0xFFFF, draw(st.binary(max_size=16))))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames(), st.booleans())
@example([("honest", 1, 0, 20000), (0, RING_CREDIT, 0, LENT)], True)
@example([("honest", 1, END, 100), (1, RING_CREDIT, 0, LENT)], False)
@example([(0, RING_CREDIT, 0, LENT + LENT)], True)
@example([("honest", 3, FLUSH, 5000)], False)
def test_any_record_decodes_or_fails_with_a_mux_error(spec: list[tuple], opener: bool) -> None:
    peer = RingWriter(PEER_RING, PEER_ID)
    own = RingWriter(OWN_RING, OWN_ID)
    assert own.write(bytes(1000)) == LENT
    reader = RingReader(os.dup(peer.fileno()), PEER_ID, PEER_RING)
    rings = Rings(own, reader)
    try:
        built, honest = [], {}
        for item in spec:
            if item[0] == "honest":
                _, stream, value, size = item
                body = os.urandom(size)
                descriptor = peer.write(body)
                if descriptor is None:
                    continue  # the peer's ring is full: it would have waited
                honest[descriptor] = body
                built.append((stream, RING, value, descriptor))
            else:
                built.append(item)
        record = encode_batch(built)
        try:
            out = decode_lane_batch(record, rings, opener)
        except MuxError as error:
            event(f"refused: {str(error).split(':')[0][:40]}")
        else:
            event(f"decoded, {sum(f[1] == RING for f in built)} ring frames")
            # Accepted credit: on stream 0, whole descriptors, only the lent chunk, once.
            credit = [f for f in built if f[1] == RING_CREDIT]
            assert all(f[0] == 0 for f in credit)
            assert [bytes(f[3]) for f in credit if f[3]] in ([], [LENT]) and all(
                f[3] for f in credit
            )
            assert own.used == (0 if credit else 1000)
            if credit:
                event("credit accepted")
            passed = [f for f in built if f[1] != RING_CREDIT]
            assert len(out) == len(passed)
            for frame, decoded in zip(passed, out, strict=True):
                if frame[1] != RING:
                    assert decoded[:3] == frame[:3] and bytes(decoded[3]) == bytes(frame[3])
                    continue
                assert frame[2] & ~(END | FLUSH) == 0 and (opener or not frame[2] & FLUSH)
                assert decoded[1] == Kind.DATA and decoded[2] == frame[2] & END
                if not opener:
                    continue  # requests: the body is checked on the plugin's side
                body = honest.get(bytes(frame[3]))
                payload = decoded[3]
                assert isinstance(payload, RingBody)
                message = decode_response_frame(payload.message())
                assert len(payload) == payload.nbytes == len(payload.message())
                assert bytes(payload.body) == bytes(message.body)
                if body is not None:
                    assert bytes(message.body) == body
                assert message.complete == bool(frame[2] & END)
                assert message.flush == bool(frame[2] & FLUSH)
        assert reader.outstanding == 0
    finally:
        rings.close()
        peer.close()
