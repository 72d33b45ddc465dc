"""The gateway's own checks of the request head (under any ASGI server, here plain uvicorn)."""

from __future__ import annotations

import httpx
import pytest
from gateway_fakes import FakePlugin, response, run, serve_gateway

from chunkwire.gateway import Gateway
from chunkwire.gateway.request_checks import BadRequestHead, read_request_head

pytestmark = pytest.mark.timeout(60)


async def ok(first, context, log):
    await context.write(response(200, b"ok"))


def fields(count: int, value_size: int = 1) -> list[tuple[bytes, bytes]]:
    return [(b"x-%d" % i, b"v" * value_size) for i in range(count)]


@pytest.mark.parametrize(("count", "ok"), [(100, True), (101, False)])
def test_field_count_at_the_bound(count, ok):
    headers = fields(count)
    if ok:
        assert read_request_head(headers, max_size=1 << 20, max_count=100).content_length == -1
    else:
        with pytest.raises(BadRequestHead) as error:
            read_request_head(headers, max_size=1 << 20, max_count=100)
        assert error.value.status == 431


@pytest.mark.parametrize(("size", "ok"), [(1000, True), (1001, False)])
def test_block_size_at_the_bound(size, ok):
    # one field: len(b"x-0") + value + 4
    headers = fields(1, size - 3 - 4)
    if ok:
        read_request_head(headers, max_size=1000, max_count=100)
    else:
        with pytest.raises(BadRequestHead) as error:
            read_request_head(headers, max_size=1000, max_count=100)
        assert error.value.status == 431


@pytest.mark.parametrize(
    "headers",
    [
        [(b"host", b"a"), (b"host", b"b")],
        [(b"host", b"x/admin?")],
        [(b"content-length", b"5"), (b"content-length", b"6")],
        [(b"content-length", b"-5")],
        [(b"content-length", b"0x10")],
    ],
)
def test_malformed_heads_are_400(headers):
    with pytest.raises(BadRequestHead) as error:
        read_request_head(headers, max_size=1 << 20, max_count=100)
    assert error.value.status == 400


def test_gateway_answers_431_before_calling_the_plugin():
    async def main():
        fake = FakePlugin({"/ok": ok})
        address = await fake.start()
        gateway = Gateway({"p": address}, max_header_size=4096, max_header_count=20)
        try:
            async with serve_gateway(gateway) as base, httpx.AsyncClient(base_url=base) as client:
                r = await client.get("/plugins/p/ok", headers={"x-big": "b" * 4096})
                assert r.status_code == 431
                r = await client.get("/plugins/p/ok", headers={f"x-{i}": "v" for i in range(20)})
                assert r.status_code == 431
                r = await client.get("/plugins/p/ok", headers={"x-small": "s" * 3000})
                assert r.status_code == 200
            assert len(fake.log.inits) == 1
        finally:
            await fake.stop()

    run(main())
