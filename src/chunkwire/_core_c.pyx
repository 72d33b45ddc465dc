"""Compiled core: Cython over csrc/ring.c and csrc/frame.c.

The twin of ``chunkwire._core_py``: same names, results and errors; the
docstrings live there and in ``_core_c.pyi``.
"""

from cpython.buffer cimport PyBUF_FULL_RO, PyBUF_WRITABLE, PyBuffer_IsContiguous, PyBuffer_Release
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.exc cimport PyErr_Clear, PyErr_ExceptionMatches
from cpython.long cimport PyLong_AsUnsignedLongLong, PyLong_CheckExact, PyLong_FromUnsignedLongLong
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.memoryview cimport PyMemoryView_FromObject, PyMemoryView_GET_BUFFER
from cpython.sequence cimport (
    PySequence_Fast,
    PySequence_Fast_GET_ITEM,
    PySequence_Fast_GET_SIZE,
    PySequence_Tuple,
)
from cpython.number cimport PyNumber_AsSsize_t, PyNumber_Index as _index
from cpython.tuple cimport PyTuple_CheckExact, PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_Check
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memchr, memcpy, strcmp

import os

from ._errors import FrameError, RingError
from ._shm import check_sealed, create_sealed, map_ring


cdef extern from "Python.h":
    # No exception clause: _get_bytes_view rewrites the error first.
    int _get_buffer "PyObject_GetBuffer" (object obj, Py_buffer *view, int flags)
    const Py_ssize_t PY_SSIZE_T_MAX


COMPILED = True

DEFAULT_CHUNK_SIZE = 65536


# -- buffers -------------------------------------------------------------------
#
# The pure twin goes through memoryview(data), then .cast("B") unless the view
# is already 1-D "B". The checks below give the same results and errors for
# every exporter without building the memoryview: the same request flags
# (memoryview asks for PyBUF_FULL_RO), memoryview's own contiguity rule, and
# the one way that cast can fail on a C-contiguous view.


cdef int _not_a_buffer(object data) except -1:
    if PyErr_ExceptionMatches(TypeError):
        PyErr_Clear()
        raise TypeError(
            f"data must be a bytes-like object, not {type(data).__name__!r}"
        )
    return -1


cdef bint _c_contiguous(const Py_buffer *view) noexcept:
    # memoryview's c_contiguous, including how it fills in missing shape and
    # strides for a 1-D export.
    cdef Py_ssize_t shape0, stride0
    if view.suboffsets != NULL:
        return False
    if view.ndim == 0:
        return True
    if view.ndim == 1:
        if view.shape != NULL:
            shape0 = view.shape[0]
        elif view.itemsize:
            shape0 = view.len // view.itemsize
        else:
            shape0 = 0
        stride0 = view.strides[0] if view.strides != NULL else view.itemsize
        return shape0 == 1 or stride0 == view.itemsize
    return PyBuffer_IsContiguous(<Py_buffer *>view, c'C')


cdef int _check_view(Py_buffer *view) except -1:
    if view.ndim > 64:
        PyBuffer_Release(view)
        raise ValueError("memoryview: number of dimensions must not exceed 64")
    if not _c_contiguous(view):
        PyBuffer_Release(view)
        raise BufferError("data must be a C-contiguous buffer")
    return 0


cdef inline int _get_bytes_view(object data, Py_buffer *view) except -1:
    """Acquire a C-contiguous view of data; view.len is its size in bytes.

    On success the caller releases the view; on error it is already released.
    """
    if _get_buffer(data, view, PyBUF_FULL_RO) < 0:
        return _not_a_buffer(data)
    if (view.ndim == 1 and view.suboffsets == NULL
            and (view.strides == NULL or view.strides[0] == view.itemsize)):
        return 0
    return _check_view(view)


cdef object _as_bytes_memoryview(object data):
    """memoryview of data as 1-D unsigned bytes, as the pure twin makes it."""
    cdef const Py_buffer *view
    cdef const char *fmt
    try:
        mv = PyMemoryView_FromObject(data)
    except TypeError:
        raise TypeError(
            f"data must be a bytes-like object, not {type(data).__name__!r}"
        ) from None
    view = PyMemoryView_GET_BUFFER(mv)
    if not _c_contiguous(view):
        mv.release()
        raise BufferError("data must be a C-contiguous buffer")
    fmt = view.format
    if view.ndim != 1 or fmt == NULL or strcmp(fmt, b"B") != 0:
        if view.len == 0:
            mv.release()
            return memoryview(b"")
        mv = mv.cast("B")
    return mv


# -- chunker ---------------------------------------------------------------------


