"""Which transport to use with one plugin: asked once through Describe, then kept."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import grpc
import grpc.aio

from .._proto import plugin_pb2
from . import DESCRIBE_METHOD, TRANSPORT_CHOICES
from .lane import DEFAULT_SETTINGS, LaneError, LaneSettings, connect_lane, offered_lane
from .sender import BATCH_LIMIT

_DESCRIBE_TIMEOUT = 5.0

Describe = Callable[[], Awaitable[plugin_pb2.PluginInfo]]


def describer(channel: Callable[[], grpc.aio.Channel]) -> Describe:
    """``Describe`` on the channel ``channel()`` returns."""

    async def describe() -> plugin_pb2.PluginInfo:
        method = channel().unary_unary(
            DESCRIBE_METHOD,
            request_serializer=None,
            response_deserializer=plugin_pb2.PluginInfo.FromString,
        )
        return await method(b"", timeout=_DESCRIBE_TIMEOUT)

    return describe


async def _probe(path: str, settings: LaneSettings) -> None:
    """Open and close one lane: the owner check and the HELLOs must pass.

    Catches what only a connection shows (a plugin of another user, a peer
    of another lane version) before the lane is chosen, so "auto" falls
    back to mux instead of failing every request.
    """
    try:
        link = await connect_lane(path, BATCH_LIMIT, settings)
    except (LaneError, OSError, TimeoutError) as error:
        raise LaneError(f"it did not open ({path}: {error or 'timed out'})") from None
    link.close()


class TransportChoice:
    """``auto`` asks the plugin's Describe; ``lane``/``mux``/``call`` are taken as given.

    Until Describe answers (plugin not reachable yet), requests use the call
    transport and the next request asks again. ``address`` a unix socket and
    the plugin offering a lane next to it that opens: "lane"; else offering "mux":
    "mux"; else, or without Describe (UNIMPLEMENTED), "call". "lane" on a
    TCP address is a ValueError. The choice is logged once, with the reason.
    ``lane``: the settings the probing lane connection opens with.
    """

    def __init__(
        self,
        name: str,
        transport: str,
        describe: Describe,
        logger: logging.Logger,
        *,
        forced_why: str = "set by configuration",
        address: str = "",
        lane: LaneSettings = DEFAULT_SETTINGS,
    ) -> None:
        if transport not in TRANSPORT_CHOICES:
            raise ValueError(f"transport must be one of {TRANSPORT_CHOICES}, got {transport!r}")
        if transport == "lane" and not address.startswith("unix:"):
            raise ValueError(
                f"plugin {name!r}: the lane transport needs a unix socket address, not {address!r}"
            )
        self.address = address
        self.lane = lane
        self.name = name
        self.transport = transport
        self.chosen: str | None = None if transport == "auto" else transport
        self._describe_call = describe
        self._log = logger
        self._forced_why = forced_why
        self._logged = False
        self._asking: asyncio.Future[str | None] | None = None
        self.info: plugin_pb2.PluginInfo | None = None

    async def get(self) -> str:
        chosen = self.chosen
        if chosen is not None:
            if not self._logged:
                self._note(self._forced_why)
            return chosen
        if self._asking is None or self._asking.done():
            self._asking = asyncio.ensure_future(self._describe())
        return await asyncio.shield(self._asking) or "call"

    async def _describe(self) -> str | None:
        try:
            info = await self._describe_call()
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                return None  # not reachable now: decide on a later request
            chosen, why = "call", "it does not serve Describe"
        except Exception as error:  # a malformed PluginInfo
            chosen, why = "call", f"its Describe answer is malformed: {error}"
        else:
            self.info = info
            chosen = "mux" if "mux" in info.transports else "call"
            why = f"it offers {', '.join(info.transports) or 'no transport'}"
            if chosen == "mux" and self.address.startswith("unix:"):
                try:
                    await _probe(offered_lane(self.address, info), self.lane)
                    chosen = "lane"
                except LaneError as error:
                    if "lane" in info.transports:
                        why += f"; no lane: {error}"
        self.chosen = chosen
        self._note(why)
        return chosen

    def _note(self, why: str) -> None:
        self._logged = True
        self._log.info("plugin %r uses the %s transport (%s)", self.name, self.chosen, why)
