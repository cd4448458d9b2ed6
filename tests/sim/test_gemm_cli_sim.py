"""``tokensift generate gemm`` and ``tokensift simulate gemm``: manifest, and a Verilator run that is
bit-exact and cycle-exact."""

from __future__ import annotations

import json

import pytest

from tokensift import cli

pytestmark = pytest.mark.sim

#: the "2x6-int12-floor" engine of test_gemm_sim.py: the same Verilog, so the Verilator build is shared
SMALL = ["--rows", "2", "--cols", "6", "--max-tokens", "7", "--max-in", "9", "--max-out", "13",
         "--weight-bytes", "3", "--out-bits", "12", "--rounding", "floor"]


def test_generate_writes_verilog_and_manifest(tmp_path, capsys):
    assert cli.main(["generate", "gemm", *SMALL, "--out", str(tmp_path), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["block"] == "gemm" and manifest["parameters"]["rows"] == 2
    assert manifest["parameters"]["formats"]["weights"]["record_beats"] == 3  # 54-bit records in 24-bit beats
    assert "module tokensift_gemm(" in (tmp_path / "tokensift_gemm.v").read_text()


def test_simulate_is_bit_and_cycle_exact(capsys):
    assert cli.main(["simulate", "gemm", *SMALL, "--tokens", "5", "--in-features", "9", "--out-features", "7",
                     "--jobs", "2", "--rate", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["bit_exact"] and r["cycles_match"] and r["cycles"] == r["expected_cycles"]
    assert r["rejected_flagged"] and r["reset_exact"]


def test_simulate_packed_pairs_is_bit_and_cycle_exact(capsys):
    # two products per DSP48: the same jobs, stalls, rejected sizes and reset, the same cycles
    assert cli.main(["simulate", "gemm", "--rows", "4", "--cols", "8", "--max-tokens", "20", "--max-in", "40",
                     "--max-out", "24", "--weight-bytes", "4", "--out-bits", "16", "--pack-pairs", "--jobs", "3",
                     "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["bit_exact"] and r["cycles_match"] and r["cycles"] == r["expected_cycles"]
    assert r["rejected_flagged"] and r["reset_exact"]
