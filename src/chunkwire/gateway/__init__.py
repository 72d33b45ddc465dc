"""Host side: the ASGI gateway that forwards HTTP requests to chunkwire plugins."""

from __future__ import annotations

from .app import Gateway, Identity, Reject, memory_kb
from .forward import UpstreamAborted

__all__ = ["Gateway", "Identity", "Reject", "UpstreamAborted", "memory_kb"]
