"""The plugin side: route HTTP requests arriving over gRPC to async handlers."""

from __future__ import annotations

from .app import Handler, Plugin, Route
from .request import Request, RequestBody
from .response import Response
from .server import PluginServer

__all__ = ["Handler", "Plugin", "PluginServer", "Request", "RequestBody", "Response", "Route"]
