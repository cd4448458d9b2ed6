"""What the integer-stage tests share: the quick TINY MNIST model and integer vs float decisions per token."""

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from tokensift.sw import create_model
from tokensift.sw.methods import get_method
from tokensift.sw.train import TrainConfig, fit

#: a shrunken MNIST model (width 32, 3 blocks, 2 heads, stages before blocks 1 and 2), trained in seconds
TINY = dict(embed_dim=32, depth=3, num_heads=2, prune_locs=(1, 2), weight_init="jax", pos_embed_init="sincos")
#: 400 of the 1,000 test images, 40 of each class (the split is sorted by class)
SPREAD = [int(i * 2.5) for i in range(400)]


def train_quick_dense(train):
    """The dense TINY model after 150 steps (about 50% on all ten classes)."""
    torch.manual_seed(0)
    model = create_model("vit_mnist_patch4_28", **TINY)
    fit(model, get_method("none").build_criterion(1.0, 0), train,
        TrainConfig(epochs=3, batch_size=64, lr=3e-3, warmup_epochs=0.2, max_steps=150, augment=False),
        progress=False)
    return model.eval()


def calib_batches(train, n=2, size=100):
    return [images for images, _ in DataLoader(Subset(train, range(n * size)), batch_size=size)]


def spread(test):
    """The :data:`SPREAD` test images and their labels."""
    return torch.stack([test[i][0] for i in SPREAD]), np.array([test[i][1] for i in SPREAD])


def float_decisions(model, images) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per image (each run alone, so no padding), per stage: (original index, keep) of the tokens that entered."""
    out = []
    with torch.no_grad():
        for b in range(len(images)):
            state = model.forward_state(images[b:b + 1], path="gather")
            out.append([(d.index[0].numpy(), (d.keep[0] > 0.5).numpy()) for d in state.decisions])
    return out


def decision_agreement(int_decisions, float_decs) -> float:
    """Fraction of the candidate tokens (original index >= 1) entering a stage in both models whose keep
    decisions agree, over every image and stage."""
    agree = total = 0
    for records, decisions in zip(int_decisions, float_decs, strict=True):
        assert len(records) == len(decisions)
        for rec, (index, keep) in zip(records, decisions, strict=True):
            fk = {int(j): bool(k) for j, k in zip(index, keep, strict=True) if j >= 1}
            for j, k in zip(rec.index.tolist(), rec.keep.tolist(), strict=True):
                if j >= 1 and j in fk:
                    total += 1
                    agree += fk[j] == k
    return agree / total
