"""``chunkwire bench``: end-to-end numbers against direct uvicorn."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", default="1g")


def run_bench(ns: argparse.Namespace) -> int:
    raise SystemExit("not yet")
