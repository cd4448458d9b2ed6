"""Integer-only GELU (I-BERT's i-GELU), the reference of the encoder block's activation hardware.

Scheme: ``GELU(x) = x/2 * (1 + erf(x / sqrt(2)))`` with I-BERT's second-order polynomial for erf,
``erf(u) ~= sign(u) * (1 + a * (min(|u|, -b) + b)**2)``, ``a = -0.2888``, ``b = -1.769`` (max abs error of
the polynomial against GELU: 0.0182, at |x| ~= 2.35). It was chosen over I-ViT's
shift-GELU (``x * sigmoid(1.702 x)`` with a base-2 exponent) because it needs one squarer and one
multiplier, no divider, and its error is smaller (shift-GELU inherits the 0.02 error of the 1.702 sigmoid
approximation plus its exponent's).

Integer form, for input codes ``q`` at scale ``S`` (``x = S q``), with ``S_e = S / sqrt(2)``:

1. ``p``   : pre-shift (0 unless ``S`` is so fine that the constants would overflow 32 bits);
   ``S_p = S_e * 2**p``.
2. ``one`` = ``round(1 / (|a| S_p**2))``: the constant 1; ``c = min(round(-b / S_p), isqrt(one))``: the
   clip point (the ``isqrt`` only matters at very coarse scales, where it keeps ``e >= 0``).
3. ``t``   = ``min(round_shift(|q|, p), c) - c``  (``-c <= t <= 0``; ``S_p t ~= min(|u|, -b) + b``).
4. ``e``   = ``one - t*t``  (``0 <= e <= one``; ``|a| S_p**2 e ~= |erf(u)|``).
5. ``y``   = ``q * (one + sign(q) * e)`` at scale ``S_y = S * |a| S_p**2 / 2``; ``|y| < 2**31``.
6. ``out`` = :func:`~tokensift.quant.fixed.requantize` ``(y, multiplier, shift)`` into int8, with
   ``multiplier * 2**-shift ~= S_y / out_scale``.

Constants are computed once from the scales (:meth:`GeluParams.from_scales`, floats allowed there);
:func:`gelu_int` is integer-only. ``p`` is the smallest shift that keeps ``one <= (2**31 - 1) >> in_bits``,
so step 5 always fits the signed 32-bit requantizer input.

>>> params = GeluParams.from_scales(in_scale=0.05, out_scale=0.05)
>>> gelu_int([-60, -20, 0, 20, 60], params).tolist()  # x = -3, -1, 0, 1, 3
[0, -3, 0, 17, 60]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tokensift.checks import check_int_array
from tokensift.quant.fixed import INT8, FixedFormat, OverflowCounter, requantize, round_shift
from tokensift.quant.intmath import check_int, check_scale
from tokensift.quant.qparams import MULTIPLIER_BITS, quantize_multiplier

__all__ = ["GELU_A", "GELU_B", "GeluParams", "gelu_int", "gelu_product", "gelu_poly", "gelu_exact",
           "gelu_error_bound", "gelu_error"]

#: I-BERT's erf polynomial: ``erf(u) ~= sign(u) * (1 + GELU_A * (min(|u|, -GELU_B) + GELU_B)**2)``.
GELU_A = -0.2888
GELU_B = -1.769




def gelu_poly(x):
    """The real-valued I-BERT GELU the integer kernel approximates (float64, for tests and analysis)."""
    x = np.asarray(x, dtype=np.float64)
    u = np.abs(x) / math.sqrt(2.0)
    erf = np.sign(x) * (1.0 + GELU_A * (np.minimum(u, -GELU_B) + GELU_B) ** 2)
    return x / 2.0 * (1.0 + erf)


def gelu_exact(x):
    """The exact GELU ``x/2 (1 + erf(x / sqrt(2)))`` in float64 (the reference of the error measurements)."""
    x = np.asarray(x, dtype=np.float64)
    erf = np.asarray(np.frompyfunc(math.erf, 1, 1)(x / math.sqrt(2.0)), dtype=np.float64)
    return x / 2.0 * (1.0 + erf)


@dataclass(frozen=True)
class GeluParams:
    """The integer constants of one GELU instance (what the hardware generator takes).

    Attributes:
        in_bits: width of the signed input codes, 2..16.
        pre_shift: ``p``, right shift of ``|q|`` before the polynomial, 0..31.
        clip: ``c`` >= 1, the clip point of the polynomial in pre-shifted input codes.
        one: the constant 1 of the erf scale, ``c*c <= one <= (2**31 - 1) >> in_bits``.
        multiplier, shift: requantization of ``y`` into ``out``.
        out: output format (int8 by default).
        in_scale, out_scale: the real scales the constants were derived from (documentation only).
    """

    in_bits: int
    pre_shift: int
    clip: int
    one: int
    multiplier: int
    shift: int
    out: FixedFormat = INT8
    in_scale: float = float("nan")
    out_scale: float = float("nan")

    def __post_init__(self):
        in_bits = check_int("in_bits", self.in_bits, 2, 16)
        check_int("pre_shift", self.pre_shift, 0, 31)
        check_int("clip", self.clip, 1, 1 << 16)
        one_max = ((1 << 31) - 1) >> in_bits
        check_int("one", self.one, 1, one_max)
        if self.one < self.clip * self.clip:
            raise ValueError(f"one must be at least clip**2 = {self.clip * self.clip}, not {self.one}")
        check_int("multiplier", self.multiplier, 1, (1 << 31) - 1)
        check_int("shift", self.shift, 0, 62)
        if not isinstance(self.out, FixedFormat):
            raise TypeError(f"out must be a FixedFormat, not {type(self.out).__name__}")

    @classmethod
    def from_scales(cls, in_scale: float, out_scale: float, *, in_bits: int = 8, out: FixedFormat = INT8,
                    multiplier_bits: int = MULTIPLIER_BITS) -> GeluParams:
        """Derive the constants for inputs at ``in_scale`` and outputs at ``out_scale``.

        Raises ValueError when ``in_scale`` is so coarse that the polynomial has no resolution left
        (``clip < 1``, i.e. ``in_scale`` above about 3.7).
        """
        s = check_scale("in_scale", in_scale)
        so = check_scale("out_scale", out_scale)
        in_bits = check_int("in_bits", in_bits, 2, 16)
        one_max = ((1 << 31) - 1) >> in_bits
        for p in range(32):
            sp = s / math.sqrt(2.0) * 2.0**p
            one = math.floor(1.0 / (-GELU_A * sp * sp) + 0.5)
            if one <= one_max:
                break
        # at very coarse scales rounding could push clip**2 above one; sqrt(one) ~= 1.86 / S_p > -b / S_p
        clip = min(math.floor(-GELU_B / sp + 0.5), math.isqrt(one))
        if clip < 1:
            raise ValueError(f"in_scale {s} is too coarse for the GELU polynomial (clip point {clip}, "
                             f"constant one {one}); use a finer input scale")
        s_y = s * (-GELU_A) * sp * sp / 2.0
        multiplier, shift = quantize_multiplier(s_y / so, multiplier_bits)
        return cls(in_bits=in_bits, pre_shift=p, clip=clip, one=one, multiplier=multiplier, shift=shift,
                   out=out, in_scale=s, out_scale=so)

    @property
    def y_scale(self) -> float:
        """Real value of one unit of the unrequantized product ``y`` (step 5)."""
        sp = self.in_scale / math.sqrt(2.0) * 2.0**self.pre_shift
        return self.in_scale * (-GELU_A) * sp * sp / 2.0


def gelu_product(q, params: GeluParams) -> np.ndarray:
    """Steps 3-5: the exact integer ``y = q * (one + sign(q) * e)`` before requantization."""
    if not isinstance(params, GeluParams):
        raise TypeError(f"params must be GeluParams, not {type(params).__name__}")
    x = check_int_array("GELU inputs", q, bits=params.in_bits)
    mag = round_shift(np.abs(x), params.pre_shift)
    t = np.minimum(mag, params.clip) - params.clip
    e = params.one - t * t
    return x * (params.one + np.sign(x) * e)


def gelu_int(q, params: GeluParams, *, counter: OverflowCounter | None = None, site: str = "gelu") -> np.ndarray:
    """Integer GELU of codes ``q`` (``in_bits`` signed) -> ``params.out`` codes at ``out_scale``."""
    y = gelu_product(q, params)
    return requantize(y, params.multiplier, params.shift, params.out, counter=counter, site=site)


def gelu_error_bound(q, params: GeluParams) -> np.ndarray:
    """Per-input bound on ``|out_scale * gelu_int(q) - GELU(in_scale * q)|`` for unsaturated outputs.

    Three sources, each derived from the scheme (real units):

    1. polynomial: ``|P(x) - GELU(x)|`` evaluated exactly at each input (``P`` = :func:`gelu_poly`);
    2. integer constants: with ``w = |a| S_p**2 one`` the kernel computes
       ``S_y y = x/2 (w + sign(x) (w - |a| (S_p t)**2))`` where ``P`` has ``x/2 (1 + sign(x) (1 - |a| z**2))``,
       ``z = min(|x|/sqrt(2), -b) + b``. ``w`` stands for 1 twice (``|w - 1| <= |a| S_p**2 / 2``, taken
       exactly); ``S_p t`` differs from ``z`` by at most ``delta = delta_m + delta_c``, ``delta_m = S_p/2``
       when ``p > 0`` (``|q|`` is rounded by the pre-shift) and ``delta_c = |S_p c + b|`` (the clip
       point's rounding; ``min`` is 1-Lipschitz), so ``|(S_p t)**2 - z**2| <= delta (2|b| + delta)`` and
       ``|S_y y - P(x)| <= |x|/2 (2|w - 1| + |a| delta (2|b| + delta))``;
    3. requantization: half an output step plus ``|y|`` times the multiplier's error.
    """
    x = params.in_scale * np.asarray(q, dtype=np.float64)
    sp = params.in_scale / math.sqrt(2.0) * 2.0**params.pre_shift
    a, b = -GELU_A, -GELU_B
    delta = (sp / 2 if params.pre_shift else 0.0) + abs(sp * params.clip - b)
    w = a * sp * sp * params.one
    poly = np.abs(gelu_poly(x) - gelu_exact(x))
    consts = np.abs(x) / 2 * (2 * abs(w - 1) + a * delta * (2 * b + delta))
    y = gelu_product(q, params)
    m_err = abs(params.multiplier * 2.0**-params.shift - params.y_scale / params.out_scale)
    return poly + consts + params.out_scale / 2 + np.abs(y) * m_err * params.out_scale


def gelu_error(q, params: GeluParams) -> dict:
    """Measured error of :func:`gelu_int` against the exact GELU of ``in_scale * q`` (real units).

    Returns ``max_abs``, ``mean_abs``, ``bound_max`` (of :func:`gelu_error_bound`), ``within_bound`` and
    ``saturated`` (outputs whose exact value lies outside the output format: excluded from the rest).
    """
    out = gelu_int(q, params)
    exact = gelu_exact(params.in_scale * np.asarray(q, dtype=np.float64))
    fmt = params.out
    inside = (exact / params.out_scale > fmt.min_int - 0.5) & (exact / params.out_scale < fmt.max_int + 0.5)
    err = np.abs(out * params.out_scale - exact)[inside]
    bound = gelu_error_bound(q, params)[inside]
    return {"max_abs": float(err.max(initial=0.0)), "mean_abs": float(err.mean()) if err.size else 0.0,
            "bound_max": float(bound.max(initial=0.0)),
            "within_bound": bool(np.all(err <= bound * (1 + 1e-9) + 1e-12)),
            "saturated": int(np.count_nonzero(~inside))}
