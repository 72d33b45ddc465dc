"""The Events service over TCP with TLS, set up through the Python API
(``events_credentials``) or ``chunkwire gateway --events-tls-cert/--events-tls-key``:
a Publisher that trusts the gateway's certificate publishes; one without TLS,
or trusting another certificate, is refused and nothing it sent arrives.
The CLI refuses, in one line with status 2, a non-loopback address without
TLS and certificate/key files that are missing, unreadable, not PEM or not
a pair."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import grpc
import pytest
from events_helpers import SSEReader, env, free_port, publish, sse_client, tls_certificate
from processes import HANG_GUARD

from chunkwire.errors import PublishError

AUTH = {"Authorization": "Bearer alice@acme"}
TOPIC = "acme.tls"


@pytest.fixture(params=["api", "cli"])
def tls_gateway(request, stack):
    pem, cert, key = tls_certificate(stack.tmp, "gateway")
    port = free_port()
    if request.param == "api":
        gw = stack.auth_gateway("--events-tls", str(cert), str(key), events=f"127.0.0.1:{port}")
    else:
        # Every interface: allowed because the service has TLS credentials.
        gw = stack.gateway("--events-tls-cert", str(cert), "--events-tls-key", str(key),
                           events=f"0.0.0.0:{port}")
        gw = dataclasses.replace(gw, events=f"127.0.0.1:{port}")
    return gw, pem


def _datas(tag: str, count: int) -> list[str]:
    return [f"{tag}-{i}-{os.urandom(12).hex()}" for i in range(count)]


def test_a_publisher_over_tls_reaches_subscribers(tls_gateway):
    gw, pem = tls_gateway
    trusted = grpc.ssl_channel_credentials(root_certificates=pem)
    datas = _datas("tls", 20)
    with sse_client() as client, \
            client.stream("GET", f"{gw.url}/events/{TOPIC}", headers=AUTH) as resp:
        assert resp.status_code == 200
        publish(gw.events, [(TOPIC, "tick", d) for d in datas], credentials=trusted)
        got = SSEReader(resp).events(len(datas))
    assert [e.json()["data"] for e in got] == datas
    assert [e.id for e in got] == [str(i) for i in range(1, len(datas) + 1)]


@pytest.mark.parametrize("publisher", ["plaintext", "another certificate"])
def test_a_publisher_without_the_gateways_trust_is_refused(stack, tls_gateway, publisher):
    gw, pem = tls_gateway
    trusted = grpc.ssl_channel_credentials(root_certificates=pem)
    if publisher == "plaintext":
        options = {}
    else:
        other, _, _ = tls_certificate(stack.tmp, "other")
        options = {"credentials": grpc.ssl_channel_credentials(root_certificates=other)}
    with sse_client() as client, \
            client.stream("GET", f"{gw.url}/events/{TOPIC}", headers=AUTH) as resp:
        reader = SSEReader(resp)
        with pytest.raises(PublishError) as info:
            publish(gw.events, [(TOPIC, "refused", d) for d in _datas("refused", 5)], **options)
        assert info.value.failed >= 1
        assert gw.stats()["events"]["published"] == 0
        # The next event this subscriber gets is the first one sent over TLS.
        publish(gw.events, [(TOPIC, "tick", "after")], credentials=trusted)
        (event,) = reader.events(1)
    assert (event.event, event.json()["data"], event.id) == ("tick", "after", "1")


# -- command-line mistakes ----------------------------------------------------------


@pytest.fixture(scope="module")
def pems(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("pems")
    _, cert, key = tls_certificate(tmp, "gateway")
    _, _, other_key = tls_certificate(tmp, "other")
    (tmp / "junk.pem").write_text("not a certificate\n")
    cut = tmp / "cut.crt"
    cut.write_bytes(cert.read_bytes()[:200])
    return {"cert": str(cert), "key": str(key), "other-key": str(other_key),
            "junk": str(tmp / "junk.pem"), "cut": str(cut), "missing": str(tmp / "missing.pem"),
            "dir": str(tmp), "sock": f"unix:{tmp / 'events.sock'}"}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--events-listen", "0.0.0.0:{port}"],
         ["'0.0.0.0:{port}'", "not a unix socket or a loopback", "--events-tls-cert"]),
        (["--events-listen", "127.0.0.1:{port}", "--events-tls-cert", "{cert}"],
         ["--events-tls-cert and --events-tls-key", "both"]),
        (["--events-listen", "127.0.0.1:{port}", "--events-tls-key", "{key}"],
         ["--events-tls-cert and --events-tls-key", "both"]),
        (["--events-tls-cert", "{cert}", "--events-tls-key", "{key}"],
         ["need a TCP --events-listen"]),
        (["--events-listen", "{sock}", "--events-tls-cert", "{cert}", "--events-tls-key", "{key}"],
         ["need a TCP --events-listen"]),
        (["--events-listen", "0.0.0.0:{port}", "--events-tls-cert", "{missing}",
          "--events-tls-key", "{key}"],
         ["--events-tls-cert {missing}", "No such file"]),
        (["--events-listen", "0.0.0.0:{port}", "--events-tls-cert", "{cert}",
          "--events-tls-key", "{dir}"],
         ["--events-tls-key {dir}", "Is a directory"]),
        (["--events-listen", "0.0.0.0:{port}", "--events-tls-cert", "{junk}",
          "--events-tls-key", "{key}"],
         ["--events-tls-cert {junk}", "not a PEM certificate"]),
        (["--events-listen", "0.0.0.0:{port}", "--events-tls-cert", "{cert}",
          "--events-tls-key", "{junk}"],
         ["--events-tls-key {junk}", "not a PEM private key"]),
        (["--events-listen", "0.0.0.0:{port}", "--events-tls-cert", "{cert}",
          "--events-tls-key", "{other-key}"],
         ["--events-tls-key {other-key} is not the key of --events-tls-cert {cert}"]),
        (["--events-listen", "0.0.0.0:{port}", "--events-tls-cert", "{cut}",
          "--events-tls-key", "{key}"],
         ["is not the key of --events-tls-cert {cut}, or either is damaged"]),
    ],
    ids=["non-loopback", "cert-only", "key-only", "no-listen", "unix", "missing", "unreadable",
         "cert-junk", "key-junk", "not-a-pair", "cut-cert"],
)
def test_gateway_refuses_bad_events_tls_in_one_line(pems, args, words):
    names = {**pems, "port": str(free_port())}
    argv = [a.format(**names) for a in args]
    result = subprocess.run(
        [sys.executable, "-m", "chunkwire", "gateway", "--port", "0",
         "--plugin", "p=unix:/nonexistent/p.sock", *argv],
        env=env(), capture_output=True, text=True, timeout=HANG_GUARD,
    )
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("chunkwire gateway: error: "), lines[0]
    for word in words:
        assert word.format(**names) in lines[0], lines[0]
