"""chunkwire: serve HTTP from Python plugins over gRPC streams."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .plugin import Plugin, send_file
    from .transport.lane import LaneSettings


def __getattr__(name: str) -> Any:
    # The plugin SDK pulls in grpc; keep `import chunkwire._core` light.
    if name == "Plugin":
        from .plugin import Plugin

        return Plugin
    if name == "LaneSettings":
        from .transport.lane import LaneSettings

        return LaneSettings
    if name == "send_file":
        from .plugin import send_file

        return send_file
    raise AttributeError(f"module 'chunkwire' has no attribute {name!r}")


__all__ = ["LaneSettings", "Plugin", "__version__", "send_file"]
