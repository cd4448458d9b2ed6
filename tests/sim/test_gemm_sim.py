"""The GEMM engine in cocotb + Verilator: bit-exact (0 LSB) against IntLinear with stalls on every stream
and a weight memory running dry, jobs of different output widths back to back (int8 and int16 on one
int16 engine, saturation edges at both), cycles equal to the model at fixed latency and with the weights
in DMA bursts behind long gaps, reset mid-job, rejected sizes and widths. One Verilator build per
configuration serves the testbench's tests."""

from __future__ import annotations

import pytest

from tokensift.hw.gemm import GemmConfig, GemmEngine
from tokensift.quant.fixed import FixedFormat, Rounding
from tokensift.sim.runner import run_cocotb

pytestmark = pytest.mark.sim

#: name -> (engine, jobs [n, k, m, kind, out_bits], weight bytes per cycle, latency, DMA bursts or None)
GRID = {
    "4x8-int16": (GemmConfig(rows=4, cols=8, max_tokens=13, max_in=24, max_out=21, weight_bytes=4,
                             out=FixedFormat(bits=16)),
                  [[13, 24, 21, "random", 8], [3, 1, 5, "random", 16], [9, 17, 16, "extreme", 8],
                   [6, 24, 11, "saturate", 16], [13, 5, 8, "saturate", 8], [13, 3, 18, "edges", 8],
                   [13, 3, 18, "edges", 16], [13, 5, 8, "random", 16]], 3, 9,
                  {"burst_beats": 16, "gaps": [20, 100, 57, 33, 81]}),
    "2x6-int12-floor": (GemmConfig(rows=2, cols=6, max_tokens=7, max_in=9, max_out=13, weight_bytes=3,
                                   out=FixedFormat(bits=12, rounding=Rounding.FLOOR)),
                        [[7, 9, 13, "random", 12], [1, 1, 1, "random", 5], [4, 9, 7, "saturate", 12],
                         [7, 2, 13, "edges", 8]], 2, 4, None),
}


@pytest.mark.parametrize("name", list(GRID))
def test_gemm_bit_exact(name):
    cfg, jobs, rate, latency, bursts = GRID[name]
    params = {"config": cfg.as_dict(), "seed": 5, "jobs": jobs, "rate": rate, "latency": latency,
              "idle": 0.3, "dry": 0.3, "stall": 0.3}
    if bursts:
        params["bursts"] = bursts
    result = run_cocotb(GemmEngine(config=cfg), toplevel="tokensift_gemm", test_module="tokensift.sim.tb_gemm",
                        params=params)
    rep = result.report
    assert sum(rep["stalls"]["mismatches"]) == 0 and rep["stalls"]["extra_beats"] == 0
    assert rep["stalls"]["out_overflows"][0] == rep["stalls"]["out_overflows"][1] > 0
    assert rep["stalls"]["acc_overflows"][0] == rep["stalls"]["acc_overflows"][1] > 0
    cyc = rep["cycles"]
    assert cyc["last_out"] == cyc["expected_last_out"] and sum(cyc["mismatches"]) == 0
    assert rep["reset"]["mismatches"] == [0]
    assert rep["range"]["rejected"] == rep["range"]["expected_rejected"] == 11
    if bursts:
        dma = rep["bursts"]
        assert dma["last_out"] == dma["expected_last_out"] and sum(dma["mismatches"]) == 0
