"""The integer form of a token-pruning stage: what every method's integer stage gets and returns.

:class:`tokensift.quant.integer_model.IntegerViT` runs one image at a time (each image keeps its own token
count, as the hardware does) and hands each stage a :class:`TokenFrame`: the residual tokens, their
original positions, how many leading tokens are protected, and what the attention just before the stage
computed (each head's class row and output). A stage returns the new frame and a :class:`StageRecord` of
its decision, which the accuracy/agreement benchmarks compare with the float model's
:class:`tokensift.sw.selection.Decision`.

Stages are built from the float selector by their method's module (``quant/stages/<method>.py``), which
provides ``calibration_sites(selector, block, model)`` (extra activation ranges it needs, e.g. a predictor's
layers) and ``from_float(selector, block, ctx)`` (an :class:`IntegerStage`, or None for a stage that keeps
every token); :mod:`tokensift.quant.stages` finds the module for a selector class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np

from tokensift.quant.fixed import FixedFormat, OverflowCounter

__all__ = ["TokenFrame", "StageRecord", "StageContext", "BuildContext", "IntegerStage", "CombinerInput",
           "SelectionStep", "keep_tokens", "to_np"]


def to_np(t) -> np.ndarray:
    """A torch tensor (or array-like) as a float64 NumPy array."""
    if hasattr(t, "detach"):
        return t.detach().to("cpu").double().numpy()
    return np.asarray(t, dtype=np.float64)


@dataclass(frozen=True)
class TokenFrame:
    """One image's tokens between two blocks of the integer model.

    Attributes:
        x: (N, C) residual tokens (signed ``res.bits`` integers); position 0 is the class token.
        index: (N,) original position of each token (0 class, 1.. patches, -1 a token a method added).
        num_protected: leading tokens no stage may drop (the class token, SPViT's package tokens).
        cls_rows: (H, N) the class token's attention probabilities (``prob_frac`` fractional bits) in the
            attention that last ran over these tokens; None before the first block.
        head_out: (N, H, head_dim) that attention's int8 outputs per head (before the projection).
    """

    x: np.ndarray
    index: np.ndarray
    num_protected: int = 1
    cls_rows: np.ndarray | None = None
    head_out: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    def replace(self, **changes) -> TokenFrame:
        return replace(self, **changes)


@dataclass(frozen=True)
class StageRecord:
    """One stage's decision for one image: ``keep`` (N,) over the tokens that entered (protected ones
    True), their original ``index`` (N,), the integer ``scores`` (N,) the rule read, and the ``block``
    the stage runs at."""

    stage: int
    block: int
    index: np.ndarray
    keep: np.ndarray
    scores: np.ndarray
    num_protected: int


@dataclass
class StageContext:
    """What a stage needs at run time besides its frame."""

    counter: OverflowCounter
    res: FixedFormat          # the residual stream's format (the tokens' integers)
    prob_frac: int            # fractional bits of ``TokenFrame.cls_rows``


@dataclass
class BuildContext:
    """What a stage's ``from_float`` gets: the float model and the integer model's calibrated scales."""

    model: object                       # the float tokensift.sw VisionTransformer
    scales: dict[str, float]            # calibrated activation scales by site name
    res: FixedFormat                    # residual format
    res_scale: float                    # its scale (real value of one LSB)
    prob_frac: int                      # class-row fractional bits (the softmax's prob_frac)
    multiplier_bits: int                # width of requantization multipliers
    extra: dict = field(default_factory=dict)


@dataclass
class CombinerInput:
    """What the score combiner gets for one image: per-head ``values`` (H, N) with ``value_frac``
    fractional bits (class-attention rows, or signed logit differences), head ``weights`` (H,) or per head
    and token (H, N) with ``weight_frac`` bits, and the ``score`` format it rounds into (signed: its
    ``o_score`` carries :func:`tokensift.quant.select.order_key` of the score)."""

    values: np.ndarray
    weights: np.ndarray
    value_frac: int
    weight_frac: int
    score: FixedFormat

    @property
    def per_token(self) -> bool:
        return self.weights.ndim == 2

    def scores(self, counter: OverflowCounter | None = None) -> np.ndarray:
        """The combiner's scores: :func:`tokensift.quant.select.head_weighted_scores` of these inputs."""
        from tokensift.quant.select import head_weighted_scores

        return head_weighted_scores(self.values, self.weights, attn_frac=self.value_frac,
                                    importance_frac=self.weight_frac, score=self.score, counter=counter)

    def keys(self) -> np.ndarray:
        """What ``o_score`` carries: the scores, as :func:`~tokensift.quant.select.order_key` when signed."""
        from tokensift.quant.select import order_key

        s = self.scores()
        return order_key(s, self.score.bits) if self.score.signed else s


