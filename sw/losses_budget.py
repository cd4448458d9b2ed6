"""Budget terms of the computation-aware losses (SPViT, AS-ViT): soft token counts -> cost -> gap.

A model's budget is any :class:`tokensift.sw.budget.Budget` (a differentiable ``budget(token_counts) ->
cost``) that also exposes the dense model's cost as ``budget.dense``. By default it is
:class:`tokensift.sw.budget.FlopsBudget`; a hardware latency model replaces it by setting ``model.budget``
(the methods never look inside it).

Example:
    >>> import torch
    >>> from tokensift.sw import create_model
    >>> model = create_model("vit_mnist_patch4_28", method="asvit", keep_ratio=0.6).train()
    >>> state = model.forward_state(torch.randn(2, 1, 28, 28))
    >>> stage_token_counts(model, state).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .budget import Budget, FlopsBudget
from .selection import TokenState

__all__ = ["model_budget", "stage_token_counts", "budget_ratio", "budget_gap", "largest_within"]


def model_budget(model: nn.Module) -> Budget:
    """``model.budget`` when set, else a :class:`FlopsBudget` of the model (cached on it)."""
    module = getattr(model, "module", model)
    budget = getattr(module, "budget", None)
    if budget is None:
        budget = FlopsBudget(module)
        module.budget = budget
    if not isinstance(budget, Budget) or not isinstance(getattr(budget, "dense", None), (int, float)):
        raise TypeError(f"model.budget must be a callable of token counts with a numeric 'dense' cost, "
                        f"not {type(budget).__name__}")
    return budget


def stage_token_counts(model: nn.Module, state: TokenState) -> Tensor:
    """(B, S) tokens leaving each pruning stage in a forward pass (soft, with gradients, on the mask path).

    Read from the state's per-block record: the tokens entering the block's attention for a selector
    that runs before its block, the tokens entering the MLP for one that runs inside it.
    """
    module = getattr(model, "module", model)
    B = state.x.shape[0]
    cols = []
    for block, sel in module.stage_selectors():
        v = state.attn_tokens[block] if sel.site == "pre" else state.mlp_tokens[block]
        if not isinstance(v, Tensor):
            v = torch.full((B,), float(v), device=state.x.device)
        cols.append(v.to(torch.float64))
    if not cols:
        raise ValueError("the model has no pruning stages, so it has no token counts to budget")
    return torch.stack(cols, dim=-1)


def budget_ratio(model: nn.Module, state: TokenState) -> Tensor:
    """Batch-mean cost of the forward pass that produced ``state``, as a fraction of the dense cost."""
    budget = model_budget(model)
    return budget(stage_token_counts(model, state)).mean() / budget.dense


def budget_gap(model: nn.Module, state: TokenState, target: float) -> tuple[Tensor, Tensor]:
    """(L1 gap |cost / dense - target|, cost / dense): AS-ViT's budget-aware loss term."""
    ratio = budget_ratio(model, state)
    return (ratio - target).abs(), ratio


def largest_within(cost: Callable[[float], float], limit: float, low: float, high: float = 1.0,
                   iterations: int = 40) -> float:
    """Largest ``q`` in [low, high] with ``cost(q) <= limit`` (bisection; ``cost`` non-decreasing in ``q``).

    Returns ``low`` when even ``cost(low)`` exceeds the limit; the caller decides whether that is an error.

    >>> round(largest_within(lambda q: q * q, 0.25, 0.0), 6)
    0.5
    """
    if cost(high) <= limit:
        return high
    lo, hi = low, high
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cost(mid) <= limit else (lo, mid)
    return lo
