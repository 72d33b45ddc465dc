"""Compiled core: the twin of ``chunkwire._core_py``, same behaviour and errors."""

from collections.abc import Iterable
from typing import Any, Final, Literal

from ._errors import FrameError as FrameError
from ._errors import RingError as RingError

COMPILED: Final[Literal[True]]
DEFAULT_CHUNK_SIZE: Final[int]

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

    def __init__(self, chunk_size: int = 65536, capacity: int | None = None) -> None: ...
    @property
    def chunk_size(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    @property
    def pending(self) -> int:
        """Bytes written and not yet popped."""
    @property
    def free(self) -> int:
        """Bytes the next write can accept; ``pending + free == capacity``."""
    def write(self, data: Any) -> int:
        """Copy as much of ``data`` as fits; return the number of bytes taken."""
    def write_many(self, buffers: Iterable[Any]) -> int:
        """Write buffers in order until one does not fit whole.

        Returns the total number of bytes taken; the first buffer not taken
        whole may have been taken in part.
        """
    def flush(self) -> None:
        """Mark a boundary at the current end; see the class docstring."""
    def pop(self, final: bool = False) -> tuple[bytes, bool] | None:
        """Return the next ``(chunk, at_flush)``, or None.

        In order of preference: a full chunk_size chunk buffered before the
        next boundary; the bytes up to a pending boundary (``at_flush`` True);
        with ``final``, whatever remains; otherwise None.
        """
    def pop_request_frame(self, final: bool = False) -> bytes | None:
        """Like ``pop``, but return the chunk as a ServeHTTPRequest frame.

        ``body_complete`` is set when ``final`` is true and the chunk leaves
        nothing pending. Returns None where ``pop`` would; with ``final`` and
        nothing pending, send ``encode_request_frame(b"", complete=True)``.
        """
    def pop_response_frame(self, final: bool = False) -> bytes | None:
        """Like ``pop_request_frame``, for ServeHTTPResponse (``flush`` = at_flush)."""

class RequestFrame:
    """A decoded ServeHTTPRequest: ``init`` bytes or None, ``body`` view, ``complete``."""

    init: bytes | None
    body: memoryview
    complete: bool
    def __init__(self, init: bytes | None, body: memoryview, complete: bool) -> None: ...

class ResponseFrame:
    """A decoded ServeHTTPResponse: ``init``, ``body``, ``complete``, ``flush``."""

    init: bytes | None
    body: memoryview
    complete: bool
    flush: bool
    def __init__(
        self, init: bytes | None, body: memoryview, complete: bool, flush: bool
    ) -> None: ...

def encode_request_frame(body: Any, *, complete: bool = False) -> bytes:
    """Protobuf bytes of ServeHTTPRequest{body_chunk=body, body_complete=complete}.

    Byte-identical to the generated class's ``SerializeToString()``.
    """

def encode_response_frame(body: Any, *, complete: bool = False, flush: bool = False) -> bytes:
    """Protobuf bytes of ServeHTTPResponse with body_chunk, body_complete, flush."""

def join_request_frame(parts: Iterable[Any], *, complete: bool = False) -> bytes:
    """The ServeHTTPRequest frame of the concatenation of ``parts``.

    Equal to ``encode_request_frame(b"".join(parts), complete=complete)``, with
    one allocation and one copy of each part.
    """

def join_response_frame(
    parts: Iterable[Any], *, complete: bool = False, flush: bool = False
) -> bytes:
    """The ServeHTTPResponse frame of the concatenation of ``parts``."""

def decode_request_frame(data: Any) -> RequestFrame:
    """Decode a ServeHTTPRequest; ``body`` is a zero-copy view into ``data``.

    Raises FrameError on malformed or truncated input.
    """

def decode_response_frame(data: Any) -> ResponseFrame:
    """Decode a ServeHTTPResponse; ``body`` is a zero-copy view into ``data``."""

def encode_request_init(
    context: tuple[str, str, str, str, str, str],
    method: str,
    url: str,
    proto: str,
    proto_major: int,
    proto_minor: int,
    headers: Iterable[tuple[str | bytes, str | bytes]],
    host: str,
    remote_addr: str,
    request_uri: str,
    content_length: int,
) -> bytes:
    """Protobuf bytes of a ServeHTTPRequest carrying only its init (see the pure twin)."""

def encode_batch(frames: Iterable[tuple[int, int, int, Any]]) -> bytes:
    """Protobuf bytes of MuxBatch with one MuxFrame per (stream_id, kind, value, payload).

    Byte-identical to ``MuxBatch(frames=[MuxFrame(...), ...]).SerializeToString()``:
    zero and empty fields are left out (proto3), every frame is written.
    ``payload`` is any C-contiguous buffer. ``stream_id`` and ``value`` must
    be in 0..2**64-1 and ``kind`` in 0..2**31-1, else OverflowError; a
    non-integer is a TypeError, an item that is not four values a ValueError.
    """

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

    def __init__(self, limit: int) -> None: ...
    @property
    def limit(self) -> int: ...
    @property
    def nbytes(self) -> int:
        """Encoded size of the batch so far."""
    def __len__(self) -> int: ...
    def add(self, stream_id: int, kind: int, value: int = 0, payload: Any = b"") -> bool:
        """Append a frame; False (nothing added) when it would pass the limit."""
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
    def take(self) -> bytes:
        """The encoded MuxBatch; the writer is empty again."""

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

RING_DESCRIPTOR_SIZE: Final[int]

def encode_ring_descriptor(ring_id: int, offset: int, length: int) -> bytes:
    """The 20-byte descriptor of a chunk in a shared ring: ring id, offset, length.

    Little-endian u32 ring id, u64 offset, u64 length. OverflowError for a
    value outside its range.
    """

def decode_ring_descriptor(data: Any, ring_id: int, capacity: int) -> tuple[int, int]:
    """``(offset, length)`` of a descriptor for ring ``ring_id`` of ``capacity`` bytes.

    RingError, naming what is wrong, for a descriptor that is not 20 bytes,
    names another ring, starts outside the ring, is empty, or runs past the
    ring's end. Never touches the ring itself.
    """

class RingWriter:
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

    def __init__(self, capacity: int, ring_id: int = 0) -> None: ...
    @property
    def ring_id(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    @property
    def used(self) -> int:
        """Bytes held by chunks not yet released, with the bytes skipped at the end."""
    @property
    def closed(self) -> bool: ...
    @property
    def max_chunk(self) -> int:
        """The largest chunk ``write`` accepts: half the ring."""
    def fileno(self) -> int: ...
    def write(self, data: Any) -> bytes | None:
        """Copy ``data`` into the ring; its descriptor, or None when there is no room yet."""
    def credit(self, descriptor: Any) -> None:
        """Take back the space of a chunk the reader released."""
    def close(self) -> None:
        """Unmap the ring and close its file. Idempotent."""
    def __enter__(self) -> RingWriter: ...
    def __exit__(self, *exc_info: object) -> None: ...

class RingReader:
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

    def __init__(self, fd: int, ring_id: int = 0, max_capacity: int = 1 << 30) -> None: ...
    @property
    def ring_id(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    @property
    def used(self) -> int:
        """Bytes held by chunks not yet released, with the bytes skipped at the end."""
    @property
    def closed(self) -> bool: ...
    @property
    def outstanding(self) -> int:
        """Chunk views handed out and not yet released."""
    def fileno(self) -> int: ...
    def read(self, descriptor: Any) -> memoryview:
        """A read-only view of the chunk ``descriptor`` names."""
    def release(self, view: memoryview) -> bytes:
        """Release a chunk view; the descriptor to return to the writer as credit."""
    def close(self) -> None:
        """Release every chunk view, unmap, close the file. Idempotent.

        A view still exported elsewhere keeps the mapping alive until that
        export goes; it is never unmapped under a live view.
        """
    def __enter__(self) -> RingReader: ...
    def __exit__(self, *exc_info: object) -> None: ...

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
    "encode_response_frame",
    "encode_ring_descriptor",
    "encode_sse",
    "join_request_frame",
    "join_response_frame",
]

def encode_response_init(status: int, headers: Iterable[tuple[str, Iterable[bytes]]]) -> bytes:
    """Protobuf bytes of ServeHTTPResponse{init=ServeHTTPResponseInit{status_code, headers}}.

    ``headers`` are (key, values) pairs, one HTTPHeader each, in order.
    Byte-identical to the generated classes' ``SerializeToString()``.
    """

__all__ += ["encode_response_init"]

class SmallWriter:
    """Base of a writer whose small writes only land in a ring (``plugin.Response``).

    See ``chunkwire._core_py.SmallWriter``.
    """

    _ring: Chunker | None
    _room: int
    def write(self, data: Any, flush: bool = False) -> Any: ...

__all__ += ["SmallWriter"]
