"""Yosys: the score combiner's multipliers, accumulator and weight memories map as its resource model says."""

from __future__ import annotations

import pytest

from tokensift.hw.score_combiner.core import CombinerParams
from tokensift.hw.score_combiner.resources import build, exact
from tokensift.quant.fixed import FixedFormat

pytestmark = pytest.mark.synth


def test_dsp_and_bram_match_the_estimate():
    from tokensift.hw.cost.synth import synthesize

    # DeiT-S's 197 tokens and 6 heads, one lane: one 16 x 9 multiplier, 197 x 28-bit sums in one RAMB18
    p = CombinerParams(n_max=197, heads=6, lanes=1)
    want = exact(p, "xcup")
    r = synthesize(build(p), family="xcup", top="tokensift_score_combiner")
    assert (r["dsp"], r["bram18"], r["bram36"]) == (want.dsp, want.bram18, want.bram36) == (1, 1, 0)
    assert r["lutram"] == want.lut  # the weights' LUT RAM is the memories' only soft logic here


def test_signed_per_token_matches_the_estimate():
    from tokensift.hw.cost.synth import synthesize

    # SPViT's form: signed values x per-token weights, 4 lanes: 4 signed 16 x 10 products, 50 x 112-bit sums
    p = CombinerParams(n_max=197, heads=6, lanes=4, per_token_weights=True, score=FixedFormat(bits=16, frac=12))
    for family in ("xcup", "ecp5"):
        want = exact(p, family)
        r = synthesize(build(p), family=family, top="tokensift_score_combiner")
        assert (r["dsp"], r["bram18"], r["bram36"], r["ebr"]) == (want.dsp, want.bram18, want.bram36, want.ebr)
        assert r["dsp"] == 4
