"""Quick trained MNIST models and the integer-vs-float decision agreement, for the integer-stage tests.

The recipe of tests/quant/test_integer_model.py: a shrunken MNIST ViT trained dense for a few seconds, then a
predictor method's model from its weights, fine-tuned briefly with the method's own loss (predictor starts fresh,
backbone frozen for the first part, as the pipeline does).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from tokensift.sw import create_model
from tokensift.sw.checkpoint import load_checkpoint
from tokensift.sw.methods import get_method
from tokensift.sw.train import TrainConfig, fit

TINY = dict(embed_dim=32, depth=3, num_heads=2, prune_locs=(1, 2), weight_init="jax", pos_embed_init="sincos")
QUICK_STEPS = 150


@functools.cache
def quick_dense():
    """The quick dense TINY model, trained once per test process (its users only read it)."""
    from tokensift.sw.data import load_mnist

    return train_dense(load_mnist()[0])


def train_dense(train, steps: int = QUICK_STEPS, **config):
    torch.manual_seed(0)
    model = create_model("vit_mnist_patch4_28", **(config or TINY))
    fit(model, get_method("none").build_criterion(1.0, 0), train,
        TrainConfig(epochs=3, batch_size=64, lr=3e-3, warmup_epochs=0.2, max_steps=steps, augment=False),
        progress=False)
    return model.eval()


def method_from(dense, method: str, keep_ratio: float, **config):
    """The method's model on the dense weights (its selector parameters freshly initialised)."""
    torch.manual_seed(0)
    model = create_model("vit_mnist_patch4_28", method=method, keep_ratio=keep_ratio, **(config or TINY))
    load_checkpoint(model, {"model": dense.state_dict()}, strict=False)
    return model


def finetune(model, dense, train, steps: int, *, lr: float = 2e-3, batch_size: int = 64):
    """A short run of the method's loss with the dense model as teacher (backbone frozen for a fifth)."""
    spec = get_method(model.method)
    criterion = spec.build_criterion(model.keep_ratio, len(model.selectors))
    fit(model, criterion, train, TrainConfig(epochs=5, batch_size=batch_size, lr=lr, warmup_epochs=0.2,
                                             max_steps=steps, augment=False, frozen_epochs=1,
                                             backbone_lr_scale=spec.backbone_lr_scale),
        teacher=dense if spec.uses_teacher else None, progress=False)
    return model.eval()


def calib_batches(train, n: int = 2, size: int = 100):
    return [images for images, _ in DataLoader(Subset(train, range(n * size)), batch_size=size)]


def images_labels(dataset, count: int, start: int = 0):
    items = [dataset[i] for i in range(start, start + count)]
    return torch.stack([im for im, _ in items]), np.array([label for _, label in items])


def float_decisions(model, images) -> list[dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Per image (run alone, as the integer model runs them): stage -> (original index, keep) of the tokens
    that entered it."""
    out = []
    with torch.no_grad():
        for i in range(images.shape[0]):
            state = model.forward_state(images[i:i + 1])
            out.append({d.stage: (d.index[0].numpy(), d.keep[0].numpy() > 0.5) for d in state.decisions})
    return out


def agreement(model, int_model, images) -> dict:
    """Integer vs float per-token keep decisions, per stage.

    For each image and stage, the patch tokens that entered the stage in both models (by original index;
    added tokens such as package tokens are protected in both and left out) are compared; returns
    ``{"per_stage": {stage: (agree, total)}, "fraction": all agreeing / all compared, "kept": {stage:
    (float kept, integer kept)}}`` (kept patch tokens summed over the images).
    """
    floats = float_decisions(model, images)
    int_model.forward_tokens(images)
    per_stage: dict[int, list[int]] = {}
    kept: dict[int, list[int]] = {}
    for fl, records in zip(floats, int_model.decisions, strict=True):
        for rec in records:
            f_index, f_keep = fl[rec.stage]
            f_map = {int(i): bool(k) for i, k in zip(f_index, f_keep, strict=True) if i >= 1}
            i_map = {int(i): bool(k) for i, k in zip(rec.index, rec.keep, strict=True) if i >= 1}
            common = f_map.keys() & i_map.keys()
            agree = sum(f_map[i] == i_map[i] for i in common)
            s = per_stage.setdefault(rec.stage, [0, 0])
            s[0] += agree
            s[1] += len(common)
            c = kept.setdefault(rec.stage, [0, 0])
            c[0] += sum(f_map.values())
            c[1] += sum(i_map.values())
    total = sum(t for _, t in per_stage.values())
    return {"per_stage": {k: tuple(v) for k, v in per_stage.items()},
            "fraction": sum(a for a, _ in per_stage.values()) / max(total, 1),
            "kept": {k: tuple(v) for k, v in kept.items()}}
