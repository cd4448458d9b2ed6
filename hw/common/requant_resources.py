"""Cost of the streaming requantizer (:class:`tokensift.hw.common.requant.Requantizer`): resources and cycles.

The multiplier by the constant ``multiplier`` is the only DSP user: Yosys folds a power of two into a
shift, otherwise the product ``acc_bits x`` the constant's odd part (signed,
:func:`tokensift.hw.common.resources.const_operand_bits`) is tiled onto DSPs by
:func:`tokensift.hw.common.resources.multiplier_dsps`. No memory. LUTs (rounding adder, range check,
saturation, overflow counter) and flip-flops (output register, valid, counter) follow the fitted linear
model of :mod:`tokensift.hw.common.resources` over the features of :func:`features`.

>>> from tokensift.quant.fixed import INT8
>>> p = RequantParams(acc_bits=32, out=INT8, multiplier=12345, shift=20)
>>> resources(p, "xcup").dsp, cycles(p, n_values=100)
(2, 101)
"""

from __future__ import annotations

from dataclasses import dataclass

from tokensift.checks import check_count
from tokensift.hw.common.resources import Resources, check_family, const_operand_bits, fitted, multiplier_dsps
from tokensift.quant.fixed import FixedFormat, Overflow, Rounding

__all__ = ["BLOCK", "RequantParams", "features", "exact", "resources", "cycles", "build", "params_to_dict",
           "params_from_dict", "LATENCY"]

BLOCK = "requant"

#: cycles from a value's acceptance to its appearance on ``o_stream`` (one register stage)
LATENCY = 1


@dataclass(frozen=True, kw_only=True)
class RequantParams:
    """The elaboration parameters of a :class:`~tokensift.hw.common.requant.Requantizer`."""

    acc_bits: int = 32
    out: FixedFormat
    multiplier: int
    shift: int
    counter_bits: int = 16

    @classmethod
    def of(cls, component) -> RequantParams:
        """The parameters of an elaborated-to-be :class:`~tokensift.hw.common.requant.Requantizer`."""
        return cls(acc_bits=len(component.i_stream.payload), out=component.out, multiplier=component.multiplier,
                   shift=component.shift, counter_bits=len(component.overflows))

    def component(self):
        from tokensift.hw.common.requant import Requantizer

        return Requantizer(acc_bits=self.acc_bits, out=self.out, multiplier=self.multiplier, shift=self.shift,
                           counter_bits=self.counter_bits)


def _check(params) -> RequantParams:
    if not isinstance(params, RequantParams):
        raise TypeError(f"params must be RequantParams, not {type(params).__name__}")
    return params


def _power_of_two(value: int) -> bool:
    return value & (value - 1) == 0


def features(params: RequantParams, family: str) -> dict[str, float]:
    """Structural sizes of the RTL the LUT/FF fit is linear in.

    ``product_bits``: width of ``acc * multiplier``; ``rounded_bits``: the width after the rounding
    shift (the range check and the saturation multiplexer run over it); ``round_add_bits``: width of
    the rounding adder (0 for FLOOR); ``split_add_bits``: the adders that sum the partial products of a
    multiplier split over several DSPs along its wide operand (0 for one DSP), ``b_split_bits`` those of
    a split of the narrow operand too (both operands wider than one DSP's); ``out_bits``, ``counter_bits``: registers;
    ``soft_mul_bits``: a multiplier too small for a DSP, in LUTs.
    """
    p = _check(params)
    check_family(family)
    mbits = p.multiplier.bit_length()
    product = p.acc_bits + mbits + 1
    rounded = product - p.shift + 1
    if p.shift == 0 or p.out.rounding is Rounding.FLOOR:
        round_add = 0
    elif p.out.rounding is Rounding.HALF_UP:
        round_add = product + 1
    else:
        round_add = rounded + p.shift  # remainder compare plus the increment of the floor
    dsps = _dsps(p, family)
    b_adders = _b_split_adders(p, family) if dsps else 0
    return {
        "product_bits": float(product),
        "split_add_bits": float(max(dsps - 1 - b_adders, 0) * product),
        "b_split_bits": float(b_adders * product),
        "rounded_bits": float(max(rounded, 1)),
        "round_add_bits": float(round_add),
        "out_bits": float(p.out.bits),
        "counter_bits": float(p.counter_bits),
        "soft_mul_bits": 0.0 if _power_of_two(p.multiplier) or dsps else float(p.acc_bits * mbits),
    }


def _b_split_adders(p: RequantParams, family: str) -> int:
    """Partial-product adders from splitting the narrower operand (one per slice of the wider one)."""
    from tokensift.hw.common.resources import family_info

    info = family_info(family)
    a, b = sorted((p.acc_bits, const_operand_bits(p.multiplier, signed=True)), reverse=True)
    if b <= info.dsp_b:
        return 0
    head = 1 if info.dsp_signed_only else 0
    a_parts = 1 + ((a - info.dsp_a + info.dsp_a_partial - head - 1) // (info.dsp_a_partial - head)
                   if a > info.dsp_a else 0)
    return a_parts


def _dsps(p: RequantParams, family: str) -> int:
    if _power_of_two(p.multiplier):
        return 0  # a shift
    return multiplier_dsps(p.acc_bits, const_operand_bits(p.multiplier, signed=True), family=family, signed=True)


def exact(params: RequantParams, family: str) -> Resources:
    """The rule-based part: DSPs (no memory)."""
    p = _check(params)
    check_family(family)
    return Resources(dsp=_dsps(p, family))


def resources(params: RequantParams, family: str) -> Resources:
    """DSP (exact), LUT and FF (fitted) of one requantizer on ``family``."""
    p = _check(params)
    lut, ff = fitted(BLOCK, family, features(p, family))
    return exact(p, family) + Resources(lut=lut, ff=ff)


def build(params: RequantParams):
    """The :class:`~tokensift.hw.common.requant.Requantizer` these parameters describe (for synthesis)."""
    return _check(params).component()


def params_to_dict(params: RequantParams) -> dict:
    p = _check(params)
    return {"acc_bits": p.acc_bits, "out_bits": p.out.bits, "out_signed": p.out.signed,
            "rounding": p.out.rounding.value, "overflow": p.out.overflow.value, "multiplier": p.multiplier,
            "shift": p.shift, "counter_bits": p.counter_bits}


def params_from_dict(d: dict) -> RequantParams:
    out = FixedFormat(bits=d["out_bits"], frac=0, signed=d.get("out_signed", True),
                      rounding=Rounding(d.get("rounding", "half_up")),
                      overflow=Overflow(d.get("overflow", "saturate")))
    return RequantParams(acc_bits=d["acc_bits"], out=out, multiplier=d["multiplier"], shift=d["shift"],
                         counter_bits=d.get("counter_bits", 16))


def cycles(params: RequantParams, *, n_values: int) -> int:
    """Cycles from the first value's acceptance to the last result being valid, with no stalls: one value
    per cycle plus :data:`LATENCY`."""
    _check(params)
    check_count("n_values", n_values, zero=True, numpy=False)
    return n_values + LATENCY if n_values else 0
