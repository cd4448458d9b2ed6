"""The GEMM engine in cocotb + Verilator: bit-exact (0 LSB) against IntLinear with stalls on every stream
and a weight memory running dry, cycles equal to the model at fixed latency, reset mid-job, rejected
sizes. One Verilator build per configuration serves the four testbench tests."""

from __future__ import annotations

import pytest

from tokensift.hw.gemm import GemmConfig, GemmEngine
from tokensift.quant.fixed import FixedFormat, Rounding
from tokensift.sim.runner import run_cocotb

pytestmark = pytest.mark.sim

GRID = {
    "4x8-int8": (GemmConfig(rows=4, cols=8, max_tokens=13, max_in=24, max_out=21, weight_bytes=4),
                 [[13, 24, 21, "random"], [3, 1, 5, "random"], [9, 17, 16, "extreme"], [6, 24, 11, "saturate"],
                  [13, 5, 8, "random"]], 3, 9),
    "2x6-int12-floor": (GemmConfig(rows=2, cols=6, max_tokens=7, max_in=9, max_out=13, weight_bytes=3,
                                   out=FixedFormat(bits=12, rounding=Rounding.FLOOR)),
                        [[7, 9, 13, "random"], [1, 1, 1, "random"], [4, 9, 7, "saturate"]], 2, 4),
}


@pytest.mark.parametrize("name", list(GRID))
def test_gemm_bit_exact(name):
    cfg, jobs, rate, latency = GRID[name]
    result = run_cocotb(GemmEngine(config=cfg), toplevel="tokensift_gemm", test_module="tokensift.sim.tb_gemm",
                        params={"config": cfg.as_dict(), "seed": 5, "jobs": jobs, "rate": rate,
                                "latency": latency, "idle": 0.3, "dry": 0.3, "stall": 0.3})
    rep = result.report
    assert sum(rep["stalls"]["mismatches"]) == 0 and rep["stalls"]["extra_beats"] == 0
    assert rep["stalls"]["out_overflows"][0] == rep["stalls"]["out_overflows"][1] > 0
    assert rep["stalls"]["acc_overflows"][0] == rep["stalls"]["acc_overflows"][1] > 0
    cyc = rep["cycles"]
    assert cyc["last_out"] == cyc["expected_last_out"] and sum(cyc["mismatches"]) == 0
    assert rep["reset"]["mismatches"] == [0]
    assert rep["range"]["rejected"] == rep["range"]["expected_rejected"] == 7
