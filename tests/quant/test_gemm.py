"""Integer GEMM: exactness, int32 saturation with counting, per-channel requantization, the integer linear layer."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tokensift.quant.fixed import INT8, INT32, FixedFormat, OverflowCounter, requantize
from tokensift.quant.gemm import (
    IntLinear,
    linear_error,
    linear_error_bound,
    matmul_int,
    requantize_per_channel,
)
from tokensift.quant.qparams import quantize_multiplier


def reference_matmul(a, b):
    """Python-int matrix product: no carrier width at all."""
    return [[sum(int(a[i][k]) * int(b[k][j]) for k in range(len(b))) for j in range(len(b[0]))]
            for i in range(len(a))]


@st.composite
def operands(draw, bits=8):
    m, k, n = draw(st.integers(1, 6)), draw(st.integers(1, 12)), draw(st.integers(1, 6))
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    a = draw(hnp.arrays(np.int64, (m, k), elements=st.integers(lo, hi)))
    b = draw(hnp.arrays(np.int64, (k, n), elements=st.integers(lo, hi)))
    return a, b


class TestMatmul:
    @given(operands())
    def test_exact(self, ab):
        a, b = ab
        assert matmul_int(a, b).tolist() == reference_matmul(a.tolist(), b.tolist())

    @given(operands(bits=16), st.integers(2, 32))
    def test_saturates_like_the_accumulator_format(self, ab, acc_bits):
        a, b = ab
        c = OverflowCounter()
        out = matmul_int(a, b, a_bits=16, b_bits=16, acc_bits=acc_bits, counter=c, site="mm")
        exact = np.array(reference_matmul(a.tolist(), b.tolist()), dtype=object)
        fmt = FixedFormat(bits=acc_bits)
        expected = np.clip(exact, fmt.min_int, fmt.max_int).astype(np.int64)
        assert np.array_equal(out, expected)
        assert c.total == int(np.count_nonzero((exact < fmt.min_int) | (exact > fmt.max_int)))

    def test_batched(self):
        rng = np.random.default_rng(0)
        a = rng.integers(-128, 128, size=(3, 4, 5))
        b = rng.integers(-128, 128, size=(5, 2))
        assert np.array_equal(matmul_int(a, b), np.stack([matmul_int(x, b) for x in a]))

    def test_bias(self):
        assert matmul_int([[1, 2]], [[3], [4]], bias=[100]).tolist() == [[111]]

    @pytest.mark.parametrize("fill_a, fill_b, expected", [
        (127, 127, INT32.max_int),
        (-128, -128, INT32.max_int),
        (-128, 127, INT32.min_int),
    ])
    def test_int32_overflow_of_long_sums(self, fill_a, fill_b, expected):
        # |a*b| <= 2**14, so int32 overflows only from K = 2**17 terms on (-128 * -128 * 2**17 = 2**31);
        # 127 * 127 needs K >= 133,144. K = 2**17 + 4096 overflows for all three extremes.
        k = 2**17 + 4096
        c = OverflowCounter()
        a = np.full((2, k), fill_a, dtype=np.int64)
        b = np.full((k, 3), fill_b, dtype=np.int64)
        out = matmul_int(a, b, counter=c, site="acc")
        assert fill_a * fill_b * k > INT32.max_int or fill_a * fill_b * k < INT32.min_int
        assert np.all(out == expected)
        assert dict(c.by_site) == {"acc": 6}

    def test_no_overflow_below_2_17_terms(self):
        k = 2**17 - 1
        c = OverflowCounter()
        out = matmul_int(np.full((1, k), -128), np.full((k, 1), -128), counter=c)
        assert out.item() == 16384 * k and c.total == 0

    def test_bias_overflow_is_counted(self):
        c = OverflowCounter()
        out = matmul_int([[127, 127]], [[127], [127]], bias=[INT32.max_int - 10], counter=c, site="b")
        assert out.item() == INT32.max_int and dict(c.by_site) == {"b": 1}

    @pytest.mark.parametrize("args, kwargs, error, message", [
        (([[1.5]], [[1]]), {}, TypeError, r"^a must hold integers, not float64$"),
        (([[1]], [[200]]), {}, ValueError, r"^b values must fit in signed 8 bits, between -128 and 127$"),
        (([[1, 2]], [[1]]), {}, ValueError, r"^inner dimensions must agree, not 2 and 1$"),
        (([1, 2], [[1], [2]]), {}, ValueError, r"^a and b must have at least two dimensions, not 1 and 2$"),
        (([[1]], [[1]]), {"a_bits": 1}, ValueError, r"^a_bits must be between 2 and 16, not 1$"),
        (([[1]], [[1]]), {"b_bits": 17}, ValueError, r"^b_bits must be between 2 and 16, not 17$"),
        (([[1]], [[1]]), {"acc_bits": 33}, ValueError, r"^acc_bits must be between 2 and 32, not 33$"),
        (([[1]], [[1]]), {"acc_bits": "32"}, TypeError, r"^acc_bits must be an integer, not '32'$"),
        (([[1]], [[1]]), {"bias": [1, 2]}, ValueError, r"^bias must have shape \(1,\), not \(2,\)$"),
        (([[1]], [[1]]), {"bias": [2**31]}, ValueError, r"^bias values must fit in signed 32 bits, "),
    ])
    def test_rejects(self, args, kwargs, error, message):
        with pytest.raises(error, match=message):
            matmul_int(*args, **kwargs)


class TestRequantize:
    def test_rounding_rule_half_up(self):
        # multiplier * 2**-shift = 1/2 exactly: x.5 rounds towards +infinity
        out = requantize_per_channel(np.array([[5, 6, 7, -5, -6, -7]]).T, [2**15], [16])
        assert out.ravel().tolist() == [3, 3, 4, -2, -3, -3]

    @given(st.integers(0, 2**32 - 1))
    def test_matches_requantize_per_column(self, seed):
        rng = np.random.default_rng(seed)
        acc = rng.integers(-(2**31), 2**31, size=(7, 5))
        pairs = [quantize_multiplier(float(s)) for s in rng.choice([1e-3, 2e-4, 3e-5], size=5)]
        mult, shift = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        c1, c2 = OverflowCounter(), OverflowCounter()
        out = requantize_per_channel(acc, mult, shift, counter=c1)
        for j in range(5):
            assert np.array_equal(out[:, j], requantize(acc[:, j], int(mult[j]), int(shift[j]), INT8, counter=c2))
        assert c1.total == c2.total

    def test_saturation_counted(self):
        c = OverflowCounter()
        out = requantize_per_channel(np.array([[2**31 - 1, -(2**31)]]), [2**15, 2**15], [15, 15], counter=c, site="rq")
        assert out.tolist() == [[127, -128]] and dict(c.by_site) == {"rq": 2}

    def test_rejects_shapes(self):
        with pytest.raises(ValueError, match=r"^multipliers and shifts must have shape \(2,\), not \(1,\) and \(2,\)$"):
            requantize_per_channel(np.zeros((1, 2), dtype=np.int64), [1], [1, 1])
        with pytest.raises(TypeError, match=r"^multipliers and shifts must be integers$"):
            requantize_per_channel(np.zeros((1, 1), dtype=np.int64), [1.0], [1])


class TestIntLinear:
    def make(self, seed, n_in=64, n_out=48, batch=400, dist="normal"):
        rng = np.random.default_rng(seed)
        w = rng.normal(scale=0.1, size=(n_out, n_in)) * rng.uniform(0.2, 2.0, size=(n_out, 1))
        b = rng.normal(scale=0.3, size=n_out)
        if dist == "normal":
            x = rng.normal(size=(batch, n_in))
        else:  # heavy-tailed, like attention outputs and residuals
            x = rng.standard_t(3, size=(batch, n_in))
        y = x @ w.T + b
        s_x = np.abs(x).max() / 127
        s_o = np.abs(y).max() / 127 * 1.02  # headroom: no output saturates
        layer = IntLinear.from_float(w, b, in_scale=s_x, out_scale=s_o)
        return layer, x, w, b, y

    @pytest.mark.parametrize("dist", ["normal", "heavy"])
    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_error_against_float(self, seed, dist):
        layer, x, w, b, y = self.make(seed, dist=dist)
        c = OverflowCounter()
        xq = layer.quantize_input(x, counter=c)
        layer.accumulate(xq, counter=c)
        out = layer(xq, counter=c)
        assert c.total == 0
        s_o = layer.out_scale
        err = np.abs(out * s_o - y)
        bound = linear_error_bound(layer, x, w, b)
        assert np.all(err <= bound * (1 + 1e-9))
        stats = linear_error(layer, x, w, b)
        assert stats["within_bound"] and stats["max_abs"] == err.max() and stats["saturated"] == 0
        # Mean: by Jensen, mean|e| <= sqrt(mean e**2). Modelling each rounding error as independent and
        # uniform on its step (variance step**2/12), the predicted mean square error is
        #   sum_k (s_x**2/12 w^_k**2 + x_k**2 s_w**2/12) + (s_x s_w)**2/12 + s_o**2/12.
        w_hat = layer.weight * layer.weight_scale[:, None]
        var = (layer.in_scale**2 / 12) * (w_hat**2).sum(axis=1) + (x**2) @ (layer.weight_scale[:, None] ** 2 / 12
                                                                            * np.ones_like(w)).T
        var = var + (layer.in_scale * layer.weight_scale) ** 2 / 12 + s_o**2 / 12
        assert err.mean() <= math.sqrt(var.mean())

    def test_integer_path_against_exact_rescaling(self):
        layer, x, w, b, y = self.make(5)
        xq = layer.quantize_input(x)
        acc = layer.accumulate(xq)
        out = layer(xq)
        real = acc * (layer.in_scale * layer.weight_scale / layer.out_scale)
        m_err = np.abs(layer.multipliers * 2.0 ** -layer.shifts.astype(float)
                       - layer.in_scale * layer.weight_scale / layer.out_scale)
        assert np.all(np.abs(out - real) <= 0.5 + np.abs(acc) * m_err + 1e-9)

    def test_per_channel_output_scales(self):
        rng = np.random.default_rng(3)
        w = rng.normal(size=(6, 8))
        x = rng.normal(size=(50, 8))
        y = x @ w.T
        s_o = np.abs(y).max(axis=0) / 127 * 1.01
        layer = IntLinear.from_float(w, None, in_scale=np.abs(x).max() / 127, out_scale=s_o)
        out = layer(layer.quantize_input(x))
        assert layer.out_scale.shape == (6,)
        assert np.all(np.abs(out).max(axis=0) >= 100)  # every channel uses its own range
        assert np.all(np.abs(out * s_o - y) <= linear_error_bound(layer, x, w, None) * (1 + 1e-9))

    def test_extreme_inputs_saturate_and_count(self):
        w = np.ones((4, 16))
        layer = IntLinear.from_float(w, np.zeros(4), in_scale=1.0, out_scale=1.0)
        for fill, expected in ((127, 127), (-128, -128)):
            c = OverflowCounter()
            out = layer(np.full((3, 16), fill), counter=c, site="fc")
            assert np.all(out == expected)
            assert dict(c.by_site) == {"fc.out": 12}  # 16 * 127 * 127 / 127 = 2032 does not fit int8

    def test_huge_bias_saturates_the_accumulator(self):
        c = OverflowCounter()
        layer = IntLinear.from_float(np.ones((1, 2)), np.array([1e12]), in_scale=1.0, out_scale=1e6, counter=c)
        assert dict(c.by_site) == {"linear.bias": 1} and layer.bias.item() == INT32.max_int
        out = layer(np.array([[127, 127]]), counter=c)
        assert dict(c.by_site) == {"linear.bias": 1, "linear.acc": 1}
        # the saturated accumulator 2**31 - 1 at scale s_x s_w = 1/127, requantized to scale 1e6
        assert out.item() == math.floor((2**31 - 1) / 127 / 1e6 + 0.5) == 17

    def test_rejects_bad_weight(self):
        with pytest.raises(ValueError, match=r"^weight must have shape \(out, in\), not \(3,\)$"):
            IntLinear.from_float(np.ones(3), None, in_scale=1.0, out_scale=1.0)

    def test_rejects_out_of_range_input(self):
        layer = IntLinear.from_float(np.ones((1, 2)), None, in_scale=1.0, out_scale=1.0)
        with pytest.raises(ValueError, match=r"^a values must fit in signed 8 bits, between -128 and 127$"):
            layer(np.array([[128, 0]]))

    @settings(max_examples=50)
    @given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.integers(1, 20))
    def test_property_bound(self, seed, n_in, n_out):
        layer, x, w, b, y = self.make(seed, n_in=n_in, n_out=n_out, batch=20)
        out = layer(layer.quantize_input(x))
        assert np.all(np.abs(out * layer.out_scale - y) <= linear_error_bound(layer, x, w, b) * (1 + 1e-9))

    def test_clipped_inputs_are_covered(self):
        # a calibrated scale below max|x| clips the largest inputs; the bound charges the clipped excess
        layer, x, w, b, y = self.make(4)
        clipped = IntLinear.from_float(w, b, in_scale=layer.in_scale / 2, out_scale=layer.out_scale)
        out = clipped(clipped.quantize_input(x))
        ok = np.abs(y / layer.out_scale) < 127
        assert np.all((np.abs(out * layer.out_scale - y) <= linear_error_bound(clipped, x, w, b) * (1 + 1e-9))[ok])


def test_requantize_per_channel_rejects_constants():
    acc = np.zeros((1, 2), dtype=np.int64)
    with pytest.raises(ValueError, match=r"^multipliers must be between 1 and 2\*\*31 - 1$"):
        requantize_per_channel(acc, [0, 1], [1, 1])
    with pytest.raises(ValueError, match=r"^shifts must be between 0 and 62$"):
        requantize_per_channel(acc, [1, 1], [1, 63])
    with pytest.raises(ValueError, match=r"^accumulators values must fit in signed 32 bits, "):
        requantize_per_channel(np.array([[2**31, 0]]), [1, 1], [1, 1])


class TestIntLinearFields:
    def fields(self, **changes):
        f = dict(weight=np.ones((2, 3), dtype=np.int64), bias=np.zeros(2, dtype=np.int64),
                 multipliers=np.full(2, 1 << 15), shifts=np.full(2, 20), in_scale=0.1,
                 weight_scale=np.ones(2), out_scale=np.ones(2))
        f.update(changes)
        return f

    def test_valid(self):
        layer = IntLinear(**self.fields())
        assert (layer.in_features, layer.out_features) == (3, 2)

    @pytest.mark.parametrize("changes, error, message", [
        ({"weight": np.full((2, 3), 128)}, ValueError, r"^weight values must fit in signed 8 bits, between -128 and 127$"),
        ({"weight": np.ones(3, dtype=np.int64)}, ValueError, r"^weight must have shape \(out, in\), not \(3,\)$"),
        ({"weight": np.ones((2, 3))}, TypeError, r"^weight must hold integers, not float64$"),
        ({"bias": np.zeros(3, dtype=np.int64)}, ValueError, r"^bias must have shape \(2,\), not \(3,\)$"),
        ({"shifts": np.full(2, 63)}, ValueError,
         r"^multipliers must be between 1 and 2\*\*31 - 1 and shifts between 0 and 62$"),
        ({"multipliers": np.full(2, 1.5)}, TypeError, r"^multipliers and shifts must be integers$"),
        ({"out_scale": np.ones(3)}, ValueError, r"^out_scale must have shape \(2,\), not \(3,\)$"),
        ({"in_bits": 17}, ValueError, r"^in_bits must be between 2 and 16, not 17$"),
        ({"out": 8}, TypeError, r"^out must be a FixedFormat, not int$"),
    ])
    def test_rejects(self, changes, error, message):
        with pytest.raises(error, match=message):
            IntLinear(**self.fields(**changes))
