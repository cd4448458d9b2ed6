"""Integer selection stages, one module per method (see :mod:`tokensift.quant.stages.base`).

:func:`build_stages` turns a float model's token selectors into integer stages; a selector class with no
integer module raises ValueError.
"""

from __future__ import annotations

import importlib

from tokensift.quant.stages.base import (
    BuildContext,
    CombinerInput,
    IntegerStage,
    SelectionStep,
    StageContext,
    StageRecord,
    TokenFrame,
    keep_tokens,
)

__all__ = ["BuildContext", "CombinerInput", "SelectionStep", "IntegerStage", "StageContext", "StageRecord", "TokenFrame", "keep_tokens",
           "stage_module", "stage_sites", "build_stages", "METHOD_MODULES"]

#: the float selector class -> its integer module under tokensift.quant.stages
METHOD_MODULES = {
    "EViTSelector": "evit",
    "DynamicViTSelector": "dynamicvit",
    "SPViTSelector": "spvit",
    "ASViTSelector": "asvit",
    "SaiTSelector": "sait",
}


def stage_module(selector):
    """The integer module of a float selector (ValueError for a selector without one)."""
    name = type(selector).__name__
    module = METHOD_MODULES.get(name)
    if module is None:
        raise ValueError(f"the integer model has no integer form of {name}")
    try:
        return importlib.import_module(f"tokensift.quant.stages.{module}")
    except ModuleNotFoundError as e:
        if e.name != f"tokensift.quant.stages.{module}":
            raise
        raise ValueError(f"the integer model has no integer form of {name} yet") from None


def stage_sites(model) -> dict:
    """Calibration sites every stage of ``model`` needs beyond the backbone's."""
    sites = {}
    for block, sel in model.stage_selectors():
        sites.update(stage_module(sel).calibration_sites(sel, block, model))
    return sites


def build_stages(model, ctx: BuildContext) -> dict[int, IntegerStage]:
    """block -> integer stage for every selector of ``model`` that selects anything."""
    stages = {}
    for block, sel in model.stage_selectors():
        stage = stage_module(sel).from_float(sel, block, ctx)
        if stage is not None:
            stages[block] = stage
    return stages
