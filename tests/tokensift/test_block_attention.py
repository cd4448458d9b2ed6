"""``tokensift generate attention`` and ``tokensift simulate attention``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tokensift.hw.attention.cycles import cycles
from tokensift.quant.attention import AttentionParams


def run_cli(*args):
    proc = subprocess.run([sys.executable, "-m", "tokensift", *args], capture_output=True, text=True, timeout=900)
    return proc.returncode, proc.stdout, proc.stderr


def test_generate_writes_verilog_and_manifest(tmp_path):
    code, out, _ = run_cli("generate", "attention", "--n-max", "16", "--head-dim", "16", "--lanes", "8",
                           "--softmax", "exp2_poly", "--out", str(tmp_path), "--json")
    assert code == 0
    manifest = json.loads(out)
    par = manifest["parameters"]
    assert (par["n_max"], par["head_dim"], par["lanes"], par["softmax"]["variant"]) == (16, 16, 8, "exp2_poly")
    assert par["cycles_n_max"] == cycles(n_max=16, head_dim=16, lanes=8, softmax="exp2_poly", n_tokens=16)
    fields = {f["field"]: f for f in par["stream_formats"]["i_stream"]["fields"]}
    assert fields["header.n_tokens"] == {"field": "header.n_tokens", "offset": 0, "width": 16, "signed": False}
    assert fields["row"]["lanes"] == 8 and fields["row"]["lane_width"] == 8
    consts = {f["field"]: (f["offset"], f["width"]) for f in par["stream_formats"]["k_stream"]["fields"]}
    assert consts == {"scale_multiplier": (0, 32), "scale_shift": (32, 8), "out_multiplier": (40, 32),
                      "out_shift": (72, 8)}
    assert par["constant_ranges"] == {"scale_mult_bits": 17, "scale_shift_max": 48, "out_mult_bits": 16,
                                      "out_shift_max": 62}
    ports = {p["name"] for p in manifest["ports"]}
    assert {"k_stream__payload", "i_stream__payload", "o_stream__ready", "s_stream__valid", "status"} <= ports
    assert [s["name"] for s in manifest["streams"]] == ["k_stream", "i_stream", "o_stream", "s_stream"]
    assert "module tokensift_attention(" in (tmp_path / "tokensift_attention.v").read_text()


def test_generate_rejects_bad_parameters(tmp_path):
    code, out, err = run_cli("generate", "attention", "--head-dim", "12", "--lanes", "16", "--out", str(tmp_path),
                             "--json")
    assert code == 2
    assert err.strip() == "tokensift generate: error: head_dim must be a multiple of lanes 16, not 12"
    assert json.loads(out)["type"] == "ValueError"


def test_simulate_rejects_bad_token_count():
    code, _, err = run_cli("simulate", "attention", "--n-max", "8", "--head-dim", "8", "--lanes", "4",
                           "--tokens", "9", "--json")
    assert code == 2
    assert err.strip() == "tokensift simulate: error: --tokens must be between 1 and --n-max 8, not 9"


@pytest.mark.sim
def test_simulate_json():
    # the configuration of tests/sim/test_attention_sim.py's "lut-c2": the Verilator build is shared
    code, out, _ = run_cli("simulate", "attention", "--n-max", "8", "--head-dim", "8", "--lanes", "4",
                           "--tokens", "5", "--heads", "2", "--seed", "4", "--json")
    assert code == 0
    r = json.loads(out)
    p = AttentionParams(n_max=8, head_dim=8, lanes=4)
    assert r["bit_exact"] is True and r["mismatches"] == 0
    assert r["cycles"] == r["expected_cycles"] == cycles(p, n_tokens=5, heads=2)
    assert r["macs"] == 2 * 2 * 5 * 5 * 8
    assert r["mac_utilization"] == pytest.approx(r["macs"] / (4 * r["cycles"]))
    assert r["sim_cycles_per_s"] > 0 and r["output_beats"] == 2 * 5 * 2 and r["score_beats"] == 10
