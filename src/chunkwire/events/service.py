"""The gateway's gRPC Events service: publishers' batches go to the broker.

The service runs on a thread of its own with its own event loop. On the
gateway's loop, each gRPC read waits for a full loop iteration, and an
iteration that fans one event out to many SSE streams is long: publishers'
messages were read one per iteration, far slower than they came, and
waited in gRPC for seconds. On its own loop the service reads them as
they arrive. A broker that can take events from another thread
(``publish_threadsafe``, the in-memory one) gets them from this thread at
once, so streams the gateway's loop has not written to yet in its current
round write them in that round. Other brokers (NATS) get them on the
gateway's loop: what arrives while that loop is busy is handed over in one
go (in order, per stream), so each SSE stream writes those events at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import os
import ssl
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import grpc
import grpc.aio

from .._proto import events_pb2, events_pb2_grpc
from .._sockets import add_private_unix_port, remove_unix_socket
from .._wire import grpc_target
from .broker import Broker
from .model import DEFAULT_MAX_DATA, Event, event_problem, now_ms
from .threads import lower_switch_interval, restore_switch_interval

log = logging.getLogger("chunkwire.events")

_BATCH_HEADROOM = 1 << 20
# Read-ahead of one Publish stream while its previous hand-off is in flight.
_PENDING_EVENTS = 4096
_PENDING_CHARS = 4 << 20


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
            "127.0.0.1:PORT, or give TLS credentials (events_credentials; "
            "--events-tls-cert and --events-tls-key)"
        )
    return target


def tls_credentials(
    cert_file: str, key_file: str, *, labels: tuple[str, str] = ("certificate", "key")
) -> grpc.ServerCredentials:
    """Server credentials from a PEM certificate (chain) and its private key;
    ValueError naming the file (by ``labels``) that is missing, unreadable,
    not PEM, or not a match for the other."""
    cert_label, key_label = labels
    pems = []
    for label, path in ((cert_label, cert_file), (key_label, key_file)):
        try:
            with open(path, "rb") as file:
                pems.append(file.read())
        except OSError as error:
            raise ValueError(f"{label} {path}: {error.strerror}") from None
    cert, key = pems
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        raise ValueError(f"{cert_label} {cert_file}: not a PEM certificate")
    if b"PRIVATE KEY-----" not in key:
        raise ValueError(f"{key_label} {key_file}: not a PEM private key")
    # gRPC finds a mismatch only when it listens: "Failed to bind", the cause in its log.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as error:
        raise ValueError(
            f"{key_label} {key_file} is not the key of {cert_label} {cert_file}, or either "
            f"is damaged ({error.reason or error})"
        ) from None
    return grpc.ssl_server_credentials([(key, cert)])


class _Handoff:
    """One Publish stream's events on their way to the broker on the gateway's loop.

    One hand-off is in flight at a time, so a stream's events keep their
    order; what is read meanwhile waits here (bounded) and goes next, all
    together.
    """

    def __init__(self, broker: Broker, loop: asyncio.AbstractEventLoop) -> None:
        self._broker = broker
        self._loop = loop
        self._pending: list[Event] = []
        self._pending_chars = 0
        self._in_flight = False
        self._idle: asyncio.Future[None] | None = None  # set when nothing is in flight
        self._error: BaseException | None = None

    async def add(self, events: list[Event]) -> None:
        """Queue ``events``; waits while the read-ahead is full."""
        self._raise()
        self._pending.extend(events)
        self._pending_chars += sum(len(event.data) for event in events)
        if not self._in_flight:
            self._send()
        elif len(self._pending) >= _PENDING_EVENTS or self._pending_chars >= _PENDING_CHARS:
            await self.drain()

    async def drain(self) -> None:
        """Return once every queued event was handed to the broker."""
        if self._in_flight:
            if self._idle is None or self._idle.done():
                self._idle = asyncio.get_running_loop().create_future()
            await self._idle
        self._raise()

    def discard(self) -> None:
        self._pending.clear()

    def _send(self) -> None:
        events, self._pending, self._pending_chars = self._pending, [], 0
        self._in_flight = True
        done = asyncio.run_coroutine_threadsafe(_publish(self._broker, events), self._loop)
        asyncio.wrap_future(done).add_done_callback(self._sent)

    def _sent(self, future: asyncio.Future[None]) -> None:
        self._in_flight = False
        if future.cancelled():
            error: BaseException | None = ConnectionError("the gateway is stopping")
        else:
            error = future.exception()
        if error is not None:
            self._error = error
            self._pending.clear()
        elif self._pending:
            self._send()
            return
        idle, self._idle = self._idle, None
        if idle is not None and not idle.done():
            idle.set_result(None)

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error


async def _publish(broker: Broker, events: list[Event]) -> None:
    await broker.publish(events)


class EventsServicer(events_pb2_grpc.EventsServicer):
    """Runs on the service's loop; ``loop`` is the gateway's, where the broker lives."""

    def __init__(
        self, broker: Broker, max_data_size: int, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._broker = broker
        self._max_data = max_data_size
        self._loop = loop

    async def Publish(
        self,
        request_iterator: AsyncIterator[events_pb2.EventBatch],
        context: grpc.aio.ServicerContext,
    ) -> events_pb2.PublishAck:
        accepted = 0
        max_data = self._max_data
        handoff = _Handoff(self._broker, self._loop)
        # Straight from this thread when the broker can: the events reach streams
        # that have not written yet in the gateway loop's current round.
        direct = getattr(self._broker, "publish_threadsafe", None)
        try:
            async for batch in request_iterator:
                events: list[Event] = []
                ts = now_ms()
                for item in batch.events:
                    problem = event_problem(item.topic, item.type, item.data, max_data)
                    if problem is not None:
                        # The events before this batch were accepted: they still go.
                        await handoff.drain()
                        position = accepted + len(events)
                        await context.abort(
                            grpc.StatusCode.INVALID_ARGUMENT, f"event {position}: {problem}"
                        )
                    events.append(Event(item.topic, item.type, item.data, 0, item.ts or ts))
                if direct is not None:
                    direct(events)
                else:
                    await handoff.add(events)
                accepted += len(events)
            await handoff.drain()
        except BaseException:
            handoff.discard()
            raise
        return events_pb2.PublishAck(accepted=accepted)


class EventsServer:
    """The Events service on a unix socket (0600) or a loopback/TLS TCP address,
    served from a thread of its own (``start``/``stop`` are called on the gateway's loop)."""

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
        self._broker = broker
        self._max_data = max_data_size
        self._max_message = 2 * max_data_size + _BATCH_HEADROOM
        self._server: grpc.aio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._socket_ino: tuple[int, int] | None = None
        self.unix_path: str | None = None
        self.address = listen

    async def start(self) -> None:
        gateway_loop = asyncio.get_running_loop()
        lower_switch_interval()
        started: concurrent.futures.Future[asyncio.AbstractEventLoop] = concurrent.futures.Future()
        thread = threading.Thread(
            target=self._run, args=(gateway_loop, started), name="chunkwire-events", daemon=True
        )
        thread.start()
        try:
            self._loop = await asyncio.wrap_future(started)
        except BaseException:
            await gateway_loop.run_in_executor(None, thread.join)
            restore_switch_interval()
            raise
        self._thread = thread
        log.info("events service listening on %s", self.address)

    def _run(
        self,
        gateway_loop: asyncio.AbstractEventLoop,
        started: concurrent.futures.Future[asyncio.AbstractEventLoop],
    ) -> None:
        loop = asyncio.new_event_loop()
        try:
            try:
                loop.run_until_complete(self._serve(gateway_loop))
            except BaseException as error:
                started.set_exception(error)
                return
            started.set_result(loop)
            loop.run_forever()
        finally:
            loop.close()

    async def _serve(self, gateway_loop: asyncio.AbstractEventLoop) -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self._max_message),
                ("grpc.so_reuseport", 0),
            ]
        )
        servicer = EventsServicer(self._broker, self._max_data, gateway_loop)
        events_pb2_grpc.add_EventsServicer_to_server(servicer, server)
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

    async def stop(self, grace: float | None = 1.0) -> None:
        loop, self._loop = self._loop, None
        thread, self._thread = self._thread, None
        if loop is None or thread is None:
            return
        try:
            server = self._server
            if server is not None:
                await _on(loop, server.stop(grace))
        finally:
            self._server = None
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.get_running_loop().run_in_executor(None, thread.join)
            if self.unix_path is not None:
                remove_unix_socket(self.unix_path, self._socket_ino)
            restore_switch_interval()


async def _on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> Any:
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))
