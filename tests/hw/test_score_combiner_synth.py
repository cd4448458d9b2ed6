"""Yosys: the score combiner's multipliers, accumulator and weight memories map as its resource model says."""

from __future__ import annotations

import pytest

from tokensift.hw.score_combiner.core import CombinerParams
from tokensift.hw.score_combiner.resources import build, exact

pytestmark = pytest.mark.synth


def test_dsp_and_bram_match_the_estimate():
    from tokensift.hw.cost.synth import synthesize

    # DeiT-S's 197 tokens and 6 heads, one lane: one 16 x 9 multiplier, 197 x 28-bit sums in one RAMB18
    p = CombinerParams(n_max=197, heads=6, lanes=1)
    want = exact(p, "xcup")
    r = synthesize(build(p), family="xcup", top="tokensift_score_combiner")
    assert (r["dsp"], r["bram18"], r["bram36"]) == (want.dsp, want.bram18, want.bram36) == (1, 1, 0)
    assert r["lutram"] == want.lut  # the weights' LUT RAM is the memories' only soft logic here
