"""The multiplexed stream protocol, sans I/O: frames in, events and frames out.

One :class:`Connection` per side of a long-lived gRPC ``Connect`` stream. The
side that opens streams (the gateway, ``PluginClient``) is the *opener*; the
plugin is the *acceptor*. The asyncio code around it only moves frames:
``receive(frames)`` returns events, ``take_frames()`` returns what to send.
docs/protocol.md states the rules for other implementers; this module is
their reference.

Stream states, as seen from one side (h2's table, with DELIVERED added)::

    state               local END          remote END          closes by
    OPEN                HALF_CLOSED_LOCAL  HALF_CLOSED_REMOTE  RESET
    HALF_CLOSED_LOCAL   -                  ENDED               RESET; acceptor: DELIVERED in
    HALF_CLOSED_REMOTE  ENDED              -                   RESET; opener: DELIVERED out
    ENDED               -                  -                   RESET; DELIVERED

The response direction's END is not the end of the stream: the opener sends
DELIVERED once its client has the whole response, and only then is the
stream closed on both sides (the plugin's ``response.finished``). The
request direction need not end (a plugin may answer without reading).

A WebSocket session (OPEN flag WEBSOCKET) has no DELIVERED: the acceptor's
END ends it, closing the stream on both sides whatever the opener's
direction, as a finished ServeWebSocket call does.

Credit (HTTP/2 WINDOW_UPDATE, yamux): every stream direction and the
connection start with a protocol-fixed window; the receiver grants more
with WINDOW frames as its application consumes data. Only DATA payload
bytes count. A sender starts a DATA frame only while both its stream and
connection credit are above zero; the frame's payload is then subtracted
and may take the credit below zero, so a receiver never holds more than
its window plus one frame. (DATA payloads are whole encoded messages that
cannot be split; this rule avoids a deadlock when a chunk is larger than
what is left of a window, without negotiating sizes.) The receiver checks
the rule exactly: a DATA frame that arrives when the credit it granted is
already used up is a flow-control error.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any


class Kind(IntEnum):
    """``chunkwire.v1.FrameKind``."""

    OPEN = 1
    DATA = 2
    WINDOW = 3
    RESET = 4
    CONTINUE = 5
    DELIVERED = 6
    PING = 7
    PONG = 8
    GOAWAY = 9


class ResetCode(IntEnum):
    """The value of a RESET frame: why a stream ended early."""

    CANCEL = 1  # the opener gave up (client gone, timeout, body too large)
    REFUSED = 2  # the acceptor never started the stream (too many, going away)
    INTERNAL = 3  # the handler failed after the response started
    PROTOCOL = 4  # a frame broke the stream rules
    FLOW_CONTROL = 5  # DATA beyond the granted credit
    ABORTED = 6  # the handler aborted its response
    CONNECTION_LOST = 7  # local only, never sent: the connection under the stream broke


class State(IntEnum):
    OPEN = 1
    HALF_CLOSED_LOCAL = 2
    HALF_CLOSED_REMOTE = 3
    ENDED = 4


# The members as module names: an enum's own attribute lookup costs ~10x a
# global's on Python 3.11 (EnumType.__getattr__), and these are per frame.
_OPEN, _DATA, _WINDOW, _RESET = Kind.OPEN, Kind.DATA, Kind.WINDOW, Kind.RESET
_CONTINUE, _DELIVERED, _PING, _PONG = Kind.CONTINUE, Kind.DELIVERED, Kind.PING, Kind.PONG
_GOAWAY = Kind.GOAWAY
_S_OPEN, _S_HALF_CLOSED_LOCAL = State.OPEN, State.HALF_CLOSED_LOCAL
_S_HALF_CLOSED_REMOTE, _S_ENDED = State.HALF_CLOSED_REMOTE, State.ENDED
_LOCAL_OPEN = (_S_OPEN, _S_HALF_CLOSED_REMOTE)
_REMOTE_OPEN = (_S_OPEN, _S_HALF_CLOSED_LOCAL)

END = 1  # flag in the value of OPEN and DATA: the last frame of this direction
WEBSOCKET = 2  # flag in the value of OPEN: a WebSocket session (WebSocketFrame payloads)

INITIAL_WINDOW = 256 * 1024
INITIAL_CONNECTION_WINDOW = 16 * 1024 * 1024
DEFAULT_MAX_STREAMS = 4096
_MAX_CREDIT = 2**62

Frame = tuple[int, int, int, Any]


class MuxError(Exception):
    """The peer broke a connection-level rule: the whole connection must close."""


class StreamStateError(Exception):
    """A local call that the stream's state does not allow (a bug in the caller)."""


