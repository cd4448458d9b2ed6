"""Integer reference of one attention head, ``softmax(Q K^T * scale) V``, as the accelerator computes it.

For int8 ``Q, K, V`` (``N x head_dim``, ``1 <= N <= n_max``):

1. ``S = Q K^T`` exactly (``acc_bits`` accumulators, wide enough by construction: checked in
   :class:`AttentionParams`);
2. the integer softmax of :mod:`tokensift.quant.softmax` row by row, whose first step applies the scale
   as ``round_shift((s - max) * scale_multiplier, scale_shift)`` into the base-2 exponent domain
   (``scale_multiplier * 2**-(scale_shift + log2_frac) ~= alpha * log2(e)`` with ``alpha`` the real
   scale of one score LSB, e.g. ``s_q s_k / sqrt(head_dim)``; :func:`scale_for` computes it);
3. ``A = P V`` exactly (probabilities have ``prob_frac`` fractional bits);
4. ``O = requantize(A, out_multiplier, out_shift, int8)`` through :func:`tokensift.quant.fixed.requantize`.
   The default ``out_shift = prob_frac`` keeps ``O`` in ``V``'s scale (a convex combination of V rows).

Row 0 of the probabilities (the class token's attention) is also returned: the token scores.

:class:`AttentionParams` holds every parameter the hardware takes (the generator, the simulator and the
cost model share it), validated with one-sentence errors.

>>> p = AttentionParams(n_max=8, head_dim=16, lanes=8)
>>> rng = np.random.default_rng(0)
>>> q, k, v = (rng.integers(-128, 128, size=(5, 16)) for _ in range(3))
>>> out, cls = attention_head(q, k, v, p)
>>> out.shape, cls.shape, bool(abs(int(cls.sum()) - (1 << 15)) <= 5)
((5, 16), (5,), True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tokensift.checks import check_int, check_int_array, check_scale
from tokensift.quant.fixed import FixedFormat, OverflowCounter, requantize
from tokensift.quant.softmax import (
    SoftmaxParams,
    SoftmaxVariant,
    float_softmax,
    softmax_error_bound,
    softmax_trace,
)

__all__ = [
    "AttentionParams",
    "scale_for",
    "attention_head",
    "attention_trace",
    "class_scores",
    "float_attention",
    "attention_error",
    "macs",
]

_SCALE_MULT_BITS = 17  # the softmax scale multiplier fits one DSP's 18-bit signed port


def scale_for(alpha: float, *, log2_frac: int = 8, bits: int = _SCALE_MULT_BITS) -> tuple[int, int]:
    """``(multiplier, shift)`` with ``multiplier * 2**-(shift + log2_frac) ~= alpha * log2(e)``.

    ``alpha`` is the real value of one score LSB; the multiplier uses ``bits`` bits (relative error
    below ``2**-(bits-1)``).

    >>> scale_for(2.0**-11)
    (94548, 19)
    """
    check_scale("alpha", alpha, numpy=False)
    target = alpha * math.log2(math.e) * 2.0**log2_frac
    shift = bits - 1 - math.floor(math.log2(target))
    if shift < 0:
        raise ValueError(f"alpha {alpha} is too large for a {bits}-bit multiplier and a non-negative shift")
    shift = min(shift, 48)
    multiplier = int(FixedFormat(bits=bits + 1, frac=shift, signed=False).quantize(target))
    if multiplier < 1:
        raise ValueError(f"alpha {alpha} is too small to represent with a shift of at most 48")
    if multiplier >= 1 << bits:  # rounding up reached the next power of two
        multiplier, shift = (multiplier + 1) >> 1, shift - 1
    return multiplier, shift


@dataclass(frozen=True, kw_only=True)
class AttentionParams:
    """Every parameter of the attention accelerator and of its integer reference.

    Parameters
    ----------
    n_max : int
        Largest token count a frame may carry (1..4096); the runtime count ``N`` is ``1..n_max``.
    head_dim : int
        Per-head channel count, a multiple of ``lanes``.
    lanes : int
        Multipliers of the MAC array (1..256).
    data_bits : int
        Width of signed Q, K, V and output values (2..16, default 8).
    acc_bits : int
        Width of the signed accumulators (at most 32, at least :attr:`min_acc_bits`).
    softmax : SoftmaxParams or SoftmaxVariant or str
        Integer softmax formats; a variant alone takes the default formats.
    scale_multiplier, scale_shift : int or None
        Softmax scale into the log2 domain (``1 <= multiplier < 2**17``, ``0 <= shift <= 48``); both
        ``None`` (default) means ``alpha = 2**-8 / sqrt(head_dim)`` (Q and K with 4 fractional bits).
    out_multiplier, out_shift : int or None
        Output requantization (``1 <= multiplier < 2**31``, ``0 <= shift <= 62``); ``out_shift=None``
        means ``prob_frac`` (output in V's scale).
    heads_parallel : int
        Copies of the one-head core working on consecutive frames (1..16).
    """

    n_max: int
    head_dim: int
    lanes: int = 16
    data_bits: int = 8
    acc_bits: int = 32
    softmax: SoftmaxParams = field(default_factory=SoftmaxParams)
    scale_multiplier: int | None = None
    scale_shift: int | None = None
    out_multiplier: int = 1
    out_shift: int | None = None
    heads_parallel: int = 1

    def __post_init__(self):
        check_int("n_max", self.n_max, low=1, high=4096)
        check_int("lanes", self.lanes, low=1, high=256)
        check_int("head_dim", self.head_dim, low=1, high=4096)
        if self.head_dim % self.lanes:
            raise ValueError(f"head_dim must be a multiple of lanes {self.lanes}, not {self.head_dim}")
        check_int("data_bits", self.data_bits, low=2, high=16)
        if isinstance(self.softmax, (str, SoftmaxVariant)):
            object.__setattr__(self, "softmax", SoftmaxParams(variant=self.softmax))
        if not isinstance(self.softmax, SoftmaxParams):
            raise TypeError(f"softmax must be a SoftmaxParams, a SoftmaxVariant or a variant name, "
                            f"not {type(self.softmax).__name__}")
        check_int("acc_bits", self.acc_bits, low=2, high=32)
        if self.acc_bits < self.min_acc_bits:
            raise ValueError(f"acc_bits must be at least {self.min_acc_bits} to hold the scores and P V sums "
                             f"of {self.data_bits}-bit data with head_dim {self.head_dim} and n_max "
                             f"{self.n_max}, not {self.acc_bits}")
        if (self.scale_multiplier is None) != (self.scale_shift is None):
            raise ValueError("scale_multiplier and scale_shift must be given together or both left out")
        if self.scale_multiplier is None:
            m, s = scale_for(2.0**-8 / math.sqrt(self.head_dim), log2_frac=self.softmax.log2_frac)
            object.__setattr__(self, "scale_multiplier", m)
            object.__setattr__(self, "scale_shift", s)
        check_int("scale_multiplier", self.scale_multiplier, low=1, high=(1 << _SCALE_MULT_BITS) - 1)
        check_int("scale_shift", self.scale_shift, low=0, high=48)
        check_int("out_multiplier", self.out_multiplier, low=1, high=(1 << 31) - 1)
        if self.out_shift is None:
            object.__setattr__(self, "out_shift", self.softmax.prob_frac)
        check_int("out_shift", self.out_shift, low=0, high=62)
        check_int("heads_parallel", self.heads_parallel, low=1, high=16)

    # -- derived widths ----------------------------------------------------------------------------
    @property
    def chunks(self) -> int:
        """``head_dim / lanes``: memory words (lane vectors) per row."""
        return self.head_dim // self.lanes

    @property
    def data_format(self) -> FixedFormat:
        """Signed ``data_bits`` integers: Q, K, V and the output."""
        return FixedFormat(bits=self.data_bits)

    @property
    def score_bits(self) -> int:
        """Signed width that holds any ``q . k`` of ``head_dim`` products exactly."""
        return (self.head_dim << (2 * self.data_bits - 2)).bit_length() + 1

    @property
    def pv_bits(self) -> int:
        """Signed width that holds any ``sum_j p_j v_j`` (``sum p <= 2**P + 3 N / 4``)."""
        p_sum = (1 << self.softmax.prob_frac) + (3 * self.n_max + 3) // 4
        return (p_sum << (self.data_bits - 1)).bit_length() + 1

    @property
    def min_acc_bits(self) -> int:
        return max(self.score_bits, self.pv_bits)

    @classmethod
    def from_dict(cls, values: dict) -> AttentionParams:
        """The inverse of :meth:`to_dict`."""
        values = dict(values)
        if isinstance(values.get("softmax"), dict):
            values["softmax"] = SoftmaxParams(**values["softmax"])
        return cls(**values)

    def to_dict(self) -> dict:
        """JSON-friendly parameters (for manifests and reports)."""
        return {"n_max": self.n_max, "head_dim": self.head_dim, "lanes": self.lanes,
                "data_bits": self.data_bits, "acc_bits": self.acc_bits, "softmax": self.softmax.to_dict(),
                "scale_multiplier": self.scale_multiplier, "scale_shift": self.scale_shift,
                "out_multiplier": self.out_multiplier, "out_shift": self.out_shift,
                "heads_parallel": self.heads_parallel}


def macs(n_tokens: int, head_dim: int) -> int:
    """Multiply-accumulates of one head: ``Q K^T`` and ``P V``, ``2 N**2 head_dim``."""
    return 2 * n_tokens * n_tokens * head_dim


def _check_inputs(q, k, v, params: AttentionParams):
    if not isinstance(params, AttentionParams):
        raise TypeError(f"params must be an AttentionParams, not {type(params).__name__}")
    arrays = []
    for name, x in (("q", q), ("k", k), ("v", v)):
        a = check_int_array(name, x)
        if a.ndim != 2 or a.shape[1] != params.head_dim:
            raise ValueError(f"{name} must have shape (n_tokens, {params.head_dim}), not {a.shape}")
        arrays.append(check_int_array(f"{name} values", a, bits=params.data_bits))
    n = arrays[0].shape[0]
    if arrays[1].shape[0] != n or arrays[2].shape[0] != n:
        raise ValueError(f"q, k and v must have the same number of rows, not {[a.shape[0] for a in arrays]}")
    if not 1 <= n <= params.n_max:
        raise ValueError(f"n_tokens must be between 1 and n_max {params.n_max}, not {n}")
    return arrays


def attention_trace(q, k, v, params: AttentionParams, *, counter: OverflowCounter | None = None) -> dict:
    """Every intermediate of :func:`attention_head`: ``scores``, the softmax trace keys, ``pv``, ``out``."""
    q, k, v = _check_inputs(q, k, v, params)
    scores = q @ k.T
    sm = softmax_trace(scores, multiplier=params.scale_multiplier, shift=params.scale_shift,
                       params=params.softmax)
    pv = sm["p"] @ v
    out = requantize(pv, params.out_multiplier, params.out_shift, params.data_format,
                     counter=counter, site="attention.out")
    return {"scores": scores, **sm, "pv": pv, "out": out}


def attention_head(q, k, v, params: AttentionParams, *,
                   counter: OverflowCounter | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One head of integer attention: ``(out, class_row)``.

    ``out`` is ``N x head_dim`` in ``params.data_format``; ``class_row`` holds the ``N`` probabilities of
    the class token (query 0) as unsigned integers with ``prob_frac`` fractional bits. Outputs that
    saturate are counted in ``counter``.
    """
    t = attention_trace(q, k, v, params, counter=counter)
    return t["out"], t["p"][0]


def class_scores(q, k, params: AttentionParams) -> np.ndarray:
    """Only the class token's attention row (the selector's token scores) from ``Q`` and ``K``."""
    zeros = np.zeros_like(np.asarray(q))
    return attention_trace(q, k, zeros, params)["p"][0]


def float_attention(q, k, v, params: AttentionParams) -> tuple[np.ndarray, np.ndarray]:
    """Float model of the same head: float softmax of the same real logits, exact ``P V``.

    Returns ``(out, probs)`` with ``out`` in output LSBs (before rounding and saturation).
    """
    q, k, v = _check_inputs(q, k, v, params)
    probs = float_softmax(q @ k.T, multiplier=params.scale_multiplier, shift=params.scale_shift,
                          params=params.softmax)
    scale = params.out_multiplier * 2.0 ** (params.softmax.prob_frac - params.out_shift)
    return (probs @ v.astype(np.float64)) * scale, probs


def attention_error(q, k, v, params: AttentionParams) -> dict:
    """Float-vs-integer error of one head, with the derived bound.

    The output bound is ``scale * sum_j bound_ij |v_jd| + 1/2`` (softmax bound carried through ``P V``,
    plus the final rounding); saturation only brings both sides closer. Returns ``out_max_lsb``,
    ``out_mean_lsb``, ``out_bound_max``, ``prob_max_abs``, ``prob_mean_abs``, ``prob_bound_max`` and
    ``within_bound``.
    """
    t = attention_trace(q, k, v, params)
    ref_out, ref_p = float_attention(q, k, v, params)
    fmt = params.data_format
    out_err = np.abs(t["out"] - np.clip(ref_out, fmt.min_int, fmt.max_int))
    p_bound = softmax_error_bound(t["scores"], multiplier=params.scale_multiplier, shift=params.scale_shift,
                                  params=params.softmax)
    scale = params.out_multiplier * 2.0 ** (params.softmax.prob_frac - params.out_shift)
    v_abs = np.abs(np.asarray(v, dtype=np.float64))
    out_bound = scale * (p_bound @ v_abs) + 0.5 + 1e-9
    p_err = np.abs(params.softmax.prob_format.to_float(t["p"]) - ref_p)
    return {"out_max_lsb": float(out_err.max()), "out_mean_lsb": float(out_err.mean()),
            "out_bound_max": float(out_bound.max()), "prob_max_abs": float(p_err.max()),
            "prob_mean_abs": float(p_err.mean()), "prob_bound_max": float(p_bound.max()),
            "within_bound": bool(np.all(out_err <= out_bound) and np.all(p_err <= p_bound))}
