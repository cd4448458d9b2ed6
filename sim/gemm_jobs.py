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

__all__ = ["GemmJob", "random_job", "KINDS"]

#: value distributions of a random job: ``random`` (uniform int8, moderate scales), ``extreme`` (every
#: operand -128, so each product is +16384), ``saturate`` (biases near the int32 limits and large scales,
#: so accumulators and outputs saturate)
KINDS = ("random", "extreme", "saturate")


@dataclass
class GemmJob:
    layer: IntLinear
    x: np.ndarray
    expected: np.ndarray
    acc_overflows: int
    out_overflows: int

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
        return encode_job(self.n, self.k, self.m)

    def act_beats(self, cfg: GemmConfig) -> list[int]:
        return encode_activations(self.x, cfg)

    def weight_beats(self, cfg: GemmConfig) -> list[int]:
        L = self.layer
        return encode_weights(L.weight, L.bias, L.multipliers, L.shifts, cfg)

    def output_beats(self, cfg: GemmConfig) -> int:
        return -(-self.n // cfg.rows) * self.m


def random_job(rng: np.random.Generator, cfg: GemmConfig, n: int, k: int, m: int, kind: str = "random") -> GemmJob:
    """A job of ``n`` tokens, ``k`` inputs and ``m`` outputs with the engine's output format."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    top = (1 << cfg.multiplier_bits) - 1
    acc_max = (1 << (cfg.acc_bits - 1)) - 1
    if kind == "extreme":
        x = np.full((n, k), -128, dtype=np.int64)
        w = np.full((m, k), -128, dtype=np.int64)
        bias = rng.integers(-1000, 1000, size=m)
        mult = rng.integers(1, top + 1, size=m)
        shift = rng.integers(20, 40, size=m)
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
        shift = rng.integers(14, 30, size=m) + (cfg.out.bits > 8) * -6
        shift[rng.random(m) < 0.05] = 0
        shift[rng.random(m) < 0.05] = 62
    layer = IntLinear(weight=w, bias=bias.astype(np.int64), multipliers=mult.astype(np.int64),
                      shifts=np.clip(shift, 0, 62).astype(np.int64), in_scale=1.0, weight_scale=np.ones(m),
                      out_scale=np.ones(m), acc_bits=cfg.acc_bits, out=cfg.out)
    counter = OverflowCounter()
    y = layer(x, counter=counter, site="gemm")
    return GemmJob(layer=layer, x=x, expected=y, acc_overflows=int(counter.by_site.get("gemm.acc", 0)),
                   out_overflows=int(counter.by_site.get("gemm.out", 0)))
