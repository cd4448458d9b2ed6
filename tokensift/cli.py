"""The ``tokensift`` command line: one subcommand per module in :mod:`tokensift.commands`.

Every subcommand with ``--json`` prints exactly one JSON object on stdout; logs and progress go to stderr.
Errors follow the one rule of :mod:`tokensift.errors`, applied here and nowhere else: a user error is one
line and exit code 2 (one JSON object too with ``--json``), a bug is one line that says so and exit code 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback

from tokensift import __version__
from tokensift.errors import BUG_REPORTS, DEBUG_ENV, describe_user_error, is_user_error

__all__ = ["COMMANDS", "HelpFormatter", "build_parser", "emit_json", "main", "takes_value"]

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
    "compile": ("compile", "compile a trained checkpoint into the accelerator's memory image and registers"),
    "bench": ("bench", "run the benchmarks in bench/"),
    "demo": ("demo", "the end-to-end demo on the bundled MNIST data"),
}


class HelpFormatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` to an option's help when the text does not state its default already.

    Options whose default is ``None`` say in words what happens without them (``default: --n-max``);
    ``tests/tokensift/test_bad_input.py`` checks that every option has help and states its default.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or not takes_value(action) or action.default in (None, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def takes_value(action: argparse.Action) -> bool:
    """An option that reads a value (not a flag, not --help/--version, not a positional)."""
    return bool(action.option_strings) and action.nargs != 0


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error rule: one line (no usage block), exit 2, the JSON object with --json."""

    json_requested = False  # set by main() from the command line, before parsing

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        _report(self.prog, message, "ArgumentError", json_requested=_Parser.json_requested)
        self.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tokensift",
        description="FPGA hardware-software co-design for token-pruning vision transformers.",
        epilog=f"Errors: a user error is one line and exit code 2; anything else is a bug in tokensift "
               f"(exit code 1; report it to {BUG_REPORTS}); --debug or {DEBUG_ENV}=1 prints its traceback.",
    )
    parser.add_argument("--version", action="version", version=f"tokensift {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help=f"print the traceback of an unexpected error (also {DEBUG_ENV}=1; default: off)")
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


def _report(prog: str, message: str, kind: str, *, json_requested: bool) -> None:
    if json_requested:
        emit_json({"error": message, "type": kind})
    print(f"{prog}: error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    json_requested = _Parser.json_requested = "--json" in argv
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    prog = "tokensift"
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version (0) or an argument error already reported (2)
            return exc.code if isinstance(exc.code, int) else 0
        prog = f"tokensift {args.command}"
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the one place where errors become exit codes
        if is_user_error(exc):
            _report(prog, describe_user_error(exc), type(exc).__name__, json_requested=json_requested)
            if debug:
                traceback.print_exc()
            return 2
        message = (f"this is a bug in tokensift {__version__} ({type(exc).__name__}: "
                   f"{describe_user_error(exc)}); please report it to {BUG_REPORTS} with the command line "
                   f"and the traceback that {DEBUG_ENV}=1 prints")
        _report(prog, message, type(exc).__name__, json_requested=json_requested)
        if debug:
            traceback.print_exc()
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
