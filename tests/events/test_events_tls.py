"""The Events service over TCP with TLS credentials (``events_credentials``):
a Publisher that trusts the gateway's certificate publishes; one without TLS,
or trusting another certificate, is refused and nothing it sent arrives."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from events_helpers import SSEReader, free_port, publish, sse_client

from chunkwire.errors import PublishError

AUTH = {"Authorization": "Bearer alice@acme"}
TOPIC = "acme.tls"


def _certificate(directory: Path, name: str) -> tuple[bytes, Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost: (PEM, cert path, key path)."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl is not installed (apt-get install openssl)"
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    return cert.read_bytes(), cert, key


@pytest.fixture
def tls_gateway(stack):
    pem, cert, key = _certificate(stack.tmp, "gateway")
    address = f"127.0.0.1:{free_port()}"
    gw = stack.auth_gateway("--events-tls", str(cert), str(key), events=address)
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
        other, _, _ = _certificate(stack.tmp, "other")
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
