"""Every gateway test runs against fake plugins on every transport."""

from __future__ import annotations

from collections.abc import Iterator

import gateway_fakes
import pytest


@pytest.fixture(autouse=True, params=["call", "mux", "lane"])
def transport(request: pytest.FixtureRequest) -> Iterator[str]:
    gateway_fakes.TRANSPORT = request.param
    gateway_fakes.STARTED.clear()
    try:
        yield request.param
        for fake in gateway_fakes.STARTED:
            # The gateway negotiated what the fake offers, for every request.
            assert set(fake.log.transports) <= {fake.transport}, fake.log.transports
    finally:
        gateway_fakes.TRANSPORT = "call"
        gateway_fakes.STARTED.clear()
