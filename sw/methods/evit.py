"""EViT (Liang et al., 2022): keep the tokens the class token attends to most, fuse the rest into one.

Runs inside its block, between attention and MLP (``site="mid"``), and reuses the class token's attention
row of that block (averaged over heads): no extra parameters. The dropped tokens are summed, weighted by
their class attention, into one fused token appended at the end; at a later stage the fused token is a
candidate like any other (as in EViT's code). The same rule drives the hardware's token selector.
"""

from __future__ import annotations

import math

from torch import Tensor

from ..selection import AttnInfo, TokenSelector, TokenState

__all__ = ["EViTSelector"]


class EViTSelector(TokenSelector):
    """One EViT stage: keep ``ceil(rho * candidates)`` tokens by class attention, fuse the rest."""

    site = "mid"
    needs_attn_info = True

    def __init__(self, keep_ratio: float, fuse_token: bool = True):
        super().__init__(keep_ratio)
        self.fuse_token = fuse_token

    def score(self, state: TokenState, info: AttnInfo | None) -> Tensor:
        return info.cls_attn.mean(dim=1)  # (B, N), mean over heads

    def extra_tokens(self, state: TokenState, keep: Tensor, info: AttnInfo | None) -> Tensor | None:
        if not self.fuse_token:
            return None
        dropped = state.candidates().to(keep.dtype) * (1.0 - keep)
        weight = info.cls_attn.mean(dim=1) * dropped  # (B, N)
        return (state.x * weight[..., None]).sum(dim=1, keepdim=True)

    def expected_tokens(self, n_in: int) -> int:
        if self.keep_ratio >= 1.0:
            return n_in  # the stage is skipped (see forward): nothing dropped, no fused token
        n_cand = n_in - 1
        return 1 + math.ceil(n_cand * self.keep_ratio - 1e-9) + (1 if self.fuse_token else 0)

    def macs(self, n_in, n_out, dim: int):
        # the fused token: one multiply-accumulate per channel of every dropped token
        if not self.fuse_token or self.keep_ratio >= 1.0:
            return 0 * n_in
        return (n_in - (n_out - 1)) * dim

    def forward(self, state: TokenState, info: AttnInfo | None = None) -> TokenState:
        if self.keep_ratio >= 1.0:
            return state  # nothing to drop, no fused token (EViT skips the stage)
        return super().forward(state, info)
