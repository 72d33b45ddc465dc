"""The route a client asks for is the route that runs: no Host, encoding or dot-segment tricks.

Exact request bytes over raw sockets (HTTP clients normalise paths), to a
gateway process whose ``authenticate`` forbids /admin of the honest plugin.
The plugin counts every /admin it runs: it must stay at zero.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import httpx
import pytest
from e2e_stack import start_gateway, start_plugin, start_url_script
from raw_http import raw_exchange, status_of

from chunkwire._core import decode_response_frame, encode_request_frame
from chunkwire._proto import http_pb2
from chunkwire._wire import SERVE_HTTP_METHOD

pytestmark = pytest.mark.timeout(120)


class Routing:
    def __init__(self, tmp) -> None:
        self.sock = tmp / "honest.sock"
        self.honest = start_plugin("trust_apps:honest", self.sock)
        self.auth, self.auth_url = start_url_script("auth_gateway.py", f"unix:{self.sock}")
        self.gateway, self.url = start_gateway({"honest": f"unix:{self.sock}"})

    def admin_hits(self) -> int:
        return httpx.get(self.url + "/plugins/honest/stats").json()["admin_hits"]

    def close(self) -> None:
        for proc in (self.gateway, self.auth, self.honest):
            proc.stop()


@pytest.fixture(scope="module")
def routing(tmp_path_factory) -> Iterator[Routing]:
    stack = Routing(tmp_path_factory.mktemp("routing"))
    try:
        yield stack
        assert stack.admin_hits() == 0
    finally:
        logs = stack.auth.stderr() + stack.gateway.stderr()
        stack.close()
    assert "Traceback" not in logs


def get(url: str, target: str, host: str = "t") -> bytes:
    request = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    return raw_exchange(url, request.encode("latin-1"))


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/plugins/honest/admin", 403),
        ("/plugins/honest/%61dmin", 403),
        ("/plugins/honest/admin?x=1", 403),
        ("/plugins/honest/./admin", 400),
        ("/plugins/honest/x/../admin", 400),
        ("/plugins/honest/x/%2e%2e/admin", 400),
        ("/plugins/honest/x/%2E%2e/admin", 400),
        ("/plugins/honest/%2e/admin", 400),
        ("/plugins/honest/x%2f..%2fadmin", 400),
        ("/plugins/honest/x%2F..%2Fadmin", 400),
        ("/plugins/honest/admin%00", 400),
        ("/plugins/honest%2fadmin", 400),
        ("/plugins/rogue%2f..%2fhonest/admin", 400),
        ("/plugins/../plugins/honest/admin", 400),
        ("/plugins/%2e%2e/plugins/honest/admin", 400),
        ("/plugins/honest//admin", 404),  # the plugin routes on "//admin": no such route
    ],
)
def test_path_tricks_neither_reroute_nor_dodge_authenticate(routing, target, status):
    assert status_of(get(routing.auth_url, target)) == status


@pytest.mark.parametrize(
    "host", ["x/admin?", "x/admin#", "x/admin", "u@x", "x y", "[::1", "x:80/admin?"]
)
def test_host_header_cannot_change_the_route(routing, host):
    for url in (routing.auth_url, routing.url):
        assert status_of(get(url, "/plugins/honest/hello", host)) == 400


def test_two_host_headers_are_refused(routing):
    request = b"GET /plugins/honest/hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"
    assert status_of(raw_exchange(routing.url, request)) == 400


def test_plugin_sees_the_routed_path_and_an_informative_url(routing):
    answer = get(routing.url, "/plugins/honest/target/caf%C3%A9/x?q=%2F1", host="example.org:8080")
    assert status_of(answer) == 200
    fields = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert fields == {
        "path": "/target/caf\u00e9/x",
        "raw_path": "/target/caf%C3%A9/x",
        "query": "q=%2F1",
        "request_uri": "/target/caf%C3%A9/x?q=%2F1",
        "url": "http://example.org:8080/target/caf%C3%A9/x?q=%2F1",
        "host": "example.org:8080",
    }


def serve_http_direct(sock, init: http_pb2.ServeHTTPRequestInit) -> tuple[int, bytes]:
    """One ServeHTTP call straight to the plugin (no gateway in between)."""
    first = http_pb2.ServeHTTPRequest(init=init).SerializeToString()

    async def call() -> tuple[int, bytes]:
        async with grpc.aio.insecure_channel(f"unix:{sock}") as channel:
            stub = channel.stream_stream(
                SERVE_HTTP_METHOD, request_serializer=None, response_deserializer=None
            )
            rpc = stub()
            await rpc.write(first + encode_request_frame(b"", complete=True))
            status, parts = 0, []
            async for message in rpc:
                frame = decode_response_frame(message)
                if frame.init is not None:
                    status = http_pb2.ServeHTTPResponseInit.FromString(frame.init).status_code
                parts.append(bytes(frame.body))
                if frame.complete:
                    break
            await rpc.done_writing()
            return status, b"".join(parts)

    import asyncio

    return asyncio.run(call())


def test_plugin_routes_on_request_uri_never_on_url(routing):
    """A host whose url disagrees with request_uri: the plugin runs request_uri's route."""
    init = http_pb2.ServeHTTPRequestInit(
        method="GET", url="http://x/admin?", request_uri="/hello", host="x/admin?"
    )
    assert serve_http_direct(routing.sock, init) == (200, b"honest hello")


@pytest.mark.parametrize("uri", ["/x/../admin", "/x/%2e%2e/admin", "/x%2f..%2fadmin", "/./admin"])
def test_plugin_refuses_ambiguous_paths_from_any_host(routing, uri):
    init = http_pb2.ServeHTTPRequestInit(method="GET", request_uri=uri)
    status, body = serve_http_direct(routing.sock, init)
    assert status == 400, body
