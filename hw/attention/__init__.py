"""The attention core: engine, softmax, stream layouts, cycle formula and resource model."""

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

__all__ = ["Attention", "AttentionParams", "SoftmaxParams", "SoftmaxVariant", "cycles", "frame_interval",
           "frame_schedule", "mac_utilization"]
