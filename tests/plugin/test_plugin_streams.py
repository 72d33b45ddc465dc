"""Stream semantics: request body reads, backpressure, cork, end/finished, abort, piping."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from typing import Any

import grpc
import numpy as np
import pytest
from plugin_helpers import RawResult, init_message, pattern, serve

import chunkwire
from chunkwire import Plugin
from chunkwire._core import decode_response_frame, encode_request_frame
from chunkwire._proto import http_pb2
from chunkwire._wire import SERVE_HTTP_METHOD, flow_window
from chunkwire.errors import (
    ClientDisconnected,
    IncompleteResponse,
    PluginCallError,
    ResponseAborted,
)
from chunkwire.plugin import Request, Response

KiB = 1024
MiB = 1024 * KiB


class Probe:
    """What handlers saw, with events to wait on instead of sleeping."""

    def __init__(self) -> None:
        self.seen: dict[str, object] = {}
        self.events: dict[str, asyncio.Event] = {}

    def event(self, name: str) -> asyncio.Event:
        return self.events.setdefault(name, asyncio.Event())

    def record(self, name: str, value: object) -> None:
        self.seen[name] = value
        self.event(name).set()

    async def wait(self, name: str, timeout: float = 10.0) -> object:
        await asyncio.wait_for(self.event(name).wait(), timeout)
        return self.seen.get(name)


def streams_plugin(probe: Probe, **kwargs: object) -> Plugin:
    plugin = Plugin("streams", **kwargs)  # type: ignore[arg-type]

    @plugin.route("/readinto", methods=["POST"])
    async def readinto(request: Request, response: Response) -> None:
        size = int(request.query["size"])
        step = int(request.query.get("buffer", str(size)))
        target = np.zeros(size, dtype=np.uint8)
        probe.record("at_eof_before", request.body.at_eof)
        got = 0
        while True:
            n = await request.body.readinto(target[got : got + step])
            if n == 0:
                break
            got += n
        probe.record("at_eof_after", request.body.at_eof)
        probe.record("content_length", request.content_length)
        await response.end(hashlib.sha256(target[:got].tobytes()).hexdigest().encode())

    @plugin.route("/truncated/{how}", methods=["POST"])
    async def truncated(request: Request, response: Response) -> None:
        how = request.path_params["how"]
        body = request.body
        probe.record("started", True)
        try:
            if how == "iter":
                async for _ in body:
                    pass
            elif how == "read":
                while await body.read(100):
                    pass
            elif how == "readinto":
                while await body.readinto(bytearray(100)):
                    pass
            else:
                await body.read_all()
        except BaseException as exc:
            probe.record("error", exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            # Every later read says the same; never a clean end.
            try:
                await body.read(1)
            except Exception as again:
                probe.record("again", again)
            raise
        probe.record("error", None)

    @plugin.route("/continue", methods=["POST"])
    async def continue_(request: Request, response: Response) -> None:
        if request.query.get("refuse"):
            response.status = 417
            await response.end(b"not reading it\n")
            return
        await response.end(await request.body.read_all())

    @plugin.route("/cork")
    async def cork(request: Request, response: Response) -> None:
        n = int(request.query["n"])
        size = int(request.query["size"])
        piece = b"c" * size
        with response.cork():
            with response.cork():
                for i in range(n // 2):
                    if i % 2:
                        response.write_nowait(piece)
                    else:
                        await response.write(piece)
            probe.record("after_inner", (response.frames_sent, response.buffered))
            for _ in range(n - n // 2):
                response.write_nowait(piece)
            probe.record("before_outer_end", response.frames_sent)
        await response.end()

    @plugin.route("/nowait")
    async def nowait(request: Request, response: Response) -> None:
        block = bytes(64 * KiB)
        results = []
        while response.write_nowait(block):
            results.append(True)
        probe.record("buffered_at_false", response.buffered)
        probe.record("true_count", len(results))
        draining = asyncio.ensure_future(response.drain())
        probe.record("draining", True)
        await draining
        probe.record("drained", response.buffered)
        await response.end()

    @plugin.route("/firehose")
    async def firehose(request: Request, response: Response) -> None:
        mark = request.query.get("mark")
        if mark:
            response.high_water_mark = int(mark)
        block = memoryview(bytes(int(request.query.get("write", str(64 * KiB)))))
        written = 0
        probe.seen["written"] = 0
        try:
            while written < 256 * MiB:
                await response.write(block)
                written += len(block)
                probe.seen["written"] = written
                probe.seen["buffered"] = max(int(probe.seen.get("buffered", 0)), response.buffered)
        except (asyncio.CancelledError, ClientDisconnected) as exc:
            probe.record("firehose_end", type(exc).__name__)
            raise

    @plugin.route("/finished")
    async def finished(request: Request, response: Response) -> None:
        size = int(request.query.get("size", "1000"))
        await response.end(bytes(size))
        probe.record("ended", (response.ended, response.complete))
        try:
            await response.finished
        except BaseException as exc:
            probe.record("finished", type(exc).__name__)
            raise
        probe.record("finished", "resolved")

    @plugin.route("/finished-watch")
    async def finished_watch(request: Request, response: Response) -> None:
        async def watch() -> None:
            try:
                await response.finished
            except Exception as exc:
                probe.record("watch", type(exc).__name__)
            else:
                probe.record("watch", "resolved")

        probe.seen["watcher"] = asyncio.ensure_future(watch())
        await response.end(bytes(int(request.query.get("size", "1000"))))

    @plugin.route("/write-after-gone")
    async def write_after_gone(request: Request, response: Response) -> None:
        await response.write(b"first", flush=True)
        probe.record("started", True)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            probe.record("cancelled", True)
        errors = []
        for _ in range(2):
            try:
                await response.write(b"x" * 100, flush=True)
            except Exception as exc:
                errors.append(type(exc).__name__)
        try:
            response.write_nowait(b"y")
        except Exception as exc:
            errors.append(type(exc).__name__)
        probe.record("write_errors", errors)

    @plugin.route("/abort/{when}")
    async def abort(request: Request, response: Response) -> None:
        if request.path_params["when"] == "after":
            await response.write(b"partial", flush=True)
        response.abort(RuntimeError("on purpose"))
        probe.record("aborted", (response.aborted, response.writable))
        try:
            await response.write(b"more")
        except ResponseAborted as exc:
            probe.record("write_error", exc)
        try:
            await response.finished
        except ResponseAborted as exc:
            probe.record("finished_error", exc)

    @plugin.route("/echo", methods=["POST"])
    async def echo(request: Request, response: Response) -> None:
        probe.record("echo_length", request.content_length)
        piped = await response.pipe_from(request.body)
        probe.record("piped", piped)

    @plugin.route("/pipe-source/{kind}")
    async def pipe_source(request: Request, response: Response) -> None:
        kind = request.path_params["kind"]
        yielded = 0

        async def source():  # type: ignore[no-untyped-def]
            nonlocal yielded
            try:
                for i in range(10_000):
                    if kind == "fail" and i == 3:
                        raise ValueError("source broke")
                    yielded += 1
                    probe.seen["yielded"] = yielded
                    yield bytes(64 * KiB)
            finally:
                probe.record("source_closed", yielded)

        try:
            await response.pipe_from(source())
        except BaseException as exc:
            probe.record("pipe_error", exc)
            raise

    @plugin.route("/file")
    async def file(request: Request, response: Response) -> None:
        kwargs: dict[str, Any] = {
            k: None if v == "raise" else int(v)
            for k, v in request.query.items()
            if k in ("offset", "count", "not_found")
        }
        try:
            sent = await chunkwire.send_file(response, request.query["path"], **kwargs)
        except (OSError, ValueError, TypeError) as exc:
            response.status = 404 if isinstance(exc, FileNotFoundError) else 400
            await response.end(f"{type(exc).__name__}: {exc}".encode())
            return
        probe.record("sent", sent)

    @plugin.route("/never-read", methods=["POST"])
    async def never_read(request: Request, response: Response) -> None:
        probe.record("never_read", True)
        await probe.event("release").wait()
        await response.end(str(request.body.received).encode())

    @plugin.route("/end-twice")
    async def end_twice(request: Request, response: Response) -> None:
        await response.end(b"one")
        await response.end()
        errors = []
        for attempt in (lambda: response.write(b"x"), lambda: response.end(b"y")):
            try:
                await attempt()
            except RuntimeError as exc:
                errors.append(str(exc))
        probe.record("errors", errors)

    return plugin


async def _raw(
    address: str, messages: list[bytes], *, half_close: bool = True
) -> tuple[grpc.aio.Channel, grpc.aio.StreamStreamCall]:
    channel = grpc.aio.insecure_channel(address)
    call = channel.stream_stream(
        SERVE_HTTP_METHOD, request_serializer=None, response_deserializer=None
    )()
    for message in messages:
        await call.write(message)
    if half_close:
        await call.done_writing()
    return channel, call


async def _read_all(call: grpc.aio.StreamStreamCall) -> RawResult:
    received = []
    try:
        while (message := await call.read()) is not grpc.aio.EOF:
            received.append(message)
    except grpc.aio.AioRpcError:
        pass
    return RawResult(received, await call.code(), await call.details())


def _init(method: str, url: str, headers: dict[str, str] | None = None, length: int = -1) -> bytes:
    hdrs = [http_pb2.HTTPHeader(key=k, values=[v.encode()]) for k, v in (headers or {}).items()]
    return init_message(method, url, headers=hdrs, content_length=length)


# -- request body ------------------------------------------------------------------


@pytest.mark.parametrize("buffer", [1000, 65536, 3 * MiB])
async def test_readinto_fills_a_numpy_array(sock_dir: str, buffer: int) -> None:
    probe = Probe()
    size = 3 * MiB + 17
    data = pattern(size, 7)
    async with serve(streams_plugin(probe), f"unix:{sock_dir}/p.sock") as (_, client):
        resp = await client.request(
            "POST", "/readinto", query={"size": size, "buffer": buffer}, body=data
        )
        assert await resp.read() == hashlib.sha256(data).hexdigest().encode()
    assert probe.seen["at_eof_before"] is False
    assert probe.seen["at_eof_after"] is True
    assert probe.seen["content_length"] == size


async def test_chunked_upload_without_content_length(listen: str) -> None:
    probe = Probe()
    data = pattern(MiB + 3, 1)

    async def chunks():  # type: ignore[no-untyped-def]
        for start in range(0, len(data), 10_000):
            yield data[start : start + 10_000]

    async with serve(streams_plugin(probe), listen) as (_, client):
        resp = await client.request(
            "POST", "/readinto", query={"size": len(data), "buffer": 4096}, body=chunks()
        )
        assert await resp.read() == hashlib.sha256(data).hexdigest().encode()
    assert probe.seen["content_length"] is None


@pytest.mark.parametrize("how", ["iter", "read", "readinto", "read_all"])
async def test_truncated_request_is_client_disconnected(sock_dir: str, how: str) -> None:
    # The stream ends (half-close) without body_complete: never a clean end.
    probe = Probe()
    async with serve(streams_plugin(probe), f"unix:{sock_dir}/p.sock") as (server, _):
        messages = [_init("POST", f"/truncated/{how}") + encode_request_frame(b"a" * 500)]
        channel, call = await _raw(server.address, messages)
        async with channel:
            result = await _read_all(call)
    assert isinstance(probe.seen["error"], ClientDisconnected)
    assert isinstance(probe.seen["error"], ConnectionError)
    assert "500" in str(probe.seen["error"])
    assert isinstance(probe.seen["again"], ClientDisconnected)
    # The peer is still there (it only half-closed): it is told, and not with a 200.
    assert result.init.status_code == 400
    assert b"without body_complete" in result.body


async def test_cancelled_upload_is_client_disconnected(sock_dir: str) -> None:
    probe = Probe()
    async with serve(streams_plugin(probe), f"unix:{sock_dir}/p.sock") as (server, _):
        messages = [_init("POST", "/truncated/iter") + encode_request_frame(b"a" * 500)]
        channel, call = await _raw(server.address, messages, half_close=False)
        async with channel:
            await probe.wait("started")
            call.cancel()
            error = await probe.wait("error")
    # The read in progress sees the call end; the task's cancellation may land first.
    assert isinstance(error, (ClientDisconnected, asyncio.CancelledError)), error


async def test_continue_metadata_only_when_asked(sock_dir: str) -> None:
    probe = Probe()
    async with serve(streams_plugin(probe), f"unix:{sock_dir}/p.sock") as (server, _):
        # Expect: 100-continue, no body yet: the handler's first read asks for it.
        init = _init("POST", "/continue", {"Expect": "100-continue"}, length=5)
        channel, call = await _raw(server.address, [init], half_close=False)
        async with channel:
            metadata = await asyncio.wait_for(call.initial_metadata(), 5)
            assert ("chunkwire-continue", "1") in list(metadata)
            await call.write(encode_request_frame(b"hello", complete=True))
            await call.done_writing()
            result = await _read_all(call)
        assert result.body == b"hello" and result.code == grpc.StatusCode.OK

        # The handler answers without reading: no continue, the answer instead.
        init = _init("POST", "/continue?refuse=1", {"Expect": "100-continue"}, length=5)
        channel, call = await _raw(server.address, [init], half_close=False)
        async with channel:
            metadata = await asyncio.wait_for(call.initial_metadata(), 5)
            assert "chunkwire-continue" not in dict(metadata)
            message = await call.read()
            frame = decode_response_frame(message)
            assert http_pb2.ServeHTTPResponseInit.FromString(frame.init).status_code == 417
            await call.done_writing()
            await _read_all(call)

        # No Expect header: nothing asked, even though the body comes later.
        init = _init("POST", "/continue", length=5)
        channel, call = await _raw(server.address, [init], half_close=False)
        async with channel:
            await call.write(encode_request_frame(b"later", complete=True))
            await call.done_writing()
            metadata = await asyncio.wait_for(call.initial_metadata(), 5)
            assert "chunkwire-continue" not in dict(metadata)
            result = await _read_all(call)
        assert result.body == b"later"

        # Expect, but the body came with the init: nothing to ask for.
        init = _init("POST", "/continue", {"Expect": "100-continue"}, length=3)
        channel, call = await _raw(
            server.address, [init + encode_request_frame(b"abc", complete=True)]
        )
        async with channel:
            metadata = await asyncio.wait_for(call.initial_metadata(), 5)
            assert "chunkwire-continue" not in dict(metadata)
            assert (await _read_all(call)).body == b"abc"


# -- response: cork, backpressure --------------------------------------------------


async def test_cork_emits_fewest_frames(listen: str) -> None:
    probe = Probe()
    n, size = 1000, 1000  # 1,000,000 bytes
    async with serve(streams_plugin(probe), listen) as (server, _):
        channel, call = await _raw(
            server.address,
            [_init("GET", f"/cork?n={n}&size={size}") + encode_request_frame(b"", complete=True)],
        )
        async with channel:
            result = await _read_all(call)
    total = n * size
    full, rest = divmod(total, 65536)
    sizes = [len(f.body) for f in result.frames]
    # 15 full chunks and the rest (marked flush) when the cork ends; end() adds
    # the empty complete frame.
    assert sizes == [65536] * full + [rest, 0], sizes
    assert [f.flush for f in result.frames] == [False] * full + [True, False]
    assert result.frames[-1].complete
    assert result.body == b"c" * total
    # Nothing left inside the corks, the inner one included.
    assert probe.seen["after_inner"] == (0, n // 2 * size)
    assert probe.seen["before_outer_end"] == 0


async def test_write_nowait_and_drain_follow_a_slow_reader(sock_dir: str) -> None:
    probe = Probe()
    async with (
        serve(streams_plugin(probe), f"unix:{sock_dir}/p.sock") as (_, client),
        client.request("GET", "/nowait") as resp,
    ):
        await probe.wait("draining")
        # write_nowait took the first block and said False at the mark.
        assert probe.seen["true_count"] == 0
        assert probe.seen["buffered_at_false"] == 64 * KiB
        await probe.wait("drained")
        assert probe.seen["drained"] < 64 * KiB
        assert len(await resp.read()) == 64 * KiB


async def _until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    # Server-side state with no event to wait on.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def _stalled_progress(probe: Probe) -> int:
    # The handler's progress has no event: poll until it stops moving.
    last, still = -1, 0
    while still < 5:
        await asyncio.sleep(0.05)
        written = int(probe.seen.get("written", 0))  # type: ignore[arg-type]
        still = still + 1 if written == last else 0
        last = written
    return last


@pytest.mark.parametrize("mark", [None, 1 * MiB])
async def test_writer_blocks_when_the_client_stops_reading(sock_dir: str, mark: int | None) -> None:
    probe = Probe()
    query = {"mark": mark} if mark else {}
    async with serve(streams_plugin(probe), f"unix:{sock_dir}/p.sock") as (_, client):
        async with client.request("GET", "/firehose", query=query) as resp:
            await resp.body.__anext__()
            written = await _stalled_progress(probe)
            # Bound: what the response holds (under the mark), the client's
            # receive window, and what gRPC's transports hold besides (about
            # half a window, measured).
            hwm = mark or 64 * KiB
            bound = hwm + 2 * flow_window(65536)
            print(f"mark {hwm}: handler got {written} bytes through (bound {bound})")
            assert hwm <= written <= bound
            assert int(probe.seen["buffered"]) <= hwm + 64 * KiB  # type: ignore[arg-type]
            # Reading on lets it move again.
            for _ in range(64):
                await resp.body.__anext__()
            assert int(probe.seen["written"]) > written  # type: ignore[arg-type]
        assert await probe.wait("firehose_end") in ("CancelledError", "ClientDisconnected")


async def test_upload_stalls_when_the_handler_never_reads(sock_dir: str) -> None:
    probe = Probe()
    sent = 0

    async def endless():  # type: ignore[no-untyped-def]
        nonlocal sent
        block = bytes(64 * KiB)
        while True:
            sent += len(block)
            yield block

    async with serve(streams_plugin(probe), f"unix:{sock_dir}/p.sock") as (_, client):
        task = asyncio.ensure_future(client.request("POST", "/never-read", body=endless()))
        await probe.wait("never_read")
        last, still = -1, 0
        while still < 5:  # nothing signals "flow control reached": poll for a standstill
            await asyncio.sleep(0.05)
            still = still + 1 if sent == last else 0
            last = sent
        # The client's generator ran ahead by the plugin's receive window, what
        # gRPC's transports hold besides (about half a window, measured), one
        # frame waiting in call.write and one in hand.
        bound = 2 * flow_window(65536) + 2 * 64 * KiB
        print(f"client generated {sent} bytes while the handler never read (bound {bound})")
        assert sent <= bound
        probe.event("release").set()
        resp = await task
        received = int(await resp.read())
        assert received <= sent


# -- end, finished, abort, errors --------------------------------------------------


async def test_finished_resolves_when_the_client_has_it(listen: str) -> None:
    probe = Probe()
    async with serve(streams_plugin(probe), listen) as (_, client):
        for size in (1000, 3 * MiB):
            probe.events.pop("finished", None)
            resp = await client.request("GET", "/finished", query={"size": size})
            assert len(await resp.read()) == size
            # The client half-closed after body_complete: that is the acknowledgement.
            assert await probe.wait("finished") == "resolved"
            assert probe.seen["ended"] == (True, True)


async def test_finished_raises_when_the_client_goes_away(sock_dir: str) -> None:
    probe = Probe()
    async with serve(streams_plugin(probe), f"unix:{sock_dir}/p.sock") as (server, _):
        message = _init("GET", "/finished-watch") + encode_request_frame(b"", complete=True)
        channel, call = await _raw(server.address, [message], half_close=False)
        async with channel:
            frame = decode_response_frame(await call.read())
            assert frame.complete  # the whole response arrived...
            call.cancel()  # ...but the client is gone before acknowledging it
            assert await probe.wait("watch") == "ClientDisconnected"

        # In the handler's own task the gateway's cancel is a task cancellation.
        message = _init("GET", "/finished") + encode_request_frame(b"", complete=True)
        channel, call = await _raw(server.address, [message], half_close=False)
        async with channel:
            await call.read()
            call.cancel()
            assert await probe.wait("finished") == "CancelledError"


async def test_finished_times_out_and_the_rpc_ends_ok(sock_dir: str) -> None:
    probe = Probe()
    plugin = streams_plugin(probe, finish_timeout=0.3)
    async with serve(plugin, f"unix:{sock_dir}/p.sock") as (server, _):
        message = _init("GET", "/finished-watch") + encode_request_frame(b"", complete=True)
        channel, call = await _raw(server.address, [message], half_close=False)
        async with channel:
            result = await _read_all(call)  # never half-closes
        assert result.code == grpc.StatusCode.OK and result.frames[-1].complete
        assert await probe.wait("watch") == "TimeoutError"

        # Nobody awaits finished: the servicer waits inline, with the same bound.
        message = _init("GET", "/end-twice") + encode_request_frame(b"", complete=True)
        channel, call = await _raw(server.address, [message], half_close=False)
        async with channel:
            result = await _read_all(call)
        assert result.code == grpc.StatusCode.OK and result.body == b"one"
        await _until(lambda: server.active_calls == 0)


async def test_writes_after_the_client_left_raise(sock_dir: str) -> None:
    probe = Probe()
    async with serve(streams_plugin(probe), f"unix:{sock_dir}/p.sock") as (_, client):
        resp = await client.request("GET", "/write-after-gone")
        await probe.wait("started")
        await resp.aclose()
        errors = await probe.wait("write_errors")
    assert errors == ["ClientDisconnected"] * 3


@pytest.mark.parametrize("when", ["before", "after"])
async def test_abort_gives_an_incomplete_response(listen: str, when: str) -> None:
    probe = Probe()
    async with serve(streams_plugin(probe), listen) as (_, client):
        if when == "before":
            with pytest.raises(PluginCallError) as info:
                await client.request("GET", "/abort/before")
            assert info.value.code == grpc.StatusCode.ABORTED
        else:
            resp = await client.request("GET", "/abort/after")
            with pytest.raises(IncompleteResponse) as info2:
                await resp.read()
            assert info2.value.code == grpc.StatusCode.ABORTED
            assert "on purpose" in (info2.value.details or "")
    assert probe.seen["aborted"] == (True, False)
    assert isinstance(probe.seen["write_error"], ResponseAborted)
    assert isinstance(probe.seen["finished_error"], ResponseAborted)


async def test_end_twice_and_write_after_end(listen: str) -> None:
    probe = Probe()
    async with serve(streams_plugin(probe), listen) as (server, _):
        channel, call = await _raw(
            server.address, [_init("GET", "/end-twice") + encode_request_frame(b"", complete=True)]
        )
        async with channel:
            result = await _read_all(call)
    assert len(result.messages) == 1 and result.body == b"one"
    assert probe.seen["errors"] == ["response already ended"] * 2


# -- piping --------------------------------------------------------------------


@pytest.mark.async_timeout(120)
async def test_pipe_from_echoes_256_mib(sock_dir: str) -> None:
    probe = Probe()
    size = 256 * MiB
    block = pattern(MiB, 3)
    sent = hashlib.sha256()

    async def upload():  # type: ignore[no-untyped-def]
        for _ in range(size // MiB):
            sent.update(block)
            yield block

    async with (
        serve(streams_plugin(probe), f"unix:{sock_dir}/p.sock") as (_, client),
        client.request("POST", "/echo", body=upload()) as resp,
    ):
        got = hashlib.sha256()
        total = 0
        async for chunk in resp.body:
            got.update(chunk)
            total += len(chunk)
    assert total == size
    assert got.hexdigest() == sent.hexdigest()
    assert probe.seen["piped"] == size
    assert probe.seen["echo_length"] is None


async def test_pipe_from_failing_source_aborts(listen: str) -> None:
    probe = Probe()
    async with serve(streams_plugin(probe), listen) as (_, client):
        resp = await client.request("GET", "/pipe-source/fail")
        with pytest.raises(IncompleteResponse):
            await resp.read()
    assert str(probe.seen["pipe_error"]) == "source broke"


async def test_pipe_from_stops_reading_when_the_client_leaves(sock_dir: str) -> None:
    probe = Probe()
    async with serve(streams_plugin(probe), f"unix:{sock_dir}/p.sock") as (_, client):
        async with client.request("GET", "/pipe-source/ok") as resp:
            await resp.body.__anext__()
        closed = await probe.wait("source_closed")
    assert isinstance(closed, int) and closed < 64  # of 10,000 blocks
    assert isinstance(probe.seen["pipe_error"], (ClientDisconnected, asyncio.CancelledError))


# -- send_file -------------------------------------------------------------------


@pytest.fixture
def data_file(sock_dir: str) -> tuple[str, bytes]:
    data = pattern(MiB + 12345, 9)
    path = os.path.join(sock_dir, "data.bin")
    with open(path, "wb") as f:
        f.write(data)
    return path, data


@pytest.mark.parametrize(
    ("offset", "count"),
    [(None, None), (1000, 5000), (70_000, None), (None, 0), ("end", None), (0, 65536)],
)
async def test_send_file_ranges(sock_dir: str, data_file, offset, count) -> None:  # type: ignore[no-untyped-def]
    path, data = data_file
    probe = Probe()
    query: dict[str, object] = {"path": path}
    if offset == "end":
        offset = len(data)
    if offset is not None:
        query["offset"] = offset
    if count is not None:
        query["count"] = count
    start = offset or 0
    expected = data[start : None if count is None else start + count]
    async with serve(streams_plugin(probe), f"unix:{sock_dir}/p.sock") as (_, client):
        resp = await client.request("GET", "/file", query=query)
        body = await resp.read()
        # The handler records after send_file returns, which may be after
        # the client has the whole body.
        sent = await probe.wait("sent")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == str(len(expected))
    assert body == expected
    assert sent == len(expected)


@pytest.mark.parametrize(
    ("query", "status", "text"),
    [
        ({"path": "/nonexistent/file", "not_found": "raise"}, 404, "FileNotFoundError"),
        ({"offset": 10**9}, 400, "past the end"),
        ({"offset": 10, "count": 10**9}, 400, "past the end"),
        ({"offset": -1}, 400, "offset must be >= 0"),
        ({"count": -5}, 400, "count must be >= 0"),
    ],
)
async def test_send_file_errors(sock_dir: str, data_file, query, status, text) -> None:  # type: ignore[no-untyped-def]
    path, _ = data_file
    probe = Probe()
    async with serve(streams_plugin(probe), f"unix:{sock_dir}/p.sock") as (_, client):
        resp = await client.request("GET", "/file", query={"path": path, **query})
        body = await resp.read()
    assert resp.status == status
    assert text in body.decode()


@pytest.mark.parametrize(("missing", "not_found"), [("nonexistent", None), ("data.bin/x", 410)])
async def test_send_file_answers_a_missing_file(  # type: ignore[no-untyped-def]
    sock_dir: str, data_file, missing, not_found
) -> None:
    probe = Probe()
    query: dict[str, object] = {"path": os.path.join(sock_dir, missing)}
    if not_found is not None:
        query["not_found"] = not_found
    async with serve(streams_plugin(probe), f"unix:{sock_dir}/p.sock") as (_, client):
        resp = await client.request("GET", "/file", query=query)
        body = await resp.read()
        sent = await probe.wait("sent")  # recorded after send_file returns
    assert resp.status == (not_found or 404)
    assert body == b"Not Found\n"
    assert resp.headers["Content-Length"] == "10"
    assert sent == 0


async def test_send_file_is_exported() -> None:
    from chunkwire.plugin import send_file

    assert chunkwire.send_file is send_file
    assert "send_file" in chunkwire.__all__
    assert json.dumps(chunkwire.__all__)


async def test_send_file_with_large_chunks_reads_in_a_thread(sock_dir: str) -> None:
    # Chunks above 4 MiB are read off the loop; the bytes are the same.
    data = pattern(20 * MiB + 7, 11)
    path = os.path.join(sock_dir, "large.bin")
    with open(path, "wb") as f:
        f.write(data)
    chunk = 8 * MiB
    plugin = streams_plugin(Probe(), chunk_size=chunk)
    async with serve(plugin, f"unix:{sock_dir}/p.sock", chunk_size=chunk) as (_, client):
        resp = await client.request("GET", "/file", query={"path": path, "offset": 5})
        assert hashlib.sha256(await resp.read()).digest() == hashlib.sha256(data[5:]).digest()
        assert resp.messages == 3  # 8 + 8 + 4 MiB, the last one complete


async def test_high_water_mark_settings(sock_dir: str) -> None:
    with pytest.raises(ValueError, match="high_water_mark"):
        Plugin("x", high_water_mark=0)
    with pytest.raises(ValueError, match="finish_timeout"):
        Plugin("x", finish_timeout=0)
    response = Response(lambda frame: None, 65536)
    assert response.high_water_mark == 64 * KiB
    response.high_water_mark = 10
    assert response.high_water_mark == 10
    with pytest.raises(ValueError):
        response.high_water_mark = 0
    with pytest.raises(TypeError):
        response.high_water_mark = 1.5  # type: ignore[assignment]
