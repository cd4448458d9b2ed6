"""Cost of the token selector (:class:`tokensift.hw.selector.core.Selector`): resources next to its generator.

Cycles are the selector's own closed form, :func:`tokensift.hw.selector.core.cycles`. Resources:

* DSP: ``lanes`` score x feature multipliers of the package-token datapath
  (:class:`tokensift.hw.selector.package.PackageMAC`), ``(score_bits + 1) x feature_bits`` signed each, when
  built with ``package=True``; none otherwise.
* Memories, by :func:`tokensift.hw.common.resources.map_memory`: the features (``lanes * feature_bits`` wide,
  ``n_max * beats`` deep, in banks of at most :data:`~tokensift.hw.selector.core.BANK_DEPTH` words,
  :func:`~tokensift.hw.selector.core.feature_banks`), the scores (``score_bits x n_max``) and the kept/pruned list
  (``idx_bits x n_max``), read synchronously; the output FIFO (one token beat wide,
  :data:`~tokensift.hw.selector.core.OUT_FIFO_DEPTH` deep, read asynchronously).
* LUT and FF of the control, the radix search, the compactor, the read pipeline and the package
  datapath's accumulators and restoring dividers: the fitted linear model over :func:`features`.

>>> p = SelectorParams(n_max=197, dim=384, lanes=16, package=True)
>>> r = exact(p, "xcup")
>>> r.dsp, r.bram18 + 2 * r.bram36
(16, 41)
"""

from __future__ import annotations

from tokensift.hw.common.resources import Resources, check_family, fitted, map_memory, multiplier_dsps
from tokensift.quant.select import FIELD_BITS, SelectorParams

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
        "scores": map_memory(p.score_bits, p.n_max, family=family),
        "order": map_memory(p.idx_bits, p.n_max, family=family),
        "out_fifo": map_memory(_token_bits(p), OUT_FIFO_DEPTH, family=family, sync_read=False),
    }


def _dsps(p: SelectorParams, family: str) -> int:
    if not p.package:
        return 0
    return p.lanes * multiplier_dsps(p.score_bits + 1, p.feature_bits, family=family, signed=True)


def features(params: SelectorParams, family: str) -> dict[str, float]:
    """Structural sizes of the selector's RTL the LUT/FF fit is linear in.

    ``beat_bits``: width of a feature beat (the read pipeline, the FIFO's write data);
    ``bank_bits``: the feature banks' output registers and their multiplexer (``beat_bits`` per bank);
    ``addr_bits``: width of the feature-memory address counters (``n_max * beats`` words);
    ``token_bits``: index and count counters (``idx_bits + count_bits``); ``score_bits``: the radix
    search and the compactor's comparisons; ``package_bits``: per lane of the package datapath, the
    multiplier's feature input, product, accumulator, remainder and quotient registers and the divider's
    subtractor (0 without a package token).
    """
    from tokensift.hw.selector.core import feature_banks

    p = _check(params)
    check_family(family)
    addr = max(1, (p.n_max * p.beats - 1).bit_length())
    rem_bits = p.feature_bits + 1 + p.sum_bits
    per_lane = p.feature_bits + (p.score_bits + p.feature_bits + 1) + p.acc_bits + rem_bits + (p.feature_bits + 1)
    return {
        "beat_bits": float(p.lanes * p.feature_bits),
        "bank_bits": float(len(feature_banks(p)) * p.lanes * p.feature_bits),
        "addr_bits": float(addr),
        "token_bits": float(p.idx_bits + p.count_bits),
        "score_bits": float(p.score_bits),
        "package_bits": float(p.lanes * per_lane if p.package else 0),
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

    p = _check(params)
    return Selector(n_max=p.n_max, dim=p.dim, score_bits=p.score_bits, feature_bits=p.feature_bits,
                    lanes=p.lanes, package=p.package)


def params_to_dict(params: SelectorParams) -> dict:
    p = _check(params)
    return {"n_max": p.n_max, "dim": p.dim, "score_bits": p.score_bits, "feature_bits": p.feature_bits,
            "lanes": p.lanes, "package": p.package}


def params_from_dict(d: dict) -> SelectorParams:
    return SelectorParams(**d)
