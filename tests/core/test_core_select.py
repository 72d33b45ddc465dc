"""Which implementation ``chunkwire._core`` selects, and the shared API surface."""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import chunkwire
from chunkwire import _core, _core_py, _errors

PURE_WHEEL = os.environ.get("CHUNKWIRE_PURE_WHEEL", "") not in ("", "0")

NAMES = [
    "COMPILED",
    "DEFAULT_CHUNK_SIZE",
    "RING_DESCRIPTOR_SIZE",
    "BatchWriter",
    "Chunker",
    "FrameError",
    "RequestFrame",
    "ResponseFrame",
    "RingError",
    "RingReader",
    "RingWriter",
    "SmallWriter",
    "decode_batch",
    "decode_ring_descriptor",
    "decode_request_frame",
    "decode_response_frame",
    "encode_batch",
    "encode_ring_descriptor",
    "encode_request_frame",
    "encode_request_init",
    "encode_response_frame",
    "encode_response_init",
    "encode_sse",
    "join_request_frame",
    "join_response_frame",
]

ENV_SWITCH = "CHUNKWIRE_NO_EXTENSIONS"


def _selected_in_subprocess(switch: str | None) -> str:
    """Import chunkwire._core in a fresh interpreter; return ``COMPILED module``."""
    env = dict(os.environ)
    env.pop(ENV_SWITCH, None)
    if switch is not None:
        env[ENV_SWITCH] = switch
    src = str(Path(chunkwire.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    code = (
        "from chunkwire import _core; "
        "print(_core.COMPILED, _core.Chunker.__module__, _core.encode_sse.__module__)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_compiled_module_present_unless_pure_wheel() -> None:
    """The pure wheel ships no compiled core, and then the selector falls back to the twin."""
    found = importlib.util.find_spec("chunkwire._core_c") is not None
    if PURE_WHEEL:
        assert not found
        assert _selected_in_subprocess(None) == "False chunkwire._core_py chunkwire._core_py"
    elif platform.python_implementation() == "CPython":
        assert found


@pytest.mark.compiled
def test_core_c_loaded() -> None:
    """The selector picked the compiled module unless told not to (yarl's test)."""
    assert _core.COMPILED is not _core.NO_EXTENSIONS
    if _core.NO_EXTENSIONS:
        assert _core.Chunker is _core_py.Chunker
    else:
        core_c = importlib.import_module("chunkwire._core_c")
        assert _core.Chunker is core_c.Chunker
        assert _core.decode_response_frame is core_c.decode_response_frame


def test_no_extensions_reflects_environment() -> None:
    expected = os.environ.get(ENV_SWITCH, "") not in ("", "0") or (
        platform.python_implementation() != "CPython"
    )
    assert _core.NO_EXTENSIONS is expected


@pytest.mark.compiled
@pytest.mark.skipif(
    platform.python_implementation() != "CPython", reason="the compiled core is CPython-only"
)
@pytest.mark.parametrize("switch", [None, "", "0"], ids=["unset", "empty", "zero"])
def test_compiled_selected_without_switch(switch: str | None) -> None:
    # Runs in a fresh interpreter, so it holds even when this run has the switch set.
    assert _selected_in_subprocess(switch) == "True chunkwire._core_c chunkwire._core_c"


@pytest.mark.parametrize("switch", ["1", "yes"])
def test_switch_selects_pure(switch: str) -> None:
    assert _selected_in_subprocess(switch) == "False chunkwire._core_py chunkwire._core_py"


def test_selector_exports(core: ModuleType) -> None:
    for name in NAMES:
        assert hasattr(core, name), name
    assert set(_core.__all__) == set(NAMES)
    assert set(core.__all__) == set(NAMES) - {"FrameError"} | {"FrameError"}


def test_compiled_flag(core: ModuleType, request: pytest.FixtureRequest) -> None:
    assert core.COMPILED is (request.node.callspec.id == "c")


def test_frame_error_is_shared(core: ModuleType) -> None:
    assert core.FrameError is _errors.FrameError
    assert _core.FrameError is _errors.FrameError
    assert issubclass(core.FrameError, ValueError)


def test_default_chunk_size(core: ModuleType) -> None:
    assert core.DEFAULT_CHUNK_SIZE == 65536
    chunker = core.Chunker()
    assert chunker.chunk_size == 65536
    assert chunker.capacity == 4 * 65536


def test_frame_types(core: ModuleType) -> None:
    assert isinstance(core.decode_request_frame(b""), core.RequestFrame)
    assert isinstance(core.decode_response_frame(b""), core.ResponseFrame)
