"""Test bodies that are not periodic: every 8 bytes hold their own offset.

A body made of a repeated block cannot reveal two chunks swapped, dropped
and duplicated, or sent twice: any block looks like any other. Here each
8-byte word is the little-endian index of that word (offset // 8) mixed with
a constant, so any two chunks of any size differ and a digest catches any
reordering. Generated with numpy at memory speed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np

_MIX = np.uint64(0x9E3779B97F4A7C15)
MIB = 1 << 20


def stamped(offset: int, size: int) -> bytes:
    """Bytes ``offset .. offset + size`` of the stamped stream."""
    first = offset // 8
    last = (offset + size + 7) // 8
    words = np.arange(first, last, dtype="<u8") * _MIX
    skip = offset - first * 8
    return words.tobytes()[skip : skip + size]


def stamped_blocks(size: int, block: int = MIB, start: int = 0) -> Iterator[bytes]:
    """The stream from ``start`` for ``size`` bytes, in blocks of ``block`` bytes."""
    offset = start
    end = start + size
    while offset < end:
        n = min(block, end - offset)
        yield stamped(offset, n)
        offset += n


def stamped_digest(size: int) -> str:
    digest = hashlib.sha256()
    for piece in stamped_blocks(size):
        digest.update(piece)
    return digest.hexdigest()
