"""Pure-Python core: the reference twin of ``chunkwire._core_c``.

Both modules expose the same names and behave identically, errors included;
``chunkwire._core`` picks one. Docstrings live here, where readers look.
"""

from __future__ import annotations

import contextlib
import mmap
import operator
import os
import re
import struct
import sys
from collections import deque
from collections.abc import Iterable
from typing import Any

from ._errors import FrameError, RingError
from ._shm import check_sealed, create_sealed, map_ring

COMPILED = False

DEFAULT_CHUNK_SIZE = 65536

_TAG_INIT = 0x0A  # field 1, length-delimited
_TAG_BODY = 0x12  # field 2, length-delimited
_TAG_COMPLETE = 0x18  # field 3, varint
_TAG_FLUSH = 0x20  # field 4, varint

_MAX_VARINT_LEN = 10
_MAX_GROUP_DEPTH = 100



def _as_bytes_view(data: Any) -> memoryview:
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(
            f"data must be a bytes-like object, not {type(data).__name__!r}"
        ) from None
    if not view.c_contiguous:
        view.release()
        raise BufferError("data must be a C-contiguous buffer")
    if view.format != "B" or view.ndim != 1:
        if view.nbytes == 0:
            # cast() refuses shapes with a zero in them; nothing to view anyway.
            view.release()
            return memoryview(b"")
        view = view.cast("B")
    return view


class Chunker:
    """Fixed-capacity ring buffer that cuts a byte stream into chunks.

    ``write`` accepts any C-contiguous buffer and copies as much as fits,
    returning the count (0 means full: apply backpressure). ``pop`` returns
    ``(chunk, at_flush)`` pairs of 1..chunk_size bytes, or None.

    ``flush()`` marks a boundary at the current end of the stream: the chunk
    that reaches it ends there even if short, and comes out of ``pop`` with
    ``at_flush`` True. Chunks never cross a boundary. A flush while
    ``pending == 0`` has nothing to end and yields no chunk (and no empty
    chunk); a caller that must still signal it, such as a response flush
    with nothing buffered, checks ``pending == 0`` before calling
    ``flush()`` and sends an empty frame with the flush flag itself.
    A second flush at the same position is the same boundary.
    """

    __slots__ = (
        "_boundaries",
        "_buf",
        "_capacity",
        "_chunk_size",
        "_head",
        "_pending",
        "_read_pos",
        "_view",
    )

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE, capacity: int | None = None) -> None:
        chunk_size = operator.index(chunk_size)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if capacity is None:
            capacity = 4 * chunk_size
        capacity = operator.index(capacity)
        if capacity < chunk_size:
            raise ValueError(
                f"capacity must be >= chunk_size ({chunk_size}), got {capacity}"
            )
        self._chunk_size = chunk_size
        self._capacity = capacity
        self._buf = bytearray(capacity)
        self._view = memoryview(self._buf)
        self._head = 0  # ring index of the oldest pending byte
        self._pending = 0
        self._read_pos = 0  # stream offset of the oldest pending byte
        # Stream offsets of flush boundaries, strictly increasing, each past
        # _read_pos; never more of them than pending bytes.
        self._boundaries: deque[int] = deque()

    @property
    def chunk_size(self) -> int:
        return self._chunk_size

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def pending(self) -> int:
        """Bytes written and not yet popped."""
        return self._pending

    @property
    def free(self) -> int:
        """Bytes the next write can accept; ``pending + free == capacity``."""
        return self._capacity - self._pending

    def write(self, data: Any) -> int:
        """Copy as much of ``data`` as fits; return the number of bytes taken."""
        view = _as_bytes_view(data)
        with view:
            n = min(view.nbytes, self._capacity - self._pending)
            if n:
                self._copy_in(view, n)
            return n

    def write_many(self, buffers: Iterable[Any]) -> int:
        """Write buffers in order until one does not fit whole.

        Returns the total number of bytes taken; the first buffer not taken
        whole may have been taken in part.
        """
        total = 0
        for data in buffers:
            view = _as_bytes_view(data)
            with view:
                size = view.nbytes
                n = min(size, self._capacity - self._pending)
                if n:
                    self._copy_in(view, n)
            total += n
            if n < size:
                break
        return total

    def _copy_in(self, view: memoryview, n: int) -> None:
        cap = self._capacity
        tail = (self._head + self._pending) % cap
        first = min(n, cap - tail)
        self._view[tail : tail + first] = view[:first]
        if first < n:
            self._view[: n - first] = view[first:n]
        self._pending += n

    def flush(self) -> None:
        """Mark a boundary at the current end; see the class docstring."""
        if self._pending == 0:
            return
        end = self._read_pos + self._pending
        if not self._boundaries or self._boundaries[-1] != end:
            self._boundaries.append(end)

    def _next_size(self, final: bool) -> tuple[int, bool]:
        if self._boundaries:
            distance = self._boundaries[0] - self._read_pos
            if distance <= self._chunk_size:
                return distance, True
            return self._chunk_size, False
        if self._pending >= self._chunk_size:
            return self._chunk_size, False
        if final:
            return self._pending, False
        return 0, False

    def _take(self, n: int, at_flush: bool) -> bytes:
        cap = self._capacity
        head = self._head
        first = min(n, cap - head)
        if first == n:
            chunk = bytes(self._view[head : head + n])
        else:
            chunk = b"".join((self._view[head:cap], self._view[: n - first]))
        self._head = (head + n) % cap
        self._pending -= n
        self._read_pos += n
        if at_flush:
            self._boundaries.popleft()
        return chunk

    def pop(self, final: bool = False) -> tuple[bytes, bool] | None:
        """Return the next ``(chunk, at_flush)``, or None.

        In order of preference: a full chunk_size chunk buffered before the
        next boundary; the bytes up to a pending boundary (``at_flush`` True);
        with ``final``, whatever remains; otherwise None.
        """
        n, at_flush = self._next_size(final)
        if n == 0:
            return None
        return self._take(n, at_flush), at_flush

    def pop_request_frame(self, final: bool = False) -> bytes | None:
        """Like ``pop``, but return the chunk as a ServeHTTPRequest frame.

        ``body_complete`` is set when ``final`` is true and the chunk leaves
        nothing pending. Returns None where ``pop`` would; with ``final`` and
        nothing pending, send ``encode_request_frame(b"", complete=True)``.
        """
        n, at_flush = self._next_size(final)
        if n == 0:
            return None
        complete = final and n == self._pending
        return encode_request_frame(self._take(n, at_flush), complete=complete)

    def pop_response_frame(self, final: bool = False) -> bytes | None:
        """Like ``pop_request_frame``, for ServeHTTPResponse (``flush`` = at_flush)."""
        n, at_flush = self._next_size(final)
        if n == 0:
            return None
        complete = final and n == self._pending
        return encode_response_frame(self._take(n, at_flush), complete=complete, flush=at_flush)

    def __repr__(self) -> str:
        return (
            f"<Chunker chunk_size={self._chunk_size} capacity={self._capacity} "
            f"pending={self._pending}>"
        )


