"""Cost of the GELU unit (:class:`tokensift.hw.vector.gelu.GeluUnit`), next to its generator.

Cycles: :func:`tokensift.hw.vector.gelu.cycles`. Resources, by the rules of
:mod:`tokensift.hw.common.resources` (exact for DSP and block RAM):

* DSP, per lane (:func:`multiplier_dsps`): the square ``u * u`` (unsigned 17 x 17); ``q * factor`` as signed
  ``in_bits`` x the factor's low 17 bits (unsigned, zero-extended to signed) and x its other ``15 - in_bits``
  bits; the requantization ``y * multiplier`` as ``y``'s low 17 bits x the multiplier (both unsigned) and its
  signed high 15 bits x the multiplier (zero-extended to signed).
* No memory.
* LUT and FF (the pipeline registers, the pre-shift, the clip compare, the barrel shifter, the rounding and
  saturation, the adders of split products, the configuration registers, the overflow count): the fitted
  linear model over :func:`features`.

>>> [exact(GeluUnitParams(lanes=16), family).dsp for family in ("xcup", "xc7", "ecp5")]
[80, 80, 80]
"""

from __future__ import annotations

from tokensift.hw.common.resources import Resources, check_family, fitted, multiplier_dsps
from tokensift.hw.vector.gelu import CLIP_BITS, SPLIT_BITS, GeluUnitParams
from tokensift.quant.fixed import FixedFormat

__all__ = ["BLOCK", "GeluUnitParams", "dsps_per_lane", "features", "exact", "resources", "build",
           "params_to_dict", "params_from_dict"]

BLOCK = "gelu"


def _check(params) -> GeluUnitParams:
    if not isinstance(params, GeluUnitParams):
        raise TypeError(f"params must be GeluUnitParams, not {type(params).__name__}")
    return params


def dsps_per_lane(params: GeluUnitParams, family: str) -> int:
    """DSP primitives of one lane's three multipliers."""
    p = _check(params)
    factor_hi_bits = 32 - p.in_bits - SPLIT_BITS
    mb = p.multiplier_bits
    total = multiplier_dsps(CLIP_BITS, CLIP_BITS, family=family, signed=False)  # u * u
    total += multiplier_dsps(p.in_bits, SPLIT_BITS + 1, family=family, signed=True)  # q * factor, low part
    if factor_hi_bits > 0:
        total += multiplier_dsps(p.in_bits, factor_hi_bits + 1, family=family, signed=True)  # high part
    total += multiplier_dsps(SPLIT_BITS, mb, family=family, signed=False)  # y's low 17 bits * multiplier
    total += multiplier_dsps(32 - SPLIT_BITS, mb + 1, family=family, signed=True)  # y's high bits * multiplier
    return total


#: width of the DSP48E1's P register and its cascade, which can take the sum of a split product
_XC7_CASCADE_BITS = 48


def split_sum_bits(params: GeluUnitParams, family: str) -> int:
    """Per lane, the bits of the two split products' sum registers (``y``: 32, the scaled product:
    ``33 + multiplier_bits``) that stay in the fabric. On xc7 Yosys folds such a sum into the high part's
    DSP48E1 (its 17-bit shifted cascade input, ``P = (PCIN >> 17) + A B``) when the sum fits the 48-bit P
    register, and its register with it; ``y`` is a plain register when the factor is not split."""
    p = _check(params)
    check_family(family)
    sums = [(32, 32 - p.in_bits - SPLIT_BITS > 0), (33 + p.multiplier_bits, True)]
    return sum(bits for bits, split in sums
               if not (family == "xc7" and split and bits <= _XC7_CASCADE_BITS))


def features(params: GeluUnitParams, family: str) -> dict[str, float]:
    """Structural sizes the LUT/FF fit is linear in: ``lanes`` (each lane's fixed-width stages: the clip,
    the square, the factor, ``y``), ``lane_in_bits`` (``lanes * in_bits``: the delayed codes, ``|q|``, the
    pre-shift), ``lane_wide_bits`` (``lanes * (34 + multiplier_bits)``: the scaled product, the two shift
    stages, the rounding and the saturation compare), ``lane_out_bits`` (``lanes * out.bits``)."""
    p = _check(params)
    check_family(family)
    return {"lanes": float(p.lanes), "lane_in_bits": float(p.lanes * p.in_bits),
            "lane_wide_bits": float(p.lanes * (34 + p.multiplier_bits)),
            "lane_out_bits": float(p.lanes * p.out.bits),
            "lane_split_sum_bits": float(p.lanes * split_sum_bits(p, family))}


def exact(params: GeluUnitParams, family: str) -> Resources:
    """The DSPs (no memory)."""
    p = _check(params)
    check_family(family)
    return Resources(dsp=p.lanes * dsps_per_lane(p, family))


def resources(params: GeluUnitParams, family: str) -> Resources:
    p = _check(params)
    lut, ff = fitted(BLOCK, family, features(p, family))
    return exact(p, family) + Resources(lut=lut, ff=ff)


def build(params: GeluUnitParams):
    from tokensift.hw.vector.gelu import GeluUnit

    return GeluUnit(params=_check(params))


def params_to_dict(params: GeluUnitParams) -> dict:
    p = _check(params)
    return {"lanes": p.lanes, "in_bits": p.in_bits, "out_bits": p.out.bits, "multiplier_bits": p.multiplier_bits}


def params_from_dict(d: dict) -> GeluUnitParams:
    d = dict(d)
    out = FixedFormat(bits=d.pop("out_bits", 8))
    return GeluUnitParams(**d, out=out)
