"""Verilator + cocotb: the score combiner bit for bit against head_weighted_scores (order_key of it when signed),
under stalls, mode switches and resets."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.sim


@pytest.mark.parametrize("argv", [
    pytest.param(["--n-max", "20", "--heads", "3", "--lanes", "3", "--score-bits", "10", "--score-frac", "9",
                  "--tokens", "19"], marks=pytest.mark.slow),
    ["--n-max", "9", "--heads", "2", "--lanes", "1", "--attn-bits", "7", "--attn-frac", "6", "--importance-bits",
     "5", "--importance-frac", "4", "--score-bits", "6", "--score-frac", "12", "--rounding", "half_even"],
    ["--n-max", "13", "--heads", "3", "--lanes", "3", "--attn-bits", "9", "--attn-frac", "8", "--importance-bits", "6",
     "--importance-frac", "5", "--score-bits", "9", "--score-frac", "8", "--signed", "--per-token-weights",
     "--per-token"],
], ids=["3lanes", "1lane-leftshift", "signed-per-token"])
def test_cli_simulate(argv, capsys):
    from tokensift.cli import main

    assert main(["simulate", "score_combiner", *argv, "--frames", "5", "--seed", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bit_exact"] and out["cycles_match"] and out["status"] == "OK"
    assert out["frames"] == 9 and out["scores"] > 0


def test_cli_generate(tmp_path):
    from tokensift.cli import main

    assert main(["generate", "score_combiner", "--n-max", "16", "--heads", "2", "--lanes", "4",
                 "--out", str(tmp_path)]) == 0
    verilog = (tmp_path / "tokensift_score_combiner.v").read_text()
    assert "o_score__payload" in verilog and "i_attn__ready" in verilog
