"""The ``chunkwire`` command."""

from __future__ import annotations

import argparse
import sys


def _demo(_: argparse.Namespace) -> int:
    from . import _core

    chunker = _core.Chunker(chunk_size=16)
    for word in (b"chunkwire ", b"cuts ", b"any ", b"stream ", b"into ", b"bounded ", b"chunks"):
        chunker.write(word)
    chunker.flush()
    impl = "compiled" if _core.COMPILED else "pure-Python"
    print(f"core: {impl}")
    while (item := chunker.pop(final=True)) is not None:
        chunk, at_flush = item
        frame = _core.encode_response_frame(chunk, flush=at_flush)
        print(f"  chunk {chunk!r:24} flush={at_flush!s:5} frame={len(frame)} bytes")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chunkwire", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="show the core at work")
    demo.set_defaults(func=_demo)
    ns = parser.parse_args(argv)
    return ns.func(ns)


if __name__ == "__main__":
    sys.exit(main())
