"""The response head a plugin sends, checked before anything reaches the client.

Response framing belongs to the gateway, not to the plugin: a plugin that
could choose the client's framing could append bytes after a bodiless
status and have them read as the next response on a keep-alive connection
(one plugin forging another's answers). So:

- hop-by-hop and framing headers are dropped (Connection, Keep-Alive,
  Transfer-Encoding, Upgrade, Proxy-*, TE, Trailer);
- at most one Content-Length, a non-negative decimal integer (repeats of
  the same value collapse); Content-Length next to Transfer-Encoding, two
  different values, or a malformed one is a bad response (502);
- the final status must be 200..599: 0 means 200; 100..199 (101 included)
  and 600..999 are a bad response (502); outside 100..999 is an invalid
  status (500, as it always was);
- header names must be RFC 9110 tokens, values free of control characters
  other than HTAB (CR, LF and NUL included) -- what an HTTP/1.1 server can
  put on the wire;
- 204, 304 and answers to HEAD carry no body, whatever the plugin sends
  (``body_allowed`` False); 204 and 304 also lose their Content-Length
  (an HTTP/1.1 server would expect that many body bytes after them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

from .._proto import http_pb2
from .._wire import valid_status

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer"}
)
_CONTENT_LENGTH = b"content-length"

# What a header name becomes, for names seen before: its lowercased bytes,
# or one of the markers below. Plugins send the same few names again and
# again; the cache stops growing at _MAX_NAMES (a plugin inventing names
# then costs the full check per header, never memory).
_DROPPED = b"<dropped>"
_LENGTH = b"<content-length>"
_TRANSFER_ENCODING = b"<transfer-encoding>"
_MAX_NAMES = 1024
_NAMES: dict[str, bytes] = {}


def _classify(key: str) -> bytes:
    if not valid_header_name(key):
        raise BadResponse(f"invalid header name {key[:40]!r}")
    lower = key.lower()
    if lower == "content-length":
        name = _LENGTH
    elif lower == "transfer-encoding":
        name = _TRANSFER_ENCODING
    elif lower in _HOP_BY_HOP or lower.startswith("proxy-"):
        name = _DROPPED
    else:
        name = lower.encode("ascii")
    if len(_NAMES) < _MAX_NAMES:
        _NAMES[key] = name
    return name


def valid_header_name(name: str) -> bool:
    """An RFC 9110 token (what an HTTP/1.1 server can send as a field name)."""
    return _TOKEN.fullmatch(name) is not None


def valid_header_value(value: bytes) -> bool:
    """No control characters but HTAB (no CR, LF or NUL to split or end a field)."""
    return _BAD_VALUE.search(value) is None


class BadResponse(Exception):
    """The plugin's response cannot be relayed; ``status`` is what the client gets."""

    def __init__(self, reason: str, status: int = 502) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class ResponseHead(NamedTuple):
    status: int
    headers: list[tuple[bytes, bytes]]
    content_length: int | None
    body_allowed: bool


def _content_length(values: list[bytes]) -> int:
    distinct = {value.strip() for value in values}
    if len(distinct) > 1:
        raise BadResponse("two different Content-Length values")
    (value,) = distinct
    if not value.isdigit():
        raise BadResponse(f"malformed Content-Length {value[:40]!r}")
    return int(value)


def check_response_head(
    status: int, headers: Iterable[http_pb2.HTTPHeader], *, method: str
) -> ResponseHead:
    """The status and headers the client may get, or BadResponse."""
    if not valid_status(status):
        raise BadResponse(f"invalid status {status}", 500)
    status = status or 200
    if status < 200:
        raise BadResponse(f"status {status} is not a final status")
    if status > 599:
        raise BadResponse(f"status {status} cannot be sent over HTTP/1.1")
    out: list[tuple[bytes, bytes]] = []
    lengths: list[bytes] = []
    transfer_encoding = False
    bad_value = _BAD_VALUE.search
    for header in headers:
        key = header.key
        name = _NAMES.get(key)
        if name is None:
            name = _classify(key)
        for value in header.values:
            if bad_value(value) is not None:
                raise BadResponse(f"invalid value in header {key!r}")
        if name is _DROPPED:
            continue
        if name is _LENGTH:
            lengths.extend(header.values)
        elif name is _TRANSFER_ENCODING:
            transfer_encoding = True
        else:
            for value in header.values:
                out.append((name, value))
    content_length = None
    if lengths:
        if transfer_encoding:
            raise BadResponse("both Content-Length and Transfer-Encoding")
        content_length = _content_length(lengths)
        if status not in (204, 304):
            out.append((_CONTENT_LENGTH, str(content_length).encode()))
    body_allowed = status not in (204, 304) and method != "HEAD"
    return ResponseHead(status, out, content_length, body_allowed)


# Serialized inits already checked, and what they gave (ResponseHead is a
# pure function of the init and the method): plugins send the same few
# heads again and again. The cache stops growing at _MAX_HEADS entries and
# never holds an init larger than _MAX_CACHED_INIT bytes; a failed check is
# never cached.
_HEADS: dict[tuple[bytes, str], ResponseHead] = {}
_MAX_HEADS = 256
_MAX_CACHED_INIT = 512


def check_raw_response_head(raw_init: bytes, *, method: str) -> ResponseHead:
    """``check_response_head`` of a serialized ServeHTTPResponseInit.

    Raises BadResponse as it does, or protobuf's DecodeError for bytes that
    are no init. The headers list is the caller's own.
    """
    if type(raw_init) is not bytes:
        raw_init = bytes(raw_init)
    key = (raw_init, method)
    head = _HEADS.get(key)
    if head is None:
        init = http_pb2.ServeHTTPResponseInit.FromString(raw_init)
        head = check_response_head(init.status_code, init.headers, method=method)
        if len(_HEADS) < _MAX_HEADS and len(raw_init) <= _MAX_CACHED_INIT:
            _HEADS[key] = ResponseHead(
                head.status, list(head.headers), head.content_length, head.body_allowed
            )
        return head
    return ResponseHead(head.status, list(head.headers), head.content_length, head.body_allowed)
