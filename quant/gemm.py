"""Integer GEMM and the integer linear layer: int8 x int8 -> int32 -> requantized int8.

Arithmetic contract (what the matrix hardware computes, bit for bit):

1. Operands are signed integers of ``a_bits`` and ``b_bits`` (int8 by default); values outside those
   widths are rejected (they are a bug upstream, not an overflow).
2. Each output is the **exact** sum of products plus the bias (hardware: an accumulator with enough guard
   bits, ``a_bits + b_bits - 1 + ceil(log2(K + 1))`` for ``K`` terms). The exact sum is then saturated
   **once** into ``acc_bits`` (int32 by default); every value that did not fit is counted in the
   :class:`~tokensift.quant.fixed.OverflowCounter` under the site name. With int8 operands and no bias
   the int32 accumulator can only overflow for ``K >= 2**17`` terms; a bias can make it overflow earlier.
3. Requantization: ``out = fit(round_shift(acc * multiplier, shift))`` by
   :func:`tokensift.quant.fixed.requantize` (round half up, saturate, count), with one
   ``(multiplier, shift)`` per output channel (per-channel weight scales).

>>> a = np.array([[1, 2], [3, 4]])
>>> b = np.array([[5, 6], [7, 8]])
>>> matmul_int(a, b).tolist()
[[19, 22], [43, 50]]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tokensift.checks import check_int_array
from tokensift.quant.fixed import INT8, FixedFormat, OverflowCounter, round_shift
from tokensift.quant.intmath import check_int
from tokensift.quant.qparams import (
    MULTIPLIER_BITS,
    quantize_bias,
    quantize_multiplier,
    quantize_tensor,
    quantize_weight_per_channel,
)

__all__ = ["matmul_int", "requantize_per_channel", "IntLinear", "linear_error_bound", "linear_error"]


def _int_operand(name: str, values, bits: int) -> np.ndarray:
    return check_int_array(f"{name} values", check_int_array(name, values), bits=bits)


def matmul_int(a, b, bias=None, *, a_bits: int = 8, b_bits: int = 8, acc_bits: int = 32,
               counter: OverflowCounter | None = None, site: str = "gemm") -> np.ndarray:
    """``fit_acc(a @ b + bias)``: signed integer matrix product with a saturating ``acc_bits`` result.

    Args:
        a: (..., M, K) integers of ``a_bits`` bits.
        b: (K, N) or (..., K, N) integers of ``b_bits`` bits.
        bias: optional (N,) integers of ``acc_bits`` bits, added to the exact sum.
        a_bits, b_bits: operand widths, 2..16. acc_bits: accumulator width, 2..32.
        counter, site: where saturated accumulators are counted.

    Returns:
        int64 array of (..., M, N) accumulators, each within ``acc_bits`` signed bits.
    """
    a_bits = check_int("a_bits", a_bits, 2, 16)
    b_bits = check_int("b_bits", b_bits, 2, 16)
    acc_bits = check_int("acc_bits", acc_bits, 2, 32)
    x = _int_operand("a", a, a_bits)
    w = _int_operand("b", b, b_bits)
    if x.ndim < 2 or w.ndim < 2:
        raise ValueError(f"a and b must have at least two dimensions, not {x.ndim} and {w.ndim}")
    if x.shape[-1] != w.shape[-2]:
        raise ValueError(f"inner dimensions must agree, not {x.shape[-1]} and {w.shape[-2]}")
    # |a*b| <= 2**30 and K < 2**32 keep the exact int64 sum far from overflow
    if x.shape[-1] >= 1 << 32:
        raise ValueError(f"the inner dimension must be below 2**32, not {x.shape[-1]}")
    acc = np.matmul(x, w)
    if bias is not None:
        bq = _int_operand("bias", bias, acc_bits)
        if bq.shape != (w.shape[-1],):
            raise ValueError(f"bias must have shape ({w.shape[-1]},), not {bq.shape}")
        acc = acc + bq
    return FixedFormat(bits=acc_bits).fit(acc, counter=counter, site=site)


def requantize_per_channel(acc, multipliers, shifts, out: FixedFormat = INT8, *,
                           counter: OverflowCounter | None = None, site: str = "requantize") -> np.ndarray:
    """Requantize the last axis channel by channel, each with its own ``(multiplier, shift)``.

    Element for element this is :func:`~tokensift.quant.fixed.requantize` (``out.fit(round_shift(acc *
    multiplier, shift, out.rounding))``, the same two primitives), vectorised over the channels that share
    a shift, with the same parameter checks.
    """
    x = np.asarray(acc)
    m = np.asarray(multipliers)
    s = np.asarray(shifts)
    if m.shape != (x.shape[-1],) or s.shape != (x.shape[-1],):
        raise ValueError(f"multipliers and shifts must have shape ({x.shape[-1]},), not {m.shape} and {s.shape}")
    if not (np.issubdtype(m.dtype, np.integer) and np.issubdtype(s.dtype, np.integer)):
        raise TypeError("multipliers and shifts must be integers")
    m, s = m.astype(np.int64), s.astype(np.int64)
    if m.size and not (m.min() >= 1 and m.max() < (1 << 31)):
        raise ValueError("multipliers must be between 1 and 2**31 - 1")
    if s.size and not (s.min() >= 0 and s.max() <= 62):
        raise ValueError("shifts must be between 0 and 62")
    x = _int_operand("accumulators", x, 32)
    prod = x * m
    rounded = np.empty(prod.shape, dtype=np.int64)
    for shift in np.unique(s):
        cols = np.flatnonzero(s == shift)
        rounded[..., cols] = round_shift(prod[..., cols], int(shift), out.rounding)
    return out.fit(rounded, counter=counter, site=site)


@dataclass(frozen=True)
class IntLinear:
    """An integer ``nn.Linear``: int8 inputs, per-channel int8 weights, int32 bias, requantized outputs.

    ``y_q = requantize_c(x_q @ weight.T + bias)`` with ``real(y) ~= out_scale[c] * y_q``. The integer
    fields are what the hardware is built with; the real scales document what the codes mean.

    Attributes:
        weight: (out, in) int64 codes of ``w_bits`` bits. bias: (out,) accumulator codes at scale
            ``in_scale * weight_scale[c]``.
        multipliers, shifts: (out,) requantization constants, ``multiplier * 2**-shift ~=
            in_scale * weight_scale[c] / out_scale[c]``.
        in_bits, w_bits, acc_bits: widths. out: output format.
        in_scale, weight_scale, out_scale: the real meaning of the codes.
    """

    weight: np.ndarray
    bias: np.ndarray
    multipliers: np.ndarray
    shifts: np.ndarray
    in_scale: float
    weight_scale: np.ndarray
    out_scale: np.ndarray
    in_bits: int = 8
    w_bits: int = 8
    acc_bits: int = 32
    out: FixedFormat = INT8

    def __post_init__(self):
        check_int("in_bits", self.in_bits, 2, 16)
        w_bits = check_int("w_bits", self.w_bits, 2, 16)
        acc_bits = check_int("acc_bits", self.acc_bits, 2, 32)
        if not isinstance(self.out, FixedFormat):
            raise TypeError(f"out must be a FixedFormat, not {type(self.out).__name__}")
        w = _int_operand("weight", self.weight, w_bits)
        if w.ndim != 2:
            raise ValueError(f"weight must have shape (out, in), not {w.shape}")
        n_out = w.shape[0]
        _int_operand("bias", self.bias, acc_bits)
        for name in ("bias", "multipliers", "shifts", "weight_scale", "out_scale"):
            shape = np.shape(getattr(self, name))
            if shape != (n_out,):
                raise ValueError(f"{name} must have shape ({n_out},), not {shape}")
        m, sh = np.asarray(self.multipliers), np.asarray(self.shifts)
        if not (np.issubdtype(m.dtype, np.integer) and np.issubdtype(sh.dtype, np.integer)):
            raise TypeError("multipliers and shifts must be integers")
        if n_out and not (m.min() >= 1 and m.max() < (1 << 31) and sh.min() >= 0 and sh.max() <= 62):
            raise ValueError("multipliers must be between 1 and 2**31 - 1 and shifts between 0 and 62")

    @classmethod
    def from_float(cls, weight, bias, *, in_scale: float, out_scale, in_bits: int = 8, w_bits: int = 8,
                   acc_bits: int = 32, out: FixedFormat = INT8, multiplier_bits: int = MULTIPLIER_BITS,
                   counter: OverflowCounter | None = None, site: str = "linear") -> IntLinear:
        """Quantize a real ``(out, in)`` weight and ``(out,)`` bias.

        ``out_scale`` is a number (per-tensor output) or an ``(out,)`` array (one scale per output
        channel, e.g. q, k and v of a fused ``qkv`` layer with their own scales).
        """
        w = np.asarray(weight, dtype=np.float64)
        if w.ndim != 2:
            raise ValueError(f"weight must have shape (out, in), not {w.shape}")
        n_out = w.shape[0]
        wq, ws = quantize_weight_per_channel(w, bits=w_bits)
        b = np.zeros(n_out) if bias is None else np.asarray(bias, dtype=np.float64)
        bq = quantize_bias(b, in_scale, ws, acc_bits, counter=counter, site=f"{site}.bias")
        os_ = np.broadcast_to(np.asarray(out_scale, dtype=np.float64), (n_out,)).copy()
        pairs = [quantize_multiplier(float(in_scale) * float(ws[c]) / float(os_[c]), multiplier_bits)
                 for c in range(n_out)]
        mult = np.array([p[0] for p in pairs], dtype=np.int64)
        shift = np.array([p[1] for p in pairs], dtype=np.int64)
        return cls(weight=wq, bias=bq, multipliers=mult, shifts=shift, in_scale=float(in_scale),
                   weight_scale=ws, out_scale=os_, in_bits=in_bits, w_bits=w_bits, acc_bits=acc_bits, out=out)

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def accumulate(self, x_q, *, counter: OverflowCounter | None = None, site: str = "linear") -> np.ndarray:
        """The int32 accumulators ``x_q @ weight.T + bias`` (saturated, counted)."""
        return matmul_int(x_q, self.weight.T, self.bias, a_bits=self.in_bits, b_bits=self.w_bits,
                          acc_bits=self.acc_bits, counter=counter, site=f"{site}.acc")

    def __call__(self, x_q, *, counter: OverflowCounter | None = None, site: str = "linear") -> np.ndarray:
        acc = self.accumulate(x_q, counter=counter, site=site)
        return requantize_per_channel(acc, self.multipliers, self.shifts, self.out, counter=counter,
                                      site=f"{site}.out")

    def quantize_input(self, x, *, counter: OverflowCounter | None = None, site: str = "linear.in") -> np.ndarray:
        """Real inputs -> codes at ``in_scale`` (the boundary from the float world)."""
        return quantize_tensor(x, self.in_scale, self.in_bits, counter=counter, site=site)


def linear_error_bound(layer: IntLinear, x, weight, bias=None) -> np.ndarray:
    """Per-output bound on ``|out_scale * layer(quantize(x)) - (x @ weight.T + bias)|`` (real units).

    With ``x^ = s_x q_x``, ``w^ = s_w q_w``, ``b^ = s_x s_w q_b`` the accumulator is exactly
    ``acc s_x s_w = sum_k x^_k w^_k + b^``. Inputs within the calibrated range round to nearest
    (``|x^ - x| <= s_x/2``; clipped inputs add ``|x| - max code * s_x``), ``|w^ - w| <= s_w/2``, so

        ``|acc s_x s_w - y| <= sum_k (e_x,k |w^_k| + |x_k| s_w / 2) + |b^ - b|``

    and requantization adds ``s_o/2 + |acc| |m 2**-k - s_x s_w / s_o| s_o``. Saturated outputs (and
    saturated accumulators) are not covered.
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    b = np.zeros(w.shape[0]) if bias is None else np.asarray(bias, dtype=np.float64)
    s_x, s_w, s_o = layer.in_scale, layer.weight_scale, layer.out_scale
    fmt = FixedFormat(bits=layer.in_bits)
    e_x = np.maximum(s_x / 2, np.maximum(x - fmt.max_int * s_x, fmt.min_int * s_x - x))
    w_hat = layer.weight * s_w[:, None]
    acc_bound = e_x @ np.abs(w_hat).T + np.abs(x) @ (s_w / 2 * np.ones(w.shape[1])[:, None]) \
        + np.abs(layer.bias * layer.in_scale * s_w - b)
    acc = layer.accumulate(layer.quantize_input(x))
    m_err = np.abs(layer.multipliers * 2.0 ** -layer.shifts.astype(np.float64) - s_x * s_w / s_o)
    return acc_bound + s_o / 2 + np.abs(acc) * m_err * s_o


def linear_error(layer: IntLinear, x, weight, bias=None) -> dict:
    """Measured error of the integer layer against the float ``x @ weight.T + bias`` (real units).

    Returns ``max_abs``, ``mean_abs``, ``bound_max``, ``within_bound`` and ``saturated`` (outputs whose
    exact value lies outside the output format, excluded from the rest).
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    y = x @ w.T + (0.0 if bias is None else np.asarray(bias, dtype=np.float64))
    out = layer(layer.quantize_input(x))
    fmt = layer.out
    ratio = y / layer.out_scale
    inside = (ratio > fmt.min_int - 0.5) & (ratio < fmt.max_int + 0.5)
    err = np.abs(out * layer.out_scale - y)[inside]
    bound = linear_error_bound(layer, x, w, bias)[inside]
    return {"max_abs": float(err.max(initial=0.0)), "mean_abs": float(err.mean()) if err.size else 0.0,
            "bound_max": float(bound.max(initial=0.0)),
            "within_bound": bool(np.all(err <= bound * (1 + 1e-9) + 1e-12)),
            "saturated": int(np.count_nonzero(~inside))}
