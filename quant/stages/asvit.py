"""AS-ViT's integer stage: head-weighted class attention against the stage's learned threshold.

Runs before its block (``site="pre"``) on what the previous block's attention computed: each head's class
row ``a[h, j]`` (:attr:`~tokensift.quant.stages.base.TokenFrame.cls_rows`, ``prob_frac`` fractional bits)
and each head's int8 output ``o[j, h, :]`` (:attr:`~tokensift.quant.stages.base.TokenFrame.head_out`).
The float rule (:mod:`tokensift.sw.methods.asvit`) keeps a patch token ``j`` when
``sum_h w[h, j] a[h, j] > t``; the integer rule computes, with ``F =`` :data:`HEAD_WEIGHT_FRAC` (15):

* **head weights**, ``head_importance="token"`` (the release): per token, each head's output L2 norm
  ``n[h, j] = isqrt(sum_d o[j, h, d]**2)`` (:func:`tokensift.quant.intmath.isqrt`, the floor of the
  norm in int8 LSBs) over the heads' sum at that token,
  ``w[h, j] = round_shift((n[h, j] << (F + 1)) // sum_g n[g, j], 1, HALF_UP)``, i.e. ``n / sum n``
  rounded half up to ``F`` bits (the floor division keeps one extra bit that the rounding removes); a token
  whose heads all output zeros weighs them equally, ``round_shift((1 << (F + 1)) // H, 1, HALF_UP)``
  (where the float rule's ``1e-8`` gives that token the score 0). :func:`token_head_weights`.
  ``head_importance="image"``: one weight per head from its norm over all the frame's tokens,
  :func:`tokensift.quant.select.head_importance` with ``out_frac=F``.
* **scores**: :func:`tokensift.quant.select.head_weighted_scores` (the score combiner) with the (H, N)
  or (H,) weights: ``round_shift(sum_h a * w, prob_frac + F - 15, HALF_UP)`` saturated into the unsigned
  :data:`~tokensift.quant.select.SCORE_FORMAT` (16 bits, 15 fractional; a score is at most about 1, so it
  never saturates in practice; any that does is counted at ``blocks.{i}.asvit.scores``). These are the
  selector's keys, recorded in :attr:`StageRecord.scores`.
* **threshold**: the stage's learned threshold ``t = exp(log_threshold) / num_patches`` (float64) as the
  integer ``T = floor(t * 2**15)``, clamped to ``[0, 2**16 - 1]``. For an integer score ``s``,
  ``s > T`` holds exactly when ``s * 2**-15 > t``: the integer compare *is* the float compare applied to
  the integer score's real value (the clamp changes nothing: a threshold beyond the largest score keeps
  nothing either way).
* **selection**: :func:`tokensift.quant.select.threshold_keep` (the selector in threshold mode: the
  class token and every candidate with ``s > T``, in order). The count adapts to each image.
"""

from __future__ import annotations

import math

import numpy as np

from tokensift.quant.fixed import OverflowCounter, Rounding, round_shift
from tokensift.quant.intmath import isqrt
from tokensift.quant.select import SCORE_FORMAT, head_importance, threshold_keep
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
from tokensift.quant.stages.evit import HEAD_WEIGHT_FRAC

__all__ = ["ASViTStage", "HEAD_WEIGHT_FRAC", "token_head_weights", "threshold_code", "calibration_sites",
           "from_float"]