# -- frame codec -------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _encode(body: Any, complete: bool, flush: bool) -> bytes:
    view = _as_bytes_view(body)
    with view:
        parts: list[bytes | memoryview] = []
        if view.nbytes:
            parts += [b"\x12", _varint(view.nbytes), view]
        if complete:
            parts.append(b"\x18\x01")
        if flush:
            parts.append(b"\x20\x01")
        return b"".join(parts)


def encode_request_frame(body: Any, *, complete: bool = False) -> bytes:
    """Protobuf bytes of ServeHTTPRequest{body_chunk=body, body_complete=complete}.

    Byte-identical to the generated class's ``SerializeToString()``.
    """
    return _encode(body, complete, False)


def encode_response_frame(body: Any, *, complete: bool = False, flush: bool = False) -> bytes:
    """Protobuf bytes of ServeHTTPResponse with body_chunk, body_complete, flush."""
    return _encode(body, complete, flush)


def _join(parts: Iterable[Any], complete: bool, flush: bool) -> bytes:
    try:
        items = list(parts)
    except TypeError:
        raise TypeError("parts must be an iterable of bytes-like objects") from None
    views: list[memoryview] = []
    try:
        for part in items:
            views.append(_as_bytes_view(part))
        size = sum(view.nbytes for view in views)
        out: list[bytes | memoryview] = [b"\x12", _varint(size), *views] if size else []
        if complete:
            out.append(b"\x18\x01")
        if flush:
            out.append(b"\x20\x01")
        return b"".join(out)
    finally:
        for view in views:
            view.release()


def join_request_frame(parts: Iterable[Any], *, complete: bool = False) -> bytes:
    """The ServeHTTPRequest frame of the concatenation of ``parts``.

    Equal to ``encode_request_frame(b"".join(parts), complete=complete)``, with
    one allocation and one copy of each part: for a caller that has a chunk
    in pieces (an ASGI server's reads, say) and no use for a ring.
    """
    return _join(parts, complete, False)


def join_response_frame(
    parts: Iterable[Any], *, complete: bool = False, flush: bool = False
) -> bytes:
    """The ServeHTTPResponse frame of the concatenation of ``parts``."""
    return _join(parts, complete, flush)


class RequestFrame:
    """A decoded ServeHTTPRequest: ``init`` bytes or None, ``body`` view, ``complete``."""

    __slots__ = ("body", "complete", "init")

    def __init__(self, init: bytes | None, body: memoryview, complete: bool) -> None:
        self.init = init
        self.body = body
        self.complete = complete

    def __repr__(self) -> str:
        return (
            f"<RequestFrame init={self.init is not None} body={self.body.nbytes}B "
            f"complete={self.complete}>"
        )


class ResponseFrame:
    """A decoded ServeHTTPResponse: ``init``, ``body``, ``complete``, ``flush``."""

    __slots__ = ("body", "complete", "flush", "init")

    def __init__(self, init: bytes | None, body: memoryview, complete: bool, flush: bool) -> None:
        self.init = init
        self.body = body
        self.complete = complete
        self.flush = flush

    def __repr__(self) -> str:
        return (
            f"<ResponseFrame init={self.init is not None} body={self.body.nbytes}B "
            f"complete={self.complete} flush={self.flush}>"
        )


