"""Makes ``tests/`` importable for the helpers every suite shares (``bodies``),
and ``--transports`` (with the ``only_transports`` marker) picks which
transports the parametrised suites run on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import settings

# Hypothesis's per-example deadline is a timing assertion: with the suite
# spread over every core next to real plugin and gateway processes, a first
# example can take 300 ms for reasons that have nothing to do with the code.
settings.register_profile("chunkwire", deadline=None)
settings.load_profile("chunkwire")

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

TRANSPORTS = ("call", "mux", "lane")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--transports",
        default=",".join(TRANSPORTS),
        help="comma-separated transports the parametrised suites run on (default: all)",
    )


def _chosen_transports(config: pytest.Config) -> set[str]:
    chosen = {name.strip() for name in config.getoption("transports").split(",") if name.strip()}
    unknown = chosen - set(TRANSPORTS)
    if unknown or not chosen:
        raise pytest.UsageError(
            f"--transports: expected names from {', '.join(TRANSPORTS)}, "
            f"got {config.getoption('transports')!r}"
        )
    return chosen


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "only_transports(*names): run the test on these transports only"
    )


def _runs(item: pytest.Item, chosen: set[str]) -> bool:
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    transport = params.get("transport")
    if transport is None:
        return True
    marker = item.get_closest_marker("only_transports")
    if transport not in chosen or (marker is not None and transport not in marker.args):
        return False
    # The lane runs over unix sockets only: lane x tcp is not a combination.
    return not (transport == "lane" and params.get("listen") == "tcp")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    chosen = _chosen_transports(config)
    keep, drop = [], []
    for item in items:
        (keep if _runs(item, chosen) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
