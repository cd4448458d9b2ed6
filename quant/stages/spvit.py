"""SPViT's integer stage, as released: per-head predictors, per-token head weights, sign or top-k, package token.

Runs before its block (``site="pre"``) on the residual tokens. With ``H`` heads of ``hd = C / H`` channels,
``P`` protected tokens (the class token and the earlier stages' package tokens) and the predictor input
``x = tokens[1:]`` (every token but the class token: the earlier package tokens count in the global mean,
their own decisions are ignored):

1. **per-head logit differences** ``d[h] = IntegerPredictor_h(x[:, h hd:(h+1) hd])``
   (:mod:`tokensift.quant.stages.predictor`), all heads requantized to **one** calibrated scale (signed
   16-bit codes), so they can be summed;
2. **per-token head weights** (the squeeze-and-excitation branch): each head's channel sum at the token
   ``sum_c x[i, h hd + c]`` (exact) requantized into int8 at the calibrated scale of the float channel mean
   (the ``1/hd`` folded into the multiplier), ``IntLinear_{H -> H/2}``, GELU, ``IntLinear_{H/2 -> H}``,
   integer sigmoid (:mod:`tokensift.quant.sigmoid`): ``w[h, i]`` with 15 fractional bits; normalised per
   token, ``v[h, i] = round_shift(floor(w[h, i] 2**16 / W_i), 1)`` with ``W_i = sum_h w[h, i]``, i.e.
   ``w / W`` rounded half up to :data:`WEIGHT_FRAC` bits (equal weights when every ``w`` is 0);
3. **score** ``s_i = head_weighted_scores(d, v)`` (signed 16-bit, in logit-difference codes):
   ``sum_h v_h d_h = sum_h w_h (log p_keep,h - log p_drop,h) / W``, the float's mixed keep-minus-drop
   log-probability. ``decision="threshold"``: keep when ``s_i > 0`` (the release's noise-free rule ``mean_w log
   p_keep > mean_w log p_drop``), the selector in threshold mode on the keys ``order_key(s, 16)`` with ``t =
   order_key(0, 16)``; ``decision="topk"``: the selector's top-k at the schedule's planned count (lower index
   wins ties). The selector sees the class token and the candidates; the protected package tokens bypass it.
4. **package token** (where the float adds one: every stage with ``"threshold"``, only where the schedule
   prunes with ``"topk"``): the package weight of a token is its mixed keep probability
   ``p_i = sum_h v_h sigmoid(d_h)`` (integer sigmoid of the logit codes, then :func:`head_weighted_scores`
   into the unsigned ``SCORE_FORMAT``, 15 fractional bits), and the token is
   :func:`~tokensift.quant.select.package_token` over the newly pruned tokens, ``mode="sum"`` (the release's
   unnormalised ``sum p_i x_i``: ``fit(round_shift(sum p_i x_i, 15))``, half up, saturated into the residual
   format) or ``"mean"``; all zeros when nothing was pruned. It goes right after the protected tokens and is
   protected (:func:`~tokensift.quant.stages.base.keep_tokens` with ``protected=``).

The selector gets two numbers per token: the ranking key and the package weight. :attr:`StageRecord.scores`
holds the keys (the class token's score is 0, as the float model records it). Overflows are counted under
``blocks.{i}.spvit.<what>`` (``heads.{h}.<layer>``, ``head_mean``, ``se1``, ``se_gelu``, ``se2``, ``score``,
``keep_prob``, ``package``).
"""

from __future__ import annotations

import numpy as np

from tokensift.quant.fixed import INT8, OverflowCounter, requantize, round_shift
from tokensift.quant.gelu import GeluParams, gelu_int
from tokensift.quant.gemm import IntLinear
from tokensift.quant.qparams import quantize_multiplier
from tokensift.quant.select import SCORE_FORMAT, head_weighted_scores, order_key, package_token
from tokensift.quant.sigmoid import SigmoidParams, sigmoid_int
from tokensift.quant.stages.base import (
    BuildContext,
    CombinerInput,
    IntegerStage,
    SelectionStep,
    StageContext,
    StageRecord,
    TokenFrame,
    keep_tokens,
    to_np,
)
from tokensift.quant.stages.predictor import (
    LOGIT_BITS,
    LOGIT_FORMAT,
    IntegerPredictor,
    logit_diff_site,
    logit_scale,
    moved_counts,
    predictor_sites,
    select_candidates,
)

__all__ = ["SPViTStage", "HeadWeights", "WEIGHT_FRAC", "normalised_weights", "calibration_sites", "from_float"]

#: fractional bits of the per-token normalised head weights
WEIGHT_FRAC = 15


