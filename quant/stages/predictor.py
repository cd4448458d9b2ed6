"""DynamicViT's prediction module (:class:`tokensift.sw.methods.dynamicvit.PredictorLG`) in integers.

Shared by the DynamicViT stage and SPViT's per-head predictors. For ``n`` tokens of ``C`` residual codes
(signed ``res_bits`` at the residual scale), every step an existing integer kernel with calibrated scales:

1. ``h = layernorm_int(x)`` (int8 at the scale of the float ``LayerNorm``'s output);
2. ``h = gelu_int(IntLinear_{C -> C}(h))`` (int8 after each);
3. **global half**: the first ``C/2`` channels stay per token, the other ``C/2`` are replaced by their mean
   over the ``n`` tokens (on the inference path the float policy is all ones: every token the predictor
   sees counts), ``g_c = floor(sum_i h[i, c] / n + 1/2)`` exactly (:func:`mean_rows`: a floor division of
   ``2 sum`` by ``n`` and a half-up rounding bit; the mean of int8 codes is an int8 code at the same scale,
   so the concatenation needs no requantization);
4. ``IntLinear_{C -> C/2}``, ``gelu_int``, ``IntLinear_{C/2 -> C/4}``, ``gelu_int`` (int8 after each);
5. **keep score**: the last layer's two rows are folded offline into one, ``w_keep - w_drop`` and ``b_keep -
   b_drop``, so one output per token is the logit difference ``d = l_keep - l_drop = log p_keep - log
   p_drop`` (no softmax: ``p_keep = sigmoid(d)`` is monotone in ``d``), requantized into signed
   :data:`LOGIT_BITS`-bit codes at a calibrated scale (:data:`LOGIT_HEADROOM` times the float ``l_keep -
   l_drop``'s range on 16 bits).

Calibration (DynamicViT's :func:`~tokensift.quant.stages.dynamicvit.calibration_sites`): the predictor's
activation sites at the :data:`PREDICTOR_PERCENTILE` th percentile of ``|x|``, the last GELU's output at the
:data:`LAST_GELU_PERCENTILE` th, not at the maximum. At the top-k boundary sit background patches whose float
scores differ by a few thousandths of a logit, so the int8 rounding of the activations decides their order
(the weights' int8 rounding and the 16-bit logit codes hardly do); the last GELU's output, the folded row's
input, carries about half of that rounding error. Clipping the rare large activations (of tokens far from
the boundary) buys finer steps for the ones that matter.

Every saturation is counted under ``<site>.<layer>`` (``norm``, ``fc``, ``gelu``, ``fc1``, ``gelu1``,
``fc2``, ``gelu2``, ``out``). The selector ranks :func:`tokensift.quant.select.order_key` of the signed
scores; :func:`select_candidates` runs it on the class token and the candidates (protected tokens bypass it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tokensift.quant.calibrate import PercentileObserver
from tokensift.quant.fixed import FixedFormat, OverflowCounter, round_shift
from tokensift.quant.gelu import GeluParams, gelu_int
from tokensift.quant.gemm import IntLinear
from tokensift.quant.layernorm import LayerNormParams, layernorm_int
from tokensift.quant.qparams import symmetric_scale
from tokensift.quant.select import threshold_keep, topk_keep
from tokensift.quant.stages.base import to_np

__all__ = ["LOGIT_BITS", "LOGIT_FORMAT", "LOGIT_HEADROOM", "PREDICTOR_PERCENTILE", "LAST_GELU_PERCENTILE",
           "IntegerPredictor", "mean_rows", "predictor_sites", "logit_diff_site", "percentile_observer",
           "last_gelu_observer", "logit_scale", "select_candidates", "moved_counts"]

#: width of the signed keep-minus-drop logit codes (and of the selector's keys built from them)
LOGIT_BITS = 16
LOGIT_FORMAT = FixedFormat(bits=LOGIT_BITS, frac=0, signed=True)
#: the logit codes cover this many times the calibrated range: the deepest predictors' ranges vary from
#: image to image, and saturated logits tie at the top of the ranking; 2 of the 16 bits cost nothing next to
#: the int8 layers' rounding (on MNIST the codes' LSB is 40x below the median integer - float error)
LOGIT_HEADROOM = 4
#: the percentile of ``|x|`` DynamicViT's predictor sites are calibrated at (:func:`percentile_observer`):
#: on held-out MNIST training images it flips 26% fewer of the first stage's keep decisions than the maximum
#: (99.99: 13%, 99.5: 15%, 99: 6%; at the later stages 99.9 is as good or better)
PREDICTOR_PERCENTILE = 99.9
#: the last GELU's output (the input of the folded keep-minus-drop row) at this percentile: 8% fewer flips
#: over the three stages than at :data:`PREDICTOR_PERCENTILE` on held-out training images (99: 4%, 97: 2%)
LAST_GELU_PERCENTILE = 98.0
_LAYERS = ("norm", "fc", "gelu", "fc1", "gelu1", "fc2", "gelu2")


def mean_rows(codes: np.ndarray) -> np.ndarray:
    """``floor(sum_i codes[i] / n + 1/2)`` over the rows (axis 0), exact; zeros when there is no row.

    >>> mean_rows(np.array([[1, -3], [2, -4]])).tolist()  # 1.5 -> 2, -3.5 -> -3 (half up)
    [2, -3]
    """
    n = codes.shape[0]
    if n == 0:
        return np.zeros(codes.shape[1:], dtype=np.int64)
    return round_shift((2 * codes.sum(axis=0)) // n, 1)


def percentile_observer() -> PercentileObserver:
    """The observer of :data:`PREDICTOR_PERCENTILE` (a factory for :func:`predictor_sites`)."""
    return PercentileObserver(PREDICTOR_PERCENTILE)


def last_gelu_observer() -> PercentileObserver:
    """The observer of :data:`LAST_GELU_PERCENTILE` (the ``gelu2`` site)."""
    return PercentileObserver(LAST_GELU_PERCENTILE)


def predictor_sites(predictor, prefix: str, observer=None) -> dict:
    """Calibration sites of one :class:`~tokensift.sw.methods.dynamicvit.PredictorLG` (outputs of each layer),
    observed by ``observer`` (a name or factory, see :func:`tokensift.quant.calibrate.calibrate`) or, when
    None, by the calibration's own."""
    ic, oc = predictor.in_conv, predictor.out_conv
    modules = (ic[0], ic[1], ic[2], oc[0], oc[1], oc[2], oc[3])
    own = () if observer is None else (observer,)
    return {f"{prefix}.{name}": (m, "output", *own) for name, m in zip(_LAYERS, modules, strict=True)}


