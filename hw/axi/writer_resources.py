"""Cost of the AXI4 writer DMA (:class:`tokensift.hw.axi.writer.AxiWriter`) for the registry: no DSP or memory,
LUT/FF fitted (:mod:`tokensift.hw.axi.resources`)."""

from __future__ import annotations

from tokensift.hw.axi.config import AxiDmaConfig
from tokensift.hw.axi.resources import check_config, dma_exact, dma_features
from tokensift.hw.axi.resources import dma_from_dict as params_from_dict
from tokensift.hw.axi.resources import dma_to_dict as params_to_dict
from tokensift.hw.common.resources import Resources, fitted

__all__ = ["BLOCK", "features", "exact", "resources", "build", "params_to_dict", "params_from_dict"]

BLOCK = "axi_writer"


def features(params: AxiDmaConfig, family: str) -> dict[str, float]:
    return dma_features(params, family)


def exact(params: AxiDmaConfig, family: str) -> Resources:
    return dma_exact(params, family)


def resources(params: AxiDmaConfig, family: str) -> Resources:
    lut, ff = fitted(BLOCK, family, features(params, family))
    return exact(params, family) + Resources(lut=lut, ff=ff)


def build(params: AxiDmaConfig):
    from tokensift.hw.axi.writer import AxiWriter

    return AxiWriter(config=check_config(params))
