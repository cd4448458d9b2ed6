"""The integer softmax of quant/softmax.py: formats, each step against a naive model, derived error bounds."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokensift.quant.softmax import (
    SoftmaxParams,
    SoftmaxVariant,
    class_attention_row,
    exp2_neg,
    exp2_table,
    float_softmax,
    integer_softmax,
    log2_argument,
    measure_softmax_error,
    normalize,
    reciprocal,
    softmax_error_bound,
    softmax_trace,
    table_error,
)

VARIANTS = [SoftmaxParams(), SoftmaxParams(variant="exp2_poly"),
            SoftmaxParams(log2_frac=5, exp_frac=10, prob_frac=8), SoftmaxParams(variant="exp2_poly", log2_frac=10)]


class TestParams:
    def test_defaults(self):
        p = SoftmaxParams()
        assert (p.variant, p.log2_frac, p.exp_frac, p.prob_frac) == (SoftmaxVariant.EXP2_LUT, 8, 15, 15)
        assert str(p.prob_format) == "u16.15"
        assert p.recip_shift == 31
        assert SoftmaxParams(variant="exp2_poly").variant is SoftmaxVariant.EXP2_POLY

    @pytest.mark.parametrize("kwargs, exc, message", [
        ({"variant": "cubic"}, ValueError, r"^variant must be one of exp2_lut, exp2_poly, not 'cubic'$"),
        ({"variant": 3}, TypeError, r"^variant must be a SoftmaxVariant, not int$"),
        ({"log2_frac": 0}, ValueError, r"^log2_frac must be between 1 and 12, not 0$"),
        ({"log2_frac": 8.0}, TypeError, r"^log2_frac must be an integer, not float$"),
        ({"exp_frac": 25}, ValueError, r"^exp_frac must be between 4 and 24, not 25$"),
        ({"prob_frac": 17}, ValueError, r"^prob_frac must be between 1 and 16, not 17$"),
        ({"prob_frac": True}, TypeError, r"^prob_frac must be an integer, not bool$"),
    ])
    def test_wrong(self, kwargs, exc, message):
        with pytest.raises(exc, match=message):
            SoftmaxParams(**kwargs)


class TestTable:
    @pytest.mark.parametrize("params", VARIANTS, ids=str)
    def test_range_and_monotonic(self, params):
        t = exp2_table(params)
        e = params.exp_frac
        assert t.shape == (1 << params.log2_frac,)
        assert t[0] == 1 << e
        assert np.all(t >= 1 << e) and np.all(t < 1 << (e + 1))
        assert np.all(np.diff(t) >= 0)

    def test_lut_error_is_half_an_lsb(self):
        p = SoftmaxParams()
        assert table_error(p) <= 2.0 ** -(p.exp_frac + 1)

    def test_poly_error_is_the_quadratic_error(self):
        # minimax relative error of the quadratic (0.268 %) plus the integer rounding of two steps
        p = SoftmaxParams(variant="exp2_poly")
        assert 0.0025 < table_error(p) <= 0.00268 + 2.0 ** -(p.exp_frac - 1)


def _naive_exp(t: int, params: SoftmaxParams) -> int:
    """Scalar model with Python ints: floor split, table, half-up shift capped at E + 2."""
    f = params.log2_frac
    ip, fr = t >> f, t & ((1 << f) - 1)
    shift = min(-ip, params.exp_frac + 2)
    value = int(exp2_table(params)[fr])
    return (value + (1 << (shift - 1))) >> shift if shift else value


class TestSteps:
    @pytest.mark.parametrize("params", VARIANTS, ids=str)
    def test_exp_matches_scalar_model(self, params):
        rng = np.random.default_rng(3)
        t = np.concatenate([-rng.integers(0, 40 << params.log2_frac, 500), [0, -1, -(1 << 40)]])
        assert exp2_neg(t, params).tolist() == [_naive_exp(int(x), params) for x in t]

    def test_exp_corners(self):
        p = SoftmaxParams()
        assert exp2_neg([0, -(1 << 8), -(2 << 8), -(1 << 30)], p).tolist() == [32768, 16384, 8192, 0]

    def test_exp_rejects_positive(self):
        with pytest.raises(ValueError, match=r"^exponent arguments must be zero or negative$"):
            exp2_neg([1])

    def test_log2_argument_rounds_half_up(self):
        assert log2_argument([-3, -1, 0], 1, 1).tolist() == [-1, 0, 0]

    @given(st.integers(1 << 15, 4096 << 15))
    def test_reciprocal_is_nearest(self, total):
        p = SoftmaxParams()
        exact = Fraction(1 << p.recip_shift, total)
        r = int(reciprocal([total], p)[0])
        assert abs(Fraction(r) - exact) <= Fraction(1, 2)
        assert r == int(exact + Fraction(1, 2))  # floor(x + 1/2): ties go up

    def test_reciprocal_rejects_small_sums(self):
        with pytest.raises(ValueError, match=r"^softmax sums are at least 2\*\*exp_frac"):
            reciprocal([100])

    def test_normalize_one_token_is_one(self):
        p = SoftmaxParams()
        r = reciprocal([1 << 15], p)
        assert normalize([1 << 15], r, p).tolist() == [1 << 15]


rows = st.integers(1, 64).flatmap(
    lambda n: st.lists(st.integers(-(1 << 21), 1 << 21), min_size=n, max_size=n))


class TestSoftmax:
    @settings(max_examples=150, deadline=None)
    @given(rows, st.integers(1, (1 << 17) - 1), st.integers(0, 30), st.sampled_from(VARIANTS))
    def test_within_derived_bound(self, row, mult, shift, params):
        s = np.array([row])
        p = integer_softmax(s, multiplier=mult, shift=shift, params=params)
        got = params.prob_format.to_float(p)
        ref = float_softmax(s, multiplier=mult, shift=shift, params=params)
        bound = softmax_error_bound(s, multiplier=mult, shift=shift, params=params)
        assert np.all(np.abs(got - ref) <= bound)
        assert np.all(p >= 0) and np.all(p <= 1 << params.prob_frac)

    @settings(max_examples=100, deadline=None)
    @given(rows, st.integers(-(1 << 20), 1 << 20), st.sampled_from(VARIANTS))
    def test_shift_invariant_and_argmax(self, row, offset, params):
        s = np.array(row)
        p = integer_softmax(s, multiplier=1 << 12, shift=14, params=params)
        assert p.tolist() == integer_softmax(s + offset, multiplier=1 << 12, shift=14, params=params).tolist()
        assert p[int(np.argmax(s))] == p.max()

    def test_trace_is_consistent(self):
        s = np.array([[5, 1, -3], [0, 0, 0]])
        tr = softmax_trace(s, multiplier=1 << 16, shift=16)
        assert tr["max"].tolist() == [5, 0]
        assert tr["e"][1].tolist() == [32768] * 3
        assert tr["sum"].tolist() == tr["e"].sum(axis=1).tolist()
        assert tr["p"][1].tolist() == [10923] * 3  # round(2**15 / 3)

    def test_ties_and_one_token(self):
        assert integer_softmax([[7]], multiplier=1, shift=0).tolist() == [[1 << 15]]
        assert integer_softmax([[3, 3]], multiplier=1, shift=0).tolist() == [[1 << 14, 1 << 14]]

    def test_empty_row(self):
        with pytest.raises(ValueError, match=r"^softmax needs at least one score per row$"):
            integer_softmax(np.zeros((2, 0), dtype=np.int64), multiplier=1, shift=0)

    def test_class_row(self):
        rng = np.random.default_rng(0)
        s = rng.integers(-5000, 5000, size=(9, 9))
        full = integer_softmax(s, multiplier=1 << 12, shift=12)
        assert class_attention_row(s, multiplier=1 << 12, shift=12).tolist() == full[0].tolist()
        assert class_attention_row(s[0], multiplier=1 << 12, shift=12).tolist() == full[0].tolist()

    @pytest.mark.parametrize("params", VARIANTS[:2], ids=str)
    @pytest.mark.parametrize("spread", [300, 3000, 100000])
    def test_measured_error(self, params, spread):
        rng = np.random.default_rng(spread)
        s = rng.integers(-spread, spread, size=(64, 197))
        r = measure_softmax_error(s, multiplier=1 << 12, shift=12, params=params)
        assert r["within_bound"]
        assert r["mean_abs"] <= r["max_abs"] <= r["bound_max"]
