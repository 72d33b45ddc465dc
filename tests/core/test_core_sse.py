"""SSE framing, checked by round trips through a WHATWG event-stream parser."""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=300, deadline=None)


@dataclass
class Event:
    type: str
    data: str
    last_event_id: str


class EventStreamParser:
    """The parsing and interpretation algorithm of the WHATWG HTML standard, §9.2.6."""

    def __init__(self) -> None:
        self.data = ""
        self.event_type = ""
        self.last_event_id_buffer = ""
        self.reconnection_time: int | None = None
        self.events: list[Event] = []

    def parse(self, stream: bytes) -> list[Event]:
        text = stream.decode("utf-8", errors="replace")
        text = text.removeprefix("\ufeff")
        pos = 0
        for end_of_line in re.finditer(r"\r\n|\r|\n", text):
            self._line(text[pos : end_of_line.start()])
            pos = end_of_line.end()
        # A last line without its end of line is incomplete: discarded at end of
        # stream, with any event not yet dispatched.
        return self.events

    def _line(self, line: str) -> None:
        if not line:
            self._dispatch()
        elif line.startswith(":"):
            pass
        elif ":" in line:
            name, value = line.split(":", 1)
            self._field(name, value.removeprefix(" "))
        else:
            self._field(line, "")

    def _field(self, name: str, value: str) -> None:
        if name == "event":
            self.event_type = value
        elif name == "data":
            self.data += value + "\n"
        elif name == "id" and "\0" not in value:
            self.last_event_id_buffer = value
        elif name == "retry" and re.fullmatch("[0-9]+", value):
            self.reconnection_time = int(value)

    def _dispatch(self) -> None:
        last_event_id = self.last_event_id_buffer
        if not self.data:
            self.event_type = ""
            return
        data = self.data.removesuffix("\n")
        self.events.append(Event(self.event_type or "message", data, last_event_id))
        self.data = ""
        self.event_type = ""


def test_parser_on_the_standard_examples() -> None:
    stream = (
        b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\n"
        b"data:  third event\n\ndata\n\ndata\ndata\n\ndata:"
    )
    events = EventStreamParser().parse(stream)
    assert events == [
        Event("message", "first event", "1"),
        Event("message", "second event", ""),
        Event("message", " third event", ""),
        Event("message", "", ""),
        Event("message", "\n", ""),
    ]


def normalise_line_breaks(text: str) -> str:
    return re.sub(r"\r\n|\r", "\n", text)


# Line breaks and characters near them: SSE splits on CR and LF only.
tricky = st.sampled_from(["\r", "\n", "\r\n", "\n\r", ":", " ", "\0", "\x85", "\u2028", "\ufeff"])
texts = st.lists(st.text(max_size=8) | tricky, max_size=8).map("".join)
single_line = texts.map(lambda s: re.sub(r"[\r\n]", "", s))
ids = single_line.map(lambda s: s.replace("\0", ""))


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if draw(st.booleans()):
        kwargs["event"] = draw(single_line)
    if draw(st.booleans()):
        kwargs["id"] = draw(ids)
    if draw(st.booleans()):
        kwargs["retry"] = draw(st.integers(0, 2**40) | st.integers(0, 2**70))
    as_bytes = draw(st.booleans())
    kwargs["data"] = draw(texts)
    if as_bytes:
        kwargs = {k: v.encode() if isinstance(v, str) else v for k, v in kwargs.items()}
    return kwargs


def expected_event(kwargs: dict[str, Any], last_event_id: str) -> Event:
    def text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else value

    event_type = text(kwargs.get("event")) or "message"
    data = normalise_line_breaks(text(kwargs["data"]))
    event_id = text(kwargs["id"]) if "id" in kwargs else last_event_id
    return Event(event_type, data, event_id)


@SETTINGS
@given(kwargs=events())
def test_round_trip(core: ModuleType, kwargs: dict[str, Any]) -> None:
    data = kwargs.pop("data")
    wire = core.encode_sse(data, **kwargs)
    assert type(wire) is bytes
    assert wire.endswith(b"\n\n")
    parser = EventStreamParser()
    assert parser.parse(wire) == [expected_event({"data": data, **kwargs}, "")]
    assert parser.reconnection_time == kwargs.get("retry")


@SETTINGS
@given(stream=st.lists(events(), max_size=6))
def test_round_trip_stream(core: ModuleType, stream: list[dict[str, Any]]) -> None:
    wire = b"".join(core.encode_sse(**kwargs) for kwargs in stream)
    expected = []
    last_event_id = ""
    for kwargs in stream:
        event = expected_event(kwargs, last_event_id)
        last_event_id = event.last_event_id
        expected.append(event)
    assert EventStreamParser().parse(wire) == expected


