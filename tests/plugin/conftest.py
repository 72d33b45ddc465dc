"""Run ``async def`` tests in a fresh event loop each (no plugin needed)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    func = pyfuncitem.obj
    if not inspect.iscoroutinefunction(func):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    timeout = 60.0
    marker = pyfuncitem.get_closest_marker("async_timeout")
    if marker is not None:
        timeout = marker.args[0]

    async def run() -> None:
        await asyncio.wait_for(func(**kwargs), timeout)

    asyncio.run(run())
    return True


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "async_timeout(seconds): limit for an async test")


@pytest.fixture
def sock_dir():  # type: ignore[no-untyped-def]
    # tmp_path can exceed the 108-byte limit of a unix socket path.
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="cw-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["call", "mux", "lane"])
def transport(request: pytest.FixtureRequest) -> Iterator[str]:
    """What PluginClient uses in ``plugin_helpers.serve``: server tests run on each."""
    import plugin_helpers

    plugin_helpers.CLIENT_TRANSPORT = request.param
    try:
        yield request.param
    finally:
        plugin_helpers.CLIENT_TRANSPORT = "call"


@pytest.fixture(params=["unix", "tcp"])
def listen(request: pytest.FixtureRequest, sock_dir: str, transport: str) -> str:
    if request.param == "unix":
        return f"unix:{sock_dir}/plugin.sock"
    return "127.0.0.1:0"
