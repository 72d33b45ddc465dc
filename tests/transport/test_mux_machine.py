"""Hypothesis drives both sides of a connection through random interleavings.

Frames cross in random-sized slices, readers consume or stall at random,
either side resets, and at every step: no connection error, no receiver
holds more than its window plus one frame, every byte arrives once and in
order, and once every stream has ended, both stream tables are empty and
all connection credit is back.
"""

from __future__ import annotations

import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from chunkwire.transport.mux import (
    INITIAL_CONNECTION_WINDOW,
    INITIAL_WINDOW,
    Connection,
    DataReceived,
    ResetCode,
    StreamDelivered,
    StreamOpened,
    StreamReset,
)

MAX_FRAME = 96 * 1024


class Side:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.inbox: list = []  # frames in flight towards this side
        self.received: dict[int, bytearray] = {}
        self.sent: dict[int, bytearray] = {}
        self.unconsumed: dict[int, int] = {}
        self.ended: set[int] = set()  # remote END seen

    def apply(self, events: list, other: Side) -> None:
        for event in events:
            if isinstance(event, (StreamOpened, DataReceived)):
                if isinstance(event, DataReceived):
                    self.received.setdefault(event.stream_id, bytearray()).extend(event.payload)
                    self.unconsumed[event.stream_id] = self.unconsumed.get(
                        event.stream_id, 0
                    ) + len(event.payload)
                if event.end:
                    self.ended.add(event.stream_id)
            elif isinstance(event, (StreamReset, StreamDelivered)):
                if isinstance(event, StreamReset):
                    # Only the test's own CANCEL resets: never a rule broken.
                    assert event.remote and event.code == ResetCode.CANCEL, event
                self.unconsumed.pop(event.stream_id, None)


class MuxMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.opener = Side(Connection(opener=True, window=2 * INITIAL_WINDOW))
        self.acceptor = Side(Connection(opener=False))
        self.rng = random.Random(0)
        self.opened = 0

    def _ship(self, src: Side, dst: Side) -> None:
        dst.inbox.extend(src.conn.take_frames())

    @rule(end=st.booleans())
    def open_stream(self, end: bool) -> None:
        sid = self.opener.conn.open(b"init", end=end)
        self.opened += 1
        self._ship(self.opener, self.acceptor)
        assert sid == self.opened

    @rule(
        size=st.integers(1, MAX_FRAME),
        end=st.booleans(),
        from_opener=st.booleans(),
        pick=st.integers(0, 10**6),
    )
    def send(self, size: int, end: bool, from_opener: bool, pick: int) -> None:
        side, other = (self.opener, self.acceptor) if from_opener else (self.acceptor, self.opener)
        ready = [sid for sid in side.conn.streams if side.conn.can_send(sid)]
        if not ready:
            return
        sid = ready[pick % len(ready)]
        payload = self.rng.randbytes(size)
        side.conn.send_data(sid, payload, end=end)
        side.sent.setdefault(sid, bytearray()).extend(payload)
        self._ship(side, other)

    @rule(size=st.integers(1, MAX_FRAME), from_opener=st.booleans(), pick=st.integers(0, 10**6))
    def flood(self, size: int, from_opener: bool, pick: int) -> None:
        # A writer that sends whenever credit allows, up to a stop.
        side, other = (self.opener, self.acceptor) if from_opener else (self.acceptor, self.opener)
        ids = sorted(side.conn.streams)
        if not ids:
            return
        sid = ids[pick % len(ids)]
        for _ in range(64):
            if not side.conn.can_send(sid):
                break
            payload = self.rng.randbytes(size)
            side.conn.send_data(sid, payload)
            side.sent.setdefault(sid, bytearray()).extend(payload)
        self._ship(side, other)

    @rule(count=st.integers(1, 50), to_opener=st.booleans())
    def deliver_frames(self, count: int, to_opener: bool) -> None:
        dst, src = (self.opener, self.acceptor) if to_opener else (self.acceptor, self.opener)
        frames, dst.inbox = dst.inbox[:count], dst.inbox[count:]
        dst.apply(dst.conn.receive(frames), src)
        self._ship(dst, src)

    @rule(pick=st.integers(0, 10**6), fraction=st.floats(0, 1), opener=st.booleans())
    def consume(self, pick: int, fraction: float, opener: bool) -> None:
        side, other = (self.opener, self.acceptor) if opener else (self.acceptor, self.opener)
        ids = sorted(side.unconsumed)
        if not ids:
            return
        sid = ids[pick % len(ids)]
        n = int(side.unconsumed[sid] * fraction)
        side.unconsumed[sid] -= n
        side.conn.consumed(sid, n)
        self._ship(side, other)

    @rule(pick=st.integers(0, 10**6), opener=st.booleans())
    def reset(self, pick: int, opener: bool) -> None:
        side, other = (self.opener, self.acceptor) if opener else (self.acceptor, self.opener)
        ids = sorted(side.conn.streams)
        if not ids:
            return
        sid = ids[pick % len(ids)]
        side.conn.reset(sid, ResetCode.CANCEL, "test")
        side.unconsumed.pop(sid, None)
        self._ship(side, other)

    @rule(pick=st.integers(0, 10**6))
    def deliver_response(self, pick: int) -> None:
        conn = self.opener.conn
        ids = sorted(sid for sid, s in conn.streams.items() if not s.remote_open)
        if not ids:
            return
        sid = ids[pick % len(ids)]
        conn.deliver(sid)
        self.opener.unconsumed.pop(sid, None)
        self._ship(self.opener, self.acceptor)

    @invariant()
    def receivers_hold_at_most_window_plus_one_frame(self) -> None:
        for side in (self.opener, self.acceptor):
            for stream in side.conn.streams.values():
                assert stream.unconsumed <= side.conn.window + MAX_FRAME
            held = sum(s.unconsumed for s in side.conn.streams.values())
            assert held <= side.conn.connection_window + MAX_FRAME

    @invariant()
    def bytes_arrive_in_order(self) -> None:
        for src, dst in ((self.opener, self.acceptor), (self.acceptor, self.opener)):
            for sid, data in dst.received.items():
                assert src.sent[sid].startswith(data)

    @precondition(lambda self: self.opened > 0)
    @rule()
    def finish_everything(self) -> None:
        # Close every stream, let every frame cross, consume what is left.
        for sid in list(self.opener.conn.streams):
            self.opener.conn.reset(sid, ResetCode.CANCEL, "done")
        for _ in range(4):
            self._ship(self.opener, self.acceptor)
            self._ship(self.acceptor, self.opener)
            for dst, src in ((self.acceptor, self.opener), (self.opener, self.acceptor)):
                frames, dst.inbox = dst.inbox, []
                dst.apply(dst.conn.receive(frames), src)
                for sid in list(dst.unconsumed):
                    dst.conn.consumed(sid, dst.unconsumed.pop(sid))
        assert not self.opener.conn.streams
        assert not self.acceptor.conn.streams
        for side in (self.opener, self.acceptor):
            conn = side.conn
            # Every byte is granted back or pending grant below the threshold.
            assert conn._recv_credit + conn._conn_grant == conn.connection_window
        assert self.opener.conn.send_credit + self.acceptor.conn._conn_grant == (
            INITIAL_CONNECTION_WINDOW
        )


MuxMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestMuxMachine = MuxMachine.TestCase
