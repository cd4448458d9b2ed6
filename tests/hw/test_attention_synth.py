"""Yosys maps the attention core as intended: one DSP per MAC lane, the row buffers in block RAM."""

from __future__ import annotations

import pytest

from tokensift.hw.attention.core import Attention
from tokensift.hw.common.buffers import RowBuffer
from tokensift.hw.common.mac_array import MacArray
from tokensift.hw.cost.synth import synthesize

pytestmark = pytest.mark.synth


def test_one_dsp_per_lane():
    r = synthesize(MacArray(lanes=8, a_bits=17, b_bits=8, dot_bits=16, acc_bits=32, tag_bits=4), family="xcup")
    assert r["dsp"] == 8


def test_row_buffer_is_block_ram():
    # the K/V buffer of n_max 64, head_dim 32, 8 lanes: 512 words of 64 bits, registered read
    r = synthesize(RowBuffer(depth=512, lanes=8, data_bits=8), family="xcup")
    assert r["bram36"] + r["bram18"] >= 1
    assert r["lutram"] == 0


def test_core_dsp_budget():
    # the lanes, plus the softmax scale (s - max) * M and the normalizer e * r; the output multiplier is 1
    r = synthesize(Attention(n_max=64, head_dim=32, lanes=8), family="xcup", top="tokensift_attention")
    assert r["dsp"] == 8 + 2
    assert r["bram36"] + r["bram18"] >= 2