cdef class Chunker:
    """Fixed-capacity ring buffer that cuts a byte stream into chunks.

    See ``chunkwire._core_py.Chunker``.
    """

    cdef cw_ring _ring

    def __init__(self, chunk_size=DEFAULT_CHUNK_SIZE, capacity=None):
        cdef Py_ssize_t size, cap
        cdef unsigned char *buf
        chunk_size = _index(chunk_size)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if capacity is None:
            capacity = 4 * chunk_size
        capacity = _index(capacity)
        if capacity < chunk_size:
            raise ValueError(
                f"capacity must be >= chunk_size ({chunk_size}), got {capacity}"
            )
        # The conversion and errors bytearray(capacity) would give.
        cap = PyNumber_AsSsize_t(capacity, OverflowError)
        if cap == PY_SSIZE_T_MAX:
            raise MemoryError()
        size = PyNumber_AsSsize_t(chunk_size, OverflowError)
        buf = <unsigned char *>PyMem_Malloc(<size_t>cap)
        if buf == NULL:
            raise MemoryError()
        PyMem_Free(self._ring.buf)
        cw_ring_init(&self._ring, buf, <size_t>cap, <size_t>size)

    def __dealloc__(self):
        PyMem_Free(self._ring.buf)
        PyMem_Free(self._ring.marks)

    @property
    def chunk_size(self):
        return self._ring.chunk_size

    @property
    def capacity(self):
        return self._ring.capacity

    @property
    def pending(self):
        """Bytes written and not yet popped."""
        return self._ring.pending

    @property
    def free(self):
        """Bytes the next write can accept; ``pending + free == capacity``."""
        return self._ring.capacity - self._ring.pending

    def write(self, object data):
        """Copy as much of ``data`` as fits; return the number of bytes taken."""
        cdef Py_buffer view
        cdef size_t n
        _get_bytes_view(data, &view)
        try:
            # The copy keeps the GIL: it runs at tens of GB/s (about 25 us per
            # MiB), and releasing it around 1 MiB+ copies halved a writer's
            # throughput next to one busy Python thread, lost to GIL hand-offs.
            n = cw_ring_write(&self._ring, view.buf, <size_t>view.len)
        finally:
            PyBuffer_Release(&view)
        return n

    def write_many(self, buffers):
        """Write buffers in order until one does not fit whole.

        Returns the total number of bytes taken; the first buffer not taken
        whole may have been taken in part.
        """
        cdef Py_buffer view
        cdef size_t n, size
        cdef size_t total = 0
        for data in buffers:
            _get_bytes_view(data, &view)
            try:
                size = <size_t>view.len
                n = cw_ring_write(&self._ring, view.buf, size)
            finally:
                PyBuffer_Release(&view)
            total += n
            if n < size:
                break
        return total

    def flush(self):
        """Mark a boundary at the current end; see the class docstring."""
        cdef size_t cap
        cdef uint64_t *marks
        while cw_ring_flush(&self._ring):
            cap = cw_ring_marks_next_cap(&self._ring)
            marks = <uint64_t *>PyMem_Malloc(cap * sizeof(uint64_t))
            if marks == NULL:
                raise MemoryError()
            PyMem_Free(cw_ring_replace_marks(&self._ring, marks, cap))

    def pop(self, bint final=False):
        """Return the next ``(chunk, at_flush)``, or None."""
        cdef int at_flush
        cdef size_t n = cw_ring_next(&self._ring, final, &at_flush)
        if n == 0:
            return None
        chunk = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>n)
        cw_ring_read(&self._ring, PyBytes_AS_STRING(chunk), n, at_flush)
        return (chunk, True if at_flush else False)

    def pop_request_frame(self, bint final=False):
        """Like ``pop``, but return the chunk as a ServeHTTPRequest frame."""
        return self._pop_frame(final, False)

    def pop_response_frame(self, bint final=False):
        """Like ``pop_request_frame``, for ServeHTTPResponse (``flush`` = at_flush)."""
        return self._pop_frame(final, True)

    cdef object _pop_frame(self, bint final, bint with_flush):
        cdef int at_flush, complete, flush
        cdef unsigned char *p
        cdef size_t n = cw_ring_next(&self._ring, final, &at_flush)
        if n == 0:
            return None
        complete = final and n == self._ring.pending
        flush = at_flush if with_flush else 0
        # n <= capacity, a size we allocated: adding a few tag bytes cannot overflow.
        frame = PyBytes_FromStringAndSize(
            NULL, <Py_ssize_t>cw_frame_size(n, complete, flush)
        )
        p = cw_frame_put_head(<unsigned char *>PyBytes_AS_STRING(frame), n)
        cw_ring_read(&self._ring, p, n, at_flush)
        cw_frame_put_tail(p + n, complete, flush)
        return frame

    def __repr__(self):
        return (
            f"<Chunker chunk_size={self._ring.chunk_size} capacity={self._ring.capacity} "
            f"pending={self._ring.pending}>"
        )


# -- frame codec -------------------------------------------------------------------


cdef bytes _encode(object body, object complete, object flush):
    cdef Py_buffer view
    cdef int c, f
    cdef size_t n, size
    cdef unsigned char *p
    _get_bytes_view(body, &view)
    try:
        n = <size_t>view.len
        c = 1 if complete else 0
        f = 1 if flush else 0
        size = cw_frame_size(n, c, f)
        if size > <size_t>PY_SSIZE_T_MAX:
            raise OverflowError("join() result is too long for a Python string")
        out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>size)
        p = cw_frame_put_head(<unsigned char *>PyBytes_AS_STRING(out), n)
        if n:
            memcpy(p, view.buf, n)
        cw_frame_put_tail(p + n, c, f)
    finally:
        PyBuffer_Release(&view)
    return out


def encode_request_frame(body, *, complete=False):
    """Protobuf bytes of ServeHTTPRequest{body_chunk=body, body_complete=complete}.

    Byte-identical to the generated class's ``SerializeToString()``.
    """
    return _encode(body, complete, False)


def encode_response_frame(body, *, complete=False, flush=False):
    """Protobuf bytes of ServeHTTPResponse with body_chunk, body_complete, flush."""
    return _encode(body, complete, flush)


cdef bytes _join(object parts, object complete, object flush):
    cdef Py_buffer *views
    cdef Py_ssize_t count, taken = 0, i
    cdef size_t n = 0, size
    cdef int c = 1 if complete else 0
    cdef int f = 1 if flush else 0
    cdef unsigned char *p
    # A tuple of our own: a list could change under us while exporters run.
    seq = PySequence_Tuple(
        PySequence_Fast(parts, "parts must be an iterable of bytes-like objects")
    )
    count = PySequence_Fast_GET_SIZE(seq)
    views = <Py_buffer *>PyMem_Malloc(<size_t>(count if count else 1) * sizeof(Py_buffer))
    if views == NULL:
        raise MemoryError()
    try:
        while taken < count:
            _get_bytes_view(<object>PySequence_Fast_GET_ITEM(seq, taken), &views[taken])
            taken += 1
            n += <size_t>views[taken - 1].len
        size = cw_frame_size(n, c, f)
        if size > <size_t>PY_SSIZE_T_MAX:
            raise OverflowError("join() result is too long for a Python string")
        out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>size)
        p = cw_frame_put_head(<unsigned char *>PyBytes_AS_STRING(out), n)
        for i in range(count):
            if views[i].len:
                memcpy(p, views[i].buf, <size_t>views[i].len)
                p += views[i].len
        cw_frame_put_tail(p, c, f)
    finally:
        for i in range(taken):
            PyBuffer_Release(&views[i])
        PyMem_Free(views)
    return out


def join_request_frame(parts, *, complete=False):
    """The ServeHTTPRequest frame of the concatenation of ``parts``."""
    return _join(parts, complete, False)


def join_response_frame(parts, *, complete=False, flush=False):
    """The ServeHTTPResponse frame of the concatenation of ``parts``."""
    return _join(parts, complete, flush)


cdef class RequestFrame:
    """A decoded ServeHTTPRequest: ``init`` bytes or None, ``body`` view, ``complete``."""

    cdef public object init
    cdef public object body
    cdef public object complete

    def __init__(self, init, body, complete):
        self.init = init
        self.body = body
        self.complete = complete

    def __repr__(self):
        return (
            f"<RequestFrame init={self.init is not None} body={self.body.nbytes}B "
            f"complete={self.complete}>"
        )


