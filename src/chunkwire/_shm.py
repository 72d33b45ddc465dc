"""Shared-memory files for the core's shared ring: the operating-system half.

Both core implementations map rings through these helpers, so the checks
on a received file descriptor are the same for both. A ring's file is a
memfd sized once by its creator and then sealed against shrinking and
growing: a peer that could shrink it would make every reader of the
mapping fault (SIGBUS) on the pages past the new end.
"""

from __future__ import annotations

import mmap
import os

from ._errors import RingError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no rings, the rest of the core works
    fcntl = None  # type: ignore[assignment]

REQUIRED_SEALS = getattr(fcntl, "F_SEAL_SHRINK", 0)


def create_sealed(capacity: int, name: str = "chunkwire-ring") -> int:
    """A new memfd of ``capacity`` bytes, sealed against shrink, grow and further seals."""
    if not hasattr(os, "memfd_create") or not REQUIRED_SEALS:
        raise RingError("shared rings need memfd_create and file seals (Linux)")
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, capacity)
        fcntl.fcntl(
            fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
        )
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_sealed(fd: int, max_capacity: int) -> int:
    """The size of a received ring file, after checking it cannot shrink.

    Raises RingError when ``fd`` is not a sealable memfd, lacks F_SEAL_SHRINK,
    is empty, or is larger than ``max_capacity``.
    """
    if not REQUIRED_SEALS:
        raise RingError("shared rings need memfd_create and file seals (Linux)")
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except (OSError, AttributeError) as exc:
        raise RingError(f"ring fd is not a sealed memfd ({exc})") from None
    if not seals & REQUIRED_SEALS:
        raise RingError("ring fd is not sealed against shrinking (F_SEAL_SHRINK)")
    size = os.fstat(fd).st_size
    if size <= 0:
        raise RingError("ring fd is empty")
    if size > max_capacity:
        raise RingError(f"ring fd is {size} bytes, more than the limit of {max_capacity}")
    return size


def map_ring(fd: int, size: int, *, writable: bool) -> mmap.mmap:
    """Map ``size`` bytes of ``fd`` shared; read-only unless ``writable``."""
    access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
    return mmap.mmap(fd, size, access=access)
