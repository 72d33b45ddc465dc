"""A mux stream behaves as the grpc.aio call Forward and PluginClient expect of it."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from chunkwire._core import decode_batch, encode_request_frame
from chunkwire.transport.opener import MuxConnection
from chunkwire.transport.sender import BatchSender


class _BrokenCarrier:
    """A carrier whose peer is gone: the first read ends the connection."""

    def __init__(self) -> None:
        self.cancelled = False

    async def read(self) -> object:
        return grpc.aio.EOF

    async def write(self, batch: bytes) -> None:
        raise AssertionError("nothing may be written on a broken connection")

    def cancel(self) -> bool:
        self.cancelled = True
        return True

    async def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    async def details(self) -> str:
        return "plugin stopped"

    def sender(self, proto, limit):  # type: ignore[no-untyped-def]
        return BatchSender(proto, self.write, limit)

    decode = staticmethod(decode_batch)


def test_a_stream_opened_on_a_connection_that_broke_fails_its_reader_too() -> None:
    """The connection ends between ``open_call()`` and the first write: that write
    raises, and a read already waiting for the response gets the same error
    instead of waiting forever (a plugin restart left such requests hanging)."""

    async def main() -> None:
        carrier = _BrokenCarrier()
        conn = MuxConnection(None, window=256 * 1024, carrier=carrier)  # type: ignore[arg-type]
        call = conn.new_call()
        reading = asyncio.ensure_future(call.read())
        conn.start()
        for _ in range(100):
            if conn.closed:
                break
            await asyncio.sleep(0.01)
        assert conn.closed and carrier.cancelled
        with pytest.raises(grpc.aio.AioRpcError) as written:
            await call.write(encode_request_frame(b"init", complete=True))
        assert written.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError) as read:
            await asyncio.wait_for(reading, 5)
        assert read.value is written.value
        assert call.done()
        await conn.close()

    asyncio.run(main())
