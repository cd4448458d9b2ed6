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


def test_captures_are_the_integer_models_own_forward():
    """The block-by-block forward that captures frames is the integer model's own forward: the stage's
    record is the one the full forward pass made, the attention capture holds that block's frames."""
    from tokensift.quant.integer_model import IntegerViT
    from tokensift.sim.real_images import capture_attention, capture_stage
    from tokensift.sw import create_model
    from tokensift.sw.data import load_mnist

    train, test = load_mnist()
    model = create_model("vit_mnist_patch4_28", method="dynamicvit", keep_ratio=0.6).eval()
    iv = IntegerViT.from_float(model, torch.utils.data.DataLoader(train, batch_size=32), num_batches=2)
    images = torch.stack([test[i][0] for i in (0, 500)])
    iv.forward_features(images)
    stage = capture_stage(iv, images, 1)
    for b in range(2):
        record = next(r for r in iv.decisions[b] if r.block == 1)
        assert np.array_equal(stage.records[b].keep, record.keep)
        kept = stage.left[b].x[stage.left[b].num_protected:]
        assert np.array_equal(kept, stage.entered[b].x[record.keep][stage.entered[b].num_protected:])
    att = capture_attention(iv, images, 1)  # DynamicViT prunes before block 1: its attention sees the kept tokens
    assert att.q.shape[2] == len(stage.left[0].x) < 50
    assert att.q.min() >= -128 and att.q.max() <= 127
    with pytest.raises(ValueError, match=r"^block must be between 0 and 5, not 6$"):
        capture_attention(iv, images, 6)


def _quick_demo(tmp_path, capsys, *extra):
    rc = main(["demo", "--quick", "--out", str(tmp_path / "demo"), "--cache-dir", str(tmp_path / "cache"),
               "--no-progress", "--json", *extra])
    s = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert s["bit_exact"] and s["meets_target"]
    # the verdict is the generated design's measured latency where the accelerator planned the keep ratio
    planned = s["accelerator_plan"] is not None
    assert (s["accelerator"]["latency_ms"] if planned else s["latency_ms"]) <= s["target_latency_ms"]
    sim = s["simulation"]
    assert sim["images"] == 2
    assert sim["attention"]["mismatches"] == 0 and sim["attention_reference_mismatches"] == 0
    assert sim["attention"]["cycles"] == sim["attention"]["expected_cycles"]
    assert sim["attention"]["cycles"][0] == sim["model_attention_cycles"]
    stage = sim["stage"]
    assert stage["method"] == s["method"] and stage["block"] == sim["stage_block"] and stage["images"] == 2
    assert stage["reference_mismatches"] == 0 and stage["selector"]["bit_exact"]
    assert len(stage["selector"]["cycles"]) == 2 and stage["selector"]["cycles"] == stage["selector"]["expected_cycles"]
    if "combiner" in stage:
        assert stage["combiner"]["mismatches"] == 0
        assert len(stage["combiner"]["cycles"]) == 1 and stage["combiner"]["cycles"] == stage["combiner"]["expected_cycles"]
    acc = s["accelerator"]
    if "--no-accelerator" in extra:
        assert acc is None
        return s
    # the whole design: the same images from DRAM, logits bit-exact, cycles equal to its cost model
    for key in ("own", "second") if s["method"] != "spvit" else ("second",):
        run = acc[key]
        assert run["bit_exact"] and run["faults"] == [0] and len(run["predictions"]) == 1  # --quick: one image
        assert run["cycles_equal_model"] and all(0 < u < 1 for u in run["mac_utilization"])
    # the simulated design is the shape the sizing chose for the device, and it fits
    chosen = acc["sizing"]["chosen"]
    assert chosen["fits"] and all(acc["shape"][k] == chosen["shape"][k] for k in ("banks", "lanes", "gemm_cols"))
    assert all(u <= 1 for u in chosen["utilization"].values())
    assert (tmp_path / "demo" / "verilog" / "accelerator" / "tokensift_accel.v").stat().st_size > 1000
    return s


@pytest.mark.sim
@pytest.mark.parametrize("method", ["spvit", "sait", "evit"])
@pytest.mark.slow
def test_quick_demo_every_method(tmp_path, capsys, method):
    s = _quick_demo(tmp_path, capsys, "--method", method)
    assert "combiner" in s["simulation"]["stage"]  # every method but DynamicViT weighs attention heads


@pytest.mark.sim
@pytest.mark.slow
def test_quick_demo_adaptive_method_with_a_score_combiner(tmp_path, capsys):
    """AS-ViT: per-token head weights through the score combiner, a learned threshold in the selector, and a
    latency measured image by image (each image keeps its own count)."""
    s = _quick_demo(tmp_path, capsys, "--method", "asvit", "--no-accelerator")  # one whole-design build is enough
    assert s["keep"]["kind"] == "adaptive" and "mean over" in s["cycles_note"]
    stage = s["simulation"]["stage"]
    assert "combiner" in stage and stage["combiner"]["params"]["per_token_weights"]
    assert (tmp_path / "demo" / "verilog" / "score_combiner" / "tokensift_score_combiner.v").stat().st_size > 100


