"""SaiT's integer stage: the fewest best tokens holding a fraction ``r`` of the class attention, chosen at run time.

Runs before its block (``site="pre"``) on the previous block's class rows ``a[h, j]``
(:attr:`~tokensift.quant.stages.base.TokenFrame.cls_rows`, ``prob_frac`` fractional bits), as the float
rule of :mod:`tokensift.sw.methods.sait`:

* **scores**: the heads' mean class attention by the score combiner,
  :func:`tokensift.quant.select.head_weighted_scores` with EViT's equal head weights
  :func:`tokensift.quant.stages.evit.equal_head_weights` (``round(2**15 / H)``, exactly the mean for a
  power-of-two head count), in the unsigned :data:`~tokensift.quant.select.SCORE_FORMAT` (saturation,
  impossible for probabilities, would be counted at ``blocks.{i}.sait.scores``). These are the selector's
  keys, recorded in :attr:`StageRecord.scores`.
* **count**: :func:`tokensift.quant.select.mass_keep_count` with :data:`MASS_FRAC` = 15 and
  ``mass = max(1, floor(r * 2**15 + 1/2))`` (``r`` rounded half up to 15 bits; at least 1 so that every
  density above zero keeps a token, as the float rule does): exact integers, the fewest best-ranked
  candidates whose scores hold ``mass / 2**15`` of the candidates' total.
* **selection**: :func:`tokensift.quant.select.topk_keep` with that ``k`` (the selector in top-k mode, the
  lower index winning ties). The count adapts to each image.

**Run-time density.** :meth:`SaiTStage.set_keep_ratio` (and
:meth:`tokensift.quant.integer_model.IntegerViT.set_keep_ratio`, which forwards to every stage that has it)
moves the stage to another density without rebuilding: only ``mass``, one run-time register of the
hardware, changes. At ``r = 1.0`` the stage is skipped (no record, as the float model records no decision),
so the integer model computes exactly the dense integer model of the same weights and calibration. One
integer model serves every density when it is calibrated at ``r = 1.0`` (``model.set_keep_ratio(1.0)``
before :meth:`~tokensift.quant.integer_model.IntegerViT.from_float`); calibrating a model set to a lower
density measures the ranges of that density's pruned activations instead.
"""

from __future__ import annotations

import math

import numpy as np

from tokensift.checks import check_finite
from tokensift.quant.fixed import OverflowCounter
from tokensift.quant.select import SCORE_FORMAT, mass_keep_count, topk_keep
from tokensift.quant.stages.base import (
    BuildContext,
    IntegerStage,
    SelectionStep,
    StageContext,
    StageRecord,
    TokenFrame,
    keep_tokens,
)
from tokensift.quant.stages.evit import mean_attention

__all__ = ["SaiTStage", "MASS_FRAC", "mass_code", "calibration_sites", "from_float"]

#: fractional bits of the run-time attention mass (the density register)
MASS_FRAC = 15


def mass_code(keep_ratio: float) -> int:
    """The density ``r`` in (0, 1] as the integer mass ``max(1, floor(r * 2**15 + 1/2))``.

    >>> mass_code(1.0), mass_code(0.85), mass_code(1e-9)
    (32768, 27853, 1)
    """
    r = check_finite("keep ratio", keep_ratio, low=0.0, high=1.0, low_open=True)
    return max(1, math.floor(r * (1 << MASS_FRAC) + 0.5))


class SaiTStage(IntegerStage):
    """Keep the fewest best tokens that hold a fraction ``keep_ratio`` of the class attention."""

    site = "pre"

    def __init__(self, *, block: int, stage: int, keep_ratio: float):
        super().__init__(block=block, stage=stage)
        self.set_keep_ratio(keep_ratio)

    def set_keep_ratio(self, keep_ratio: float) -> None:
        """Move the stage to density ``keep_ratio`` in (0, 1] (1.0 skips it: the dense model)."""
        self.mass = mass_code(keep_ratio)
        self.keep_ratio = float(keep_ratio)

    def scores(self, frame: TokenFrame, ctx: StageContext) -> np.ndarray:
        if frame.cls_rows is None:
            raise RuntimeError(f"the SaiT stage before block {self.block} needs the previous block's attention")
        local = OverflowCounter()
        s = mean_attention(frame.cls_rows, ctx.prob_frac).scores(local)
        ctx.counter.add(f"blocks.{self.block}.sait.scores", local.total)
        return s

    def num_keep(self, scores: np.ndarray, n: int) -> int:
        """Candidates to keep: :func:`~tokensift.quant.select.mass_keep_count` at the stage's mass."""
        return mass_keep_count(scores, n, self.mass, mass_frac=MASS_FRAC)

    def hardware_step(self, frame: TokenFrame, ctx: StageContext) -> SelectionStep:
        comb = mean_attention(frame.cls_rows, ctx.prob_frac)
        return SelectionStep(features=frame.x, scores=comb.keys(), score_bits=SCORE_FORMAT.bits, mode="mass",
                             mass=self.mass, mass_frac=MASS_FRAC, combiner=comb)

    def __call__(self, frame: TokenFrame, ctx: StageContext) -> tuple[TokenFrame, StageRecord | None]:
        if self.keep_ratio >= 1.0:
            return frame, None  # the dense model: nothing is touched, nothing is recorded
        scores = self.scores(frame, ctx)
        keep, _ = topk_keep(scores, self.num_keep(scores, frame.n), frame.n, score_bits=SCORE_FORMAT.bits)
        return keep_tokens(frame, keep), self.record(frame, keep, scores)


def calibration_sites(selector, block: int, model) -> dict:
    return {}


def from_float(selector, block: int, ctx: BuildContext) -> SaiTStage:
    # built at every density, 1.0 included, so that the run-time density can later move it
    return SaiTStage(block=block, stage=selector.stage, keep_ratio=selector.keep_ratio)