# -- events -----------------------------------------------------------------------


@dataclass(slots=True)
class StreamOpened:
    """Acceptor: the peer opened ``stream_id``; ``payload`` is the first request message."""

    stream_id: int
    payload: Any
    end: bool
    websocket: bool = False


@dataclass(slots=True)
class DataReceived:
    """A DATA payload; call ``consumed()`` with its size once the application took it."""

    stream_id: int
    payload: Any
    end: bool


@dataclass(slots=True)
class CreditAvailable:
    """Send credit went back above zero (``stream_id`` 0: the connection's)."""

    stream_id: int


@dataclass(slots=True)
class StreamReset:
    """The stream is closed early. ``remote``: the peer reset it (or the connection broke)."""

    stream_id: int
    code: int
    reason: str
    remote: bool


@dataclass(slots=True)
class ContinueRequested:
    """Opener: the acceptor asks for the request body (Expect: 100-continue)."""

    stream_id: int


@dataclass(slots=True)
class StreamDelivered:
    """Acceptor: the client has the whole response; the stream is closed."""

    stream_id: int


@dataclass(slots=True)
class PongReceived:
    value: int


@dataclass(slots=True)
class GoAwayReceived:
    """Acceptor takes no stream above ``last_stream_id``; those were reset (REFUSED)."""

    last_stream_id: int


Event = (
    StreamOpened
    | DataReceived
    | CreditAvailable
    | StreamReset
    | ContinueRequested
    | StreamDelivered
    | PongReceived
    | GoAwayReceived
)


class _Stream:
    __slots__ = (
        "grant",
        "grow",
        "recv_credit",
        "send_credit",
        "session",
        "state",
        "unconsumed",
    )

    def __init__(self, state: State, recv_credit: int, session: bool = False) -> None:
        self.state = state
        self.session = session  # a WebSocket session: the acceptor's END closes it
        self.send_credit = INITIAL_WINDOW
        self.recv_credit = recv_credit  # granted to the peer, not yet used
        self.unconsumed = 0  # received, not yet consumed by the application
        self.grant = 0  # consumed, not yet granted back
        self.grow = 0  # opener: the larger window, granted once the response continues

    @property
    def local_open(self) -> bool:
        return self.state in _LOCAL_OPEN

    @property
    def remote_open(self) -> bool:
        return self.state in _REMOTE_OPEN


def _after_local_end(state: State) -> State:
    return _S_HALF_CLOSED_LOCAL if state is _S_OPEN else _S_ENDED


def _after_remote_end(state: State) -> State:
    return _S_HALF_CLOSED_REMOTE if state is _S_OPEN else _S_ENDED


def _size(payload: Any) -> int:
    return payload.nbytes if type(payload) is memoryview else len(payload)


