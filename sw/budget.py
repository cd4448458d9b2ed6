"""Budgets: differentiable costs of a token schedule, ``budget(token_counts) -> cost``.

``token_counts`` holds, per pruning stage, the number of tokens leaving the stage (class token and tokens a
method adds included), possibly fractional and with gradients: ``(num_stages,)`` or ``(batch,
num_stages)``. A budget returns the cost as a tensor of the leading shape, differentiable with respect to
the counts. Budget-aware methods (AS-ViT's FLOPs loss, SPViT's computation-aware keep ratios) add e.g.
``(budget(counts) / budget.dense - rho).abs()`` to their loss; a hardware latency model can implement the
same :class:`Budget` protocol.

Example:
    >>> import torch
    >>> from tokensift.sw import create_model
    >>> budget = FlopsBudget(create_model("deit_small_patch16_224", method="dynamicvit", keep_ratio=0.7))
    >>> counts = torch.tensor([138.0, 97.0, 68.0], requires_grad=True)
    >>> round(float(budget(counts).detach()) / 1e9, 2), round(budget.dense / 1e9, 2)
    (2.98, 4.6)
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .flops import FlopsSpec, schedule_macs

__all__ = ["Budget", "FlopsBudget", "stage_schedule"]


@runtime_checkable
class Budget(Protocol):
    """A differentiable cost of per-stage token counts."""

    num_stages: int

    def __call__(self, token_counts: Tensor) -> Tensor: ...


class FlopsBudget:
    """MACs of ``model`` as a function of its per-stage token counts (same formulas as ``count_flops``)."""

    def __init__(self, model: nn.Module):
        self.spec = FlopsSpec.from_model(model)
        self.num_stages = len(self.spec.stages)
        dense = FlopsSpec(**{**self.spec.__dict__, "stages": []})
        n = [self.spec.num_tokens] * self.spec.depth
        self.dense = float(schedule_macs(dense, n, n)["total"])

    def schedule(self, token_counts: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Per-block (attention, MLP) token counts for per-stage counts (..., num_stages)."""
        sites = [(b, site) for b, site, _ in self.spec.stages]
        attn, mlp, _ = stage_schedule(token_counts, sites, self.spec.depth, self.spec.num_tokens)
        return attn, mlp

    def __call__(self, token_counts: Tensor) -> Tensor:
        attn, mlp = self.schedule(token_counts)
        return schedule_macs(self.spec, attn, mlp)["total"]


def stage_schedule(token_counts: Tensor, sites: list[tuple[int, str]], depth: int, num_tokens: int
                   ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """Per-block (attention, MLP) token counts and per-stage input counts, as float64 tensors.

    ``sites[s]`` is ``(block, "pre" | "mid")``: stage ``s`` prunes before block's attention or between its
    attention and MLP; ``token_counts[..., s]`` is the number of tokens it lets through.
    """
    if not isinstance(token_counts, Tensor):
        raise TypeError(f"token counts must be a torch tensor, not {type(token_counts).__name__}")
    if token_counts.shape[-1:] != (len(sites),):
        raise ValueError(f"token counts must have {len(sites)} entries in the last axis (one per "
                         f"pruning stage), not shape {tuple(token_counts.shape)}")
    counts = token_counts.to(torch.float64)
    n = torch.full(counts.shape[:-1], float(num_tokens), dtype=torch.float64, device=counts.device)
    stage_at = {block: (s, site) for s, (block, site) in enumerate(sites)}
    attn, mlp, stage_in = [], [], [n] * len(sites)
    for b in range(depth):
        s, site = stage_at.get(b, (None, None))
        if site == "pre":
            stage_in[s], n = n, counts[..., s]
        attn.append(n)
        if site == "mid":
            stage_in[s], n = n, counts[..., s]
        mlp.append(n)
    return attn, mlp, stage_in
