"""Channel choice per plugin address: plaintext on loopback and unix sockets, TLS elsewhere."""

from __future__ import annotations

import grpc
import pytest

from chunkwire.gateway.upstream import Upstream, channel_options, is_loopback


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("unix:/tmp/p.sock", True),
        ("127.0.0.1:5000", True),
        ("127.8.9.1:5000", True),
        ("[::1]:5000", True),
        ("localhost:5000", True),
        ("10.0.0.2:5000", False),
        ("plugins.example:443", False),
    ],
)
def test_is_loopback(address, loopback):
    assert is_loopback(address) is loopback


def test_tls_only_where_not_loopback():
    assert Upstream("a", "127.0.0.1:1", chunk_size=65536)._credentials is None
    assert Upstream("a", "unix:/x.sock", chunk_size=65536)._credentials is None
    remote = Upstream("a", "10.1.2.3:443", chunk_size=65536)
    assert isinstance(remote._credentials, grpc.ChannelCredentials)
    explicit = grpc.ssl_channel_credentials()
    assert Upstream("a", "127.0.0.1:1", chunk_size=1, credentials=explicit)._credentials is explicit


def test_message_limits_leave_room_for_init():
    options = dict(channel_options(1 << 20))
    assert options["grpc.max_receive_message_length"] >= (1 << 20) + 16 * 1024 * 1024
    assert options["grpc.max_send_message_length"] >= (1 << 20) + 16 * 1024 * 1024
    assert options["grpc.max_reconnect_backoff_ms"] <= 1000


def test_bad_address_is_rejected():
    with pytest.raises(ValueError):
        Upstream("a", "nonsense", chunk_size=1)
