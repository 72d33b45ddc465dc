"""The README's commands run as written from a fresh clone, without an activated venv.

The clone is a temporary directory holding the README and examples/, with
``.venv`` linked to the environment running these tests (the README's
first commands create that venv; .ci/run runs them). Every shell command in
the README must name a program that exists there: ``.venv/bin/...``, a
repository script, or a system tool on PATH; never a bare ``chunkwire``,
``python`` or ``pip`` that only an activated venv would find. Blocks that
start a plugin and a gateway are run for real, servers in the background,
with two substitutions so that parallel runs on one machine do not collide:
port 8080 becomes a free port and ``/tmp/`` the test's own directory.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_stack import ROOT

pytestmark = pytest.mark.timeout(180)

README = ROOT / "README.md"
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>\w*)\s*$")
# Only an activated virtualenv (or a global install) puts these on PATH.
VENV_ONLY = {"chunkwire", "python", "pip", "pytest", "uvicorn", "ruff"}


def blocks(lang: str) -> list[str]:
    found: list[str] = []
    lines = README.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m and m["lang"] == lang:
            indent = len(m["indent"])
            body = []
            i += 1
            while not FENCE.match(lines[i]):
                body.append(lines[i][indent:])
                i += 1
            found.append("\n".join(body) + "\n")
        elif m:  # another block: skip to its end
            i += 1
            while not FENCE.match(lines[i]):
                i += 1
        i += 1
    return found


def commands(block: str) -> list[str]:
    """One string per command line: continuations joined, comments dropped."""
    joined = block.replace("\\\n", " ")
    return [
        line.strip()
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def programs(command: str) -> list[str]:
    """The program of each simple command in a line (after env assignments)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    found: list[str] = []
    expect_program = True
    for token in lexer:
        if token in ("|", "||", "&&", ";", "&"):
            expect_program = True
        elif expect_program:
            if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", token):
                continue  # VAR=value before the program
            found.append(token)
            expect_program = False
    return found


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(README, repo / "README.md")
    shutil.copytree(ROOT / "examples", repo / "examples")
    os.symlink(sys.prefix, repo / ".venv")
    return repo


def test_every_shell_command_names_a_program_that_exists(clone: Path) -> None:
    found = 0
    for block in blocks("sh"):
        for command in commands(block):
            for program in programs(command):
                found += 1
                assert program not in VENV_ONLY, f"{command!r}: use .venv/bin/{program}"
                if "/" in program:
                    assert (clone / program).exists() or (ROOT / program).exists(), command
                else:
                    assert shutil.which(program), f"{command!r}: {program} is not installed"
    assert found > 10


def test_readme_example_files_are_the_ones_in_examples() -> None:
    named = 0
    for block in blocks("python"):
        first = block.splitlines()[0]
        m = re.fullmatch(r"# (\w+\.py)", first)
        if m and (ROOT / "examples" / m[1]).exists():
            named += 1
            assert (ROOT / "examples" / m[1]).read_text() == block, m[1]
    assert named >= 1


def _server(command: str) -> bool:
    words = shlex.split(command)
    return (
        len(words) > 1
        and words[0].endswith("bin/chunkwire")
        and words[1] in ("plugin", "gateway")
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, command: str) -> None:
    deadline = time.monotonic() + 60
    while "listening on" not in log.read_text(errors="replace"):
        if proc.poll() is not None:
            raise AssertionError(f"{command!r} exited: {log.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{command!r} did not start")
        time.sleep(0.05)


def _run_block(block: str, clone: Path, tmp: Path, port: str) -> list[tuple[str, str]]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    servers: list[subprocess.Popen[bytes]] = []
    outputs: list[tuple[str, str]] = []
    try:
        for n, written in enumerate(commands(block)):
            command = written.replace("8080", port).replace("/tmp/", f"{tmp}/")
            if _server(command):
                log = tmp / f"server{n}.log"
                with open(log, "wb") as out:
                    servers.append(
                        subprocess.Popen(
                            command,
                            shell=True,
                            cwd=clone,
                            env=env,
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
                _wait_ready(servers[-1], log, written)
            else:
                result = subprocess.run(
                    command,
                    shell=True,
                    cwd=clone,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    executable="/bin/bash",
                )
                assert result.returncode == 0, (written, result.stderr)
                outputs.append((written, result.stdout))
    finally:
        for server in reversed(servers):
            os.killpg(server.pid, signal.SIGINT)
        for server in servers:
            server.wait(20)
    return outputs


def _server_blocks() -> list[str]:
    return [b for b in blocks("sh") if any(_server(c) for c in commands(b))]


@pytest.mark.parametrize("index", range(len(_server_blocks())))
def test_blocks_that_start_servers_run_as_written(clone: Path, tmp_path: Path, index: int) -> None:
    block = _server_blocks()[index]
    port = str(_free_port())
    outputs = _run_block(block, clone, tmp_path, port)
    for written, stdout in outputs:
        if "/plugins/files/upload" in written:
            assert stdout == f"{50 << 20}\n"  # curl -T is a PUT: the plugin counted every byte
        if "/plugins/files/ticks/3" in written:
            assert stdout == "tick 0\ntick 1\ntick 2\n"
        if "/plugins/fastapi/hello/world" in written:
            link = f"http://127.0.0.1:{port}/plugins/fastapi/hello/world"
            assert json.loads(stdout) == {"hello": "world", "link": link}
        if "/plugins/fastapi/upload" in written:
            assert json.loads(stdout) == {"bytes": 20 << 20}


def test_the_examples_are_among_the_blocks_run() -> None:
    for spec in ("files_plugin:plugin", "fastapi_app:app"):
        assert any(spec in b and "curl" in b for b in _server_blocks()), spec
