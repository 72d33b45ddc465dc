"""Fixtures of the end-to-end tests; the process helpers are in e2e_stack."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from e2e_stack import Stack


@pytest.fixture(scope="session", params=["lane", "mux", "call"])
def transport(request: pytest.FixtureRequest) -> str:
    """Gateway to plugin transport: every end-to-end test runs on each."""
    return request.param


@pytest.fixture(scope="session")
def stack(tmp_path_factory, transport: str) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("e2e"), transport)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="session")
def curl() -> str:
    """curl, which .ci/run installs: a missing one fails the tests that use it."""
    path = shutil.which("curl")
    if path is None:
        pytest.fail("the end-to-end tests need curl (apt-get install curl)")
    return path
