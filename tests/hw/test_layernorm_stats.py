# amaranth: UnusedElaboratable=no
"""The LayerNorm statistics pipeline alone: (S1, S2) of random and directed rows -> C f, H and the shift of
quant.layernorm's steps 1-4, one token per cycle."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from tokensift.hw.vector.layernorm_layout import LayerNormConfig
from tokensift.hw.vector.layernorm_stats import StatsPipe
from tokensift.quant.layernorm import bit_length, isqrt


def reference(cfg, q, eps):
    """``(C f, S1 f 2**L - half, s)`` from the reference's own integer steps."""
    dim = len(q)
    d = dim * q - q.sum()
    v = int((d * d).sum()) + eps
    k = (62 - int(bit_length([v])[0])) >> 1
    r = int(isqrt([v << (2 * k)])[0])
    big_r, frac = cfg.recip_bits - 1, cfg.norm_bits - 1
    f = (1 << (31 + big_r)) // r
    shift = 31 + big_r - frac - k
    pre = cfg.left_pre_shift
    half = (1 << (shift + pre - 1)) if shift >= 1 else 0
    return dim * f, (int(q.sum()) * f << pre) - half, shift + pre


def groups(cfg, rng):
    """Jobs of one ``dim`` and ``eps`` each: directed rows (all equal, extremes, alternating, one channel)
    and random rows of random magnitude; epsilon from 1 to the largest the header carries."""
    lo, hi = -(1 << (cfg.in_bits - 1)), (1 << (cfg.in_bits - 1)) - 1
    out = []
    for dim in sorted({1, 2, 3, cfg.c_max, int(rng.integers(1, cfg.c_max + 1))}):
        directed = [np.full(dim, lo), np.full(dim, hi), np.full(dim, 5), np.where(np.arange(dim) % 2, hi, lo),
                    np.eye(1, dim, 0, dtype=np.int64)[0] * lo]
        rand = [rng.integers(max(lo, -m), m + 1, size=dim) for m in rng.choice([1, 3, hi], size=6)]
        for eps in (1, (1 << cfg.eps_bits) - 1, int(rng.integers(1, 1 << min(cfg.eps_bits, 20)))):
            out.append((dim, eps, directed + rand))
    return out


@pytest.mark.parametrize("cfg", [LayerNormConfig(c_max=64, lanes=4), LayerNormConfig(c_max=300, in_bits=12),
                                 LayerNormConfig(c_max=5, recip_bits=4, norm_bits=16, gamma_bits=8, acc_bits=24),
                                 LayerNormConfig(c_max=4096, in_bits=10, eps_bits=8)],
                         ids=["c64", "c300-in12", "short-recip", "c4096"])
def test_stats_pipeline_matches_reference(cfg):
    """A new token every cycle within a job: each result arrives exactly ``latency`` cycles after its token,
    equal to the reference's steps."""
    dut = StatsPipe(cfg)
    assert dut.latency == cfg.stats_latency
    jobs = groups(cfg, np.random.default_rng(cfg.c_max))
    got, expected = [], []

    async def tb(ctx):
        cycle = 0
        for dim, eps, tokens in jobs:
            ctx.set(dut.dim, dim)
            ctx.set(dut.eps, eps)
            for t in range(len(tokens) + dut.latency):  # the job's constants held until its last result
                if t < len(tokens):
                    q = tokens[t]
                    ctx.set(dut.i_s1, int(q.sum()))
                    ctx.set(dut.i_s2, int((q * q).sum()))
                    expected.append((cycle + dut.latency, *reference(cfg, q, eps)))
                ctx.set(dut.i_valid, t < len(tokens))
                await ctx.delay(1e-9)
                if ctx.get(dut.o_valid):
                    got.append((cycle, ctx.get(dut.o_cf), ctx.get(dut.o_h), ctx.get(dut.o_shift)))
                await ctx.tick()
                cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert len(expected) > 100 and got == expected


def test_wrong_config():
    with pytest.raises(TypeError, match=r"^config must be a LayerNormConfig, not int$"):
        StatsPipe(3)
