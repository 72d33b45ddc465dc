"""Fixtures of the event-stream tests; the helpers are in events_helpers."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from events_helpers import NatsServer, Stack


@pytest.fixture
def stack() -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="cw-ev-") as tmp:
        s = Stack(Path(tmp))
        try:
            yield s
        finally:
            s.close()


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer()
    try:
        yield server
    finally:
        server.stop()
