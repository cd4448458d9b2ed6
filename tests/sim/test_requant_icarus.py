"""The requantizer's cocotb testbenches on Icarus Verilog: the generated Verilog is not tied to Verilator.

Marker ``icarus`` (not in ``make test``): ``make test-icarus`` installs Debian's ``iverilog`` when it is
missing and runs these, so a machine without it never skips them silently.
"""

import pytest
from test_requant_sim import CONFIGS, make

from tokensift.hw.common.requant_resources import RequantParams, cycles
from tokensift.sim.runner import run_cocotb

pytestmark = [pytest.mark.sim, pytest.mark.icarus]


@pytest.mark.parametrize("p", CONFIGS[:2], ids=lambda p: f"acc{p['acc_bits']}-{p['rounding']}-{p['overflow']}")
def test_bit_exact_with_stalls_and_reset_on_icarus(p):
    result = run_cocotb(make(p), toplevel="requant", test_module="tokensift.sim.tb_requant",
                        params={**p, "seed": 11, "count": 400}, simulator="icarus")
    assert result.build_dir.name.endswith("-icarus")
    assert result.report["mismatches"] == 0 and result.report["count"] == 400
    assert result.report["overflows_hw"] == result.report["overflows_ref"] > 0


def test_cycles_on_icarus():
    dut = make(CONFIGS[0])
    result = run_cocotb(dut, toplevel="requant", test_module="tokensift.sim.tb_requant_cycles",
                        params={"count": 100}, simulator="icarus")
    assert result.report["outputs"] == 100
    assert result.report["cycles"] == cycles(RequantParams.of(dut), n_values=100)
