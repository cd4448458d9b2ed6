"""Integer-only LayerNorm (I-BERT style), the reference of the encoder block's normalisation hardware.

For one token of ``C`` input codes ``q`` (signed ``in_bits``) at scale ``S``:

1. ``sum = sum_j q_j``; ``d_i = C * q_i - sum`` (exactly ``C`` times the centred value: no divider and
   no rounding of the mean).
2. ``v = sum_i d_i**2 + eps_int`` (``sum d**2 = C**3 * variance``, exact), with
   ``eps_int = max(1, round(eps * C**3 / S**2))`` (LayerNorm's epsilon in these units; at least 1, so
   ``v >= 1``). Normalise: ``k = (62 - bit_length(v)) >> 1``, ``r = isqrt(v << 2k)``, the floor integer
   square root by Newton's iteration (:func:`isqrt`); ``r ~= 2**k sqrt(v)`` has 31 significant bits
   (``2**30 <= r < 2**31``), so the floor costs at most ``2**-30`` relative.
3. Normalised reciprocal: ``f = floor(2**(31 + R) / r)`` with ``R = recip_bits - 1``, so
   ``2**R < f <= 2**(R + 1)`` (one integer division per token).
4. ``n_i = round_shift(d_i * f, 31 + R - F - k)`` with ``F = norm_bits - 1``: ``n_i ~= 2**F d_i / sqrt(v)``.
   As ``|d_i| <= sqrt(v)``, ``|n_i| <= 2**F`` (up to rounding). The standardised value is
   ``n_i * 2**-F * sqrt(C)``.
5. ``acc_i = fit_acc(n_i * gamma_i + beta_i)`` (saturated, counted), ``gamma`` per-tensor symmetric codes
   of ``gamma_bits`` for ``gamma_real * sqrt(C)`` at scale ``s_g``, ``beta`` accumulator codes at scale
   ``s_g * 2**-F``.
6. ``out_i = requantize(acc_i, multiplier, shift)`` with ``multiplier * 2**-shift ~= s_g * 2**-F / out_scale``.

All rounding is :func:`~tokensift.quant.fixed.round_shift` / ``requantize`` (round half up); the
divisions of steps 2-3 (inside Newton's iteration and the reciprocal) are floor divisions, as a restoring
divider computes them.

>>> params = LayerNormParams.from_float(np.ones(4), np.zeros(4), in_scale=0.1, out_scale=2 / 127)
>>> layernorm_int([[10, 20, 30, 40]], params).tolist()  # standardised: -1.34, -0.45, 0.45, 1.34
[[-85, -28, 28, 85]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tokensift.checks import check_int_array
from tokensift.quant.fixed import INT8, FixedFormat, OverflowCounter, requantize, round_shift
from tokensift.quant.intmath import bit_length, check_int, check_scale, isqrt  # noqa: F401
from tokensift.quant.qparams import MULTIPLIER_BITS, quantize_multiplier, symmetric_scale

__all__ = ["bit_length", "isqrt", "LayerNormParams", "layernorm_int", "layernorm_normalise", "layernorm_float",
           "layernorm_error_bound", "layernorm_error"]


@dataclass(frozen=True, eq=False)
class LayerNormParams:
    """The integer constants of one LayerNorm instance (what the hardware generator takes).

    Attributes:
        dim: ``C``, channels per token, 1..4096.
        in_bits: width of the signed input codes, 2..16.
        eps_int: epsilon in ``v`` units, >= 1.
        recip_bits: significant bits of the reciprocal minus one (``R + 1``), 2..30.
        norm_bits: width of the normalised value ``n`` (``F + 1``), 2..24.
        gamma: (C,) codes of ``gamma_bits`` bits. beta: (C,) codes of ``acc_bits`` bits.
        gamma_bits: 2..24, with ``norm_bits + gamma_bits <= acc_bits``.
        acc_bits: width of the affine accumulator, 2..32.
        multiplier, shift: requantization into ``out``.
        in_scale, out_scale, gamma_scale: the real scales (documentation only).
    """

    dim: int
    in_bits: int
    eps_int: int
    gamma: np.ndarray
    beta: np.ndarray
    multiplier: int
    shift: int
    recip_bits: int = 16
    norm_bits: int = 16
    gamma_bits: int = 16
    acc_bits: int = 32
    out: FixedFormat = INT8
    in_scale: float = float("nan")
    out_scale: float = float("nan")
    gamma_scale: float = float("nan")

    def __post_init__(self):
        dim = check_int("dim", self.dim, 1, 4096)
        in_bits = check_int("in_bits", self.in_bits, 2, 16)
        check_int("recip_bits", self.recip_bits, 2, 30)
        norm_bits = check_int("norm_bits", self.norm_bits, 2, 24)
        gamma_bits = check_int("gamma_bits", self.gamma_bits, 2, 24)
        acc_bits = check_int("acc_bits", self.acc_bits, 2, 32)
        if norm_bits + gamma_bits > acc_bits:
            raise ValueError(f"norm_bits + gamma_bits must be at most acc_bits = {acc_bits}, "
                             f"not {norm_bits} + {gamma_bits}")
        eps_int = check_int("eps_int", self.eps_int, 1, 1 << 61)
        v_max = dim * ((dim - 1) * ((1 << in_bits) - 1)) ** 2
        if v_max + eps_int >= 1 << 62:
            raise ValueError(f"dim {dim} with {in_bits}-bit inputs and eps_int {eps_int} overflows the "
                             "62-bit variance accumulator; use fewer input bits or a smaller epsilon")
        for name, arr, bits in (("gamma", self.gamma, gamma_bits), ("beta", self.beta, acc_bits)):
            a = check_int_array(name, arr)
            if a.shape != (dim,):
                raise ValueError(f"{name} must have shape ({dim},), not {a.shape}")
            check_int_array(f"{name} codes", a, bits=bits)
        check_int("multiplier", self.multiplier, 1, (1 << 31) - 1)
        check_int("shift", self.shift, 0, 62)
        if not isinstance(self.out, FixedFormat):
            raise TypeError(f"out must be a FixedFormat, not {type(self.out).__name__}")

    @classmethod
    def from_float(cls, weight, bias, *, in_scale: float, out_scale: float, eps: float = 1e-6,
                   in_bits: int = 8, recip_bits: int = 16, norm_bits: int = 16, gamma_bits: int = 16,
                   acc_bits: int = 32, out: FixedFormat = INT8, multiplier_bits: int = MULTIPLIER_BITS,
                   counter: OverflowCounter | None = None, site: str = "layernorm") -> LayerNormParams:
        """Quantize a LayerNorm's ``weight`` (gamma) and ``bias`` (beta) for the given scales."""
        s = check_scale("in_scale", in_scale)
        so = check_scale("out_scale", out_scale)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps >= 0):
            raise ValueError(f"eps must be a non-negative finite number, not {eps!r}")
        g = np.asarray(weight, dtype=np.float64)
        b = np.asarray(bias, dtype=np.float64)
        if g.ndim != 1 or b.shape != g.shape:
            raise ValueError(f"weight and bias must be vectors of one length, not {g.shape} and {b.shape}")
        dim = check_int("dim", g.shape[0], 1, 4096)
        norm_bits = check_int("norm_bits", norm_bits, 2, 24)
        gamma_bits = check_int("gamma_bits", gamma_bits, 2, 24)
        frac = norm_bits - 1
        eps_int = max(1, math.floor(eps * dim**3 / (s * s) + 0.5))
        g_real = g * math.sqrt(dim)
        s_g = float(symmetric_scale(np.abs(g_real).max(), gamma_bits))
        g_q = FixedFormat(bits=gamma_bits).quantize(g_real / s_g)
        b_q = FixedFormat(bits=check_int("acc_bits", acc_bits, 2, 32)).quantize(
            b * 2.0**frac / s_g, counter=counter, site=f"{site}.beta")
        multiplier, shift = quantize_multiplier(s_g * 2.0**-frac / so, multiplier_bits)
        return cls(dim=dim, in_bits=in_bits, eps_int=eps_int, gamma=g_q, beta=b_q, multiplier=multiplier,
                   shift=shift, recip_bits=recip_bits, norm_bits=norm_bits, gamma_bits=gamma_bits,
                   acc_bits=acc_bits, out=out, in_scale=s, out_scale=so, gamma_scale=s_g)


