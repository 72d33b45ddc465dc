"""Cutting WebSocket messages into data frames and putting them back (sans-I/O)."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest

from chunkwire import _websocket as wire
from chunkwire._proto import websocket_pb2


def datas(frames):
    return [wire.parse(frame).data for frame in frames]


def roundtrip(payload, text, chunk_size, limit=0):
    fragmenter = wire.Fragmenter(chunk_size)
    parts = datas(fragmenter.frames(payload, text))
    assembler = wire.Assembler(limit)
    results = [assembler.add(part) for part in parts]
    assert all(result is None for result in results[:-1])
    return parts, results[-1]


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 65536])
def test_random_messages_survive_any_chunk_size(chunk_size):
    rng = random.Random(chunk_size)
    for size in [0, 1, chunk_size - 1, chunk_size, chunk_size + 1, 3 * chunk_size + 5, 200_000]:
        if size < 0 or (chunk_size == 1 and size > 5000):
            continue
        payload = rng.randbytes(size)
        parts, message = roundtrip(payload, False, chunk_size)
        assert hashlib.sha256(message).digest() == hashlib.sha256(payload).digest()
        assert all(len(part.payload) <= chunk_size for part in parts)
        assert [part.final for part in parts] == [False] * (len(parts) - 1) + [True]
        assert len(parts) == max(1, -(-size // chunk_size))


def test_text_messages_come_back_as_str():
    text = "héllo ✓ " * 5000
    parts, message = roundtrip(text.encode(), True, 1000)
    assert message == text
    assert all(part.text for part in parts)


def test_any_buffer_is_cut_by_bytes():
    array = np.arange(10_000, dtype=np.int32).reshape(100, 100)
    _, message = roundtrip(array, False, 4096)
    assert message == array.tobytes()


def test_a_fragmenter_is_reused_across_messages():
    fragmenter = wire.Fragmenter(10)
    for size in (25, 3, 40, 0, 10):
        payload = bytes(range(size))
        assembler = wire.Assembler(0)
        results = [assembler.add(part) for part in datas(fragmenter.frames(payload, False))]
        assert results[-1] == payload


def test_limit_at_the_bound_passes():
    payload = random.Random(1).randbytes(1000)
    assert roundtrip(payload, False, 64, limit=1000)[1] == payload


def test_limit_one_past_the_bound_raises():
    with pytest.raises(wire.MessageTooBig) as info:
        roundtrip(bytes(1001), False, 64, limit=1000)
    assert info.value.limit == 1000


def test_limit_is_checked_before_the_message_is_whole():
    assembler = wire.Assembler(100)
    frame = websocket_pb2.WebSocketData(payload=bytes(60), final=False)
    assert assembler.add(frame) is None
    with pytest.raises(wire.MessageTooBig):
        assembler.add(frame)


def test_text_flag_changing_within_a_message_is_refused():
    assembler = wire.Assembler(0)
    assembler.add(websocket_pb2.WebSocketData(payload=b"a", text=True, final=False))
    with pytest.raises(wire.BadFrame, match="text flag"):
        assembler.add(websocket_pb2.WebSocketData(payload=b"b", text=False, final=True))


def test_invalid_utf8_text_is_refused():
    assembler = wire.Assembler(0)
    with pytest.raises(wire.BadFrame, match="UTF-8"):
        assembler.add(websocket_pb2.WebSocketData(payload=b"\xff\xfe", text=True, final=True))


@pytest.mark.parametrize(
    ("code", "sendable"),
    [(999, False), (1000, True), (1004, False), (1005, False), (1006, False), (1011, True),
     (1014, True), (1015, False), (2999, False), (3000, True), (4999, True), (5000, False)],
)
def test_sendable_close_codes(code, sendable):
    assert wire.sendable_close_code(code) is sendable


def test_close_reason_is_clipped_to_whole_characters():
    reason = "é" * 100  # 200 bytes
    clipped = wire.clip_reason(reason)
    assert len(clipped.encode()) <= wire.MAX_REASON_BYTES
    assert clipped == "é" * 61
