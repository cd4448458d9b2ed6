"""`tokensift synth BLOCK ... [--pnr]`: synthesis and place-and-route answers, and the option errors."""

from __future__ import annotations

import json
import re

import pytest

from tokensift.cli import main


@pytest.mark.parametrize(("argv", "message"), [
    (["requant", "--pnr", "--speed", "5"], r"--speed must be one of 6, 7, 8, not 5"),
    (["requant", "--pnr", "--family", "xcup"],
     r"--pnr places and routes on ECP5 only \(no open place and route exists for xcup\); use --family ecp5"),
    (["requant", "--family", "virtex2"], r"--family must be one of xcup, xc7, ecp5, not 'virtex2'"),
    (["requant", "--constraint-mhz", "120"], r"--constraint-mhz is a place-and-route option; add --pnr"),
    (["requant", "--pnr", "--constraint-mhz", "0"], r"--constraint-mhz must be between 0 and 1000, not 0"),
    (["attention", "--lanes", "0", "--pnr"], r"lanes must be .*"),
    (["requant", "--seed", "3"], r"--seed is a place-and-route option; add --pnr"),
    (["requant", "--pnr", "--seed", "0"], r"--seed must be between 1 and 2147483647, not 0"),
])
def test_bad_options_are_one_line_and_exit_2(argv, message, capsys, monkeypatch):
    from tokensift.hw.cost import pnr, synth

    def never(*args, **kwargs):
        raise AssertionError("no tool may run before the options are checked")

    monkeypatch.setattr(pnr, "place_and_route_verilog", never)
    monkeypatch.setattr(synth, "synthesize_verilog", never)
    assert main(["synth", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert re.match(rf"^tokensift synth: error: {message}$", err.strip()), err


@pytest.mark.synth
def test_synth_and_pnr_json(capsys):
    assert main(["synth", "requant", "--multiplier", "12345", "--shift", "20", "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    d = json.loads(out)
    assert d["block"] == "requant" and d["synth"]["family"] == "ecp5" and d["synth"]["dsp"] == 2
    assert main(["synth", "requant", "--multiplier", "12345", "--shift", "20", "--pnr", "--speed", "8", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    p = d["pnr"]
    assert p["speed"] == 8 and p["fmax_mhz"] >= 100 and p["utilization"]["dsp"] == 2
    assert set(p["critical_path"]) >= {"from", "to", "logic_ns", "routing_ns", "hops"}
    assert main(["synth", "requant", "--multiplier", "12345", "--shift", "20", "--pnr", "--speed", "8"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^nextpnr-ecp5 LFE5U-85F CABGA381 speed 8, seed default: Fmax [\d.]+ MHz \(meets 100 MHz\)$",
                     text, re.M)
    assert re.search(r"^critical path: .+ -> .+: [\d.]+ ns = [\d.]+ ns logic \+ [\d.]+ ns routing$", text, re.M)