def token_head_weights(head_out, *, out_frac: int = HEAD_WEIGHT_FRAC) -> np.ndarray:
    """(H, N) per-token head weights from the heads' int8 outputs ``head_out`` (N, H, head_dim).

    ``w[h, j] = n[h, j] / sum_g n[g, j]`` rounded half up to ``out_frac`` bits, ``n = isqrt(sum o**2)``;
    equal weights at a token whose heads all output zeros (see the module docstring).

    >>> o = np.zeros((2, 2, 4), dtype=np.int64); o[0, 0] = 3; o[0, 1] = 1  # token 0: norms 6 and 2
    >>> token_head_weights(o, out_frac=8).tolist()  # token 1 is all zeros: equal weights
    [[192, 128], [64, 128]]
    """
    x = np.asarray(head_out, dtype=np.int64)
    if x.ndim != 3:
        raise ValueError(f"head_out must have 3 dimensions (tokens, heads, head_dim), not {x.ndim}")
    norms = isqrt((x * x).sum(axis=2)).T  # (H, N)
    total = norms.sum(axis=0)
    zero = total == 0
    norms = np.where(zero[None], 1, norms)
    total = np.where(zero, norms.shape[0], total)
    return round_shift((norms << (out_frac + 1)) // total[None], 1, Rounding.HALF_UP)


def threshold_code(threshold: float, *, frac: int = SCORE_FORMAT.frac, bits: int = SCORE_FORMAT.bits) -> int:
    """The float threshold ``t`` as the integer ``T = floor(t * 2**frac)`` in ``[0, 2**bits - 1]``: an
    integer score ``s`` has ``s > T`` exactly when ``s * 2**-frac > t``.

    >>> threshold_code(0.5), threshold_code(0.5 + 2**-16), threshold_code(3.0), threshold_code(0.0)
    (16384, 16384, 65535, 0)
    """
    if not math.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a non-negative finite number, not {threshold}")
    return int(min(math.floor(threshold * 2.0**frac), (1 << bits) - 1))


class ASViTStage(IntegerStage):
    """Keep the patch tokens whose head-weighted class attention exceeds the stage's threshold ``T``."""

    site = "pre"

    def __init__(self, *, block: int, stage: int, threshold: int, head_importance: str = "token"):
        super().__init__(block=block, stage=stage)
        if head_importance not in ("token", "image"):
            raise ValueError(f"head_importance must be 'token' or 'image', not {head_importance!r}")
        self.threshold = int(threshold)
        self.head_importance = head_importance

    def weights(self, frame: TokenFrame) -> np.ndarray:
        """The head weights: (H, N) per token, or (H,) per head for ``head_importance="image"``."""
        if self.head_importance == "token":
            return token_head_weights(frame.head_out)
        return head_importance(np.transpose(frame.head_out, (1, 0, 2)), out_frac=HEAD_WEIGHT_FRAC)

    def scores(self, frame: TokenFrame, ctx: StageContext) -> np.ndarray:
        if frame.cls_rows is None or frame.head_out is None:
            raise RuntimeError(f"the AS-ViT stage before block {self.block} needs the previous block's attention")
        local = OverflowCounter()
        s = self.combiner_input(frame, ctx.prob_frac).scores(local)
        ctx.counter.add(f"blocks.{self.block}.asvit.scores", local.total)
        return s

    def combiner_input(self, frame: TokenFrame, prob_frac: int) -> CombinerInput:
        """The score combiner's input: the class rows with the head weights (per token or per head)."""
        return CombinerInput(values=frame.cls_rows, weights=self.weights(frame), value_frac=prob_frac,
                             weight_frac=HEAD_WEIGHT_FRAC, score=SCORE_FORMAT)

    def hardware_step(self, frame: TokenFrame, ctx: StageContext) -> SelectionStep:
        comb = self.combiner_input(frame, ctx.prob_frac)
        return SelectionStep(features=frame.x, scores=comb.keys(), score_bits=SCORE_FORMAT.bits,
                             mode="threshold", threshold=self.threshold, combiner=comb)

    def __call__(self, frame: TokenFrame, ctx: StageContext) -> tuple[TokenFrame, StageRecord]:
        scores = self.scores(frame, ctx)
        keep, _ = threshold_keep(scores, self.threshold, frame.n)
        return keep_tokens(frame, keep), self.record(frame, keep, scores)


def calibration_sites(selector, block: int, model) -> dict:
    return {}


def from_float(selector, block: int, ctx: BuildContext) -> ASViTStage:
    t = math.exp(float(selector.log_threshold.detach())) / selector.num_patches  # float64, from the float32 log
    return ASViTStage(block=block, stage=selector.stage, threshold=threshold_code(t),
                      head_importance=selector.head_importance)