class Connection:
    """One side of a multiplexed connection: the stream table and the credit.

    ``window`` is this side's receive window per stream and
    ``connection_window`` for the whole connection (at least the protocol's
    initial sizes; more is granted with WINDOW frames when a stream or the
    connection starts). ``max_streams`` bounds the HTTP streams an acceptor
    runs at once; more are refused. WebSocket sessions do not count: they
    are long-lived, bounded where their clients connect (as ServeWebSocket
    calls are), and must not keep requests out.
    """

    def __init__(
        self,
        *,
        opener: bool,
        window: int = INITIAL_WINDOW,
        connection_window: int = INITIAL_CONNECTION_WINDOW,
        max_streams: int = DEFAULT_MAX_STREAMS,
    ) -> None:
        if window < INITIAL_WINDOW:
            raise ValueError(f"window must be >= {INITIAL_WINDOW}, got {window}")
        if connection_window < INITIAL_CONNECTION_WINDOW:
            raise ValueError(
                f"connection_window must be >= {INITIAL_CONNECTION_WINDOW}, got {connection_window}"
            )
        if max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {max_streams}")
        self.opener = opener
        self.window = window
        self.connection_window = connection_window
        self.max_streams = max_streams
        self.streams: dict[int, _Stream] = {}
        self.sessions = 0  # WebSocket session streams among ``streams``
        self.send_credit = INITIAL_CONNECTION_WINDOW
        self._recv_credit = connection_window
        self._conn_grant = 0
        self._next_id = 1
        self._last_remote_id = 0
        self.goaway_received: int | None = None
        self.goaway_sent: int | None = None
        self._out: list[Frame] = []
        if connection_window > INITIAL_CONNECTION_WINDOW:
            self._out.append((0, Kind.WINDOW, connection_window - INITIAL_CONNECTION_WINDOW, b""))

    # -- what to send ---------------------------------------------------------------

    def take_frames(self) -> list[Frame]:
        """The frames queued since the last call, in order; the queue is emptied."""
        out = self._out
        self._out = []
        return out

    @property
    def has_frames(self) -> bool:
        return bool(self._out)

    # -- local actions --------------------------------------------------------------

    def open(self, payload: Any, *, end: bool = False, websocket: bool = False) -> int:
        """Opener: start a stream whose first message is ``payload``; its id.

        ``websocket``: a WebSocket session (OPEN flag WEBSOCKET), which ends
        when the acceptor's END arrives rather than with DELIVERED.
        """
        if not self.opener:
            raise StreamStateError("only the opener starts streams")
        if self.goaway_received is not None:
            raise StreamStateError("the peer is going away: open a new connection")
        stream_id = self._next_id
        self._next_id += 1
        # The larger window is granted with the response's first DATA that
        # does not end it: a response of one DATA frame with END (most small
        # ones) never needs it, and costs no WINDOW frame.
        stream = self.streams[stream_id] = _Stream(
            _S_HALF_CLOSED_LOCAL if end else _S_OPEN, INITIAL_WINDOW, websocket
        )
        stream.grow = self.window - INITIAL_WINDOW
        flags = (END if end else 0) | (WEBSOCKET if websocket else 0)
        self.sessions += websocket
        self._out.append((stream_id, _OPEN, flags, payload))
        return stream_id

    def _grow_window(self, stream_id: int) -> None:
        if self.window > INITIAL_WINDOW:
            self._out.append((stream_id, _WINDOW, self.window - INITIAL_WINDOW, b""))

    def _stream(self, stream_id: int) -> _Stream:
        stream = self.streams.get(stream_id)
        if stream is None:
            raise StreamStateError(f"stream {stream_id} is closed")
        return stream

    def can_send(self, stream_id: int) -> bool:
        """True when a DATA frame may leave on ``stream_id`` now (credit above zero)."""
        stream = self.streams.get(stream_id)
        return (
            stream is not None
            and stream.local_open
            and stream.send_credit > 0
            and self.send_credit > 0
        )

    def send_data(self, stream_id: int, payload: Any, *, end: bool = False) -> None:
        """Queue a DATA frame; ``can_send`` must be true (StreamStateError otherwise).

        An empty payload costs no credit and needs none (an END alone).
        """
        stream = self._stream(stream_id)
        if not stream.local_open:
            raise StreamStateError(f"stream {stream_id} already sent its last frame")
        size = _size(payload)
        if size and (stream.send_credit <= 0 or self.send_credit <= 0):
            raise StreamStateError(f"stream {stream_id} has no send credit")
        stream.send_credit -= size
        self.send_credit -= size
        self._out.append((stream_id, _DATA, END if end else 0, payload))
        if end:
            stream.state = _after_local_end(stream.state)
            if stream.session and not self.opener:
                self._close(stream_id)  # the session is over

    def consumed(self, stream_id: int, size: int) -> None:
        """The application took ``size`` received DATA bytes: grant them back in time.

        A grant waits until a quarter of the window is due, so a fast reader
        costs few WINDOW frames, unless less than a quarter is left granted:
        then the sender may be stopped, and every release is granted at once
        (stalled streams may hold most of the connection's window).
        """
        if size <= 0:
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            return  # released when the stream closed
        stream.unconsumed -= size
        self._release(size)
        if stream.remote_open:
            stream.grant += size
            if stream.grant >= self.window >> 2 or stream.recv_credit < self.window >> 2:
                stream.recv_credit += stream.grant
                self._out.append((stream_id, _WINDOW, stream.grant, b""))
                stream.grant = 0

    def _release(self, size: int) -> None:
        self._conn_grant += size
        quarter = self.connection_window >> 2
        if self._conn_grant >= quarter or self._recv_credit < quarter:
            self._recv_credit += self._conn_grant
            self._out.append((0, _WINDOW, self._conn_grant, b""))
            self._conn_grant = 0

    def _close(self, stream_id: int) -> _Stream | None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None and stream.session:
            self.sessions -= 1
        if stream is not None and stream.unconsumed:
            # Data nobody will read still took connection credit.
            self._release(stream.unconsumed)
            stream.unconsumed = 0
        return stream

    def reset(self, stream_id: int, code: ResetCode | int, reason: str = "") -> bool:
        """Close the stream early and tell the peer; False if it was closed already."""
        if self._close(stream_id) is None:
            return False
        self._out.append((stream_id, Kind.RESET, int(code), reason.encode("utf-8")[:1024]))
        return True

    def request_body(self, stream_id: int) -> None:
        """Acceptor: ask for the request body (CONTINUE, for Expect: 100-continue)."""
        if self.opener:
            raise StreamStateError("only the acceptor sends CONTINUE")
        stream = self._stream(stream_id)
        if stream.remote_open:
            self._out.append((stream_id, Kind.CONTINUE, 0, b""))

    def deliver(self, stream_id: int) -> None:
        """Opener: the client has the whole response (DELIVERED); the stream closes."""
        if not self.opener:
            raise StreamStateError("only the opener sends DELIVERED")
        stream = self._stream(stream_id)
        if stream.remote_open:
            raise StreamStateError(f"stream {stream_id}: the response has not ended")
        self._close(stream_id)
        self._out.append((stream_id, _DELIVERED, 0, b""))

    def ping(self, value: int) -> None:
        self._out.append((0, Kind.PING, value, b""))

    def go_away(self) -> int:
        """Acceptor: take no new streams; those already open run to their end."""
        if self.opener:
            raise StreamStateError("only the acceptor sends GOAWAY")
        if self.goaway_sent is None:
            self.goaway_sent = self._last_remote_id
            self._out.append((0, Kind.GOAWAY, self._last_remote_id, b""))
        return self.goaway_sent

    def lost(self, reason: str) -> list[StreamReset]:
        """The connection broke: every stream ends (CONNECTION_LOST)."""
        events = [
            StreamReset(stream_id, ResetCode.CONNECTION_LOST, reason, True)
            for stream_id in self.streams
        ]
        self.streams.clear()
        self.sessions = 0
        self._out.clear()
        return events

    # -- received frames --------------------------------------------------------------

    def receive(self, frames: Any) -> list[Event]:
        """Apply received frames ``(stream_id, kind, value, payload)``; the events.

        Raises MuxError when the connection must close (the events of the
        frames before the bad one are lost with it: ``lost()`` ends every
        stream).
        """
        events: list[Event] = []
        for stream_id, kind, value, payload in frames:
            if kind == _DATA:
                self._on_data(stream_id, value, payload, events)
            elif kind == _WINDOW:
                self._on_window(stream_id, value, events)
            elif kind == _OPEN:
                self._on_open(stream_id, value, payload, events)
            elif kind == _RESET:
                self._on_reset(stream_id, value, payload, events)
            elif kind == _DELIVERED:
                self._on_delivered(stream_id, events)
            elif kind == _CONTINUE:
                self._check_stream_frame(stream_id, "CONTINUE", acceptor_sends=True)
                if stream_id in self.streams:
                    events.append(ContinueRequested(stream_id))
            elif kind == _PING:
                self._check_connection_frame(stream_id, "PING")
                self._out.append((0, Kind.PONG, value, b""))
            elif kind == _PONG:
                self._check_connection_frame(stream_id, "PONG")
                events.append(PongReceived(value))
            elif kind == _GOAWAY:
                self._on_goaway(stream_id, value, events)
            # Unknown kinds are ignored: later versions may add some.
        return events

    def _known(self, stream_id: int) -> bool:
        """True for ids the opener has used (open or closed)."""
        if self.opener:
            return 0 < stream_id < self._next_id
        return 0 < stream_id <= self._last_remote_id

    def _check_connection_frame(self, stream_id: int, what: str) -> None:
        if stream_id != 0:
            raise MuxError(f"{what} on stream {stream_id}: it belongs to stream 0")

    def _check_stream_frame(self, stream_id: int, what: str, *, acceptor_sends: bool) -> None:
        if acceptor_sends != self.opener:
            side = "acceptor" if self.opener else "opener"
            raise MuxError(f"{what} sent by the {side}, which never sends it")
        if not self._known(stream_id):
            raise MuxError(f"{what} on stream {stream_id}, which was never opened")

    def _stream_error(
        self, stream_id: int, code: ResetCode, reason: str, events: list[Event]
    ) -> None:
        self.reset(stream_id, code, reason)
        events.append(StreamReset(stream_id, code, reason, False))

    def _on_open(self, stream_id: int, value: int, payload: Any, events: list[Event]) -> None:
        if self.opener:
            raise MuxError("OPEN sent by the acceptor, which never sends it")
        if stream_id <= self._last_remote_id:
            raise MuxError(
                f"OPEN of stream {stream_id}: ids must increase (last was {self._last_remote_id})"
            )
        self._last_remote_id = stream_id
        if self.goaway_sent is not None:
            self._out.append((stream_id, Kind.RESET, ResetCode.REFUSED, b"going away"))
            return
        session = bool(value & WEBSOCKET)
        if not session and len(self.streams) - self.sessions >= self.max_streams:
            self._out.append((stream_id, Kind.RESET, ResetCode.REFUSED, b"too many streams"))
            return
        end = bool(value & END)
        self.sessions += session
        self.streams[stream_id] = _Stream(
            _S_HALF_CLOSED_REMOTE if end else _S_OPEN, self.window, session
        )
        if not end:  # after END no request data comes: no window to grow
            self._grow_window(stream_id)
        events.append(StreamOpened(stream_id, payload, end, session))

    def _on_data(self, stream_id: int, value: int, payload: Any, events: list[Event]) -> None:
        if not self._known(stream_id):
            raise MuxError(f"DATA on stream {stream_id}, which was never opened")
        size = _size(payload)
        if size and self._recv_credit <= 0:
            raise MuxError("DATA beyond the connection's credit")
        self._recv_credit -= size
        stream = self.streams.get(stream_id)
        if stream is None:
            self._release(size)  # a stream closed meanwhile: dropped
            return
        if not stream.remote_open:
            self._release(size)
            self._stream_error(stream_id, ResetCode.PROTOCOL, "DATA after the last frame", events)
            return
        if size and stream.recv_credit <= 0:
            self._release(size)
            self._stream_error(
                stream_id, ResetCode.FLOW_CONTROL, "DATA beyond the stream's credit", events
            )
            return
        stream.recv_credit -= size
        stream.unconsumed += size
        end = bool(value & END)
        if stream.grow:
            if not end:  # more of the response follows: the larger window now
                stream.recv_credit += stream.grow
                self._out.append((stream_id, _WINDOW, stream.grow, b""))
            stream.grow = 0
        if end:
            stream.state = _after_remote_end(stream.state)
            if stream.session and self.opener:
                self._close(stream_id)  # the acceptor ended the session
        events.append(DataReceived(stream_id, payload, end))

    def _on_window(self, stream_id: int, value: int, events: list[Event]) -> None:
        if value <= 0:
            raise MuxError(f"WINDOW of {value} bytes on stream {stream_id}")
        if stream_id == 0:
            before = self.send_credit
            self.send_credit += value
            if self.send_credit > _MAX_CREDIT:
                raise MuxError("connection credit overflow")
            if before <= 0 < self.send_credit:
                events.append(CreditAvailable(0))
            return
        if not self._known(stream_id):
            raise MuxError(f"WINDOW on stream {stream_id}, which was never opened")
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        before = stream.send_credit
        stream.send_credit += value
        if stream.send_credit > _MAX_CREDIT:
            self._stream_error(stream_id, ResetCode.FLOW_CONTROL, "credit overflow", events)
        elif before <= 0 < stream.send_credit:
            events.append(CreditAvailable(stream_id))

    def _on_reset(self, stream_id: int, value: int, payload: Any, events: list[Event]) -> None:
        if not self._known(stream_id):
            raise MuxError(f"RESET on stream {stream_id}, which was never opened")
        if self._close(stream_id) is not None:
            reason = bytes(payload).decode("utf-8", "replace")
            events.append(StreamReset(stream_id, value, reason, True))

    def _on_delivered(self, stream_id: int, events: list[Event]) -> None:
        self._check_stream_frame(stream_id, "DELIVERED", acceptor_sends=False)
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if stream.local_open:
            self._stream_error(
                stream_id, ResetCode.PROTOCOL, "DELIVERED before the response ended", events
            )
            return
        self._close(stream_id)
        events.append(StreamDelivered(stream_id))

    def _on_goaway(self, stream_id: int, value: int, events: list[Event]) -> None:
        self._check_connection_frame(stream_id, "GOAWAY")
        if not self.opener:
            raise MuxError("GOAWAY sent by the opener, which never sends it")
        if self.goaway_received is None or value < self.goaway_received:
            self.goaway_received = value
        for refused in [sid for sid in self.streams if sid > value]:
            self._close(refused)
            events.append(StreamReset(refused, ResetCode.REFUSED, "going away", True))
        events.append(GoAwayReceived(value))
