"""``tokensift bench [NAME ...]``: run the benchmarks in ``bench/`` (each prints its measured ratios)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tokensift.errors import TokensiftError


def bench_dir() -> Path:
    # benchmarks live beside the packages in a source checkout (editable install), not inside the wheel
    return Path(__file__).resolve().parents[2] / "bench"


def available() -> dict[str, Path]:
    folder = bench_dir()
    if not folder.is_dir():
        return {}
    return {p.stem.removeprefix("bench_"): p for p in sorted(folder.glob("bench_*.py"))}


def add_arguments(parser):
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--json", action="store_true", help="print one JSON object with each exit status")


def run(args) -> int:
    from tokensift.cli import emit_json

    found = available()
    if not found:
        raise TokensiftError(f"no benchmarks found in {bench_dir()}; run from a source checkout")
    if args.list:
        if args.json:
            emit_json({"benchmarks": sorted(found)})
        else:
            print("\n".join(sorted(found)))
        return 0
    unknown = [n for n in args.names if n not in found]
    if unknown:
        raise TokensiftError(f"unknown benchmark {unknown[0]!r}; known: {', '.join(sorted(found))}")
    status = {}
    for name in args.names or sorted(found):
        print(f"== bench {name} ==", file=sys.stderr)
        # benchmark output is human-readable tables; under --json it goes to stderr to keep stdout one object
        proc = subprocess.run([sys.executable, str(found[name])], stdout=2 if args.json else None)
        status[name] = proc.returncode
    if args.json:
        emit_json({"returncodes": status, "ok": all(c == 0 for c in status.values())})
    return 0 if all(c == 0 for c in status.values()) else 1
