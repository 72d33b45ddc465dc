"""Fixtures shared by the core tests: every test runs on both implementations.

``core`` is parametrised over the compiled module (id ``c``) and the pure
twin (id ``py``), as multidict's and aiohttp's parser tests do. The compiled
module is imported directly, not through ``chunkwire._core``, so the ``c``
tests keep testing it when ``CHUNKWIRE_NO_EXTENSIONS=1`` makes the selector
pick the pure twin. A missing build is an error, never a skip.

``CHUNKWIRE_PURE_WHEEL=1`` says the installed package is the pure wheel
(``py3-none-any``, no compiled module at all): the tests of the compiled
module are then deselected, and test_core_select checks that it is really
absent.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

IMPLEMENTATIONS = {"c": "chunkwire._core_c", "py": "chunkwire._core_py"}
PURE_WHEEL = os.environ.get("CHUNKWIRE_PURE_WHEEL", "") not in ("", "0")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "compiled: needs the compiled core (not in the pure wheel)")


def _needs_compiled(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return (
        item.get_closest_marker("compiled") is not None
        or "core_c" in getattr(item, "fixturenames", ())
        or (callspec is not None and callspec.params.get("core") == "c")
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not PURE_WHEEL:
        return
    dropped = [item for item in items if _needs_compiled(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not _needs_compiled(item)]


def _load(name: str) -> ModuleType:
    try:
        return importlib.import_module(IMPLEMENTATIONS[name])
    except ImportError as exc:
        pytest.fail(
            f"{IMPLEMENTATIONS[name]} is not importable ({exc}); "
            "build it with `python setup.py build_ext --inplace`",
            pytrace=False,
        )


@pytest.fixture(scope="session", params=sorted(IMPLEMENTATIONS), ids=sorted(IMPLEMENTATIONS))
def core(request: pytest.FixtureRequest) -> ModuleType:
    """The core module under test: ``chunkwire._core_c`` or ``chunkwire._core_py``."""
    return _load(request.param)


@pytest.fixture(scope="session")
def core_c() -> ModuleType:
    """The compiled core, for tests that compare the two side by side."""
    return _load("c")


@pytest.fixture(scope="session")
def core_py() -> ModuleType:
    """The pure-Python core: the reference behaviour."""
    return _load("py")
