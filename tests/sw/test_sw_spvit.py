"""SPViT: multi-head selector, package token (vs the integer reference), decision rules, budget planning,
both paths. Agreement with the released code: test_sw_release_agreement.py."""

import math

import numpy as np
import pytest
import torch
from path_agreement import assert_mask_and_gather_agree

from tokensift.quant.select import package_token as int_package_token
from tokensift.sw import create_model
from tokensift.sw.budget import FlopsBudget
from tokensift.sw.losses_budget import stage_token_counts
from tokensift.sw.methods import get_method
from tokensift.sw.methods.spvit import (
    MultiHeadPredictor,
    SPViTSelector,
    package_tokens,
    plan_keep_ratio,
    set_decision,
    static_stage_counts,
)

MODEL = "vit_mnist_patch4_28"


def _capture(model):
    """Record (input state, output state) of every selector call."""
    calls = []
    for _, sel in model.stage_selectors():
        sel.register_forward_hook(lambda m, args, out: calls.append((args[0], out)))
    return calls


def _decisive(sel) -> None:
    """Predictor weights of gain 3 and no bias: decisions that depend on each token (not all keep)."""
    for lin in (m for m in sel.predictor.heads.modules() if isinstance(m, torch.nn.Linear)):
        lin.weight.normal_(0.0, 3.0 / lin.in_features ** 0.5)
        lin.bias.zero_()


@pytest.mark.parametrize("package", ["sum", "mean"])
@pytest.mark.parametrize("path", ["gather", "mask"])
def test_class_token_kept_and_package_token_fuses_the_newly_pruned_by_keep_probability(path, package):
    model = create_model(MODEL, method="spvit", keep_ratio=0.6).eval()
    set_decision(model, "topk")  # every stage prunes at this budget
    for _, sel in model.stage_selectors():
        sel.package = package
    calls = _capture(model)
    with torch.no_grad():
        state = model.forward_state(torch.randn(3, 1, 28, 28), path=path)
    assert (state.index[:, 0] == 0).all()
    assert len(calls) == 3
    for stage, ((_, sel), (s_in, s_out)) in enumerate(zip(model.stage_selectors(), calls, strict=True)):
        d = state.decisions[stage]
        assert (d.keep[:, 0] == 1).all() and (d.keep[:, 1:s_in.num_protected] == 1).all()
        P = s_in.num_protected
        assert P == 1 + stage and s_out.num_protected == P + 1
        assert (s_out.index[:, P] == -1).all()  # the new package token sits right after the protected ones
        policy = (torch.ones(3, s_in.x.shape[1]) if s_in.keep is None else s_in.keep)[:, 1:, None]
        with torch.no_grad():  # the predictor sees every token but the class token (earlier packages too)
            logp, prob, _ = sel.predictor(s_in.x[:, 1:], policy)
        torch.testing.assert_close(d.scores[:, 1:], logp[..., 0] - logp[..., 1])
        for b in range(3):
            cand = [i for i in range(s_in.x.shape[1]) if i >= P and (s_in.keep is None or s_in.keep[b, i] > 0.5)]
            pruned = [i for i in cand if d.keep[b, i] <= 0.5]
            assert pruned, "every stage prunes at this budget"
            w = prob[b, [i - 1 for i in pruned], 0].double()
            expected = (w[:, None] * s_in.x[b, pruned].double()).sum(0)
            if package == "mean":
                expected = expected / w.sum()
            torch.testing.assert_close(s_out.x[b, P].double(), expected, rtol=1e-5, atol=1e-5)
            if path == "gather":  # the pruned tokens are gone, the kept ones stay in order
                kept = [int(s_in.index[b, i]) for i in cand if d.keep[b, i] > 0.5]
                assert s_out.index[b, P + 1:].tolist() == kept


def test_normalised_package_formula_equals_the_integer_reference_on_integer_inputs():
    rng = np.random.default_rng(3)
    for _ in range(50):
        n, c = int(rng.integers(2, 12)), int(rng.integers(1, 6))
        x = rng.integers(-128, 128, size=(n, c))
        s = rng.integers(0, 1 << 16, size=n)
        pruned = rng.random(n) < 0.5
        pruned[0] = False
        ref = int_package_token(x, s, pruned)
        got, total = package_tokens(torch.tensor(x[None], dtype=torch.float64),
                                    torch.tensor(s[None], dtype=torch.float64),
                                    torch.tensor(pruned[None], dtype=torch.float64), normalise=True)
        assert float(total) == float((s * pruned).sum())
        rounded = torch.floor(got[0, 0] + 0.5).to(torch.int64).numpy()  # round half up, as the hardware
        assert rounded.tolist() == ref.tolist()


