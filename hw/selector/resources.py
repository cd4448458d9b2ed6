"""Cost of the token selector (:class:`tokensift.hw.selector.core.Selector`): resources next to its generator.

Cycles are the selector's own closed form, :func:`tokensift.hw.selector.core.cycles`. Resources:

* DSP: ``lanes`` weight x feature multipliers of the package-token datapath
  (:class:`tokensift.hw.selector.package.PackageMAC`), ``(w + 1) x feature_bits`` signed each (``w`` the
  package weights' width: ``weight_bits``, or ``score_bits`` when the score is the weight), when built with
  ``package=True``; none otherwise. Mass mode needs none (its product is shift and add,
  :class:`tokensift.hw.selector.mass.MassTarget`).
* Memories, by :func:`tokensift.hw.common.resources.map_memory`: the features (``lanes * feature_bits`` wide,
  ``n_max * beats`` deep, in banks of at most :data:`~tokensift.hw.selector.core.BANK_DEPTH` words,
  :func:`~tokensift.hw.selector.core.feature_banks`), the scores and their package weights
  (``(score_bits + weight_bits) x n_max``) and the kept/pruned list
  (``idx_bits x n_max``), read synchronously; the output FIFO (one token beat wide,
  :data:`~tokensift.hw.selector.core.OUT_FIFO_DEPTH` deep, read asynchronously).
* LUT and FF of the control, the radix search, the compactor, the read pipeline, the package
  datapath's accumulators, restoring dividers, sum-rule registers and overflow counter, and mass mode's
  per-bin sums, target multiplier and tie divider: the fitted linear model over :func:`features`.

>>> p = SelectorParams(n_max=197, dim=384, lanes=16, package=True)
>>> r = exact(p, "xcup")
>>> r.dsp, r.bram18 + 2 * r.bram36
(16, 41)
"""

from __future__ import annotations

from tokensift.hw.common.resources import Resources, check_family, fitted, map_memory, multiplier_dsps
from tokensift.quant.select import FIELD_BITS, RADIX_BITS, SelectorParams

__all__ = ["BLOCK", "SelectorParams", "memories", "features", "exact", "resources", "build", "params_to_dict",
           "params_from_dict"]

BLOCK = "selector"


def _check(params) -> SelectorParams:
    if not isinstance(params, SelectorParams):
        raise TypeError(f"params must be SelectorParams, not {type(params).__name__}")
    return params


def _token_bits(p: SelectorParams) -> int:
    return p.lanes * p.feature_bits + p.idx_bits + 2  # data, index, package, last


def memories(params: SelectorParams, family: str) -> dict:
    """The selector's memories as :class:`~tokensift.hw.common.resources.MemoryMap` s, by name."""
    from tokensift.hw.selector.core import OUT_FIFO_DEPTH, feature_banks

    p = _check(params)
    banks = {f"features{j}": map_memory(p.lanes * p.feature_bits, depth, family=family)
             for j, depth in enumerate(feature_banks(p))}
    return {
        **banks,
        "scores": map_memory(p.score_bits + p.weight_bits, p.n_max, family=family),
        "order": map_memory(p.idx_bits, p.n_max, family=family),
        "out_fifo": map_memory(_token_bits(p), OUT_FIFO_DEPTH, family=family, sync_read=False),
    }


def _dsps(p: SelectorParams, family: str) -> int:
    if not p.package:
        return 0
    return p.lanes * multiplier_dsps(p.package_weight_bits + 1, p.feature_bits, family=family, signed=True)


def features(params: SelectorParams, family: str) -> dict[str, float]:
    """Structural sizes of the selector's RTL the LUT/FF fit is linear in.

    ``beat_bits``: width of a feature beat (the read pipeline, the FIFO's write data);
    ``bank_bits``: the feature banks' output registers and their multiplexer (``beat_bits`` per bank);
    ``addr_bits``: width of the feature-memory address counters (``n_max * beats`` words);
    ``token_bits``: index and count counters (``idx_bits + count_bits``); ``score_bits``: the radix
    search's and the compactor's comparisons and the score word (``score_bits + weight_bits``);
    ``package_bits``: per lane of the package datapath, the multiplier's feature input, product,
    accumulator, remainder and quotient registers, the divider's subtractor, the sum rule's rounding
    adder and register, plus the overflow counter and its per-lane flags (0 without a package token);
    ``mass_bits``: mass mode's per-bin score sums and their adders, the target's multiplier and the tie
    divider (0 without mass mode).
    """
    from tokensift.hw.selector.core import OVERFLOW_BITS, feature_banks

    p = _check(params)
    check_family(family)
    addr = max(1, (p.n_max * p.beats - 1).bit_length())
    fb, wb = p.feature_bits, p.package_weight_bits
    rem_bits = fb + 1 + p.weight_sum_bits
    per_lane = fb + (wb + fb + 1) + 2 * p.acc_bits + rem_bits + (fb + 1) + fb
    mass = 0
    if p.mass:
        bins = 1 << RADIX_BITS
        tie_divider = p.sum_bits + (p.digits * RADIX_BITS + p.count_bits + 1) + 2 * p.count_bits
        mass = bins * p.sum_bits + 3 * p.sum_bits + p.mass_bits + tie_divider
    return {
        "beat_bits": float(p.lanes * fb),
        "bank_bits": float(len(feature_banks(p)) * p.lanes * fb),
        "addr_bits": float(addr),
        "token_bits": float(p.idx_bits + p.count_bits),
        "score_bits": float(p.score_bits + p.weight_bits),
        "package_bits": float(p.lanes * (per_lane + 1) + OVERFLOW_BITS if p.package else 0),
        "mass_bits": float(mass),
        "field_bits": float(FIELD_BITS),
    }


def exact(params: SelectorParams, family: str) -> Resources:
    """The rule-based part: DSPs, block RAM, LUT RAM and the memories' soft logic."""
    p = _check(params)
    total = Resources(dsp=_dsps(p, family))
    for mem in memories(p, family).values():
        total = total + mem.resources
    return total


def resources(params: SelectorParams, family: str) -> Resources:
    """DSP and block RAM (exact), LUT and FF (rules plus the fitted model) of one selector."""
    p = _check(params)
    lut, ff = fitted(BLOCK, family, features(p, family))
    return exact(p, family) + Resources(lut=lut, ff=ff)


def build(params: SelectorParams):
    """The :class:`~tokensift.hw.selector.core.Selector` these parameters describe (for synthesis)."""
    from tokensift.hw.selector.core import Selector

    return Selector(**params_to_dict(params))


def params_to_dict(params: SelectorParams) -> dict:
    p = _check(params)
    return {"n_max": p.n_max, "dim": p.dim, "score_bits": p.score_bits, "feature_bits": p.feature_bits,
            "lanes": p.lanes, "package": p.package, "weight_bits": p.weight_bits, "weight_frac": p.weight_frac,
            "mass": p.mass, "mass_frac": p.mass_frac}


def params_from_dict(d: dict) -> SelectorParams:
    return SelectorParams(**d)
