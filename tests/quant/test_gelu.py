"""Integer GELU: error against float GELU with a derived bound, extremes, properties, parameter checks."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokensift.quant.fixed import INT8, FixedFormat, OverflowCounter
from tokensift.quant.gelu import (
    GeluParams,
    gelu_error,
    gelu_error_bound,
    gelu_exact,
    gelu_int,
    gelu_poly,
    gelu_product,
)


def check_bound(q, p: GeluParams):
    """The derived per-input bound of :func:`gelu_error_bound` holds for every unsaturated output."""
    out = gelu_int(q, p)
    exact = gelu_exact(p.in_scale * q)
    inside = np.abs(exact / p.out_scale) < 127  # saturated outputs are checked separately
    err = np.abs(out * p.out_scale - exact)[inside]
    bound = gelu_error_bound(q, p)[inside]
    assert np.all(err <= bound * (1 + 1e-9) + 1e-12)
    return err, bound


class TestAccuracy:
    @pytest.mark.parametrize("in_scale", [8 / 127, 4 / 127, 0.02, 0.005, 1e-4, 0.3])
    def test_every_int8_code(self, in_scale):
        q = np.arange(-128, 128)
        x = in_scale * q
        so = np.abs(gelu_exact(x)).max() / 127 * 1.01
        p = GeluParams.from_scales(in_scale, so)
        err, bound = check_bound(q, p)
        # mean: the bound's final half step (the output rounding) modelled as uniform on one output step
        # has mean magnitude at most its RMS s_o / sqrt(12) (Jensen); a biased rounding (e.g. floor, mean
        # s_o / 2) would break this.
        assert err.mean() <= bound.mean() - so / 2 + so / math.sqrt(12)
        stats = gelu_error(q, p)
        assert stats["within_bound"] and stats["max_abs"] == err.max() and stats["saturated"] == 0

    def test_random_real_valued_inputs(self):
        # activations as a real layer produces them: quantized once at a calibrated scale
        rng = np.random.default_rng(0)
        x = np.concatenate([rng.normal(scale=1.5, size=20000), rng.standard_t(3, size=20000)])
        s = np.abs(x).max() / 127
        q = np.clip(np.floor(x / s + 0.5), -128, 127).astype(np.int64)
        p = GeluParams.from_scales(s, np.abs(gelu_exact(s * q)).max() / 127 * 1.01)
        check_bound(q, p)

    def test_wide_inputs(self):
        q = np.arange(-(2**15), 2**15, 7)
        s = 6.0 / 2**15
        p = GeluParams.from_scales(s, 6.0 / 127, in_bits=16)
        check_bound(q, p)
        assert p.pre_shift > 0  # 16-bit inputs at a fine scale need the pre-shift to fit 32 bits

    def test_polynomial_error_documented(self):
        # the docstring's number: max |P - GELU| over a fine grid is 0.0182, at |x| ~= 2.35
        x = np.linspace(-8, 8, 1_600_001)
        d = np.abs(gelu_poly(x) - gelu_exact(x))
        assert round(float(d.max()), 4) == 0.0182
        assert abs(abs(x[d.argmax()]) - 2.35) < 0.01

    @settings(max_examples=60, deadline=None)
    @given(in_scale=st.floats(1e-6, 3.0), out_ratio=st.floats(0.2, 5.0), in_bits=st.integers(2, 16))
    def test_property_bound(self, in_scale, out_ratio, in_bits):
        lo, hi = -(2 ** (in_bits - 1)), 2 ** (in_bits - 1) - 1
        q = np.unique(np.linspace(lo, hi, 513).astype(np.int64))
        so = max(in_scale * hi / 127 * out_ratio, 1e-9)
        p = GeluParams.from_scales(in_scale, so, in_bits=in_bits)
        check_bound(q, p)

    @settings(max_examples=60, deadline=None)
    @given(in_scale=st.floats(1e-4, 0.3))
    def test_monotone_and_signed(self, in_scale):
        p = GeluParams.from_scales(in_scale, 0.05)
        q = np.arange(-128, 128)
        y = gelu_product(q, p)
        assert np.all(np.diff(y[q >= 0]) >= 0)  # GELU increases for x >= 0
        assert np.all(y[q >= 0] >= 0) and np.all(y[q < 0] <= 0)
        assert np.all(np.abs(y) < 2**31)


class TestExtremes:
    def test_all_max_and_min_codes(self):
        p = GeluParams.from_scales(0.05, 0.02)  # gelu(6.35) = 6.35 needs code 317: saturates
        c = OverflowCounter()
        out = gelu_int(np.full((4, 8), 127), p, counter=c, site="act")
        assert np.all(out == 127) and dict(c.by_site) == {"act": 32}
        c.reset()
        out = gelu_int(np.full((4, 8), -128), p, counter=c, site="act")
        assert np.all(out == 0) and c.total == 0  # gelu(-6.4) = -5e-10: rounds to 0

    def test_largest_product_fits_32_bits(self):
        for in_bits in (2, 8, 12, 16):
            for s in (1e-6, 1e-3, 0.05):
                p = GeluParams.from_scales(s, 1.0, in_bits=in_bits)
                y = gelu_product(np.array([-(2 ** (in_bits - 1)), 2 ** (in_bits - 1) - 1]), p)
                assert np.all(np.abs(y) <= 2**31 - 1)

    def test_zero(self):
        p = GeluParams.from_scales(0.05, 0.05)
        assert gelu_int(np.zeros(3, dtype=np.int64), p).tolist() == [0, 0, 0]


class TestParameters:
    def test_from_scales_fields(self):
        p = GeluParams.from_scales(0.05, 0.05)
        assert (p.in_bits, p.pre_shift, p.clip, p.one) == (8, 0, 50, 2770)
        assert p.out == INT8

    def test_coarse_scale_caps_the_clip_point(self):
        p = GeluParams.from_scales(0.2934, 0.05)
        assert p.clip * p.clip <= p.one

    @pytest.mark.parametrize("kwargs, error, message", [
        ({"in_scale": 0.0, "out_scale": 1.0}, ValueError, r"^in_scale must be a positive finite number, not 0\.0$"),
        ({"in_scale": 1.0, "out_scale": -1.0}, ValueError, r"^out_scale must be a positive finite number, not -1\.0$"),
        ({"in_scale": "1", "out_scale": 1.0}, TypeError, r"^in_scale must be a real number, not '1'$"),
        ({"in_scale": 10.0, "out_scale": 1.0}, ValueError,
         r"^in_scale 10\.0 is too coarse for the GELU polynomial \(clip point 0, constant one 0\); "
         r"use a finer input scale$"),
        ({"in_scale": 0.1, "out_scale": 1.0, "in_bits": 17}, ValueError, r"^in_bits must be between 2 and 16, not 17$"),
        ({"in_scale": 0.1, "out_scale": 1.0, "in_bits": 8.0}, TypeError, r"^in_bits must be an integer, not 8\.0$"),
    ])
    def test_from_scales_rejects(self, kwargs, error, message):
        with pytest.raises(error, match=message):
            GeluParams.from_scales(**kwargs)

    @pytest.mark.parametrize("changes, error, message", [
        ({"in_bits": 1}, ValueError, r"^in_bits must be between 2 and 16, not 1$"),
        ({"pre_shift": 32}, ValueError, r"^pre_shift must be between 0 and 31, not 32$"),
        ({"clip": 0}, ValueError, r"^clip must be between 1 and 65536, not 0$"),
        ({"one": 2**24}, ValueError, r"^one must be between 1 and 8388607, not 16777216$"),
        ({"one": 2499}, ValueError, r"^one must be at least clip\*\*2 = 2500, not 2499$"),
        ({"multiplier": 0}, ValueError, r"^multiplier must be between 1 and 2147483647, not 0$"),
        ({"shift": 63}, ValueError, r"^shift must be between 0 and 62, not 63$"),
        ({"out": "int8"}, TypeError, r"^out must be a FixedFormat, not str$"),
    ])
    def test_constructor_rejects(self, changes, error, message):
        fields = dict(in_bits=8, pre_shift=0, clip=50, one=2770, multiplier=48453, shift=28, out=INT8)
        fields.update(changes)
        with pytest.raises(error, match=message):
            GeluParams(**fields)

    def test_kernel_rejects_inputs(self):
        p = GeluParams.from_scales(0.05, 0.05)
        with pytest.raises(ValueError, match=r"^GELU inputs must fit in signed 8 bits, between -128 and 127$"):
            gelu_int(np.array([128]), p)
        with pytest.raises(TypeError, match=r"^GELU inputs must hold integers, not float64$"):
            gelu_int(np.array([1.0]), p)
        with pytest.raises(TypeError, match=r"^params must be GeluParams, not dict$"):
            gelu_int(np.array([1]), {})

    def test_output_format(self):
        p = GeluParams.from_scales(0.05, 0.001, out=FixedFormat(bits=16))
        out = gelu_int(np.array([127]), p)
        assert out.item() == pytest.approx(gelu_exact(6.35) / 0.001, abs=2)
