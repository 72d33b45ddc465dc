"""WebSocket session streams in the sans-I/O protocol: the WEBSOCKET flag, the
acceptor's END closing the stream on both sides, and empty END frames at zero credit."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule
from test_mux_machine import MuxMachine

from chunkwire._core import BatchWriter, decode_batch
from chunkwire.transport.mux import (
    END,
    INITIAL_CONNECTION_WINDOW,
    INITIAL_WINDOW,
    WEBSOCKET,
    Connection,
    DataReceived,
    Kind,
    ResetCode,
    StreamOpened,
    StreamReset,
    StreamStateError,
)
from chunkwire.transport.opener import MuxConnection
from chunkwire.transport.sender import BatchSender
from chunkwire.transport.session import SessionCall


def pair() -> tuple[Connection, Connection]:
    return Connection(opener=True), Connection(opener=False)


def ship(src: Connection, dst: Connection) -> list:
    return dst.receive(src.take_frames())


def open_session(opener: Connection, acceptor: Connection) -> int:
    sid = opener.open(b"init", websocket=True)
    frames = opener.take_frames()
    assert frames == [(sid, Kind.OPEN, WEBSOCKET, b"init")]
    events = acceptor.receive(frames)
    assert events == [StreamOpened(sid, b"init", False, True)]
    return sid


def test_http_open_has_no_websocket_flag():
    opener = Connection(opener=True)
    sid = opener.open(b"init", end=True)
    assert opener.take_frames() == [(sid, Kind.OPEN, END, b"init")]


def test_acceptors_end_closes_the_session_on_both_sides():
    opener, acceptor = pair()
    sid = open_session(opener, acceptor)
    acceptor.send_data(sid, b"accept")
    acceptor.send_data(sid, b"", end=True)
    assert sid not in acceptor.streams  # closed once END is sent: no DELIVERED
    events = ship(acceptor, opener)
    assert events == [DataReceived(sid, b"accept", False), DataReceived(sid, b"", True)]
    assert sid not in opener.streams
    # Data crossing the END is dropped, and its connection credit is given back.
    before = acceptor._recv_credit + acceptor._conn_grant
    assert acceptor.receive([(sid, Kind.DATA, 0, b"x" * 1000)]) == []
    assert acceptor._recv_credit + acceptor._conn_grant == before
    assert opener.streams == {} and acceptor.streams == {}


def test_openers_end_half_closes_and_the_acceptor_reads_eof():
    opener, acceptor = pair()
    sid = open_session(opener, acceptor)
    opener.send_data(sid, b"close")
    opener.send_data(sid, b"", end=True)
    events = ship(opener, acceptor)
    assert events[-1] == DataReceived(sid, b"", True)
    assert not acceptor.streams[sid].remote_open
    assert acceptor.streams[sid].local_open  # the plugin still answers
    acceptor.send_data(sid, b"close")
    acceptor.send_data(sid, b"", end=True)
    ship(acceptor, opener)
    assert opener.streams == {} and acceptor.streams == {}


def test_an_http_streams_end_does_not_close_it():
    opener, acceptor = pair()
    sid = opener.open(b"init", end=True)
    ship(opener, acceptor)
    acceptor.send_data(sid, b"response", end=True)
    ship(acceptor, opener)
    assert sid in opener.streams and sid in acceptor.streams  # DELIVERED closes it


def test_empty_end_needs_no_credit_but_data_does():
    opener, acceptor = pair()
    sid = open_session(opener, acceptor)
    acceptor.send_data(sid, b"x" * INITIAL_WINDOW)  # the whole window, unread
    assert not acceptor.can_send(sid)
    with pytest.raises(StreamStateError):
        acceptor.send_data(sid, b"y")
    acceptor.send_data(sid, b"", end=True)  # at zero credit
    events = ship(acceptor, opener)
    assert [e.end for e in events] == [False, True]
    assert not any(isinstance(e, StreamReset) for e in events)


def test_nonempty_data_past_the_credit_is_still_a_flow_control_error():
    opener, acceptor = pair()
    sid = open_session(opener, acceptor)
    window = b"x" * INITIAL_WINDOW
    events = opener.receive([(sid, Kind.DATA, 0, window), (sid, Kind.DATA, 0, b"y")])
    assert events[-1] == StreamReset(
        sid, ResetCode.FLOW_CONTROL, "DATA beyond the stream's credit", False
    )


def test_empty_data_at_zero_connection_credit_is_no_connection_error():
    opener, acceptor = pair()
    count = INITIAL_CONNECTION_WINDOW // INITIAL_WINDOW
    sids = [open_session(opener, acceptor) for _ in range(count)]
    for sid in sids:
        acceptor.send_data(sid, b"x" * INITIAL_WINDOW)
    ship(acceptor, opener)
    assert opener._recv_credit == 0
    acceptor.send_data(sids[0], b"", end=True)
    assert ship(acceptor, opener) == [DataReceived(sids[0], b"", True)]


def test_delivered_on_a_session_is_a_protocol_error():
    opener, acceptor = pair()
    sid = open_session(opener, acceptor)
    events = acceptor.receive([(sid, Kind.DELIVERED, 0, b"")])
    assert events[0].code == ResetCode.PROTOCOL
    with pytest.raises(StreamStateError):
        opener.deliver(sid)  # the response direction never "ended" for DELIVERED


def test_sessions_do_not_count_against_the_stream_limit():
    """Long-lived sessions must not keep requests out: only HTTP streams are bounded."""
    opener, acceptor = Connection(opener=True), Connection(opener=False, max_streams=2)
    sessions = [open_session(opener, acceptor) for _ in range(5)]
    assert acceptor.sessions == 5
    requests = [opener.open(b"init") for _ in range(3)]
    events = ship(opener, acceptor)
    assert [e.stream_id for e in events if isinstance(e, StreamOpened)] == requests[:2]
    refused = ship(acceptor, opener)
    assert refused == [StreamReset(requests[2], ResetCode.REFUSED, "too many streams", True)]
    for sid in sessions:  # ended sessions leave the count
        acceptor.send_data(sid, b"", end=True)
    assert acceptor.sessions == 0
    ship(acceptor, opener)
    assert opener.sessions == 0
    assert set(opener.streams) == set(acceptor.streams) == set(requests[:2])


class SessionMachine(MuxMachine):
    """The connection machine (test_mux_machine) with WebSocket sessions among the
    requests: a side ends a session with an empty END at any credit, and the
    acceptor's END closes it on both sides. The machine's invariants hold: no
    connection error, receivers within their windows, bytes in order, and empty
    tables with all credit back at the end."""

    @rule(end=st.booleans())
    def open_session(self, end: bool) -> None:
        sid = self.opener.conn.open(b"init", end=end, websocket=True)
        self.opened += 1
        self._ship(self.opener, self.acceptor)
        assert sid == self.opened

    @rule(pick=st.integers(0, 10**6), from_opener=st.booleans())
    def end_session(self, pick: int, from_opener: bool) -> None:
        side, other = (self.opener, self.acceptor) if from_opener else (self.acceptor, self.opener)
        ids = sorted(sid for sid, s in side.conn.streams.items() if s.session and s.local_open)
        if not ids:
            return
        sid = ids[pick % len(ids)]
        side.conn.send_data(sid, b"", end=True)  # whatever the credit
        side.sent.setdefault(sid, bytearray())
        if not from_opener:
            assert sid not in side.conn.streams
        self._ship(side, other)

    @invariant()
    def sessions_are_counted(self) -> None:
        for side in (self.opener, self.acceptor):
            conn = side.conn
            assert conn.sessions == sum(s.session for s in conn.streams.values())


SessionMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestSessionMachine = SessionMachine.TestCase


class _Loopback:
    """A carrier whose peer is an in-process acceptor ``Connection`` the test drives."""

    def __init__(self) -> None:
        self.acceptor = Connection(opener=False)
        self.events: list = []
        self.batches: asyncio.Queue[bytes] = asyncio.Queue()

    async def read(self) -> bytes:
        return await self.batches.get()

    async def write(self, batch: bytes) -> None:
        self.events += self.acceptor.receive(decode_batch(batch))

    def answer(self) -> None:
        writer = BatchWriter(1 << 20)
        for frame in self.acceptor.take_frames():
            assert writer.add(*frame)
        self.batches.put_nowait(writer.take())

    def cancel(self) -> bool:
        return True

    async def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.OK

    async def details(self) -> str:
        return ""

    def sender(self, proto, limit):  # type: ignore[no-untyped-def]
        return BatchSender(proto, self.write, limit)

    decode = staticmethod(decode_batch)


def test_the_plugins_end_releases_a_write_waiting_for_credit():
    """The gateway writes to a plugin that reads nothing until its credit is gone;
    the plugin then sends its close with END on the same frame: the waiting write
    ends (the session is over), the close is read, then EOF, and no table keeps it."""

    async def main() -> None:
        carrier = _Loopback()
        conn = MuxConnection(None, window=INITIAL_WINDOW, carrier=carrier)  # type: ignore[arg-type]
        conn.start()
        call = SessionCall(conn)
        await call.write(b"init")
        chunk = bytes(64 * 1024)

        async def flood() -> int:
            sent = 0
            with contextlib.suppress(asyncio.InvalidStateError):
                while True:
                    await call.write(chunk)
                    sent += 1
            return sent

        writing = asyncio.ensure_future(flood())
        while not carrier.events or conn.proto.can_send(call.stream_id):
            await asyncio.sleep(0.01)
        sid = call.stream_id
        assert carrier.events[0] == StreamOpened(sid, b"init", False, True)
        assert not writing.done()  # waiting for credit the plugin never grants
        carrier.acceptor.send_data(sid, b"close", end=True)  # no credit asked back
        carrier.answer()
        assert await asyncio.wait_for(writing, 5) == INITIAL_WINDOW // len(chunk)
        assert bytes(await call.read()) == b"close"
        assert await call.read() is grpc.aio.EOF
        assert call.done()
        assert conn.proto.streams == {} and conn.calls == {}
        assert carrier.acceptor.streams == {}
        await conn.close()

    asyncio.run(main())
