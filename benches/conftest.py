"""Benchmarks: run with ``python -m pytest benches`` (never part of the default run).

The default run only looks in ``tests/`` (``testpaths``); benchmark modules
are named ``bench_*.py`` and collected here, so ``pytest tests`` or a plain
``pytest`` never picks them up.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        # A file named on the command line is collected by pytest itself.
        and not parent.session.isinitpath(file_path)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
