"""Fixtures shared by the core tests: every test runs on both implementations.

``core`` is parametrised over the compiled module (id ``c``) and the pure
twin (id ``py``), as multidict's and aiohttp's parser tests do. The compiled
module is imported directly, not through ``chunkwire._core``, so the ``c``
tests keep testing it when ``CHUNKWIRE_NO_EXTENSIONS=1`` makes the selector
pick the pure twin. A missing build is an error, never a skip.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

IMPLEMENTATIONS = {"c": "chunkwire._core_c", "py": "chunkwire._core_py"}


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
