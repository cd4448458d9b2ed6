"""Backbone: timm key names, timm numerics (checked against an independent functional forward), shapes."""

import re

import pytest
import torch
import torch.nn.functional as F

from tokensift.sw import create_model
from tokensift.sw.vit import Attention, PatchEmbed, VisionTransformer

TIMM_BLOCK_KEYS = [
    "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
    "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
]


def timm_state_dict(depth, dim, heads, hidden, patch, chans, img, classes, seed=0):
    """A random state dict laid out exactly as timm's VisionTransformer saves it."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.1):
        return torch.randn(*shape, generator=g) * scale

    n = (img // patch) ** 2
    sd = {"cls_token": r(1, 1, dim), "pos_embed": r(1, n + 1, dim),
          "patch_embed.proj.weight": r(dim, chans, patch, patch), "patch_embed.proj.bias": r(dim)}
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update({p + "norm1.weight": 1 + r(dim), p + "norm1.bias": r(dim),
                   p + "attn.qkv.weight": r(3 * dim, dim), p + "attn.qkv.bias": r(3 * dim),
                   p + "attn.proj.weight": r(dim, dim), p + "attn.proj.bias": r(dim),
                   p + "norm2.weight": 1 + r(dim), p + "norm2.bias": r(dim),
                   p + "mlp.fc1.weight": r(hidden, dim), p + "mlp.fc1.bias": r(hidden),
                   p + "mlp.fc2.weight": r(dim, hidden), p + "mlp.fc2.bias": r(dim)})
    sd.update({"norm.weight": 1 + r(dim), "norm.bias": r(dim), "head.weight": r(classes, dim),
               "head.bias": r(classes)})
    return sd


def reference_forward(sd, x, depth, heads, patch):
    """timm's VisionTransformer.forward written out functionally (explicit softmax attention)."""
    dim = sd["cls_token"].shape[-1]
    hd = dim // heads
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    t = t.flatten(2).transpose(1, 2)
    t = torch.cat([sd["cls_token"].expand(len(x), -1, -1), t], 1) + sd["pos_embed"]
    B, N, _ = t.shape
    for i in range(depth):
        p = f"blocks.{i}."
        h = F.layer_norm(t, (dim,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(h, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(B, N, 3, heads, hd).permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-2, -1)) / hd**0.5).softmax(-1)
        o = (a @ v).transpose(1, 2).reshape(B, N, dim)
        t = t + F.linear(o, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.layer_norm(t, (dim,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        h = F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]), approximate="none")
        t = t + F.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    t = F.layer_norm(t, (dim,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)
    return F.linear(t[:, 0], sd["head.weight"], sd["head.bias"])


def test_state_dict_keys_are_timms():
    model = create_model("deit_tiny_patch16_224")
    keys = list(model.state_dict())
    expected = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    expected += [f"blocks.{i}.{k}" for i in range(12) for k in TIMM_BLOCK_KEYS]
    expected += ["norm.weight", "norm.bias", "head.weight", "head.bias"]
    assert sorted(keys) == sorted(expected)
    sd = model.state_dict()
    assert sd["blocks.0.attn.qkv.weight"].shape == (3 * 192, 192)
    assert sd["pos_embed"].shape == (1, 197, 192)


@pytest.mark.parametrize("depth,dim,heads,patch,chans,img", [(2, 48, 3, 4, 1, 28), (1, 64, 4, 16, 3, 64)])
def test_logits_match_functional_timm_forward(depth, dim, heads, patch, chans, img):
    sd = timm_state_dict(depth, dim, heads, 4 * dim, patch, chans, img, classes=7)
    model = VisionTransformer(img_size=img, patch_size=patch, in_chans=chans, num_classes=7, embed_dim=dim,
                              depth=depth, num_heads=heads).eval()
    model.load_state_dict(sd, strict=True)
    x = torch.randn(3, chans, img, img)
    with torch.no_grad():
        ours, ref = model(x), reference_forward(sd, x, depth, heads, patch)
    assert ours.shape == (3, 7)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert not torch.equal(ours[0], ours[1])  # a real signal, not a constant


def test_qkv_layout_is_three_heads_headdim():
    """Permuting the v rows of qkv must change the output only through v (layout (3, heads, head_dim))."""
    attn = Attention(8, num_heads=2).eval()
    x = torch.randn(1, 5, 8)
    with torch.no_grad():
        base, _ = attn(x)
        attn.qkv.weight[16:24] = 0  # zero v for both heads
        attn.qkv.bias[16:24] = 0
        zero_v, _ = attn(x)
    torch.testing.assert_close(zero_v, attn.proj.bias.expand(1, 5, 8))
    assert not torch.allclose(base, zero_v)


def test_forward_features_and_head_split():
    model = create_model("vit_mnist_patch4_28").eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 50, 64)
        torch.testing.assert_close(model.forward_head(feats), model(x))
        assert model.forward_head(feats, pre_logits=True).shape == (2, 64)


def test_patch_embed_equals_strided_convolution():
    pe = PatchEmbed(32, 8, 3, 16)
    x = torch.randn(2, 3, 32, 32)
    ref = pe.proj(x).flatten(2).transpose(1, 2)
    torch.testing.assert_close(pe(x), ref, rtol=1e-5, atol=1e-5)


def test_wrong_input_shape_is_one_clear_error():
    model = create_model("vit_mnist_patch4_28")
    with pytest.raises(ValueError, match=re.escape(
            "input images must have shape (batch, 1, 28, 28), not (2, 3, 28, 28)") + "$"):
        model(torch.zeros(2, 3, 28, 28))


@pytest.mark.parametrize("kwargs,exc,msg", [
    (dict(embed_dim=10, num_heads=3), ValueError, r"^dim 10 must be divisible by num_heads 3$"),
    (dict(img_size=30, patch_size=4), ValueError, r"^img_size 30 must be a multiple of patch_size 4$"),
    (dict(depth=0), ValueError, r"^depth must be a positive integer, not 0$"),
    (dict(depth=2.0), TypeError, r"^depth must be an integer, not 2\.0$"),
])
def test_invalid_architecture(kwargs, exc, msg):
    base = dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=12, depth=1, num_heads=3)
    with pytest.raises(exc, match=msg):
        VisionTransformer(**{**base, **kwargs})
