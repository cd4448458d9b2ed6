"""The fixed-point vocabulary shared by ``sw/``, ``quant/`` and ``hw/``.

A :class:`FixedFormat` is one object that says how a real number is held in an integer: total bits,
fractional bits, signedness, how values are rounded and what happens when they do not fit. Every
rounding and overflow decision of the project goes through it (or through :func:`round_shift`, the
integer form of the same rounding rule), so the PyTorch model, the integer reference and the
generated hardware agree to the bit.

Integer values are carried as ``numpy.int64`` arrays (Python ints and lists are accepted), so products
of two 32-bit quantities never overflow the carrier.

>>> q8 = FixedFormat(bits=8, frac=4)
>>> q8.quantize([0.5, 1.03, 100.0]).tolist()
[8, 16, 127]
>>> q8.to_float([8, -128]).tolist()
[0.5, -8.0]
>>> round_shift(np.array([5, 6, 7, -5, -6]), 1).tolist()  # half up: 2.5 -> 3, -2.5 -> -2
[3, 3, 4, -2, -3]
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from tokensift.checks import check_int

__all__ = [
    "Rounding",
    "Overflow",
    "OverflowCounter",
    "FixedFormat",
    "round_shift",
    "requantize",
    "INT8",
    "UINT8",
    "INT32",
]


class Rounding(enum.Enum):
    """How a value between two representable numbers is rounded.

    ``HALF_UP`` (round half towards +infinity) is the hardware default: add half an LSB, then shift
    arithmetically. ``FLOOR`` is a bare arithmetic shift.
    """

    HALF_UP = "half_up"
    HALF_EVEN = "half_even"
    HALF_AWAY = "half_away"
    FLOOR = "floor"
    TRUNC = "trunc"


class Overflow(enum.Enum):
    """What happens to a value outside the format's range: clamp it, or keep the low bits."""

    SATURATE = "saturate"
    WRAP = "wrap"


@dataclass
class OverflowCounter:
    """Counts values that did not fit, per named site, so bad input never corrupts output silently.

    >>> c = OverflowCounter()
    >>> _ = INT8.fit([300, -5, -400], counter=c, site="gemm")
    >>> c.total, dict(c.by_site)
    (2, {'gemm': 2})
    """

    by_site: Counter = field(default_factory=Counter)

    def add(self, site: str, n: int) -> None:
        if n:
            self.by_site[site] += int(n)

    @property
    def total(self) -> int:
        return int(sum(self.by_site.values()))

    def reset(self) -> None:
        self.by_site.clear()