def _check_input(q, params: LayerNormParams) -> np.ndarray:
    if not isinstance(params, LayerNormParams):
        raise TypeError(f"params must be LayerNormParams, not {type(params).__name__}")
    x = check_int_array("LayerNorm inputs", q)
    if x.ndim < 1 or x.shape[-1] != params.dim:
        raise ValueError(f"LayerNorm inputs must have {params.dim} channels in the last axis, not shape {x.shape}")
    return check_int_array("LayerNorm inputs", x, bits=params.in_bits)


def layernorm_normalise(q, params: LayerNormParams) -> np.ndarray:
    """Steps 1-4: the normalised codes ``n`` (``n * 2**-(norm_bits-1) * sqrt(C)`` is the standardised value)."""
    x = _check_input(q, params)
    d = params.dim * x - x.sum(axis=-1, keepdims=True)
    v = (d * d).sum(axis=-1, keepdims=True) + params.eps_int
    k = (62 - bit_length(v)) >> 1
    r = isqrt(v << (2 * k))  # 2**30 <= r < 2**31
    big_r = params.recip_bits - 1
    f = (1 << (31 + big_r)) // r
    shifts = 31 + big_r - (params.norm_bits - 1) - k
    prod = d * f
    n = np.empty_like(prod)
    flat_shift = shifts[..., 0]
    for s in np.unique(flat_shift):
        rows = flat_shift == s
        n[rows] = round_shift(prod[rows], int(s))
    return n


def layernorm_int(q, params: LayerNormParams, *, counter: OverflowCounter | None = None,
                  site: str = "layernorm") -> np.ndarray:
    """Integer LayerNorm over the last axis of ``q`` -> ``params.out`` codes at ``out_scale``."""
    n = layernorm_normalise(q, params)
    acc = FixedFormat(bits=params.acc_bits).fit(n * params.gamma + params.beta, counter=counter, site=f"{site}.acc")
    return requantize(acc, params.multiplier, params.shift, params.out, counter=counter, site=site)


