"""DynamicViT's integer stage: the prediction module's keep-minus-drop logit, top-k at the schedule's count.

Runs before its block (``site="pre"``) on the residual tokens. The candidates (every token after the
protected class token) go through :class:`~tokensift.quant.stages.predictor.IntegerPredictor` (LayerNorm,
``C -> C``, GELU, the global half's exact mean over the candidates, ``C -> C/2 -> C/4``, the folded keep-minus-
drop row): one signed 16-bit score ``d = l_keep - l_drop`` per candidate, which orders tokens as the float
keep probability does. The selector ranks the unsigned keys ``order_key(d, 16)`` (the class token's score
is 0, as the float model records it) and keeps the top ``k = keep_count(num_patches, rho, stage)`` (the float
count: ``int(num_patches * rho ** (stage + 1))``, at least 1; lower index wins ties) with
:func:`~tokensift.quant.select.topk_keep`. :attr:`StageRecord.scores` holds those keys.

Hardware: the predictor's linear layers run on the GEMM engine (the global mean is a column sum and one
division per channel), the selector takes the keys with ``score_bits = 16`` in top-k mode; no package token.
Overflows are counted under ``blocks.{i}.dynamicvit.<layer>``.
"""

from __future__ import annotations

import numpy as np

from tokensift.quant.fixed import OverflowCounter
from tokensift.quant.select import order_key
from tokensift.quant.stages.base import (
    BuildContext,
    IntegerStage,
    SelectionStep,
    StageContext,
    StageRecord,
    TokenFrame,
    keep_tokens,
)
from tokensift.quant.stages.predictor import (
    LOGIT_BITS,
    IntegerPredictor,
    last_gelu_observer,
    logit_diff_site,
    logit_scale,
    percentile_observer,
    predictor_sites,
    select_candidates,
)

__all__ = ["DynamicViTStage", "calibration_sites", "from_float"]


class DynamicViTStage(IntegerStage):
    """Keep the ``keep`` candidates with the largest integer keep-minus-drop logits."""

    site = "pre"

    def __init__(self, *, block: int, stage: int, predictor: IntegerPredictor, keep: int):
        super().__init__(block=block, stage=stage)
        self.predictor = predictor
        self.keep = keep

    def scores(self, frame: TokenFrame, ctx: StageContext) -> np.ndarray:
        """(N,) signed logit-difference codes (0 for the protected tokens)."""
        P = frame.num_protected
        d = self.predictor.logit_diff(frame.x[P:], counter=ctx.counter, site=f"blocks.{self.block}.dynamicvit")
        return np.concatenate([np.zeros(P, dtype=np.int64), d])

    def hardware_step(self, frame: TokenFrame, ctx: StageContext) -> SelectionStep:
        """The selector ranks the keys of the predictor's logit differences (its linear layers run in the
        reference until the linear engine computes them): top-k, no combiner, no package token."""
        quiet = StageContext(counter=OverflowCounter(), res=ctx.res, prob_frac=ctx.prob_frac)
        keys = order_key(self.scores(frame, quiet), LOGIT_BITS)
        return SelectionStep(features=frame.x, scores=keys, score_bits=LOGIT_BITS, mode="topk",
                             k=min(self.keep, frame.n - frame.num_protected), bypass=frame.num_protected - 1)

    def __call__(self, frame: TokenFrame, ctx: StageContext) -> tuple[TokenFrame, StageRecord]:
        keys = order_key(self.scores(frame, ctx), LOGIT_BITS)
        k = min(self.keep, frame.n - frame.num_protected)
        keep = select_candidates(keys, frame.num_protected, score_bits=LOGIT_BITS, k=k)
        return keep_tokens(frame, keep), self.record(frame, keep, keys)


def _prefix(block: int) -> str:
    return f"blocks.{block}.dynamicvit"


def calibration_sites(selector, block: int, model) -> dict:
    sites = predictor_sites(selector.predictor, _prefix(block), observer=percentile_observer)
    gelu2 = sites[f"{_prefix(block)}.gelu2"]
    sites[f"{_prefix(block)}.gelu2"] = (*gelu2[:2], last_gelu_observer)
    sites[f"{_prefix(block)}.logit_diff"] = logit_diff_site(selector.predictor)
    return sites


def from_float(selector, block: int, ctx: BuildContext) -> DynamicViTStage | None:
    from tokensift.sw.methods.dynamicvit import keep_count

    keep = keep_count(selector.num_patches, selector.keep_ratio, selector.stage)
    if keep >= selector.num_patches:  # keeps every patch: nothing to select
        return None
    predictor = IntegerPredictor.from_float(
        selector.predictor, in_scale=ctx.res_scale, in_bits=ctx.res.bits, scales=ctx.scales, prefix=_prefix(block),
        out_scale=logit_scale(ctx.scales[f"{_prefix(block)}.logit_diff"]), multiplier_bits=ctx.multiplier_bits)
    return DynamicViTStage(block=block, stage=selector.stage, predictor=predictor, keep=keep)
