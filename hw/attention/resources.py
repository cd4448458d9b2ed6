"""Cost of the attention accelerator (:class:`tokensift.hw.attention.core.Attention`): resources next to its
generator. Cycles are the block's own closed form, :func:`tokensift.hw.attention.cycles.cycles`.

Per core (``heads_parallel`` copies of :class:`tokensift.hw.attention.engine.AttentionEngine`):

* DSP: the MAC array's ``lanes`` multipliers (``max(data_bits, prob_frac + 2) x data_bits``), the
  exponent unit's run-time scale product (``(score_bits + 1) x scale_mult_bits``) and the output
  requantizer's (``pv_bits x out_mult_bits``), each split into partial products of at most 18 signed
  bits on the wide side (:func:`tokensift.hw.attention.scaling.partial_products`), the two polynomial
  multipliers of the ``exp2_poly`` softmax and the probability normalizer
  (``(exp_frac + 1) x (prob_frac + 2)``); a constant power of two is a shift (the header's bookkeeping
  products are shift-and-add logic, :func:`tokensift.hw.common.mac_array.mul_const`). The run-time
  constants' widths come from the core's :class:`tokensift.hw.attention.constants.ConstantRanges`
  (default: :meth:`ConstantRanges.covering` of the parameters).
* Memories (:func:`tokensift.hw.common.resources.map_memory`): Q and K/V row buffers, the two-bank score and
  exponential buffers, the ``exp2`` table (a ROM, ``exp2_lut``), the output and class-attention FIFOs
  (:class:`amaranth.lib.fifo.SyncFIFOBuffered`: a memory one entry shallower, read synchronously with an
  enable).
* LUT / FF: the fitted linear model over :func:`features`.

>>> p = AttentionParams(n_max=100, head_dim=48, lanes=12)
>>> r = exact(p, "xcup")
>>> r.dsp >= 12
True
"""

from __future__ import annotations

import functools
from dataclasses import asdict

from amaranth.utils import ceil_log2

from tokensift.hw.attention.constants import ConstantRanges
from tokensift.hw.attention.scaling import partial_products
from tokensift.hw.common.resources import (
    Resources,
    check_family,
    const_operand_bits,
    fitted,
    map_memory,
    multiplier_dsps,
)
from tokensift.quant.attention import AttentionParams
from tokensift.quant.softmax import SoftmaxParams, SoftmaxVariant

__all__ = ["BLOCK", "AttentionParams", "memories", "multipliers", "features", "exact", "resources", "build",
           "params_to_dict", "params_from_dict", "baseline_grid", "QUICK_CONFIGS"]

BLOCK = "attention"


def _check(params) -> AttentionParams:
    if not isinstance(params, AttentionParams):
        raise TypeError(f"params must be an AttentionParams, not {type(params).__name__}")
    return params


