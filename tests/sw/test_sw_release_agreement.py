"""SPViT and AS-ViT against reference models written from their released code (reference_spvit.py,
reference_asvit.py): identical random weights, inputs and Gumbel noise give the same logits, kept token sets
and package tokens, on the training (mask) and inference paths."""

import pytest
import torch
import torch.nn.functional as F
from reference_asvit import ReferenceASViT
from reference_spvit import ReferenceSPViT

from tokensift.sw import create_model
from tokensift.sw.methods.asvit import calibrate_thresholds

MODEL = "vit_mnist_patch4_28"
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _randomise(model, seed: int) -> None:
    """Weights of unit gain (so that every predictor and attention row makes real decisions)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("log_threshold"):
                continue
            if p.dim() >= 2 and "token" not in name and "pos_embed" not in name:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            elif name.endswith("norm1.weight") or name.endswith("norm2.weight") or ".0.weight" in name and p.dim() == 1:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))


def _reference_kwargs(cfg) -> dict:
    return {"img_size": cfg.img_size, "patch_size": cfg.patch_size, "in_chans": cfg.in_chans,
            "num_classes": cfg.num_classes, "embed_dim": cfg.embed_dim, "depth": cfg.depth,
            "num_heads": cfg.num_heads, "mlp_ratio": cfg.mlp_ratio}


def _backbone_state(model, ref) -> dict:
    own = model.state_dict()
    return {k: own[k] for k in ref.state_dict() if k in own}


def _capture_packages(model) -> list:
    """The package token each SPViT stage inserts (right after the tokens that were protected before it)."""
    packages = []
    for _, sel in model.stage_selectors():
        sel.register_forward_hook(lambda m, args, out: packages.append(out.x[:, args[0].num_protected]))
    return packages


# -- SPViT ------------------------------------------------------------------------------------------------
def _spvit_pair(seed: int):
    model = create_model(MODEL, method="spvit", keep_ratio=0.6)
    _randomise(model, seed)
    cfg = model.config
    ref = ReferenceSPViT(pruning_loc=cfg.prune_locs, **_reference_kwargs(cfg))
    state = _backbone_state(model, ref)
    for s, (_, sel) in enumerate(model.stage_selectors()):
        heads = sel.predictor.heads
        with torch.no_grad():  # steeper, unbiased predictors: the decisions depend on each token
            for i in (0, 2, 4):
                heads[0].out_conv[i].weight.mul_(3.0)
            heads[0].out_conv[4].bias.zero_()
        for head in heads[1:]:  # the release's heads share one module
            head.load_state_dict(heads[0].state_dict())
        for i in (0, 2):
            for p in ("weight", "bias"):
                state[f"score_predictor.{s}.senet.{i}.{p}"] = sel.predictor.se[i].state_dict()[p]
        for h in range(cfg.num_heads):
            for k, v in heads[0].state_dict().items():
                state[f"score_predictor.{s}.{k.split('.')[0]}.{h}.{k.split('.', 1)[1]}"] = v
    ref.load_state_dict(state, strict=True)
    return model, ref


def _noise_free(pred_score):
    """The release's Gumbel-softmax decision with zero noise: keep when log p(keep) > log p(drop)."""
    return F.one_hot((pred_score[..., 1] >= pred_score[..., 0]).long(), 2).to(pred_score.dtype)


def _fixed_gumbel(noise: list):
    """``F.gumbel_softmax(logits, tau, hard=True)`` drawing its noise from ``noise`` (one tensor per call,
    (B, N, 2), cut to the call's N: both models put the patches first in the tensors they sample for)."""
    queue = list(noise)

    def gumbel_softmax(logits, tau=1.0, hard=False, eps=1e-10, dim=-1):
        y = ((logits + queue.pop(0)[:, :logits.shape[1]]) / tau).softmax(dim)
        if not hard:
            return y
        y_hard = torch.zeros_like(y).scatter_(dim, y.argmax(dim, keepdim=True), 1.0)
        return y_hard - y.detach() + y

    return gumbel_softmax


@pytest.mark.parametrize("path", ["gather", "mask"])
def test_spvit_inference_matches_the_release_without_its_noise(path):
    model, ref = _spvit_pair(seed=6)
    model.eval(), ref.eval()
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    packages = _capture_packages(model)
    with torch.no_grad():
        want, want_keep, want_pkg = ref(x, gumbel=_noise_free)
        state = model.forward_state(x, path=path)
        got = model.forward_head(state.x)
    torch.testing.assert_close(got, want, **TOL)
    counts = []
    for s, d in enumerate(state.decisions):
        for b in range(x.shape[0]):
            kept = d.index[b][(d.keep[b] > 0.5) & (d.index[b] >= 1)] - 1
            assert sorted(kept.tolist()) == torch.nonzero(want_keep[s][b]).flatten().tolist()
        counts.append(want_keep[s].sum(dim=1))
        torch.testing.assert_close(packages[s], want_pkg[s], **TOL)
    first = counts[0].tolist()  # the first stage keeps and prunes in every image, and its count adapts
    assert 0 < min(first) and max(first) < model.num_patches and len(set(first)) > 1


