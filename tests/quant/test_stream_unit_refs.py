"""Property tests of the references the streaming units are checked against, at their edges.

Each reference is compared with an oracle written on Python integers and ``fractions.Fraction``, so a
numpy overflow, a floor-vs-truncate slip or a half-way tie rounded the wrong way shows up as a mismatch:

* the saturating residual add (:func:`tokensift.quant.residual.residual_add`), the residual unit's model;
* the token mean of DynamicViT's global half (:func:`tokensift.quant.stages.predictor.mean_rows`), the token
  mean unit's model;
* per-channel requantization (:func:`tokensift.quant.gemm.requantize_per_channel`), the GEMM epilogue's model,
  at the widest accumulators and shifts the epilogue accepts.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tokensift.quant.fixed import FixedFormat, Overflow, OverflowCounter, Rounding
from tokensift.quant.gemm import requantize_per_channel
from tokensift.quant.residual import residual_add
from tokensift.quant.stages.predictor import mean_rows


def _fit_oracle(v: int, fmt: FixedFormat) -> tuple[int, bool]:
    lo, hi = -(1 << (fmt.bits - 1)), (1 << (fmt.bits - 1)) - 1
    if lo <= v <= hi:
        return v, False
    if fmt.overflow is Overflow.SATURATE:
        return (hi if v > hi else lo), True
    wrapped = (v - lo) % (1 << fmt.bits) + lo
    return wrapped, True


def _half_up(q: Fraction) -> int:
    return math.floor(q + Fraction(1, 2))


# -- residual add ----------------------------------------------------------------------------------------
@st.composite
def _residual_case(draw):
    bits = draw(st.integers(2, 32))
    overflow = draw(st.sampled_from(list(Overflow)))
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    n = draw(st.integers(0, 24))
    # the extremes are drawn on purpose: they are where saturation and wrap-around differ
    codes = st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi, lo + 1, hi - 1, 0, -1]))
    return FixedFormat(bits=bits, overflow=overflow), draw(st.lists(codes, min_size=n, max_size=n)), \
        draw(st.lists(codes, min_size=n, max_size=n))


@settings(max_examples=300, deadline=None)
@given(_residual_case())
def test_residual_add_is_the_exact_sum_fitted_and_counted(case):
    fmt, x, y = case
    counter = OverflowCounter()
    got = residual_add(np.array(x, dtype=np.int64), np.array(y, dtype=np.int64), fmt, counter=counter,
                       site="res")
    want = [_fit_oracle(a + b, fmt) for a, b in zip(x, y, strict=True)]
    assert got.tolist() == [v for v, _ in want]
    assert counter.total == sum(flag for _, flag in want)
    assert got.dtype == np.int64


@settings(max_examples=100, deadline=None)
@given(_residual_case())
def test_residual_add_is_commutative(case):
    fmt, x, y = case
    a, b = np.array(x, dtype=np.int64), np.array(y, dtype=np.int64)
    assert residual_add(a, b, fmt).tolist() == residual_add(b, a, fmt).tolist()


def test_residual_add_refuses_non_integer_operands():
    with pytest.raises(TypeError):
        residual_add(np.array([0.5]), np.array([1]), FixedFormat(bits=16))
    with pytest.raises(TypeError, match="^res must be a FixedFormat, not int$"):
        residual_add([1], [2], 16)


# -- token mean ------------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.integers(0, 200), st.integers(1, 6), st.sampled_from([8, 16]), st.data())
def test_mean_rows_is_the_half_up_mean(n, channels, bits, data):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    col = st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi]))
    codes = data.draw(hnp.arrays(np.int64, (n, channels), elements=col))
    rows = codes.tolist()
    got = mean_rows(codes)
    if n == 0:
        assert got.tolist() == [0] * channels
        return
    want = [_half_up(Fraction(sum(r[c] for r in rows), n)) for c in range(channels)]
    assert got.tolist() == want
    # the mean of codes is a code of the same format: it never leaves the column's range
    assert all(min(r[c] for r in rows) <= want[c] <= max(r[c] for r in rows) for c in range(channels))


@pytest.mark.parametrize("n", [2, 4, 196])
def test_mean_rows_ties_round_up(n):
    # a column whose mean is exactly k + 1/2 rounds up, for negative and positive k
    col = np.array([[-3]] * (n // 2) + [[-4]] * (n // 2), dtype=np.int64)
    assert mean_rows(col).tolist() == [-3]
    assert mean_rows(-col + 1).tolist() == [5]


# -- per-channel requantization (the GEMM epilogue) ------------------------------------------------------
@st.composite
def _requant_case(draw):
    channels = draw(st.integers(1, 8))
    rows = draw(st.integers(1, 6))
    acc = st.one_of(st.integers(-(1 << 31), (1 << 31) - 1), st.sampled_from([-(1 << 31), (1 << 31) - 1, 0, -1]))
    accs = draw(st.lists(st.lists(acc, min_size=channels, max_size=channels), min_size=rows, max_size=rows))
    mult = st.one_of(st.integers(1, (1 << 31) - 1), st.sampled_from([1, (1 << 15), (1 << 31) - 1]))
    mults = draw(st.lists(mult, min_size=channels, max_size=channels))
    shifts = draw(st.lists(st.integers(0, 62), min_size=channels, max_size=channels))
    out = FixedFormat(bits=draw(st.sampled_from([8, 12, 16])), overflow=draw(st.sampled_from(list(Overflow))))
    return accs, mults, shifts, out


@settings(max_examples=300, deadline=None)
@given(_requant_case())
def test_requantize_per_channel_is_the_rounded_quotient_fitted(case):
    accs, mults, shifts, out = case
    assert out.rounding is Rounding.HALF_UP
    counter = OverflowCounter()
    got = requantize_per_channel(np.array(accs, dtype=np.int64), np.array(mults, dtype=np.int64),
                                 np.array(shifts, dtype=np.int64), out, counter=counter, site="epilogue")
    want = [[_fit_oracle(_half_up(Fraction(a * m, 1 << s)), out) for a, m, s in zip(row, mults, shifts, strict=True)]
            for row in accs]
    assert got.tolist() == [[v for v, _ in row] for row in want]
    assert counter.total == sum(flag for row in want for _, flag in row)
