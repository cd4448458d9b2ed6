"""Registry: every registered model with every method, and the errors of create_model."""

import pytest
import torch

from tokensift.errors import TokensiftError, UnknownMethodError, UnknownModelError
from tokensift.sw import create_model, list_models
from tokensift.sw.methods import list_methods


def test_registered_models_and_methods():
    assert {"deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224",
            "vit_mnist_patch4_28"} <= set(list_models())
    assert {"none", "dynamicvit", "evit"} <= set(list_methods())


@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "vit_mnist_patch4_28"])
@pytest.mark.parametrize("method", ["none", "dynamicvit", "evit"])
def test_every_model_runs_with_every_method(name, method):
    model = create_model(name, method=method, num_classes=5).eval()
    cfg = model.config
    x = torch.randn(1, cfg.in_chans, cfg.img_size, cfg.img_size)
    with torch.no_grad():
        assert model(x).shape == (1, 5)
    assert [b for b, _ in model.stage_selectors()] == ([] if method == "none" else list(cfg.prune_locs))
    assert model.keep_ratio == (1.0 if method == "none" else 0.7)


def test_deit_sizes():
    for name, dim, heads in [("deit_tiny_patch16_224", 192, 3), ("deit_small_patch16_224", 384, 6),
                             ("deit_base_patch16_224", 768, 12)]:
        cfg = create_model(name).config
        assert (cfg.embed_dim, cfg.num_heads, cfg.depth, cfg.num_patches, cfg.prune_locs) == (
            dim, heads, 12, 196, (3, 6, 9))


def test_prune_locs_override():
    model = create_model("vit_mnist_patch4_28", method="dynamicvit", prune_locs=[2, 4])
    assert [b for b, _ in model.stage_selectors()] == [2, 4]


@pytest.mark.parametrize("call,exc,msg", [
    (dict(name="vit_huge"), UnknownModelError, r"^unknown model 'vit_huge'; choose one of deit_base_patch16_224, "),
    (dict(method="magic"), UnknownMethodError, r"^unknown method 'magic'; choose one of .*dynamicvit, evit"),
    (dict(method="dynamicvit", keep_ratio=1.5), ValueError, r"^keep ratio must be in \(0, 1\], not 1\.5$"),
    (dict(method="none", keep_ratio=0.5), ValueError,
     r"^the dense model \(method 'none'\) keeps every token; keep ratio must be 1, not 0\.5$"),
    (dict(method="evit", prune_locs=(0, 3)), ValueError,
     r"^pruning locations must be block indices in \[1, 5\], not \[0, 3\]$"),
    (dict(method="evit", prune_locs=(3, 3)), ValueError, r"^pruning locations must be distinct, not \[3, 3\]$"),
    (dict(colour="red"), TypeError, r"^create_model\(\) got an unexpected keyword argument 'colour'$"),
])
def test_create_model_errors(call, exc, msg):
    kwargs = {"name": "vit_mnist_patch4_28", **call}
    with pytest.raises(exc, match=msg):
        create_model(kwargs.pop("name"), **kwargs)
    if exc in (UnknownModelError, UnknownMethodError):
        assert issubclass(exc, TokensiftError) and issubclass(exc, ValueError)
