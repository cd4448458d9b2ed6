"""FLOPs (MACs): a hand count, the paper's DeiT-S numbers, schedule-driven counts, the budget, the CLI."""

import json

import pytest
import torch

from tokensift.cli import main
from tokensift.sw import create_model
from tokensift.sw.budget import Budget, FlopsBudget
from tokensift.sw.flops import count_flops
from tokensift.sw.methods.dynamicvit import PredictorLG


def hand_count_mnist(attn, mlp, predictor_tokens=()):
    """vit_mnist_patch4_28 by hand: C=64, hidden=128, 49 patches of 1x4x4, 10 classes."""
    C, H = 64, 128
    total = 49 * 16 * C + C * 10
    for a, m in zip(attn, mlp, strict=True):
        total += a * C * 3 * C + 2 * a * a * C + a * C * C + 2 * m * C * H
    per_token = C * C + C * (C // 2) + (C // 2) * (C // 4) + (C // 4) * 2
    return total + sum(predictor_tokens) * per_token


def test_dense_hand_count():
    report = count_flops(create_model("vit_mnist_patch4_28"))
    assert report.attn_tokens == [50] * 6 and report.mlp_tokens == [50] * 6
    assert report.macs == hand_count_mnist([50] * 6, [50] * 6)


def test_dynamicvit_hand_count():
    report = count_flops(create_model("vit_mnist_patch4_28", method="dynamicvit", keep_ratio=0.7))
    sched = [50, 35, 35, 25, 25, 17]
    assert report.attn_tokens == sched
    # the predictors score the 49, 34 and 24 patch tokens entering stages 1, 2, 3
    assert report.macs == hand_count_mnist(sched, sched, predictor_tokens=(49, 34, 24))
    assert report.breakdown["selectors"] == (49 + 34 + 24) * PredictorLG.macs_per_token(64)


def test_evit_counts_attention_and_mlp_separately():
    report = count_flops(create_model("vit_mnist_patch4_28", method="evit", keep_ratio=0.7))
    attn, mlp = [50, 50, 37, 37, 28, 28], [50, 37, 37, 28, 28, 21]
    assert report.attn_tokens == attn and report.mlp_tokens == mlp
    fused = ((49 - 35) + (36 - 26) + (27 - 19)) * 64  # one MAC per channel of each dropped token
    assert report.macs == hand_count_mnist(attn, mlp) + fused


def test_deit_small_matches_the_papers():
    dense = count_flops(create_model("deit_small_patch16_224"))
    dvit = count_flops(create_model("deit_small_patch16_224", method="dynamicvit", keep_ratio=0.7))
    assert round(dense.gflops, 1) == 4.6  # DeiT-S: 4.6 GFLOPs
    assert round(dvit.gflops, 1) == 3.0  # DynamicViT-S/0.7: 2.9 reported (ours counts the predictors exactly)
    assert dvit.attn_tokens == [197] * 3 + [138] * 3 + [97] * 3 + [68] * 3
    for name, g in [("deit_tiny_patch16_224", 1.3), ("deit_base_patch16_224", 17.6)]:
        assert round(count_flops(create_model(name)).gflops, 1) == g


def test_count_driven_by_the_actual_schedule_matches_static_for_topk():
    model = create_model("vit_mnist_patch4_28", method="dynamicvit", keep_ratio=0.8)
    measured = count_flops(model, torch.randn(3, 1, 28, 28))
    static = count_flops(model)
    assert measured.attn_tokens == static.attn_tokens
    assert measured.macs == pytest.approx(static.macs)


def test_budget_equals_count_and_is_differentiable():
    for method in ("dynamicvit", "evit"):
        model = create_model("deit_small_patch16_224", method=method, keep_ratio=0.7)
        budget = FlopsBudget(model)
        assert isinstance(budget, Budget)
        static = count_flops(model)
        stage_out = [static.attn_tokens[b] if s.site == "pre" else static.mlp_tokens[b]
                     for b, s in model.stage_selectors()]
        counts = torch.tensor(stage_out, dtype=torch.float64, requires_grad=True)
        cost = budget(counts)
        assert float(cost.detach()) == pytest.approx(static.macs)
        cost.backward()
        assert (counts.grad > 0).all()  # more tokens, more FLOPs, at every stage
    assert budget.dense == pytest.approx(count_flops(create_model("deit_small_patch16_224")).macs)
    batched = budget(torch.tensor([[197.0, 197.0, 197.0], [140.0, 100.0, 72.0]]))
    assert batched.shape == (2,) and float(batched[0]) > float(batched[1])


def test_budget_errors():
    budget = FlopsBudget(create_model("vit_mnist_patch4_28", method="dynamicvit"))
    with pytest.raises(ValueError, match=r"^token counts must have 3 entries in the last axis \(one per "
                                         r"pruning stage\), not shape \(2,\)$"):
        budget(torch.ones(2))
    with pytest.raises(TypeError, match=r"^token counts must be a torch tensor, not list$"):
        budget([1, 2, 3])


def test_cli_flops_json(capsys):
    assert main(["flops", "--model", "deit_small_patch16_224", "--method", "dynamicvit", "--keep", "0.7",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tokens"] == [197] * 3 + [138] * 3 + [97] * 3 + [68] * 3
    assert out["gflops"] == pytest.approx(count_flops(
        create_model("deit_small_patch16_224", method="dynamicvit", keep_ratio=0.7)).gflops)
    assert out["dense_gflops"] == pytest.approx(4.5989, abs=1e-4)
    assert out["ratio"] == pytest.approx(out["gflops"] / out["dense_gflops"])
    assert (out["model"], out["method"], out["keep"]) == ("deit_small_patch16_224", "dynamicvit", 0.7)
    assert main(["flops", "--model", "deit_small_patch16_224", "--method", "none", "--json"]) == 0
    dense = json.loads(capsys.readouterr().out)
    assert dense["tokens"] == [197] * 12 and dense["ratio"] == 1.0 and dense["keep"] == 1.0


def test_cli_flops_bad_keep_is_one_line_error(capsys):
    assert main(["flops", "--method", "dynamicvit", "--keep", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tokensift flops: error: keep ratio must be in (0, 1], not 1.5"]
    assert main(["flops", "--method", "none", "--keep", "0.5", "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["type"] == "InvalidArgumentError"
    assert out["error"] == "the dense model (method 'none') keeps every token; keep ratio must be 1, not 0.5"
