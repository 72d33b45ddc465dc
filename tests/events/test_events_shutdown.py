"""A gateway told to stop (SIGTERM, SIGINT) ends its SSE streams cleanly: each
stream writes what it holds, then a complete chunked end, never a cut."""

from __future__ import annotations

import os
import signal

import pytest
from events_helpers import HANG_GUARD, SSEReader, publish, sse_client


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_streams_end_cleanly_when_the_gateway_stops(stack, sig):
    # A long grace period: a stream still open when the signal comes would be
    # cut only after it, so an early, clean end is the gateway's doing; no
    # keep-alive wakes the quiet stream meanwhile.
    gw = stack.gateway("--graceful-timeout", "60", "--sse-keepalive", "3600")
    datas = [f"{i}-{os.urandom(8).hex()}" for i in range(50)]
    with sse_client() as client, \
            client.stream("GET", f"{gw.url}/events/busy") as busy, \
            client.stream("GET", f"{gw.url}/events/quiet") as quiet:
        busy_reader, quiet_reader = SSEReader(busy), SSEReader(quiet)
        publish(gw.events, [("quiet", "tick", "only")])
        assert quiet_reader.events(1)[0].json()["data"] == "only"
        publish(gw.events, [("busy", "tick", d) for d in datas])
        gw.proc.proc.send_signal(sig)
        # httpx raises on a connection closed inside a chunked body.
        assert [e.json()["data"] for e in busy_reader.events(len(datas))] == datas
        assert busy_reader.next() is None
        assert quiet_reader.next() is None
    assert gw.proc.proc.wait(HANG_GUARD) == 0
    assert "Traceback" not in gw.proc.stderr()
