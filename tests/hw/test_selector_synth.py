"""Yosys: the selector's package-token multipliers map to one DSP each and its feature buffer to block RAM."""

from __future__ import annotations

import pytest

from tokensift.hw.selector.core import Selector

pytestmark = [pytest.mark.synth, pytest.mark.slow]


@pytest.mark.parametrize("package", [False, True])
def test_dsp_and_bram_inference(package):
    from tokensift.hw.cost.synth import synthesize

    lanes = 4
    r = synthesize(Selector(n_max=64, dim=64, lanes=lanes, package=package), family="xcup",
                   top="tokensift_selector")
    assert r["dsp"] == (lanes if package else 0)
    # features: 64 tokens x 16 beats x 32 bits = 32 Kbit of block RAM, not LUT RAM
    assert 2 * r["bram36"] + r["bram18"] >= 2
