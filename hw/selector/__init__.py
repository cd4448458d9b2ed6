"""The token selector: top-k / threshold selection, compaction, the package token; layouts, cycle formula
and resource model."""

from tokensift.hw.selector.core import (
           Selector,
           command_layout,
           cycle_breakdown,
           cycles,
           feature_layout,
           frame_layout,
           token_layout,
)

__all__ = ["Selector", "command_layout", "cycle_breakdown", "cycles", "feature_layout", "frame_layout",
           "token_layout"]
