"""Accuracy oracles for the co-optimizer: ``oracle(schedules) -> accuracies`` (higher is better).

The default objective is the retained-FLOPs proxy that :class:`~tokensift.coopt.evaluate.KeepSchedule`
carries (no oracle needed). :class:`MeasuredAccuracy` evaluates a trained model at each keep point on a
fixed subset of images (memoized per keep point), for searches whose trials are few enough to afford it.

>>> import torch
>>> from torch.utils.data import TensorDataset
>>> from tokensift.sw import create_model
>>> model = create_model("vit_mnist_patch4_28", method="evit", keep_ratio=0.7)
>>> data = TensorDataset(torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))
>>> oracle = MeasuredAccuracy(model, data, images=4)
>>> 0.0 <= oracle.at((0.5, 0.5, 0.5)) <= 1.0
True
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from tokensift.checks import check_count
from tokensift.coopt.space import keep_kind

__all__ = ["MeasuredAccuracy", "set_keep_point"]


def set_keep_point(model, method: str, point) -> None:
    """Apply a keep point of the co-optimizer to a :mod:`tokensift.sw` model's selectors (in place)."""
    module = getattr(model, "module", model)
    sels = [sel for _, sel in module.stage_selectors()]
    kind = keep_kind(method)
    point = tuple(float(v) for v in point)
    if kind == "per-stage":
        if len(point) != len(sels):
            raise ValueError(f"a per-stage keep point needs {len(sels)} ratios (one per stage), not {len(point)}")
        for sel, r in zip(sels, point, strict=True):
            sel.set_keep_ratio(r)
    elif kind in ("geometric", "adaptive"):
        if len(point) != 1:
            raise ValueError(f"method {method!r} takes one keep ratio, not {len(point)}")
        for sel in sels:
            sel.set_keep_ratio(point[0])
        if method == "spvit":  # a keep point is a static schedule: SPViT keeps its top-k, not its threshold rule
            from tokensift.sw.methods.spvit import set_decision

            set_decision(module, "topk")
    elif point:
        raise ValueError(f"the dense model takes no keep ratios, not {list(point)}")


class MeasuredAccuracy:
    """Top-1 accuracy of ``model`` (a copy) at a keep point, on ``images`` of ``dataset`` spread evenly over
    it (datasets ordered by class would otherwise give a biased subset)."""

    name = "measured_accuracy"

    def __init__(self, model, dataset, *, images: int = 500, batch_size: int = 250):
        module = getattr(model, "module", model)
        self.method = getattr(module, "method", "none")
        if self.method == "asvit":
            raise ValueError("measured accuracy needs keep ratios that change the model's inference, and AS-ViT's "
                             "learned thresholds do not read them; use the retained-FLOPs proxy")
        check_count("images", images, numpy=False)
        self.model = copy.deepcopy(module).eval()
        n = min(images, len(dataset))
        idx = sorted({int(i) for i in np.linspace(0, len(dataset) - 1, n).round()})
        xs, ys = zip(*(dataset[i] for i in idx), strict=True)
        self.images = torch.stack(list(xs))
        self.labels = torch.as_tensor(list(ys))
        self.batch_size = batch_size
        self._cache: dict[tuple, float] = {}

    @torch.no_grad()
    def at(self, point) -> float:
        point = tuple(float(v) for v in point)
        acc = self._cache.get(point)
        if acc is None:
            set_keep_point(self.model, self.method, point)
            correct = 0
            for i in range(0, len(self.labels), self.batch_size):
                pred = self.model(self.images[i:i + self.batch_size]).argmax(dim=-1)
                correct += int((pred == self.labels[i:i + self.batch_size]).sum())
            acc = correct / len(self.labels)
            self._cache[point] = acc
        return acc

    def __call__(self, schedules) -> np.ndarray:
        return np.array([self.at(s.point) for s in schedules], dtype=np.float64)
