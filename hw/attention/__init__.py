"""The attention core: engine, softmax, run-time constants, stream layouts, cycle formula and resource model."""

from tokensift.hw.attention.constants import ConstantRanges, encode_constants
from tokensift.hw.attention.core import (
    Attention,
    AttentionParams,
    SoftmaxParams,
    SoftmaxVariant,
    cycles,
    frame_interval,
    frame_schedule,
    mac_utilization,
)

__all__ = ["Attention", "AttentionParams", "ConstantRanges", "SoftmaxParams", "SoftmaxVariant", "cycles",
           "encode_constants", "frame_interval", "frame_schedule", "mac_utilization"]
