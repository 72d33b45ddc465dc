"""Expect: 100-continue: "100 Continue" goes out only when the plugin asks for the body."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

import grpc.aio
import httpx
import pytest
from gateway_fakes import FakePlugin, read_body, response, run, serve_gateway

from chunkwire._core import encode_response_frame
from chunkwire.gateway import Gateway

pytestmark = pytest.mark.timeout(60)

BODY = b"b" * 200_000


async def reads(first, context, log):
    await context.send_initial_metadata((("chunkwire-continue", "1"),))
    size = await read_body(context, first, log)
    await context.write(response(200, str(size).encode()))
    # Decision 1: the end of the request stream comes after the response was delivered.
    if await context.read() is grpc.aio.EOF:
        log.event("delivered").set()


async def refuses(first, context, log):
    await context.write(response(417, b"no thanks\n"))


ROUTES = {"/reads": reads, "/refuses": refuses}


async def raw_request(base: str, path: str) -> tuple[bytes, bytes]:
    """Send headers with Expect, the body only after a 100; return (first read, the rest)."""
    url = urlsplit(base)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(BODY)}\r\n"
        "Expect: 100-continue\r\n\r\n"
    ).encode()
    writer.write(head)
    await writer.drain()
    first = b""
    with contextlib.suppress(asyncio.TimeoutError):
        first = await asyncio.wait_for(reader.read(65536), 3)
    rest = b""
    if first.startswith(b"HTTP/1.1 100"):
        writer.write(BODY)
        await writer.drain()
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), 5)
            if not data:
                break
            rest += data
            if b"\r\n\r\n" in first + rest and (first + rest).endswith((b"200000", b"no thanks\n")):
                break
    except asyncio.TimeoutError:
        pass
    writer.close()
    return first, rest


def test_continue_only_when_the_plugin_reads():
    async def main():
        fake = FakePlugin(ROUTES)
        address = await fake.start()
        try:
            async with serve_gateway(Gateway({"p": address})) as base:
                first, rest = await raw_request(base, "/plugins/p/reads")
                assert first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
                whole = first + rest
                assert b"HTTP/1.1 200 " in whole and whole.endswith(b"200000")
                assert fake.log.body_bytes == len(BODY)
                await asyncio.wait_for(fake.log.event("delivered").wait(), 5)

                first, rest = await raw_request(base, "/plugins/p/refuses")
                whole = first + rest
                assert whole.startswith(b"HTTP/1.1 417 ")
                assert b"100 Continue" not in whole
                assert b"connection: close" in whole.lower()
                assert whole.endswith(b"no thanks\n")
        finally:
            await fake.stop()

    run(main())


async def delivered(first, context, log):
    # 300,000 bytes in chunks the gateway accepts (at most one chunk per message).
    await context.write(response(200, b"x" * 60_000, complete=False))
    for _ in range(3):
        await context.write(encode_response_frame(b"x" * 60_000))
    await context.write(encode_response_frame(b"x" * 60_000, complete=True))
    message = await context.read()
    log.cancelled.append("eof" if message is grpc.aio.EOF else "other")
    log.event("ended").set()


def test_request_stream_ends_after_the_response_was_delivered():
    async def main():
        fake = FakePlugin({"/delivered": delivered})
        address = await fake.start()
        try:
            async with serve_gateway(Gateway({"p": address})) as base:
                async with httpx.AsyncClient(base_url=base) as client:
                    r = await client.get("/plugins/p/delivered")
                    assert r.status_code == 200 and len(r.content) == 300_000
                await asyncio.wait_for(fake.log.event("ended").wait(), 5)
                assert fake.log.cancelled == ["eof"]
        finally:
            await fake.stop()

    run(main())


def test_too_large_with_expect_answers_without_inviting_the_body():
    async def main():
        fake = FakePlugin(ROUTES)
        address = await fake.start()
        try:
            gateway = Gateway({"p": address}, max_body_size=1000)
            async with serve_gateway(gateway) as base:
                loop = asyncio.get_running_loop()
                start = loop.time()
                first, rest = await raw_request(base, "/plugins/p/reads")
                whole = first + rest
                assert whole.startswith(b"HTTP/1.1 413 ")
                assert b"100 Continue" not in whole
                assert b"connection: close" in whole.lower()
                assert loop.time() - start < 1.5  # no linger waiting for a body
                assert fake.log.inits == []
        finally:
            await fake.stop()

    run(main())


async def open_expect(base: str, path: str, length: int):
    """A raw connection that has sent a POST head with Expect and no body."""
    url = urlsplit(base)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    return reader, writer


async def read_until(reader: asyncio.StreamReader, data: bytes, marker: bytes) -> bytes:
    while marker not in data:
        data += await asyncio.wait_for(reader.read(65536), 5)
    return data


async def streams_without_reading(first, context, log):
    # Answers an Expect request with a head and a stream, never asking for the body.
    await context.write(response(200, b"streaming\n", complete=False))
    await asyncio.Event().wait()


def test_refused_body_stream_is_cancelled_when_the_client_leaves():
    async def main():
        fake = FakePlugin({"/streams": streams_without_reading})
        address = await fake.start()
        try:
            async with serve_gateway(Gateway({"p": address})) as base:
                reader, writer = await open_expect(base, "/plugins/p/streams", 9999999)
                data = await read_until(reader, b"", b"streaming\n")
                assert data.startswith(b"HTTP/1.1 200 ") and b"100 Continue" not in data
                writer.close()
                await asyncio.wait_for(fake.log.event("cancelled:/streams").wait(), 5)
        finally:
            await fake.stop()

    run(main())


async def answers_then_reads(first, context, log):
    # Sends its head before reading (so never asks), then reads what comes.
    await context.write(response(200, b"head first\n", complete=False))
    size = await read_body(context, first, log)
    await context.write(encode_response_frame(f"{size}\n".encode(), complete=True))


def test_body_sent_anyway_after_an_early_head_is_forwarded():
    async def main():
        fake = FakePlugin({"/late": answers_then_reads})
        address = await fake.start()
        try:
            async with serve_gateway(Gateway({"p": address})) as base:
                reader, writer = await open_expect(base, "/plugins/p/late", 300_000)
                data = await read_until(reader, b"", b"head first\n")
                assert b"100 Continue" not in data
                writer.write(bytes(300_000))  # as curl does when no 100 comes
                data = await read_until(reader, data, b"300000\n")
                assert data.startswith(b"HTTP/1.1 200 ")
                writer.close()
        finally:
            await fake.stop()

    run(main())
