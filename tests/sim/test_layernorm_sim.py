"""The LayerNorm unit through Verilog and Verilator: bit-exact with quant.layernorm_int, cycle-exact with
layernorm_cost.cycles, random stalls on every stream, a rejected header, reset mid-token."""

import pytest

from tokensift.hw.vector.layernorm import LayerNorm
from tokensift.hw.vector.layernorm_layout import LayerNormConfig
from tokensift.sim.runner import run_cocotb

pytestmark = pytest.mark.sim

CASES = [
    # DeiT-S-like width at a reduced c_max: C not a multiple of lanes, C = 1, C = c_max back to back
    (LayerNormConfig(c_max=48, lanes=8), [[48, 5], [1, 3], [29, 4], [48, 2]]),
    (LayerNormConfig(c_max=7, lanes=1, gamma_bits=12, acc_bits=28), [[7, 6], [3, 2]]),
]


@pytest.mark.parametrize("cfg, jobs", CASES, ids=["c48-lanes8", "c7-lanes1"])
def test_layernorm_bit_and_cycle_exact(cfg, jobs):
    result = run_cocotb(LayerNorm(config=cfg), toplevel="tokensift_layernorm", test_module="tokensift.sim.tb_layernorm",
                        params={"config": cfg.to_dict(), "seed": 3, "jobs": jobs, "idle": 0.3, "stall": 0.3})
    r = result.report
    assert r["mismatches"] == r["timed_mismatches"] == r["reset_mismatches"] == 0
    assert r["beats"] > 0 and r["timed_beats"] > 0
    assert r["cycles"] == r["expected_cycles"]
    assert r["acc_overflows"] == r["acc_overflows_ref"] and r["out_overflows"] == r["out_overflows_ref"]
