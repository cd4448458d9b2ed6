"""Cost of the AXI4-Lite register bank (:class:`tokensift.hw.axi.registers.AxiLiteRegisters`) for the registry:
no DSP or memory, LUT/FF fitted (:mod:`tokensift.hw.axi.resources`)."""

from __future__ import annotations

from tokensift.hw.axi.config import RegisterMap
from tokensift.hw.axi.resources import check_regmap, lite_exact, lite_features
from tokensift.hw.common.resources import Resources, fitted

__all__ = ["BLOCK", "features", "exact", "resources", "build", "params_to_dict", "params_from_dict"]

BLOCK = "axi_lite"


def features(params: RegisterMap, family: str) -> dict[str, float]:
    return lite_features(params, family)


def exact(params: RegisterMap, family: str) -> Resources:
    return lite_exact(params, family)


def resources(params: RegisterMap, family: str) -> Resources:
    lut, ff = fitted(BLOCK, family, features(params, family))
    return exact(params, family) + Resources(lut=lut, ff=ff)


def build(params: RegisterMap):
    from tokensift.hw.axi.registers import AxiLiteRegisters

    return AxiLiteRegisters(regmap=check_regmap(params))


def params_to_dict(params: RegisterMap) -> dict:
    return check_regmap(params).as_dict()


def params_from_dict(d: dict) -> RegisterMap:
    return RegisterMap.from_dict(d)