def test_a_stage_that_prunes_nothing_still_appends_a_zero_package_token():
    for normalise in (False, True):
        pkg, total = package_tokens(torch.ones(1, 3, 2), torch.ones(1, 3), torch.zeros(1, 3), normalise=normalise)
        assert torch.equal(pkg, torch.zeros(1, 1, 2)) and float(total) == 0
    model = create_model(MODEL, method="spvit", keep_ratio=0.6).eval()
    with torch.no_grad():  # every predictor keeps every token
        for sel in model.selectors.values():
            for head in sel.predictor.heads:
                head.out_conv[4].bias.copy_(torch.tensor([20.0, -20.0]))
    calls = _capture(model)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        state = model.forward_state(x)
    assert state.x.shape[1] == 1 + 3 + 49 and (state.index[:, 1:4] == -1).all()  # as the release
    for s_in, s_out in calls:
        assert not s_out.x[:, s_in.num_protected].any()
    set_decision(model, "topk")
    model.set_keep_ratio(1.0)  # a schedule that prunes nothing: no package tokens (as the hardware)
    with torch.no_grad():
        state = model.forward_state(x)
    assert state.x.shape[1] == 50 and (state.index >= 0).all()


def test_threshold_decisions_keep_when_keep_is_likelier_than_drop_and_adapt_per_image():
    torch.manual_seed(0)
    model = create_model(MODEL, method="spvit", keep_ratio=0.6).eval()
    sel = model.selectors["1"]
    assert sel.decision == "threshold" and sel.adaptive
    with torch.no_grad():
        _decisive(sel)
        state = model.forward_state(torch.randn(8, 1, 28, 28))
    d = state.decisions[0]
    assert torch.equal(d.keep[:, 1:] > 0.5, d.scores[:, 1:] > 0)
    counts = (d.keep[:, 1:] > 0.5).sum(dim=1)
    assert len(set(counts.tolist())) > 1
    set_decision(model, "topk")
    assert not sel.adaptive
    with torch.no_grad():
        counts = (model.forward_state(torch.randn(8, 1, 28, 28)).decisions[0].keep[:, 1:] > 0.5).sum(dim=1)
    assert (counts == sel.kept_patches()).all()


def test_heads_have_independent_predictors_and_per_token_head_weights():
    pred = MultiHeadPredictor(64, 4)
    params = [dict(h.named_parameters()) for h in pred.heads]
    assert len({id(p["in_conv.1.weight"]) for p in params}) == 4
    assert not torch.equal(params[0]["in_conv.1.weight"], params[1]["in_conv.1.weight"])
    x = torch.randn(2, 10, 64)
    policy = torch.ones(2, 10, 1)
    logp, prob, weights = pred(x, policy)
    assert logp.shape == prob.shape == (2, 10, 2) and weights.shape == (2, 10, 4)
    assert ((weights > 0) & (weights < 1)).all() and not torch.allclose(weights[:, 0], weights[:, 1])
    torch.testing.assert_close(weights, pred.se(x.reshape(2, 10, 4, 16).mean(dim=-1)))
    per_head = torch.stack([h(x[..., 16 * i:16 * (i + 1)], policy) for i, h in enumerate(pred.heads)], dim=2)
    w = weights[..., None]
    torch.testing.assert_close(logp, (w * per_head).sum(2) / w.sum(2))  # weighted mean of log-probabilities
    torch.testing.assert_close(prob, (w * per_head.exp()).sum(2) / w.sum(2))
    (logp[..., 0] - logp[..., 1]).sum().backward()
    assert all(h.in_conv[1].weight.grad.abs().sum() > 0 for h in pred.heads)


@pytest.mark.parametrize("decision", ["threshold", "topk"])
def test_mask_and_gather_paths_agree(decision):
    torch.manual_seed(1)
    model = create_model(MODEL, method="spvit", keep_ratio=0.5).eval()
    set_decision(model, decision)
    with torch.no_grad():
        for sel in model.selectors.values():
            _decisive(sel)
    assert_mask_and_gather_agree(model, torch.randn(4, 1, 28, 28))


def test_keep_ratios_come_from_the_budget_and_a_latency_callable_plugs_in():
    model = create_model(MODEL, method="spvit", keep_ratio=0.6)
    budget = model.budget
    assert isinstance(budget, FlopsBudget)
    q = model.selectors["1"].keep_ratio
    counts = torch.tensor(static_stage_counts(model), dtype=torch.float64)
    assert float(budget(counts)) <= 0.6 * budget.dense
    for sel in model.selectors.values():  # the largest such schedule: a little more keeps too much
        sel.set_keep_ratio(min(1.0, q + 0.02))
    assert float(budget(torch.tensor(static_stage_counts(model), dtype=torch.float64))) > 0.6 * budget.dense
    plan_keep_ratio(model, 0.8)
    assert model.selectors["1"].keep_ratio > q  # a looser budget keeps more

    class Latency:  # a made-up hardware model: later stages are twice as expensive per token
        num_stages, dense = 3, 50.0 * (1 + 2 + 4)

        def __call__(self, counts):
            return counts @ torch.tensor([1.0, 2.0, 4.0], dtype=counts.dtype)

    q_lat = plan_keep_ratio(model, 0.6, budget=Latency())
    assert model.budget.__class__ is Latency
    lat = float(Latency()(torch.tensor(static_stage_counts(model), dtype=torch.float64)))
    assert lat <= 0.6 * Latency.dense and q_lat != q