def layernorm_float(x, weight, bias, eps: float) -> np.ndarray:
    """Float64 LayerNorm over the last axis (population variance), the reference of the error measurements."""
    x = np.asarray(x, dtype=np.float64)
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * np.asarray(weight, dtype=np.float64) + np.asarray(bias, dtype=np.float64)


def layernorm_error_bound(q, params: LayerNormParams, weight, bias, eps: float) -> np.ndarray:
    """Per-element bound on ``|out_scale * layernorm_int(q) - LayerNorm(in_scale * q)|`` (unsaturated).

    With ``C`` channels, ``d = C q - sum(q)``, ``F = norm_bits - 1``, ``R = recip_bits - 1``:

    * exact standardised value ``z = sqrt(C) d / sqrt(v_true)``, ``v_true = sum d**2 + eps C**3 / S**2``;
      write ``n_exact = 2**F d / sqrt(v_true)``, so ``z = 2**-F sqrt(C) n_exact``;
    * the kernel uses ``v_int = sum d**2 + eps_int`` (``rho = sqrt(v_true / v_int)``, computed exactly), the
      floor root ``r = 2**k sqrt(v_int) (1 - e_r)``, ``0 <= e_r <= 1/r <= 2**-30``, and the floor reciprocal
      ``f = 2**(31+R) / r (1 - e_f)``, ``0 <= e_f <= r / 2**(31+R) < 2**-R``; before its rounding
      ``n = n_exact rho (1 - e_f) / (1 - e_r)``, within ``|n_exact| max(|rho (1 - 2**-R) - 1|,
      |rho / (1 - 2**-30) - 1|)`` of ``n_exact``; the rounding adds 1/2;
    * affine: the kernel's real value is ``2**-F n g^ + b^`` (``g^ = s_g gamma_code``,
      ``b^ = s_g 2**-F beta_code``), the float one ``2**-F n_exact gamma sqrt(C) + beta``: they differ by at
      most ``2**-F |n - n_exact| |g^| + 2**-F |n_exact| |g^ - gamma sqrt(C)| + |b^ - beta|`` (code errors
      taken exactly from the parameters);
    * requantization: ``out_scale / 2`` plus ``|acc|`` times the multiplier's error.
    """
    C, F, R = params.dim, params.norm_bits - 1, params.recip_bits - 1
    s, so = params.in_scale, params.out_scale
    qf = np.asarray(q, dtype=np.float64)
    gamma = np.asarray(weight, dtype=np.float64)
    beta = np.asarray(bias, dtype=np.float64)
    d = C * qf - qf.sum(axis=-1, keepdims=True)
    sum_d2 = (d * d).sum(axis=-1, keepdims=True)
    v_true = sum_d2 + eps * C**3 / (s * s)
    v_int = sum_d2 + params.eps_int
    n_exact = 2.0**F * d / np.sqrt(v_true)
    rho = np.sqrt(v_true / v_int)
    rel = np.maximum(np.abs(rho * (1 - 2.0**-R) - 1), np.abs(rho / (1 - 2.0**-30) - 1))
    dn = 0.5 + np.abs(n_exact) * rel
    g_hat = params.gamma_scale * params.gamma
    b_hat = params.gamma_scale * 2.0**-F * params.beta
    affine = 2.0**-F * (dn * np.abs(g_hat) + np.abs(n_exact) * np.abs(g_hat - gamma * math.sqrt(C))) \
        + np.abs(b_hat - beta)
    acc = layernorm_normalise(q, params) * params.gamma + params.beta
    m_err = abs(params.multiplier * 2.0**-params.shift - params.gamma_scale * 2.0**-F / so)
    return affine + so / 2 + np.abs(acc) * m_err * so


def layernorm_error(q, params: LayerNormParams, weight, bias, eps: float) -> dict:
    """Measured error of :func:`layernorm_int` against float LayerNorm of ``in_scale * q`` (real units).

    Returns ``max_abs``, ``mean_abs``, ``bound_max`` (of :func:`layernorm_error_bound`), ``within_bound``
    and ``saturated`` (outputs whose exact value lies outside the output format: excluded from the rest).
    """
    out = layernorm_int(q, params)
    ref = layernorm_float(params.in_scale * np.asarray(q, dtype=np.float64), weight, bias, eps)
    fmt = params.out
    inside = (ref / params.out_scale > fmt.min_int - 0.5) & (ref / params.out_scale < fmt.max_int + 0.5)
    err = np.abs(out * params.out_scale - ref)[inside]
    bound = layernorm_error_bound(q, params, weight, bias, eps)[inside]
    return {"max_abs": float(err.max(initial=0.0)), "mean_abs": float(err.mean()) if err.size else 0.0,
            "bound_max": float(bound.max(initial=0.0)),
            "within_bound": bool(np.all(err <= bound * (1 + 1e-9) + 1e-12)),
            "saturated": int(np.count_nonzero(~inside))}
