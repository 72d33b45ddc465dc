"""Handler failures, cancellation and early answers."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from plugin_helpers import State, make_plugin, raw_call, serve

from chunkwire.errors import IncompleteResponse

MiB = 1024 * 1024


async def _until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    # Polls server-side state that has no event to wait on (grpc internals).
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


async def test_exception_before_send_is_500(listen: str, caplog: pytest.LogCaptureFixture) -> None:
    async with serve(make_plugin(State()), listen) as (server, _):
        with caplog.at_level(logging.ERROR, logger="chunkwire.plugin"):
            result = await raw_call(server.address, "GET", "/fail-before")
    assert result.code.name == "OK"
    assert len(result.messages) == 1
    init = result.init
    assert init.status_code == 500
    headers = {h.key: list(h.values) for h in init.headers}
    assert "X-Leak" not in headers  # what the handler set before failing is dropped
    assert result.body == b"Internal Server Error\n"
    assert "boom before" in caplog.text  # the traceback is logged, not sent


async def test_exception_after_send_aborts_rpc(listen: str) -> None:
    async with serve(make_plugin(State()), listen) as (server, client):
        result = await raw_call(server.address, "GET", "/fail-after")
        assert result.code == grpc.StatusCode.INTERNAL
        assert "ValueError" in result.details
        assert result.body == b"partial"
        assert not any(f.complete for f in result.frames)

        resp = await client.request("GET", "/fail-after")
        assert resp.status == 200
        with pytest.raises(IncompleteResponse) as info:
            await resp.read()
        assert info.value.code == grpc.StatusCode.INTERNAL


async def _cancel_mid_handler(listen: str, path: str, state: State) -> None:
    async with serve(make_plugin(state), listen) as (server, client):
        task = asyncio.ensure_future(_request_and_read(client, path))
        await asyncio.wait_for(state.started.wait(), 5)
        assert server.active_calls == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(state.cancelled.wait(), 5)
        await _until(lambda: server.active_calls == 0)


async def _request_and_read(client, path: str) -> bytes:  # type: ignore[no-untyped-def]
    async with client.request("GET", path) as resp:
        return await resp.read()


@pytest.mark.parametrize("path", ["/slow", "/slow?write=1"])
async def test_client_cancel_cancels_handler(listen: str, path: str) -> None:
    state = State()
    await _cancel_mid_handler(listen, path, state)
    assert state.finished.is_set()


async def test_closing_unread_response_cancels_handler(listen: str) -> None:
    state = State()
    async with serve(make_plugin(state), listen) as (server, client):
        async with client.request("GET", "/slow?write=1") as resp:
            assert resp.status == 200
            await asyncio.wait_for(state.started.wait(), 5)
        await asyncio.wait_for(state.cancelled.wait(), 5)
        await _until(lambda: server.active_calls == 0)


async def test_handler_swallowing_cancel_does_not_answer(listen: str) -> None:
    state = State()
    async with serve(make_plugin(state), listen) as (server, client):
        task = asyncio.ensure_future(_request_and_read(client, "/swallow"))
        await asyncio.wait_for(state.started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(state.cancelled.wait(), 5)
        await _until(lambda: server.active_calls == 0)


async def test_cancel_during_upload_reaches_body_iteration(listen: str) -> None:
    state = State()
    async with serve(make_plugin(state), listen) as (server, client):
        gate = asyncio.Event()

        async def body():  # type: ignore[no-untyped-def]
            yield b"x" * 1000
            await gate.wait()  # never set: the upload stalls mid-body
            yield b"y"

        task = asyncio.ensure_future(_upload(client, body()))
        await asyncio.wait_for(state.started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(state.cancelled.wait(), 5)
        await _until(lambda: server.active_calls == 0)


async def _upload(client, body) -> bytes:  # type: ignore[no-untyped-def]
    async with client.request("POST", "/slow-upload", body=body) as resp:
        return await resp.read()


async def test_early_answer_without_reading_body(listen: str) -> None:
    state = State()
    sent = 0

    async def endless():  # type: ignore[no-untyped-def]
        nonlocal sent
        block = bytes(MiB)
        while True:  # would never end if sending did not stop
            sent += len(block)
            yield block

    async with serve(make_plugin(state), listen) as (server, client):
        async with client.request("POST", "/early", body=endless()) as resp:
            assert resp.status == 413
            assert await resp.read() == b"no thanks"
        assert state.seen["first"] == b"\0" * 10
        await _until(lambda: server.active_calls == 0)
        # The client stopped sending once the answer was complete: the sender
        # is finished, after at most what flow control let through.
        assert resp._sender.done()
        assert 0 < sent < 64 * MiB
        # The channel still works.
        resp = await client.request("GET", "/small")
        assert await resp.read() == b"hello world"
