"""AS-ViT: head-weighted class-attention scores, learned thresholds, adaptive counts, FLOPs-budget loss."""

import math

import numpy as np
import pytest
import torch

from tokensift.sw import create_model
from tokensift.sw.flops import count_flops
from tokensift.sw.methods import get_method
from tokensift.sw.methods.asvit import ASViTLoss, ASViTSelector, calibrate_thresholds, default_prune_locs
from tokensift.sw.registry import get_config
from tokensift.sw.vit import Attention

MODEL = "vit_mnist_patch4_28"


def _model(threshold=1.0, keep_ratio=0.6, **kwargs):
    """A model whose attention is peaked (as after training), with every threshold set to ``threshold``;
    stages before blocks 1, 3, 5 unless ``prune_locs`` is given."""
    kwargs.setdefault("prune_locs", (1, 3, 5))
    model = create_model(MODEL, method="asvit", keep_ratio=keep_ratio, **kwargs)
    torch.manual_seed(0)
    with torch.no_grad():
        for blk in model.blocks:  # at initialisation the attention is almost uniform
            blk.attn.qkv.weight.normal_(0, 0.12)
        for sel in model.selectors.values():
            sel.log_threshold.fill_(math.log(threshold))
            sel.calibrated.fill_(True)  # keep these thresholds (the loss would calibrate them)
    return model


@pytest.mark.parametrize("head_importance", ["token", "image"])
def test_scores_are_class_attention_weighted_by_head_output_norms_from_the_existing_pass(head_importance):
    model = _model().eval()
    for sel in model.selectors.values():
        sel.head_importance = head_importance
    x = torch.randn(2, 1, 28, 28)
    calls = []
    for m in model.modules():
        if isinstance(m, Attention):
            m.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        state = model.forward_state(x)
        assert len(calls) == model.depth  # one attention pass per block, no second pass for the scores
        # naive recomputation of block 0's attention (the stage before block 1 reads it)
        h = model._embed(x)
        attn = model.blocks[0].attn
        B, N, C = h.shape
        qkv = attn.qkv(model.blocks[0].norm1(h)).reshape(B, N, 3, 4, C // 4).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(-1)
        if head_importance == "token":  # each token's head-output norms over their sum (the release)
            norms = (a @ v).norm(dim=-1)  # (B, H, N)
            w = norms / (norms.sum(1, keepdim=True) + 1e-8)
        else:  # one weight per head, from its output norm over all tokens
            norms = (a @ v).square().sum(dim=(-2, -1)).sqrt()  # (B, H)
            w = (norms / norms.sum(-1, keepdim=True))[:, :, None]
        expected = (w * a[:, :, 0]).sum(1)
    torch.testing.assert_close(state.decisions[0].scores, expected, rtol=1e-4, atol=1e-6)


def test_default_pruning_locations_are_the_releases_scaled_to_the_depth():
    assert default_prune_locs(get_config("deit_small_patch16_224")) == (4, 7, 10)
    assert create_model(MODEL, method="asvit").config.prune_locs == (2, 4, 5)
    assert create_model(MODEL, method="asvit", depth=12).config.prune_locs == (4, 7, 10)
    assert create_model(MODEL, method="asvit", prune_locs=(1, 3)).config.prune_locs == (1, 3)
    assert create_model(MODEL, method="dynamicvit").config.prune_locs == (1, 3, 5)


def test_kept_count_adapts_to_each_image_and_class_token_is_never_pruned():
    model = _model().eval()
    x = torch.cat([torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28) * 3 + 1])
    with torch.no_grad():
        state = model.forward_state(x)
    counts = state.attn_tokens[1]
    assert isinstance(counts, torch.Tensor) and len(counts.unique()) > 1
    assert (state.index[:, 0] == 0).all()
    for d in state.decisions:
        assert (d.keep[:, 0] == 1).all()
        sel = model.selectors[str(d.block)]
        cand = d.index > 0
        # the inference rule: kept exactly when score > threshold (among the candidates)
        rule = (d.scores > sel.threshold) & cand
        if d.stage == 0:
            assert torch.equal(d.keep[:, 1:] > 0.5, rule[:, 1:])


def test_batched_inference_with_different_counts_matches_one_image_at_a_time_and_the_mask_path():
    model = _model().eval()
    x = torch.randn(5, 1, 28, 28) * torch.linspace(0.5, 3, 5)[:, None, None, None]
    with torch.no_grad():
        batched = model.forward_state(x)
        logits = model.forward_head(batched.x)
        for i in range(5):
            one = model.forward_state(x[i:i + 1])
            assert one.x.shape[1] == int(batched.attn_tokens[-1][i])
            torch.testing.assert_close(model.forward_head(one.x), logits[i:i + 1], rtol=1e-4, atol=1e-5)
        masked = model.forward_head(model.forward_state(x, path="mask").x)
    torch.testing.assert_close(masked, logits, rtol=1e-4, atol=1e-5)


