"""An event and the rules it must follow (checked by publishers and the gateway alike)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

from ..errors import InvalidEvent

TOPIC_RE = re.compile(r"[A-Za-z0-9._:-]{1,200}")
TOPIC_RULE = "1 to 200 characters of A-Z a-z 0-9 . _ : -"
MAX_TYPE_LENGTH = 200
DEFAULT_MAX_DATA = 1 << 20


@dataclass(frozen=True, slots=True)
class Event:
    """One event: ``seq`` is assigned per topic by the broker, ``ts`` is milliseconds."""

    topic: str
    type: str
    data: str
    seq: int = 0
    ts: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {"topic": self.topic, "type": self.type, "data": self.data, "seq": self.seq,
             "ts": self.ts},
            ensure_ascii=False,
        )


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def topic_problem(topic: object) -> str | None:
    if not isinstance(topic, str) or TOPIC_RE.fullmatch(topic) is None:
        shown = topic if not isinstance(topic, str) or len(topic) <= 60 else topic[:60] + "..."
        return f"invalid topic {shown!r}: use {TOPIC_RULE}"
    return None


def type_problem(type_: object) -> str | None:
    if not isinstance(type_, str) or not type_:
        return "invalid type: it must be a non-empty string"
    if "\n" in type_ or "\r" in type_:
        return f"invalid type {type_[:60]!r}: it must be a single line"
    if len(type_) > MAX_TYPE_LENGTH:
        return f"invalid type: {len(type_)} characters, more than {MAX_TYPE_LENGTH}"
    return None


def data_size(data: str) -> int:
    return len(data) if data.isascii() else len(data.encode("utf-8", "surrogatepass"))


def data_problem(data: object, max_size: int) -> str | None:
    if not isinstance(data, str):
        return f"invalid data: it must be a str, got {type(data).__name__}"
    size = data_size(data)
    if size > max_size:
        return f"data too large: {size} bytes, more than the limit of {max_size}"
    return None


def event_problem(topic: object, type_: object, data: object, max_size: int) -> str | None:
    """What is wrong with an event, or None."""
    return topic_problem(topic) or type_problem(type_) or data_problem(data, max_size)


def check_topic(topic: object) -> str:
    problem = topic_problem(topic)
    if problem is not None:
        raise InvalidEvent(problem)
    return topic  # type: ignore[return-value]


def check_event(topic: object, type_: object, data: object, max_size: int) -> None:
    problem = event_problem(topic, type_, data, max_size)
    if problem is not None:
        raise InvalidEvent(problem)