cdef class ResponseFrame:
    """A decoded ServeHTTPResponse: ``init``, ``body``, ``complete``, ``flush``."""

    cdef public object init
    cdef public object body
    cdef public object complete
    cdef public object flush

    def __init__(self, init, body, complete, flush):
        self.init = init
        self.body = body
        self.complete = complete
        self.flush = flush

    def __repr__(self):
        return (
            f"<ResponseFrame init={self.init is not None} body={self.body.nbytes}B "
            f"complete={self.complete} flush={self.flush}>"
        )


cdef object _frame_error(cw_frame_error *err):
    cdef int code = err.code
    cdef uint64_t *v = err.v
    if code == CW_ERR_TRUNCATED_VARINT:
        msg = f"truncated varint at offset {v[0]}"
    elif code == CW_ERR_VARINT_TOO_LONG:
        msg = f"varint longer than {CW_MAX_VARINT_LEN} bytes at offset {v[0]}"
    elif code == CW_ERR_TAG_RANGE:
        msg = f"tag out of range at offset {v[0]}"
    elif code == CW_ERR_FIELD_ZERO:
        msg = f"field number 0 at offset {v[0]}"
    elif code == CW_ERR_WIRE_TYPE:
        msg = f"field {v[0]} has wire type {v[1]}, expected {v[2]} at offset {v[3]}"
    elif code == CW_ERR_LENGTH:
        msg = f"length {v[0]} of field {v[1]} runs past the end at offset {v[2]}"
    elif code == CW_ERR_TRUNCATED_64:
        msg = f"truncated 64-bit field {v[0]} at offset {v[1]}"
    elif code == CW_ERR_TRUNCATED_32:
        msg = f"truncated 32-bit field {v[0]} at offset {v[1]}"
    elif code == CW_ERR_GROUP_DEPTH:
        msg = f"groups nested deeper than {v[0]}"
    elif code == CW_ERR_GROUP_MISMATCH:
        msg = f"end of group {v[0]} at offset {v[1]} does not close group {v[2]}"
    elif code == CW_ERR_END_GROUP:
        msg = f"end of group {v[0]} without a start"
    elif code == CW_ERR_BAD_WIRE_TYPE:
        msg = f"invalid wire type {v[0]} for field {v[1]}"
    elif code == CW_ERR_KIND_RANGE:
        msg = f"kind {v[0]} out of range 0..2**32-1 at offset {v[1]}"
    else:  # pragma: no cover - every code above is covered
        msg = f"malformed frame (error {code})"
    return FrameError(msg)


cdef object _parse(object data, bint with_flush, cw_frame_info *info):
    """Parse data into info; return the memoryview the offsets refer to."""
    cdef cw_frame_error err
    cdef const Py_buffer *view
    mv = _as_bytes_memoryview(data)
    view = PyMemoryView_GET_BUFFER(mv)
    if cw_frame_decode(
        <const unsigned char *>view.buf, <size_t>view.len, with_flush, info, NULL, &err
    ) < 0:
        raise _frame_error(&err)
    return mv


cdef object _init_bytes(object mv, bint with_flush, const cw_frame_info *info):
    cdef cw_frame_info again
    cdef cw_frame_error err
    cdef const Py_buffer *view
    if info.init_count == 0:
        return None
    view = PyMemoryView_GET_BUFFER(mv)
    if info.init_count == 1:
        return PyBytes_FromStringAndSize(
            <const char *>view.buf + info.init_off, <Py_ssize_t>info.init_len
        )
    # Repeated occurrences of an embedded message merge, which is what parsing
    # their concatenation does.
    joined = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>info.init_total)
    cw_frame_decode(
        <const unsigned char *>view.buf, <size_t>view.len, with_flush, &again,
        <unsigned char *>PyBytes_AS_STRING(joined), &err,
    )
    return joined


def decode_request_frame(data):
    """Decode a ServeHTTPRequest; ``body`` is a zero-copy view into ``data``.

    Raises FrameError on malformed or truncated input.
    """
    cdef cw_frame_info info
    mv = _parse(data, False, &info)
    cdef RequestFrame frame = RequestFrame.__new__(RequestFrame)
    frame.init = _init_bytes(mv, False, &info)
    frame.body = mv[info.body_off : info.body_off + info.body_len]
    frame.complete = True if info.complete else False
    return frame


def decode_response_frame(data):
    """Decode a ServeHTTPResponse; ``body`` is a zero-copy view into ``data``."""
    cdef cw_frame_info info
    mv = _parse(data, True, &info)
    cdef ResponseFrame frame = ResponseFrame.__new__(ResponseFrame)
    frame.init = _init_bytes(mv, True, &info)
    frame.body = mv[info.body_off : info.body_off + info.body_len]
    frame.complete = True if info.complete else False
    frame.flush = True if info.flush else False
    return frame


# -- request init -------------------------------------------------------------------


cdef inline Py_ssize_t _varint_size(uint64_t v) noexcept:
    cdef Py_ssize_t n = 1
    while v > 0x7F:
        v >>= 7
        n += 1
    return n


cdef inline unsigned char *_put_varint(unsigned char *p, uint64_t v) noexcept:
    while v > 0x7F:
        p[0] = <unsigned char>((v & 0x7F) | 0x80)
        p += 1
        v >>= 7
    p[0] = <unsigned char>v
    return p + 1


cdef inline Py_ssize_t _len_field_size(Py_ssize_t n) noexcept:
    return 1 + _varint_size(<uint64_t>n) + n


cdef inline unsigned char *_put_len_field(
    unsigned char *p, unsigned char tag, const char *data, Py_ssize_t n
) noexcept:
    p[0] = tag
    p = _put_varint(p + 1, <uint64_t>n)
    memcpy(p, data, <size_t>n)
    return p + n


cdef const char *_utf8(object text, Py_ssize_t *n) except NULL:
    if not PyUnicode_Check(text):
        raise TypeError(f"expected str, not {type(text).__name__!r}")
    return PyUnicode_AsUTF8AndSize(text, n)


cdef Py_ssize_t _str_size(object text) except -1:
    cdef Py_ssize_t n
    _utf8(text, &n)
    return _len_field_size(n) if n else 0


cdef unsigned char *_put_str(unsigned char *p, unsigned char tag, object text) except NULL:
    cdef Py_ssize_t n
    cdef const char *data = _utf8(text, &n)
    if n:
        p = _put_len_field(p, tag, data, n)
    return p


cdef int64_t _int_field(object value, str name, int bits) except? -1:
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__!r}")
    bound = (<object>1) << (bits - 1)
    if not -bound <= value < bound:
        raise ValueError(f"{name} {value} is outside int{bits}")
    return <int64_t>value