def test_budget_and_ratio_losses_decrease_on_a_short_run():
    torch.manual_seed(0)
    model = create_model(MODEL, method="spvit", keep_ratio=0.5).train()
    with torch.no_grad():  # start far from the budget: every predictor keeps almost every token
        for sel in model.selectors.values():
            for head in sel.predictor.heads:
                head.out_conv[4].bias.copy_(torch.tensor([0.75, -0.75]))
    crit = get_method("spvit").build_criterion(0.5, 3)
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if n.startswith("selectors.")], lr=1e-2)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    hist = []
    for _ in range(25):
        loss, parts = crit(model, None, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append(parts["ratio"] + parts["budget"])
    assert np.mean(hist[-5:]) < 0.3 * np.mean(hist[:5])


def test_soft_counts_carry_gradients_to_the_selectors():
    model = create_model(MODEL, method="spvit", keep_ratio=0.6).train()
    state = model.forward_state(torch.randn(4, 1, 28, 28))
    counts = stage_token_counts(model, state)
    assert counts.shape == (4, 3) and counts.requires_grad
    model.budget(counts).sum().backward()
    assert model.selectors["1"].predictor.heads[0].out_conv[4].weight.grad.abs().sum() > 0


def test_flops_counter_agrees_with_a_hand_count():
    # 8x8 image, 4x4 patches: 4 patches + class token; width 16, 2 heads of 8, MLP 32; one stage before block 1
    model = create_model(MODEL, method="spvit", keep_ratio=0.9, img_size=8, embed_dim=16, num_heads=2,
                         depth=3, prune_locs=(1,))
    sel = model.selectors["1"]
    kept = sel.kept_patches()
    assert kept == math.floor(4 * sel.keep_ratio + 1e-6) and kept < 4
    from tokensift.sw.flops import count_flops

    def block(n):
        return n * 16 * 48 + 2 * n * n * 16 + n * 16 * 16 + 2 * n * 16 * 32

    n1 = 1 + 1 + kept  # class token, package token, kept patches
    predictor = 4 * (2 * (8 * 8 + 8 * 4 + 4 * 2 + 2 * 2) + 2 * 2 * 1)  # per scored token: heads, SE branch
    package = (4 - kept) * 16
    hand = 4 * 16 * 16 + block(5) + 2 * block(n1) + 16 * 10 + predictor + package
    assert count_flops(model).macs == hand
    set_decision(model, "topk")  # the threshold rule's counts depend on the image
    with torch.no_grad():
        assert count_flops(model, torch.randn(3, 1, 8, 8)).macs == hand


@pytest.mark.parametrize("call,exc,msg", [
    (lambda: MultiHeadPredictor(12, 4), ValueError,
     r"^SPViT needs at least 4 channels per head for its predictor, not 3$"),
    (lambda: MultiHeadPredictor(10, 4), ValueError, r"^embed_dim 10 must be divisible by num_heads 4$"),
    (lambda: create_model(MODEL, method="spvit", keep_ratio=0.05), ValueError,
     r"^a budget of 0\.05 of the dense cost is below what SPViT can reach on this model \(0\.\d{3}, "
     r"one patch token per stage\)$"),
    (lambda: plan_keep_ratio(create_model(MODEL, method="dynamicvit"), 0.5), ValueError,
     r"^plan_keep_ratio needs a model whose token selectors are all SPViT selectors$"),
    (lambda: SPViTSelector(64, 4, 49, keep_ratio=1.5), ValueError, r"^keep ratio must be in \(0, 1\], not 1\.5$"),
    (lambda: SPViTSelector(64, 4, 49, decision="gumbel"), ValueError,
     r"^decision must be one of 'threshold', 'topk', not 'gumbel'$"),
    (lambda: SPViTSelector(64, 4, 49, package=1), TypeError, r"^package must be a string, not 1$"),
    (lambda: set_decision(create_model(MODEL, method="spvit"), "all"), ValueError,
     r"^decision must be one of 'threshold', 'topk', not 'all'$"),
    (lambda: set_decision(create_model(MODEL, method="evit"), "topk"), ValueError,
     r"^set_decision needs a model whose token selectors are all SPViT selectors$"),
])
def test_errors(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()
