"""The integer kernels on the edges of int64: exact results, or a refusal, never a wrapped value."""

from fractions import Fraction
from math import floor

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tokensift.quant.fixed import FixedFormat, Overflow, Rounding, round_shift

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# edge-heavy int64 values: the limits, powers of two and their neighbours, and anything in between
EDGE_VALUES = sorted({v for k in range(64) for v in (2**k - 1, 2**k, -(2**k), -(2**k) - 1)
                      if INT64_MIN <= v <= INT64_MAX} | {INT64_MIN + 1, INT64_MAX - 1, 0})
edges = st.one_of(st.sampled_from(EDGE_VALUES), st.integers(INT64_MIN, INT64_MAX))
# a loaded shared machine must not fail these on generation speed
relaxed = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def exact_round(value: Fraction, rounding: Rounding) -> int:
    """The rounding rules on exact rationals (the reference the int64 forms must match)."""
    down = floor(value)
    rest = value - down
    if rounding is Rounding.FLOOR:
        return down
    if rounding is Rounding.TRUNC:
        return down + (value < 0 and rest != 0)
    if rounding is Rounding.HALF_UP:
        return down + (rest >= Fraction(1, 2))
    if rounding is Rounding.HALF_AWAY:
        return down + (rest > Fraction(1, 2) or (rest == Fraction(1, 2) and value >= 0))
    return down + (rest > Fraction(1, 2) or (rest == Fraction(1, 2) and down % 2 == 1))  # HALF_EVEN


@relaxed
@given(st.lists(edges, min_size=1, max_size=6), st.integers(1, 80), st.sampled_from(list(Rounding)))
@example([INT64_MAX], 1, Rounding.HALF_UP)  # the wrap: gave -2**62
@example([2**62], 63, Rounding.HALF_UP)
@example([INT64_MIN], 64, Rounding.HALF_AWAY)
def test_right_shift_is_exact_on_all_of_int64(values, shift, rounding):
    got = round_shift(np.array(values, dtype=np.int64), shift, rounding)
    assert got.dtype == np.int64
    assert got.tolist() == [exact_round(Fraction(v, 2**shift), rounding) for v in values]


@relaxed
@given(st.lists(edges, min_size=1, max_size=6), st.integers(0, 70))
@example([3], 62)  # the wrap
@example([-1], 63)
@example([0], 100)
def test_left_shift_is_exact_or_refused(values, k):
    exact = [v * 2**k for v in values]
    if all(INT64_MIN <= e <= INT64_MAX for e in exact):
        assert round_shift(values, -k).tolist() == exact
    else:
        with pytest.raises(ValueError, match=r"^round_shift: -?\d+ << \d+ does not fit in int64$"):
            round_shift(values, -k)


@relaxed
@given(st.lists(edges, min_size=1, max_size=6), st.integers(2, 62), st.booleans(),
       st.sampled_from(list(Overflow)))
def test_fit_is_exact_on_all_of_int64(values, bits, signed, overflow):
    fmt = FixedFormat(bits=bits, signed=signed, overflow=overflow)
    if overflow is Overflow.SATURATE:
        expect = [min(max(v, fmt.min_int), fmt.max_int) for v in values]
    else:
        expect = [(v - fmt.min_int) % 2**bits + fmt.min_int for v in values]
    assert fmt.fit(values).tolist() == expect


@relaxed
@given(st.integers(2**63, 2**80) | st.integers(-(2**80), -(2**63) - 1))
def test_values_beyond_int64_are_refused(value):
    with pytest.raises(ValueError, match=rf"^integer values must fit in int64 \(-2\*\*63 to 2\*\*63 - 1\), not {value}$"):
        FixedFormat(bits=8).fit([1, value])
    with pytest.raises(ValueError, match=r"^integer values must fit in int64"):
        round_shift([value], 1)
