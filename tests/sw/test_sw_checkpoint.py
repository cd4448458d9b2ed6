"""Checkpoints: round trip, timm/DeiT layouts, and the one-sentence errors for checkpoints that do not fit."""

import re

import pytest
import torch

from tokensift.errors import CheckpointError, TokensiftError
from tokensift.sw import create_model
from tokensift.sw.checkpoint import load_checkpoint, save_checkpoint


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_ours(tmp_path):
    model = create_model("vit_mnist_patch4_28", method="dynamicvit", keep_ratio=0.8)
    path = save_checkpoint(tmp_path / "m.pth", model, epoch=3)
    other = create_model("vit_mnist_patch4_28", method="dynamicvit", keep_ratio=0.8)
    assert not _same(model, other)
    meta = load_checkpoint(other, path)
    assert _same(model, other)
    assert meta == {"epoch": 3, "model": "vit_mnist_patch4_28", "method": "dynamicvit", "keep_ratio": 0.8}
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), other.eval()(x))


@pytest.mark.parametrize("wrap", [False, True])
def test_timm_layouts_load_without_key_mapping(tmp_path, wrap):
    """A timm state dict (plain, or DeiT's {"model": ...}) loads into our model as is."""
    src = create_model("deit_tiny_patch16_224")
    sd = src.state_dict()  # keys are timm's (test_sw_vit checks the names)
    torch.save({"model": sd, "epoch": 299} if wrap else sd, tmp_path / "deit.pth")
    dst = create_model("deit_tiny_patch16_224")
    load_checkpoint(dst, tmp_path / "deit.pth")
    assert _same(src, dst)


def test_missing_keys_are_named(tmp_path):
    sd = create_model("vit_mnist_patch4_28").state_dict()
    for k in ["blocks.5.mlp.fc2.bias", "norm.weight", "norm.bias", "head.weight", "head.bias"]:
        del sd[k]
    torch.save(sd, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match=re.escape(
            "checkpoint does not fit vit_mnist_patch4_28: missing keys blocks.5.mlp.fc2.bias, norm.weight, "
            "norm.bias and 2 more") + "$"):
        load_checkpoint(create_model("vit_mnist_patch4_28"), tmp_path / "c.pth")


def test_wrong_model_is_a_shape_error():
    sd = create_model("deit_tiny_patch16_224").state_dict()
    with pytest.raises(CheckpointError, match=r"^checkpoint does not fit deit_small_patch16_224: wrong shapes "
                                              r"for cls_token \(1, 1, 192\) vs \(1, 1, 384\), pos_embed "):
        load_checkpoint(create_model("deit_small_patch16_224"), {"model": sd})


def test_strict_false_only_for_method_extras():
    dense = create_model("vit_mnist_patch4_28")
    sd = dict(dense.state_dict())
    sd["dist_token"] = torch.zeros(1, 1, 64)  # a distilled DeiT's extra token
    pruned = create_model("vit_mnist_patch4_28", method="dynamicvit")
    with pytest.raises(CheckpointError, match=r"^checkpoint does not fit vit_mnist_patch4_28: missing keys "
                                              r"selectors\.1\.predictor\.in_conv\.0\.weight, "):
        load_checkpoint(pruned, {"model": sd})
    with pytest.raises(CheckpointError, match=r"^checkpoint does not fit vit_mnist_patch4_28: unexpected keys "
                                              r"dist_token \(use strict=False to ignore them\)$"):
        load_checkpoint(create_model("vit_mnist_patch4_28"), {"model": sd})
    load_checkpoint(pruned, {"model": sd}, strict=False)  # dense weights into a DynamicViT model
    assert torch.equal(pruned.blocks[0].attn.qkv.weight, dense.blocks[0].attn.qkv.weight)
    del sd["head.weight"]
    with pytest.raises(CheckpointError, match=r"^checkpoint does not fit vit_mnist_patch4_28: missing keys "
                                              r"head\.weight$"):
        load_checkpoint(pruned, {"model": sd}, strict=False)  # backbone keys are never optional


def test_file_errors(tmp_path):
    with pytest.raises(CheckpointError, match=r"^checkpoint file '.*nope\.pth' does not exist$"):
        load_checkpoint(create_model("vit_mnist_patch4_28"), tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"^checkpoint file '.*junk\.pth' could not be read "
                                              r"\(UnpicklingError\)$"):
        load_checkpoint(create_model("vit_mnist_patch4_28"), tmp_path / "junk.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=r"^checkpoint file '.*list\.pth' holds a list, not a state dict$"):
        load_checkpoint(create_model("vit_mnist_patch4_28"), tmp_path / "list.pth")
    assert issubclass(CheckpointError, TokensiftError) and issubclass(CheckpointError, ValueError)
