"""Verilator + cocotb: the GELU unit, the residual adder and the token mean bit for bit against quant/
(gelu_int, residual_add, mean_rows) under stalls and resets, with the measured cycles equal to the formulas."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.sim


def simulate(argv, capsys) -> dict:
    from tokensift.cli import main

    assert main(["simulate", *argv, "--seed", "5", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("argv", [
    pytest.param(["--lanes", "4", "--count", "256", "--beats", "60"], marks=pytest.mark.slow),
    ["--lanes", "3", "--in-bits", "12", "--out-bits", "10", "--multiplier-bits", "24", "--scales",
     "0.002:0.004,0.0005:0.0002", "--count", "300", "--beats", "40", "--stall", "0.5"],
], ids=["int8-3layers", "int12-preshift"])
def test_gelu(argv, capsys):
    out = simulate(["gelu", *argv], capsys)
    assert out["bit_exact"] and out["mismatches"] == 0 and out["values"] > 500
    assert out["cycles_match"] and out["full_throughput"]
    assert out["cycles"] == int(argv[argv.index("--beats") + 1]) + 15


@pytest.mark.parametrize("argv", [
    ["--lanes", "4", "--res-bits", "16", "--beats", "300", "--timed-beats", "50"],
    pytest.param(["--lanes", "1", "--res-bits", "8", "--overflow", "wrap", "--beats", "200", "--timed-beats", "20"],
                 marks=pytest.mark.slow),
], ids=["16bit-saturate", "8bit-wrap"])
def test_residual(argv, capsys):
    out = simulate(["residual", *argv], capsys)
    assert out["bit_exact"] and out["cycles_match"] and out["full_throughput"]
    assert out["overflows"] > 0


@pytest.mark.parametrize("argv", [
    ["--lanes", "4", "--n-max", "30", "--c-max", "14", "--tokens", "20", "--channels", "13", "--frames", "6"],
    ["--lanes", "1", "--bits", "6", "--n-max", "9", "--c-max", "3", "--tokens", "1", "--channels", "3",
     "--stall", "0.5"],
], ids=["4lanes", "1lane-N1"])
def test_token_mean(argv, capsys):
    out = simulate(["token_mean", *argv], capsys)
    assert out["bit_exact"] and out["cycles_match"] and out["errors_flagged"] == 4
    assert out["back_to_back_match"]
    full_rate = out["back_to_back_cycles"] == out["back_to_back_beats"]
    assert full_rate == ("--tokens" in argv and argv[argv.index("--tokens") + 1] != "1")  # N = 1 waits for banks


def test_generate_writes_verilog_and_manifest(tmp_path):
    from tokensift.cli import main

    for block, port in (("gelu", "i_cfg__payload"), ("residual", "i_y__ready"), ("token_mean", "i_cmd__payload")):
        assert main(["generate", block, "--lanes", "2", "--out", str(tmp_path / block)]) == 0
        verilog = (tmp_path / block / f"tokensift_{block}.v").read_text()
        manifest = json.loads((tmp_path / block / f"tokensift_{block}.json").read_text())
        assert port in verilog and manifest["block"] == block and manifest["parameters"]["lanes"] == 2
