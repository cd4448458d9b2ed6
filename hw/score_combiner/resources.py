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
* LUT and FF here are only those of the memories (LUT RAM, address muxes); the datapath and control
  have no fitted model yet: synthesis measures them (``docs/selector.md``, "Score combiner").

>>> r = exact(CombinerParams(n_max=197, heads=6, lanes=4), "xcup")
>>> r.dsp, r.bram18, r.bram36
(4, 0, 0)
>>> signed = CombinerParams(n_max=197, heads=6, lanes=4, per_token_weights=True, score=FixedFormat(bits=16, frac=12))
>>> r = exact(signed, "ecp5")
>>> r.dsp, r.ebr, memories(signed, "ecp5")["acc"].width  # 4 x 28-bit signed sums
(4, 4, 112)
"""

from __future__ import annotations

from tokensift.hw.common.resources import MemoryMap, Resources, check_family, map_memory, multiplier_dsps
from tokensift.hw.score_combiner.core import CombinerParams
from tokensift.quant.fixed import FixedFormat  # noqa: F401 (the doctests)

__all__ = ["BLOCK", "CombinerParams", "memories", "dsps", "exact", "build"]

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


def exact(params: CombinerParams, family: str) -> Resources:
    """DSPs, block RAM, and the LUT RAM and soft logic of the memories."""
    p = _check(params)
    total = Resources(dsp=dsps(p, family))
    for mem in memories(p, family).values():
        total = total + mem.resources
    return total


def build(params: CombinerParams):
    """The :class:`~tokensift.hw.score_combiner.core.ScoreCombiner` these parameters describe (for synthesis)."""
    from tokensift.hw.score_combiner.core import ScoreCombiner

    p = _check(params)
    return ScoreCombiner(n_max=p.n_max, heads=p.heads, lanes=p.lanes, attn_bits=p.attn_bits, attn_frac=p.attn_frac,
                         importance_bits=p.importance_bits, importance_frac=p.importance_frac, score=p.score,
                         per_token_weights=p.per_token_weights)
