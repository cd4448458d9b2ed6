"""select_frame's package rules, package weights and mass mode against the contract functions they use."""

from __future__ import annotations

import numpy as np
import pytest

from tokensift.quant.fixed import OverflowCounter
from tokensift.quant.select import (
    Mode,
    SelectorParams,
    Status,
    check_runtime,
    keep_by_threshold,
    mass_keep_count,
    package_token,
    radix_threshold,
    select_frame,
)


def test_sum_rule_with_weights_and_overflows():
    p = SelectorParams(n_max=6, dim=2, lanes=1, score_bits=4, feature_bits=4, package=True, weight_bits=6,
                       weight_frac=2)
    s = [0, 9, 2, 7, 1, 3]
    w = [0, 1, 60, 1, 63, 2]
    x = [[0, 0], [1, 1], [7, -8], [3, 3], [7, -8], [-1, 2]]
    r = select_frame(p, s, x, mode=Mode.TOPK, k=2, package_rule="sum", weights=w)
    assert r.indices.tolist() == [0, 1, 3]  # ranked by the scores, not the weights
    pruned = ~r.mask
    counter = OverflowCounter()
    want = package_token(x, w, pruned, feature_bits=4, mode="sum", score_frac=2, counter=counter)
    assert r.package.tolist() == want.tolist() == [7, -8]  # (60*7 + 63*7 - 1) / 4 saturates, both lanes
    assert r.overflows == counter.total == 2
    mean = select_frame(p, s, x, mode=Mode.TOPK, k=2, weights=w)
    assert mean.package.tolist() == package_token(x, w, pruned, feature_bits=4).tolist() and mean.overflows == 0


@pytest.mark.parametrize("seed", range(6))
def test_mass_mode_is_mass_keep_count_then_topk(seed):
    rng = np.random.default_rng(seed)
    p = SelectorParams(n_max=40, dim=1, lanes=1, score_bits=6, mass=True, mass_frac=8)
    n = int(rng.integers(1, 41))
    s = rng.integers(0, 64, n)
    s[rng.random(n) < 0.3] = 0
    for mass in (0, 1, 77, 128, 255, 256):
        r = select_frame(p, s, np.zeros((n, 1), np.int64), mode=Mode.MASS, mass=mass)
        k = mass_keep_count(s, n, mass, mass_frac=8)
        v, ties = radix_threshold(s, k, n, score_bits=6)
        assert (r.threshold, r.ties) == (v, ties)
        assert r.mask.tolist() == keep_by_threshold(s, v, ties, n)[0].tolist()
        assert r.n_kept == 1 + k


def test_mass_statuses():
    p = SelectorParams(n_max=8, dim=1, lanes=1, mass=True, mass_frac=4)
    assert check_runtime(p, n_tokens=5, mode=Mode.MASS, mass=17) is Status.MASS_TOO_LARGE
    assert check_runtime(p, n_tokens=9, mode=Mode.MASS, mass=17) is Status.N_TOO_LARGE
    bare = SelectorParams(n_max=8, dim=1, lanes=1)
    r = select_frame(bare, [0, 1, 2], np.zeros((3, 1), np.int64), mode=Mode.MASS, mass=3)
    assert r.status is Status.MODE_UNSUPPORTED and r.n_kept == 0


@pytest.mark.parametrize(("call", "exc", "message"), [
    (lambda p: select_frame(p, [0, 1], [[0], [0]], mode=Mode.TOPK, k=1), TypeError,
     r"^weights must be given to a selector built with weight_bits=3, not None$"),
    (lambda p: select_frame(p, [0, 1], [[0], [0]], mode=Mode.TOPK, k=1, weights=[1]), ValueError,
     r"^weights must hold one value per token \(2\), not 1$"),
    (lambda p: select_frame(p, [0, 1], [[0], [0]], mode=Mode.TOPK, k=1, weights=[1, 8]), ValueError,
     r"^weights must lie in \[0, 7\], not \[1, 8\]$"),
    (lambda p: select_frame(p, [0, 1], [[0], [0]], mode=Mode.TOPK, k=1, weights=[1, 1], package_rule="avg"),
     ValueError, r"^package_rule must be 'mean' or 'sum', not 'avg'$"),
    (lambda p: select_frame(SelectorParams(n_max=4, dim=1, lanes=1), [0, 1], [[0], [0]], mode=Mode.TOPK, k=1,
                            weights=[1, 1]), ValueError,
     r"^weights given to a selector built without weight_bits \(its package weights are the scores\)$"),
    (lambda p: select_frame(p, [0, 1], [[0], [0]], mode=Mode.MASS, weights=[1, 1]), TypeError,
     r"^mass must be an integer in mass mode, not None$"),
    (lambda p: check_runtime(p, n_tokens=2, mode=Mode.MASS, mass=1 << 16), ValueError,
     r"^mass must be between 0 and 65535, not 65536$"),
])
def test_frame_errors(call, exc, message):
    p = SelectorParams(n_max=4, dim=1, lanes=1, package=True, weight_bits=3)
    with pytest.raises(exc, match=message):
        call(p)
