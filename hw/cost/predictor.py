"""A pruning stage's token predictor on the accelerator: the GEMM jobs and vector-unit passes it runs.

The predictors are small MLPs; they run on the same GEMM engine and vector units as the encoder layers, one
step after the other (each step reads the previous one's output), so their cost is the sum of those
blocks' exact cycle models, not their multiply-accumulates at the array's peak rate: a job of one output
channel (the keep logit) occupies a whole ``cols``-wide column tile, and every job pays its weight fetch.

**DynamicViT** (:class:`tokensift.quant.stages.predictor.IntegerPredictor`), over the ``n = n_in - 1``
patch tokens of ``C`` channels::

    layernorm   n x C                  LayerNorm unit
    fc          n x C -> C             GEMM engine (GELU on its output beats: the unit's latency)
    token_mean  n x C/2                token-mean unit (the global half's mean over the tokens)
    fc1         n x C -> C/2           GEMM engine (+ GELU latency)
    fc2         n x C/2 -> C/4         GEMM engine (+ GELU latency)
    out         n x C/4 -> 1           GEMM engine (the keep - drop logit difference, folded offline)

**SPViT** (:mod:`tokensift.quant.stages.spvit`): the same predictor on each head's ``C / H`` channels, one
head after the other, and the squeeze-and-excitation branch: the per-token head means (a reduction of the
``n x C`` residual codes, ``rows`` codes per cycle as the LayerNorm unit's statistics stage sums them),
``se1`` (``H -> hidden``, + GELU latency) and ``se2`` (``hidden -> H``). The sigmoids, the head-weighted mix
and the package token are the score combiner's and the selector's (the stage's selector frame).

The other methods score tokens from attention (EViT, AS-ViT) or by a run-time density (SaiT): no predictor.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PredictorOp", "predictor_ops", "UNITS"]

#: the blocks a predictor step runs on
UNITS = ("linear", "gelu", "layernorm", "token_mean", "channel_sum")


@dataclass(frozen=True)
class PredictorOp:
    """One step: ``unit`` over ``tokens`` tokens of ``in_features`` channels, producing ``out_features``."""

    unit: str
    tokens: int
    in_features: int
    out_features: int

    @property
    def macs(self) -> int:
        """Multiply-accumulates on the GEMM engine (0 for the vector units)."""
        return self.tokens * self.in_features * self.out_features if self.unit == "linear" else 0


def _lg_ops(n: int, c: int) -> list[PredictorOp]:
    """DynamicViT's ``PredictorLG`` of width ``c`` over ``n`` tokens, as the integer model computes it."""
    return [PredictorOp("layernorm", n, c, c),
            PredictorOp("linear", n, c, c), PredictorOp("gelu", n, c, c),
            PredictorOp("token_mean", n, c // 2, c // 2),
            PredictorOp("linear", n, c, c // 2), PredictorOp("gelu", n, c // 2, c // 2),
            PredictorOp("linear", n, c // 2, c // 4), PredictorOp("gelu", n, c // 4, c // 4),
            PredictorOp("linear", n, c // 4, 1)]


def predictor_ops(selector, n_in: int, dim: int) -> tuple[PredictorOp, ...]:
    """The steps of ``selector``'s predictor for a frame of ``n_in`` tokens (class token included) of
    ``dim`` channels; () for a selector without one."""
    from tokensift.sw.methods.dynamicvit import PredictorLG
    from tokensift.sw.methods.spvit import MultiHeadPredictor

    predictor = getattr(selector, "predictor", None)
    n = max(0, int(n_in) - 1)  # the class token is never scored
    if n == 0:
        return ()
    if isinstance(predictor, PredictorLG):
        return tuple(_lg_ops(n, dim))
    if isinstance(predictor, MultiHeadPredictor):
        heads, hd = predictor.num_heads, predictor.head_dim
        hidden = predictor.se[0].out_features
        ops = [op for _ in range(heads) for op in _lg_ops(n, hd)]
        ops += [PredictorOp("channel_sum", n, dim, heads),
                PredictorOp("linear", n, heads, hidden), PredictorOp("gelu", n, hidden, hidden),
                PredictorOp("linear", n, hidden, heads)]
        return tuple(ops)
    return ()
