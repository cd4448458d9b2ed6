"""Token-pruning methods, one file each, registered by name.

A method is a :class:`MethodSpec`: how to build its selectors for a model configuration and which
training loss it uses. Adding one (SPViT, AS-ViT, SaiT, ...) is a new file in this folder that subclasses
:class:`tokensift.sw.selection.TokenSelector`, calls :func:`register_method`, and is imported below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokensift.errors import UnknownMethodError

from ..selection import TokenSelector
from .dynamicvit import DynamicViTLoss, DynamicViTSelector
from .evit import EViTSelector

__all__ = [
    "MethodSpec",
    "ClassificationLoss",
    "register_method",
    "get_method",
    "list_methods",
    "DynamicViTSelector",
    "DynamicViTLoss",
    "EViTSelector",
]


class ClassificationLoss(nn.Module):
    """Cross-entropy, plus ``distill_weight`` x KL to a teacher's logits when a teacher is given."""

    def __init__(self, distill_weight: float = 0.5, path: str | None = None):
        super().__init__()
        self.distill_weight = distill_weight
        self.path = path

    def forward(self, student: nn.Module, teacher: nn.Module | None, images: Tensor, labels: Tensor
                ) -> tuple[Tensor, dict[str, Tensor | float]]:
        logits = student.forward_head(student.forward_state(images, path=self.path).x)
        loss = F.cross_entropy(logits, labels)
        parts = {"cls": loss.detach()}
        if teacher is not None and self.distill_weight > 0:
            with torch.no_grad():
                t_logits = teacher(images)
            kl = F.kl_div(F.log_softmax(logits, dim=-1), F.log_softmax(t_logits, dim=-1),
                          reduction="batchmean", log_target=True)
            loss = loss + self.distill_weight * kl
            parts["kl"] = kl.detach()
        return loss, parts


@dataclass(frozen=True)
class MethodSpec:
    """A registered pruning method.

    Attributes:
        name: registry name (``create_model(..., method=name)``).
        build_selectors: ``(embed_dim, num_patches, keep_ratio, locations) -> {block index: selector}``.
        build_criterion: ``(keep_ratio, num_stages) -> loss module`` called as
            ``loss(student, teacher, images, labels) -> (loss, parts)``; ``parts`` maps term names to
            detached 0-dim tensors (read them with ``float`` when logging: each read waits for a GPU).
        uses_teacher: fine-tuning distils from the dense model.
        selectors_from_config: when set, used instead of ``build_selectors`` as
            ``(model config, keep_ratio) -> {block index: selector}``, for methods that need more of the
            configuration (e.g. ``num_heads``).
        prepare: called by ``create_model`` on the built model (e.g. to plan keep ratios from a budget).
        default_prune_locs: when set, ``(model config) -> locations``: the method's own pruning locations,
            used unless ``create_model`` is given ``prune_locs`` (AS-ViT prunes one block later than
            DynamicViT).
        frozen_fraction: fraction of fine-tuning epochs with the backbone frozen (then it trains at
            ``backbone_lr_scale`` of the selector learning rate).
    """

    name: str
    build_selectors: Callable[[int, int, float, tuple[int, ...]], dict[int, TokenSelector]]
    build_criterion: Callable[[float, int], nn.Module]
    uses_teacher: bool = True
    frozen_fraction: float = 0.0
    backbone_lr_scale: float = 1.0
    description: str = ""
    extra: dict = field(default_factory=dict)
    selectors_from_config: Callable[[object, float], dict[int, TokenSelector]] | None = None
    prepare: Callable[[nn.Module], None] | None = None
    default_prune_locs: Callable[[object], tuple[int, ...]] | None = None


_METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    if spec.name in _METHODS:
        raise ValueError(f"method {spec.name!r} is already registered")
    _METHODS[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    if not isinstance(name, str):
        raise TypeError(f"method must be a string, not {name!r}")
    try:
        return _METHODS[name]
    except KeyError:
        raise UnknownMethodError(
            f"unknown method {name!r}; choose one of {', '.join(sorted(_METHODS))}") from None


def list_methods() -> list[str]:
    return sorted(_METHODS)


register_method(MethodSpec(
    name="none",
    build_selectors=lambda dim, n, rho, locs: {},
    build_criterion=lambda rho, stages: ClassificationLoss(distill_weight=0.0),
    uses_teacher=False,
    description="dense model, no pruning",
))

register_method(MethodSpec(
    name="dynamicvit",
    build_selectors=lambda dim, n, rho, locs: {loc: DynamicViTSelector(dim, n, rho) for loc in locs},
    build_criterion=lambda rho, stages: DynamicViTLoss(rho, stages),
    uses_teacher=True,
    frozen_fraction=5 / 30,
    backbone_lr_scale=0.01,
    description="learned predictor, Gumbel-softmax training, keep rho, rho^2, rho^3",
))

register_method(MethodSpec(
    name="evit",
    build_selectors=lambda dim, n, rho, locs: {loc: EViTSelector(rho) for loc in locs},
    build_criterion=lambda rho, stages: ClassificationLoss(distill_weight=0.5, path="gather"),
    uses_teacher=True,
    backbone_lr_scale=0.1,  # no selector parameters: fine-tune the backbone gently
    description="class-attention top-k inside the block, dropped tokens fused into one",
))

# methods in their own files register themselves on import (after the registry above exists)
from . import asvit, sait, spvit  # noqa: E402,F401
