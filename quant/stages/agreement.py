"""Integer vs float keep decisions: how often the integer stages keep the same tokens as the float model.

:func:`float_run` runs the float model one image at a time (the per-image rule, no padding, as
:class:`tokensift.quant.integer_model.IntegerViT` runs them) and keeps each stage's decision;
:func:`decision_agreement` compares them with :attr:`IntegerViT.decisions`: per stage, over the patch
tokens (original index >= 1) that entered the stage in both models (tokens a method added, such as package
tokens, are left out), the fraction whose keep decisions agree.
"""

from __future__ import annotations

import numpy as np

__all__ = ["float_run", "float_decisions", "decision_agreement"]


def float_run(model, images) -> tuple[np.ndarray, list[dict[int, tuple[np.ndarray, np.ndarray]]]]:
    """The float model's predictions (B,) and, per image, ``stage -> (original index, keep)`` of the tokens
    that entered each stage that ran."""
    import torch

    preds, decisions = [], []
    with torch.no_grad():
        for b in range(len(images)):
            state = model.forward_state(images[b:b + 1], path="gather")
            preds.append(int(model.forward_head(state.x, keep=state.keep).argmax(dim=-1)))
            decisions.append({d.stage: (d.index[0].numpy(), (d.keep[0] > 0.5).numpy()) for d in state.decisions})
    return np.array(preds, dtype=np.int64), decisions


def float_decisions(model, images) -> list[dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Per image, ``stage -> (original index, keep)`` (:func:`float_run` without the predictions)."""
    return float_run(model, images)[1]


def decision_agreement(int_decisions, float_decs) -> dict:
    """``{"fraction": agreeing / compared (None when nothing was compared), "per_stage": {stage: (agree,
    compared)}, "kept": {stage: (float kept, integer kept)}}``, kept patch tokens summed over the images.

    ``int_decisions``: :attr:`IntegerViT.decisions` (per image, a list of
    :class:`~tokensift.quant.stages.StageRecord`); ``float_decs``: :func:`float_decisions` of the same
    images. Every stage the integer model ran must have run in the float model too (a float stage that
    selects nothing may have no integer stage: it is not compared).
    """
    per_stage: dict[int, list[int]] = {}
    kept: dict[int, list[int]] = {}
    for records, floats in zip(int_decisions, float_decs, strict=True):
        if not {r.stage for r in records} <= set(floats):
            raise ValueError(f"the integer model ran stages {sorted(r.stage for r in records)}, the float model "
                             f"only {sorted(floats)}")
        for rec in records:
            f_index, f_keep = floats[rec.stage]
            f_map = {int(i): bool(k) for i, k in zip(f_index, f_keep, strict=True) if i >= 1}
            i_map = {int(i): bool(k) for i, k in zip(rec.index, rec.keep, strict=True) if i >= 1}
            common = f_map.keys() & i_map.keys()
            s = per_stage.setdefault(rec.stage, [0, 0])
            s[0] += sum(f_map[i] == i_map[i] for i in common)
            s[1] += len(common)
            c = kept.setdefault(rec.stage, [0, 0])
            c[0] += sum(f_map.values())
            c[1] += sum(i_map.values())
    total = sum(t for _, t in per_stage.values())
    return {"fraction": sum(a for a, _ in per_stage.values()) / total if total else None,
            "per_stage": {k: tuple(v) for k, v in sorted(per_stage.items())},
            "kept": {k: tuple(v) for k, v in sorted(kept.items())}}
