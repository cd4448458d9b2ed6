"""The token selector: top-k / threshold / mass selection, compaction, the package token (mean or sum, by the
scores or by package weights); layouts, cycle formula and resource model."""

from tokensift.hw.selector.core import (
           Selector,
           command_layout,
           cycle_breakdown,
           cycles,
           feature_layout,
           frame_layout,
           score_layout,
           token_layout,
)

__all__ = ["Selector", "command_layout", "cycle_breakdown", "cycles", "feature_layout", "frame_layout",
           "score_layout", "token_layout"]