@dataclass
class SelectionStep:
    """One image's selection step as the hardware runs it: (score combiner ->) token selector.

    ``scores`` (N,) are the unsigned keys the selector ranks (``score_bits`` wide; token 0's is ignored),
    equal to the combiner's output when ``combiner`` is given. ``mode`` is ``"topk"`` (``k`` patch tokens),
    ``"threshold"`` (keys ``> threshold``) or ``"mass"`` (SaiT: ``mass / 2**mass_frac`` of the candidates'
    total). ``package`` is the package rule (``"sum"`` / ``"mean"``, or None for none), weighing the pruned
    tokens by ``package_weights`` (N,) (``weight_bits`` wide; None: by the scores) with ``weight_frac``
    fractional bits; the package token goes after the kept tokens (``package_at="end"``, EViT) or right
    after the protected ones (``"protected"``, SPViT). ``features`` (N, C) are the frame's tokens; the
    ``bypass`` tokens after the class token (SPViT's earlier package tokens: protected) go around the
    selector, which sees the class token and the candidates ``[0, 1 + bypass, ..., N - 1]``.
    """

    features: np.ndarray
    scores: np.ndarray
    score_bits: int
    mode: str
    k: int = 0
    threshold: int = 0
    mass: int = 0
    mass_frac: int = 15
    combiner: CombinerInput | None = None
    package: str | None = None
    package_weights: np.ndarray | None = None
    weight_bits: int = 0
    weight_frac: int = 0
    package_at: str = "end"
    bypass: int = 0

    @property
    def selector_tokens(self) -> np.ndarray:
        """Indices of the frame's tokens the selector sees (the class token, then the candidates)."""
        return np.concatenate([[0], np.arange(1 + self.bypass, len(self.scores))]).astype(np.int64)


class IntegerStage(ABC):
    """Base class of a method's integer selection stage.

    ``site``: ``"pre"`` (runs before its block, on the previous attention's outputs) or ``"mid"`` (between
    its block's attention and MLP), as the float selector's ``site``. ``block`` and ``stage`` are set by
    the builder.
    """

    site: ClassVar[str] = "pre"

    def __init__(self, *, block: int, stage: int):
        self.block = block
        self.stage = stage

    @abstractmethod
    def __call__(self, frame: TokenFrame, ctx: StageContext) -> tuple[TokenFrame, StageRecord]:
        """Select tokens of one image: the new frame and the record of the decision."""

    def hardware_step(self, frame: TokenFrame, ctx: StageContext) -> SelectionStep:
        """This stage's selection of ``frame`` as the score combiner and the selector compute it (the
        real-image simulation, :mod:`tokensift.sim.real_images`, runs it and checks the result against
        what ``__call__`` did)."""
        raise NotImplementedError(f"{type(self).__name__} does not describe its hardware step")

    def record(self, frame: TokenFrame, keep: np.ndarray, scores: np.ndarray) -> StageRecord:
        return StageRecord(self.stage, self.block, frame.index.copy(), keep.copy(), np.asarray(scores).copy(),
                           frame.num_protected)


def keep_tokens(frame: TokenFrame, keep: np.ndarray, *, appended: np.ndarray | None = None,
                protected: np.ndarray | None = None) -> TokenFrame:
    """The frame with only the ``keep`` tokens, in order (protected ones must be kept), plus added tokens.

    ``appended`` (E, C) go after the kept tokens and are candidates of later stages (EViT's fused token);
    ``protected`` (E, C) go right after the protected tokens and are protected from now on (SPViT's package
    tokens). Added tokens get index -1; ``cls_rows``/``head_out`` are dropped (they no longer line up).
    """
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (frame.n,):
        raise ValueError(f"keep must have shape ({frame.n},), not {keep.shape}")
    if not keep[:frame.num_protected].all():
        raise ValueError("a stage dropped a protected token")
    idx = np.flatnonzero(keep)
    x, index = frame.x[idx], frame.index[idx]
    P = frame.num_protected
    if protected is not None and len(protected):
        x = np.concatenate([x[:P], protected, x[P:]])
        index = np.concatenate([index[:P], np.full(len(protected), -1), index[P:]])
        P += len(protected)
    if appended is not None and len(appended):
        x = np.concatenate([x, appended])
        index = np.concatenate([index, np.full(len(appended), -1)])
    return TokenFrame(x=x.astype(np.int64), index=index.astype(np.int64), num_protected=P)