def _pow2(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


@functools.lru_cache(maxsize=256)
def _out_fifo_depth(p: AttentionParams) -> int:
    """The engine's own output FIFO depth (read from an engine object that is never elaborated; once per
    parameter set: a sizing asks for hundreds of shapes)."""
    from tokensift.hw.attention.engine import AttentionEngine

    engine = AttentionEngine(p)
    depth = engine.out_fifo_depth
    # the engine and its units are only asked a question: tell Amaranth they are not meant to be used
    for obj in (engine, engine.mac, engine.softmax, engine.softmax._exp, engine.softmax._recip):
        obj._MustUse__silence = True
    return depth


def memories(params: AttentionParams, family: str) -> dict:
    """One core's memories as :class:`~tokensift.hw.common.resources.MemoryMap` s, by name."""
    from tokensift.hw.attention.layout import output_layout, score_layout

    p = _check(params)
    sm = p.softmax
    row = p.lanes * p.data_bits
    mems = {
        "q": map_memory(row, p.n_max * p.chunks, family=family),
        "kv": map_memory(row, 2 * p.n_max * p.chunks, family=family),
        "scores": map_memory(p.score_bits, 2 * p.n_max, family=family),
        "exps": map_memory(sm.exp_frac + 1, 2 * p.n_max, family=family),
    }
    if sm.variant is SoftmaxVariant.EXP2_LUT:
        mems["exp2_table"] = map_memory(sm.exp_frac + 2, 1 << sm.log2_frac, family=family, rom=True)
    for name, width, depth in (("out_fifo", output_layout(p).size, _out_fifo_depth(p)),
                               ("class_fifo", score_layout(p).size, p.n_max)):
        if depth >= 2:
            mems[name] = map_memory(width, depth - 1, family=family)
    return mems


def _ranges(params: AttentionParams, ranges) -> ConstantRanges:
    if ranges is None:
        return ConstantRanges.covering(params)
    if not isinstance(ranges, ConstantRanges):
        raise TypeError(f"ranges must be a ConstantRanges, not {type(ranges).__name__}")
    return ranges


def multipliers(params: AttentionParams, ranges: ConstantRanges | None = None
                ) -> list[tuple[str, int, int, bool, int | None]]:
    """One core's multipliers ``(name, a_bits, b_bits, signed, product_bits)``; constant powers of two
    (shifts) are left out."""
    p = _check(params)
    r = _ranges(p, ranges)
    sm: SoftmaxParams = p.softmax
    a_bits = max(p.data_bits, sm.prob_frac + 2)
    out = [(f"mac{lane}", a_bits, p.data_bits, True, None) for lane in range(p.lanes)]
    out += [(f"exp_scale{i}", a, b, True, None)
            for i, (a, b) in enumerate(partial_products(p.score_bits + 1, r.scale_mult_bits))]
    if sm.variant is SoftmaxVariant.EXP2_POLY:
        a, b = sm.poly_coefficients
        f = sm.log2_frac
        if not _pow2(b):
            out.append(("exp_poly_b", f, const_operand_bits(b, signed=False), False, None))
        # a + round_shift(fr * b, f): the rounding adds a bit and the shift keeps the width in the RTL
        out.append(("exp_poly_x", f, max(a.bit_length(), b.bit_length() + f + 1) + 1, False, f + sm.exp_frac + 2))
    out.append(("normalize", sm.exp_frac + 1, sm.prob_frac + 2, False, None))
    out += [(f"requant{i}", a, b, True, None) for i, (a, b) in enumerate(partial_products(p.pv_bits, r.out_mult_bits))]
    return out


def _engine_dsps(p: AttentionParams, family: str, ranges) -> int:
    return sum(multiplier_dsps(a, b, family=family, signed=s, y_bits=y)
               for _, a, b, s, y in multipliers(p, ranges))


def features(params: AttentionParams, family: str) -> dict[str, float]:
    """Structural sizes of the attention RTL the LUT/FF fit is linear in (all per core, times
    ``heads_parallel``): ``engines`` (the softmax unit, divider, sequencer: a constant per core),
    ``lane_bits`` (per lane: accumulator, serial-requantizer hold register, the Q/KV pipeline registers,
    the MAC operand multiplexer and the MAC array's operand registers), ``tree_bits`` (the MAC array's
    adder tree), ``addr_bits`` (buffer address counters and token indices), ``scale_bits`` (the widths of
    the two run-time scalings' product sums and rounding shifters)."""
    p = _check(params)
    check_family(family)
    hp = p.heads_parallel
    a_bits = max(p.data_bits, p.softmax.prob_frac + 2)
    tree, width = 0, p.lanes
    for depth in range(ceil_log2(p.lanes)):
        width = -(-width // 2)
        tree += width * (2 * p.data_bits + depth + 1)
    lane = p.acc_bits + p.pv_bits + 7 * p.data_bits + 2 * a_bits
    addr = 3 * ceil_log2(2 * p.n_max * p.chunks + 1) + 4 * ceil_log2(p.n_max + 2)
    r = ConstantRanges.covering(p)
    scale = (p.score_bits + 1 + r.scale_mult_bits + 1) + (p.pv_bits + r.out_mult_bits + 1)
    return {
        "engines": float(hp),
        "lane_bits": float(hp * p.lanes * lane),
        "tree_bits": float(hp * tree),
        "addr_bits": float(hp * addr),
        "scale_bits": float(hp * scale),
    }


def exact(params: AttentionParams, family: str, ranges: ConstantRanges | None = None) -> Resources:
    """The rule-based part: DSPs, block RAM, LUT RAM and the memories' soft logic."""
    p = _check(params)
    core = Resources(dsp=_engine_dsps(p, family, _ranges(p, ranges)))
    for mem in memories(p, family).values():
        core = core + mem.resources
    return core * p.heads_parallel


def resources(params: AttentionParams, family: str, ranges: ConstantRanges | None = None) -> Resources:
    """DSP and block RAM (exact), LUT and FF (rules plus the fitted model) of the attention unit."""
    p = _check(params)
    lut, ff = fitted(BLOCK, family, features(p, family))
    return exact(p, family, ranges) + Resources(lut=lut, ff=ff)


def build(params: AttentionParams):
    from tokensift.hw.attention.core import Attention

    return Attention(params=_check(params))


def params_to_dict(params: AttentionParams) -> dict:
    p = _check(params)
    d = asdict(p)
    d["softmax"] = {k: (v.value if hasattr(v, "value") else v) for k, v in asdict(p.softmax).items()}
    return d


def params_from_dict(d: dict) -> AttentionParams:
    d = dict(d)
    sm = d.pop("softmax", None)
    if isinstance(sm, dict):
        d["softmax"] = SoftmaxParams(**sm)
    elif sm is not None:
        d["softmax"] = sm
    return AttentionParams(**d)


#: the configurations synthesized for the baselines (bench/synth_baselines.py): name -> parameters
_GRID = [
    ("n16_d8_l4", dict(n_max=16, head_dim=8, lanes=4)),
    ("n16_d16_l4", dict(n_max=16, head_dim=16, lanes=4)),
    ("n24_d12_l4", dict(n_max=24, head_dim=12, lanes=4)),
    ("n32_d16_l8", dict(n_max=32, head_dim=16, lanes=8)),
    ("n16_d16_l4_hp2", dict(n_max=16, head_dim=16, lanes=4, heads_parallel=2)),
    ("n16_d16_l4_poly", dict(n_max=16, head_dim=16, lanes=4, softmax="exp2_poly")),
    ("n64_d32_l8", dict(n_max=64, head_dim=32, lanes=8)),
    ("n100_d48_l12", dict(n_max=100, head_dim=48, lanes=12)),
]
QUICK_CONFIGS = ["n16_d8_l4"]


def baseline_grid() -> list[tuple[str, dict]]:
    return [(name, params_to_dict(AttentionParams(**kw))) for name, kw in _GRID]
