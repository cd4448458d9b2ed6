"""Cost of the MAC array (:class:`tokensift.hw.common.mac_array.MacArray`), the multiplier bank shared by the
attention core and, by assumption, by the linear layers (:mod:`tokensift.hw.cost.linear`).

* DSP: one ``a_bits x b_bits`` signed multiplier per lane (:func:`tokensift.hw.common.resources.multiplier_dsps`).
* No memory.
* LUT / FF: the fitted linear model over :func:`features` (adder tree, per-lane accumulators, product
  and control registers).

>>> p = MacArrayParams(lanes=16)
>>> exact(p, "xcup").dsp, exact(p, "ecp5").dsp
(16, 16)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from amaranth.utils import ceil_log2

from tokensift.checks import check_int
from tokensift.hw.common.resources import Resources, check_family, fitted, multiplier_dsps

__all__ = ["BLOCK", "MacArrayParams", "features", "exact", "resources", "build", "params_to_dict",
           "params_from_dict"]

BLOCK = "mac_array"


@dataclass(frozen=True, kw_only=True)
class MacArrayParams:
    """The elaboration parameters of a :class:`~tokensift.hw.common.mac_array.MacArray` (int8 defaults)."""

    lanes: int
    a_bits: int = 8
    b_bits: int = 8
    dot_bits: int = 16
    acc_bits: int = 32
    tag_bits: int = 8

    def __post_init__(self):
        for name, value, low, high in (("lanes", self.lanes, 1, 256), ("a_bits", self.a_bits, 2, 27),
                                       ("b_bits", self.b_bits, 2, 27), ("acc_bits", self.acc_bits, 2, 64),
                                       ("tag_bits", self.tag_bits, 1, 64)):
            check_int(name, value, low=low, high=high, numpy=False)
        if not 2 <= self.dot_bits <= self.a_bits + self.b_bits:
            raise ValueError(f"dot_bits must be between 2 and a_bits + b_bits, not {self.dot_bits}")


def _check(params) -> MacArrayParams:
    if not isinstance(params, MacArrayParams):
        raise TypeError(f"params must be MacArrayParams, not {type(params).__name__}")
    return params


def features(params: MacArrayParams, family: str) -> dict[str, float]:
    """``tree_bits``: adder-tree bits summed over its levels; ``lane_acc_bits``: the per-lane
    accumulators; ``prod_bits``: the operand and product registers; ``ctrl_bits``: control delayed
    along the operand and product stages and the tree, plus the dot accumulator."""
    p = _check(params)
    check_family(family)
    levels = ceil_log2(p.lanes)
    tree, width = 0, p.lanes
    for depth in range(levels):
        width = -(-width // 2)
        tree += width * (p.dot_bits + depth + 1)
    return {
        "tree_bits": float(tree),
        "lane_acc_bits": float(p.lanes * p.acc_bits),
        "prod_bits": float(p.lanes * (p.a_bits + p.b_bits)),
        "ctrl_bits": float((levels + 2) * (4 + p.tag_bits) + p.acc_bits),
    }


def exact(params: MacArrayParams, family: str) -> Resources:
    p = _check(params)
    return Resources(dsp=p.lanes * multiplier_dsps(p.a_bits, p.b_bits, family=family, signed=True))


def resources(params: MacArrayParams, family: str) -> Resources:
    p = _check(params)
    lut, ff = fitted(BLOCK, family, features(p, family))
    return exact(p, family) + Resources(lut=lut, ff=ff)


def build(params: MacArrayParams):
    from tokensift.hw.common.mac_array import MacArray

    return MacArray(**asdict(_check(params)))


def params_to_dict(params: MacArrayParams) -> dict:
    return asdict(_check(params))


def params_from_dict(d: dict) -> MacArrayParams:
    return MacArrayParams(**d)
