"""Token selection shared by every pruning method: score tokens -> decide -> keep.

Pure functions do the work (deterministic top-k, packing a keep mask into indices, gathering, masked
softmax, straight-through Gumbel decisions); :class:`TokenSelector` is the thin module a method subclasses.

Two paths, chosen per forward pass and carried in :class:`TokenState`:

* ``"mask"`` (training): no token is removed. Decisions are soft or straight-through values in [0, 1],
  multiplied into a cumulative ``keep`` mask that every following attention uses as key weights; a
  masked token still attends to itself, so no attention row is empty.
* ``"gather"`` (inference): tokens are really removed with ``torch.gather``, so compute shrinks. When the
  images of a batch keep different numbers of tokens, the shorter ones are padded and ``keep`` marks the
  valid positions; when they keep the same number (every top-k method, and any batch of one) no mask is
  needed and the fused attention kernel runs.

For the same hard decisions both paths give the same predictions.

Tie rule (shared with the hardware): among equal scores the lower token index wins, and kept tokens stay in
their original order.

A new method subclasses :class:`TokenSelector` and overrides :meth:`TokenSelector.score` (and optionally
``decide``, ``num_keep``, ``extra_tokens``, ``expected_tokens``, ``macs``). Attention-based scores read
:class:`AttnInfo` (the class token's attention row and per-head output norms), which blocks compute only
when a selector sets ``needs_attn_info``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AttnInfo",
    "Decision",
    "TokenState",
    "TokenSelector",
    "check_keep_ratio",
    "stable_topk_mask",
    "stable_topk_indices",
    "pack_keep_mask",
    "gather_tokens",
    "masked_softmax",
    "gumbel_keep",
]


# -- pure functions ---------------------------------------------------------------------------------------
def check_keep_ratio(keep_ratio: object) -> float:
    """Validate a keep ratio: a real number in (0, 1]."""
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)):
        raise TypeError(f"keep ratio must be a number, not {keep_ratio!r}")
    if not 0.0 < keep_ratio <= 1.0:  # also rejects NaN
        raise ValueError(f"keep ratio must be in (0, 1], not {keep_ratio}")
    return float(keep_ratio)


def _ranks(scores: Tensor, candidates: Tensor | None) -> Tensor:
    """Rank of each token (0 = best) under the tie rule: higher score first, then lower index."""
    if candidates is not None:
        scores = scores.masked_fill(~candidates, float("-inf"))
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
    return ranks


def stable_topk_mask(scores: Tensor, k: int | Tensor, candidates: Tensor | None = None) -> Tensor:
    """Boolean (B, N) mask of the ``k`` best candidates per row; ties go to the lower index.

    ``k`` is an int or a (B,) tensor (a different count per image); ``candidates`` (B, N) bool restricts the
    choice (non-candidates are never selected).

    >>> stable_topk_mask(torch.tensor([[1.0, 2.0, 2.0, 2.0]]), 2)
    tensor([[False,  True,  True, False]])
    """
    if isinstance(k, Tensor):
        k = k.reshape(-1, *([1] * (scores.ndim - 1)))
    mask = _ranks(scores, candidates) < k
    return mask if candidates is None else mask & candidates


def stable_topk_indices(scores: Tensor, k: int) -> Tensor:
    """Indices (B, k) of the ``k`` best tokens per row, in ascending index order (tie rule as above)."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]
    return order.sort(dim=-1).values


def pack_keep_mask(keep: Tensor) -> tuple[Tensor, Tensor | None]:
    """Turn a boolean keep mask (B, N) into (indices (B, K), valid (B, K) or None).

    Kept positions come first, in ascending order; K is the largest count in the batch. ``valid`` marks
    real entries and is None when every row keeps K tokens (no padding).
    """
    counts = keep.sum(dim=-1)
    k_max = int(counts.max())
    order = torch.sort((~keep).to(torch.uint8), dim=-1, stable=True).indices[..., :k_max]
    if bool((counts == k_max).all()):
        return order, None
    valid = torch.arange(k_max, device=keep.device) < counts[..., None]
    return order, valid


def gather_tokens(x: Tensor, indices: Tensor) -> Tensor:
    """x (B, N, C), indices (B, K) -> (B, K, C)."""
    return torch.gather(x, 1, indices[..., None].expand(-1, -1, x.shape[-1]))


