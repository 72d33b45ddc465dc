"""A hostile plugin: a raw grpc.aio server speaking the wire with bad answers.

``python rogue_plugin.py unix:/path.sock`` serves ServeHTTP only (no
Describe). The request path picks the misbehaviour; query parameters tune
it. Frames are written with the core codec, so the gateway gets exactly
these bytes.
"""

from __future__ import annotations

import asyncio
import os
import sys
from urllib.parse import parse_qs

import grpc
import grpc.aio

from chunkwire._core import decode_request_frame, encode_response_frame
from chunkwire._proto import http_pb2
from chunkwire._wire import SERVE_HTTP_METHOD

# What a forged answer looks like on the client connection if it leaks.
FORGED = (
    b"HTTP/1.1 200 OK\r\nSet-Cookie: stolen=1\r\nContent-Length: 6\r\n\r\nforged"
)
# Made once: a rogue answering many clients at once must not be slowed by it.
OVERSIZED = os.urandom(16 << 20)


def head(status: int, headers: list[tuple[str, bytes]] = ()) -> bytes:
    init = http_pb2.ServeHTTPResponseInit(status_code=status)
    for name, value in headers:
        init.headers.add(key=name, values=[value])
    return http_pb2.ServeHTTPResponse(init=init).SerializeToString()


def body(data: bytes = b"", *, complete: bool = False, flush: bool = False) -> bytes:
    return encode_response_frame(data, complete=complete, flush=flush)


async def serve_http(request_iterator, context) -> None:
    first = decode_request_frame(await context.read())
    init = http_pb2.ServeHTTPRequestInit.FromString(first.init)
    path, _, query = init.request_uri.partition("?")
    q = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    status = int(q.get("status", "200"))
    if path == "/forge":
        headers = [("Content-Length", str(len(FORGED)).encode())] if q.get("cl") else []
        await context.write(head(status, headers) + body(FORGED, complete=True))
    elif path == "/header":
        name = q["name"]
        value = bytes.fromhex(q.get("value", "6f6b"))
        await context.write(head(200, [(name, value)]) + body(b"ok", complete=True))
    elif path == "/lengths":
        headers = [("Content-Length", v.encode()) for v in q.get("cl", "").split(",") if v]
        if q.get("te"):
            headers.append(("Transfer-Encoding", b"chunked"))
        size = int(q.get("size", "0"))
        data = bytes(i % 253 for i in range(size))
        await context.write(head(status, headers) + body(data[: size // 2]))
        await context.write(body(data[size // 2 :], complete=True))
    elif path == "/hop":
        headers = [
            ("Connection", b"close"),
            ("Keep-Alive", b"timeout=5"),
            ("Upgrade", b"h2c"),
            ("Proxy-Authenticate", b"Basic"),
            ("TE", b"trailers"),
            ("Trailer", b"X-Sum"),
            ("X-Kept", b"yes"),
        ]
        await context.write(head(200, headers) + body(b"ok", complete=True))
    elif path == "/hang-mid-body":
        await context.write(head(200) + body(b"h" * 1000, flush=True))
        await asyncio.Event().wait()
    elif path == "/empty-frames":
        await context.write(head(200) + body(b"start", flush=True))
        while True:
            await context.write(body())
    elif path == "/oversized":
        await context.write(head(200) + body(b"start", flush=True))
        while True:
            await context.write(body(OVERSIZED))
    else:
        await context.write(head(404) + body(b"no such misbehaviour\n", complete=True))


async def main(listen: str) -> None:
    server = grpc.aio.server(options=[("grpc.max_send_message_length", 64 << 20)])
    handler = grpc.stream_stream_rpc_method_handler(
        serve_http, request_deserializer=None, response_serializer=None
    )
    service, name = SERVE_HTTP_METHOD.lstrip("/").split("/")
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service, {name: handler}),)
    )
    server.add_insecure_port(listen)
    await server.start()
    print("rogue listening", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
