"""Property tests of quant/select.py: the integer token-selection reference of the hardware selector."""

from __future__ import annotations

import doctest
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokensift.quant.fixed import FixedFormat, OverflowCounter, round_shift
from tokensift.quant.intmath import isqrt
from tokensift.quant.select import (
    Mode,
    SelectorParams,
    Status,
    check_runtime,
    head_importance,
    head_weighted_scores,
    keep_by_threshold,
    mass_keep_count,
    order_key,
    package_token,
    radix_threshold,
    select_frame,
    threshold_keep,
    topk_keep,
)

FAST = settings(max_examples=150, deadline=None)


def naive_topk(scores: list[int], k: int) -> list[int]:
    """Sort-based model: class token plus the k best candidates, higher score first, lower index on ties."""
    order = sorted(range(1, len(scores)), key=lambda i: (-scores[i], i))
    return sorted([0, *order[:k]])


@st.composite
def frames(draw, max_n=40, max_bits=10):
    bits = draw(st.integers(1, max_bits))
    n = draw(st.integers(1, max_n))
    scores = draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=n, max_size=n))
    k = draw(st.integers(0, n - 1))
    return bits, scores, k


# -- selection ---------------------------------------------------------------------------------------------
@FAST
@given(frames())
def test_topk_equals_sort_model(frame):
    bits, scores, k = frame
    mask, idx = topk_keep(scores, k, len(scores), score_bits=bits)
    assert idx.tolist() == naive_topk(scores, k)
    assert mask.tolist() == [i in set(idx.tolist()) for i in range(len(scores))]
    assert idx.size == 1 + k


@FAST
@given(frames(max_bits=3))  # few score values: many ties
def test_topk_ties_lower_index_first(frame):
    bits, scores, k = frame
    _, idx = topk_keep(scores, k, len(scores), score_bits=bits)
    kept = set(idx.tolist())
    for i in range(1, len(scores)):
        for j in range(i + 1, len(scores)):
            if scores[i] == scores[j]:
                assert not (j in kept and i not in kept), (i, j)
            if scores[i] > scores[j]:
                assert not (j in kept and i not in kept), (i, j)


