"""Integer sigmoid: error against float within the derived bound, exact corners, symmetry, parameter checks."""

import math

import numpy as np
import pytest

from tokensift.quant.sigmoid import (
    SigmoidParams,
    sigmoid_error,
    sigmoid_error_bound,
    sigmoid_exact,
    sigmoid_int,
)
from tokensift.quant.softmax import SoftmaxParams


@pytest.mark.parametrize("in_bits", [8, 16])
@pytest.mark.parametrize("in_scale", [0.05, 8 / 127, 0.5, 1e-3, 20 / 32767])
def test_every_code_within_the_derived_bound(in_bits, in_scale):
    q = np.arange(-(1 << (in_bits - 1)), 1 << (in_bits - 1))
    p = SigmoidParams.from_scale(in_scale, in_bits=in_bits)
    stats = sigmoid_error(q, p)
    assert stats["within_bound"]
    # the argument's half-LSB rounding (2**-9 in log2 units) moves the sigmoid by at most 0.25 * ln 2 * 2**-9;
    # with the table and the final rounding the bound stays below 12 output LSBs
    assert stats["bound_max"] < 12 * 2.0**-15
    assert stats["max_abs"] <= stats["bound_max"]


def test_finer_exponent_is_more_accurate():
    q = np.arange(-128, 128)
    coarse = sigmoid_error(q, SigmoidParams.from_scale(0.05))
    fine = sigmoid_error(q, SigmoidParams.from_scale(0.05, exp=SoftmaxParams(log2_frac=12, exp_frac=20)))
    assert fine["within_bound"] and fine["max_abs"] < coarse["max_abs"] / 4


def test_corners_and_symmetry():
    p = SigmoidParams.from_scale(0.05, in_bits=8)
    assert sigmoid_int([0], p).tolist() == [1 << 14]  # exactly one half
    q = np.arange(-127, 128)
    out = sigmoid_int(q, p)
    assert np.array_equal(out + out[::-1], np.full(q.shape, 1 << 15))  # sigmoid(-x) = 1 - sigmoid(x), exact
    assert np.all(np.diff(out) >= 0)  # monotone
    assert out.min() >= 0 and out.max() <= 1 << 15 and p.out.contains(out)
    # saturating inputs: far out the result is exactly 0 or 1 and never leaves the format
    wide = SigmoidParams.from_scale(1.0, in_bits=16)
    assert sigmoid_int([-32768, 32767], wide).tolist() == [0, 1 << 15]


def test_matches_float_reference():
    p = SigmoidParams.from_scale(0.1, in_bits=8)
    q = np.arange(-128, 128)
    got = sigmoid_int(q, p) / 2.0**15
    assert np.abs(got - 1 / (1 + np.exp(-0.1 * q))).max() < 4e-4
    assert np.all(sigmoid_error_bound(q, p) > 0)
    assert sigmoid_exact([-1000.0, 1000.0]).tolist() == [0.0, 1.0]
    assert math.isclose(float(sigmoid_exact([1.0])[0]), 1 / (1 + math.exp(-1)))


def test_rejects():
    p = SigmoidParams.from_scale(0.05)
    with pytest.raises(ValueError, match=r"^sigmoid inputs must fit in signed 8 bits, between -128 and 127$"):
        sigmoid_int([128], p)
    with pytest.raises(TypeError, match=r"^sigmoid inputs must hold integers, not float64$"):
        sigmoid_int([0.5], p)
    with pytest.raises(TypeError, match=r"^params must be SigmoidParams, not dict$"):
        sigmoid_int([0], {})
    with pytest.raises(TypeError, match=r"^exp must be a SoftmaxParams, not int$"):
        SigmoidParams.from_scale(0.05, exp=3)
    with pytest.raises(ValueError, match=r"^in_bits must be between 2 and 16, not 17$"):
        SigmoidParams.from_scale(0.05, in_bits=17)
    with pytest.raises(ValueError, match=r"^in_scale must be a positive finite number, not -1\.0$"):
        SigmoidParams.from_scale(-1.0)
