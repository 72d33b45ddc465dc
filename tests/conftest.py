"""Makes ``tests/`` importable for the helpers every suite shares (``bodies``),
and ``--transports`` picks which transports the parametrised suites run on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    chosen = _chosen_transports(config)
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        transport = callspec.params.get("transport") if callspec is not None else None
        (drop if transport is not None and transport not in chosen else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
