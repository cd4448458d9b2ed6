"""Yosys maps the attention core as intended: one DSP per MAC lane, the row buffers in block RAM."""

from __future__ import annotations

import pytest

from tokensift.hw.attention.core import Attention
from tokensift.hw.attention.resources import exact
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
    # the lanes, the run-time softmax scale (s - max) * M and output scale (two partial products each: the
    # 22-bit difference and the 23-bit P V sum are split at 17 bits) and the normalizer e * r
    dut = Attention(n_max=64, head_dim=32, lanes=8)
    r = synthesize(dut, family="xcup", top="tokensift_attention")
    assert r["dsp"] == 8 + 2 + 2 + 1 == exact(dut.params, "xcup").dsp
    assert r["bram36"] + r["bram18"] >= 2
