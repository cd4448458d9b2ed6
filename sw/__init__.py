"""tokensift.sw: the PyTorch side — a timm-compatible ViT, token selection, pruning methods, FLOPs, training."""

from .registry import ViTConfig, create_model, get_config, list_models, register_model
from .selection import AttnInfo, Decision, TokenSelector, TokenState
from .vit import VisionTransformer

__all__ = [
    "AttnInfo",
    "Decision",
    "TokenSelector",
    "TokenState",
    "ViTConfig",
    "VisionTransformer",
    "create_model",
    "get_config",
    "list_models",
    "register_model",
]