@SETTINGS
@given(data=st.binary(max_size=64))
def test_binary_data_round_trips_bytewise(core: ModuleType, data: bytes) -> None:
    wire = core.encode_sse(data)
    lines = wire[:-2].split(b"\n")
    assert all(line.startswith(b"data: ") for line in lines)
    assert b"\n".join(line[6:] for line in lines) == re.sub(rb"\r\n|\r", b"\n", data)


def test_examples(core: ModuleType) -> None:
    assert core.encode_sse("hi") == b"data: hi\n\n"
    assert core.encode_sse(b"") == b"data: \n\n"
    assert core.encode_sse("x\n") == b"data: x\ndata: \n\n"
    assert core.encode_sse("a\r\nb\rc\nd", event="e", id="1", retry=10) == (
        b"event: e\nid: 1\nretry: 10\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
    )
    assert core.encode_sse("\u00e9", event="caf\u00e9", id="") == (
        b"event: caf\xc3\xa9\nid: \ndata: \xc3\xa9\n\n"
    )
    assert core.encode_sse(bytearray(b"a"), event=b"b", id=memoryview(b"c")) == (
        b"event: b\nid: c\ndata: a\n\n"
    )
    assert core.encode_sse("a", retry=0) == b"retry: 0\ndata: a\n\n"


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        pytest.param(("x",), {"event": "a\nb"}, ValueError, id="event-lf"),
        pytest.param(("x",), {"event": "a\rb"}, ValueError, id="event-cr"),
        pytest.param(("x",), {"event": b"\r\n"}, ValueError, id="event-crlf-bytes"),
        pytest.param(("x",), {"id": "a\nb"}, ValueError, id="id-lf"),
        pytest.param(("x",), {"id": "a\rb"}, ValueError, id="id-cr"),
        pytest.param(("x",), {"id": "a\0b"}, ValueError, id="id-nul"),
        pytest.param(("x",), {"retry": -1}, ValueError, id="retry-negative"),
        pytest.param(("x",), {"retry": True}, ValueError, id="retry-bool"),
        pytest.param(("x",), {"retry": 1.5}, ValueError, id="retry-float"),
        pytest.param(("x",), {"retry": "5"}, ValueError, id="retry-str"),
        pytest.param((5,), {}, TypeError, id="data-int"),
        pytest.param((None,), {}, TypeError, id="data-none"),
        pytest.param(("x",), {"event": 5}, TypeError, id="event-int"),
        pytest.param(("x",), {"id": 5}, TypeError, id="id-int"),
        pytest.param(("\ud800",), {}, UnicodeEncodeError, id="data-surrogate"),
        pytest.param(("x",), {"event": "\udfff"}, UnicodeEncodeError, id="event-surrogate"),
        pytest.param(("x", "y"), {}, TypeError, id="event-positional"),
    ],
)
def test_rejects(
    core: ModuleType, core_py: ModuleType, args: tuple, kwargs: dict, error: type
) -> None:
    with pytest.raises(error):
        core.encode_sse(*args, **kwargs)
    if args != ("x", "y"):  # argument-parsing messages are the interpreter's own
        assert outcome(core.encode_sse, *args, **kwargs) == outcome(
            core_py.encode_sse, *args, **kwargs
        )


def outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:
        return ("raised", type(exc), str(exc))


class Text(str):
    pass


class Blob(bytes):
    pass


ODD_INPUTS = [
    ((Text("a\nb"),), {"event": Text("t")}),
    ((Blob(b"a\rb"),), {"id": Blob(b"i")}),
    ((np.frombuffer(b"abc", dtype=np.uint8),), {}),
    ((memoryview(b"a\nb"),), {}),
    ((memoryview(b"abcd").cast("H"),), {}),
    (("x",), {"retry": 2**70}),
    (("x",), {"retry": 2**64}),
    (("x",), {"retry": np.int64(5)}),
    (("x",), {"event": None, "id": None, "retry": None}),
    ((b"\xff\xfe\r\r\n",), {"event": b"\xff"}),
]


@pytest.mark.parametrize(("args", "kwargs"), ODD_INPUTS)
def test_c_and_py_agree_on_odd_inputs(
    core_c: ModuleType, core_py: ModuleType, args: tuple, kwargs: dict
) -> None:
    assert outcome(core_c.encode_sse, *args, **kwargs) == outcome(
        core_py.encode_sse, *args, **kwargs
    )


@SETTINGS
@given(kwargs=events())
def test_c_and_py_agree(core_c: ModuleType, core_py: ModuleType, kwargs: dict[str, Any]) -> None:
    assert core_c.encode_sse(**kwargs) == core_py.encode_sse(**kwargs)
