"""The core, compiled when available: ``CHUNKWIRE_NO_EXTENSIONS=1`` forces the pure twin."""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING

from ._errors import FrameError, RingError

NO_EXTENSIONS = os.environ.get("CHUNKWIRE_NO_EXTENSIONS", "") not in ("", "0") or (
    platform.python_implementation() != "CPython"
)

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._core_py import (
        COMPILED,
        DEFAULT_CHUNK_SIZE,
        RING_DESCRIPTOR_SIZE,
        BatchWriter,
        Chunker,
        RequestFrame,
        ResponseFrame,
        RingReader,
        RingWriter,
        decode_batch,
        decode_request_frame,
        decode_response_frame,
        decode_ring_descriptor,
        encode_batch,
        encode_request_frame,
        encode_request_init,
        encode_response_frame,
        encode_ring_descriptor,
        encode_sse,
        join_request_frame,
        join_response_frame,
    )
else:
    try:
        from ._core_c import (
            COMPILED,
            DEFAULT_CHUNK_SIZE,
            RING_DESCRIPTOR_SIZE,
            BatchWriter,
            Chunker,
            RequestFrame,
            ResponseFrame,
            RingReader,
            RingWriter,
            decode_batch,
            decode_request_frame,
            decode_response_frame,
            decode_ring_descriptor,
            encode_batch,
            encode_request_frame,
            encode_request_init,
            encode_response_frame,
            encode_ring_descriptor,
            encode_sse,
            join_request_frame,
            join_response_frame,
        )
    except ImportError:  # pragma: no cover - exercised where no compiler ran
        from ._core_py import (
            COMPILED,
            DEFAULT_CHUNK_SIZE,
            RING_DESCRIPTOR_SIZE,
            BatchWriter,
            Chunker,
            RequestFrame,
            ResponseFrame,
            RingReader,
            RingWriter,
            decode_batch,
            decode_request_frame,
            decode_response_frame,
            decode_ring_descriptor,
            encode_batch,
            encode_request_frame,
            encode_request_init,
            encode_response_frame,
            encode_ring_descriptor,
            encode_sse,
            join_request_frame,
            join_response_frame,
        )


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

# Encoders the plugin's responses use, selected the same way.
if TYPE_CHECKING or NO_EXTENSIONS:
    from ._core_py import SmallWriter, encode_response_init
else:
    try:
        from ._core_c import SmallWriter, encode_response_init
    except ImportError:  # pragma: no cover - exercised where no compiler ran
        from ._core_py import SmallWriter, encode_response_init

__all__ += ["SmallWriter", "encode_response_init"]