def masked_softmax(logits: Tensor, keep: Tensor) -> Tensor:
    """Softmax over the last axis with key weights ``keep`` (B, N); differentiable in ``keep``.

    ``logits`` is (B, H, N, N). Entry (i, j) is weighted by keep[j], except the diagonal, which is weighted
    by 1: a dropped token attends only to itself, and no row is empty. With a 0/1 mask this equals the
    softmax over the kept tokens alone.
    """
    n = logits.shape[-1]
    eye = torch.eye(n, dtype=logits.dtype, device=logits.device)
    weight = keep[:, None, None, :].to(logits.dtype)
    weight = weight + (1.0 - weight) * eye  # (B, 1, N, N)
    # subtract the row max over positions that count, so the largest counted term is exp(0) = 1
    row_max = logits.detach().masked_fill(weight == 0, float("-inf")).amax(dim=-1, keepdim=True)
    e = (logits - row_max).exp() * weight
    return e / e.sum(dim=-1, keepdim=True)


def gumbel_keep(keep_logits: Tensor, tau: float = 1.0) -> Tensor:
    """Hard straight-through Gumbel-softmax keep decisions (values 0/1, gradients of the soft sample).

    ``keep_logits`` is log p(keep) - log p(drop); this is ``F.gumbel_softmax(..., hard=True)[..., 0]`` on
    the two-class log-probabilities, as DynamicViT trains.
    """
    pair = torch.stack([keep_logits, torch.zeros_like(keep_logits)], dim=-1)
    return F.gumbel_softmax(pair, tau=tau, hard=True)[..., 0]


# -- state ------------------------------------------------------------------------------------------------
@dataclass
class AttnInfo:
    """What an attention layer exposes when asked.

    Attributes:
        cls_attn: (B, H, N) the class token's attention probabilities over all tokens.
        head_norm: (B, H) L2 norm of each head's output over the valid tokens (head importance).
        head_token_norm: (B, H, N) L2 norm of each head's output at each token (AS-ViT's per-token head
            importance).
    """

    cls_attn: Tensor
    head_norm: Tensor
    head_token_norm: Tensor | None = None


@dataclass
class Decision:
    """One stage's decision over the N tokens that entered it.

    ``keep`` (B, N) the decision, cumulative with the earlier ones; ``scores`` (B, N); ``index`` (B, N) the
    original positions of those tokens (-1 for added tokens).
    """

    stage: int
    block: int
    keep: Tensor
    scores: Tensor
    index: Tensor
    num_protected: int


@dataclass
class TokenState:
    """The token sequence flowing through the blocks.

    Attributes:
        x: (B, N, C) tokens; position 0 is the class token.
        keep: (B, N) key weights: the cumulative soft mask on the ``"mask"`` path, the valid-token mask
            (padding) on the ``"gather"`` path, or None when every token counts.
        index: (B, N) original position of each token (0 = class token, 1.. = patches, -1 = a token a
            method added, e.g. EViT's fused token).
        num_protected: leading tokens no selector may drop (the class token, and e.g. a package token).
        path: ``"mask"`` or ``"gather"``.
        decisions: one :class:`Decision` per stage run so far.
        attn_tokens / mlp_tokens: per block, the number of tokens (per image, a (B,) tensor or an int) that
            entered attention and the MLP: the actual token schedule, for FLOPs.
    """

    x: Tensor
    keep: Tensor | None
    index: Tensor
    num_protected: int = 1
    path: str = "gather"
    attn_info: AttnInfo | None = None
    decisions: list[Decision] = field(default_factory=list)
    attn_tokens: list[Tensor | int] = field(default_factory=list)
    mlp_tokens: list[Tensor | int] = field(default_factory=list)

    @classmethod
    def initial(cls, x: Tensor, path: str = "gather") -> TokenState:
        index = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
        return cls(x=x, keep=None, index=index, path=path)

    def replace(self, **changes) -> TokenState:
        return replace(self, **changes)

    def token_counts(self) -> Tensor | int:
        """Tokens per image that count (a (B,) tensor, fractional for soft masks), or N when all do."""
        return self.x.shape[1] if self.keep is None else self.keep.sum(dim=-1)

    def record_block(self, attn: bool) -> None:
        (self.attn_tokens if attn else self.mlp_tokens).append(self.token_counts())

    def candidates(self) -> Tensor:
        """(B, N) bool: tokens a selector may drop (not protected, still kept)."""
        B, N = self.index.shape
        cand = torch.ones(B, N, dtype=torch.bool, device=self.x.device)
        cand[:, : self.num_protected] = False
        if self.keep is not None:
            cand &= self.keep > 0.5
        return cand


