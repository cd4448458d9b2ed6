"""``tokensift bench [NAME ...]``: run the scripts in ``bench/`` that measure the README's numbers.

``bench/bench_<name>.py`` are the benchmarks (minutes; all of them run without a NAME); the other scripts
(``sw_results``, ``sw_methods_results``, ``quant_accuracy``, ...) regenerate recorded results and take up
to an hour, so they run by name, with their own options after ``--script-args``:

    tokensift bench attention selector
    tokensift bench sw_results --script-args=--quick
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from tokensift.errors import TokensiftError


def bench_dir() -> Path:
    # benchmarks live beside the packages in a source checkout (editable install), not inside the wheel
    return Path(__file__).resolve().parents[2] / "bench"


def available() -> dict[str, Path]:
    """Every script of ``bench/`` by name: ``bench_attention.py`` is ``attention``, ``sw_results.py`` is
    ``sw_results``."""
    folder = bench_dir()
    if not folder.is_dir():
        return {}
    return {p.stem.removeprefix("bench_"): p for p in sorted(folder.glob("*.py")) if not p.stem.startswith("_")}


def default_names(found: dict[str, Path]) -> list[str]:
    """What runs without a NAME: the ``bench_*`` benchmarks (the results scripts take up to an hour)."""
    return [name for name, path in sorted(found.items()) if path.stem.startswith("bench_")]


def add_arguments(parser):
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="scripts to run (default: every bench_* benchmark; --list shows all)")
    parser.add_argument("--script-args", default="",
                        help="options passed to each script, e.g. --script-args=--quick (default: none)")
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
    try:
        extra = shlex.split(args.script_args)
    except ValueError as exc:
        raise TokensiftError(f"--script-args {args.script_args!r} cannot be split into options: {exc}") from None
    status = {}
    for name in args.names or default_names(found):
        print(f"== bench {name} ==", file=sys.stderr)
        # benchmark output is human-readable tables; under --json it goes to stderr to keep stdout one object
        proc = subprocess.run([sys.executable, str(found[name]), *extra], stdout=2 if args.json else None)
        status[name] = proc.returncode
    if args.json:
        emit_json({"returncodes": status, "ok": all(c == 0 for c in status.values())})
    return 0 if all(c == 0 for c in status.values()) else 1
