"""Verilator + cocotbext-axi's AxiLiteMaster: the register bank against its Python model under random pauses."""

from __future__ import annotations

import json

import pytest

from tokensift.hw.axi.config import example_regmap
from tokensift.sim.axi_runs import run_registers

pytestmark = pytest.mark.sim

REGMAP = example_regmap()


def test_registers_against_model(capsys):
    for seed, pause in ((1, 0.3), (2, 0.6)):  # one test: the runs share one Verilator build
        out = run_registers(REGMAP, seed=seed, pause=pause, accesses=250)
        assert out["mismatches"] == []
        assert out["writes"] > 80 and out["reads"] > 80
        assert out["slverr"] > 5 and out["decerr"] > 5 and out["range_rejected"] > 3
        orders = out["write_orders"]
        assert orders["aw_first"] > 0 and orders["w_first"] > 0 and orders["together"] > 0

    # the CLI's run of the same (default) map
    from tokensift.cli import main

    assert main(["simulate", "axi_lite", "--accesses", "120", "--seed", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bit_exact"] and out["mismatches"] == [] and out["writes"] + out["reads"] == 120


@pytest.mark.slow
def test_registers_long():
    for seed in range(3, 8):
        out = run_registers(REGMAP, seed=seed, pause=0.1 * seed, accesses=2_000)
        assert out["mismatches"] == []
