"""Every method's selection step on real MNIST images: the integer model's stage, captured as the hardware
step (score combiner -> token selector), through Verilator, bit for bit: hardware == reference == integer
model, with the cycle formulas."""

from __future__ import annotations

import pytest
import torch

from tokensift.quant.integer_model import IntegerViT
from tokensift.sw import create_model
from tokensift.sw.data import load_mnist

pytestmark = pytest.mark.sim

TINY = dict(embed_dim=32, depth=3, num_heads=2, prune_locs=(1, 2), weight_init="jax", pos_embed_init="sincos")


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


@pytest.fixture(scope="module")
def dense_state(mnist):
    from tokensift.sw.methods import get_method
    from tokensift.sw.train import TrainConfig, fit

    torch.manual_seed(0)
    model = create_model("vit_mnist_patch4_28", **TINY)
    fit(model, get_method("none").build_criterion(1.0, 0), mnist[0],
        TrainConfig(epochs=1, batch_size=64, lr=3e-3, warmup_epochs=0.2, max_steps=100, augment=False),
        progress=False)
    return model.state_dict()


def integer_model(method, keep, state, train):
    torch.manual_seed(1)
    model = create_model("vit_mnist_patch4_28", method=method, keep_ratio=keep, **TINY)
    model.load_state_dict(state, strict=False)
    model.eval()
    calib = [train[i][0] for i in range(64)]
    if method == "spvit":  # its untrained predictors keep every token under the threshold rule: plan top-k
        from tokensift.sw.methods.spvit import set_decision

        set_decision(model, "topk")
    if method == "asvit":
        from tokensift.sw.methods.asvit import calibrate_thresholds

        calibrate_thresholds(model, torch.stack(calib))
    return IntegerViT.from_float(model, [torch.stack(calib)], num_batches=1)


@pytest.mark.parametrize("method, keep, block", [
    # EViT and SaiT share the selector's top-k path with DynamicViT and SPViT: a sweep, under `slow`
    pytest.param("evit", 0.6, 2, marks=pytest.mark.slow),
    ("asvit", 0.6, 2),
    ("dynamicvit", 0.7, 1),
    ("spvit", 0.7, 2),
    pytest.param("sait", 0.85, 1, marks=pytest.mark.slow),
])
def test_selection_step_bit_exact_on_real_images(method, keep, block, dense_state, mnist, tmp_path):
    from tokensift.sim.real_images import capture_stage, simulate_stage

    train, test = mnist
    iv = integer_model(method, keep, dense_state, train)
    images = torch.stack([test[i][0] for i in (3, 250, 520, 990)])
    cap = capture_stage(iv, images, block)
    assert cap.method == method and len(cap.steps) == 4
    out = simulate_stage(iv, cap, lanes=4, work_dir=tmp_path)
    assert out["reference_mismatches"] == 0
    assert out["selector"]["bit_exact"], out["selector"]
    assert len(out["selector"]["cycles"]) == 4 and out["selector"]["cycles"] == out["selector"]["expected_cycles"]
    if "combiner" in out:
        assert out["combiner"]["bit_exact"], out["combiner"]
        assert len(out["combiner"]["cycles"]) == 3  # the periods of the first three of four frames
        assert out["combiner"]["cycles"] == out["combiner"]["expected_cycles"][:3]
    assert out["bit_exact"]
    kept = [int(r.keep[s.selector_tokens].sum()) for r, s in zip(cap.records, cap.steps, strict=True)]
    assert out["selector"]["kept"] == kept  # the selector's own count (class token + kept candidates)
    assert min(int(r.keep.sum()) for r in cap.records) < cap.entered[0].n  # the stage really pruned
