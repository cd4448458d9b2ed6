"""Checkpoints: save ours, load ours and timm / DeiT ``.pth`` files (plain state dict or ``{"model": ...}``).

DynamicViT's released checkpoints (DeiT and LV-ViT, ``raoyongming/DynamicViT``) name the prediction modules
``score_predictor.{stage}.*``; they load into the stage's ``selectors.{block}.predictor.*`` unchanged (the
modules are the same), so those files load as they are.

A checkpoint that does not fit fails with one :class:`~tokensift.errors.CheckpointError` naming the first
offending keys. ``strict=False`` tolerates only method-specific extras: missing selector parameters
(``selectors.*``, e.g. when a dense DeiT checkpoint initialises a DynamicViT model) and unexpected extra
keys such as a distilled DeiT's ``dist_token`` / ``head_dist``; missing backbone keys and wrong shapes
always fail.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from tokensift.errors import CheckpointError

__all__ = ["save_checkpoint", "read_checkpoint", "extract_state_dict", "load_checkpoint", "check_state_dict",
           "release_names"]

_WRAPPER_KEYS = ("model", "state_dict", "model_state", "module")
_SHOWN = 3


def save_checkpoint(path: str | Path, model: nn.Module, **meta) -> Path:
    """Write ``{"model": state_dict, "meta": meta}`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = getattr(model, "module", model)
    # stored on the CPU so that a checkpoint written on a GPU loads anywhere
    payload = {"model": {k: v.detach().cpu() for k, v in module.state_dict().items()}, "meta": dict(meta)}
    cfg = getattr(module, "config", None)
    if cfg is not None:
        payload["meta"].setdefault("model", cfg.name)
    payload["meta"].setdefault("method", getattr(module, "method", "none"))
    payload["meta"].setdefault("keep_ratio", getattr(module, "keep_ratio", 1.0))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file onto the CPU (tensors only; no code is executed)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(f"checkpoint file {str(path)!r} could not be read ({type(exc).__name__})") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint file {str(path)!r} holds a {type(obj).__name__}, not a state dict")
    return dict(obj)


def extract_state_dict(obj: Mapping) -> dict[str, Tensor]:
    """The state dict inside a checkpoint: ``obj`` itself or ``obj["model"]`` (or ``state_dict``)."""
    for key in _WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
            obj = inner
            break
    state = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not state:
        raise CheckpointError("checkpoint holds no tensors (expected a state dict or {'model': state_dict})")
    return state


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def _is_method_extra(key: str) -> bool:
    return key.startswith("selectors.")


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor], strict: bool = True) -> dict[str, Tensor]:
    """Check that ``state`` fits ``model``; return the entries to load. Raise CheckpointError otherwise."""
    own = model.state_dict()
    name = getattr(getattr(model, "config", None), "name", type(model).__name__)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if not strict:
        missing = [k for k in missing if not _is_method_extra(k)]
        unexpected = []
    if missing:
        raise CheckpointError(f"checkpoint does not fit {name}: missing keys {_names(missing)}")
    if unexpected:
        raise CheckpointError(f"checkpoint does not fit {name}: unexpected keys {_names(unexpected)} "
                              f"(use strict=False to ignore them)")
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    if wrong:
        raise CheckpointError(f"checkpoint does not fit {name}: wrong shapes for {_names(wrong)} "
                              f"(checkpoint vs model)")
    return {k: v for k, v in state.items() if k in own}


def release_names(model: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with DynamicViT's released predictor names (``score_predictor.{stage}.``) renamed to the
    stage's ``selectors.{block}.predictor.``, where ``model`` has a predictor at that stage; other keys as
    they are."""
    module = getattr(model, "module", model)
    stages = getattr(module, "stage_selectors", None)
    if stages is None or not any(k.startswith("score_predictor.") for k in state):
        return dict(state)
    prefixes = {f"score_predictor.{s}.": f"selectors.{block}.predictor."
                for s, (block, sel) in enumerate(stages()) if hasattr(sel, "predictor")}
    out = {}
    for key, value in state.items():
        head, dot, rest = key.partition(".")
        stage, _, tail = rest.partition(".")
        new = prefixes.get(f"{head}{dot}{stage}.") if head == "score_predictor" else None
        out[key if new is None else new + tail] = value
    return out


def load_checkpoint(model: nn.Module, source: str | Path | Mapping, strict: bool = True) -> dict:
    """Load a checkpoint (a path, or an already loaded dict) into ``model``; return its ``meta`` dict."""
    obj = read_checkpoint(source) if isinstance(source, (str, Path)) else dict(source)
    state = check_state_dict(model, release_names(model, extract_state_dict(obj)), strict=strict)
    module = getattr(model, "module", model)
    module.load_state_dict(state, strict=False)
    meta = obj.get("meta")
    return dict(meta) if isinstance(meta, Mapping) else {}
