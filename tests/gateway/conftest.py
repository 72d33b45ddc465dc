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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "only_transports(*names): run the test on these transports only"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("only_transports")
        callspec = getattr(item, "callspec", None)
        transport = callspec.params.get("transport") if callspec is not None else None
        if marker is not None and transport not in marker.args:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