def _read_varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    for _ in range(_MAX_VARINT_LEN):
        if pos >= end:
            raise FrameError(f"truncated varint at offset {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7
    start = pos - _MAX_VARINT_LEN
    raise FrameError(f"varint longer than {_MAX_VARINT_LEN} bytes at offset {start}")


def _skip_field(
    buf: memoryview,
    pos: int,
    end: int,
    wire_type: int,
    field: int,
    depth: int,
    max_depth: int = _MAX_GROUP_DEPTH,
) -> int:
    if wire_type == 0:
        return _read_varint(buf, pos, end)[1]
    if wire_type == 1:
        if end - pos < 8:
            raise FrameError(f"truncated 64-bit field {field} at offset {pos}")
        return pos + 8
    if wire_type == 5:
        if end - pos < 4:
            raise FrameError(f"truncated 32-bit field {field} at offset {pos}")
        return pos + 4
    if wire_type == 2:
        length, pos = _read_varint(buf, pos, end)
        if length > end - pos:
            raise FrameError(f"length {length} of field {field} runs past the end at offset {pos}")
        return pos + length
    if wire_type == 3:
        if depth >= max_depth:
            raise FrameError(f"groups nested deeper than {max_depth}")
        while True:
            tag_pos = pos
            tag, pos = _read_tag(buf, pos, end)
            inner_field, inner_type = tag >> 3, tag & 7
            if inner_type == 4:
                if inner_field != field:
                    raise FrameError(
                        f"end of group {inner_field} at offset {tag_pos} "
                        f"does not close group {field}"
                    )
                return pos
            pos = _skip_field(buf, pos, end, inner_type, inner_field, depth + 1, max_depth)
    if wire_type == 4:
        raise FrameError(f"end of group {field} without a start")
    raise FrameError(f"invalid wire type {wire_type} for field {field}")


def _read_tag(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    start = pos
    tag, pos = _read_varint(buf, pos, end)
    if tag > 0xFFFFFFFF:
        raise FrameError(f"tag out of range at offset {start}")
    if tag >> 3 == 0:
        raise FrameError(f"field number 0 at offset {start}")
    return tag, pos


def _expect(field: int, wire_type: int, expected: int, offset: int) -> None:
    if wire_type != expected:
        raise FrameError(
            f"field {field} has wire type {wire_type}, expected {expected} at offset {offset}"
        )


def _decode(data: Any, with_flush: bool) -> tuple[bytes | None, memoryview, bool, bool]:
    view = _as_bytes_view(data)
    try:
        return _parse(view, with_flush)
    except FrameError:
        # The traceback keeps frames alive: don't leave data's buffer exported.
        view.release()
        raise


def _parse(view: memoryview, with_flush: bool) -> tuple[bytes | None, memoryview, bool, bool]:
    end = view.nbytes
    pos = 0
    init_parts: list[bytes] = []
    body_start = body_end = 0
    complete = flush = False
    while pos < end:
        tag_pos = pos
        tag, pos = _read_tag(view, pos, end)
        field, wire_type = tag >> 3, tag & 7
        if field == 1 or field == 2:
            _expect(field, wire_type, 2, tag_pos)
            length, pos = _read_varint(view, pos, end)
            if length > end - pos:
                raise FrameError(
                    f"length {length} of field {field} runs past the end at offset {pos}"
                )
            if field == 1:
                init_parts.append(bytes(view[pos : pos + length]))
            else:
                body_start, body_end = pos, pos + length
            pos += length
        elif field == 3 or (field == 4 and with_flush):
            _expect(field, wire_type, 0, tag_pos)
            value, pos = _read_varint(view, pos, end)
            if field == 3:
                complete = value != 0
            else:
                flush = value != 0
        else:
            pos = _skip_field(view, pos, end, wire_type, field, 0)
    # Repeated occurrences of an embedded message merge, which is what parsing
    # their concatenation does.
    if not init_parts:
        init = None
    elif len(init_parts) == 1:
        init = init_parts[0]
    else:
        init = b"".join(init_parts)
    return init, view[body_start:body_end], complete, flush


def decode_request_frame(data: Any) -> RequestFrame:
    """Decode a ServeHTTPRequest; ``body`` is a zero-copy view into ``data``.

    Raises FrameError on malformed or truncated input.
    """
    init, body, complete, _ = _decode(data, False)
    return RequestFrame(init, body, complete)


def decode_response_frame(data: Any) -> ResponseFrame:
    """Decode a ServeHTTPResponse; ``body`` is a zero-copy view into ``data``."""
    init, body, complete, flush = _decode(data, True)
    return ResponseFrame(init, body, complete, flush)


# -- request init ---------------------------------------------------------------

# PluginContext fields in field-number order.
CONTEXT_FIELDS = (
    "session_id", "request_id", "ip_address", "accept_language", "user_agent", "user_id"
)


def _signed_varint(value: int) -> bytes:
    # int32/int64: a negative value is its 64-bit two's complement (ten bytes).
    return _varint(value & 0xFFFFFFFFFFFFFFFF)


def _string_field(out: bytearray, tag: int, text: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"expected str, not {type(text).__name__!r}")
    if text:
        data = text.encode("utf-8")
        out.append(tag)
        out += _varint(len(data))
        out += data


def _group_headers(headers: Any) -> list[tuple[str, list[bytes]]]:
    # Names compare case-insensitively and keep the spelling of their first
    # occurrence; bytes are latin-1 (HTTP/1.1's octets), on the wire UTF-8.
    grouped: dict[str, tuple[str, list[bytes]]] = {}
    for name, value in headers:
        if type(name) is bytes:
            key = name.decode("latin-1")
        elif isinstance(name, str):
            key = name
        else:
            raise TypeError(f"header names must be str or bytes, not {type(name).__name__!r}")
        if type(value) is bytes:
            raw = value
        elif isinstance(value, str):
            raw = value.encode("latin-1")
        else:
            raise TypeError(f"header values must be str or bytes, not {type(value).__name__!r}")
        lower = key.lower()
        slot = grouped.get(lower)
        if slot is None:
            grouped[lower] = (key, [raw])
        else:
            slot[1].append(raw)
    return list(grouped.values())


def encode_request_init(
    context: tuple[str, str, str, str, str, str],
    method: str,
    url: str,
    proto: str,
    proto_major: int,
    proto_minor: int,
    headers: Any,
    host: str,
    remote_addr: str,
    request_uri: str,
    content_length: int,
) -> bytes:
    """Protobuf bytes of a ServeHTTPRequest carrying only its init.

    The init is ServeHTTPRequestInit with ``plugin_context`` built from
    ``context`` (the PluginContext strings in ``CONTEXT_FIELDS`` order) and
    the scalar fields as named. ``headers`` is an iterable of ``(name,
    value)`` pairs, str or bytes (bytes names and str values are latin-1),
    grouped into one HTTPHeader per name: names compare case-insensitively
    and keep the spelling of their first occurrence, values keep their
    order. Byte-identical to the generated classes' ``SerializeToString()``
    of those messages: fields in number order, proto3 defaults (empty
    strings, zeros) left out, the context always present. Strings are
    encoded as UTF-8 (UnicodeEncodeError for lone surrogates, which
    protobuf refuses too); an int outside int32/int64 is a ValueError.
    """
    context = tuple(context)
    if len(context) != len(CONTEXT_FIELDS):
        raise ValueError(f"context must have {len(CONTEXT_FIELDS)} fields, not {len(context)}")
    for name, value, bits in (
        ("proto_major", proto_major, 32),
        ("proto_minor", proto_minor, 32),
        ("content_length", content_length, 64),
    ):
        if not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__!r}")
        if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
            raise ValueError(f"{name} {value} is outside int{bits}")
    ctx = bytearray()
    for tag, text in zip(range(0x0A, 0x0A + 8 * 6, 8), context, strict=True):
        _string_field(ctx, tag, text)
    init = bytearray(b"\x0a")
    init += _varint(len(ctx))
    init += ctx
    _string_field(init, 0x12, method)
    _string_field(init, 0x1A, url)
    _string_field(init, 0x22, proto)
    if proto_major:
        init += b"\x28" + _signed_varint(proto_major)
    if proto_minor:
        init += b"\x30" + _signed_varint(proto_minor)
    for key, values in _group_headers(headers):
        header = bytearray()
        _string_field(header, 0x0A, key)
        for value in values:
            header.append(0x12)
            header += _varint(len(value))
            header += value
        init.append(0x3A)
        init += _varint(len(header))
        init += header
    _string_field(init, 0x42, host)
    _string_field(init, 0x4A, remote_addr)
    _string_field(init, 0x52, request_uri)
    if content_length:
        init += b"\x58" + _signed_varint(content_length)
    return b"\x0a" + _varint(len(init)) + bytes(init)


# -- multiplexed batches -----------------------------------------------------
#
# MuxBatch { repeated MuxFrame frames = 1; }
# MuxFrame { uint64 stream_id = 1; FrameKind kind = 2; uint64 value = 3; bytes payload = 4; }

_TAG_MUX_FRAME = 0x0A
_TAG_MUX_STREAM = 0x08
_TAG_MUX_KIND = 0x10
_TAG_MUX_VALUE = 0x18
_TAG_MUX_PAYLOAD = 0x22

_U64_MAX = (1 << 64) - 1
_KIND_MAX = (1 << 31) - 1  # FrameKind is an int32 enum; negative kinds are not sent
_DECODED_KIND_MAX = (1 << 32) - 1


def _uint(x: Any, name: str, hi: int, hi_text: str) -> int:
    x = operator.index(x)
    if x < 0 or x > hi:
        raise OverflowError(f"{name} out of range 0..{hi_text}")
    return x


def _frame_ints(stream_id: Any, kind: Any, value: Any) -> tuple[int, int, int]:
    return (
        _uint(stream_id, "stream_id", _U64_MAX, "2**64-1"),
        _uint(kind, "kind", _KIND_MAX, "2**31-1"),
        _uint(value, "value", _U64_MAX, "2**64-1"),
    )


def _frame_head(stream_id: int, kind: int, value: int, payload_len: int) -> bytes:
    """A batch entry up to its payload bytes (which are payload_len long)."""
    fields = bytearray()
    if stream_id:
        fields.append(_TAG_MUX_STREAM)
        fields += _varint(stream_id)
    if kind:
        fields.append(_TAG_MUX_KIND)
        fields += _varint(kind)
    if value:
        fields.append(_TAG_MUX_VALUE)
        fields += _varint(value)
    if payload_len:
        fields.append(_TAG_MUX_PAYLOAD)
        fields += _varint(payload_len)
    size = len(fields) + payload_len
    return b"%c%b%b" % (_TAG_MUX_FRAME, _varint(size), fields)


def encode_batch(frames: Iterable[tuple[int, int, int, Any]]) -> bytes:
    """Protobuf bytes of MuxBatch with one MuxFrame per (stream_id, kind, value, payload).

    Byte-identical to ``MuxBatch(frames=[MuxFrame(...), ...]).SerializeToString()``:
    zero and empty fields are left out (proto3), every frame is written.
    ``payload`` is any C-contiguous buffer. ``stream_id`` and ``value`` must
    be in 0..2**64-1 and ``kind`` in 0..2**31-1, else OverflowError; a
    non-integer is a TypeError, an item that is not four values a ValueError.
    """
    try:
        items = iter(frames)
    except TypeError:
        raise TypeError(
            "frames must be an iterable of (stream_id, kind, value, payload) tuples"
        ) from None
    parts: list[bytes | memoryview] = []
    views: list[memoryview] = []
    try:
        for item in list(items):
            t = _frame_tuple(item)
            stream_id, kind, value = _frame_ints(t[0], t[1], t[2])
            view = _as_bytes_view(t[3])
            views.append(view)
            parts.append(_frame_head(stream_id, kind, value, view.nbytes))
            parts.append(view)
        return b"".join(parts)
    finally:
        for view in views:
            view.release()


def _frame_tuple(item: Any) -> tuple[Any, ...]:
    t = item if type(item) is tuple else tuple(item)
    if len(t) != 4:
        raise ValueError(f"a frame is (stream_id, kind, value, payload), got {len(t)} items")
    return t


class BatchWriter:
    """Builds one MuxBatch frame by frame into a growing buffer.

    ``add`` appends a frame and returns True, or returns False and adds
    nothing when the batch already holds a frame and this one would take
    its encoded size past ``limit`` bytes (a single frame larger than
    ``limit`` still goes into an empty batch: it has nowhere else to go).
    ``take()`` returns the encoded batch, byte-identical to ``encode_batch``
    of the same frames, and leaves the writer empty for the next one.
    Arguments are checked as ``encode_batch`` checks them.
    """

    __slots__ = ("_buf", "_count", "_limit")

    def __init__(self, limit: int) -> None:
        limit = operator.index(limit)
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self._limit = min(limit, sys.maxsize)
        self._buf = bytearray()
        self._count = 0

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def nbytes(self) -> int:
        """Encoded size of the batch so far."""
        return len(self._buf)

    def __len__(self) -> int:
        return self._count

    def _refuses(self, entry: int) -> bool:
        return self._count > 0 and len(self._buf) + entry > self._limit

    def add(self, stream_id: int, kind: int, value: int = 0, payload: Any = b"") -> bool:
        """Append a frame; False (nothing added) when it would pass the limit."""
        stream_id, kind, value = _frame_ints(stream_id, kind, value)
        with _as_bytes_view(payload) as view:
            head = _frame_head(stream_id, kind, value, view.nbytes)
            if self._refuses(len(head) + view.nbytes):
                return False
            self._buf += head
            self._buf += view
        self._count += 1
        return True

    def add_body(
        self,
        stream_id: int,
        kind: int,
        body: Any,
        *,
        response: bool,
        complete: bool = False,
        flush: bool = False,
        value: int = 0,
    ) -> bool:
        """Append a frame whose payload is a body message, straight from ``body``.

        The payload is ``encode_response_frame(body, complete=, flush=)`` when
        ``response`` is true, else ``encode_request_frame(body, complete=)``
        (``flush`` there is a ValueError), written into the batch without an
        intermediate bytes object. Returns what ``add`` returns.
        """
        stream_id, kind, value = _frame_ints(stream_id, kind, value)
        flush = bool(flush)
        if flush and not response:
            raise ValueError("flush is only for response bodies")
        with _as_bytes_view(body) as view:
            complete = bool(complete)
            n = view.nbytes
            body_head = b"%c%b" % (_TAG_BODY, _varint(n)) if n else b""
            tail = (b"\x18\x01" if complete else b"") + (b"\x20\x01" if flush else b"")
            body_size = len(body_head) + n + len(tail)
            head = _frame_head(stream_id, kind, value, body_size)
            if self._refuses(len(head) + body_size):
                return False
            self._buf += head
            self._buf += body_head
            self._buf += view
            self._buf += tail
        self._count += 1
        return True

    def take(self) -> bytes:
        """The encoded MuxBatch; the writer is empty again."""
        out = bytes(self._buf)
        self._buf = bytearray()
        self._count = 0
        return out

    def __repr__(self) -> str:
        return f"<BatchWriter frames={self._count} nbytes={len(self._buf)} limit={self._limit}>"


def _parse_mux_frame(view: memoryview, pos: int, end: int) -> tuple[int, int, int, int, int]:
    stream_id = kind = value = 0
    payload_start = payload_end = 0
    while pos < end:
        tag_pos = pos
        tag, pos = _read_tag(view, pos, end)
        field, wire_type = tag >> 3, tag & 7
        if 1 <= field <= 3:
            _expect(field, wire_type, 0, tag_pos)
            value_pos = pos
            number, pos = _read_varint(view, pos, end)
            if field == 1:
                stream_id = number
            elif field == 2:
                if number > _DECODED_KIND_MAX:
                    raise FrameError(
                        f"kind {number} out of range 0..2**32-1 at offset {value_pos}"
                    )
                kind = number
            else:
                value = number
        elif field == 4:
            _expect(field, wire_type, 2, tag_pos)
            length, pos = _read_varint(view, pos, end)
            if length > end - pos:
                raise FrameError(
                    f"length {length} of field {field} runs past the end at offset {pos}"
                )
            payload_start, payload_end = pos, pos + length
            pos += length
        else:
            # The frame is one level of nesting already.
            pos = _skip_field(view, pos, end, wire_type, field, 0, _MAX_GROUP_DEPTH - 1)
    return stream_id, kind, value, payload_start, payload_end


def _parse_batch(view: memoryview, most: int) -> list[tuple[int, int, int, int, int]]:
    end = view.nbytes
    pos = 0
    frames: list[tuple[int, int, int, int, int]] = []
    while pos < end:
        tag_pos = pos
        tag, pos = _read_tag(view, pos, end)
        field, wire_type = tag >> 3, tag & 7
        if field != 1:
            pos = _skip_field(view, pos, end, wire_type, field, 0)
            continue
        _expect(field, wire_type, 2, tag_pos)
        length, pos = _read_varint(view, pos, end)
        if length > end - pos:
            raise FrameError(f"length {length} of field 1 runs past the end at offset {pos}")
        try:
            frame = _parse_mux_frame(view, pos, pos + length)
        except FrameError as exc:
            raise FrameError(f"frame {len(frames)}: {exc}") from None
        if len(frames) >= most:
            raise FrameError(f"more than {most} frames in the batch")
        frames.append(frame)
        pos += length
    return frames


def decode_batch(
    data: Any, *, max_frames: int | None = None
) -> list[tuple[int, int, int, memoryview]]:
    """Decode a MuxBatch into ``(stream_id, kind, value, payload)`` tuples, in order.

    ``payload`` is a read-only zero-copy view into ``data`` (empty when the
    frame has none); while any payload view lives, a bytearray ``data``
    cannot be resized. Parsed as protobuf parses it: unknown fields of any
    wire type (groups too) are skipped, and the last occurrence of a field
    within a frame wins. Stricter than protobuf: a known field with another
    wire type, or a kind of 2**32 or more, is a FrameError. Malformed or
    truncated input raises FrameError naming what is wrong and where
    (``frame N:`` when it is inside the N-th frame); so does a batch of more
    than ``max_frames`` frames (None: no limit).
    """
    most = sys.maxsize
    if max_frames is not None:
        max_frames = operator.index(max_frames)
        if max_frames < 0:
            raise ValueError(f"max_frames must be >= 0, got {max_frames}")
        most = min(max_frames, sys.maxsize)
    view = _as_bytes_view(data).toreadonly()
    try:
        frames = _parse_batch(view, most)
    except FrameError:
        # The traceback keeps frames alive: don't leave data's buffer exported.
        view.release()
        raise
    return [
        (stream_id, kind, value, view[start:end])
        for stream_id, kind, value, start, end in frames
    ]


# -- Server-Sent Events ------------------------------------------------------

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def _sse_bytes(value: Any, name: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{name} must be str or bytes, not {type(value).__name__!r}")


def _sse_field(value: Any, name: str) -> bytes:
    raw = _sse_bytes(value, name)
    if b"\n" in raw or b"\r" in raw:
        raise ValueError(f"SSE {name} must not contain a line break")
    if b"\0" in raw and name == "id":
        raise ValueError("SSE id must not contain NUL")
    return raw


def encode_sse(
    data: Any,
    *,
    event: Any = None,
    id: Any = None,
    retry: int | None = None,
) -> bytes:
    """One event in the WHATWG ``text/event-stream`` format.

    ``data`` is split on CRLF, CR and LF into one ``data:`` line each, so the
    client reassembles it exactly. A line break in ``event`` or ``id`` (or NUL
    in ``id``) raises ValueError; ``retry`` must be a non-negative int.
    """
    out = []
    if event is not None:
        out.append(b"event: " + _sse_field(event, "event") + b"\n")
    if id is not None:
        out.append(b"id: " + _sse_field(id, "id") + b"\n")
    if retry is not None:
        if not isinstance(retry, int) or isinstance(retry, bool) or retry < 0:
            raise ValueError(f"SSE retry must be a non-negative int, got {retry!r}")
        out.append(b"retry: %d\n" % retry)
    for line in _LINE_BREAK.split(_sse_bytes(data, "data")):
        out.append(b"data: " + line + b"\n")
    out.append(b"\n")
    return b"".join(out)


__all__ = [
    "COMPILED",
    "DEFAULT_CHUNK_SIZE",
    "RING_DESCRIPTOR_SIZE",
    "BatchWriter",
    "Chunker",
    "FrameError",
    "RequestFrame",
    "ResponseFrame",
    "RingError",
    "RingReader",
    "RingWriter",
    "decode_batch",
    "decode_request_frame",
    "decode_response_frame",
    "decode_ring_descriptor",
    "encode_batch",
    "encode_request_frame",
    "encode_request_init",
    "encode_response_frame",
    "encode_ring_descriptor",
    "encode_sse",
    "join_request_frame",
    "join_response_frame",
]


# -- shared ring -----------------------------------------------------------------

RING_DESCRIPTOR_SIZE = 20
_RING_DESCRIPTOR = struct.Struct("<IQQ")


def encode_ring_descriptor(ring_id: int, offset: int, length: int) -> bytes:
    """The 20-byte descriptor of a chunk in a shared ring: ring id, offset, length.

    Little-endian u32 ring id, u64 offset, u64 length. OverflowError for a
    value outside its range.
    """
    ring_id = operator.index(ring_id)
    offset = operator.index(offset)
    length = operator.index(length)
    if not 0 <= ring_id <= 0xFFFFFFFF:
        raise OverflowError(f"ring id {ring_id} is outside 0..2**32-1")
    if not 0 <= offset <= _U64_MAX:
        raise OverflowError(f"offset {offset} is outside 0..2**64-1")
    if not 0 <= length <= _U64_MAX:
        raise OverflowError(f"length {length} is outside 0..2**64-1")
    return _RING_DESCRIPTOR.pack(ring_id, offset, length)


def decode_ring_descriptor(data: Any, ring_id: int, capacity: int) -> tuple[int, int]:
    """``(offset, length)`` of a descriptor for ring ``ring_id`` of ``capacity`` bytes.

    RingError, naming what is wrong, for a descriptor that is not 20 bytes,
    names another ring, starts outside the ring, is empty, or runs past the
    ring's end. Never touches the ring itself.
    """
    ring_id = operator.index(ring_id)
    capacity = operator.index(capacity)
    if not 0 <= ring_id <= 0xFFFFFFFF:
        raise OverflowError(f"ring id {ring_id} is outside 0..2**32-1")
    if not 0 <= capacity <= _U64_MAX:
        raise OverflowError(f"capacity {capacity} is outside 0..2**64-1")
    view = _as_bytes_view(data)
    if view.nbytes != RING_DESCRIPTOR_SIZE:
        raise RingError(
            f"ring descriptor must be {RING_DESCRIPTOR_SIZE} bytes, got {view.nbytes}"
        )
    got_id, offset, length = _RING_DESCRIPTOR.unpack(view)
    if got_id != ring_id:
        raise RingError(f"descriptor for ring {got_id}, expected ring {ring_id}")
    if offset >= capacity:
        raise RingError(f"descriptor offset {offset} is outside the ring of {capacity} bytes")
    if length == 0:
        raise RingError("descriptor length is 0")
    if length > capacity - offset:
        raise RingError(
            f"descriptor length {length} at offset {offset} passes the ring end ({capacity} bytes)"
        )
    return offset, length


class _RingSpace:
    """Where each chunk goes in a ring, as both ends compute it.

    A chunk of n bytes starts at the current head, or at 0 when it would
    pass the end (the bytes skipped count as used until it is released).
    Offsets depend only on the lengths written, so the reader checks that
    each descriptor is exactly where the writer had to put it. Releases may
    come in any order; space comes back in order, as each oldest chunk is
    released.
    """

    __slots__ = ("capacity", "head", "records", "used")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.head = 0
        self.used = 0
        self.records: deque[list[int]] = deque()  # [offset, length, cost, released]

    def place(self, length: int) -> tuple[int, int]:
        if self.head + length <= self.capacity:
            return self.head, length
        return 0, self.capacity - self.head + length

    def push(self, offset: int, length: int, cost: int) -> None:
        self.records.append([offset, length, cost, 0])
        self.head = offset + length
        self.used += cost

    def release(self, offset: int, length: int) -> bool:
        for record in self.records:
            if record[0] == offset and record[1] == length and not record[3]:
                record[3] = 1
                break
        else:
            return False
        records = self.records
        while records and records[0][3]:
            self.used -= records.popleft()[2]
        return True


class _RingEnd:
    __slots__ = ("_base", "_capacity", "_closed", "_fd", "_map", "_ring_id", "_space")

    _ring_id: int
    _capacity: int
    _fd: int
    _map: mmap.mmap
    _base: memoryview
    _space: _RingSpace
    _closed: bool

    def _open(self, ring_id: int, fd: int, capacity: int, *, writable: bool) -> None:
        self._ring_id = ring_id
        self._capacity = capacity
        self._fd = fd
        self._map = map_ring(fd, capacity, writable=writable)
        self._base = memoryview(self._map)
        self._space = _RingSpace(capacity)
        self._closed = False

    @property
    def ring_id(self) -> int:
        return self._ring_id

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def used(self) -> int:
        """Bytes held by chunks not yet released, with the bytes skipped at the end."""
        return self._space.used

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        self._check_open()
        return self._fd

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the ring is closed")

    def _close_map(self) -> None:
        self._base.release()
        # chunk views still alive: the mapping goes with the last one
        with contextlib.suppress(BufferError):
            self._map.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError


class RingWriter(_RingEnd):
    """The sending end of a shared-memory ring: one direction of a lane.

    ``RingWriter(capacity, ring_id)`` creates a memfd of ``capacity`` bytes,
    seals it against shrinking and growing (F_SEAL_SHRINK | F_SEAL_GROW |
    F_SEAL_SEAL: the peer can never make a mapping fault with SIGBUS) and
    maps it. Send ``fileno()`` to the reader (SCM_RIGHTS).

    ``write(data)`` copies a chunk from any C-contiguous buffer into the ring
    and returns its descriptor, or None when the ring has no room until the
    reader returns credit. A chunk is 1..capacity//2 bytes, so any chunk fits
    once the ring is empty. ``credit(descriptor)`` takes back a chunk the
    reader released; a descriptor that is no outstanding chunk of this ring
    is a RingError.
    """

    __slots__ = ()

    def __init__(self, capacity: int, ring_id: int = 0) -> None:
        capacity = operator.index(capacity)
        ring_id = operator.index(ring_id)
        if capacity < 2:
            raise ValueError(f"ring capacity must be at least 2 bytes, got {capacity}")
        if not 0 <= ring_id <= 0xFFFFFFFF:
            raise OverflowError(f"ring id {ring_id} is outside 0..2**32-1")
        fd = create_sealed(capacity)
        try:
            self._open(ring_id, fd, capacity, writable=True)
        except BaseException:
            os.close(fd)
            raise

    @property
    def max_chunk(self) -> int:
        """The largest chunk ``write`` accepts: half the ring."""
        return self._capacity // 2

    def write(self, data: Any) -> bytes | None:
        """Copy ``data`` into the ring; its descriptor, or None when there is no room yet."""
        self._check_open()
        view = _as_bytes_view(data)
        length = view.nbytes
        if length == 0:
            raise ValueError("cannot write an empty chunk to a ring")
        if length > self._capacity // 2:
            raise ValueError(
                f"chunk of {length} bytes is larger than half the ring ({self._capacity // 2})"
            )
        space = self._space
        offset, cost = space.place(length)
        if cost > self._capacity - space.used:
            return None
        self._base[offset : offset + length] = view
        space.push(offset, length, cost)
        return _RING_DESCRIPTOR.pack(self._ring_id, offset, length)

    def credit(self, descriptor: Any) -> None:
        """Take back the space of a chunk the reader released."""
        self._check_open()
        offset, length = decode_ring_descriptor(descriptor, self._ring_id, self._capacity)
        if not self._space.release(offset, length):
            raise RingError(
                f"credit for a chunk not outstanding in ring {self._ring_id} "
                f"(offset {offset}, length {length})"
            )

    def close(self) -> None:
        """Unmap the ring and close its file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._close_map()
        os.close(self._fd)


class RingReader(_RingEnd):
    """The receiving end of a shared-memory ring.

    ``RingReader(fd, ring_id, max_capacity)`` takes ownership of ``fd`` (a
    received memfd; closed here, also when refused), checks that it is
    sealed against shrinking (RingError otherwise, and for an empty file or
    one above ``max_capacity``) and maps it read-only.

    ``read(descriptor)`` checks the descriptor (RingError for another ring,
    an offset or length outside the ring, a chunk that is not where the
    writer had to put it, or one that overruns chunks not yet released) and
    returns a read-only memoryview into the mapping, without a copy.

    Lifetime: a chunk view is valid until ``release(view)``, which returns
    the descriptor to send back as credit. After release the view itself is
    released: any use raises ValueError, so a chunk cannot be read after
    the writer may reuse its space. A consumer that keeps a chunk copies it
    first (``bytes(view)``). While something still holds a buffer export of
    the view itself (a C consumer mid-write, ``struct.iter_unpack``),
    ``release`` raises BufferError and the space stays held; release again
    once it is gone. Views derived from a chunk (slices, ``memoryview(view)``,
    numpy arrays) are not released with it: they stay memory-safe (the
    mapping is never unmapped under a live view) but show whatever the
    writer puts there next, so a consumer copies rather than keeps them.
    """

    __slots__ = ("_views",)

    def __init__(self, fd: int, ring_id: int = 0, max_capacity: int = 1 << 30) -> None:
        fd = operator.index(fd)
        try:
            ring_id = operator.index(ring_id)
            if not 0 <= ring_id <= 0xFFFFFFFF:
                raise OverflowError(f"ring id {ring_id} is outside 0..2**32-1")
            capacity = check_sealed(fd, operator.index(max_capacity))
            self._open(ring_id, fd, capacity, writable=False)
        except BaseException:
            os.close(fd)
            raise
        self._views: dict[int, tuple[memoryview, int, int]] = {}

    @property
    def outstanding(self) -> int:
        """Chunk views handed out and not yet released."""
        return len(self._views)

    def read(self, descriptor: Any) -> memoryview:
        """A read-only view of the chunk ``descriptor`` names."""
        self._check_open()
        offset, length = decode_ring_descriptor(descriptor, self._ring_id, self._capacity)
        space = self._space
        expected, cost = space.place(length)
        if offset != expected:
            raise RingError(
                f"descriptor offset {offset} is not where the next chunk of "
                f"{length} bytes starts ({expected})"
            )
        if cost > self._capacity - space.used:
            raise RingError(
                f"chunk of {length} bytes at offset {offset} overruns chunks not yet "
                f"released ({self._capacity - space.used} bytes free)"
            )
        space.push(offset, length, cost)
        view = self._base[offset : offset + length]
        self._views[id(view)] = (view, offset, length)
        return view

    def release(self, view: memoryview) -> bytes:
        """Release a chunk view; the descriptor to return to the writer as credit."""
        entry = self._views.get(id(view))
        if entry is None or entry[0] is not view:
            raise RingError("not an outstanding chunk of this ring")
        view.release()  # BufferError while exported: nothing changes
        del self._views[id(view)]
        offset, length = entry[1], entry[2]
        self._space.release(offset, length)
        return _RING_DESCRIPTOR.pack(self._ring_id, offset, length)

    def close(self) -> None:
        """Release every chunk view, unmap, close the file. Idempotent.

        A view still exported elsewhere keeps the mapping alive until that
        export goes; it is never unmapped under a live view.
        """
        if self._closed:
            return
        self._closed = True
        for view, _, _ in self._views.values():
            with contextlib.suppress(BufferError):
                view.release()
        self._views.clear()
        self._close_map()
        os.close(self._fd)


# -- response init ---------------------------------------------------------------

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1


def encode_response_init(status: int, headers: Iterable[tuple[str, Iterable[bytes]]]) -> bytes:
    """Protobuf bytes of ServeHTTPResponse{init=ServeHTTPResponseInit{status_code, headers}}.

    ``headers`` are (key, values) pairs, one HTTPHeader each, in order
    (``chunkwire._wire.group_headers`` groups a response's headers so).
    Keys are str (UTF-8 on the wire), values bytes. Byte-identical to the
    generated classes' ``SerializeToString()``; a status outside int32 is a
    ValueError, a key that is no str or a value that is no bytes a TypeError.
    """
    code = operator.index(status)
    if not _INT32_MIN <= code <= _INT32_MAX:
        raise ValueError(f"status_code {code} does not fit an int32")
    parts: list[bytes] = []
    if code:
        parts += [b"\x08", _varint(code & 0xFFFFFFFFFFFFFFFF)]
    for key, values in headers:
        if not isinstance(key, str):
            raise TypeError(f"header key must be str, not {type(key).__name__!r}")
        header: list[bytes] = []
        name = key.encode("utf-8")
        if name:
            header += [b"\x0a", _varint(len(name)), name]
        for value in values:
            if not isinstance(value, bytes):
                raise TypeError(f"header value must be bytes, not {type(value).__name__!r}")
            header += [b"\x12", _varint(len(value)), value]
        encoded = b"".join(header)
        parts += [b"\x12", _varint(len(encoded)), encoded]
    init = b"".join(parts)
    return b"\x0a" + _varint(len(init)) + init


__all__ += ["encode_response_init"]


# -- small writes ----------------------------------------------------------------


class _Taken:
    __slots__ = ()
    __await__ = ().__iter__  # type: ignore[assignment]  # an empty iterator: done at once


_TAKEN = _Taken()


class SmallWriter:
    """Base of a writer whose small writes only land in a ring (``plugin.Response``).

    ``write(data, flush=False)``: bytes (exactly) shorter than ``_room``
    that fit the free space of ``_ring`` (a Chunker), without flush, are
    copied into the ring, ``_room`` shrinks by their size, and an awaitable
    that is already done is returned. Anything else is handed to
    ``self._write(data, flush)``, which the subclass defines and whose
    result is returned. The subclass sets ``_ring`` and ``_room`` (0 at
    first) and keeps ``_room`` at 0 whenever a write must do more.
    """

    __slots__ = ("_ring", "_room")

    _ring: Chunker | None
    _room: int

    def __init__(self) -> None:
        self._ring = None
        self._room = 0

    def write(self, data: Any, flush: bool = False) -> Any:
        if not flush and type(data) is bytes:
            size = len(data)
            ring = self._ring
            if size < self._room and ring is not None and size <= ring.free:
                self._room -= size
                ring.write(data)
                return _TAKEN
        return self._write(data, flush)  # type: ignore[attr-defined]


__all__ += ["SmallWriter"]