def test_training_is_hard_forward_and_gradients_reach_every_threshold():
    model = _model().train()
    crit = get_method("asvit").build_criterion(0.6, 3)
    loss, parts = crit(model, create_model(MODEL).eval(), torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))
    loss.backward()
    for name, sel in model.selectors.items():
        g = sel.log_threshold.grad
        assert g is not None and g != 0, f"no gradient at stage {name}"
    state = model.forward_state(torch.randn(4, 1, 28, 28))
    for d in state.decisions:  # straight-through: the forward values are hard 0/1
        vals = d.keep.detach()
        assert torch.all((vals - vals.round()).abs() < 1e-6)


def test_budget_loss_decreases_on_a_short_run():
    torch.manual_seed(0)
    model = _model(keep_ratio=0.9)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    calibrate_thresholds(model, x)  # thresholds for 0.9 of the dense FLOPs, then train for 0.5
    start = [float(s.log_threshold.detach()) for s in model.selectors.values()]
    crit = ASViTLoss(0.5, 3)
    opt = torch.optim.Adam([p for n, p in model.train().named_parameters() if n.startswith("selectors.")], lr=0.1)
    hist = []
    for _ in range(20):
        loss, parts = crit(model, None, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append(parts["budget"])
    assert hist[0] > 0.3  # far from the budget at the start
    assert np.mean(hist[-3:]) < 0.3 * hist[0]
    assert all(float(s.log_threshold.detach()) > t for s, t in zip(model.selectors.values(), start, strict=True))


def test_calibration_starts_the_thresholds_near_the_budget():
    model = _model(threshold=1e-3, keep_ratio=0.5).eval()
    x = torch.randn(32, 1, 28, 28)
    thresholds = calibrate_thresholds(model, x)
    assert all(bool(s.calibrated) for s in model.selectors.values())
    assert thresholds == [float(s.threshold.detach()) for s in model.selectors.values()]
    assert count_flops(model, x).macs / model.budget.dense == pytest.approx(0.5, abs=0.06)
    loss_first = get_method("asvit").build_criterion(0.5, 3)
    fresh = _model(threshold=1e-3, keep_ratio=0.5).train()
    for sel in fresh.selectors.values():
        sel.calibrated.fill_(False)
    _, parts = loss_first(fresh, None, x, torch.zeros(32, dtype=torch.long))  # calibrates on its first batch
    assert parts["budget"] < 0.1


def test_flops_counter_agrees_with_a_hand_count_per_image():
    model = _model(1e-6, img_size=8, embed_dim=16, num_heads=2, depth=3, prune_locs=(1,)).eval()
    x = torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        scores = model.forward_state(x).decisions[0].scores[:, 1:]
        model.selectors["1"].log_threshold.fill_(math.log(float(scores.median()) * 4))  # split the batch
        state = model.forward_state(x)
    n1 = state.attn_tokens[1]
    n1 = n1.tolist() if isinstance(n1, torch.Tensor) else [n1] * len(x)
    assert len(set(n1)) > 1

    def block(n):
        return n * 16 * 48 + 2 * n * n * 16 + n * 16 * 16 + 2 * n * 16 * 32

    scoring = 5 * 16 + 5 * 2  # head norms (a multiply-accumulate per output value) and the weighted sum
    hand = [4 * 16 * 16 + block(5) + 2 * block(n) + 16 * 10 + scoring for n in n1]
    assert count_flops(model, x).macs == pytest.approx(float(np.mean(hand)), rel=1e-12)
    # the static count is the worst case: nothing pruned
    assert count_flops(model).macs == 4 * 16 * 16 + 3 * block(5) + 16 * 10 + scoring


@pytest.mark.parametrize("kwargs,exc,msg", [
    ({"temperature": 0.0}, ValueError, r"^temperature must be positive, not 0\.0$"),
    ({"threshold": -1}, ValueError, r"^threshold must be positive, not -1$"),
    ({"keep_ratio": 0.0}, ValueError, r"^keep ratio must be in \(0, 1\], not 0\.0$"),
    ({"head_importance": "head"}, ValueError, r"^head_importance must be 'token' or 'image', not 'head'$"),
    ({"head_importance": None}, TypeError, r"^head_importance must be a string, not None$"),
])
def test_errors(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        ASViTSelector(**{"num_patches": 49, "num_heads": 4, "keep_ratio": 0.5, **kwargs})
