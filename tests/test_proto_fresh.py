"""The committed generated protobuf modules match proto/ (regenerate with scripts/gen_proto.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_proto_is_fresh() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, (
        "generated code in src/chunkwire/_proto is stale; run "
        f"`python scripts/gen_proto.py`\n{proc.stdout}{proc.stderr}"
    )
