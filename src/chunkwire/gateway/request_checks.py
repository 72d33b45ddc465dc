"""Checks on what an HTTP client sends, before anything reaches a plugin."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

DEFAULT_MAX_HEADER_SIZE = 64 * 1024
DEFAULT_MAX_HEADER_COUNT = 100

# RFC 9110 Host: uri-host [ ":" port ]; uri-host is an IP literal in brackets,
# or reg-name / IPv4 characters. Anything else ('/', '?', '#', '@', spaces)
# could change what a URL rebuilt from it means.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")


class RequestHead(NamedTuple):
    """What the gateway reads from the request headers in one pass."""

    host: bytes | None
    content_length: int
    chunked: bool
    expect_continue: bool


class BadRequestHead(Exception):
    """The request headers cannot be forwarded; ``status`` is the answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def read_request_head(
    headers: Iterable[tuple[bytes, bytes]], *, max_size: int, max_count: int
) -> RequestHead:
    """Validate the header block and pick out what forwarding needs.

    431 past ``max_size`` bytes (names, values and 4 bytes of framing per
    field, as on the wire) or ``max_count`` fields; 400 for a malformed or
    repeated Host, a malformed Content-Length or two different ones.
    """
    size = 0
    host: bytes | None = None
    content_length = -1
    chunked = expect_continue = False
    for count, (name, value) in enumerate(headers, 1):
        size += len(name) + len(value) + 4
        if count > max_count:
            raise BadRequestHead(431, f"more than {max_count} request header fields")
        if size > max_size:
            raise BadRequestHead(431, f"request header fields larger than {max_size} bytes")
        if name == b"host":
            if host is not None:
                raise BadRequestHead(400, "more than one Host header")
            if not _HOST.fullmatch(value):
                raise BadRequestHead(400, "malformed Host header")
            host = value
        elif name == b"content-length":
            if not value.isdigit():
                raise BadRequestHead(400, "malformed Content-Length")
            length = int(value)
            if content_length not in (-1, length):
                raise BadRequestHead(400, "conflicting Content-Length headers")
            content_length = length
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"expect" and value.lower() == b"100-continue":
            expect_continue = True
    return RequestHead(host, content_length, chunked, expect_continue)
