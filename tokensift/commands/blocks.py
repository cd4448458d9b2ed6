"""Registry of hardware blocks for ``tokensift generate`` and ``tokensift simulate``.

Each block has a glue module ``tokensift.commands.block_<name>`` exposing:

- ``HELP``: one line;
- ``add_generate_arguments(parser)`` and ``build(args) -> (component, toplevel, parameters)``;
- ``add_simulate_arguments(parser)`` and ``simulate(args) -> dict`` (runs Verilator, checks the
  quant/ reference bit for bit, returns at least ``cycles`` and ``bit_exact``).
"""

from __future__ import annotations

import importlib

__all__ = ["BLOCKS", "load"]

BLOCKS = ["attention", "selector", "requant", "score_combiner"]


def load(name: str):
    return importlib.import_module(f"tokensift.commands.block_{name}")


def available() -> dict:
    """Blocks whose glue module exists (a block that has not landed yet is left out of the CLI)."""
    found = {}
    for name in BLOCKS:
        try:
            found[name] = load(name)
        except ModuleNotFoundError as exc:
            if exc.name != f"tokensift.commands.block_{name}":
                raise
    return found
