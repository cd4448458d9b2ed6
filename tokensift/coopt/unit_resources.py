"""Resources of the accelerator's units: the validated model, or its hard-block part while it is incomplete.

:meth:`tokensift.hw.cost.layer.ModelCost.units` is the source of truth. It needs the fitted LUT/FF
coefficients of every unit (``tokensift/data/lut_ff_fit.json``, written by ``bench/fit_cost_model.py``).
When a unit's fit is missing in this checkout, :func:`unit_resources` falls back to the **hard blocks
only**: the units' own ``exact`` functions (DSPs and block RAM by the primitive rules of
:mod:`tokensift.hw.common.resources`), with LUT and FF left out (reported as not estimated, and left out of the
fit check).
"""

from __future__ import annotations

from tokensift.hw.common.resources import Resources, map_memory

__all__ = ["unit_resources", "HARD_BLOCKS_ONLY", "FULL_MODEL"]

FULL_MODEL = "full"
HARD_BLOCKS_ONLY = "hard-blocks-only"


def _hard(r: Resources) -> Resources:
    """Only the hard blocks of ``r`` (DSP, block RAM, URAM, EBR)."""
    return Resources(dsp=r.dsp, bram18=r.bram18, bram36=r.bram36, uram=r.uram, ebr=r.ebr)


def unit_resources(cost, family: str) -> tuple[dict[str, Resources], str]:
    """(resources of each unit of ``cost`` (a ModelCost) on ``family``, which model gave them)."""
    try:
        return cost.units(family), FULL_MODEL
    except LookupError:  # no fitted LUT/FF coefficients for a unit in this checkout
        pass
    from tokensift.hw.attention.resources import exact as attention_exact
    from tokensift.hw.common.mac_array_resources import exact as mac_exact
    from tokensift.hw.common.requant_resources import RequantParams
    from tokensift.hw.common.requant_resources import exact as requant_exact
    from tokensift.hw.cost.linear import REQUANT_MULTIPLIER, REQUANT_SHIFT
    from tokensift.hw.selector.resources import exact as selector_exact
    from tokensift.quant.fixed import INT8

    lp = cost.linear
    buffer = map_memory(lp.lanes * lp.data_bits, -(-lp.in_max // lp.lanes), family=family).resources
    linear = (mac_exact(lp.mac_array, family) + buffer
              + requant_exact(RequantParams(acc_bits=lp.acc_bits, out=INT8, multiplier=REQUANT_MULTIPLIER,
                                            shift=REQUANT_SHIFT), family))
    out = {"attention": _hard(attention_exact(cost.attention, family)), "linear": _hard(linear)}
    if cost.selector is not None:
        out["selector"] = _hard(selector_exact(cost.selector, family))
    return out, HARD_BLOCKS_ONLY