cdef list _group_headers(object headers):
    # [[key, [value, ...], size], ...]: the pure twin's _group_headers, plus
    # each HTTPHeader's encoded size.
    cdef dict grouped = {}
    cdef list out = []
    cdef list slot
    for pair in headers:
        name, value = pair
        if PyBytes_CheckExact(name):
            key = name.decode("latin-1")
        elif PyUnicode_Check(name):
            key = name
        else:
            raise TypeError(f"header names must be str or bytes, not {type(name).__name__!r}")
        if PyBytes_CheckExact(value):
            raw = value
        elif PyUnicode_Check(value):
            raw = value.encode("latin-1")
        else:
            raise TypeError(f"header values must be str or bytes, not {type(value).__name__!r}")
        lower = key.lower()
        found = grouped.get(lower)
        if found is None:
            slot = [key, [raw], _str_size(key) + _len_field_size(PyBytes_GET_SIZE(raw))]
            grouped[lower] = slot
            out.append(slot)
        else:
            slot = <list>found
            (<list>slot[1]).append(raw)
            slot[2] += _len_field_size(PyBytes_GET_SIZE(raw))
    return out


def encode_request_init(
    context, method, url, proto, proto_major, proto_minor, headers,
    host, remote_addr, request_uri, content_length,
):
    """Protobuf bytes of a ServeHTTPRequest carrying only its init."""
    cdef tuple ctx = tuple(context)
    cdef Py_ssize_t i, size, ctx_size = 0, init_size
    cdef int64_t major, minor, length
    cdef unsigned char *p
    cdef list grouped
    if len(ctx) != 6:
        raise ValueError(f"context must have 6 fields, not {len(ctx)}")
    major = _int_field(proto_major, "proto_major", 32)
    minor = _int_field(proto_minor, "proto_minor", 32)
    length = _int_field(content_length, "content_length", 64)
    for i in range(6):
        ctx_size += _str_size(ctx[i])
    init_size = _len_field_size(ctx_size)
    init_size += _str_size(method) + _str_size(url) + _str_size(proto)
    if major:
        init_size += 1 + _varint_size(<uint64_t>major)
    if minor:
        init_size += 1 + _varint_size(<uint64_t>minor)
    grouped = _group_headers(headers)
    for slot in grouped:
        init_size += _len_field_size(<Py_ssize_t>(<list>slot)[2])
    init_size += _str_size(host) + _str_size(remote_addr) + _str_size(request_uri)
    if length:
        init_size += 1 + _varint_size(<uint64_t>length)

    out = PyBytes_FromStringAndSize(NULL, _len_field_size(init_size))
    p = <unsigned char *>PyBytes_AS_STRING(out)
    p[0] = 0x0A
    p = _put_varint(p + 1, <uint64_t>init_size)
    p[0] = 0x0A
    p = _put_varint(p + 1, <uint64_t>ctx_size)
    for i in range(6):
        p = _put_str(p, <unsigned char>(0x0A + 8 * i), ctx[i])
    p = _put_str(p, 0x12, method)
    p = _put_str(p, 0x1A, url)
    p = _put_str(p, 0x22, proto)
    if major:
        p[0] = 0x28
        p = _put_varint(p + 1, <uint64_t>major)
    if minor:
        p[0] = 0x30
        p = _put_varint(p + 1, <uint64_t>minor)
    for slot in grouped:
        key, values, size = slot
        p[0] = 0x3A
        p = _put_varint(p + 1, <uint64_t><Py_ssize_t>size)
        p = _put_str(p, 0x0A, key)
        for value in <list>values:
            p = _put_len_field(p, 0x12, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))
    p = _put_str(p, 0x42, host)
    p = _put_str(p, 0x4A, remote_addr)
    p = _put_str(p, 0x52, request_uri)
    if length:
        p[0] = 0x58
        p = _put_varint(p + 1, <uint64_t>length)
    return out


# -- multiplexed batches -------------------------------------------------------------


cdef uint64_t _U64_MAX = 0xFFFFFFFFFFFFFFFF
cdef uint64_t _KIND_MAX = 0x7FFFFFFF


cdef int _as_uint(object x, str name, uint64_t hi, str hi_text, uint64_t *out) except -1:
    """``operator.index(x)`` checked against 0..hi, into out."""
    cdef unsigned long long v
    if not PyLong_CheckExact(x):
        x = _index(x)
    try:
        v = PyLong_AsUnsignedLongLong(x)
    except OverflowError:
        raise OverflowError(f"{name} out of range 0..{hi_text}") from None
    if v > hi:
        raise OverflowError(f"{name} out of range 0..{hi_text}")
    out[0] = v
    return 0


cdef inline int _frame_ints(object stream_id, object kind, object value,
                            uint64_t *ints) except -1:
    _as_uint(stream_id, "stream_id", _U64_MAX, "2**64-1", &ints[0])
    _as_uint(kind, "kind", _KIND_MAX, "2**31-1", &ints[1])
    _as_uint(value, "value", _U64_MAX, "2**64-1", &ints[2])
    return 0


cdef object _frame_tuple(object item):
    t = item if PyTuple_CheckExact(item) else tuple(item)
    if PyTuple_GET_SIZE(t) != 4:
        raise ValueError(
            f"a frame is (stream_id, kind, value, payload), got {PyTuple_GET_SIZE(t)} items"
        )
    return t


ctypedef struct _batch_entry:
    uint64_t ints[3]
    size_t frame_size
    Py_buffer view


def encode_batch(frames):
    """Protobuf bytes of MuxBatch with one MuxFrame per (stream_id, kind, value, payload)."""
    cdef _batch_entry *entries
    cdef _batch_entry *e
    cdef Py_ssize_t count, taken = 0, i
    cdef size_t total = 0, entry
    cdef unsigned char *p
    # A tuple of our own: a list could change under us while __index__ runs.
    seq = PySequence_Tuple(PySequence_Fast(
        frames, "frames must be an iterable of (stream_id, kind, value, payload) tuples"
    ))
    count = PySequence_Fast_GET_SIZE(seq)
    entries = <_batch_entry *>PyMem_Malloc(
        <size_t>(count if count else 1) * sizeof(_batch_entry)
    )
    if entries == NULL:
        raise MemoryError()
    try:
        while taken < count:
            e = &entries[taken]
            t = _frame_tuple(<object>PySequence_Fast_GET_ITEM(seq, taken))
            _frame_ints(
                <object>PyTuple_GET_ITEM(t, 0),
                <object>PyTuple_GET_ITEM(t, 1),
                <object>PyTuple_GET_ITEM(t, 2),
                e.ints,
            )
            _get_bytes_view(<object>PyTuple_GET_ITEM(t, 3), &e.view)
            taken += 1
            e.frame_size = cw_mux_frame_size(
                e.ints[0], e.ints[1], e.ints[2], <size_t>e.view.len
            )
            entry = cw_mux_entry_size(e.frame_size)
            if entry > <size_t>PY_SSIZE_T_MAX - total:
                raise OverflowError("batch is too long for a Python bytes object")
            total += entry
        out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>total)
        p = <unsigned char *>PyBytes_AS_STRING(out)
        for i in range(count):
            e = &entries[i]
            p = cw_mux_put_head(
                p, e.frame_size, e.ints[0], e.ints[1], e.ints[2], <size_t>e.view.len
            )
            if e.view.len:
                memcpy(p, e.view.buf, <size_t>e.view.len)
                p += e.view.len
    finally:
        for i in range(taken):
            PyBuffer_Release(&entries[i].view)
        PyMem_Free(entries)
    return out


