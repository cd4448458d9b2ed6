"""The ``tokensift`` command line: one subcommand per module in :mod:`tokensift.commands`.

Every subcommand with ``--json`` prints exactly one JSON object on stdout; logs and progress go to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from tokensift import __version__
from tokensift.errors import TokensiftError

__all__ = ["COMMANDS", "build_parser", "main"]

#: subcommand name -> (module in tokensift.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("doctor", "check the toolchain (Python packages, Verilator, Yosys) and print versions"),
    "flops": ("flops", "count the FLOPs (MACs) of a model under a token-pruning schedule"),
    "generate": ("generate", "emit Verilog and a JSON manifest for a hardware block"),
    "simulate": ("simulate", "run a hardware block cycle-accurately in Verilator against the quant/ reference"),
    "synth": ("synth", "synthesize a hardware block with Yosys; with --pnr place and route it (Fmax, critical path)"),
    "estimate": ("estimate", "estimate resources and latency of a block or a whole model on a device"),
    "co-opt": ("coopt", "co-optimize hardware parameters and keep ratios for a device budget"),
    "train": ("train", "train a dense or token-pruned ViT"),
    "bench": ("bench", "run the benchmarks in bench/"),
    "demo": ("demo", "the end-to-end demo on the bundled MNIST data"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokensift",
        description="FPGA hardware-software co-design for token-pruning vision transformers.",
    )
    parser.add_argument("--version", action="version", version=f"tokensift {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"tokensift.commands.{module_name}")
        sp = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sp)
        sp.set_defaults(_run=module.run)
    return parser


def emit_json(obj: object) -> None:
    """Print one JSON object on stdout (the ``--json`` contract)."""
    sys.stdout.write(json.dumps(obj, indent=None, sort_keys=False, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(obj: object) -> object:
    # numpy scalars and arrays show up in results; convert them without importing numpy eagerly
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (TokensiftError, ValueError, TypeError) as exc:
        # errors a user can hit (bad parameters, missing tools): one sentence, no traceback
        if getattr(args, "json", False):
            emit_json({"error": str(exc), "type": type(exc).__name__})
        print(f"tokensift {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
