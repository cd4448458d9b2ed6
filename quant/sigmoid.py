"""Integer-only logistic sigmoid, on the softmax's base-2 exponential (SPViT's head weights and keep probabilities).

For input codes ``q`` (signed ``in_bits``) at scale ``S`` (``x = S q``), with the exponential formats of a
:class:`~tokensift.quant.softmax.SoftmaxParams` (``F = log2_frac``, ``E = exp_frac``, ``P = prob_frac``):

1. **argument** ``t = round_shift(-|q| * M, sh)`` (half up, ``t <= 0``) with ``M * 2**-(sh + F) ~=
   S log2(e)`` (:func:`tokensift.quant.attention.scale_for`): ``t * 2**-F ~= -|x| log2(e)``
   (:func:`~tokensift.quant.softmax.log2_argument`, the softmax's step 1);
2. **exponential** ``e = exp2_neg(t)`` in ``[0, 2**E]``, ``e ~= 2**E exp(-|x|)`` (the softmax's table or
   quadratic and rounding shift, :func:`~tokensift.quant.softmax.exp2_neg`);
3. **division** ``s = round_shift(floor(2**(E + P + 1) / (2**E + e)), 1) = floor(2**(E + P) / (2**E + e)
   + 1/2)``, i.e. ``sigmoid(|x|) = 1 / (1 + exp(-|x|))`` rounded half up to ``P`` fractional bits
   (``2**(P-1) <= s <= 2**P``), what a restoring divider with one extra quotient bit gives;
4. **sign** ``out = s`` for ``q >= 0`` and ``2**P - s`` for ``q < 0`` (``sigmoid(-x) = 1 - sigmoid(x)``,
   exact), unsigned ``P + 1`` bits with ``P`` fractional bits. ``q = 0`` gives exactly ``2**(P-1)``;
   nothing saturates.

The derived error bound (:func:`sigmoid_error_bound`) covers the argument's rounding and multiplier error,
the exponential's table error and rounding, and the final half LSB.

>>> params = SigmoidParams.from_scale(0.05)
>>> sigmoid_int([-100, -20, 0, 20, 100], params).tolist()  # x = -5, -1, 0, 1, 5
[220, 8819, 16384, 23949, 32548]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tokensift.checks import check_int_array
from tokensift.quant.attention import scale_for
from tokensift.quant.fixed import FixedFormat, round_shift
from tokensift.quant.intmath import check_int, check_scale
from tokensift.quant.softmax import SoftmaxParams, exp2_neg, log2_argument, table_error

__all__ = ["SigmoidParams", "sigmoid_int", "sigmoid_exact", "sigmoid_error_bound", "sigmoid_error"]


@dataclass(frozen=True, kw_only=True)
class SigmoidParams:
    """The integer constants of one sigmoid instance (what the hardware generator takes).

    Attributes:
        in_bits: width of the signed input codes, 2..16.
        multiplier, shift: the argument scale, ``multiplier * 2**-(shift + log2_frac) ~= in_scale log2(e)``.
        exp: the exponential's formats (``log2_frac``, ``exp_frac``, table or quadratic) and the output's
            fractional bits ``prob_frac``.
        in_scale: the real input scale the constants were derived from (documentation only).
    """

    in_bits: int
    multiplier: int
    shift: int
    exp: SoftmaxParams = field(default_factory=SoftmaxParams)
    in_scale: float = float("nan")

    def __post_init__(self):
        check_int("in_bits", self.in_bits, 2, 16)
        check_int("multiplier", self.multiplier, 1, (1 << 24) - 1)
        check_int("shift", self.shift, 0, 62)
        if not isinstance(self.exp, SoftmaxParams):
            raise TypeError(f"exp must be a SoftmaxParams, not {type(self.exp).__name__}")

    @classmethod
    def from_scale(cls, in_scale: float, *, in_bits: int = 8, exp: SoftmaxParams | None = None) -> SigmoidParams:
        """Constants for input codes at ``in_scale`` (the output has ``exp.prob_frac`` fractional bits)."""
        s = check_scale("in_scale", in_scale)
        exp = SoftmaxParams() if exp is None else exp
        if not isinstance(exp, SoftmaxParams):
            raise TypeError(f"exp must be a SoftmaxParams, not {type(exp).__name__}")
        multiplier, shift = scale_for(s, log2_frac=exp.log2_frac)
        return cls(in_bits=check_int("in_bits", in_bits, 2, 16), multiplier=multiplier, shift=shift, exp=exp,
                   in_scale=s)

    @property
    def out_frac(self) -> int:
        return self.exp.prob_frac

    @property
    def out(self) -> FixedFormat:
        """Unsigned ``P + 1`` bits, ``P`` fractional: ``2**P`` is 1."""
        return self.exp.prob_format


def _check(q, params: SigmoidParams) -> np.ndarray:
    if not isinstance(params, SigmoidParams):
        raise TypeError(f"params must be SigmoidParams, not {type(params).__name__}")
    return check_int_array("sigmoid inputs", q, bits=params.in_bits)


def sigmoid_int(q, params: SigmoidParams) -> np.ndarray:
    """Integer sigmoid of codes ``q`` -> unsigned codes with ``params.out_frac`` fractional bits."""
    x = _check(q, params)
    p = params.exp
    t = log2_argument(-np.abs(x), params.multiplier, params.shift)
    e = exp2_neg(t, p)
    one = 1 << p.exp_frac
    s = round_shift((1 << (p.exp_frac + p.prob_frac + 1)) // (one + e), 1)
    return np.where(x < 0, (1 << p.prob_frac) - s, s)


def sigmoid_exact(x) -> np.ndarray:
    """``1 / (1 + exp(-x))`` in float64 (no overflow for any finite ``x``)."""
    x = np.asarray(x, dtype=np.float64)
    pos = 1.0 / (1.0 + np.exp(-np.abs(x)))
    return np.where(x < 0, 1.0 - pos, pos)


def sigmoid_error_bound(q, params: SigmoidParams) -> np.ndarray:
    """Per-input bound on ``|sigmoid_int(q) / 2**P - sigmoid(in_scale q)|``.

    With ``u = |x| log2(e)``, the argument ``t 2**-F`` is within ``delta = 2**-(F+1) + |q| |M 2**-(sh+F) -
    S log2(e)|`` of ``-u``; the exponential is ``e = 2**E 2**(t 2**-F) (1 + tau) + eps`` with ``|tau| <=
    table_error`` and ``|eps| <= 1/2``, so ``e`` lies in ``[lo, hi]`` around ``2**E 2**-u``; ``2**E / (2**E +
    e)`` is monotone in ``e``, so its distance from ``sigmoid(|x|)`` is at most that of the ends; the final
    rounding adds ``2**-(P+1)``. ``1 - s`` for negative inputs has the same error.
    """
    x = _check(q, params).astype(np.float64)
    p = params.exp
    u = np.abs(x) * params.in_scale * math.log2(math.e)
    m_err = abs(params.multiplier * 2.0 ** -(params.shift + p.log2_frac) - params.in_scale * math.log2(math.e))
    delta = 2.0 ** -(p.log2_frac + 1) + np.abs(x) * m_err
    tau = table_error(p)
    one = 2.0**p.exp_frac
    hi = one * np.exp2(-u + delta) * (1 + tau) + 0.5
    lo = np.maximum(one * np.exp2(-u - delta) * (1 - tau) - 0.5, 0.0)
    ref = sigmoid_exact(np.abs(x) * params.in_scale)
    spread = np.maximum(np.abs(one / (one + lo) - ref), np.abs(one / (one + hi) - ref))
    return spread + 2.0 ** -(p.prob_frac + 1) + 1e-12  # 1e-12: float64 rounding of the bound itself


def sigmoid_error(q, params: SigmoidParams) -> dict:
    """Measured error of :func:`sigmoid_int` against the exact sigmoid of ``in_scale * q`` (probability units).

    Returns ``max_abs``, ``mean_abs``, ``max_lsb`` (in ``2**-P``), ``bound_max`` and ``within_bound``.
    """
    got = sigmoid_int(q, params) * 2.0**-params.out_frac
    ref = sigmoid_exact(params.in_scale * np.asarray(q, dtype=np.float64))
    err = np.abs(got - ref)
    bound = sigmoid_error_bound(q, params)
    return {"max_abs": float(err.max(initial=0.0)), "mean_abs": float(err.mean()) if err.size else 0.0,
            "max_lsb": float(err.max(initial=0.0) * 2.0**params.out_frac), "bound_max": float(bound.max(initial=0.0)),
            "within_bound": bool(np.all(err <= bound))}
