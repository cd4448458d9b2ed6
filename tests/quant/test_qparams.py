"""Quantization parameters: the multiplier/shift pair, per-channel weights, per-tensor activations, biases."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokensift.quant.fixed import INT8, OverflowCounter, requantize
from tokensift.quant.qparams import (
    MULTIPLIER_BITS,
    quantize_bias,
    quantize_multiplier,
    quantize_tensor,
    quantize_weight_per_channel,
    symmetric_scale,
)

scales = st.floats(min_value=2.0**-60, max_value=2.0**12, allow_nan=False, allow_infinity=False)


class TestQuantizeMultiplier:
    @given(scale=scales, bits=st.integers(2, 31))
    def test_error_bound(self, scale, bits):
        if scale >= 2**bits - 0.5:
            with pytest.raises(ValueError, match=r"^real_scale must be below "):
                quantize_multiplier(scale, bits)
            return
        m, s = quantize_multiplier(scale, bits)
        assert 1 <= m < 2**bits and 0 <= s <= 62
        err = abs(Fraction(m, 2**s) - Fraction(scale))
        # round to nearest at the resolution 2**-shift: at most half of it
        assert err <= Fraction(1, 2 ** (s + 1))
        if m >= 2 ** (bits - 1):
            # normalised: scale * 2**shift >= 2**(bits-1) - 1/2, so the relative error is at most 2**-bits
            # (the bound from the docstring, with the exact 1/2 rounding slack made explicit)
            assert err <= Fraction(scale) * Fraction(1, 2**bits - 1)

    @given(scale=st.floats(min_value=2.0**-30, max_value=2.0**10), bits=st.integers(12, 31))
    def test_normalised_in_the_usual_range(self, scale, bits):
        # scale = f * 2**e with e in [-29, 11]: shift = bits - e lies in [1, 60], inside [0, 62]
        m, s = quantize_multiplier(scale, bits)
        assert 2 ** (bits - 1) <= m < 2**bits
        assert s == bits - math.frexp(scale)[1] or (m == 2 ** (bits - 1) and s == bits - math.frexp(scale)[1] - 1)

    def test_examples(self):
        assert quantize_multiplier(0.25) == (32768, 17)
        assert quantize_multiplier(1.0) == (32768, 15)
        assert quantize_multiplier(3.0, bits=8) == (192, 6)

    def test_tie_rounds_half_up(self):
        # f * 2**16 = 32768.5 exactly -> 32769
        assert quantize_multiplier((2**15 + 0.5) / 2**16) == (32769, 16)

    def test_rounding_to_the_next_power_of_two_renormalises(self):
        m, s = quantize_multiplier((2**16 - 0.25) / 2**16)
        assert (m, s) == (32768, 15)

    def test_tiny_scale_loses_bits_at_the_largest_shift(self):
        m, s = quantize_multiplier(3 * 2.0**-60, bits=16)
        assert (m, s) == (12, 62)

    def test_large_scale_has_no_shift(self):
        assert quantize_multiplier(50000.4, bits=16) == (50000, 0)

    def test_default_width(self):
        assert MULTIPLIER_BITS == 16
        m, _ = quantize_multiplier(0.7)
        assert 2**15 <= m < 2**16

    @given(acc=st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=50),
           scale=st.floats(min_value=2.0**-30, max_value=0.5))
    def test_requantize_follows_the_real_scale(self, acc, scale):
        m, s = quantize_multiplier(scale)
        out = requantize(np.array(acc), m, s, INT8)
        exact = np.array([float(Fraction(a) * Fraction(scale)) for a in acc])
        inside = np.abs(exact) < 127
        # half an output LSB for the rounding, plus the multiplier's error times |acc|
        bound = 0.5 + np.abs(np.array(acc, dtype=float)) * abs(m * 2.0**-s - scale) + 1e-9
        assert np.all(np.abs(out - exact)[inside] <= bound[inside])
        assert np.all(np.sign(out[~inside]) == np.sign(exact[~inside]))
        assert np.all(np.abs(out[~inside]) >= 127)

    @pytest.mark.parametrize("value, error, message", [
        (0.0, ValueError, r"^real_scale must be a positive finite number, not 0\.0$"),
        (-1.0, ValueError, r"^real_scale must be a positive finite number, not -1\.0$"),
        (math.nan, ValueError, r"^real_scale must be a positive finite number, not nan$"),
        (math.inf, ValueError, r"^real_scale must be a positive finite number, not inf$"),
        ("0.5", TypeError, r"^real_scale must be a real number, not '0\.5'$"),
        (True, TypeError, r"^real_scale must be a real number, not True$"),
        (2.0**-64, ValueError, r"^real_scale must be at least 2\*\*-63 to be representable with shift <= 62, not "),
        (70000.0, ValueError, r"^real_scale must be below 65535\.5 for a 16-bit multiplier, not 70000\.0$"),
    ])
    def test_rejects_scales(self, value, error, message):
        with pytest.raises(error, match=message):
            quantize_multiplier(value)

    @pytest.mark.parametrize("bits, error, message", [
        (1, ValueError, r"^multiplier bits must be between 2 and 31, not 1$"),
        (32, ValueError, r"^multiplier bits must be between 2 and 31, not 32$"),
        (16.0, TypeError, r"^multiplier bits must be an integer, not 16\.0$"),
    ])
    def test_rejects_widths(self, bits, error, message):
        with pytest.raises(error, match=message):
            quantize_multiplier(0.5, bits)


class TestWeights:
    @given(st.integers(0, 2**32 - 1), st.integers(1, 8), st.integers(1, 40), st.integers(2, 16))
    def test_per_channel_codes_and_error(self, seed, n_out, n_in, bits):
        rng = np.random.default_rng(seed)
        w = rng.normal(size=(n_out, n_in)) * rng.uniform(1e-3, 10, size=(n_out, 1))
        q, s = quantize_weight_per_channel(w, bits)
        qmax = 2 ** (bits - 1) - 1
        assert q.dtype == np.int64 and s.shape == (n_out,)
        assert np.all(np.abs(q) <= qmax)
        assert np.all(np.abs(q).max(axis=1) == qmax)  # each channel's largest weight maps to the largest code
        # |w / s| <= qmax never saturates, so the error is the rounding's: at most half a step
        assert np.all(np.abs(w - q * s[:, None]) <= s[:, None] / 2 * (1 + 1e-12))

    def test_zero_channel(self):
        q, s = quantize_weight_per_channel(np.array([[0.0, 0.0], [2.0, -1.5]]))
        assert q.tolist() == [[0, 0], [127, -95]]  # -95.25 -> -95
        assert s.tolist() == [1.0, 2 / 127]

    def test_ties_round_half_up(self):
        # 2-bit codes: scale = max|w| (a power of two here), so +-0.5 steps are exact ties
        q, s = quantize_weight_per_channel(np.array([[2.0, 1.0, -1.0, -2.0]]), bits=2)
        assert s.tolist() == [2.0]
        assert q.tolist() == [[1, 1, 0, -1]]

    def test_axis(self):
        w = np.array([[1.0, 10.0], [-1.0, 5.0]])
        q, s = quantize_weight_per_channel(w, axis=1)
        assert s.tolist() == [1 / 127, 10 / 127]
        assert q.tolist() == [[127, 127], [-127, 64]]

    def test_conv_weights(self):
        w = np.ones((3, 1, 2, 2)) * np.array([1.0, 2.0, 4.0])[:, None, None, None]
        q, s = quantize_weight_per_channel(w)
        assert np.all(q == 127) and np.allclose(s, [1 / 127, 2 / 127, 4 / 127])

    @pytest.mark.parametrize("weight, kwargs, error, message", [
        (np.float64(1.0), {}, ValueError, r"^weight must have at least one dimension$"),
        ([[1.0, np.nan]], {}, ValueError, r"^weight values must be finite, not NaN or infinity$"),
        ([[1.0]], {"bits": 1}, ValueError, r"^bits must be between 2 and 32, not 1$"),
        ([[1.0]], {"axis": 2}, ValueError, r"^axis must be between -2 and 1, not 2$"),
        ([[1.0]], {"axis": 0.0}, TypeError, r"^axis must be an integer, not 0\.0$"),
    ])
    def test_rejects(self, weight, kwargs, error, message):
        with pytest.raises(error, match=message):
            quantize_weight_per_channel(weight, **kwargs)


class TestActivationsAndBias:
    def test_symmetric_scale(self):
        assert symmetric_scale(127.0).item() == 1.0
        assert symmetric_scale(0.0).item() == 1.0
        assert symmetric_scale([2.0], bits=4).tolist() == [2 / 7]
        with pytest.raises(ValueError, match=r"^absmax values must be finite and non-negative$"):
            symmetric_scale(-1.0)

    def test_quantize_tensor_rounds_half_up_and_saturates(self):
        c = OverflowCounter()
        q = quantize_tensor([0.25, 0.75, -0.25, -0.75, 1000.0, -1000.0], 0.5, counter=c, site="x")
        assert q.tolist() == [1, 2, 0, -1, 127, -128]
        assert dict(c.by_site) == {"x": 2}

    def test_quantize_tensor_rejects_bad_scale(self):
        with pytest.raises(ValueError, match=r"^scale must be a positive finite number, not 0\.0$"):
            quantize_tensor([1.0], 0.0)

    def test_bias(self):
        c = OverflowCounter()
        b = quantize_bias([1.0, -1.0, 1e12], 0.5, [0.01, 0.02, 0.01], counter=c)
        assert b.tolist() == [200, -100, 2**31 - 1]
        assert c.total == 1

    def test_bias_shape(self):
        with pytest.raises(ValueError, match=r"^bias shape \(2,\) must match the weight scales' shape \(3,\)$"):
            quantize_bias([1.0, 2.0], 0.5, [1.0, 1.0, 1.0])


@pytest.mark.parametrize("name", ["qparams", "gemm", "gelu", "layernorm", "calibrate"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"tokensift.quant.{name}"))
    assert result.attempted > 0 and result.failed == 0
