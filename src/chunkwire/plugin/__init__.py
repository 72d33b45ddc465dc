"""The plugin side: route HTTP requests arriving over gRPC to async handlers."""

from __future__ import annotations

from .app import Handler, Plugin, Route
from .files import send_file
from .request import Request, RequestBody
from .response import Finished, Response
from .server import PluginServer
from .websocket import WebSocket

__all__ = [
    "Finished",
    "Handler",
    "Plugin",
    "PluginServer",
    "Request",
    "RequestBody",
    "Response",
    "Route",
    "WebSocket",
    "send_file",
]
