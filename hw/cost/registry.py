"""The blocks whose cost models are validated against synthesis, behind one interface.

Each block's cost lives next to its generator (``hw/<block>_resources.py``); the baseline generator,
the fit and the tests reach them through :func:`block_cost`, with parameters as JSON-able dicts:

>>> cost = block_cost("requant")
>>> params = {"acc_bits": 32, "out_bits": 8, "multiplier": 12345, "shift": 20}
>>> cost.exact(params, "xcup").dsp
2
>>> len(BLOCKS), sorted(BLOCKS)[:6]
(16, ['accelerator', 'attention', 'axi_lite', 'axi_reader', 'axi_writer', 'gelu'])
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from tokensift.hw.common.resources import Resources

__all__ = ["BLOCKS", "BlockCost", "block_cost", "FITTED_BLOCKS"]

#: block name -> module holding its cost functions (``None``: a primitive probe of cost_probes)
BLOCKS: dict[str, str | None] = {
    "requant": "tokensift.hw.common.requant_resources",
    "selector": "tokensift.hw.selector.resources",
    "attention": "tokensift.hw.attention.resources",
    "mac_array": "tokensift.hw.common.mac_array_resources",
    "score_combiner": "tokensift.hw.score_combiner.resources",
    "gemm": "tokensift.hw.gemm.resources",
    "layernorm": "tokensift.hw.vector.layernorm_resources",
    "gelu": "tokensift.hw.vector.gelu_resources",
    "residual": "tokensift.hw.vector.residual_resources",
    "token_mean": "tokensift.hw.vector.token_mean_resources",
    "axi_lite": "tokensift.hw.axi.lite_resources",
    "axi_reader": "tokensift.hw.axi.reader_resources",
    "axi_writer": "tokensift.hw.axi.writer_resources",
    # the whole-model accelerator: the blocks above summed, plus its own memories, multipliers and glue
    "accelerator": "tokensift.hw.accel.resources",
    "memory": None,
    "multiplier": None,
}

#: blocks whose LUT/FF come from a fitted model, in fitting order: the memories' soft logic first (the
#: blocks contain memories), then the blocks
FITTED_BLOCKS = ("memory", "requant", "mac_array", "selector", "attention", "score_combiner", "gemm", "layernorm",
                 "gelu", "residual", "token_mean", "axi_lite", "axi_reader", "axi_writer", "accelerator")


@dataclass(frozen=True)
class BlockCost:
    """A block's cost functions over parameter dicts."""

    name: str
    build: Callable[[dict], object]
    exact: Callable[[dict, str], Resources]
    resources: Callable[[dict, str], Resources]
    features: Callable[[dict, str], dict] | None
    normalize: Callable[[dict], dict]
    #: what the LUT/FF fit adds its features to (default: ``exact``); a block built of other fitted blocks
    #: (the accelerator) fits only the logic their models do not cover
    fit_base: Callable[[dict, str], Resources] | None = None


def block_cost(name: str) -> BlockCost:
    """The cost interface of block ``name`` (raises ``ModuleNotFoundError`` for a block not built yet)."""
    if name not in BLOCKS:
        raise ValueError(f"block must be one of {', '.join(BLOCKS)}, not {name!r}")
    module_name = BLOCKS[name]
    if module_name is None:
        from tokensift.hw.cost import probes

        build, exact = {"memory": (probes.build_memory, probes.exact_memory),
                        "multiplier": (probes.build_multiplier, probes.exact_multiplier)}[name]
        resources = probes.resources_memory if name == "memory" else exact
        features = probes.features_memory if name == "memory" else None
        return BlockCost(name, build, exact, resources, features, dict)
    mod = importlib.import_module(module_name)
    return BlockCost(
        name=name,
        build=lambda d: mod.build(mod.params_from_dict(d)),
        exact=lambda d, family: mod.exact(mod.params_from_dict(d), family),
        resources=lambda d, family: mod.resources(mod.params_from_dict(d), family),
        features=lambda d, family: mod.features(mod.params_from_dict(d), family),
        normalize=lambda d: mod.params_to_dict(mod.params_from_dict(d)),
        fit_base=(lambda d, family: mod.fit_base(mod.params_from_dict(d), family)) if hasattr(mod, "fit_base")
        else None,
    )
