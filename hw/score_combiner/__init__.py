"""The score combiner: per-head class-attention rows -> head-weighted token scores; layouts, cycle formula
and resource model."""

from tokensift.hw.score_combiner.core import CombinerParams, CombinerStatus, ScoreCombiner, combiner_cycles

__all__ = ["CombinerParams", "CombinerStatus", "ScoreCombiner", "combiner_cycles"]
