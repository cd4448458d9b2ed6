"""Cost of the score combiner (:class:`tokensift.hw.score_combiner.core.ScoreCombiner`), next to its generator.

Cycles are the combiner's own closed form, :func:`tokensift.hw.score_combiner.core.combiner_cycles`.
Resources, by the rules of :mod:`tokensift.hw.common.resources` (exact for DSP and block RAM):

* DSP: ``lanes`` multipliers (:func:`multiplier_dsps`): unsigned ``attn_bits x importance_bits``, or with a
  signed ``score`` a signed ``attn_bits x (importance_bits + 1)`` product (the unsigned weight as a
  non-negative signed operand).
* Memories (:func:`map_memory`): the accumulators, ``ceil(n_max / lanes)`` words of ``lanes * acc_bits``
  (one bit wider when signed) read synchronously, and the head weights, ``heads`` words of
  ``importance_bits`` read asynchronously. The per-token weight mode adds no memory: its weights stream in
  with the rows, ``lanes`` per beat, into the lanes' weight registers.
* LUT and FF of the datapath and control (the lanes' pipeline registers, adders and forwarding
  multiplexers, the output word register, the rounding and saturation unit, the counters): the fitted
  linear model over :func:`features` (``bench/synth_baselines.py --block score_combiner``, then
  ``bench/fit_cost_model.py``).

>>> r = exact(CombinerParams(n_max=197, heads=6, lanes=4), "xcup")
>>> r.dsp, r.bram18, r.bram36
(4, 0, 0)
>>> signed = CombinerParams(n_max=197, heads=6, lanes=4, per_token_weights=True, score=FixedFormat(bits=16, frac=12))
>>> r = exact(signed, "ecp5")
>>> r.dsp, r.ebr, memories(signed, "ecp5")["acc"].width  # 4 x 28-bit signed sums
(4, 4, 112)
"""

from __future__ import annotations

from tokensift.hw.common.resources import (
    MemoryMap,
    Resources,
    check_family,
    fitted,
    map_memory,
    multiplier_dsps,
)
from tokensift.hw.score_combiner.core import CombinerParams
from tokensift.quant.fixed import FixedFormat, Overflow, Rounding

__all__ = ["BLOCK", "CombinerParams", "memories", "dsps", "features", "exact", "resources", "build",
           "params_to_dict", "params_from_dict"]

BLOCK = "score_combiner"


def _check(params) -> CombinerParams:
    if not isinstance(params, CombinerParams):
        raise TypeError(f"params must be CombinerParams, not {type(params).__name__}")
    return params


def memories(params: CombinerParams, family: str) -> dict[str, MemoryMap]:
    """The combiner's memories as :class:`~tokensift.hw.common.resources.MemoryMap` s, by name."""
    p = _check(params)
    return {
        "acc": map_memory(p.lanes * p.acc_bits, p.words, family=family),
        "weights": map_memory(p.importance_bits, p.heads, family=family, sync_read=False),
    }


def dsps(params: CombinerParams, family: str) -> int:
    """DSP primitives of the ``lanes`` multipliers."""
    p = _check(params)
    check_family(family)
    if p.signed:
        return p.lanes * multiplier_dsps(p.attn_bits, p.importance_bits + 1, family=family, signed=True)
    return p.lanes * multiplier_dsps(p.attn_bits, p.importance_bits, family=family, signed=False)


def features(params: CombinerParams, family: str) -> dict[str, float]:
    """Structural sizes of the combiner's RTL the LUT/FF fit is linear in.

    ``input_bits``: per lane, the value and weight registers and the two product registers
    (``lanes * 3 * (attn_bits + importance_bits)``); ``sum_bits``: per lane, the sums' adder, forwarding
    multiplexer, registered read word, old sums, the two written sums and the output word register
    (``lanes * acc_bits``); ``addr_bits``: the word address and its compares; ``score_bits``: the rounding
    and saturation unit and the output register (``acc_bits + score.bits``); ``per_token_bits``: each lane's
    weight multiplexer (``lanes * importance_bits``, 0 without the per-token mode).
    """
    p = _check(params)
    check_family(family)
    return {
        "input_bits": float(p.lanes * 3 * (p.attn_bits + p.importance_bits)),
        "sum_bits": float(p.lanes * p.acc_bits),
        "addr_bits": float(max(1, (p.words - 1).bit_length())),
        "score_bits": float(p.acc_bits + p.score.bits),
        "per_token_bits": float(p.lanes * p.importance_bits if p.per_token_weights else 0),
    }


def exact(params: CombinerParams, family: str) -> Resources:
    """DSPs, block RAM, and the LUT RAM and soft logic of the memories."""
    p = _check(params)
    total = Resources(dsp=dsps(p, family))
    for mem in memories(p, family).values():
        total = total + mem.resources
    return total


def resources(params: CombinerParams, family: str) -> Resources:
    """DSP and block RAM (exact), LUT and FF (rules plus the fitted model) of one score combiner."""
    p = _check(params)
    lut, ff = fitted(BLOCK, family, features(p, family))
    return exact(p, family) + Resources(lut=lut, ff=ff)


def build(params: CombinerParams):
    """The :class:`~tokensift.hw.score_combiner.core.ScoreCombiner` these parameters describe (for synthesis)."""
    from tokensift.hw.score_combiner.core import ScoreCombiner

    p = _check(params)
    return ScoreCombiner(n_max=p.n_max, heads=p.heads, lanes=p.lanes, attn_bits=p.attn_bits, attn_frac=p.attn_frac,
                         importance_bits=p.importance_bits, importance_frac=p.importance_frac, score=p.score,
                         per_token_weights=p.per_token_weights)


def params_to_dict(params: CombinerParams) -> dict:
    p = _check(params)
    return {"n_max": p.n_max, "heads": p.heads, "lanes": p.lanes, "attn_bits": p.attn_bits, "attn_frac": p.attn_frac,
            "importance_bits": p.importance_bits, "importance_frac": p.importance_frac, "score_bits": p.score.bits,
            "score_frac": p.score.frac, "signed": p.score.signed, "rounding": p.score.rounding.value,
            "overflow": p.score.overflow.value, "per_token_weights": p.per_token_weights}


def params_from_dict(d: dict) -> CombinerParams:
    d = dict(d)
    score = FixedFormat(bits=d.pop("score_bits", 16), frac=d.pop("score_frac", 15), signed=d.pop("signed", False),
                        rounding=Rounding(d.pop("rounding", "half_up")), overflow=Overflow(d.pop("overflow", "saturate")))
    return CombinerParams(**d, score=score)