@pytest.mark.sim
def test_quick_demo_end_to_end(tmp_path, capsys):
    # the whole accelerator's Verilator build takes minutes on 2 cores: its step is the slow test below
    s = _quick_demo(tmp_path, capsys, "--no-accelerator")
    assert s["method"] == "dynamicvit" and s["keep"]["kind"] == "geometric"
    assert "combiner" not in s["simulation"]["stage"]  # DynamicViT ranks its predictor's logit differences
    assert s["latency_report"]["meets_target"]
    assert s["coopt"]["search"]["points"] >= 10_000
    assert all(0 <= v <= 1 for v in s["accuracy"].values() if isinstance(v, float))
    out = tmp_path / "demo"
    for rel in ("summary.json", "table.txt", "coopt/report.md", "coopt/pareto.png", "coopt/utilization.png",
                "verilog/attention/tokensift_attention.v", "verilog/selector/tokensift_selector.v"):
        assert (out / rel).stat().st_size > 100, rel
    table = (out / "table.txt").read_text()
    for row in ("accuracy int8, pruned", "method", "keep ratio (rho)", "cycles per image", "bit-exact vs integer model",
                "DSP", "block 1 selector, simulated", "whole accelerator"):
        assert row in table
    # PYNQ-Z2 is a Zynq-7000: no open place and route, so the table says its clock is assumed
    assert s["clock"]["source"] == "assumed" and s["clock"]["mhz"] == s["hw"]["clock_mhz"]
    assert re.search(r"^\| clock +\| 100 MHz, assumed, not measured: no open place and route exists for PYNQ-Z2",
                     table, re.M)


@pytest.mark.sim
@pytest.mark.slow
def test_quick_demo_runs_the_whole_accelerator(tmp_path, capsys):
    """Step 7: the model compiled, the whole design sized for the device by its own models, generated in that
    shape, the same image through its Verilator model under the model's registers and under METHOD=dense."""
    s = _quick_demo(tmp_path, capsys)
    table = (tmp_path / "demo" / "table.txt").read_text()
    for row in ("whole accelerator", "sized", "predicted cycles", "dynamicvit registers",
                "METHOD=dense (no selection)", "pruned vs dense, measured"):
        assert row in table
    acc = s["accelerator"]
    chosen = acc["sizing"]["chosen"]
    # the sized shape is the one simulated, it fits the device, and its predicted cycles are Verilator's
    assert {k: acc["shape"][k] for k in ("banks", "lanes", "gemm_cols")} == {
        k: chosen["shape"][k] for k in ("banks", "lanes", "gemm_cols")}
    assert acc["shape"]["axi"]["data_bytes"] == chosen["shape"]["axi_bytes"] and chosen["fits"]
    assert acc["predicted_equals_measured"] and acc["own"]["cycles"] == chosen["cycles"]
    # ... and it is the design the co-optimization step planned with the keep ratio, before any training:
    # the trained model runs at the planned keep ratio and its cycles are the plan's random-weight image's
    plan = s["accelerator_plan"]["chosen"]
    assert s["keep_chosen_by"] == "the whole accelerator's models" and s["keep"]["point"] == [plan["keep_ratio"]]
    assert plan["shape"] == chosen["shape"] and acc["own"]["cycles"] == [plan["cycles"]]
    assert s["meets_target_by"] == "the whole accelerator in Verilator"
    assert s["accelerator"]["latency_ms"] <= s["accelerator_plan"]["target_latency_ms"] == s["target_latency_ms"]
    assert "whole accelerator's models" in s["target"]
    # pruning shows in the whole design's cycles: fewer than the same image run dense
    assert sum(acc["own"]["cycles"]) < sum(acc["second"]["cycles"]) and acc["measured_speedup"] > 1


def test_demo_argument_errors(capsys):
    assert main(["demo", "--quick", "--speedup", "0"]) == 2
    assert re.match(r"^tokensift demo: error: --speedup must be positive, not 0$", capsys.readouterr().err.strip())
    assert main(["demo", "--method", "tome"]) == 2
    assert "invalid choice: 'tome'" in capsys.readouterr().err
    assert main(["demo", "--sim-images", "0"]) == 2
    assert re.match(r"^tokensift demo: error: --sim-images must be at least 1, not 0$",
                    capsys.readouterr().err.strip())
    assert main(["demo", "--accel-images", "0"]) == 2
    assert re.match(r"^tokensift demo: error: --accel-images must be at least 1, not 0$",
                    capsys.readouterr().err.strip())
    assert main(["demo", "--sim-images", "2", "--accel-images", "3"]) == 2
    assert re.match(r"^tokensift demo: error: --accel-images \(3\) must be at most --sim-images \(2\): the whole "
                    r"design runs the same images$", capsys.readouterr().err.strip())
