"""LV-ViT-S: DynamicViT's released state-dict keys load with no mapping, the forward matches a functional
reference written from the release (``models/dylvvit.py``: ``PatchEmbed4_2``, ``Block`` with ``skip_lam``,
``LVViTDiffPruning.forward``), and every registered method runs on it."""

import pytest
import torch
import torch.nn.functional as F

from tokensift.errors import CheckpointError
from tokensift.sw import create_model
from tokensift.sw.checkpoint import load_checkpoint
from tokensift.sw.methods import get_method, list_methods
from tokensift.sw.vit import ConvStemPatchEmbed

STEM = [("conv1.weight", (64, 3, 7, 7)), ("conv2.weight", (64, 64, 3, 3)), ("conv3.weight", (64, 64, 3, 3))]
BN = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]


def release_state_dict(img=224, dim=384, depth=16, hidden=1152, classes=1000, predictors=0, seed=0):
    """A random state dict with exactly the keys and shapes of DynamicViT's LVViTDiffPruning (lvvit_s with
    p_emb='4_2', return_dense=True; ``score_predictor.{s}`` when it prunes)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.05):
        return torch.randn(*shape, generator=g) * scale

    n = (img // 16) ** 2
    sd = {f"patch_embed.{k}": r(*shape, scale=0.2) for k, shape in STEM}
    for i in (1, 2, 3):
        sd.update({f"patch_embed.bn{i}.weight": 1 + r(64), f"patch_embed.bn{i}.bias": r(64),
                   f"patch_embed.bn{i}.running_mean": r(64), f"patch_embed.bn{i}.running_var": 1 + r(64).abs(),
                   f"patch_embed.bn{i}.num_batches_tracked": torch.tensor(7)})
    sd.update({"patch_embed.proj.weight": r(dim, 64, 8, 8), "patch_embed.proj.bias": r(dim),
               "cls_token": r(1, 1, dim), "pos_embed": r(1, n + 1, dim)})
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update({p + "norm1.weight": 1 + r(dim), p + "norm1.bias": r(dim),
                   p + "attn.qkv.weight": r(3 * dim, dim),  # LV-ViT: no qkv bias
                   p + "attn.proj.weight": r(dim, dim), p + "attn.proj.bias": r(dim),
                   p + "norm2.weight": 1 + r(dim), p + "norm2.bias": r(dim),
                   p + "mlp.fc1.weight": r(hidden, dim), p + "mlp.fc1.bias": r(hidden),
                   p + "mlp.fc2.weight": r(dim, hidden), p + "mlp.fc2.bias": r(dim)})
    sd.update({"norm.weight": 1 + r(dim), "norm.bias": r(dim), "head.weight": r(classes, dim),
               "head.bias": r(classes), "aux_head.weight": r(classes, dim), "aux_head.bias": r(classes)})
    for s in range(predictors):
        p = f"score_predictor.{s}."
        sd.update({p + "in_conv.0.weight": 1 + r(dim), p + "in_conv.0.bias": r(dim),
                   p + "in_conv.1.weight": r(dim, dim), p + "in_conv.1.bias": r(dim),
                   p + "out_conv.0.weight": r(dim // 2, dim), p + "out_conv.0.bias": r(dim // 2),
                   p + "out_conv.2.weight": r(dim // 4, dim // 2), p + "out_conv.2.bias": r(dim // 4),
                   p + "out_conv.4.weight": r(2, dim // 4), p + "out_conv.4.bias": r(2)})
    return sd


def release_forward(sd, x, depth, heads):
    """The release's dense inference, written out: stem, blocks with both residuals divided by skip_lam = 2,
    LayerNorm eps 1e-5, head(class token) + 0.5 x max over tokens of aux_head."""
    def bn(y, i):
        p = f"patch_embed.bn{i}."
        return F.batch_norm(y, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"], sd[p + "bias"],
                            training=False, eps=1e-5)

    y = F.relu(bn(F.conv2d(x, sd["patch_embed.conv1.weight"], stride=2, padding=3), 1))
    y = F.relu(bn(F.conv2d(y, sd["patch_embed.conv2.weight"], padding=1), 2))
    y = F.relu(bn(F.conv2d(y, sd["patch_embed.conv3.weight"], padding=1), 3))
    y = F.conv2d(y, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=8)
    t = y.flatten(2).transpose(1, 2)
    B, _, C = t.shape
    t = torch.cat([sd["cls_token"].expand(B, -1, -1), t], dim=1) + sd["pos_embed"]

    def ln(v, p):
        return F.layer_norm(v, (C,), sd[p + ".weight"], sd[p + ".bias"], eps=1e-5)

    for i in range(depth):
        p = f"blocks.{i}."
        N = t.shape[1]
        qkv = F.linear(ln(t, p + "norm1"), sd[p + "attn.qkv.weight"])
        q, k, v = qkv.reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
        attn = ((q * (C // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        a = F.linear((attn @ v).transpose(1, 2).reshape(B, N, C), sd[p + "attn.proj.weight"],
                     sd[p + "attn.proj.bias"])
        t = t + a / 2
        h = F.gelu(F.linear(ln(t, p + "norm2"), sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
        t = t + F.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"]) / 2
    t = ln(t, "norm")
    x_cls = F.linear(t[:, 0], sd["head.weight"], sd["head.bias"])
    x_aux = F.linear(t[:, 1:], sd["aux_head.weight"], sd["aux_head.bias"])
    return x_cls + 0.5 * x_aux.max(1)[0]


def test_release_keys_load_with_no_mapping_and_forward_matches():
    """Full-size LV-ViT-S: the release's key set and shapes exactly; one 224 x 224 forward against the
    reference."""
    model = create_model("lvvit_s").eval()
    sd = release_state_dict()
    assert set(sd) == set(model.state_dict())
    assert all(model.state_dict()[k].shape == v.shape for k, v in sd.items())
    load_checkpoint(model, {"model": sd})
    assert sum(p.numel() for p in model.parameters()) == 26151824  # 26.2M, the papers' LV-ViT-S row
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, ref = model(x), release_forward(sd, x, depth=16, heads=6)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_dynamicvit_release_checkpoint_loads_and_prunes_at_4_8_12():
    """DynamicViT-LV-S: ``score_predictor.{0,1,2}`` load into the predictors before blocks 4, 8, 12."""
    model = create_model("lvvit_s", method="dynamicvit", keep_ratio=0.7, img_size=64, depth=14).eval()
    sd = release_state_dict(img=64, depth=14, predictors=3)
    load_checkpoint(model, sd)  # a plain state dict, strict
    assert [b for b, _ in model.stage_selectors()] == [4, 8, 12]
    for s, (_, sel) in enumerate(model.stage_selectors()):
        torch.testing.assert_close(sel.predictor.out_conv[4].weight, sd[f"score_predictor.{s}.out_conv.4.weight"])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        state = model.forward_state(x)
    assert state.attn_tokens == [17] * 4 + [12] * 4 + [8] * 4 + [6] * 2  # 1 + int(16 * 0.7^s)
    wrong = dict(sd)
    wrong["score_predictor.0.in_conv.1.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match=r"^checkpoint does not fit lvvit_s: wrong shapes for "
                                              r"selectors\.4\.predictor\.in_conv\.1\.weight \(3, 3\) vs \(384, 384\)"):
        load_checkpoint(model, wrong)


@pytest.mark.parametrize("method", list_methods())
def test_every_method_runs_on_lvvit(method):
    """Each registered method builds on lvvit_s (at 64 x 64: 16 patches), trains one step on the mask path
    and infers on the gather path; its FLOPs are counted on those images."""
    from tokensift.sw.flops import count_flops

    torch.manual_seed(0)
    kw = {} if method == "none" else {"keep_ratio": 0.7}
    model = create_model("lvvit_s", method=method, img_size=64, num_classes=10, **kw)
    spec = get_method(method)
    x, y = torch.randn(4, 3, 64, 64), torch.randint(0, 10, (4,))
    loss, _ = spec.build_criterion(model.keep_ratio, len(model.stage_selectors()))(model.train(), None, x, y)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.patch_embed.conv1.weight.grad is not None
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    dense = count_flops(create_model("lvvit_s", img_size=64, num_classes=10)).macs
    if method == "spvit":
        # the released rule (keep when p(keep) > p(drop)) keeps about every token of an untrained predictor
        # and adds a package token per stage, so only its planned top-k form is bounded by the dense count
        assert count_flops(model, x).macs > 0
        from tokensift.sw.methods.spvit import set_decision

        set_decision(model, "topk")
    report = count_flops(model, x)
    assert 0 < report.macs <= dense * 1.05


def test_aux_head_ignores_tokens_marked_dropped():
    model = create_model("lvvit_s", img_size=32, num_classes=5, depth=1, prune_locs=()).eval()
    x = torch.randn(2, 5, 384)
    keep = torch.ones(2, 5)
    keep[:, 3:] = 0
    torch.testing.assert_close(model.forward_head(x, keep=keep), model.forward_head(x[:, :3]))


@pytest.mark.parametrize("kwargs, exc, msg", [
    ({"embed_layer": "conv3"}, ValueError, r"^embed_layer must be one of 'patch', 'conv4', not 'conv3'$"),
    ({"residual_scale": 0.0}, ValueError, r"^residual_scale must be positive and finite, not 0\.0$"),
    ({"norm_eps": "1e-5"}, TypeError, r"^norm_eps must be a number, not '1e-5'$"),
    ({"aux_head": 1}, TypeError, r"^aux_head must be True or False, not 1$"),
    ({"patch_size": 15, "img_size": 30}, ValueError,
     r"^the convolutional stem needs an even patch_size that divides img_size, not patch_size 15 and "
     r"img_size 30$"),
])
def test_lvvit_option_errors(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        create_model("lvvit_s", **kwargs)


def test_integer_model_refuses_lvvit():
    from tokensift.quant.integer_model import IntegerViT

    model = create_model("lvvit_s", img_size=32, num_classes=5, depth=1, prune_locs=())
    with pytest.raises(ValueError, match=r"^the integer model runs ViT/DeiT backbones \(one-convolution patch "
                                         r"embedding, plain residuals, one head\), not LV-ViT's stem, residual "
                                         r"scale or auxiliary head$"):
        IntegerViT.from_float(model, [])


def test_stem_macs_by_hand():
    stem = ConvStemPatchEmbed(224, 16, 3, 384)
    assert stem.macs() == 112 * 112 * (3 * 64 * 49 + 2 * 64 * 64 * 9) + 196 * 64 * 8 * 8 * 384
    with pytest.raises(ValueError, match=r"^input images must have shape \(batch, 3, 224, 224\), not "
                                         r"\(1, 3, 32, 32\)$"):
        stem(torch.zeros(1, 3, 32, 32))
