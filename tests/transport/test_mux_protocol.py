"""The sans-I/O stream protocol: states, credit, resets, delivery, connection errors."""

from __future__ import annotations

import random

import pytest

from chunkwire.transport.mux import (
    END,
    INITIAL_CONNECTION_WINDOW,
    INITIAL_WINDOW,
    Connection,
    ContinueRequested,
    CreditAvailable,
    DataReceived,
    GoAwayReceived,
    Kind,
    MuxError,
    PongReceived,
    ResetCode,
    State,
    StreamDelivered,
    StreamOpened,
    StreamReset,
    StreamStateError,
)

CHUNK = 64 * 1024


def pair(**kwargs: int) -> tuple[Connection, Connection]:
    opener = Connection(opener=True, **kwargs)
    acceptor = Connection(opener=False, **kwargs)
    return opener, acceptor


def flow(src: Connection, dst: Connection) -> list:
    return dst.receive(src.take_frames())


def stamped(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def test_open_data_end_delivered_closes_both_sides() -> None:
    opener, acceptor = pair()
    sid = opener.open(b"init", end=True)
    assert flow(opener, acceptor) == [StreamOpened(sid, b"init", True)]
    assert acceptor.streams[sid].state is State.HALF_CLOSED_REMOTE
    acceptor.send_data(sid, b"head")
    acceptor.send_data(sid, b"last", end=True)
    assert acceptor.streams[sid].state is State.ENDED
    events = flow(acceptor, opener)
    assert events == [DataReceived(sid, b"head", False), DataReceived(sid, b"last", True)]
    assert opener.streams[sid].state is State.ENDED
    opener.deliver(sid)
    assert not opener.streams
    assert flow(opener, acceptor) == [StreamDelivered(sid)]
    assert not acceptor.streams


def test_delivered_before_the_request_ended_closes_the_stream() -> None:
    # The plugin answered without reading the body.
    opener, acceptor = pair()
    sid = opener.open(b"init")
    flow(opener, acceptor)
    acceptor.send_data(sid, b"answer", end=True)
    flow(acceptor, opener)
    assert opener.streams[sid].state is State.HALF_CLOSED_REMOTE
    opener.deliver(sid)
    assert flow(opener, acceptor) == [StreamDelivered(sid)]
    assert not acceptor.streams and not opener.streams


def test_deliver_before_the_response_ended_is_refused_locally() -> None:
    opener, acceptor = pair()
    sid = opener.open(b"init", end=True)
    flow(opener, acceptor)
    with pytest.raises(StreamStateError, match="has not ended"):
        opener.deliver(sid)


def test_delivered_before_the_response_ended_resets_the_stream() -> None:
    opener, acceptor = pair()
    sid = opener.open(b"init", end=True)
    flow(opener, acceptor)
    events = acceptor.receive([(sid, Kind.DELIVERED, 0, b"")])
    assert events == [
        StreamReset(sid, ResetCode.PROTOCOL, "DELIVERED before the response ended", False)
    ]
    assert not acceptor.streams
    assert acceptor.take_frames() == [
        (sid, Kind.RESET, ResetCode.PROTOCOL, b"DELIVERED before the response ended")
    ]


def test_stream_ids_increase_and_reuse_is_a_connection_error() -> None:
    opener, acceptor = pair()
    first = opener.open(b"a", end=True)
    second = opener.open(b"b", end=True)
    assert second == first + 1
    flow(opener, acceptor)
    with pytest.raises(MuxError, match="ids must increase"):
        acceptor.receive([(first, Kind.OPEN, END, b"again")])


@pytest.mark.parametrize(
    ("side", "frame", "message"),
    [
        ("acceptor", (5, Kind.DATA, 0, b"x"), "never opened"),
        ("acceptor", (0, Kind.DATA, 0, b"x"), "never opened"),
        ("acceptor", (1, Kind.PING, 1, b""), "belongs to stream 0"),
        ("acceptor", (0, Kind.GOAWAY, 0, b""), "opener, which never sends it"),
        ("acceptor", (1, Kind.CONTINUE, 0, b""), "opener, which never sends it"),
        ("opener", (1, Kind.OPEN, 0, b"init"), "acceptor, which never sends it"),
        ("opener", (1, Kind.DELIVERED, 0, b""), "acceptor, which never sends it"),
        ("opener", (0, Kind.WINDOW, 0, b""), "WINDOW of 0 bytes"),
        ("opener", (9, Kind.RESET, 1, b""), "never opened"),
    ],
)
def test_frames_that_break_connection_rules(side: str, frame: tuple, message: str) -> None:
    conn = Connection(opener=side == "opener")
    with pytest.raises(MuxError, match=message):
        conn.receive([frame])


def test_unknown_kinds_are_ignored() -> None:
    conn = Connection(opener=False)
    assert conn.receive([(0, 77, 1, b"future")]) == []


def test_reset_both_ways_with_code_and_reason() -> None:
    opener, acceptor = pair()
    a = opener.open(b"a")
    b = opener.open(b"b")
    flow(opener, acceptor)
    assert opener.reset(a, ResetCode.CANCEL, "client went away")
    assert not opener.reset(a, ResetCode.CANCEL)  # already closed
    assert acceptor.reset(b, ResetCode.INTERNAL, "handler failed: KeyError")
    assert flow(opener, acceptor) == [StreamReset(a, ResetCode.CANCEL, "client went away", True)]
    assert flow(acceptor, opener) == [
        StreamReset(b, ResetCode.INTERNAL, "handler failed: KeyError", True)
    ]
    assert not opener.streams and not acceptor.streams


def test_frames_for_a_closed_stream_are_dropped_and_their_credit_returned() -> None:
    opener, acceptor = pair()
    sid = opener.open(b"init")
    flow(opener, acceptor)
    acceptor.reset(sid, ResetCode.ABORTED, "")
    acceptor.take_frames()
    # The opener did not see the reset yet: its data crosses it.
    payload = stamped(CHUNK, 1)
    opener.send_data(sid, payload)
    assert flow(opener, acceptor) == []
    assert acceptor._conn_grant == CHUNK  # released at once, not leaked


def test_continue_reaches_the_opener() -> None:
    opener, acceptor = pair()
    sid = opener.open(b"init")
    flow(opener, acceptor)
    acceptor.request_body(sid)
    assert flow(acceptor, opener) == [ContinueRequested(sid)]


def test_ping_is_answered_with_pong() -> None:
    opener, acceptor = pair()
    opener.ping(42)
    assert flow(opener, acceptor) == []
    assert flow(acceptor, opener) == [PongReceived(42)]


def test_goaway_refuses_later_streams_and_keeps_earlier_ones() -> None:
    opener, acceptor = pair()
    kept = opener.open(b"a")
    flow(opener, acceptor)
    refused = opener.open(b"b")
    assert acceptor.go_away() == kept
    events = flow(acceptor, opener)
    assert events == [
        StreamReset(refused, ResetCode.REFUSED, "going away", True),
        GoAwayReceived(kept),
    ]
    assert list(opener.streams) == [kept]
    with pytest.raises(StreamStateError, match="going away"):
        opener.open(b"c")
    # The OPEN already in flight is refused by the acceptor too.
    assert flow(opener, acceptor) == []
    assert acceptor.take_frames() == [(refused, Kind.RESET, ResetCode.REFUSED, b"going away")]


def test_too_many_streams_are_refused() -> None:
    opener, acceptor = pair(max_streams=2)
    ids = [opener.open(b"x") for _ in range(3)]
    events = flow(opener, acceptor)
    assert [e.stream_id for e in events] == ids[:2]
    assert acceptor.take_frames() == [(ids[2], Kind.RESET, ResetCode.REFUSED, b"too many streams")]


def test_connection_lost_ends_every_stream() -> None:
    opener, _ = pair()
    ids = [opener.open(b"x") for _ in range(3)]
    events = opener.lost("plugin went away")
    assert [(e.stream_id, e.code, e.remote) for e in events] == [
        (sid, ResetCode.CONNECTION_LOST, True) for sid in ids
    ]
    assert not opener.streams and not opener.has_frames


# -- credit -----------------------------------------------------------------------


def fill(sender: Connection, sid: int, size: int, seed: int) -> list[bytes]:
    """Send chunks of ``size`` while credit allows; what was sent."""
    sent = []
    while sender.can_send(sid):
        chunk = stamped(size, seed + len(sent))
        sender.send_data(sid, chunk)
        sent.append(chunk)
    return sent


@pytest.mark.parametrize("chunk", [1000, CHUNK, INITIAL_WINDOW, 3 * INITIAL_WINDOW])
def test_stalled_reader_stops_the_sender_within_window_plus_one_frame(chunk: int) -> None:
    opener, acceptor = pair()
    sid = opener.open(b"init")
    flow(opener, acceptor)
    sent = fill(opener, sid, chunk, 0)
    received = [e.payload for e in flow(opener, acceptor)]
    assert received == sent
    total = sum(map(len, sent))
    assert INITIAL_WINDOW <= total < INITIAL_WINDOW + chunk
    assert not opener.can_send(sid)
    with pytest.raises(StreamStateError, match="no send credit"):
        opener.send_data(sid, b"x")
    # A reader that never consumes grants nothing: the sender stays stopped.
    assert acceptor.take_frames() == []
    assert not opener.can_send(sid)


def test_every_grant_reopens_a_stalled_sender_exactly_that_far() -> None:
    opener, acceptor = pair()
    sid = opener.open(b"init")
    flow(opener, acceptor)
    received = 0
    for round_ in range(6):
        sent = fill(opener, sid, CHUNK, round_ * 100)
        events = flow(opener, acceptor)
        assert [e.payload for e in events] == sent
        received += sum(map(len, sent))
        assert acceptor.streams[sid].unconsumed <= INITIAL_WINDOW + CHUNK
        # Consume a quarter window: exactly one grant of that size.
        acceptor.consumed(sid, INITIAL_WINDOW // 4)
        grants = acceptor.take_frames()
        assert (sid, Kind.WINDOW, INITIAL_WINDOW // 4, b"") in grants
        events = opener.receive(grants)
        assert CreditAvailable(sid) in events
        assert opener.can_send(sid)


def test_a_consumer_below_a_quarter_window_waits_while_the_sender_has_room() -> None:
    opener, acceptor = pair()
    sid = opener.open(b"init")
    flow(opener, acceptor)
    for i in range(2):  # half the window: the sender still has credit
        opener.send_data(sid, stamped(CHUNK, i))
    flow(opener, acceptor)
    acceptor.consumed(sid, INITIAL_WINDOW // 4 - 1)
    assert acceptor.take_frames() == []
    acceptor.consumed(sid, 1)
    assert acceptor.take_frames() == [(sid, Kind.WINDOW, INITIAL_WINDOW // 4, b"")]


def test_a_stopped_sender_gets_every_release_at_once() -> None:
    opener, acceptor = pair()
    sid = opener.open(b"init")
    flow(opener, acceptor)
    fill(opener, sid, CHUNK, 0)
    flow(opener, acceptor)
    acceptor.consumed(sid, 100)
    grants = acceptor.take_frames()
    assert grants == [(sid, Kind.WINDOW, 100, b"")]
    opener.receive(grants)
    assert opener.can_send(sid)


def test_a_stalled_stream_does_not_stop_its_neighbours() -> None:
    opener, acceptor = pair()
    stalled = opener.open(b"big")
    other = opener.open(b"small")
    flow(opener, acceptor)
    fill(opener, stalled, CHUNK, 0)
    flow(opener, acceptor)
    assert not opener.can_send(stalled)
    for i in range(100):
        assert opener.can_send(other)
        opener.send_data(other, stamped(1024, i))
        (event,) = flow(opener, acceptor)
        acceptor.consumed(other, 1024)
        opener.receive(acceptor.take_frames())
        assert event.payload == stamped(1024, i)


def test_the_connection_window_bounds_all_streams_together() -> None:
    opener, acceptor = pair()
    stalled_total = 0
    streams = []
    while opener.send_credit > 0:
        sid = opener.open(b"x")
        streams.append(sid)
        stalled_total += sum(map(len, fill(opener, sid, CHUNK, sid)))
    flow(opener, acceptor)
    assert INITIAL_CONNECTION_WINDOW <= stalled_total < INITIAL_CONNECTION_WINDOW + CHUNK
    fresh = opener.open(b"y")
    assert not opener.can_send(fresh)  # stream credit, but no connection credit
    # Closing a stalled stream returns what it held to the connection.
    acceptor.reset(streams[0], ResetCode.CANCEL, "gone")
    events = flow(acceptor, opener)
    assert CreditAvailable(0) in events
    assert opener.can_send(fresh)


def test_data_beyond_the_stream_credit_resets_that_stream() -> None:
    opener, acceptor = pair()
    sid = opener.open(b"init")
    flow(opener, acceptor)
    big = stamped(INITIAL_WINDOW, 3)
    events = acceptor.receive([(sid, Kind.DATA, 0, big), (sid, Kind.DATA, 0, b"more")])
    assert events[0] == DataReceived(sid, big, False)
    assert events[1] == StreamReset(
        sid, ResetCode.FLOW_CONTROL, "DATA beyond the stream's credit", False
    )
    assert not acceptor.streams


def test_data_beyond_the_connection_credit_fails_the_connection() -> None:
    acceptor = Connection(opener=False)
    frames = [(sid, Kind.OPEN, 0, b"i") for sid in range(1, 70)]
    acceptor.receive(frames)
    data = [(sid, Kind.DATA, 0, bytes(INITIAL_WINDOW)) for sid in range(1, 65)]
    acceptor.receive(data)
    with pytest.raises(MuxError, match="connection's credit"):
        acceptor.receive([(65, Kind.DATA, 0, b"x")])


def test_data_after_end_resets_the_stream() -> None:
    opener, acceptor = pair()
    sid = opener.open(b"init", end=True)
    flow(opener, acceptor)
    events = acceptor.receive([(sid, Kind.DATA, 0, b"late")])
    assert events == [StreamReset(sid, ResetCode.PROTOCOL, "DATA after the last frame", False)]


def test_sending_after_end_is_refused_locally() -> None:
    opener, _ = pair()
    sid = opener.open(b"init", end=True)
    assert not opener.can_send(sid)
    with pytest.raises(StreamStateError, match="last frame"):
        opener.send_data(sid, b"x")


def test_larger_windows_are_granted_when_the_stream_opens() -> None:
    opener, acceptor = pair(
        window=4 * INITIAL_WINDOW, connection_window=2 * INITIAL_CONNECTION_WINDOW
    )
    assert acceptor.take_frames() == [(0, Kind.WINDOW, INITIAL_CONNECTION_WINDOW, b"")]
    opener.receive([(0, Kind.WINDOW, INITIAL_CONNECTION_WINDOW, b"")])
    assert opener.send_credit == 2 * INITIAL_CONNECTION_WINDOW
    opener.take_frames()
    sid = opener.open(b"init")
    flow(opener, acceptor)
    grants = acceptor.take_frames()
    assert grants == [(sid, Kind.WINDOW, 3 * INITIAL_WINDOW, b"")]
    opener.receive(grants)
    sent = fill(opener, sid, CHUNK, 0)
    assert 4 * INITIAL_WINDOW <= sum(map(len, sent)) < 4 * INITIAL_WINDOW + CHUNK
    # An OPEN with END: no request data follows, so the acceptor grants nothing.
    opener.open(b"init", end=True)
    flow(opener, acceptor)
    assert acceptor.take_frames() == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": INITIAL_WINDOW - 1}, "window must be"),
        ({"connection_window": INITIAL_CONNECTION_WINDOW - 1}, "connection_window must be"),
        ({"max_streams": 0}, "max_streams must be"),
    ],
)
def test_settings_below_the_protocol_minimum_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Connection(opener=True, **kwargs)


def test_the_opener_grants_its_larger_window_once_the_response_continues() -> None:
    """No WINDOW with the OPEN: a response of one DATA frame with END never
    needs the larger window. The first DATA without END brings the grant, and
    the opener then checks the larger window exactly (at the limit, one past)."""
    opener, acceptor = pair(window=4 * INITIAL_WINDOW)
    small = opener.open(b"init", end=True)
    assert opener.take_frames() == [(small, Kind.OPEN, END, b"init")]
    opener.receive([(small, Kind.DATA, END, b"whole response")])
    assert opener.take_frames() == []
    opener.deliver(small)
    opener.take_frames()

    sid = opener.open(b"init", end=True)
    flow(opener, acceptor)
    assert acceptor.streams[sid].send_credit == INITIAL_WINDOW
    first = stamped(INITIAL_WINDOW, 1)  # the whole initial credit, in one frame
    acceptor.send_data(sid, first)
    assert not acceptor.can_send(sid)
    assert flow(acceptor, opener) == [DataReceived(sid, first, False)]
    grants = opener.take_frames()
    assert grants == [(sid, Kind.WINDOW, 3 * INITIAL_WINDOW, b"")]
    acceptor.receive(grants)
    rest = [stamped(INITIAL_WINDOW, 2 + i) for i in range(3)]
    for block in rest:
        assert acceptor.can_send(sid)
        acceptor.send_data(sid, block)
    assert not acceptor.can_send(sid)  # exactly the larger window is used up
    assert flow(acceptor, opener) == [DataReceived(sid, block, False) for block in rest]
    assert opener.take_frames() == []  # nothing consumed yet: no grant
    events = opener.receive([(sid, Kind.DATA, 0, b"x")])  # one byte past the window
    reason = "DATA beyond the stream's credit"
    assert events == [StreamReset(sid, ResetCode.FLOW_CONTROL, reason, False)]
