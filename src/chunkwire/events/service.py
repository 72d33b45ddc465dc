"""The gateway's gRPC Events service: publishers' batches go to the broker."""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import AsyncIterator

import grpc
import grpc.aio

from .._proto import events_pb2, events_pb2_grpc
from .._sockets import add_private_unix_port, remove_unix_socket
from .._wire import grpc_target
from .broker import Broker
from .model import DEFAULT_MAX_DATA, Event, event_problem, now_ms

log = logging.getLogger("chunkwire.events")

_BATCH_HEADROOM = 1 << 20


def _loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(listen: str, credentials: grpc.ServerCredentials | None) -> str:
    """The gRPC target for ``listen``; ValueError unless it is a unix socket, a
    loopback address, or comes with TLS credentials."""
    try:
        target = grpc_target(listen)
    except ValueError as error:
        raise ValueError(f"events_listen: {error}") from None
    if target.startswith("unix:") or credentials is not None:
        return target
    host = target.rpartition(":")[0]
    if not _loopback(host):
        raise ValueError(
            f"events_listen {listen!r} is not a unix socket or a loopback address; "
            "publishers there would be unauthenticated: listen on unix:/path or "
            "127.0.0.1:PORT, or give TLS credentials"
        )
    return target


class EventsServicer(events_pb2_grpc.EventsServicer):
    def __init__(self, broker: Broker, max_data_size: int) -> None:
        self._broker = broker
        self._max_data = max_data_size

    async def Publish(
        self,
        request_iterator: AsyncIterator[events_pb2.EventBatch],
        context: grpc.aio.ServicerContext,
    ) -> events_pb2.PublishAck:
        accepted = 0
        max_data = self._max_data
        async for batch in request_iterator:
            events: list[Event] = []
            ts = now_ms()
            for item in batch.events:
                problem = event_problem(item.topic, item.type, item.data, max_data)
                if problem is not None:
                    position = accepted + len(events)
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT, f"event {position}: {problem}"
                    )
                events.append(Event(item.topic, item.type, item.data, 0, item.ts or ts))
            await self._broker.publish(events)
            accepted += len(events)
        return events_pb2.PublishAck(accepted=accepted)


class EventsServer:
    """The Events service on a unix socket (0600) or a loopback/TLS TCP address."""

    def __init__(
        self,
        broker: Broker,
        listen: str,
        *,
        credentials: grpc.ServerCredentials | None = None,
        max_data_size: int = DEFAULT_MAX_DATA,
    ) -> None:
        if max_data_size < 1:
            raise ValueError(f"max event data size must be >= 1, got {max_data_size}")
        self.listen = listen
        self._target = check_listen(listen, credentials)
        self._credentials = credentials
        self._servicer = EventsServicer(broker, max_data_size)
        self._max_message = 2 * max_data_size + _BATCH_HEADROOM
        self._server: grpc.aio.Server | None = None
        self._socket_ino: tuple[int, int] | None = None
        self.unix_path: str | None = None
        self.address = listen

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self._max_message),
                ("grpc.so_reuseport", 0),
            ]
        )
        events_pb2_grpc.add_EventsServicer_to_server(self._servicer, server)
        target = self._target
        if target.startswith("unix:"):
            path = os.path.abspath(target[len("unix:") :])
            self._socket_ino = add_private_unix_port(server, path)
            self.unix_path = path
            self.address = f"unix:{path}"
        else:
            if self._credentials is not None:
                port = server.add_secure_port(target, self._credentials)
            else:
                port = server.add_insecure_port(target)
            if not port:
                raise OSError(f"events: could not listen on {self.listen}")
            self.address = f"{target.rpartition(':')[0]}:{port}"
        await server.start()
        self._server = server
        log.info("events service listening on %s", self.address)

    async def stop(self, grace: float | None = 1.0) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        try:
            await server.stop(grace)
        finally:
            if self.unix_path is not None:
                remove_unix_socket(self.unix_path, self._socket_ino)
