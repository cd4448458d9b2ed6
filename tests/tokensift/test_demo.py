"""The end-to-end demo, reduced (``--quick``): every stage runs on the real data path."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from tokensift.cli import main


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_integer_forward_used_for_capture_matches_the_integer_model():
    """The block-by-block forward that captures frames is the integer model's own forward."""
    from tokensift.quant.integer_model import IntegerViT
    from tokensift.sim.real_images import capture_block
    from tokensift.sw import create_model
    from tokensift.sw.data import load_mnist

    train, test = load_mnist()
    model = create_model("vit_mnist_patch4_28", method="evit", keep_ratio=0.6).eval()
    iv = IntegerViT.from_float(model, torch.utils.data.DataLoader(train, batch_size=32), num_batches=2)
    images = torch.stack([test[i][0] for i in (0, 500)])
    iv.forward_features(images)
    cap = capture_block(iv, images, 1)
    for b in range(2):  # the capture's selection is the one the full forward pass recorded
        record = next(r for r in iv.decisions[b] if r.block == 1)
        assert np.array_equal(cap.selected[b][:record.keep.sum()], cap.features[b][record.keep])
        assert np.array_equal(record.scores, cap.scores[b])
    assert cap.q.shape == (2, 4, 50, 16) and cap.keep == 30 and cap.selected.shape == (2, 32, 64)
    assert cap.q.min() >= -128 and cap.q.max() <= 127 and cap.scores.max() < 1 << 16


@pytest.mark.sim
def test_quick_demo_end_to_end(tmp_path, capsys):
    rc = main(["demo", "--quick", "--out", str(tmp_path / "demo"), "--cache-dir", str(tmp_path / "cache"),
               "--no-progress", "--json"])
    s = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert s["bit_exact"] and s["meets_target"] and s["latency_ms"] <= s["target_latency_ms"]
    sim = s["simulation"]
    assert sim["attention"]["mismatches"] == 0 and sim["attention_reference_mismatches"] == 0
    assert sim["attention"]["cycles"] == sim["attention"]["expected_cycles"]
    assert sim["attention"]["cycles"][0] == sim["model_attention_cycles"]
    assert sim["selector"]["cycles"] == sim["selector"]["expected_cycles"] == [sim["selector_formula_cycles"]]
    assert sim["selector_reference_mismatches"] == 0
    assert s["latency_report"]["meets_target"]
    assert s["coopt"]["search"]["points"] >= 10_000
    assert all(0 <= v <= 1 for v in s["accuracy"].values() if isinstance(v, float))
    out = tmp_path / "demo"
    for rel in ("summary.json", "table.txt", "coopt/report.md", "coopt/pareto.png", "coopt/utilization.png",
                "verilog/attention/tokensift_attention.v", "verilog/selector/tokensift_selector.v"):
        assert (out / rel).stat().st_size > 100, rel
    table = (out / "table.txt").read_text()
    for row in ("accuracy int8, pruned", "keep ratios per stage", "cycles per image", "bit-exact vs integer model",
                "DSP"):
        assert row in table
    # PYNQ-Z2 is a Zynq-7000: no open place and route, so the table says its clock is assumed
    assert s["clock"]["source"] == "assumed" and s["clock"]["mhz"] == s["hw"]["clock_mhz"]
    assert re.search(r"^\| clock +\| 100 MHz, assumed, not measured: no open place and route exists for PYNQ-Z2",
                     table, re.M)


def test_demo_argument_errors(capsys):
    assert main(["demo", "--quick", "--speedup", "0"]) == 2
    assert re.match(r"^tokensift demo: error: --speedup must be positive, not 0$", capsys.readouterr().err.strip())
    assert main(["demo", "--sim-images", "0"]) == 2
    assert re.match(r"^tokensift demo: error: --sim-images must be at least 1, not 0$",
                    capsys.readouterr().err.strip())