@FAST
@given(frames())
def test_radix_threshold_is_kth_largest(frame):
    bits, scores, k = frame
    v, ties = radix_threshold(scores, k, len(scores), score_bits=bits)
    cand = sorted(scores[1:], reverse=True)
    if k == 0:
        assert (v, ties) == ((1 << (4 * -(-bits // 4))) - 1, 0)
    else:
        assert v == cand[k - 1]
        assert ties == k - sum(s > v for s in cand)
        assert 1 <= ties <= sum(s == v for s in cand)


@FAST
@given(frames(), st.integers(0, 1 << 10))
def test_threshold_is_strictly_greater(frame, t):
    _, scores, _ = frame
    mask, idx = threshold_keep(scores, t, len(scores))
    assert mask.tolist() == [i == 0 or s > t for i, s in enumerate(scores)]
    assert idx.tolist() == [i for i, keep in enumerate(mask) if keep]


def test_threshold_above_and_below_all_scores():
    scores = [7, 3, 9, 9, 5]
    assert threshold_keep(scores, 9, 5)[1].tolist() == [0]
    assert threshold_keep(scores, 2, 5)[1].tolist() == [0, 1, 2, 3, 4]


def test_every_score_equal_keeps_the_first_k():
    assert topk_keep([4] * 9, 3, 9)[1].tolist() == [0, 1, 2, 3]
    assert topk_keep([0] * 9, 8, 9)[1].tolist() == list(range(9))


def test_scores_beyond_n_are_ignored():
    assert topk_keep([0, 1, 2, 99, 99], 1, 3)[1].tolist() == [0, 2]


def test_keep_by_threshold_never_admits_the_class_token_as_a_tie():
    mask, idx = keep_by_threshold([5, 5, 5], 5, 1, 3)
    assert idx.tolist() == [0, 1]


@FAST
@given(frames(max_n=20, max_bits=6))
def test_matches_pytorch_selection_rule(frame):
    import torch

    from tokensift.sw.selection import stable_topk_mask

    _, scores, k = frame
    s = torch.tensor([scores], dtype=torch.float64)
    cand = torch.ones_like(s, dtype=torch.bool)
    cand[:, 0] = False
    sw_mask = stable_topk_mask(s, k, cand)[0].tolist()
    sw_mask[0] = True
    assert topk_keep(scores, k, len(scores))[0].tolist() == sw_mask


# -- package token -----------------------------------------------------------------------------------------
@st.composite
def package_inputs(draw):
    fb = draw(st.integers(2, 12))
    n = draw(st.integers(1, 12))
    dim = draw(st.integers(1, 5))
    lo, hi = -(1 << (fb - 1)), (1 << (fb - 1)) - 1
    x = draw(st.lists(st.lists(st.integers(lo, hi), min_size=dim, max_size=dim), min_size=n, max_size=n))
    s = draw(st.lists(st.integers(0, (1 << 16) - 1), min_size=n, max_size=n))
    pruned = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return fb, np.array(x, dtype=np.int64), np.array(s, dtype=np.int64), np.array(pruned)


@FAST
@given(package_inputs())
def test_package_token_is_the_rounded_weighted_mean(inp):
    fb, x, s, pruned = inp
    got = package_token(x, s, pruned, feature_bits=fb)
    total = int(s[pruned].sum())
    for c in range(x.shape[1]):
        if total == 0:
            assert got[c] == 0
        else:
            mean = Fraction(int((s[pruned] * x[pruned, c]).sum()), total)
            assert got[c] == math.floor(mean + Fraction(1, 2))
            assert x[pruned, c].min() <= got[c] <= x[pruned, c].max()


def test_package_token_without_pruned_tokens_or_with_zero_scores_is_zero():
    x = np.array([[5, -5], [7, 7]])
    assert package_token(x, [3, 4], np.array([False, False])).tolist() == [0, 0]
    assert package_token(x, [3, 0], np.array([False, True])).tolist() == [0, 0]


def test_package_token_rounds_half_up():
    # (1 * -3 + 1 * 0) / 2 = -1.5 -> -1 ; (1 * 3 + 1 * 0) / 2 = 1.5 -> 2
    x = np.array([[-3, 3], [0, 0]])
    assert package_token(x, [1, 1], np.array([True, True])).tolist() == [-1, 2]


# -- scores --------------------------------------------------------------------------------------------------
@FAST
@given(st.lists(st.integers(0, (1 << 62) - 1), min_size=1, max_size=20))
def test_isqrt_is_floor_sqrt(values):
    assert isqrt(values).tolist() == [math.isqrt(v) for v in values]


@FAST
@given(st.integers(1, 6), st.integers(1, 8), st.integers(1, 6), st.integers(0, 12), st.data())
def test_head_importance_is_the_rounded_share_of_the_norm(heads, n, hd, frac, data):
    x = np.array(data.draw(st.lists(st.integers(-128, 127), min_size=heads * n * hd, max_size=heads * n * hd)))
    x = x.reshape(heads, n, hd)
    w = head_importance(x, out_frac=frac)
    norms = [math.isqrt(int((x[h].astype(np.int64) ** 2).sum())) for h in range(heads)]
    if sum(norms) == 0:
        norms = [1] * heads
    for h in range(heads):
        assert w[h] == math.floor(Fraction(norms[h] << frac, sum(norms)) + Fraction(1, 2))


@FAST
@given(st.integers(1, 4), st.integers(1, 10), st.integers(0, 12), st.integers(0, 10), st.integers(1, 16),
       st.integers(-4, 20), st.data())
def test_head_weighted_scores_round_half_up_and_saturate(heads, n, af, wf, bits, sfrac, data):
    a = np.array(data.draw(st.lists(st.integers(0, 1 << af), min_size=heads * n, max_size=heads * n)))
    a = a.reshape(heads, n)
    w = np.array(data.draw(st.lists(st.integers(0, 1 << wf), min_size=heads, max_size=heads)))
    fmt = FixedFormat(bits=bits, frac=sfrac, signed=False)
    counter = OverflowCounter()
    got = head_weighted_scores(a, w, attn_frac=af, importance_frac=wf, score=fmt, counter=counter)
    over = 0
    for i in range(n):
        exact = Fraction(int((a[:, i] * w).sum()) << max(sfrac, 0), 1 << (af + wf)) / (1 << max(-sfrac, 0))
        want = math.floor(exact + Fraction(1, 2))
        over += want > fmt.max_int
        assert got[i] == min(want, fmt.max_int)
    assert counter.total == over


def test_evit_mean_over_heads_is_uniform_importance():
    a = np.array([[100, 20, 40], [50, 60, 0]])
    got = head_weighted_scores(a, [128, 128], attn_frac=8, importance_frac=8,
                               score=FixedFormat(bits=16, frac=8, signed=False))
    assert got.tolist() == [75, 40, 20]


# -- frames and run-time checks ------------------------------------------------------------------------------
def test_select_frame_topk_with_package():
    p = SelectorParams(n_max=8, dim=2, lanes=2, score_bits=4, package=True)
    scores = [15, 3, 9, 9, 1]
    x = np.array([[1, 1], [10, -10], [20, 20], [30, 30], [-40, 40]])
    r = select_frame(p, scores, x, mode=Mode.TOPK, k=2)
    assert r.status is Status.OK and r.indices.tolist() == [0, 2, 3] and r.n_kept == 3
    assert r.tokens.tolist() == [[1, 1], [20, 20], [30, 30]]
    # pruned: tokens 1 (score 3) and 4 (score 1): (30 - 40) / 4 = -2.5 -> -2 ; (-30 + 40) / 4 = 2.5 -> 3
    assert r.package.tolist() == [-2, 3]


@pytest.mark.parametrize(("n", "mode", "k", "t", "status"), [
    (0, Mode.TOPK, 0, None, Status.N_ZERO),
    (9, Mode.TOPK, 0, None, Status.N_TOO_LARGE),
    (9, Mode.THRESHOLD, None, 3, Status.N_TOO_LARGE),
    (5, Mode.TOPK, 5, None, Status.K_TOO_LARGE),
    (5, Mode.TOPK, 4, None, Status.OK),
    (1, Mode.TOPK, 0, None, Status.OK),
    (8, Mode.THRESHOLD, None, 15, Status.OK),
])
def test_invalid_runtime_settings_give_a_status_and_no_tokens(n, mode, k, t, status):
    p = SelectorParams(n_max=8, dim=2, lanes=1, score_bits=4, package=True)
    r = select_frame(p, np.ones(n, dtype=np.int64), np.ones((n, 2), dtype=np.int64), mode=mode, k=k,
                     threshold=t, package=True)
    assert r.status is status
    assert check_runtime(p, n_tokens=n, mode=mode, k=k, threshold=t) is status
    if status is not Status.OK:
        assert r.n_kept == 0 and r.indices.size == 0 and r.package is None and not r.mask.any()
    else:
        assert r.n_kept == r.indices.size >= 1
        assert (r.package is not None) == bool((~r.mask).any())  # a package token only when one was pruned


@pytest.mark.parametrize(("kwargs", "exc", "message"), [
    ({"n_max": 1}, ValueError, r"^n_max must be between 2 and 4096, not 1$"),
    ({"n_max": 8.0}, TypeError, r"^n_max must be an integer, not float$"),
    ({"n_max": True}, TypeError, r"^n_max must be an integer, not bool$"),
    ({"dim": 0}, ValueError, r"^dim must be between 1 and 8192, not 0$"),
    ({"score_bits": 25}, ValueError, r"^score_bits must be between 1 and 24, not 25$"),
    ({"feature_bits": 1}, ValueError, r"^feature_bits must be between 2 and 16, not 1$"),
    ({"lanes": 0}, ValueError, r"^lanes must be between 1 and 256, not 0$"),
    ({"lanes": 3}, ValueError, r"^dim must be a multiple of lanes, not dim=8 with lanes=3$"),
    ({"package": 1}, TypeError, r"^package must be a bool, not int$"),
])
def test_params_errors(kwargs, exc, message):
    base = {"n_max": 8, "dim": 8, "lanes": 4}
    with pytest.raises(exc, match=message):
        SelectorParams(**{**base, **kwargs})


def test_params_are_keyword_only():
    with pytest.raises(TypeError):
        SelectorParams(8, 8)  # noqa


@pytest.mark.parametrize(("call", "exc", "message"), [
    (lambda p: check_runtime(p, n_tokens=-1, mode=Mode.TOPK, k=0), ValueError,
     r"^n_tokens must be between 0 and 65535, not -1$"),
    (lambda p: check_runtime(p, n_tokens=4, mode=Mode.TOPK, k=70000), ValueError,
     r"^k must be between 0 and 65535, not 70000$"),
    (lambda p: check_runtime(p, n_tokens=4, mode=Mode.TOPK), TypeError,
     r"^k must be an integer in top-k mode, not None$"),
    (lambda p: check_runtime(p, n_tokens=4, mode=Mode.THRESHOLD), TypeError,
     r"^threshold must be an integer in threshold mode, not None$"),
    (lambda p: check_runtime(p, n_tokens=4, mode=Mode.THRESHOLD, threshold=16), ValueError,
     r"^threshold must be between 0 and 15, not 16$"),
    (lambda p: check_runtime(p, n_tokens=4, mode=0, k=1), TypeError, r"^mode must be a Mode, not int$"),
    (lambda p: select_frame(p, [1, 2], np.zeros((2, 4), np.int64), mode=Mode.TOPK, k=1, package=True),
     ValueError, r"^package token requested from a selector built without package=True$"),
    (lambda p: select_frame(p, [1, 2], np.zeros((2, 3), np.int64), mode=Mode.TOPK, k=1), ValueError,
     r"^features must have shape \(2, 4\), not \(2, 3\)$"),
    (lambda p: select_frame(p, [1, 16], np.zeros((2, 4), np.int64), mode=Mode.TOPK, k=1), ValueError,
     r"^scores must lie in \[0, 15\], not \[1, 16\]$"),
    (lambda p: select_frame(p, [1, 2], np.full((2, 4), 128), mode=Mode.TOPK, k=1), ValueError,
     r"^features must lie in \[-128, 127\], not \[128, 128\]$"),
    (lambda p: topk_keep([1, 2, 3], 3, 3), ValueError, r"^k must be between 0 and 2, not 3$"),
    (lambda p: topk_keep([1.5, 2.0], 1, 2), TypeError, r"^scores must hold integers, not float64$"),
    (lambda p: topk_keep([1, 2], 1, 3), ValueError, r"^scores must hold at least n=3 values, not 2$"),
    (lambda p: threshold_keep([1, -2], 0, 2), ValueError, r"^scores must be non-negative, not -2$"),
    (lambda p: package_token([[1]], [1], [1]), TypeError, r"^pruned_mask must be a bool array, not int64$"),
    (lambda p: head_importance(np.zeros((0, 2, 2), np.int64)), ValueError,
     r"^head_outputs must hold at least one head$"),
    (lambda p: head_weighted_scores([[1]], [1, 2], attn_frac=1, importance_frac=1), ValueError,
     r"^head_importance must have shape \(1,\) or \(1, 1\), not \(2,\)$"),
    (lambda p: head_weighted_scores([[1, 2]], [[1]], attn_frac=1, importance_frac=1), ValueError,
     r"^head_importance must have shape \(1,\) or \(1, 2\), not \(1, 1\)$"),
    (lambda p: head_weighted_scores([[-1]], [1], attn_frac=1, importance_frac=1), ValueError,
     r"^class_attn_rows must lie in \[0, 2147483647\], not \[-1, -1\]$"),
    (lambda p: order_key([128], 8), ValueError, r"^scores must lie in \[-128, 127\], not \[128, 128\]$"),
    (lambda p: mass_keep_count([0, 1], 2, 129, mass_frac=7), ValueError, r"^mass must be"),
    (lambda p: package_token([[1]], [1], np.array([True]), mode="max"), ValueError,
     r"^mode must be 'mean' or 'sum', not 'max'$"),
])
def test_reference_errors(call, exc, message):
    p = SelectorParams(n_max=8, dim=4, lanes=4, score_bits=4)
    with pytest.raises(exc, match=message):
        call(p)


def test_doctests():
    import tokensift.quant.select as module

    result = doctest.testmod(module)
    assert result.attempted >= 8 and result.failed == 0


# -- the method contracts: per-token head weights, signed scores, the sum package token, SaiT's mass rule --
@settings(max_examples=60, deadline=None)
@given(heads=st.integers(1, 6), n=st.integers(1, 12), data=st.data())
def test_per_token_weights_equal_the_per_head_form_column_by_column(heads, n, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    a = rng.integers(-300, 300, (heads, n))
    w = rng.integers(0, 300, (heads, n))
    fmt = FixedFormat(bits=12, frac=2, signed=True)
    got = head_weighted_scores(a, w, attn_frac=4, importance_frac=6, score=fmt)
    for i in range(n):
        col = head_weighted_scores(a[:, i:i + 1], w[:, i], attn_frac=4, importance_frac=6, score=fmt)
        assert got[i] == col[0]


def test_order_key_preserves_order_and_maps_thresholds():
    rng = np.random.default_rng(3)
    s = rng.integers(-128, 128, 64)
    k = order_key(s, 8)
    assert k.min() >= 0 and k.max() <= 255
    assert np.array_equal(np.argsort(s, kind="stable"), np.argsort(k, kind="stable"))
    for t in (-128, -1, 0, 5, 127):
        assert np.array_equal(s > t, k > order_key(t, 8))


def test_sum_package_token_rounds_and_saturates_with_a_count():
    x = np.array([[0, 0], [100, -100], [100, 27]])
    counter = OverflowCounter()
    got = package_token(x, [0, 3, 2], np.array([False, True, True]), mode="sum", score_frac=1, counter=counter)
    assert got.tolist() == [127, -123]  # 250 saturates; (-300 + 54) / 2 = -123
    assert counter.by_site["package_token"] == 1
    assert package_token(x, [0, 3, 2], np.array([False, True, True]), mode="sum", score_frac=2).tolist() == [
        125, round_shift(np.array(-246), 2).item()]


def test_mass_keep_count_matches_saits_float_rule():
    import torch

    from tokensift.sw.methods.sait import mass_keep_counts

    rng = np.random.default_rng(11)
    for trial in range(500):
        n = int(rng.integers(2, 40))
        s = rng.integers(0, 60, n)
        if trial % 9 == 0:
            s[1:] = 0
        mass = int(rng.integers(0, 128))  # below 1.0: density 1.0 skips SaiT's stages
        want = mass_keep_counts(torch.tensor(s[None], dtype=torch.float64),
                                torch.tensor([[False] + [True] * (n - 1)]), mass / 128).item()
        assert mass_keep_count(s, n, mass, mass_frac=7) == want, (s.tolist(), mass)
    assert mass_keep_count([0, 5, 0, 0], 4, 128, mass_frac=7) == 3  # density 1.0 keeps every candidate
