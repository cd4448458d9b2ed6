"""`tokensift flops` and `tokensift train` with SPViT, AS-ViT and SaiT (the methods of issue 4)."""

import json

import pytest
import torch

from tokensift.cli import main
from tokensift.sw import create_model
from tokensift.sw.checkpoint import save_checkpoint
from tokensift.sw.data import load_mnist
from tokensift.sw.flops import count_flops


@pytest.mark.parametrize("method", ["spvit", "asvit", "sait"])
def test_flops_json_for_each_new_method(method, capsys):
    assert main(["flops", "--model", "vit_mnist_patch4_28", "--method", method, "--keep", "0.6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == method and out["prune_locs"] == ([2, 4, 5] if method == "asvit" else [1, 3, 5])
    model = create_model("vit_mnist_patch4_28", method=method, keep_ratio=0.6)
    assert out["gflops"] == pytest.approx(count_flops(model).gflops)
    assert out["adaptive"]  # SPViT's default inference rule is its threshold too
    if method == "spvit":  # the static count is the schedule planned from the FLOPs budget
        assert out["ratio"] <= 0.6 and out["ratio"] > 0.55
        assert out["breakdown_gflops"]["selectors"] > 0
    else:  # the static count of an adaptive method is the worst case, and says so
        assert out["tokens"] == [50] * 6
        assert out["note"].startswith(f"{method} keeps a different number of tokens per image")


def test_flops_counts_adaptive_methods_per_image_with_a_checkpoint(tmp_path, capsys):
    model = create_model("vit_mnist_patch4_28", method="sait", keep_ratio=0.5)
    torch.manual_seed(0)
    with torch.no_grad():
        for blk in model.blocks:  # peaked attention, as after training
            blk.attn.qkv.weight.normal_(0, 0.15)
    path = save_checkpoint(tmp_path / "sait.pth", model)
    assert main(["flops", "--model", "vit_mnist_patch4_28", "--method", "sait", "--keep", "0.5",
                 "--checkpoint", str(path), "--images", "20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    _, test = load_mnist()
    images = torch.stack([test[i][0] for i in range(20)])
    assert out["gflops"] == pytest.approx(count_flops(model.eval(), images).gflops)
    assert out["images"] == 20 and out["ratio"] < 0.9 and "note" not in out


@pytest.mark.parametrize("argv,msg", [
    (["--model", "deit_tiny_patch16_224", "--method", "sait", "--images", "4"],
     "--images counts on the bundled MNIST test images, which need a 28x28, 1-channel, 10-class model, not "
     "deit_tiny_patch16_224"),
    (["--model", "vit_mnist_patch4_28", "--method", "asvit", "--images", "0"],
     "--images must be between 1 and 1000 (the MNIST test split), not 0"),
    (["--model", "vit_mnist_patch4_28", "--method", "spvit", "--keep", "0.1"],
     "a budget of 0.1 of the dense cost is below what SPViT can reach on this model (0.220, one patch token "
     "per stage)"),
])
def test_flops_errors_are_one_line(argv, msg, capsys):
    assert main(["flops", *argv]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"tokensift flops: error: {msg}"]


@pytest.mark.parametrize("method", ["spvit", "asvit", "sait"])
def test_train_runs_each_new_method(method, tmp_path, capsys):
    argv = ["train", "--model", "vit_mnist_patch4_28", "--method", method, "--keep", "0.6", "--epochs", "1",
            "--dense-epochs", "1", "--max-steps", "2", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "out"), "--no-progress", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == method and 0 <= out["accuracy"] <= 1 and out["checkpoint"]
    if method != "spvit":  # (SPViT's threshold rule still keeps almost every token after two steps)
        assert out["ratio"] < 0.95  # measured per test image for the adaptive methods, not the static worst case
    model = create_model("vit_mnist_patch4_28", method=method, keep_ratio=0.6)
    from tokensift.sw.checkpoint import load_checkpoint

    load_checkpoint(model, out["checkpoint"])  # the trained model reloads into the method's model


def test_train_with_loader_workers_and_autocast_reports_its_device(tmp_path, capsys):
    argv = ["train", "--method", "dynamicvit", "--epochs", "1", "--dense-epochs", "1", "--max-steps", "2",
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--json", "--workers", "1", "--amp",
            "--accelerator", "cpu"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["device"] == "cpu" and 0 <= out["accuracy"] <= 1


@pytest.mark.parametrize("argv, msg", [
    (["--accelerator", "cuda"], "accelerator 'cuda' was asked for, but this PyTorch build sees no CUDA GPU"),
    (["--workers", "-1"], "--workers must be a non-negative integer, not -1"),
])
def test_train_device_errors_are_one_line(argv, msg, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert main(["train", "--max-steps", "1", "--cache-dir", str(tmp_path), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1


def test_train_under_torchrun_two_processes(tmp_path):
    """The documented multi-process command: two CPU workers (gloo), one JSON object, a clean exit."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "tokensift", "train", "--method", "spvit", "--keep", "0.6", "--epochs", "1", "--dense-epochs", "1",
           "--max-steps", "2", "--batch-size", "16", "--accelerator", "cpu", "--cache-dir", str(tmp_path / "cache"),
           "--out", str(tmp_path / "out"), "--no-progress", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)  # one object: only the main process prints
    assert out["world_size"] == 2 and out["device"] == "cpu" and out["method"] == "spvit"
    model = create_model("vit_mnist_patch4_28", method="spvit", keep_ratio=0.6)
    from tokensift.sw.checkpoint import load_checkpoint

    load_checkpoint(model, out["checkpoint"])
