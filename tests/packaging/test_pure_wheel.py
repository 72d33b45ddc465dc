"""The pure-Python wheel: built with the extension off, installed into a fresh venv,
and the core suite run on it (the compiled module's own tests deselected)."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# What a source checkout holds that a build must not pick up: the editable
# install's compiled module, Cython's generated C, caches.
IGNORE = shutil.ignore_patterns(
    "*.so", "*.pyd", "_core_c.c", "*.html", "__pycache__", "*.egg-info", "build", "dist", ".venv"
)


def run(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{args}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


def test_pure_wheel_installs_and_passes_the_core_suite(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "MANIFEST.in"):
        shutil.copy(ROOT / name, source / name)
    for name in ("src", "csrc", "proto"):
        shutil.copytree(ROOT / name, source / name, ignore=IGNORE)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["CHUNKWIRE_NO_EXTENSIONS"] = "1"
    dist = tmp_path / "dist"
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(dist),
        str(source),
        env=env,
        cwd=tmp_path,
    )
    wheels = list(dist.glob("*.whl"))
    assert len(wheels) == 1 and wheels[0].name.endswith("-py3-none-any.whl"), wheels
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "chunkwire/_core_py.py" in names and "chunkwire/py.typed" in names
    assert not [n for n in names if n.endswith((".so", ".pyd", ".c"))], names

    venv = tmp_path / "fresh"
    run(sys.executable, "-m", "venv", str(venv), env=env)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    run(str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheels[0]), env=env)
    # The dependencies (grpcio, numpy, pytest...) come from this environment's
    # site-packages, added after the fresh venv's own: chunkwire itself is the
    # wheel's (a path added by a .pth line does not run that directory's own
    # .pth files, so this environment's editable install stays out).
    fresh_site = run(
        str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", env=env
    ).stdout.strip()
    Path(fresh_site, "_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    where = run(
        str(python),
        "-c",
        "import chunkwire, chunkwire._core as c; print(chunkwire.__file__, c.COMPILED)",
        env={k: v for k, v in env.items() if k != "CHUNKWIRE_NO_EXTENSIONS"},
        cwd=tmp_path,
    ).stdout.split()
    assert where[0].startswith(fresh_site) and where[1] == "False", where

    tests = tmp_path / "tests"
    shutil.copytree(ROOT / "tests" / "core", tests / "core", ignore=IGNORE)
    env["CHUNKWIRE_PURE_WHEEL"] = "1"
    result = run(
        str(python),
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(tmp_path),
        str(tests / "core"),
        env=env,
        cwd=tmp_path,
    )
    summary = result.stdout.strip().splitlines()[-1]
    print(summary)
    assert " passed" in summary and "failed" not in summary and "error" not in summary
