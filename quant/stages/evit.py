"""EViT's integer stage: the heads' mean class attention, top-k, the fused token ``sum_pruned a_i x_i``.

Runs between its block's attention and MLP (``site="mid"``). Scores: the class rows averaged by
:func:`tokensift.quant.select.head_weighted_scores` with equal head weights ``round(2**15 / H)`` (exactly
the mean for a power-of-two head count); ``k = ceil(rho * candidates)``; top-k by
:func:`~tokensift.quant.select.topk_keep` (lower index wins ties). The fused token is
:func:`~tokensift.quant.select.package_token` in ``"sum"`` mode: ``fit(round_shift(sum a_i x_i,
score_frac))``, the selector's sum package rule (no multiply after the selector), appended after the kept
tokens as a candidate of later stages.
"""

from __future__ import annotations

import math

import numpy as np

from tokensift.quant.fixed import round_shift
from tokensift.quant.select import SCORE_FORMAT, package_token, topk_keep
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

__all__ = ["EViTStage", "HEAD_WEIGHT_FRAC", "equal_head_weights", "mean_attention", "calibration_sites",
           "from_float"]

#: fractional bits of the equal head weights ``round(2**15 / H)`` of a mean over heads
HEAD_WEIGHT_FRAC = 15


def equal_head_weights(heads: int) -> np.ndarray:
    """``1/H`` rounded half up to :data:`HEAD_WEIGHT_FRAC` bits, one per head (exact for a power of two)."""
    return np.full(heads, int(round_shift((1 << (HEAD_WEIGHT_FRAC + 1)) // heads, 1)), dtype=np.int64)


def mean_attention(cls_rows: np.ndarray, prob_frac: int) -> CombinerInput:
    """The score combiner's input for the heads' mean class attention (EViT, SaiT): the class rows (H, N)
    with :func:`equal_head_weights`, into :data:`~tokensift.quant.select.SCORE_FORMAT`."""
    return CombinerInput(values=cls_rows, weights=equal_head_weights(cls_rows.shape[0]), value_frac=prob_frac,
                         weight_frac=HEAD_WEIGHT_FRAC, score=SCORE_FORMAT)


class EViTStage(IntegerStage):
    """Keep ``ceil(keep_ratio * candidates)`` patch tokens by mean class attention, fuse the rest."""

    site = "mid"

    def __init__(self, *, block: int, stage: int, keep_ratio: float, fuse_token: bool = True):
        super().__init__(block=block, stage=stage)
        self.keep_ratio = keep_ratio
        self.fuse_token = fuse_token

    def num_keep(self, n_candidates: int) -> int:
        """The same count as :meth:`tokensift.sw.selection.TokenSelector.num_keep` (float64 arithmetic)."""
        return int(math.ceil(float(n_candidates) * self.keep_ratio - 1e-9))

    def scores(self, frame: TokenFrame, ctx: StageContext) -> np.ndarray:
        return mean_attention(frame.cls_rows, ctx.prob_frac).scores(ctx.counter)

    def hardware_step(self, frame: TokenFrame, ctx: StageContext) -> SelectionStep:
        comb = mean_attention(frame.cls_rows, ctx.prob_frac)
        return SelectionStep(features=frame.x, scores=comb.keys(), score_bits=SCORE_FORMAT.bits, mode="topk",
                             k=self.num_keep(frame.n - 1), combiner=comb,
                             package="sum" if self.fuse_token else None, weight_frac=SCORE_FORMAT.frac)

    def __call__(self, frame: TokenFrame, ctx: StageContext) -> tuple[TokenFrame, StageRecord]:
        scores = self.scores(frame, ctx)
        keep, _ = topk_keep(scores, self.num_keep(frame.n - 1), frame.n, score_bits=SCORE_FORMAT.bits)
        fused = None
        if self.fuse_token:
            fused = package_token(frame.x, scores, ~keep, feature_bits=ctx.res.bits, mode="sum",
                                  score_frac=SCORE_FORMAT.frac, counter=ctx.counter)[None]
        return keep_tokens(frame, keep, appended=fused), self.record(frame, keep, scores)


def calibration_sites(selector, block: int, model) -> dict:
    return {}


def from_float(selector, block: int, ctx: BuildContext) -> EViTStage | None:
    if selector.keep_ratio >= 1.0:  # EViT skips a stage that keeps everything
        return None
    return EViTStage(block=block, stage=selector.stage, keep_ratio=selector.keep_ratio,
                     fuse_token=bool(selector.fuse_token))
