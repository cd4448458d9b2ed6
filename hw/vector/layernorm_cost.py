"""Cycles of the LayerNorm unit (:mod:`tokensift.hw.vector.layernorm`), exact against the simulators.

A job of ``N`` tokens of ``C`` channels, ``B = ceil(C / lanes)`` beats per token, with the producers always
valid and the consumer always ready:

* the header (1 cycle), its check (1), the constants (``B``);
* the tokens at one beat per cycle (``N B``): the row buffer holds every beat that arrives while a token's
  statistics are computed, so the input never waits, for every ``C`` from 1 to ``c_max``; the unit's
  throughput is ``B`` cycles per token;
* after the last beat: the accumulation registers (:func:`~tokensift.hw.vector.layernorm.acc_stages`), the
  statistics pipeline (:attr:`~tokensift.hw.vector.layernorm_layout.LayerNormConfig.stats_latency`), the last
  token's ``B`` beats, the normalising datapath
  (:func:`~tokensift.hw.vector.layernorm.out_stages`) and the two FIFOs
  (:data:`~tokensift.hw.vector.layernorm.FIFO_CYCLES`).

:func:`cycles` counts from the header's transfer to the transfer of the job's last output beat; the next
job's header is taken in that same cycle, so back-to-back jobs take the sum of their :func:`cycles`.

>>> from tokensift.hw.vector.layernorm_layout import LayerNormConfig
>>> cfg = LayerNormConfig(c_max=384, lanes=16)
>>> cycles(cfg, dim=384, n_tokens=197), tokens_per_cycle(cfg, dim=384)
(4870, 0.041666666666666664)
"""

from __future__ import annotations

from tokensift.checks import check_int
from tokensift.hw.vector.layernorm import FIFO_CYCLES, acc_stages, out_stages
from tokensift.hw.vector.layernorm_layout import FIELD_BITS, LayerNormConfig

__all__ = ["cycles", "cycles_per_token", "tokens_per_cycle", "latency"]


def _check(cfg, dim) -> tuple[LayerNormConfig, int]:
    if not isinstance(cfg, LayerNormConfig):
        raise TypeError(f"config must be a LayerNormConfig, not {type(cfg).__name__}")
    return cfg, check_int("dim", dim, low=1, high=cfg.c_max, numpy=False)


def cycles_per_token(cfg: LayerNormConfig, dim: int) -> int:
    """Steady-state cycles per token: one beat per cycle, ``ceil(dim / lanes)``."""
    cfg, dim = _check(cfg, dim)
    return cfg.beats(dim)


def tokens_per_cycle(cfg: LayerNormConfig, dim: int) -> float:
    return 1 / cycles_per_token(cfg, dim)


def latency(cfg: LayerNormConfig, dim: int) -> int:
    """Cycles from a token's last input beat to its last output beat (the pipeline, not the stream)."""
    cfg, dim = _check(cfg, dim)
    return acc_stages(cfg.lanes) + cfg.stats_latency + cfg.beats(dim) + out_stages(cfg) + FIFO_CYCLES


def cycles(cfg: LayerNormConfig, dim: int, n_tokens: int) -> int:
    """Cycles of one job, header to last output beat (module docstring)."""
    cfg, dim = _check(cfg, dim)
    n = check_int("n_tokens", n_tokens, low=1, high=(1 << FIELD_BITS) - 1, numpy=False)
    nb = cfg.beats(dim)
    return 2 + nb + n * nb + latency(cfg, dim)
