"""HTTP semantics through real processes: fields, headers, flush, status, early answers, errors."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest

pytestmark = pytest.mark.timeout(120)

def test_every_request_field_reaches_the_plugin(stack):
    r = httpx.post(
        stack.url + "/plugins/app/echo-request?a=1&a=2&b=x%20y",
        content=b"payload",
        headers=[
            ("X-Trace", "one"),
            ("X-Trace", "two"),
            ("User-Agent", "e2e/1.0"),
            ("Accept-Language", "nl"),
            ("X-Chunkwire-User-Id", "forged"),
        ],
    )
    assert r.status_code == 200
    seen = r.json()
    port = httpx.URL(stack.url).port
    assert seen["method"] == "POST"
    assert seen["url"] == f"http://127.0.0.1:{port}/echo-request?a=1&a=2&b=x%20y"
    assert seen["path"] == "/echo-request"
    assert seen["query"] == [["a", "1"], ["a", "2"], ["b", "x y"]]
    assert seen["request_uri"] == "/echo-request?a=1&a=2&b=x%20y"
    assert seen["host"] == f"127.0.0.1:{port}"
    assert seen["remote_addr"].startswith("127.0.0.1:")
    assert (seen["proto"], seen["proto_major"], seen["proto_minor"]) == ("HTTP/1.1", 1, 1)
    assert seen["content_length"] == 7
    assert seen["body"] == "payload"
    headers = [(k.lower(), v) for k, v in seen["headers"]]
    assert [v for k, v in headers if k == "x-trace"] == ["one", "two"]
    assert not [v for k, v in headers if k == "x-chunkwire-user-id"]
    ctx = seen["context"]
    assert ctx["ip_address"] == "127.0.0.1"
    assert ctx["user_agent"] == "e2e/1.0"
    assert ctx["accept_language"] == "nl"
    assert len(ctx["request_id"]) == 32


def test_unknown_content_length_is_none(stack):
    r = httpx.get(stack.url + "/plugins/app/echo-request")
    assert r.json()["content_length"] is None


def test_multi_value_response_headers(stack):
    r = httpx.get(stack.url + "/plugins/app/multi-headers")
    assert r.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert r.headers.get_list("x-trace") == ["first", "second"]
    assert r.text == "cookies"


def test_multi_value_response_headers_curl(stack, curl):
    out = subprocess.run(
        [curl, "-sS", "-D", "-", "-o", "/dev/null", stack.url + "/plugins/app/multi-headers"],
        capture_output=True,
        check=True,
        text=True,
    ).stdout.lower()
    assert out.count("set-cookie:") == 2
    assert out.count("x-trace:") == 2


def test_flushed_write_arrives_while_handler_waits(stack, tmp_path):
    release = tmp_path / "release"
    with httpx.stream(
        "GET", stack.url + "/plugins/app/flush-wait", params={"file": str(release)}, timeout=10
    ) as r:
        chunks = r.iter_raw()
        assert next(chunks) == b"before\n"  # the handler is still waiting for the file
        release.touch()
        assert b"".join(chunks) == b"after\n"


@pytest.mark.parametrize("code", [42, 1000])
def test_invalid_status_is_500(stack, code):
    r = httpx.get(stack.url + f"/plugins/app/status?code={code}")
    assert r.status_code == 500


def test_valid_unusual_status_passes(stack):
    assert httpx.get(stack.url + "/plugins/app/status?code=299").status_code == 299


def test_header_after_first_write_raises_in_handler_only(stack):
    r = httpx.get(stack.url + "/plugins/app/late-header")
    assert r.status_code == 200
    assert "x-late" not in r.headers
    assert r.text.startswith("body-a;raised ")
    assert stack.plugin_stats()["late_header_errors"]


def _gib_of_zeros():
    block = bytes(1 << 20)
    for _ in range(1024):
        yield block


def test_early_response_413_httpx(stack):
    start = time.monotonic()
    r = httpx.post(stack.url + "/plugins/app/early-413", content=_gib_of_zeros(), timeout=30)
    assert r.status_code == 413
    assert r.text == "too large, not reading it\n"
    assert time.monotonic() - start < 10


def test_early_response_413_curl(stack, curl):
    # curl sends the body as it reads it from a generator-like pipe; it sees the
    # 413 mid-upload and stops, so the GiB is never sent.
    start = time.monotonic()
    head = subprocess.Popen(["head", "-c", str(1 << 30), "/dev/zero"], stdout=subprocess.PIPE)
    out = subprocess.run(
        [curl, "-sS", "-o", "-", "-w", "\n%{http_code} %{size_upload}", "-T", "-",
         stack.url + "/plugins/app/early-413"],
        stdin=head.stdout,
        capture_output=True,
        text=True,
        timeout=60,
    )
    head.kill()
    head.wait()
    body, _, tail = out.stdout.rpartition("\n")
    code, uploaded = tail.split()
    assert code == "413"
    assert body == "too large, not reading it\n"
    assert float(uploaded) < (1 << 30)
    assert time.monotonic() - start < 20


def test_error_table_404s(stack):
    assert httpx.get(stack.url + "/plugins/nope/x").status_code == 404
    assert httpx.get(stack.url + "/elsewhere").status_code == 404
    assert httpx.get(stack.url + "/plugins/app/no-such-route").status_code == 404


def test_error_table_413(stack):
    big = b"z" * (2 << 20)
    r = httpx.post(stack.limited_url + "/plugins/app/upload", content=big)
    assert r.status_code == 413

    def chunks():
        for _ in range(64):
            yield bytes(65536)

    r = httpx.post(stack.limited_url + "/plugins/app/upload", content=chunks(), timeout=30)
    assert r.status_code == 413
    r = httpx.post(stack.limited_url + "/plugins/app/upload", content=b"small")
    assert r.status_code == 200


def test_error_table_504(stack):
    start = time.monotonic()
    r = httpx.get(stack.limited_url + "/plugins/app/hang", timeout=30)
    assert r.status_code == 504
    assert time.monotonic() - start < 10


def test_mattermost_named_method_answers_like_ours(stack):
    def ask(plugin_id: str) -> dict:
        r = httpx.post(
            stack.url + f"/plugins/{plugin_id}/echo-request?x=1",
            content=b"same",
            headers={"User-Agent": "same"},
        )
        assert r.status_code == 200
        seen = r.json()
        del seen["context"]["request_id"]
        del seen["remote_addr"]
        # the gateway's mount point, which differs by plugin id
        prefix = [h for h in seen["headers"] if h[0].lower() == "x-forwarded-prefix"]
        assert prefix == [["x-forwarded-prefix", f"/plugins/{plugin_id}"]]
        seen["headers"] = [h for h in seen["headers"] if h not in prefix]
        return seen

    assert ask("mm") == ask("app")
    r_mm = httpx.get(stack.url + "/plugins/mm/multi-headers")
    r_app = httpx.get(stack.url + "/plugins/app/multi-headers")
    assert r_mm.headers.get_list("set-cookie") == r_app.headers.get_list("set-cookie")
    assert r_mm.content == r_app.content


def test_slow_plugin_stops_the_gateway_reading(stack, tmp_path):
    # The plugin reads one chunk and stalls: the upload must stall too, with
    # only bounded buffers (sockets, HTTP/2 windows, one chunk) in between.
    import threading

    release = tmp_path / "go"
    total = 256 << 20
    sent = 0
    result = {}

    def body():
        nonlocal sent
        block = bytes(1 << 20)
        for _ in range(total >> 20):
            sent += len(block)
            yield block

    def upload():
        result["response"] = httpx.post(
            stack.url + "/plugins/app/stall-upload",
            params={"file": str(release)},
            content=body(),
            timeout=60,
        )

    thread = threading.Thread(target=upload)
    thread.start()
    last, stable_since = -1, time.monotonic()
    while time.monotonic() - stable_since < 1.0:  # until the client stops making progress
        if sent != last:
            last, stable_since = sent, time.monotonic()
        time.sleep(0.05)
    assert sent < 64 << 20, f"{sent >> 20} MiB left the client while the plugin read nothing"
    release.touch()
    thread.join(60)
    r = result["response"]
    assert r.status_code == 200
    assert int(r.text) == total
