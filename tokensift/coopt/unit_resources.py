"""Resources of the accelerator's units: the validated model, or its hard-block part while it is incomplete.

:meth:`tokensift.hw.cost.layer.ModelCost.units` is the source of truth. It needs the fitted LUT/FF
coefficients of every unit (``tokensift/data/lut_ff_fit.json``, written by ``bench/fit_cost_model.py``).
When a unit's fit is missing in this checkout, :func:`unit_resources` falls back to the **hard blocks
only**: the units' own ``exact`` functions (DSPs and block RAM by the primitive rules of
:mod:`tokensift.hw.common.resources`), with LUT and FF left out (reported as not estimated, and left out of the
fit check).
"""

from __future__ import annotations

from tokensift.hw.common.resources import Resources

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
    from tokensift.hw.gemm.resources import exact as gemm_exact
    from tokensift.hw.selector.resources import exact as selector_exact
    from tokensift.hw.vector.gelu_resources import exact as gelu_exact
    from tokensift.hw.vector.layernorm_resources import exact as layernorm_exact
    from tokensift.hw.vector.residual_resources import exact as residual_exact

    v = cost.vector
    out = {"attention": _hard(attention_exact(cost.attention, family)),
           "linear": _hard(gemm_exact(cost.linear.gemm, family)),
           "layernorm": _hard(layernorm_exact(v.layernorm, family)),
           "gelu": _hard(gelu_exact(v.gelu, family)),
           "residual": _hard(residual_exact(v.residual, family))}
    if v.token_mean is not None:
        from tokensift.hw.vector.token_mean_resources import exact as token_mean_exact

        out["token_mean"] = _hard(token_mean_exact(v.token_mean, family))
    if cost.selector is not None:
        out["selector"] = _hard(selector_exact(cost.selector, family))
    return out, HARD_BLOCKS_ONLY
