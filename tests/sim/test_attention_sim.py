"""The attention accelerator in cocotb + Verilator, bit-exact against quant/, on a grid of configurations.

One Verilator build per configuration serves all five testbench tests (bulk frames with the cycle
formula, stalls with rejected headers, rejected constants, reset mid-frame, extreme values). Frames take
the constants of three layers in turn (the configuration's and two random calibrated-like ones), back to
back on one core.
"""

from __future__ import annotations

import pytest

from tokensift.hw.attention.constants import ConstantRanges
from tokensift.hw.attention.cycles import cycles
from tokensift.quant.attention import AttentionParams
from tokensift.quant.softmax import SoftmaxParams
from tokensift.sim.attention_harness import TOPLEVEL, harness_for, run_attention, verilator_options
from tokensift.sim.runner import SimulationError, run_cocotb

pytestmark = pytest.mark.sim

GRID = {
    # two chunks per row, LUT softmax, defaults
    "lut-c2": AttentionParams(n_max=8, head_dim=8, lanes=4),
    # one chunk per row, polynomial softmax, two cores, an output multiplier
    "poly-c1-x2": AttentionParams(n_max=10, head_dim=8, lanes=8, softmax="exp2_poly", heads_parallel=2,
                                  out_multiplier=3, out_shift=16),
    # one lane, 6-bit data, narrow softmax formats and a steep scale (huge score ranges)
    "lane1-6bit": AttentionParams(n_max=5, head_dim=4, lanes=1, data_bits=6, acc_bits=20,
                                  softmax=SoftmaxParams(log2_frac=6, exp_frac=12, prob_frac=10),
                                  scale_multiplier=(1 << 17) - 1, scale_shift=4),
}


def _runs(p: AttentionParams) -> list[dict]:
    """Every N from 1 to n_max alone, n_max back to back, mixed back to back, extremes in bulk."""
    runs = [{"ns": [n]} for n in range(1, p.n_max + 1)]
    runs.append({"ns": [p.n_max] * 3})
    runs.append({"ns": [2, p.n_max, 1, max(1, p.n_max // 2)]})
    runs.append({"ns": [p.n_max, 1], "kind": "range"})
    return runs


@pytest.mark.parametrize("name", list(GRID))
def test_attention_bit_exact(name):
    p = GRID[name]
    runs = _runs(p)
    report = run_attention(p, settings={"runs": runs, "idle": 0.3, "stall": 0.3}, seed=3).report
    bulk = report["bulk"]
    assert len(bulk) == len(runs)
    for r, run in zip(bulk, runs, strict=True):
        assert (r["o_mismatches"], r["s_mismatches"], r["flag_mismatches"]) == (0, 0, 0), r
        assert r["cycles"] == r["expected_cycles"] == cycles(p, n_tokens=run["ns"]), r
        assert r["overflows_hw"] == min(r["overflows_ref"], 0xFFFF), r
    st = report["stalls"]
    assert (st["o_mismatches"], st["s_mismatches"], st["flag_mismatches"]) == (0, 0, 0)
    assert st["status"]["rejected"] == st["rejected_expected"] == 2
    rc = report["rejected_constants"]
    assert (rc["o_mismatches"], rc["s_mismatches"], rc["flag_mismatches"]) == (0, 0, 0)
    assert rc["status"][-1]["rejected"] == rc["rejected_expected"] >= 8
    assert (rc["status"][-1]["error"], rc["status"][-1]["const_error"]) == (1, 1)
    assert [o["o_mismatches"] + o["s_mismatches"] for o in report["reset"]] == [0, 0]
    ex = report["extremes"]
    assert (ex["o_mismatches"], ex["s_mismatches"], ex["flag_mismatches"]) == (0, 0, 0)
    assert ex["overflows_hw"] == min(ex["overflows_ref"], 0xFFFF)


@pytest.mark.slow
def test_narrow_ranges_reject_what_they_do_not_cover():
    # a core generated for narrower constants: the random layers are drawn within its ranges and run exact,
    # and the rejected-constants test sends values just past each range
    p = AttentionParams(n_max=6, head_dim=8, lanes=4, scale_multiplier=3001, scale_shift=10, out_multiplier=201,
                        out_shift=20)
    ranges = ConstantRanges(scale_mult_bits=12, scale_shift_max=20, out_mult_bits=8, out_shift_max=30)
    report = run_attention(p, settings={"runs": [{"ns": [6, 2, 5, 1]}], "random_layers": 3}, ranges=ranges,
                           testcase=["bulk", "rejected_constants"], seed=4).report
    r = report["bulk"][0]
    assert (r["o_mismatches"], r["s_mismatches"], r["flag_mismatches"], r["cycles"]) == (0, 0, 0, r["expected_cycles"])
    rc = report["rejected_constants"]
    assert (rc["o_mismatches"], rc["s_mismatches"], rc["status"][0]["rejected"]) == (0, 0, 8)


def test_wrong_reference_fails():
    # the testbench predicts with another exponent table than the hardware has: the scoreboard must catch it
    p = GRID["lut-c2"]
    other = AttentionParams(**{**p.to_dict(), "softmax": SoftmaxParams(log2_frac=p.softmax.log2_frac - 1)})
    build_args, sources = verilator_options()
    with pytest.raises(SimulationError, match=r"^1 of 1 cocotb tests failed on tokensift_attention_tb; see "):
        run_cocotb(harness_for(p), toplevel=TOPLEVEL, test_module="tokensift.sim.tb_attention",
                   params={"params": other.to_dict(), "seed": 1, "runs": [{"ns": [p.n_max]}]}, testcase="bulk",
                   build_args=build_args, extra_sources=sources)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [dict(n_max=64, head_dim=32, lanes=8), dict(n_max=32, head_dim=64, lanes=16,
                                                                           softmax="exp2_poly")])
def test_attention_bigger(cfg):
    p = AttentionParams(**cfg)
    runs = [{"ns": [n]} for n in (1, 2, 7, p.n_max // 2, p.n_max - 1, p.n_max)] + [{"ns": [p.n_max] * 2}]
    report = run_attention(p, settings={"runs": runs}, seed=5).report
    for r in report["bulk"]:
        assert (r["o_mismatches"], r["s_mismatches"], r["cycles"]) == (0, 0, r["expected_cycles"]), r
