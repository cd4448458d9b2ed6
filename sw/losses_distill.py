"""Distillation from a frozen dense teacher, shared by the pruning methods' losses.

:func:`teacher_outputs` runs the teacher once (no gradients) and returns its logits, its final tokens and,
when asked, the class token's attention in its last block; :func:`logit_distill` and :func:`token_distill`
compare a student with them. Tokens are matched by their original position (``TokenState.index``), so a
student that removed, reordered or added tokens (package / fused tokens) is compared fairly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .selection import TokenState

__all__ = ["TeacherOutputs", "teacher_outputs", "logit_distill", "token_distill", "add_distillation"]


@dataclass
class TeacherOutputs:
    """logits (B, classes); tokens (B, N, C) after the final norm; last_cls_attn (B, H, N) or None."""

    logits: Tensor
    tokens: Tensor
    last_cls_attn: Tensor | None = None


@torch.no_grad()
def teacher_outputs(teacher: nn.Module, images: Tensor, last_attention: bool = False) -> TeacherOutputs:
    """One pass of a dense teacher, optionally keeping its last block's class-token attention."""
    module = getattr(teacher, "module", teacher)
    if len(module.selectors):
        raise ValueError(f"the teacher must be a dense model without token selectors, not one with "
                         f"{len(module.selectors)}")
    x = module._embed(images)
    for blk in module.blocks[:-1]:
        x = blk(x)
    x, info = module.blocks[-1].forward_attn(x, want_info=last_attention)
    tokens = module.norm(module.blocks[-1].forward_mlp(x))
    return TeacherOutputs(module.forward_head(tokens), tokens, None if info is None else info.cls_attn)


def logit_distill(logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """KL(teacher || student) of the class distributions, averaged over the batch."""
    return F.kl_div(F.log_softmax(logits, dim=-1), F.log_softmax(teacher_logits, dim=-1),
                    reduction="batchmean", log_target=True)


def token_distill(state: TokenState, teacher_tokens: Tensor) -> Tensor:
    """Mean squared error between the student's kept patch tokens and the teacher's at the same positions.

    A token counts when it is an original patch (index >= 1) and still kept (keep > 0.5, or no mask).
    Returns 0 when no token counts.
    """
    index = state.index
    valid = index >= 1
    if state.keep is not None:
        valid = valid & (state.keep > 0.5)
    if not bool(valid.any()):
        return state.x.new_zeros(())
    ref = torch.gather(teacher_tokens, 1, index.clamp(min=0)[..., None].expand(-1, -1, state.x.shape[-1]))
    return (state.x[valid] - ref[valid]).pow(2).mean()


def add_distillation(loss: Tensor, parts: dict, weight: float, logits: Tensor, state: TokenState,
                     teacher: nn.Module | None, images: Tensor) -> Tensor:
    """``loss + weight * (KL to the teacher's logits + MSE to its tokens)``, recording ``kl`` and ``token``
    in ``parts``; ``loss`` unchanged without a teacher or with a zero weight."""
    if teacher is None or weight <= 0:
        return loss
    t = teacher_outputs(teacher, images)
    kl, tok = logit_distill(logits, t.logits), token_distill(state, t.tokens)
    parts.update(kl=kl.detach(), token=tok.detach())
    return loss + weight * (kl + tok)
