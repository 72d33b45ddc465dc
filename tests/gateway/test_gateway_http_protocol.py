"""The gateway's uvicorn protocol: proxy headers applied as uvicorn's middleware applies them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from chunkwire.gateway.http_server import limited_http_protocol
from chunkwire.gateway.types import WATCH_CLIENT

# Nothing here talks to a plugin: once is enough.
pytestmark = pytest.mark.only_transports("call")


class FakeTransport:
    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer
        self.written = b""
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": self.peer}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def serve(
    request: bytes, *, peer: str, proxy_headers: bool = True, allow: str = "127.0.0.1"
) -> tuple[list[dict[str, Any]], bytes]:
    """The scopes the application saw for ``request``, and what went to the client."""
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(dict(scope))
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})

    async def body() -> bytes:
        config = Config(
            app, proxy_headers=proxy_headers, forwarded_allow_ips=allow, log_level="error"
        )
        config.load()
        protocol_class = limited_http_protocol(
            max_header_size=65536, max_header_count=100, header_timeout=None
        )
        protocol = protocol_class(config, ServerState(), {}, asyncio.get_running_loop())
        transport = FakeTransport((peer, 5555))
        protocol.connection_made(transport)  # type: ignore[arg-type]
        protocol.data_received(request)
        for _ in range(5):
            await asyncio.sleep(0)
        protocol.connection_lost(None)
        return transport.written

    written = asyncio.run(body())
    return seen, written


def request(*headers: bytes) -> bytes:
    return b"GET /x HTTP/1.1\r\nHost: h\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


def test_a_trusted_peer_sets_client_and_scheme() -> None:
    seen, written = serve(
        request(b"X-Forwarded-For: 203.0.113.9:7000, 127.0.0.1", b"X-Forwarded-Proto: https"),
        peer="127.0.0.1",
    )
    assert written.startswith(b"HTTP/1.1 200 OK\r\n") and written.endswith(b"\r\n\r\nok")
    assert seen[0]["client"] == ("203.0.113.9", 7000)
    assert seen[0]["scheme"] == "https"
    assert WATCH_CLIENT in seen[0]["extensions"]


def test_an_untrusted_peer_keeps_its_own_address() -> None:
    seen, _ = serve(
        request(b"X-Forwarded-For: 203.0.113.9", b"X-Forwarded-Proto: https"), peer="198.51.100.4"
    )
    assert seen[0]["client"] == ("198.51.100.4", 5555)
    assert seen[0]["scheme"] == "http"


def test_without_proxy_headers_nothing_is_rewritten() -> None:
    seen, _ = serve(request(b"X-Forwarded-For: 203.0.113.9"), peer="127.0.0.1", proxy_headers=False)
    assert seen[0]["client"] == ("127.0.0.1", 5555)