cdef class BatchWriter:
    """Builds one MuxBatch frame by frame into a growing buffer.

    See ``chunkwire._core_py.BatchWriter``.
    """

    cdef unsigned char *_buf
    cdef size_t _cap
    cdef size_t _len
    cdef Py_ssize_t _count
    cdef size_t _limit

    def __init__(self, limit):
        limit = _index(limit)
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self._limit = <size_t>(limit if limit < PY_SSIZE_T_MAX else PY_SSIZE_T_MAX)
        PyMem_Free(self._buf)
        self._buf = NULL
        self._cap = self._len = 0
        self._count = 0

    def __dealloc__(self):
        PyMem_Free(self._buf)

    @property
    def limit(self):
        return self._limit

    @property
    def nbytes(self):
        """Encoded size of the batch so far."""
        return self._len

    def __len__(self):
        return self._count

    cdef inline bint _refuses(self, size_t entry) noexcept:
        return self._count and (entry > self._limit or self._len > self._limit - entry)

    cdef unsigned char *_reserve(self, size_t entry) except NULL:
        """Room for entry more bytes at the end of the batch."""
        cdef size_t need, cap
        cdef unsigned char *buf
        if entry > <size_t>PY_SSIZE_T_MAX - self._len:
            raise OverflowError("batch is too long for a Python bytes object")
        need = self._len + entry
        if need > self._cap:
            cap = self._cap * 2 if self._cap else 4096
            if cap < need:
                cap = need
            if cap > <size_t>PY_SSIZE_T_MAX:
                cap = <size_t>PY_SSIZE_T_MAX
            buf = <unsigned char *>PyMem_Realloc(self._buf, cap)
            if buf == NULL:
                raise MemoryError()
            self._buf = buf
            self._cap = cap
        return self._buf + self._len

    def add(self, stream_id, kind, value=0, payload=b""):
        """Append a frame; False (nothing added) when it would pass the limit."""
        cdef uint64_t ints[3]
        cdef Py_buffer view
        cdef size_t n, frame_size, entry
        cdef unsigned char *p
        _frame_ints(stream_id, kind, value, ints)
        _get_bytes_view(payload, &view)
        try:
            n = <size_t>view.len
            frame_size = cw_mux_frame_size(ints[0], ints[1], ints[2], n)
            entry = cw_mux_entry_size(frame_size)
            if self._refuses(entry):
                return False
            p = self._reserve(entry)
            p = cw_mux_put_head(p, frame_size, ints[0], ints[1], ints[2], n)
            if n:
                memcpy(p, view.buf, n)
        finally:
            PyBuffer_Release(&view)
        self._len += entry
        self._count += 1
        return True

    def add_body(self, stream_id, kind, body, *, response, complete=False, flush=False,
                 value=0):
        """Append a frame whose payload is a body message; see the pure twin."""
        cdef uint64_t ints[3]
        cdef Py_buffer view
        cdef size_t n, body_size, frame_size, entry
        cdef unsigned char *p
        cdef int c, f
        # Converted in the pure twin's order, so both fail alike.
        _frame_ints(stream_id, kind, value, ints)
        f = 1 if flush else 0
        if f and not response:
            raise ValueError("flush is only for response bodies")
        _get_bytes_view(body, &view)
        try:
            c = 1 if complete else 0
            n = <size_t>view.len
            body_size = cw_frame_size(n, c, f)
            frame_size = cw_mux_frame_size(ints[0], ints[1], ints[2], body_size)
            entry = cw_mux_entry_size(frame_size)
            if self._refuses(entry):
                return False
            p = self._reserve(entry)
            p = cw_mux_put_head(p, frame_size, ints[0], ints[1], ints[2], body_size)
            p = cw_frame_put_head(p, n)
            if n:
                memcpy(p, view.buf, n)
            cw_frame_put_tail(p + n, c, f)
        finally:
            PyBuffer_Release(&view)
        self._len += entry
        self._count += 1
        return True

    def take(self):
        """The encoded MuxBatch; the writer is empty again."""
        out = PyBytes_FromStringAndSize(<char *>self._buf, <Py_ssize_t>self._len)
        self._len = 0
        self._count = 0
        if self._cap > 2 * self._limit:
            # One oversized frame must not pin its size for the connection's life.
            PyMem_Free(self._buf)
            self._buf = NULL
            self._cap = 0
        return out

    def __repr__(self):
        return f"<BatchWriter frames={self._count} nbytes={self._len} limit={self._limit}>"


cdef object _batch_error(cw_frame_error *err, int rc, Py_ssize_t index):
    exc = _frame_error(err)
    if rc == CW_MUX_FRAME_ERROR:
        return FrameError(f"frame {index}: {exc}")
    return exc


def decode_batch(data, *, max_frames=None):
    """Decode a MuxBatch into (stream_id, kind, value, payload) tuples; see the pure twin."""
    cdef cw_mux_frame frame
    cdef cw_frame_error err
    cdef const Py_buffer *view
    cdef const unsigned char *buf
    cdef size_t pos = 0, end
    cdef Py_ssize_t index = 0, most = PY_SSIZE_T_MAX
    cdef int rc
    if max_frames is not None:
        max_frames = _index(max_frames)
        if max_frames < 0:
            raise ValueError(f"max_frames must be >= 0, got {max_frames}")
        most = max_frames if max_frames < PY_SSIZE_T_MAX else PY_SSIZE_T_MAX
    mv = _as_bytes_memoryview(data).toreadonly()
    view = PyMemoryView_GET_BUFFER(mv)
    buf = <const unsigned char *>view.buf
    end = <size_t>view.len
    out = []
    while True:
        rc = cw_mux_next(buf, &pos, end, &frame, &err)
        if rc == CW_MUX_END:
            return out
        if rc != CW_MUX_FRAME:
            raise _batch_error(&err, rc, index)
        if index >= most:
            raise FrameError(f"more than {most} frames in the batch")
        out.append((
            PyLong_FromUnsignedLongLong(frame.stream_id),
            PyLong_FromUnsignedLongLong(frame.kind),
            PyLong_FromUnsignedLongLong(frame.value),
            mv[frame.payload_off : frame.payload_off + frame.payload_len],
        ))
        index += 1


