"""The integer softmax of the attention accelerator: base-2 exponent, integer sum, divider reciprocal.

Every step is an integer operation on ``numpy.int64`` arrays and every rounding goes through
:func:`tokensift.quant.fixed.round_shift` or :meth:`FixedFormat.fit`, so the hardware
(:mod:`tokensift.hw.attention.softmax`) reproduces it to the bit. For one row of integer scores ``s``
(the ``Q K^T`` accumulators) with row maximum ``m``:

1. **log2-domain argument** ``t = round_shift((s - m) * M, sh)`` (half up), ``t <= 0``. The scale
   ``M * 2**-sh`` folds the real score scale and ``log2(e)`` together and has ``F = log2_frac``
   fractional bits: ``t * 2**-F ~= (s - m) * alpha * log2(e)``, so ``2**(t / 2**F) ~= exp(alpha (s - m))``.
2. **exponent** ``2**(t / 2**F)``: split ``t`` into an integer part ``ip = t >> F`` (floor, ``<= 0``) and a
   fraction ``fr = t mod 2**F``; ``table[fr] ~= 2**E * 2**(fr / 2**F)`` in ``[2**E, 2**(E+1))`` comes from
   a ``2**F``-entry ROM (``EXP2_LUT``, rounded to nearest) or from the integer quadratic
   ``2**E + fr (A + B fr 2**-F) 2**-F`` (``EXP2_POLY``, I-BERT style, no ROM);
   ``e = round_shift(table[fr], min(-ip, E + 2))`` (half up; shifts past ``E + 2`` give 0 anyway).
   The row maximum gets exactly ``e = 2**E``; every ``e`` is in ``[0, 2**E]``.
3. **sum** ``S = sum(e)`` in ``[2**E, N 2**E]``, exact.
4. **reciprocal** ``r = round_shift(floor(2**(K+1) / S), 1)`` with ``K = E + P + 1`` (``P = prob_frac``):
   ``floor(2**K / S + 1/2)``, what a ``P + 3``-step restoring divider plus a half-up rounding bit gives.
5. **probabilities** ``p = fit(round_shift(e * r, E + 1))`` as unsigned ``P + 1`` bits with ``P``
   fractional bits (``2**P`` is 1.0; it never saturates: ``e * r <= 2**K + 2**(E-1)``).

Error (derived in :func:`softmax_error_bound`, asserted in the tests, measured by
:func:`measure_softmax_error`): per element ``|p / 2**P - softmax|`` is at most the spread of
``e_j / S`` when each ``e`` is off by the argument rounding (``2**-(F+1)`` in log2), the table error
(``table_error(params)``, enumerated over all ``2**F`` entries) and half an LSB of shift rounding,
plus ``3/4 * 2**-P`` for the reciprocal and final rounding.

>>> p = integer_softmax([[0, -1000, -5000]], multiplier=1 << 12, shift=12)
>>> p.tolist(), int(p.sum()) <= (1 << 15) + 2
([[30719, 2049, 0]], True)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from tokensift.checks import check_int
from tokensift.quant.fixed import FixedFormat, round_shift

__all__ = [
    "SoftmaxVariant",
    "SoftmaxParams",
    "POLY_B",
    "exp2_table",
    "table_error",
    "log2_argument",
    "exp2_neg",
    "reciprocal",
    "normalize",
    "integer_softmax",
    "softmax_trace",
    "class_attention_row",
    "float_softmax",
    "softmax_error_bound",
    "measure_softmax_error",
]

#: quadratic coefficient of ``2**f ~= 1 + (1 - b) f + b f**2`` on ``[0, 1)``: minimax relative error
#: (0.268 %) under the constraints exact at ``f = 0`` and ``f = 1``; found by a dense grid search.
POLY_B = 0.339766


class SoftmaxVariant(enum.Enum):
    """How ``2**fraction`` is evaluated: a ``2**log2_frac``-entry ROM or an integer quadratic."""

    EXP2_LUT = "exp2_lut"
    EXP2_POLY = "exp2_poly"


@dataclass(frozen=True, kw_only=True)
class SoftmaxParams:
    """Number formats of the integer softmax.

    Parameters
    ----------
    variant : SoftmaxVariant or str
        ``"exp2_lut"`` (ROM of ``2**log2_frac`` entries) or ``"exp2_poly"`` (two multipliers, no ROM).
    log2_frac : int
        ``F``, fractional bits of the base-2 exponent argument (1..12).
    exp_frac : int
        ``E``, fractional bits of the exponentials ``e`` in ``[0, 1]`` (4..24).
    prob_frac : int
        ``P``, fractional bits of the probabilities, held as unsigned ``P + 1`` bits (1..16).
    """

    variant: SoftmaxVariant = SoftmaxVariant.EXP2_LUT
    log2_frac: int = 8
    exp_frac: int = 15
    prob_frac: int = 15

    def __post_init__(self):
        if isinstance(self.variant, str):
            try:
                object.__setattr__(self, "variant", SoftmaxVariant(self.variant))
            except ValueError:
                names = ", ".join(v.value for v in SoftmaxVariant)
                raise ValueError(f"variant must be one of {names}, not {self.variant!r}") from None
        if not isinstance(self.variant, SoftmaxVariant):
            raise TypeError(f"variant must be a SoftmaxVariant, not {type(self.variant).__name__}")
        check_int("log2_frac", self.log2_frac, low=1, high=12)
        check_int("exp_frac", self.exp_frac, low=4, high=24)
        check_int("prob_frac", self.prob_frac, low=1, high=16)

    @property
    def prob_format(self) -> FixedFormat:
        """Unsigned ``P + 1`` bits, ``P`` fractional: ``2**P`` is probability 1."""
        return FixedFormat(bits=self.prob_frac + 1, frac=self.prob_frac, signed=False)

    @property
    def exp_format(self) -> FixedFormat:
        """Unsigned ``E + 1`` bits, ``E`` fractional: the exponentials, ``2**E`` is 1."""
        return FixedFormat(bits=self.exp_frac + 1, frac=self.exp_frac, signed=False)

    @property
    def table_format(self) -> FixedFormat:
        """``2**fraction`` in ``[1, 2)`` with ``E`` fractional bits."""
        return FixedFormat(bits=self.exp_frac + 2, frac=self.exp_frac, signed=False)

    @property
    def recip_shift(self) -> int:
        """``K = E + P + 1``: the reciprocal is ``round(2**K / S)``."""
        return self.exp_frac + self.prob_frac + 1

    @property
    def max_shift(self) -> int:
        """Largest right shift of a table value; larger ones would give 0 as well."""
        return self.exp_frac + 2

    @property
    def poly_coefficients(self) -> tuple[int, int]:
        """``(A, B)``: ``round((1 - b) 2**E)`` and ``2**E - A``, so the quadratic is exact at ``f = 1``."""
        b = int(FixedFormat(bits=self.exp_frac + 2, frac=self.exp_frac).quantize(POLY_B))
        return (1 << self.exp_frac) - b, b

    def to_dict(self) -> dict:
        return {"variant": self.variant.value, "log2_frac": self.log2_frac, "exp_frac": self.exp_frac,
                "prob_frac": self.prob_frac}


DEFAULT = SoftmaxParams()


def _poly(fr: np.ndarray, params: SoftmaxParams) -> np.ndarray:
    a, b = params.poly_coefficients
    f = params.log2_frac
    inner = a + round_shift(b * fr, f)
    return (1 << params.exp_frac) + round_shift(fr * inner, f)


def exp2_table(params: SoftmaxParams = DEFAULT) -> np.ndarray:
    """``table[fr] ~= 2**E * 2**(fr / 2**F)`` for ``fr`` in ``0 .. 2**F - 1`` (int64).

    For ``EXP2_LUT`` this is the ROM content (nearest integer); for ``EXP2_POLY`` the integer quadratic
    the hardware evaluates, tabulated.
    """
    fr = np.arange(1 << params.log2_frac, dtype=np.int64)
    if params.variant is SoftmaxVariant.EXP2_LUT:
        return params.table_format.quantize(np.exp2(fr / (1 << params.log2_frac)))
    return _poly(fr, params)


def table_error(params: SoftmaxParams = DEFAULT) -> float:
    """Largest relative error of :func:`exp2_table` against ``2**E 2**(fr/2**F)``, over all entries."""
    fr = np.arange(1 << params.log2_frac, dtype=np.float64)
    exact = np.ldexp(np.exp2(fr / (1 << params.log2_frac)), params.exp_frac)
    return float(np.max(np.abs(exp2_table(params) / exact - 1.0)))


def log2_argument(diff, multiplier: int, shift: int) -> np.ndarray:
    """``t = round_shift(diff * multiplier, shift)``: ``diff = s - max <= 0`` into the log2 domain."""
    return round_shift(np.asarray(diff, dtype=np.int64) * int(multiplier), int(shift))


def exp2_neg(t, params: SoftmaxParams = DEFAULT) -> np.ndarray:
    """``e = round(2**E * 2**(t / 2**F))`` for integer ``t <= 0``, by table and rounding shift."""
    t = np.asarray(t, dtype=np.int64)
    if np.any(t > 0):
        raise ValueError("exponent arguments must be zero or negative")
    f = params.log2_frac
    ip = t >> f
    fr = t - (ip << f)
    shifts = np.minimum(-ip, params.max_shift)
    values = exp2_table(params)[fr]
    out = np.empty_like(values)
    for s in np.unique(shifts):
        sel = shifts == s
        out[sel] = round_shift(values[sel], int(s))
    return out


def reciprocal(total, params: SoftmaxParams = DEFAULT) -> np.ndarray:
    """``r = round_shift(floor(2**(K+1) / S), 1) = floor(2**K / S + 1/2)`` for sums ``S >= 2**E``."""
    total = np.asarray(total, dtype=np.int64)
    if np.any(total < (1 << params.exp_frac)):
        raise ValueError("softmax sums are at least 2**exp_frac (the row maximum contributes exactly that)")
    return round_shift((1 << (params.recip_shift + 1)) // total, 1)


def normalize(e, recip, params: SoftmaxParams = DEFAULT) -> np.ndarray:
    """``p = fit(round_shift(e * r, E + 1))`` in the unsigned ``P + 1``-bit probability format."""
    e = np.asarray(e, dtype=np.int64)
    return params.prob_format.fit(round_shift(e * np.asarray(recip, dtype=np.int64), params.exp_frac + 1))


def softmax_trace(scores, *, multiplier: int, shift: int, params: SoftmaxParams = DEFAULT) -> dict:
    """Every intermediate of :func:`integer_softmax` (rows along the last axis), for unit tests.

    Returns ``max``, ``t``, ``e``, ``sum``, ``recip`` and ``p`` as int64 arrays.
    """
    s = np.asarray(scores, dtype=np.int64)
    if s.ndim == 0 or s.shape[-1] == 0:
        raise ValueError("softmax needs at least one score per row")
    m = s.max(axis=-1, keepdims=True)
    t = log2_argument(s - m, multiplier, shift)
    e = exp2_neg(t, params)
    total = e.sum(axis=-1, keepdims=True)
    r = reciprocal(total, params)
    p = normalize(e, r, params)
    return {"max": m[..., 0], "t": t, "e": e, "sum": total[..., 0], "recip": r[..., 0], "p": p}


def integer_softmax(scores, *, multiplier: int, shift: int, params: SoftmaxParams = DEFAULT) -> np.ndarray:
    """Integer softmax of integer ``scores`` along the last axis; probabilities with ``P`` fractional bits."""
    return softmax_trace(scores, multiplier=multiplier, shift=shift, params=params)["p"]


def class_attention_row(scores, *, multiplier: int, shift: int, params: SoftmaxParams = DEFAULT) -> np.ndarray:
    """The class token's attention (row 0 of an ``N x N`` score matrix, or a 1-D row): token scores.

    These unsigned ``P``-fractional-bit probabilities are what the token selector consumes.
    """
    s = np.asarray(scores, dtype=np.int64)
    row = s if s.ndim == 1 else s[0]
    return integer_softmax(row, multiplier=multiplier, shift=shift, params=params)


# -- float reference and error --------------------------------------------------------------------

def _log2_exact(scores, multiplier: int, shift: int, params: SoftmaxParams) -> np.ndarray:
    s = np.asarray(scores, dtype=np.int64)
    d = (s - s.max(axis=-1, keepdims=True)).astype(np.float64)
    return d * (multiplier / 2.0 ** (shift + params.log2_frac))


def float_softmax(scores, *, multiplier: int, shift: int, params: SoftmaxParams = DEFAULT) -> np.ndarray:
    """Float softmax of the real logits the integer kernel approximates: ``ln 2 * (s - m) M 2**-(sh+F)``."""
    u = _log2_exact(scores, multiplier, shift, params)
    w = np.exp2(u)
    return w / w.sum(axis=-1, keepdims=True)


def softmax_error_bound(scores, *, multiplier: int, shift: int, params: SoftmaxParams = DEFAULT) -> np.ndarray:
    """Per-element bound on ``|p / 2**P - float_softmax|``, derived from the kernel's rounding steps.

    Each exponential is ``e_j = 2**E 2**u_j (1 + tau) 2**delta + eps`` with ``|delta| <= 2**-(F+1)``
    (argument rounding), ``|tau| <= table_error`` and ``|eps| <= 1/2`` (shift rounding), so
    ``e_j / S`` lies between ``lo_j / (lo_j + sum_{k!=j} hi_k)`` and ``hi_j / (hi_j + sum_{k!=j} lo_k)``;
    the reciprocal and the final rounding add at most ``(1/4 + 1/2) 2**-P``.
    """
    u = _log2_exact(scores, multiplier, shift, params)
    exact = np.ldexp(np.exp2(u), params.exp_frac)
    ref = exact / exact.sum(axis=-1, keepdims=True)
    tau = table_error(params)
    arg = 2.0 ** -(params.log2_frac + 1)
    hi = exact * (2.0**arg * (1.0 + tau)) + 0.5
    lo = np.maximum(exact * (2.0**-arg * (1.0 - tau)) - 0.5, 0.0)
    hi_total = hi.sum(axis=-1, keepdims=True)
    lo_total = lo.sum(axis=-1, keepdims=True)
    upper = hi / (hi + lo_total - lo)
    lower = lo / (lo + hi_total - hi)
    spread = np.maximum(upper - ref, ref - lower)
    # 1e-12 covers float64 rounding of this bound computation itself
    return spread + 0.75 * 2.0 ** -params.prob_frac + 1e-12


def measure_softmax_error(scores, *, multiplier: int, shift: int, params: SoftmaxParams = DEFAULT) -> dict:
    """Max and mean absolute error of :func:`integer_softmax` against :func:`float_softmax`.

    Returns ``max_abs``, ``mean_abs`` (probability units), ``max_lsb`` (in ``2**-P``),
    ``bound_max`` (the largest derived bound) and ``within_bound`` (every element inside its bound).
    """
    p = integer_softmax(scores, multiplier=multiplier, shift=shift, params=params)
    got = params.prob_format.to_float(p)
    ref = float_softmax(scores, multiplier=multiplier, shift=shift, params=params)
    bound = softmax_error_bound(scores, multiplier=multiplier, shift=shift, params=params)
    err = np.abs(got - ref)
    return {"max_abs": float(err.max()), "mean_abs": float(err.mean()),
            "max_lsb": float(err.max() * 2.0**params.prob_frac), "bound_max": float(bound.max()),
            "within_bound": bool(np.all(err <= bound))}
