"""The ``chunkwire.v1.Plugin`` service: what a plugin says about itself.

``Describe`` answers the plugin's name, the chunkwire version serving it,
the transports it offers and the limits it applies to requests, so a
gateway can log who answers on a socket (a process squatting a plugin's
address shows up) and pick a transport. More methods of the same service
(the multiplexed ``Connect``) are added to ``methods``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grpc

from .. import __version__
from .._proto import plugin_pb2
from .._wire import PLUGIN_SERVICE

if TYPE_CHECKING:
    from .app import Plugin


def plugin_info(
    plugin: Plugin,
    transports: list[str],
    lane_socket: str = "",
    mux_streams: Sequence[str] = (),
) -> plugin_pb2.PluginInfo:
    return plugin_pb2.PluginInfo(
        lane_socket=lane_socket,
        mux_streams=mux_streams,
        name=plugin.name,
        version=__version__,
        transports=transports,
        max_chunk_size=plugin.max_chunk_size,
        max_init_size=plugin.max_init_size,
        max_header_count=plugin.max_header_count,
        chunk_size=plugin.chunk_size,
    )


class PluginServiceHandler(grpc.GenericRpcHandler):
    """Routes ``/chunkwire.v1.Plugin/<name>`` to ``methods[name]``."""

    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin
        self.transports = ["call"]
        self.lane_socket = ""  # set when the plugin serves a same-host lane
        self.mux_streams: list[str] = []  # stream kinds its Connect carries besides HTTP
        self.methods: dict[str, grpc.RpcMethodHandler] = {
            "Describe": grpc.unary_unary_rpc_method_handler(
                self._describe,
                request_deserializer=plugin_pb2.DescribeRequest.FromString,
                response_serializer=plugin_pb2.PluginInfo.SerializeToString,
            )
        }

    async def _describe(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return plugin_info(self.plugin, self.transports, self.lane_socket, self.mux_streams)

    def add(self, name: str, handler: grpc.RpcMethodHandler) -> None:
        self.methods[name] = handler

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        service, _, name = handler_call_details.method.lstrip("/").partition("/")
        if service != PLUGIN_SERVICE:
            return None
        return self.methods.get(name)