# -- Server-Sent Events ------------------------------------------------------------


cdef object _sse_source(object value, str name, const char **ptr, Py_ssize_t *size):
    """Bytes of an SSE field as the pure twin takes them.

    Sets ptr and size and returns the object that owns that memory; only
    immutable owners, so nothing can change the bytes while we use them.
    """
    cdef object owner
    if PyUnicode_Check(value):
        ptr[0] = PyUnicode_AsUTF8AndSize(value, size)
        return value
    if PyBytes_CheckExact(value):
        owner = value
    elif isinstance(value, (bytes, bytearray, memoryview)):
        owner = bytes(value)
    else:
        raise TypeError(f"{name} must be str or bytes, not {type(value).__name__!r}")
    ptr[0] = PyBytes_AS_STRING(owner)
    size[0] = PyBytes_GET_SIZE(owner)
    return owner


cdef int _sse_check_field(const char *p, Py_ssize_t n, str name) except -1:
    if memchr(p, c'\n', <size_t>n) != NULL or memchr(p, c'\r', <size_t>n) != NULL:
        raise ValueError(f"SSE {name} must not contain a line break")
    return 0


cdef Py_ssize_t _sse_data(const char *p, Py_ssize_t n, char *out) noexcept:
    """Write (or, with out NULL, measure) the data: lines of p[0..n).

    Lines end at CRLF, CR or LF, as the pure twin's regex split does.
    """
    cdef const char *end = p + n
    cdef const char *start = p
    cdef const char *lf
    cdef const char *cr
    cdef const char *brk
    cdef const char *nxt
    cdef Py_ssize_t total = 0
    cdef Py_ssize_t length
    lf = <const char *>memchr(p, c'\n', <size_t>n)
    if lf == NULL:
        lf = end
    cr = <const char *>memchr(p, c'\r', <size_t>n)
    if cr == NULL:
        cr = end
    while True:
        brk = cr if cr < lf else lf
        length = brk - start
        if out != NULL:
            memcpy(out + total, <const char *>"data: ", 6)
            memcpy(out + total + 6, start, <size_t>length)
            out[total + 6 + length] = c'\n'
        total += 7 + length
        if brk == end:
            return total
        nxt = brk + 1
        if brk == cr and nxt < end and nxt[0] == c'\n':
            nxt += 1
        start = nxt
        if lf < nxt:
            lf = <const char *>memchr(nxt, c'\n', <size_t>(end - nxt))
            if lf == NULL:
                lf = end
        if cr < nxt:
            cr = <const char *>memchr(nxt, c'\r', <size_t>(end - nxt))
            if cr == NULL:
                cr = end


def encode_sse(data, *, event=None, id=None, retry=None):
    """One event in the WHATWG ``text/event-stream`` format.

    ``data`` is split on CRLF, CR and LF into one ``data:`` line each, so the
    client reassembles it exactly. A line break in ``event`` or ``id`` (or NUL
    in ``id``) raises ValueError; ``retry`` must be a non-negative int.
    """
    cdef const char *event_p = NULL
    cdef const char *id_p = NULL
    cdef const char *retry_p = NULL
    cdef const char *data_p = NULL
    cdef Py_ssize_t event_n = 0, id_n = 0, retry_n = 0, data_n = 0
    cdef Py_ssize_t size, pos
    cdef char *out_p
    cdef object event_o = None, id_o = None, retry_o = None
    if event is not None:
        event_o = _sse_source(event, "event", &event_p, &event_n)
        _sse_check_field(event_p, event_n, "event")
    if id is not None:
        id_o = _sse_source(id, "id", &id_p, &id_n)
        _sse_check_field(id_p, id_n, "id")
        if memchr(id_p, 0, <size_t>id_n) != NULL:
            raise ValueError("SSE id must not contain NUL")
    if retry is not None:
        if not isinstance(retry, int) or isinstance(retry, bool) or retry < 0:
            raise ValueError(f"SSE retry must be a non-negative int, got {retry!r}")
        retry_o = b"retry: %d\n" % retry
        retry_p = PyBytes_AS_STRING(retry_o)
        retry_n = PyBytes_GET_SIZE(retry_o)
    data_o = _sse_source(data, "data", &data_p, &data_n)

    size = _sse_data(data_p, data_n, NULL) + 1 + retry_n
    if event_o is not None:
        size += 8 + event_n
    if id_o is not None:
        size += 5 + id_n
    out = PyBytes_FromStringAndSize(NULL, size)
    out_p = PyBytes_AS_STRING(out)
    pos = 0
    if event_o is not None:
        memcpy(out_p, <const char *>"event: ", 7)
        memcpy(out_p + 7, event_p, <size_t>event_n)
        out_p[7 + event_n] = c'\n'
        pos = 8 + event_n
    if id_o is not None:
        memcpy(out_p + pos, <const char *>"id: ", 4)
        memcpy(out_p + pos + 4, id_p, <size_t>id_n)
        out_p[pos + 4 + id_n] = c'\n'
        pos += 5 + id_n
    if retry_n:
        memcpy(out_p + pos, retry_p, <size_t>retry_n)
        pos += retry_n
    pos += _sse_data(data_p, data_n, out_p + pos)
    out_p[pos] = c'\n'
    return out


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
    "decode_ring_descriptor",
    "decode_request_frame",
    "decode_response_frame",
    "encode_batch",
    "encode_ring_descriptor",
    "encode_request_frame",
    "encode_request_init",
    "encode_response_frame",
    "encode_sse",
    "join_request_frame",
    "join_response_frame",
]


# -- shared ring -----------------------------------------------------------------

RING_DESCRIPTOR_SIZE = CW_SHR_DESC_SIZE

def encode_ring_descriptor(ring_id, offset, length):
    ring_id = _index(ring_id)
    offset = _index(offset)
    length = _index(length)
    if not 0 <= ring_id <= 0xFFFFFFFF:
        raise OverflowError(f"ring id {ring_id} is outside 0..2**32-1")
    if not 0 <= offset <= 0xFFFFFFFFFFFFFFFF:
        raise OverflowError(f"offset {offset} is outside 0..2**64-1")
    if not 0 <= length <= 0xFFFFFFFFFFFFFFFF:
        raise OverflowError(f"length {length} is outside 0..2**64-1")
    return _descriptor(<uint32_t>ring_id, <uint64_t>offset, <uint64_t>length)


