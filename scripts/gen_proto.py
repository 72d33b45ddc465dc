"""Regenerate src/chunkwire/_proto from proto/ (the one way to do it).

    python scripts/gen_proto.py           # write the generated modules
    python scripts/gen_proto.py --check   # exit 1 if the committed ones are stale
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT = ROOT / "src" / "chunkwire" / "_proto"
PROTOS = [
    "chunkwire/v1/http.proto",
    "chunkwire/v1/plugin.proto",
    "chunkwire/v1/websocket.proto",
    "chunkwire/v1/events.proto",
]


def generate(dest: Path) -> dict[str, str]:
    from grpc_tools import protoc

    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={dest}",
        f"--pyi_out={dest}",
        f"--grpc_python_out={dest}",
        *(str(PROTO_ROOT / p) for p in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    files: dict[str, str] = {}
    for path in sorted((dest / "chunkwire" / "v1").iterdir()):
        text = path.read_text()
        # Generated modules import each other as top-level packages; make the
        # import relative to chunkwire._proto.
        text = re.sub(
            r"^from chunkwire\.v1 import (\w+) as",
            r"from chunkwire._proto import \1 as",
            text,
            flags=re.M,
        )
        files[path.name] = text
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = generate(Path(tmp))
    if ns.check:
        stale = [
            name
            for name, text in files.items()
            if not (OUT / name).exists() or (OUT / name).read_text() != text
        ]
        if stale:
            print("stale generated code: " + ", ".join(stale), file=sys.stderr)
            return 1
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (OUT / name).write_text(text)
    if not (OUT / "__init__.py").exists():
        (OUT / "__init__.py").write_text('"""Generated protobuf and gRPC modules."""\n')
    return 0


if __name__ == "__main__":
    sys.exit(main())