_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _as_int_array(values) -> np.ndarray:
    """``values`` as int64, refusing (never wrapping or rounding) integers outside the int64 range."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu" and arr.dtype != np.uint64:
        return arr.astype(np.int64, copy=False)
    if arr.dtype == np.uint64:
        if arr.size and arr.max() > _INT64_MAX:
            raise ValueError(f"integer values must fit in int64 (-2**63 to 2**63 - 1), not {int(arr.max())}")
        return arr.astype(np.int64)
    # object arrays, and lists whose Python integers beyond int64 numpy turned into floats: the elements decide
    if arr.dtype == object or not isinstance(values, np.ndarray):
        items = np.asarray(values, dtype=object)
        flat = items.ravel().tolist()
        if flat and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in flat):
            outside = [int(v) for v in flat if not _INT64_MIN <= int(v) <= _INT64_MAX]
            if outside:
                raise ValueError(f"integer values must fit in int64 (-2**63 to 2**63 - 1), not {outside[0]}")
            return items.astype(np.int64)
    raise TypeError(f"integer values expected, not {arr.dtype}")


def _check_rounding(rounding) -> Rounding:
    if not isinstance(rounding, Rounding):
        raise TypeError(f"rounding must be a Rounding, not {rounding!r}")
    return rounding


def _check_counter(counter) -> OverflowCounter | None:
    if counter is not None and not isinstance(counter, OverflowCounter):
        raise TypeError(f"counter must be an OverflowCounter or None, not {type(counter).__name__}")
    return counter


def round_shift(values, shift: int, rounding: Rounding = Rounding.HALF_UP) -> np.ndarray:
    """Divide integers by ``2**shift`` and round, exactly as the hardware does.

    ``shift`` may be zero (identity) or negative (an exact left shift). The result is exact for every
    int64 input and shift; a left shift whose result does not fit int64 is refused (``ValueError``),
    never wrapped.

    >>> round_shift([2**63 - 1], 1).tolist(), round_shift([-2**63], 64, Rounding.HALF_AWAY).tolist()
    ([4611686018427387904], [-1])
    >>> round_shift([3], -62)
    Traceback (most recent call last):
    ValueError: round_shift: 3 << 62 does not fit in int64
    """
    shift = check_int("shift", shift)
    _check_rounding(rounding)
    x = _as_int_array(values)
    if shift <= 0:
        k = -shift
        low, high = -((1 << 63) >> k), ((1 << 63) - 1) >> k  # x << k fits int64 exactly for low <= x <= high
        if x.size and (int(x.max()) > high or int(x.min()) < low):
            bad = int(x.max()) if int(x.max()) > high else int(x.min())
            raise ValueError(f"round_shift: {bad} << {k} does not fit in int64")
        return x << k if k < 64 else np.zeros_like(x)  # past 63 only zeros are left, and numpy stops at 63
    # int64 shifts stop at 63: a wider one works on Python integers (the result is 0 or -1 anyway)
    carrier = x.astype(object) if shift >= 64 else x
    floor = carrier >> shift
    rem = carrier & ((1 << shift) - 1)  # x - floor * 2**shift, in [0, 2**shift), with no overflow
    half = 1 << (shift - 1)
    if rounding is Rounding.FLOOR:
        up = False
    elif rounding is Rounding.HALF_UP:
        up = rem >= half
    elif rounding is Rounding.TRUNC:
        up = (carrier < 0) & (rem != 0)
    elif rounding is Rounding.HALF_AWAY:
        up = (rem > half) | ((rem == half) & (carrier >= 0))
    else:  # HALF_EVEN
        up = (rem > half) | ((rem == half) & ((floor & 1) == 1))
    out = np.asarray(floor + up).astype(np.int64)  # floor <= 2**62 here, so floor + 1 cannot overflow
    return out if x.ndim else out[()]


@dataclass(frozen=True)
class FixedFormat:
    """A fixed-point number format: ``bits`` in total, ``frac`` of them after the binary point.

    The represented value of the integer ``q`` is ``q * 2**-frac``. ``frac`` may be negative (a
    coarse format whose LSB is worth more than one) or larger than ``bits`` (a fine one).
    """

    bits: int
    frac: int = 0
    signed: bool = True
    rounding: Rounding = Rounding.HALF_UP
    overflow: Overflow = Overflow.SATURATE

    def __post_init__(self):
        check_int("bits", self.bits)
        check_int("frac", self.frac)
        if not 1 + int(self.signed) <= self.bits <= 62:
            low = 2 if self.signed else 1
            raise ValueError(
                f"bits must be between {low} and 62 for {'a signed' if self.signed else 'an unsigned'} format, "
                f"not {self.bits}"
            )
        if not isinstance(self.rounding, Rounding):
            raise TypeError(f"rounding must be a Rounding, not {self.rounding!r}")
        if not isinstance(self.overflow, Overflow):
            raise TypeError(f"overflow must be an Overflow, not {self.overflow!r}")

    # -- range -----------------------------------------------------------------------------------
    @property
    def min_int(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max_int(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def lsb(self) -> float:
        """The value of one least significant bit."""
        return 2.0 ** -self.frac

    @property
    def min_value(self) -> float:
        return self.min_int * self.lsb

    @property
    def max_value(self) -> float:
        return self.max_int * self.lsb

    def __str__(self) -> str:
        kind = "s" if self.signed else "u"
        return f"{kind}{self.bits}.{self.frac}"

    # -- integer domain --------------------------------------------------------------------------
    def fit(self, values, *, counter: OverflowCounter | None = None, site: str = "fit") -> np.ndarray:
        """Bring integers into range by the format's overflow mode, counting those that did not fit."""
        _check_counter(counter)
        x = _as_int_array(values)
        outside = (x < self.min_int) | (x > self.max_int)
        if counter is not None:
            counter.add(site, int(np.count_nonzero(outside)))
        if self.overflow is Overflow.SATURATE:
            return np.clip(x, self.min_int, self.max_int)
        # the low `bits` bits, sign-extended: exact for every int64 (x - min_int could overflow)
        low = x & ((1 << self.bits) - 1)
        return np.where(low > self.max_int, low - (1 << self.bits), low) if self.signed else low

    def contains(self, values) -> bool:
        """True when every integer is representable without overflow."""
        x = _as_int_array(values)
        return bool(np.all((x >= self.min_int) & (x <= self.max_int)))

    # -- real <-> integer ------------------------------------------------------------------------
    def quantize(self, values, *, counter: OverflowCounter | None = None, site: str = "quantize") -> np.ndarray:
        """Real numbers -> integers of this format (rounded, then saturated or wrapped)."""
        _check_counter(counter)
        x = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError("values to quantize must be finite, not NaN or infinity")
        scaled = np.ldexp(x, self.frac)
        q = _round_real(scaled, self.rounding)
        # clamp far-out values before the int64 cast, counting them as overflows all the same
        q = np.clip(q, -(2.0**62), 2.0**62)
        return self.fit(q.astype(np.int64), counter=counter, site=site)

    def to_float(self, values) -> np.ndarray:
        """Integers of this format -> their real values (float64, exact)."""
        return np.ldexp(_as_int_array(values).astype(np.float64), -self.frac)

    def fake_quant(self, values) -> np.ndarray:
        """Quantize and dequantize: the real value the hardware will actually hold."""
        return self.to_float(self.quantize(values))

    def convert(self, values, source: FixedFormat, *, counter: OverflowCounter | None = None,
                site: str = "convert") -> np.ndarray:
        """Integers of ``source`` -> integers of this format, rounding by this format's rule."""
        shifted = round_shift(values, source.frac - self.frac, self.rounding)
        return self.fit(shifted, counter=counter, site=site)

    # -- hardware --------------------------------------------------------------------------------
    @property
    def shape(self):
        """The Amaranth shape that holds one value of this format."""
        from amaranth.hdl import signed, unsigned

        return signed(self.bits) if self.signed else unsigned(self.bits)

    def with_(self, **changes) -> FixedFormat:
        """A copy with some fields changed."""
        from dataclasses import replace

        return replace(self, **changes)