cdef bytes _descriptor(uint32_t ring_id, uint64_t offset, uint64_t length):
    out = PyBytes_FromStringAndSize(NULL, CW_SHR_DESC_SIZE)
    cw_shr_desc_put(<unsigned char *>PyBytes_AS_STRING(out), ring_id, offset, length)
    return out


cdef int _decode_descriptor(object data, uint32_t ring_id, uint64_t capacity,
                            uint64_t *offset, uint64_t *length) except -1:
    cdef Py_buffer view
    cdef uint32_t got_id = 0
    cdef int code
    cdef Py_ssize_t size
    _get_bytes_view(data, &view)
    size = view.len
    code = cw_shr_desc_get(<const unsigned char *>view.buf, <size_t>view.len, ring_id,
                           capacity, &got_id, offset, length)
    PyBuffer_Release(&view)
    if code == CW_SHR_OK:
        return 0
    if code == CW_SHR_ERR_SIZE:
        raise RingError(
            f"ring descriptor must be {CW_SHR_DESC_SIZE} bytes, got {size}"
        )
    if code == CW_SHR_ERR_RING:
        raise RingError(f"descriptor for ring {got_id}, expected ring {ring_id}")
    if code == CW_SHR_ERR_OFFSET:
        raise RingError(
            f"descriptor offset {offset[0]} is outside the ring of {capacity} bytes"
        )
    if code == CW_SHR_ERR_EMPTY:
        raise RingError("descriptor length is 0")
    raise RingError(
        f"descriptor length {length[0]} at offset {offset[0]} passes the ring end "
        f"({capacity} bytes)"
    )


def decode_ring_descriptor(data, ring_id, capacity):
    cdef uint64_t offset = 0, length = 0
    ring_id = _index(ring_id)
    capacity = _index(capacity)
    if not 0 <= ring_id <= 0xFFFFFFFF:
        raise OverflowError(f"ring id {ring_id} is outside 0..2**32-1")
    if not 0 <= capacity <= 0xFFFFFFFFFFFFFFFF:
        raise OverflowError(f"capacity {capacity} is outside 0..2**64-1")
    _decode_descriptor(data, <uint32_t>ring_id, <uint64_t>capacity, &offset, &length)
    return (offset, length)


cdef class _RingEnd:
    cdef uint32_t _ring_id
    cdef uint64_t _capacity
    cdef int _fd
    cdef object _map
    cdef object _base
    cdef cw_shr_space _space
    cdef bint _closed
    cdef bint _opened

    def __cinit__(self):
        cw_shr_init(&self._space, 0)
        self._closed = True
        self._opened = False

    def __dealloc__(self):
        PyMem_Free(self._space.records)
        if not self._closed:
            try:
                os.close(self._fd)  # the mapping goes with its last view
            except OSError:
                pass

    cdef int _open(self, uint32_t ring_id, int fd, uint64_t capacity, bint writable) except -1:
        cdef cw_shr_record *records
        self._ring_id = ring_id
        self._capacity = capacity
        self._fd = fd
        self._map = map_ring(fd, capacity, writable=writable)
        self._base = memoryview(self._map)
        cw_shr_init(&self._space, capacity)
        records = <cw_shr_record *>PyMem_Malloc(16 * sizeof(cw_shr_record))
        if records == NULL:
            raise MemoryError()
        cw_shr_grow(&self._space, records, 16)
        self._closed = False
        self._opened = True
        return 0

    cdef int _push(self, uint64_t offset, uint64_t length, uint64_t cost) except -1:
        cdef size_t new_cap
        cdef cw_shr_record *records
        if self._space.rec_len == self._space.rec_cap:
            new_cap = self._space.rec_cap * 2
            records = <cw_shr_record *>PyMem_Malloc(new_cap * sizeof(cw_shr_record))
            if records == NULL:
                raise MemoryError()
            PyMem_Free(cw_shr_grow(&self._space, records, new_cap))
        cw_shr_push(&self._space, offset, length, cost)
        return 0

    @property
    def ring_id(self):
        return self._ring_id

    @property
    def capacity(self):
        return self._capacity

    @property
    def used(self):
        return self._space.used

    @property
    def closed(self):
        return self._closed

    def fileno(self):
        self._check_open()
        return self._fd

    cdef int _check_open(self) except -1:
        if self._closed:
            raise ValueError("the ring is closed")
        return 0

    cdef _close_map(self):
        self._base.release()
        try:
            self._map.close()
        except BufferError:
            pass  # chunk views still alive: the mapping goes with the last one

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


cdef class RingWriter(_RingEnd):
    cdef Py_buffer _buf
    cdef bint _has_buf

    def __init__(self, capacity, ring_id=0):
        capacity = _index(capacity)
        ring_id = _index(ring_id)
        if capacity < 2:
            raise ValueError(f"ring capacity must be at least 2 bytes, got {capacity}")
        if not 0 <= ring_id <= 0xFFFFFFFF:
            raise OverflowError(f"ring id {ring_id} is outside 0..2**32-1")
        if self._opened:
            raise RuntimeError("RingWriter is already initialised")
        fd = create_sealed(capacity)
        try:
            self._open(<uint32_t>ring_id, fd, <uint64_t>capacity, True)
            _get_buffer(self._map, &self._buf, PyBUF_WRITABLE)
            self._has_buf = True
        except BaseException:
            if self._opened:
                self._close_map()
            self._closed = True
            os.close(fd)
            raise

    def __dealloc__(self):
        if self._has_buf:
            PyBuffer_Release(&self._buf)

    @property
    def max_chunk(self):
        return self._capacity // 2

    def write(self, data):
        cdef Py_buffer view
        cdef uint64_t length, offset = 0, cost = 0
        self._check_open()
        _get_bytes_view(data, &view)
        try:
            length = <uint64_t>view.len
            if length == 0:
                raise ValueError("cannot write an empty chunk to a ring")
            if length > self._capacity // 2:
                raise ValueError(
                    f"chunk of {length} bytes is larger than half the ring ({self._capacity // 2})"
                )
            cw_shr_place(&self._space, length, &offset, &cost)
            if cost > self._capacity - self._space.used:
                return None
            self._push(offset, length, cost)
            if length >= 65536:
                with nogil:
                    memcpy(<unsigned char *>self._buf.buf + offset, view.buf, length)
            else:
                memcpy(<unsigned char *>self._buf.buf + offset, view.buf, length)
        finally:
            PyBuffer_Release(&view)
        return _descriptor(self._ring_id, offset, length)

    def credit(self, descriptor):
        cdef uint64_t offset = 0, length = 0
        self._check_open()
        _decode_descriptor(descriptor, self._ring_id, self._capacity, &offset, &length)
        if not cw_shr_release(&self._space, offset, length):
            raise RingError(
                f"credit for a chunk not outstanding in ring {self._ring_id} "
                f"(offset {offset}, length {length})"
            )

    def close(self):
        if self._closed:
            return
        self._closed = True
        if self._has_buf:
            PyBuffer_Release(&self._buf)
            self._has_buf = False
        self._close_map()
        os.close(self._fd)


