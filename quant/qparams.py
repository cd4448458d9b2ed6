"""Quantization parameters: real scales -> the integers the hardware is built with.

Everything here runs once, offline (or in the hardware generator): it turns real-valued scales into
integer constants. The integer kernels (:mod:`tokensift.quant.gemm`, :mod:`~tokensift.quant.gelu`,
:mod:`~tokensift.quant.layernorm`) only ever see those integers.

Conventions
-----------
* A quantized tensor is ``real ~= scale * q`` with an integer ``q`` and a positive real ``scale``; zero
  points are always 0 (symmetric quantization), so no kernel needs a zero-point correction.
* Weights: per output channel, symmetric, ``scale_c = max|w_c| / (2**(bits-1) - 1)``, codes in
  ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]`` (the most negative code is never produced, so negating a
  weight never overflows).
* Activations: per tensor, symmetric, ``scale = max|x| / (2**(bits-1) - 1)``; the observers of
  :mod:`tokensift.quant.calibrate` give ``max|x|`` (min-max or percentile).
* Real -> integer rounding is ``HALF_UP`` (``floor(x + 0.5)``) followed by saturation, through
  :meth:`tokensift.quant.fixed.FixedFormat.quantize`.

>>> quantize_multiplier(0.25)
(32768, 17)
>>> m, s = quantize_multiplier(0.1234)
>>> abs(m * 2.0**-s - 0.1234) <= 2.0 ** -(s + 1)
True
"""

from __future__ import annotations

import math

import numpy as np

from tokensift.quant.fixed import FixedFormat, OverflowCounter
from tokensift.quant.intmath import check_int, check_scale

__all__ = [
    "MULTIPLIER_BITS",
    "MAX_SHIFT",
    "quantize_multiplier",
    "symmetric_scale",
    "quantize_weight_per_channel",
    "quantize_tensor",
    "quantize_bias",
]

#: Default width of a requantization multiplier: an unsigned 16-bit constant, so ``acc * multiplier``
#: maps onto one DSP48E2 (27 x 18 signed) per 27-bit slice of the accumulator.
MULTIPLIER_BITS = 16
#: Largest right shift :func:`tokensift.quant.fixed.requantize` accepts.
MAX_SHIFT = 62




def quantize_multiplier(real_scale: float, bits: int = MULTIPLIER_BITS) -> tuple[int, int]:
    """The integer pair ``(multiplier, shift)`` with ``multiplier * 2**-shift ~= real_scale``.

    Specification (exact, no floating-point rounding is involved because scaling a binary float by a power
    of two is exact):

    1. Write ``real_scale = f * 2**e`` with ``0.5 <= f < 1`` (``math.frexp``).
    2. Normalised case: ``shift = bits - e`` and ``multiplier = floor(f * 2**bits + 1/2)`` (round half up),
       so ``2**(bits-1) <= multiplier <= 2**bits``; if rounding reached ``2**bits``, the multiplier is
       halved and ``shift`` decremented.
    3. ``shift`` is clamped into ``[0, 62]`` (the range of :func:`~tokensift.quant.fixed.requantize`),
       recomputing ``multiplier = floor(real_scale * 2**shift + 1/2)``: a large scale keeps ``shift = 0``
       (it must then be below ``2**bits - 1/2``), a tiny one keeps ``shift = 62`` with fewer significant
       bits (it must then be at least ``2**-63``).

    Error bound: ``|multiplier * 2**-shift - real_scale| <= 2**-(shift + 1)`` always (round to nearest
    at the resolution of the shift); in the normalised case ``real_scale * 2**shift >= 2**(bits-1)``, so
    the relative error is at most ``2**-bits``.

    Args:
        real_scale: positive finite real number.
        bits: width of the unsigned multiplier, 2..31 (``requantize`` accepts multipliers below 2**31).

    Raises:
        TypeError: for a non-real scale or a non-integer width.
        ValueError: for a scale that is not positive and finite, or outside the representable range.
    """
    scale = check_scale("real_scale", real_scale)
    bits = check_int("multiplier bits", bits, 2, 31)
    frac, exp = math.frexp(scale)
    shift = bits - exp
    multiplier = math.floor(math.ldexp(frac, bits) + 0.5)
    if multiplier == 1 << bits:
        multiplier >>= 1
        shift -= 1
    if shift < 0 or shift > MAX_SHIFT:
        shift = min(max(shift, 0), MAX_SHIFT)
        multiplier = math.floor(math.ldexp(scale, shift) + 0.5)
    if multiplier >= 1 << bits:
        raise ValueError(
            f"real_scale must be below {2 ** bits - 0.5} for a {bits}-bit multiplier, not {scale}")
    if multiplier == 0:
        raise ValueError(f"real_scale must be at least 2**-63 to be representable with shift <= 62, not {scale}")
    return int(multiplier), int(shift)


