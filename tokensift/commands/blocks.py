"""Registry of hardware blocks for ``tokensift generate`` and ``tokensift simulate``.

Each block has a glue module ``tokensift.commands.block_<name>`` exposing:

- ``HELP``: one line;
- ``add_generate_arguments(parser)`` and ``build(args) -> (component, toplevel, parameters)``;
- ``add_simulate_arguments(parser)`` and ``simulate(args) -> dict`` (runs Verilator, checks the
  quant/ reference bit for bit, returns at least ``cycles`` and ``bit_exact``). ``simulate`` checks its
  run-time settings with :func:`check_tokens`, :func:`check_count` and :func:`check_stall` before it builds
  anything, so a bad one is a one-line error and never a Verilator build that ends in a failed test.
"""

from __future__ import annotations

import importlib

from tokensift.errors import InvalidArgumentError

__all__ = ["BLOCKS", "load", "available", "check_tokens", "check_count", "check_stall"]

BLOCKS = ["attention", "selector", "requant", "score_combiner", "gemm", "layernorm", "gelu", "residual",
          "token_mean", "axi_lite", "axi_reader", "axi_writer", "accelerator", "model"]


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


def check_tokens(tokens: int | None, n_max: int, *, option: str = "--tokens", limit: str = "--n-max") -> int:
    """The run-time count of a simulated frame (``n_max`` when not given): one rule for every block,
    between 1 and the build-time maximum."""
    n = n_max if tokens is None else tokens
    if not 1 <= n <= n_max:
        raise InvalidArgumentError(f"{option} must be between 1 and {limit} {n_max}, not {n}")
    return n


def check_count(option: str, value: int) -> int:
    """A positive count of a simulate option (values, frames, heads)."""
    if value < 1:
        raise InvalidArgumentError(f"{option} must be at least 1, not {value}")
    return value


def check_stall(value: float, option: str = "--stall") -> float:
    """A per-cycle stall probability in [0, 1): at 1 the stream would never move."""
    from tokensift.checks import check_probability

    try:
        return check_probability(option, value)
    except ValueError as exc:
        raise InvalidArgumentError(str(exc)) from None
