"""quant/attention.py: parameters, the one-head reference against a naive model, derived error bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokensift.quant.attention import (
    AttentionParams,
    attention_error,
    attention_head,
    attention_trace,
    class_scores,
    macs,
    scale_for,
)
from tokensift.quant.fixed import OverflowCounter
from tokensift.quant.softmax import SoftmaxParams, SoftmaxVariant, integer_softmax


class TestParams:
    def test_defaults_and_derived(self):
        p = AttentionParams(n_max=197, head_dim=64)
        assert (p.lanes, p.data_bits, p.acc_bits, p.heads_parallel) == (16, 8, 32, 1)
        assert (p.scale_multiplier, p.scale_shift) == scale_for(2.0**-11)
        assert p.out_shift == 15 and p.out_multiplier == 1
        assert p.chunks == 4 and p.score_bits == 22 and p.min_acc_bits == 24
        assert AttentionParams(n_max=4, head_dim=8, lanes=8, softmax="exp2_poly").softmax.variant \
            is SoftmaxVariant.EXP2_POLY
        assert p.to_dict()["softmax"]["variant"] == "exp2_lut"

    @pytest.mark.parametrize("kwargs, exc, message", [
        ({"n_max": 0}, ValueError, r"^n_max must be between 1 and 4096, not 0$"),
        ({"n_max": 1.5}, TypeError, r"^n_max must be an integer, not float$"),
        ({"head_dim": 12}, ValueError, r"^head_dim must be a multiple of lanes 16, not 12$"),
        ({"head_dim": "64"}, TypeError, r"^head_dim must be an integer, not str$"),
        ({"lanes": 0}, ValueError, r"^lanes must be between 1 and 256, not 0$"),
        ({"data_bits": 17}, ValueError, r"^data_bits must be between 2 and 16, not 17$"),
        ({"acc_bits": 16}, ValueError,
         r"^acc_bits must be at least 24 to hold the scores and P V sums of 8-bit data with head_dim 64 "
         r"and n_max 197, not 16$"),
        ({"acc_bits": 40}, ValueError, r"^acc_bits must be between 2 and 32, not 40$"),
        ({"softmax": 3}, TypeError, r"^softmax must be a SoftmaxParams, a SoftmaxVariant or a variant name, "
                                    r"not int$"),
        ({"softmax": "cubic"}, ValueError, r"^variant must be one of exp2_lut, exp2_poly, not 'cubic'$"),
        ({"scale_multiplier": 5}, ValueError,
         r"^scale_multiplier and scale_shift must be given together or both left out$"),
        ({"scale_multiplier": 1 << 17, "scale_shift": 3}, ValueError,
         r"^scale_multiplier must be between 1 and 131071, not 131072$"),
        ({"scale_multiplier": 3, "scale_shift": 49}, ValueError, r"^scale_shift must be between 0 and 48, not 49$"),
        ({"out_multiplier": 0}, ValueError, r"^out_multiplier must be between 1 and 2147483647, not 0$"),
        ({"out_shift": 63}, ValueError, r"^out_shift must be between 0 and 62, not 63$"),
        ({"heads_parallel": 17}, ValueError, r"^heads_parallel must be between 1 and 16, not 17$"),
    ])
    def test_wrong(self, kwargs, exc, message):
        with pytest.raises(exc, match=message):
            AttentionParams(**{"n_max": 197, "head_dim": 64, **kwargs})

    def test_keyword_only(self):
        with pytest.raises(TypeError):
            AttentionParams(197, 64)  # noqa


class TestScale:
    def test_scale_for(self):
        m, s = scale_for(2.0**-11)
        assert (m, s) == (94548, 19)
        assert abs(m * 2.0 ** -(s + 8) / (2.0**-11 * math.log2(math.e)) - 1) < 2.0**-16
        m, s = scale_for(0.3, log2_frac=4)
        assert (1 << 16) <= m < (1 << 17)

    @pytest.mark.parametrize("alpha, exc, message", [
        (-1.0, ValueError, r"^alpha must be a positive finite number, not -1.0$"),
        ("x", TypeError, r"^alpha must be a real number, not str$"),
        (1e9, ValueError, r"^alpha 1000000000.0 is too large for a 17-bit multiplier and a non-negative shift$"),
        (1e-30, ValueError, r"^alpha 1e-30 is too small to represent with a shift of at most 48$"),
    ])
    def test_wrong(self, alpha, exc, message):
        with pytest.raises(exc, match=message):
            scale_for(alpha)


def _naive(q, k, v, p: AttentionParams):
    """Loops over Python ints; the softmax row by row; the requantization written out."""
    n = len(q)
    out = np.zeros((n, p.head_dim), dtype=np.int64)
    probs = []
    for i in range(n):
        s = [sum(int(a) * int(b) for a, b in zip(q[i], k[j], strict=True)) for j in range(n)]
        pr = integer_softmax(np.array(s), multiplier=p.scale_multiplier, shift=p.scale_shift, params=p.softmax)
        probs.append(pr)
        for d in range(p.head_dim):
            acc = sum(int(pr[j]) * int(v[j][d]) for j in range(n))
            x = acc * p.out_multiplier
            y = (x + (1 << (p.out_shift - 1))) >> p.out_shift if p.out_shift else x
            out[i, d] = min(max(y, -(1 << (p.data_bits - 1))), (1 << (p.data_bits - 1)) - 1)
    return out, np.array(probs)


def _qkv(rng, n, d, lo=-128, hi=128):
    return [rng.integers(lo, hi, size=(n, d)) for _ in range(3)]


class TestHead:
    @pytest.mark.parametrize("p", [
        AttentionParams(n_max=6, head_dim=8, lanes=4),
        AttentionParams(n_max=6, head_dim=8, lanes=8, softmax="exp2_poly", out_multiplier=3, out_shift=16),
        AttentionParams(n_max=6, head_dim=4, lanes=2, scale_multiplier=7, scale_shift=0),
    ], ids=["lut", "poly", "steep"])
    def test_matches_naive(self, p):
        rng = np.random.default_rng(7)
        for n in (1, 3, 6):
            q, k, v = _qkv(rng, n, p.head_dim)
            out, cls = attention_head(q, k, v, p)
            ref_out, ref_p = _naive(q, k, v, p)
            assert out.tolist() == ref_out.tolist()
            assert cls.tolist() == ref_p[0].tolist()
            assert class_scores(q, k, p).tolist() == cls.tolist()

    def test_trace(self):
        p = AttentionParams(n_max=8, head_dim=8, lanes=8)
        q, k, v = _qkv(np.random.default_rng(1), 5, 8)
        t = attention_trace(q, k, v, p)
        assert t["scores"].tolist() == (q @ k.T).tolist()
        assert t["pv"].tolist() == (t["p"] @ v).tolist()

    def test_extremes_fit_the_widths(self):
        p = AttentionParams(n_max=64, head_dim=64, lanes=16, acc_bits=24)
        n = 64
        for val_q, val_k, val_v in [(-128, -128, -128), (127, -128, 127), (-128, -128, 127)]:
            q, k, v = (np.full((n, 64), x) for x in (val_q, val_k, val_v))
            t = attention_trace(q, k, v, p)
            assert abs(int(t["scores"].max())) < 1 << (p.score_bits - 1)
            assert np.abs(t["pv"]).max() < 1 << (p.acc_bits - 1)
            assert t["out"].tolist() == np.full((n, 64), val_v).tolist()

    def test_saturation_is_counted(self):
        p = AttentionParams(n_max=4, head_dim=4, lanes=4, out_multiplier=1 << 10, out_shift=15)
        q, k, v = (np.full((3, 4), x) for x in (1, 1, 100))
        counter = OverflowCounter()
        out, _ = attention_head(q, k, v, p, counter=counter)
        assert out.tolist() == [[127] * 4] * 3
        assert counter.total == 12

    @pytest.mark.parametrize("shape, message", [
        ((0, 8), r"^n_tokens must be between 1 and n_max 6, not 0$"),
        ((7, 8), r"^n_tokens must be between 1 and n_max 6, not 7$"),
        ((3, 5), r"^q must have shape \(n_tokens, 8\), not \(3, 5\)$"),
    ])
    def test_wrong_shapes(self, shape, message):
        p = AttentionParams(n_max=6, head_dim=8, lanes=4)
        x = np.zeros(shape, dtype=np.int64)
        with pytest.raises(ValueError, match=message):
            attention_head(x, np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64), p)

    def test_wrong_inputs(self):
        p = AttentionParams(n_max=6, head_dim=8, lanes=4)
        z = np.zeros((3, 8), dtype=np.int64)
        with pytest.raises(ValueError, match=r"^v values must fit in signed 8 bits, between -128 and 127$"):
            attention_head(z, z, z + 128, p)
        with pytest.raises(TypeError, match=r"^k must hold integers, not float64$"):
            attention_head(z, z.astype(float), z, p)
        with pytest.raises(ValueError, match=r"^q, k and v must have the same number of rows, not \[3, 2, 3\]$"):
            attention_head(z, z[:2], z, p)
        with pytest.raises(TypeError, match=r"^params must be an AttentionParams, not dict$"):
            attention_head(z, z, z, {})

    def test_macs(self):
        assert macs(197, 64) == 2 * 197 * 197 * 64


class TestError:
    @settings(max_examples=40, deadline=None)
    @given(st.integers(1, 24), st.sampled_from([4, 16, 64, 128]), st.integers(0, 2**32 - 1),
           st.sampled_from(list(SoftmaxVariant)), st.integers(-3, 3))
    def test_within_derived_bound(self, n, value_range, seed, variant, scale_exp):
        p = AttentionParams(n_max=24, head_dim=16, lanes=8, softmax=variant,
                            scale_multiplier=(1 << 16) + 12345, scale_shift=18 + scale_exp)
        q, k, v = _qkv(np.random.default_rng(seed), n, 16, -value_range, value_range)
        err = attention_error(q, k, v, p)
        assert err["within_bound"]
        assert err["out_max_lsb"] <= err["out_bound_max"]

    def test_measured_default(self):
        p = AttentionParams(n_max=197, head_dim=64, lanes=16, softmax=SoftmaxParams())
        q, k, v = _qkv(np.random.default_rng(0), 197, 64, -32, 32)
        err = attention_error(q, k, v, p)
        assert err["within_bound"]
        assert err["out_max_lsb"] < 1.0 and err["prob_max_abs"] < 2e-3
