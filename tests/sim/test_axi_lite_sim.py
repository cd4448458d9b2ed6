"""Verilator + cocotbext-axi's AxiLiteMaster: the register bank against its Python model under random pauses."""

from __future__ import annotations

import pytest

from tokensift.hw.axi.config import Access, Register, RegisterMap
from tokensift.sim.axi_runs import run_registers

pytestmark = pytest.mark.sim

#: a control block in the shape the accelerator needs: start, done (irq), run-time settings with valid
#: ranges, a counter, a status word, an unranged 32-bit address; gaps left unmapped
REGMAP = RegisterMap(registers=(
    Register(name="start", offset=0x00, width=1, access=Access.W1S),
    Register(name="done", offset=0x04, width=2, access=Access.W1C, irq=True),
    Register(name="method", offset=0x08, width=3, low=0, high=5),
    Register(name="keep", offset=0x0C, width=8, low=1, high=196, reset=196),
    Register(name="density", offset=0x10, width=17, low=100, high=65536, reset=65536),
    Register(name="cycles", offset=0x18, access=Access.RO),
    Register(name="status", offset=0x1C, width=5, access=Access.RO),
    Register(name="program", offset=0x40),
), addr_width=8)


def test_registers_against_model():
    for seed, pause in ((1, 0.3), (2, 0.6)):  # one test: both runs share one Verilator build
        out = run_registers(REGMAP, seed=seed, pause=pause, accesses=250)
        assert out["mismatches"] == []
        assert out["writes"] > 80 and out["reads"] > 80
        assert out["slverr"] > 5 and out["decerr"] > 5 and out["range_rejected"] > 3
        orders = out["write_orders"]
        assert orders["aw_first"] > 0 and orders["w_first"] > 0 and orders["together"] > 0


@pytest.mark.slow
def test_registers_long():
    for seed in range(3, 8):
        out = run_registers(REGMAP, seed=seed, pause=0.1 * seed, accesses=2_000)
        assert out["mismatches"] == []
