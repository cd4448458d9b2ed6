"""AS-ViT as its release computes it, in plain torch (no timm), to test :mod:`tokensift.sw.methods.asvit`.

Written from Cydia2018/AS-ViT ``vit.py`` (commit ea7ccdb):

* lines 156-208 ``Attention``: the masked softmax (``eps=1e-6``) whenever a policy is given, and the score
  of each patch token, the class token's attention summed over heads weighted by the per-token head
  importance ``||o_hj|| / (sum_g ||o_gj|| + 1e-8)``;
* lines 258-283 ``Block``;
* lines 408-426 ``AdaptiveSparsityModule``: keep when ``score > keep_threshold`` (at inference), a
  straight-through sigmoid with ``tau=1e-4`` in training;
* lines 547-626 ``VisionTransformerDiffPruning.forward`` (the default, non-accumulating mode): each stage
  scores with the previous block's attention; training masks (the policy is the current decision alone),
  inference at batch size 1 removes the tokens.

The release's ``main.py`` and ``infer.py`` build the model with ``pruning_loc = [4, 7, 10]``. Left out:
dropout/drop path, the FLOPs bookkeeping and ``viz_mode``; the batched inference branch (the batch's
``floor(mean)`` count in every image) is :meth:`ReferenceASViT.forward_batched`. ``target_index`` (the blocks
whose attention is kept, 2..11 in the release) is every block, so that a stage before block 2 of a smaller
model still has a score; with the release's locations it makes no difference.
"""

from __future__ import annotations

import torch
from reference_vit import Mlp, ReferenceViT, softmax_with_policy
from torch import Tensor, nn


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, policy: Tensor | None) -> tuple[Tensor, Tensor]:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1) if policy is None else softmax_with_policy(attn, policy)
        attn_out = attn @ v
        x = self.proj(attn_out.transpose(1, 2).reshape(B, N, C))
        cls_attn = attn[:, :, 0, 1:]
        head_importance = attn_out[..., 1:, :].norm(dim=-1)
        head_importance = head_importance / (head_importance.sum(dim=1, keepdim=True) + 1e-8)
        return x, (cls_attn * head_importance).sum(dim=1)


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x: Tensor, policy: Tensor | None = None) -> tuple[Tensor, Tensor]:
        tmp, attn = self.attn(self.norm1(x), policy=policy)
        x = x + tmp
        return x + self.mlp(self.norm2(x)), attn


class ReferenceASViT(ReferenceViT):
    """``forward(x)`` -> (logits, per-stage keep decisions of the patches: (B, num_patches) 0/1 values in
    training, the kept patch indices (sorted) at inference, where the batch must be one image)."""

    def __init__(self, *, pruning_loc: tuple[int, ...], thresholds: list[float], **kwargs):
        super().__init__(Block, **kwargs)
        self.pruning_loc = tuple(pruning_loc)
        self.keep_threshold = nn.Parameter(torch.tensor(thresholds))

    def _decide(self, score: Tensor, p_count: int):
        thr = self.keep_threshold[p_count]
        if not self.training:
            return score > thr
        y_soft = torch.sigmoid((score - thr) / 1e-4)
        return (y_soft > 0.5).float() - y_soft.detach() + y_soft

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        B = x.shape[0]
        if not self.training and B != 1:
            raise ValueError("the release's per-image rule runs at batch size 1; see forward_batched")
        x = self.embed(x)
        init_n = self.num_patches
        policy = torch.ones(B, init_n + 1, 1, dtype=x.dtype, device=x.device)
        patch_index = torch.arange(init_n, device=x.device)[None].expand(B, -1)
        global_cls_attn, p_count, decisions = None, 0, []
        for i, blk in enumerate(self.blocks):
            if i in self.pruning_loc:
                if self.training:
                    hard_keep_decision = self._decide(global_cls_attn, p_count)[:, :, None]
                    policy = torch.cat([torch.ones(B, 1, 1, dtype=x.dtype, device=x.device), hard_keep_decision], 1)
                    x, attn = blk(x, policy=policy)
                    decisions.append(hard_keep_decision.reshape(B, init_n))
                else:
                    keep_policy = torch.nonzero(self._decide(global_cls_attn, p_count)[0]).reshape(1, -1)
                    now_policy = torch.cat([torch.zeros(1, 1, dtype=keep_policy.dtype), keep_policy + 1], dim=1)
                    x = x[:, now_policy[0]]
                    patch_index = patch_index[:, keep_policy[0]]
                    x, attn = blk(x)
                    decisions.append(patch_index[0].sort().values)
                p_count += 1
            else:
                x, attn = blk(x, policy) if self.training else blk(x)
            global_cls_attn = attn
        return self.classify(x), decisions

    @torch.no_grad()
    def forward_batched(self, x: Tensor) -> Tensor:
        """The release's batched inference: every image keeps the top ``floor(kept / B)`` scores."""
        B = x.shape[0]
        x = self.embed(x)
        global_cls_attn, p_count = None, 0
        for i, blk in enumerate(self.blocks):
            if i in self.pruning_loc:
                k = self._decide(global_cls_attn, p_count).sum().item() // B
                keep_policy = torch.argsort(global_cls_attn, dim=1, descending=True)[:, :k]
                now_policy = torch.cat([torch.zeros(B, 1, dtype=keep_policy.dtype), keep_policy + 1], dim=1)
                x = torch.gather(x, 1, now_policy[..., None].expand(-1, -1, x.shape[-1]))
                p_count += 1
            x, global_cls_attn = blk(x)
        return self.classify(x)