def symmetric_scale(absmax, bits: int = 8) -> np.ndarray:
    """Symmetric scale(s) ``absmax / (2**(bits-1) - 1)``; an all-zero range gets scale 1 (its codes are 0).

    >>> symmetric_scale([127.0, 0.0]).tolist()
    [1.0, 1.0]
    """
    bits = check_int("bits", bits, 2, 32)
    a = np.asarray(absmax, dtype=np.float64)
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError("absmax values must be finite and non-negative")
    qmax = (1 << (bits - 1)) - 1
    return np.where(a > 0, a / qmax, 1.0)


def quantize_tensor(x, scale: float, bits: int = 8, *, counter: OverflowCounter | None = None,
                    site: str = "quantize") -> np.ndarray:
    """Real values -> signed ``bits``-bit codes at one ``scale``: ``fit(floor(x / scale + 1/2))``.

    >>> quantize_tensor([0.5, -0.25, 100.0], 0.5).tolist()
    [1, 0, 127]
    """
    scale = check_scale("scale", scale)
    fmt = FixedFormat(bits=check_int("bits", bits, 2, 32))
    return fmt.quantize(np.asarray(x, dtype=np.float64) / scale, counter=counter, site=site)


def quantize_weight_per_channel(weight, bits: int = 8, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel quantization: ``(codes int64, scales float64 of shape (channels,))``.

    ``axis`` is the output-channel axis (0 for ``nn.Linear.weight`` of shape (out, in)). Codes lie in
    ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]``; each channel's largest magnitude maps onto the largest code.

    >>> q, s = quantize_weight_per_channel([[1.0, -0.5], [0.0, 0.0]])
    >>> q.tolist(), s.tolist()
    ([[127, -63], [0, 0]], [0.007874015748031496, 1.0])
    """
    bits = check_int("bits", bits, 2, 32)
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim < 1:
        raise ValueError("weight must have at least one dimension")
    if not np.all(np.isfinite(w)):
        raise ValueError("weight values must be finite, not NaN or infinity")
    axis = check_int("axis", axis, -w.ndim, w.ndim - 1) % w.ndim
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    scales = symmetric_scale(np.abs(moved).max(axis=1) if moved.size else np.zeros(w.shape[axis]), bits)
    shape = [1] * w.ndim
    shape[axis] = -1
    codes = FixedFormat(bits=bits).quantize(w / scales.reshape(shape))
    return codes, scales


def quantize_bias(bias, in_scale: float, weight_scales, acc_bits: int = 32, *,
                  counter: OverflowCounter | None = None, site: str = "bias") -> np.ndarray:
    """Bias -> accumulator codes at scale ``in_scale * weight_scales[c]`` (saturated, counted)."""
    in_scale = check_scale("in_scale", in_scale)
    ws = np.asarray(weight_scales, dtype=np.float64)
    b = np.asarray(bias, dtype=np.float64)
    if b.shape != ws.shape:
        raise ValueError(f"bias shape {b.shape} must match the weight scales' shape {ws.shape}")
    fmt = FixedFormat(bits=check_int("acc_bits", acc_bits, 2, 62))
    return fmt.quantize(b / (in_scale * ws), counter=counter, site=site)