def normalised_weights(w: np.ndarray, *, frac: int = WEIGHT_FRAC) -> np.ndarray:
    """``w / sum_h w`` per token (axis 0 are heads), rounded half up to ``frac`` bits; equal when all are 0.

    >>> normalised_weights(np.array([[3, 0], [1, 0]]), frac=4).tolist()  # 3/4 and 1/4; then 1/2 each
    [[12, 8], [4, 8]]
    """
    total = w.sum(axis=0)
    H = w.shape[0]
    w = np.where(total > 0, w, 1)
    total = np.where(total > 0, total, H)
    return round_shift((w << (frac + 1)) // total, 1)


class HeadWeights:
    """The squeeze-and-excitation branch in integers: per-token head weights ``w`` (sigmoid outputs)."""

    def __init__(self, *, head_dim: int, mean_multiplier: int, mean_shift: int, se1: IntLinear, gelu: GeluParams,
                 se2: IntLinear, sigmoid: SigmoidParams):
        self.head_dim = head_dim
        self.mean_multiplier, self.mean_shift = mean_multiplier, mean_shift
        self.se1, self.gelu, self.se2, self.sigmoid = se1, gelu, se2, sigmoid

    def __call__(self, x: np.ndarray, *, counter: OverflowCounter, site: str) -> np.ndarray:
        """``x`` (n, C) residual codes -> (H, n) weights with ``sigmoid.out_frac`` fractional bits."""
        sums = x.reshape(x.shape[0], -1, self.head_dim).sum(axis=-1)
        m = requantize(sums, self.mean_multiplier, self.mean_shift, INT8, counter=counter, site=f"{site}.head_mean")
        h = gelu_int(self.se1(m, counter=counter, site=f"{site}.se1"), self.gelu, counter=counter,
                     site=f"{site}.se_gelu")
        h = self.se2(h, counter=counter, site=f"{site}.se2")
        return sigmoid_int(h, self.sigmoid).T


class SPViTStage(IntegerStage):
    """One SPViT stage (see the module docstring)."""

    site = "pre"

    def __init__(self, *, block: int, stage: int, heads: list[IntegerPredictor], weights: HeadWeights,
                 keep_sigmoid: SigmoidParams, decision: str, keep: int, package: str):
        super().__init__(block=block, stage=stage)
        self.heads = heads
        self.weights = weights
        self.keep_sigmoid = keep_sigmoid
        self.decision = decision
        self.keep = keep
        self.package = package  # "sum" (the release) or "mean"
        #: the threshold rule may prune nothing and still add its package token (IntegerViT sizes n_max by it)
        self.max_added_tokens = 1 if decision == "threshold" else 0

    @property
    def site_name(self) -> str:
        return f"blocks.{self.block}.spvit"

    def evaluate(self, frame: TokenFrame, ctx: StageContext) -> tuple[np.ndarray, np.ndarray]:
        """The signed scores (N,) and the package weights (N,) (``SCORE_FORMAT``; 0 for the class token)."""
        scores, weights, _, _ = self._evaluate(frame, ctx)
        return scores, weights

    def _evaluate(self, frame: TokenFrame, ctx: StageContext):
        site = self.site_name
        x = frame.x[1:]
        H = len(self.heads)
        hd = x.shape[1] // H
        d = np.stack([head.logit_diff(x[:, h * hd:(h + 1) * hd], counter=ctx.counter, site=f"{site}.heads.{h}")
                      for h, head in enumerate(self.heads)])
        v = normalised_weights(self.weights(x, counter=ctx.counter, site=site))
        local = OverflowCounter()
        score = head_weighted_scores(d, v, attn_frac=0, importance_frac=WEIGHT_FRAC, score=LOGIT_FORMAT, counter=local)
        moved_counts(local, ctx.counter, f"{site}.score")
        local = OverflowCounter()
        p = head_weighted_scores(sigmoid_int(d, self.keep_sigmoid), v, attn_frac=self.keep_sigmoid.out_frac,
                                 importance_frac=WEIGHT_FRAC, score=SCORE_FORMAT, counter=local)
        moved_counts(local, ctx.counter, f"{site}.keep_prob")
        zero = np.zeros(1, dtype=np.int64)
        return np.concatenate([zero, score]), np.concatenate([zero, p]), d, v

    def hardware_step(self, frame: TokenFrame, ctx: StageContext) -> SelectionStep:
        """The combiner mixes the per-head logit differences by the per-token head weights (signed, its
        output is ``order_key`` of the score, the class token's column 0); the selector keeps keys above
        ``order_key(0)`` (or the top k), the earlier package tokens bypassing it, and fuses the pruned tokens
        weighted by their mixed keep probability, which the predictors' reference computes until the
        linear engine runs them."""
        quiet = StageContext(counter=OverflowCounter(), res=ctx.res, prob_frac=ctx.prob_frac)
        scores, weights, d, v = self._evaluate(frame, quiet)
        col = np.zeros((d.shape[0], 1), dtype=np.int64)
        comb = CombinerInput(values=np.concatenate([col, d], axis=1), weights=np.concatenate([col, v], axis=1),
                             value_frac=0, weight_frac=WEIGHT_FRAC, score=LOGIT_FORMAT)
        P = frame.num_protected
        common = dict(features=frame.x, scores=order_key(scores, LOGIT_BITS), score_bits=LOGIT_BITS, combiner=comb,
                      package=self.package, package_weights=weights, weight_bits=SCORE_FORMAT.bits,
                      weight_frac=SCORE_FORMAT.frac, package_at="protected", bypass=P - 1)
        if self.decision == "threshold":
            return SelectionStep(mode="threshold", threshold=int(order_key([0], LOGIT_BITS)[0]), **common)
        return SelectionStep(mode="topk", k=min(self.keep, frame.n - P), **common)

    def __call__(self, frame: TokenFrame, ctx: StageContext) -> tuple[TokenFrame, StageRecord]:
        scores, weights = self.evaluate(frame, ctx)
        keys = order_key(scores, LOGIT_BITS)
        P = frame.num_protected
        if self.decision == "threshold":
            keep = select_candidates(keys, P, score_bits=LOGIT_BITS, threshold=int(order_key([0], LOGIT_BITS)[0]))
        else:
            keep = select_candidates(keys, P, score_bits=LOGIT_BITS, k=min(self.keep, frame.n - P))
        local = OverflowCounter()
        pkg = package_token(frame.x, weights, ~keep, feature_bits=ctx.res.bits, mode=self.package,
                            score_frac=SCORE_FORMAT.frac, counter=local)[None]
        moved_counts(local, ctx.counter, f"{self.site_name}.package")
        return keep_tokens(frame, keep, protected=pkg), self.record(frame, keep, keys)


def _prefix(block: int) -> str:
    return f"blocks.{block}.spvit"


def calibration_sites(selector, block: int, model) -> dict:
    pre = _prefix(block)
    mp = selector.predictor
    sites = {}
    for h, head in enumerate(mp.heads):
        sites.update(predictor_sites(head, f"{pre}.heads.{h}"))
    sites[f"{pre}.logit_diff"] = [logit_diff_site(head) for head in mp.heads]  # one scale for every head
    se = mp.se
    sites.update({f"{pre}.head_mean": (se[0], "input"), f"{pre}.se1": (se[0], "output"),
                  f"{pre}.se_gelu": (se[1], "output"), f"{pre}.se2": (se[2], "output")})
    return sites


def from_float(selector, block: int, ctx: BuildContext) -> SPViTStage | None:
    if selector.decision == "topk" and not selector.adds_package():
        return None  # the schedule prunes nothing here and adds no package token (every other stage adds one)
    pre, s, mb = _prefix(block), ctx.scales, ctx.multiplier_bits
    mp = selector.predictor
    s_logit = logit_scale(s[f"{pre}.logit_diff"])
    heads = [IntegerPredictor.from_float(head, in_scale=ctx.res_scale, in_bits=ctx.res.bits, scales=s,
                                         prefix=f"{pre}.heads.{h}", out_scale=s_logit, multiplier_bits=mb)
             for h, head in enumerate(mp.heads)]
    se = mp.se
    mean_m, mean_s = quantize_multiplier(ctx.res_scale / (mp.head_dim * s[f"{pre}.head_mean"]), mb)

    def linear(layer, s_in, s_out):
        return IntLinear.from_float(to_np(layer.weight), to_np(layer.bias), in_scale=s_in, out_scale=s_out,
                                    multiplier_bits=mb)

    weights = HeadWeights(head_dim=mp.head_dim, mean_multiplier=mean_m, mean_shift=mean_s,
                          se1=linear(se[0], s[f"{pre}.head_mean"], s[f"{pre}.se1"]),
                          gelu=GeluParams.from_scales(s[f"{pre}.se1"], s[f"{pre}.se_gelu"], multiplier_bits=mb),
                          se2=linear(se[2], s[f"{pre}.se_gelu"], s[f"{pre}.se2"]),
                          sigmoid=SigmoidParams.from_scale(s[f"{pre}.se2"]))
    return SPViTStage(block=block, stage=selector.stage, heads=heads, weights=weights,
                      keep_sigmoid=SigmoidParams.from_scale(s_logit, in_bits=LOGIT_BITS),
                      decision=selector.decision, keep=selector.kept_patches(), package=selector.package)
