"""Model registry: ``@register_model`` configurations and ``create_model(name, method=..., keep_ratio=...)``.

Example:
    >>> from tokensift.sw import create_model
    >>> model = create_model("vit_mnist_patch4_28", method="dynamicvit", keep_ratio=0.7)
    >>> [block for block, _ in model.stage_selectors()]
    [1, 3, 5]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from tokensift.errors import UnknownModelError

from .methods import get_method
from .selection import check_keep_ratio
from .vit import VisionTransformer

__all__ = ["ViTConfig", "register_model", "create_model", "list_models", "get_config", "DEFAULT_KEEP_RATIO"]

DEFAULT_KEEP_RATIO = 0.7


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a registered model, plus where its pruning stages sit.

    ``prune_locs`` are 0-based block indices: DynamicViT runs its predictor before these blocks, EViT
    prunes inside them (after attention).
    """

    name: str
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    weight_init: str = "timm"
    pos_embed_init: str = "trunc_normal"
    embed_layer: str = "patch"
    norm_eps: float = 1e-6
    residual_scale: float = 1.0
    aux_head: bool = False
    prune_locs: tuple[int, ...] = (3, 6, 9)

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    def model_kwargs(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("name", "prune_locs"):
            d.pop(key)
        return d


_MODELS: dict[str, Callable[[], ViTConfig]] = {}


def register_model(fn: Callable[[], ViTConfig]) -> Callable[[], ViTConfig]:
    """Decorator: register a function returning a :class:`ViTConfig` under the function's name."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def get_config(name: str, **overrides) -> ViTConfig:
    """The registered configuration ``name`` with ``overrides`` applied (e.g. ``num_classes=10``)."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, not {name!r}")
    if name not in _MODELS:
        raise UnknownModelError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    cfg = _MODELS[name]()
    fields = {f.name for f in dataclasses.fields(ViTConfig)} - {"name"}
    for key in overrides:
        if key not in fields:
            raise TypeError(f"create_model() got an unexpected keyword argument {key!r}")
    if "prune_locs" in overrides and overrides["prune_locs"] is not None:
        overrides["prune_locs"] = tuple(overrides["prune_locs"])
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(cfg, **overrides)


def create_model(name: str, method: str = "none", keep_ratio: float | None = None, **kwargs
                 ) -> VisionTransformer:
    """Build model ``name`` with token-pruning ``method`` ("none", "dynamicvit", "evit", ...).

    Args:
        name: a registered model (see :func:`list_models`).
        method: a registered method (see :func:`tokensift.sw.methods.list_methods`).
        keep_ratio: the method's base keep ratio rho in (0, 1]; default 0.7 for pruning methods. The dense
            model ("none") accepts only None or 1.
        **kwargs: overrides of :class:`ViTConfig` fields (``num_classes``, ``prune_locs``, ``img_size``...).
            Without ``prune_locs``, a method with its own locations (AS-ViT) uses them; others use the
            model's.

    The returned model carries ``model.config`` (the :class:`ViTConfig`), ``model.method`` and
    ``model.keep_ratio``.
    """
    spec = get_method(method)
    cfg = get_config(name, **kwargs)
    if spec.default_prune_locs is not None and kwargs.get("prune_locs") is None:
        cfg = dataclasses.replace(cfg, prune_locs=tuple(spec.default_prune_locs(cfg)))
    if method == "none":
        if keep_ratio is not None and check_keep_ratio(keep_ratio) != 1.0:
            raise ValueError(f"the dense model (method 'none') keeps every token; keep ratio must be 1, "
                             f"not {keep_ratio}")
        keep_ratio = 1.0
    else:
        keep_ratio = check_keep_ratio(DEFAULT_KEEP_RATIO if keep_ratio is None else keep_ratio)
    for loc in cfg.prune_locs:
        if not isinstance(loc, int) or not 0 < loc < cfg.depth:
            raise ValueError(f"pruning locations must be block indices in [1, {cfg.depth - 1}], "
                             f"not {list(cfg.prune_locs)}")
    if len(set(cfg.prune_locs)) != len(cfg.prune_locs):
        raise ValueError(f"pruning locations must be distinct, not {list(cfg.prune_locs)}")
    if spec.selectors_from_config is not None:
        selectors = spec.selectors_from_config(cfg, keep_ratio)
    else:
        selectors = spec.build_selectors(cfg.embed_dim, cfg.num_patches, keep_ratio, tuple(cfg.prune_locs))
    model = VisionTransformer(**cfg.model_kwargs(), selectors=selectors)
    model.config = cfg
    model.method = method
    model.keep_ratio = keep_ratio
    if spec.prepare is not None:
        spec.prepare(model)
    return model


@register_model
def deit_tiny_patch16_224() -> ViTConfig:
    return ViTConfig("deit_tiny_patch16_224", embed_dim=192, depth=12, num_heads=3)


@register_model
def deit_small_patch16_224() -> ViTConfig:
    return ViTConfig("deit_small_patch16_224", embed_dim=384, depth=12, num_heads=6)


@register_model
def deit_base_patch16_224() -> ViTConfig:
    return ViTConfig("deit_base_patch16_224", embed_dim=768, depth=12, num_heads=12)


@register_model
def lvvit_s() -> ViTConfig:
    """LV-ViT-S (Jiang et al., 2021; the papers' second backbone): 16 blocks of width 384, 6 heads, MLP ratio 3,
    a convolutional stem, residual branches divided by 2, no ``qkv`` bias, LayerNorm eps 1e-5 and the
    token-labelling auxiliary head, as DynamicViT's released ``LVViTDiffPruning`` (same state-dict keys).
    Pruning stages before blocks 4, 8, 12 (DynamicViT's ``PRUNING_LOC`` for LV-ViT-S).
    """
    return ViTConfig("lvvit_s", embed_dim=384, depth=16, num_heads=6, mlp_ratio=3.0, qkv_bias=False,
                     embed_layer="conv4", norm_eps=1e-5, residual_scale=0.5, aux_head=True,
                     prune_locs=(4, 8, 12))


@register_model
def vit_mnist_patch4_28() -> ViTConfig:
    """28x28 grey images, 4x4 patches (49 + class token), 6 blocks of width 64 with 4 heads, MLP ratio 2.

    Small enough to train on 2 CPU cores in minutes. Pruning stages every second block, before blocks 1,
    3, 5 (DeiT's 3, 6, 9 scaled to 6 blocks). ``tokensift train`` initialises it with
    ``weight_init="jax", pos_embed_init="sincos"`` (see :class:`tokensift.sw.pipeline.PipelineConfig`).
    """
    return ViTConfig("vit_mnist_patch4_28", img_size=28, patch_size=4, in_chans=1, num_classes=10,
                     embed_dim=64, depth=6, num_heads=4, mlp_ratio=2.0, prune_locs=(1, 3, 5))
