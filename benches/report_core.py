"""Run the core benchmarks and print their ratios.

    python benches/report_core.py                      # run bench_core.py, print the table
    python benches/report_core.py -- -k small_writes   # extra pytest arguments after --
    python benches/report_core.py --from-json FILE     # only print, from an earlier run

Times are medians over rounds. Ratios compare rows of one case measured in
the same run: ``x c`` is how many times longer than the compiled core a row
took (above 1: slower than c). The ``vs memcpy`` and ``vs floor`` columns
put the compiled core next to the limit: one plain copy of the same bytes,
or the cheapest call there is.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "bench-results" / "core.json"


def run_benchmarks(json_path: Path, extra: list[str]) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if importlib.util.find_spec("chunkwire") is None:
        src = str(ROOT / "src")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(ROOT / "benches" / "bench_core.py"),
        "-q",
        "-p",
        "no:cacheprovider",
        f"--benchmark-json={json_path}",
        "--benchmark-columns=median,rounds",
        *extra,
    ]
    print("$", " ".join(command), file=sys.stderr)
    proc = subprocess.run(command, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"benchmarks failed (exit {proc.returncode})")


def human_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def load(json_path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """{case: {impl: {"median": s, "bytes": n, "ops": n}}}"""
    data = json.loads(json_path.read_text())
    cases: dict[str, dict[str, dict[str, Any]]] = {}
    for bench in data["benchmarks"]:
        case = bench["name"].split("[")[0].removeprefix("test_")
        impl = bench["params"]["impl"]
        cases.setdefault(case, {})[impl] = {
            "median": bench["stats"]["median"],
            **bench.get("extra_info", {}),
        }
    return cases


def table(rows: list[list[str]], left: int = 1) -> str:
    """Columns padded to their widest cell; the first ``left`` are left-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.ljust(w) if i < left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(cases: dict[str, dict[str, dict[str, Any]]]) -> str:
    rows = [["case", "impl", "median/round", "per op", "MB/s", "x c"]]
    for case, impls in cases.items():
        base = impls.get("c", {}).get("median")
        for impl, result in impls.items():
            median = result["median"]
            ops, size = result.get("ops"), result.get("bytes")
            rows.append(
                [
                    case,
                    impl,
                    human_time(median),
                    human_time(median / ops) if ops else "",
                    f"{size / median / 1e6:,.0f}" if size else "",
                    f"{median / base:.2f}" if base else "",
                ]
            )
    summary = [["case", "c vs py", "c vs plain", "c vs memcpy", "c vs floor"]]
    for case, impls in cases.items():
        c = impls.get("c", {}).get("median")
        if not c:
            continue

        def ratio(other: str, inverse: bool = False, impls: dict = impls, c: float = c) -> str:
            if other not in impls:
                return ""
            value = c / impls[other]["median"] if inverse else impls[other]["median"] / c
            return f"{value:.2f}x"

        plain = "plain" if "plain" in impls else "protobuf"
        floor = "c-noop-call" if "c-noop-call" in impls else "builtin-call"
        summary.append(
            [
                case,
                ratio("py"),
                ratio(plain),
                ratio("memcpy", inverse=True),
                ratio(floor, inverse=True),
            ]
        )
    notes = (
        "c vs py / c vs plain: how many times faster c is (plain = protobuf for frames).\n"
        "c vs memcpy / c vs floor: c's time as a multiple of one memmove of the same bytes\n"
        "(c copies each byte twice: 2x is at the limit) or of the cheapest call, a Cython\n"
        "method returning at once (1.00x = at the limit)."
    )
    return f"{table(rows, left=2)}\n\n{table(summary)}\n\n{notes}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where the run's JSON goes")
    parser.add_argument("--from-json", type=Path, help="print from this file, do not run")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    ns = parser.parse_args()
    json_path = ns.from_json or ns.json
    if ns.from_json is None:
        run_benchmarks(json_path, ns.pytest_args)
    print(report(load(json_path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