def _floor_half_up(x: np.ndarray) -> np.ndarray:
    # floor(x + 0.5) without forming x + 0.5, which rounds to even above 2**52; x - floor(x) is exact
    f = np.floor(x)
    return f + (x - f >= 0.5)


def _round_real(x: np.ndarray, rounding: Rounding) -> np.ndarray:
    if rounding is Rounding.HALF_UP:
        return _floor_half_up(x)
    if rounding is Rounding.HALF_EVEN:
        return np.rint(x)
    if rounding is Rounding.HALF_AWAY:
        return np.sign(x) * _floor_half_up(np.abs(x))
    if rounding is Rounding.FLOOR:
        return np.floor(x)
    if rounding is Rounding.TRUNC:
        return np.trunc(x)
    raise TypeError(f"rounding must be a Rounding, not {rounding!r}")


def requantize(acc, multiplier: int, shift: int, out: FixedFormat, *,
               counter: OverflowCounter | None = None, site: str = "requantize") -> np.ndarray:
    """Scale wide accumulators by ``multiplier * 2**-shift`` into ``out``: the usual hardware form.

    The product ``acc * multiplier`` is formed exactly, rounded by ``out.rounding`` while shifting,
    then saturated (or wrapped) into ``out``; values that did not fit are counted.
    """
    check_int("multiplier", multiplier)
    if not 0 < int(multiplier) < (1 << 31):
        raise ValueError(f"multiplier must be between 1 and 2**31 - 1, not {multiplier}")
    check_int("shift", shift)
    if not 0 <= int(shift) <= 62:
        raise ValueError(f"shift must be between 0 and 62, not {shift}")
    if not isinstance(out, FixedFormat):
        raise TypeError(f"out must be a FixedFormat, not {type(out).__name__}")
    _check_counter(counter)
    x = _as_int_array(acc)
    if not INT32.contains(x):
        raise ValueError("accumulators must fit in signed 32 bits before requantization")
    return out.fit(round_shift(x * int(multiplier), int(shift), out.rounding), counter=counter, site=site)


INT8 = FixedFormat(bits=8, frac=0)
UINT8 = FixedFormat(bits=8, frac=0, signed=False)
INT32 = FixedFormat(bits=32, frac=0)