def _logit_diff(args, out):
    return out[..., 0] - out[..., 1]


def logit_diff_site(predictor) -> tuple:
    """The float ``l_keep - l_drop`` (the last linear layer's output difference) as a calibration site."""
    return (predictor.out_conv[4], _logit_diff)


def logit_scale(scale8: float) -> float:
    """The scale of the logit-difference codes: the calibrated range times :data:`LOGIT_HEADROOM` on
    :data:`LOGIT_BITS` bits."""
    return float(symmetric_scale(scale8 * 127 * LOGIT_HEADROOM, LOGIT_BITS))


@dataclass(frozen=True, eq=False)
class IntegerPredictor:
    """The integer parameters of one prediction module (see the module docstring)."""

    norm: LayerNormParams
    fc: IntLinear
    gelu: GeluParams
    fc1: IntLinear
    gelu1: GeluParams
    fc2: IntLinear
    gelu2: GeluParams
    out: IntLinear

    @classmethod
    def from_float(cls, predictor, *, in_scale: float, in_bits: int, scales: dict[str, float], prefix: str,
                   out_scale: float, multiplier_bits: int) -> IntegerPredictor:
        """Quantize ``predictor`` for residual inputs at ``in_scale`` (``in_bits`` signed), with the calibrated
        ``scales`` of :func:`predictor_sites` under ``prefix`` and the logit difference at ``out_scale``."""
        ic, oc = predictor.in_conv, predictor.out_conv
        s = {name: scales[f"{prefix}.{name}"] for name in _LAYERS}
        mb = multiplier_bits

        def linear(layer, s_in, s_out):
            return IntLinear.from_float(to_np(layer.weight), to_np(layer.bias), in_scale=s_in, out_scale=s_out,
                                        multiplier_bits=mb)

        def gelu(s_in, s_out):
            return GeluParams.from_scales(s_in, s_out, multiplier_bits=mb)

        ln = ic[0]
        norm = LayerNormParams.from_float(to_np(ln.weight), to_np(ln.bias), in_scale=in_scale, out_scale=s["norm"],
                                          eps=ln.eps, in_bits=in_bits, multiplier_bits=mb)
        last = oc[4]
        w, b = to_np(last.weight), to_np(last.bias)
        out = IntLinear.from_float((w[0] - w[1])[None], (b[0] - b[1])[None], in_scale=s["gelu2"],
                                   out_scale=out_scale, out=LOGIT_FORMAT, multiplier_bits=mb)
        return cls(norm=norm, fc=linear(ic[1], s["norm"], s["fc"]), gelu=gelu(s["fc"], s["gelu"]),
                   fc1=linear(oc[0], s["gelu"], s["fc1"]), gelu1=gelu(s["fc1"], s["gelu1"]),
                   fc2=linear(oc[2], s["gelu1"], s["fc2"]), gelu2=gelu(s["fc2"], s["gelu2"]), out=out)

    @property
    def out_scale(self) -> float:
        """Real value of one logit-difference code."""
        return float(self.out.out_scale[0])

    def logit_diff(self, x, *, counter: OverflowCounter | None = None, site: str = "predictor") -> np.ndarray:
        """``x`` (n, C) residual codes -> (n,) signed :data:`LOGIT_BITS`-bit codes of ``l_keep - l_drop``."""
        h = layernorm_int(x, self.norm, counter=counter, site=f"{site}.norm")
        h = gelu_int(self.fc(h, counter=counter, site=f"{site}.fc"), self.gelu, counter=counter, site=f"{site}.gelu")
        half = h.shape[-1] // 2
        glob = mean_rows(h[:, half:])
        h = np.concatenate([h[:, :half], np.broadcast_to(glob, (h.shape[0], glob.shape[0]))], axis=1)
        h = gelu_int(self.fc1(h, counter=counter, site=f"{site}.fc1"), self.gelu1, counter=counter,
                     site=f"{site}.gelu1")
        h = gelu_int(self.fc2(h, counter=counter, site=f"{site}.fc2"), self.gelu2, counter=counter,
                     site=f"{site}.gelu2")
        return self.out(h, counter=counter, site=f"{site}.out")[:, 0]


def select_candidates(keys: np.ndarray, num_protected: int, *, score_bits: int, k: int | None = None,
                      threshold: int | None = None) -> np.ndarray:
    """The keep mask over a frame's tokens from the selector run on the class token and the candidates.

    The selector sees ``[keys[0], keys[num_protected:]]`` (its token 0 is the class token, always kept);
    the other protected tokens (SPViT's package tokens) bypass it and are kept. Top-k with ``k`` (lower
    index wins ties) or threshold mode (keep ``key > threshold``).
    """
    sub = np.concatenate([keys[:1], keys[num_protected:]])
    if k is not None:
        mask, _ = topk_keep(sub, k, sub.shape[0], score_bits=score_bits)
    else:
        mask, _ = threshold_keep(sub, threshold, sub.shape[0])
    return np.concatenate([np.ones(num_protected, dtype=bool), mask[1:]])


def moved_counts(local: OverflowCounter, counter: OverflowCounter, site: str) -> None:
    """Add what ``local`` counted (a kernel with a fixed site name) to ``counter`` under ``site``."""
    counter.add(site, local.total)