cdef class RingReader(_RingEnd):
    cdef dict _views

    def __init__(self, fd, ring_id=0, max_capacity=1 << 30):
        fd = _index(fd)
        if self._opened:
            raise RuntimeError("RingReader is already initialised")
        try:
            ring_id = _index(ring_id)
            if not 0 <= ring_id <= 0xFFFFFFFF:
                raise OverflowError(f"ring id {ring_id} is outside 0..2**32-1")
            capacity = check_sealed(fd, _index(max_capacity))
            self._open(<uint32_t>ring_id, fd, <uint64_t>capacity, False)
        except BaseException:
            self._closed = True
            os.close(fd)
            raise
        self._views = {}

    @property
    def outstanding(self):
        return len(self._views)

    def read(self, descriptor):
        cdef uint64_t offset = 0, length = 0, expected = 0, cost = 0
        self._check_open()
        _decode_descriptor(descriptor, self._ring_id, self._capacity, &offset, &length)
        cw_shr_place(&self._space, length, &expected, &cost)
        if offset != expected:
            raise RingError(
                f"descriptor offset {offset} is not where the next chunk of "
                f"{length} bytes starts ({expected})"
            )
        if cost > self._capacity - self._space.used:
            raise RingError(
                f"chunk of {length} bytes at offset {offset} overruns chunks not yet "
                f"released ({self._capacity - self._space.used} bytes free)"
            )
        self._push(offset, length, cost)
        view = self._base[offset:offset + length]
        self._views[id(view)] = (view, offset, length)
        return view

    def release(self, view):
        entry = self._views.get(id(view))
        if entry is None or entry[0] is not view:
            raise RingError("not an outstanding chunk of this ring")
        view.release()  # BufferError while exported: nothing changes
        del self._views[id(view)]
        offset, length = entry[1], entry[2]
        cw_shr_release(&self._space, offset, length)
        return _descriptor(self._ring_id, offset, length)

    def close(self):
        if self._closed:
            return
        self._closed = True
        for view, _, _ in self._views.values():
            try:
                view.release()
            except BufferError:
                pass
        self._views.clear()
        self._close_map()
        os.close(self._fd)


# -- response init -----------------------------------------------------------------


def encode_response_init(status, headers):
    """Protobuf bytes of ServeHTTPResponse{init=ServeHTTPResponseInit{status_code, headers}}."""
    code = _index(status)
    if not -2147483648 <= code <= 2147483647:
        raise ValueError(f"status_code {code} does not fit an int32")
    cdef long long signed_code = code
    cdef uint64_t ucode = <uint64_t>signed_code
    cdef size_t init_size = 0
    cdef size_t header_size, total
    cdef Py_ssize_t key_len, value_len, index
    cdef const char *key_ptr
    cdef unsigned char *p
    cdef list grouped = []
    cdef list sizes = []
    cdef list vals
    if ucode:
        init_size += 1 + <size_t>_varint_size(ucode)
    for key, values in headers:
        if not isinstance(key, str):
            raise TypeError(f"header key must be str, not {type(key).__name__!r}")
        PyUnicode_AsUTF8AndSize(key, &key_len)
        header_size = 1 + <size_t>_varint_size(<uint64_t>key_len) + <size_t>key_len if key_len else 0
        vals = list(values)
        for value in vals:
            if not isinstance(value, bytes):
                raise TypeError(f"header value must be bytes, not {type(value).__name__!r}")
            value_len = PyBytes_GET_SIZE(value)
            header_size += 1 + <size_t>_varint_size(<uint64_t>value_len) + <size_t>value_len
        init_size += 1 + <size_t>_varint_size(<uint64_t>header_size) + header_size
        grouped.append((key, vals))
        sizes.append(header_size)
    total = 1 + <size_t>_varint_size(<uint64_t>init_size) + init_size
    out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>total)
    p = <unsigned char *>PyBytes_AS_STRING(out)
    p[0] = 0x0A
    p = _put_varint(p + 1, <uint64_t>init_size)
    if ucode:
        p[0] = 0x08
        p = _put_varint(p + 1, ucode)
    for index in range(len(grouped)):
        key, vals = grouped[index]
        header_size = sizes[index]
        p[0] = 0x12
        p = _put_varint(p + 1, <uint64_t>header_size)
        key_ptr = PyUnicode_AsUTF8AndSize(key, &key_len)
        if key_len:
            p[0] = 0x0A
            p = _put_varint(p + 1, <uint64_t>key_len)
            memcpy(p, key_ptr, <size_t>key_len)
            p += key_len
        for value in vals:
            value_len = PyBytes_GET_SIZE(value)
            p[0] = 0x12
            p = _put_varint(p + 1, <uint64_t>value_len)
            memcpy(p, PyBytes_AS_STRING(value), <size_t>value_len)
            p += value_len
    return out


__all__ += ["encode_response_init"]


# -- small writes ------------------------------------------------------------------


class _Taken:
    __slots__ = ()
    __await__ = ().__iter__  # an empty iterator: awaiting it is done at once


_TAKEN = _Taken()


cdef class SmallWriter:
    """See ``chunkwire._core_py.SmallWriter``."""

    cdef public Chunker _ring
    cdef public Py_ssize_t _room

    def write(self, data, flush=False):
        cdef Py_ssize_t size
        cdef Chunker ring
        if not flush and PyBytes_CheckExact(data):
            size = PyBytes_GET_SIZE(data)
            ring = self._ring
            if (size < self._room and ring is not None
                    and <size_t>size <= ring._ring.capacity - ring._ring.pending):
                self._room -= size
                cw_ring_write(&ring._ring, PyBytes_AS_STRING(data), <size_t>size)
                return _TAKEN
        return self._write(data, flush)


__all__ += ["SmallWriter"]