# -- the module a method subclasses ----------------------------------------------------------------------
class TokenSelector(nn.Module):
    """Base class: score the tokens, decide which to keep, keep them (mask or gather).

    Class attributes a subclass may set:
        site: ``"pre"`` (runs before its block) or ``"mid"`` (between the block's attention and MLP).
        needs_attn_info: the selector reads :class:`AttnInfo` from the attention just before it.
        adaptive: the kept count depends on each image (e.g. a threshold); ``expected_tokens`` is then the
            worst case (or, for a method trained towards a schedule, as SPViT, that schedule), and FLOPs
            are counted on images (``count_flops(model, images)``).

    ``stage`` (0, 1, 2, ...) is assigned by the model in block order.
    """

    site: str = "pre"
    needs_attn_info: bool = False
    adaptive: bool = False

    def __init__(self, keep_ratio: float):
        super().__init__()
        self.keep_ratio = check_keep_ratio(keep_ratio)
        self.stage = 0

    def set_keep_ratio(self, keep_ratio: float) -> None:
        self.keep_ratio = check_keep_ratio(keep_ratio)

    # -- hooks ---------------------------------------------------------------------------------------
    def score(self, state: TokenState, info: AttnInfo | None) -> Tensor:
        """(B, N) scores, higher = more worth keeping (entries of protected tokens are ignored)."""
        raise NotImplementedError(f"{type(self).__name__} must implement score()")

    def num_keep(self, state: TokenState) -> int | Tensor:
        """How many candidates to keep: an int, or a (B,) tensor. Default: ceil(keep_ratio x candidates)."""
        n = state.candidates().sum(dim=-1)
        return torch.ceil(n.to(torch.float64) * self.keep_ratio - 1e-9).to(torch.long)

    def decide(self, scores: Tensor, state: TokenState) -> Tensor:
        """(B, N) keep values in [0, 1] for the candidates. Default: deterministic hard top-k."""
        return stable_topk_mask(scores, self.num_keep(state), state.candidates()).to(state.x.dtype)

    def extra_tokens(self, state: TokenState, keep: Tensor, info: AttnInfo | None) -> Tensor | None:
        """Tokens (B, E, C) to append after the decision (e.g. a fused token); None for none."""
        return None

    def expected_tokens(self, n_in: int) -> int:
        """Static schedule: tokens leaving the stage (all tokens, protected and added ones included)."""
        n_cand = n_in - 1
        return n_in - n_cand + math.ceil(n_cand * self.keep_ratio - 1e-9)

    def macs(self, n_in, n_out, dim: int):
        """Multiply-accumulates of scoring and fusing; ints or tensors (for differentiable budgets)."""
        return 0 * n_in

    # -- the stage -----------------------------------------------------------------------------------
    def forward(self, state: TokenState, info: AttnInfo | None = None) -> TokenState:
        if self.needs_attn_info and info is None:
            raise RuntimeError(f"{type(self).__name__} needs attention info but none was computed")
        scores = self.score(state, info)
        keep = self.decide(scores, state)
        prot = torch.ones_like(keep[:, : state.num_protected])
        keep = torch.cat([prot, keep[:, state.num_protected:]], dim=1)
        if state.keep is not None:
            keep = keep * state.keep  # cumulative (and padding stays out)
        block = len(state.attn_tokens) - (1 if self.site == "mid" else 0)
        state.decisions.append(Decision(self.stage, block, keep, scores, state.index, state.num_protected))
        extra = self.extra_tokens(state, keep, info)
        if state.path == "mask":
            x, index = state.x, state.index
        else:
            indices, valid = pack_keep_mask(keep > 0.5)
            x, index = gather_tokens(state.x, indices), torch.gather(state.index, 1, indices)
            keep = None if valid is None else valid.to(x.dtype)
        if extra is not None:
            B, E = extra.shape[:2]
            x = torch.cat([x, extra.to(x.dtype)], dim=1)
            index = torch.cat([index, index.new_full((B, E), -1)], dim=1)
            if keep is not None:
                keep = torch.cat([keep, keep.new_ones(B, E)], dim=1)
        return state.replace(x=x, keep=keep, index=index, attn_info=None)

    def extra_repr(self) -> str:
        return f"keep_ratio={self.keep_ratio}, site={self.site!r}, stage={self.stage}"
