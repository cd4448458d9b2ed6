"""The linear engine: an output-stationary int8 GEMM array computing ``quant.gemm.IntLinear``."""

from tokensift.hw.gemm.config import GemmConfig
from tokensift.hw.gemm.core import GemmEngine

__all__ = ["GemmConfig", "GemmEngine"]