def test_spvit_training_path_matches_the_release_with_the_same_gumbel_noise(monkeypatch):
    model, ref = _spvit_pair(seed=6)
    model.train(), ref.train()
    B, n = 4, model.num_patches
    g = torch.Generator().manual_seed(4)
    x = torch.randn(B, 1, 28, 28, generator=g)
    noise = [-torch.empty(B, n + s, 2).exponential_(generator=g).log() for s in range(3)]
    packages = _capture_packages(model)
    mixed = 0
    sample = _fixed_gumbel(noise)
    want, want_keep, want_pkg = ref(x, gumbel=lambda pred_score: sample(pred_score, hard=True))
    monkeypatch.setattr(torch.nn.functional, "gumbel_softmax", _fixed_gumbel(noise))
    state = model.forward_state(x, path="mask")
    got = model.forward_head(state.x)
    torch.testing.assert_close(got, want, **TOL)
    for s, d in enumerate(state.decisions):
        P = d.num_protected
        torch.testing.assert_close(d.keep[:, P:], want_keep[s], **TOL)  # straight-through values
        assert torch.equal(d.keep[:, P:] > 0.5, want_keep[s] > 0.5)
        mixed += 0 < int((want_keep[s] > 0.5).sum()) < B * n
        torch.testing.assert_close(packages[s], want_pkg[s], **TOL)
    assert mixed  # a stage that keeps some tokens and prunes others
    got.sum().backward()  # the straight-through decisions reach the predictors, as in the release
    assert model.selectors["1"].predictor.heads[0].out_conv[4].weight.grad.abs().sum() > 0


# -- AS-ViT -----------------------------------------------------------------------------------------------
def _asvit_pair(seed: int, x):
    model = create_model(MODEL, method="asvit", keep_ratio=0.6, depth=12)  # DeiT's depth: stages 4, 7, 10
    assert model.config.prune_locs == (4, 7, 10)
    _randomise(model, seed)
    calibrate_thresholds(model, x)
    with torch.no_grad():  # off every score by a margin, so float rounding cannot flip a decision
        for _, sel in model.stage_selectors():
            sel.log_threshold += 1e-3
    cfg = model.config
    ref = ReferenceASViT(pruning_loc=cfg.prune_locs,
                         thresholds=[float(sel.threshold.detach()) for _, sel in model.stage_selectors()],
                         **_reference_kwargs(cfg))
    state = _backbone_state(model, ref)
    state["keep_threshold"] = ref.keep_threshold.detach()
    ref.load_state_dict(state, strict=True)
    return model, ref


def test_asvit_inference_matches_the_release_image_by_image():
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    model, ref = _asvit_pair(seed=6, x=x)
    model.eval(), ref.eval()
    with torch.no_grad():
        state = model.forward_state(x)  # one batch: each image keeps its own tokens
        got = model.forward_head(state.x)
        for b in range(x.shape[0]):
            want, want_keep = ref(x[b:b + 1])  # the release's per-image rule (batch size 1)
            torch.testing.assert_close(got[b:b + 1], want, **TOL)
            for s, d in enumerate(state.decisions):
                kept = d.index[b][(d.keep[b] > 0.5) & (d.index[b] >= 1)] - 1
                assert sorted(kept.tolist()) == want_keep[s].tolist()
        first = (state.decisions[0].keep[:, 1:] > 0.5).sum(dim=1).tolist()  # kept, pruned, adapting
        assert 0 < min(first) and max(first) < model.num_patches and len(set(first)) > 1
        # the release's batched rule keeps floor(mean) tokens in every image, and its predictions differ
        assert not torch.allclose(ref.forward_batched(x), got, **TOL)


def test_asvit_training_path_matches_the_release():
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    model, ref = _asvit_pair(seed=8, x=x)
    model.train(), ref.train()
    state = model.forward_state(x, path="mask")
    got = model.forward_head(state.x)
    want, want_keep = ref(x)
    torch.testing.assert_close(got, want, **TOL)
    for s, d in enumerate(state.decisions):
        torch.testing.assert_close(d.keep[:, 1:], want_keep[s], **TOL)  # straight-through values
        assert torch.equal(d.keep[:, 1:] > 0.5, want_keep[s] > 0.5)
    first = want_keep[0] > 0.5
    assert 0 < int(first.sum()) < first.numel()
