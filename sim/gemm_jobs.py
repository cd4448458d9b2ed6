"""Jobs for the GEMM engine's testbenches: random ``IntLinear`` layers and inputs, their stream beats and the
reference outputs from :mod:`tokensift.quant.gemm` (shared by the Amaranth-simulator tests, the cocotb
scoreboard and the bench)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tokensift.hw.gemm.config import GemmConfig
from tokensift.hw.gemm.layout import encode_activations, encode_job, encode_weights
from tokensift.quant.fixed import OverflowCounter
from tokensift.quant.gemm import IntLinear

__all__ = ["GemmJob", "random_job", "edge_job", "KINDS"]

#: value distributions of a random job: ``random`` (uniform int8, moderate scales), ``extreme`` (every
#: operand -128, so each product is +16384), ``saturate`` (biases near the int32 limits and large scales,
#: so accumulators and outputs saturate), ``edges`` (outputs around the limits of the job's ``out_bits``
#: and of the engine's widest format, rounded from both sides: see :func:`edge_job`)
KINDS = ("random", "extreme", "saturate", "edges", "exact")


@dataclass
class GemmJob:
    layer: IntLinear
    x: np.ndarray
    expected: np.ndarray
    acc_overflows: int
    out_overflows: int
    out_bits: int

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def k(self) -> int:
        return int(self.x.shape[1])

    @property
    def m(self) -> int:
        return self.layer.out_features

    def job_beat(self) -> int:
        return encode_job(self.n, self.k, self.m, self.out_bits)

    def act_beats(self, cfg: GemmConfig) -> list[int]:
        return encode_activations(self.x, cfg)

    def weight_beats(self, cfg: GemmConfig) -> list[int]:
        L = self.layer
        return encode_weights(L.weight, L.bias, L.multipliers, L.shifts, cfg)

    def output_beats(self, cfg: GemmConfig) -> int:
        return -(-self.n // cfg.rows) * self.m


def random_job(rng: np.random.Generator, cfg: GemmConfig, n: int, k: int, m: int, kind: str = "random",
               out_bits: int | None = None) -> GemmJob:
    """A job of ``n`` tokens, ``k`` inputs and ``m`` outputs written as signed ``out_bits`` (the engine's
    widest format ``cfg.out.bits`` by default); its reference is ``IntLinear`` with that output format."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    out_bits = cfg.out.bits if out_bits is None else out_bits
    fmt = cfg.job_format(out_bits)
    if kind == "edges":
        x, w, bias, mult, shift = edge_job(rng, cfg, n, k, m, out_bits)
        return _job(cfg, x, w, bias, mult, shift, fmt)
    top = (1 << cfg.multiplier_bits) - 1
    acc_max = (1 << (cfg.acc_bits - 1)) - 1
    if kind == "extreme":
        x = np.full((n, k), -128, dtype=np.int64)
        w = np.full((m, k), -128, dtype=np.int64)
        bias = rng.integers(-1000, 1000, size=m)
        mult = rng.integers(1, top + 1, size=m)
        shift = rng.integers(20, 40, size=m)
    elif kind == "exact":
        # multiplier 1, shift 0, no bias: every output is the accumulator itself, so an error of one product
        # in one LSB shows (full-range operands where two products cannot leave int16, small ones elsewhere)
        span = 128 if k <= 2 else 8
        x = rng.integers(-span, span, size=(n, k))
        w = rng.integers(-span, span, size=(m, k))
        bias = np.zeros(m, dtype=np.int64)
        mult = np.ones(m, dtype=np.int64)
        shift = np.zeros(m, dtype=np.int64)
    elif kind == "saturate":
        x = rng.integers(-128, 128, size=(n, k))
        w = rng.integers(-128, 128, size=(m, k))
        bias = np.where(rng.random(m) < 0.5, acc_max - rng.integers(0, 1 << 12, size=m),
                        -acc_max - 1 + rng.integers(0, 1 << 12, size=m))
        mult = rng.integers(top // 2, top + 1, size=m)
        shift = rng.integers(0, 24, size=m)
    else:
        x = rng.integers(-128, 128, size=(n, k))
        w = rng.integers(-128, 128, size=(m, k))
        bias = rng.integers(-(1 << 20), 1 << 20, size=m)
        mult = rng.integers(1, top + 1, size=m)
        # scales that keep most outputs inside the format, some rounding to every side, a few shifts at 0/62
        shift = rng.integers(14, 30, size=m) + (out_bits > 8) * -6
        shift[rng.random(m) < 0.05] = 0
        shift[rng.random(m) < 0.05] = 62
    return _job(cfg, x, w, bias, mult, np.clip(shift, 0, 62), fmt)


def edge_job(rng: np.random.Generator, cfg: GemmConfig, n: int, k: int, m: int, out_bits: int):
    """``(x, weight, bias, multipliers, shifts)`` of a directed saturation corner: channel ``c`` computes
    ``(edge_c * 2**s_c + x[:, 0]) * 2**-s_c`` (weight 1 on input 0, the others 0; multiplier 1), its edge
    one of the limits of signed ``out_bits`` and of ``cfg.out`` and the values next to them, its shift
    ``s_c`` 0, 1 or 2, so the tokens' inputs ``x[:, 0]`` (a run of small values around 0) land just inside,
    on and just outside each limit, with rounding halves on both sides (``max + 1/2`` rounds out, ``min -
    1/2`` in when rounding half up)."""
    narrow, wide = cfg.job_format(out_bits), cfg.out
    edges = [narrow.max_int, narrow.min_int, narrow.max_int + 1, narrow.min_int - 1, wide.max_int, wide.min_int]
    acc_max = (1 << (cfg.acc_bits - 1)) - 1
    x = rng.integers(-128, 128, size=(n, k))
    x[:, 0] = np.clip(np.arange(n) - n // 2, -128, 127)
    w = np.zeros((m, k), dtype=np.int64)
    w[:, 0] = 1
    shift = np.array([c // len(edges) % 3 for c in range(m)], dtype=np.int64)
    bias = np.array([edges[c % len(edges)] << int(shift[c]) for c in range(m)], dtype=np.int64)
    return x, w, np.clip(bias, -acc_max - 1, acc_max), np.ones(m, dtype=np.int64), shift


def _job(cfg: GemmConfig, x, w, bias, mult, shift, fmt) -> GemmJob:
    m = w.shape[0]
    layer = IntLinear(weight=w, bias=bias.astype(np.int64), multipliers=mult.astype(np.int64),
                      shifts=shift.astype(np.int64), in_scale=1.0, weight_scale=np.ones(m),
                      out_scale=np.ones(m), acc_bits=cfg.acc_bits, out=fmt)
    counter = OverflowCounter()
    y = layer(x, counter=counter, site="gemm")
    return GemmJob(layer=layer, x=x, expected=y, acc_overflows=int(counter.by_site.get("gemm.acc", 0)),
                   out_overflows=int(counter.by_site.get("gemm.out", 0)), out_bits=fmt.bits)
