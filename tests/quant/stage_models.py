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

from tokensift.quant.stages.agreement import decision_agreement, float_decisions
from tokensift.sw import create_model
from tokensift.sw.checkpoint import load_checkpoint
from tokensift.sw.methods import get_method
from tokensift.sw.train import TrainConfig, fit

TINY = dict(embed_dim=32, depth=3, num_heads=2, prune_locs=(1, 2), weight_init="jax", pos_embed_init="sincos")
QUICK_STEPS = 150
#: 400 of the 1,000 test images, 40 of each class (the split is sorted by class)
SPREAD = [int(i * 2.5) for i in range(400)]


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


def spread(test):
    """The :data:`SPREAD` test images and their labels."""
    return torch.stack([test[i][0] for i in SPREAD]), np.array([test[i][1] for i in SPREAD])


def images_labels(dataset, count: int, start: int = 0):
    items = [dataset[i] for i in range(start, start + count)]
    return torch.stack([im for im, _ in items]), np.array([label for _, label in items])


def agreement(model, int_model, images) -> dict:
    """Integer vs float per-token keep decisions on ``images``
    (:func:`tokensift.quant.stages.agreement.decision_agreement`: fraction, per stage, kept)."""
    floats = float_decisions(model, images)
    int_model.forward_tokens(images)
    return decision_agreement(int_model.decisions, floats)
