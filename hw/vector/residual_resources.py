"""Cost of the residual adder (:class:`tokensift.hw.vector.residual.ResidualAdd`), next to its generator.

Cycles: :func:`tokensift.hw.vector.residual.cycles`. Resources: no DSP, no memory; LUT and FF (the two
operand registers' adders, the saturation, the output register, the overflow count) from the fitted linear
model over :func:`features` (``bench/synth_baselines.py --block residual``, then ``bench/fit_cost_model.py``).

>>> exact(ResidualParams(lanes=16), "xcup").dsp
0
"""

from __future__ import annotations

from tokensift.hw.common.resources import Resources, check_family, fitted
from tokensift.hw.vector.residual import ResidualParams
from tokensift.quant.fixed import FixedFormat, Overflow

__all__ = ["BLOCK", "ResidualParams", "features", "exact", "resources", "build", "params_to_dict",
           "params_from_dict"]

BLOCK = "residual"


def _check(params) -> ResidualParams:
    if not isinstance(params, ResidualParams):
        raise TypeError(f"params must be ResidualParams, not {type(params).__name__}")
    return params


def features(params: ResidualParams, family: str) -> dict[str, float]:
    """``sum_bits``: per lane the adder and the sum register (``lanes * (res.bits + 1)``); ``out_bits``: the
    saturation and the output register (``lanes * res.bits``, none of it with wrapping); ``lanes``: the
    per-lane overflow flags and their population count."""
    p = _check(params)
    check_family(family)
    saturating = p.res.overflow is Overflow.SATURATE
    return {"sum_bits": float(p.lanes * (p.res.bits + 1)),
            "saturate_bits": float(p.lanes * p.res.bits if saturating else 0),
            "lanes": float(p.lanes)}


def exact(params: ResidualParams, family: str) -> Resources:
    """No DSP and no memory."""
    _check(params)
    check_family(family)
    return Resources()


def resources(params: ResidualParams, family: str) -> Resources:
    p = _check(params)
    lut, ff = fitted(BLOCK, family, features(p, family))
    return exact(p, family) + Resources(lut=lut, ff=ff)


def build(params: ResidualParams):
    from tokensift.hw.vector.residual import ResidualAdd

    return ResidualAdd(params=_check(params))


def params_to_dict(params: ResidualParams) -> dict:
    p = _check(params)
    return {"lanes": p.lanes, "res_bits": p.res.bits, "overflow": p.res.overflow.value}


def params_from_dict(d: dict) -> ResidualParams:
    d = dict(d)
    res = FixedFormat(bits=d.pop("res_bits", 16), overflow=Overflow(d.pop("overflow", "saturate")))
    return ResidualParams(**d, res=res)
