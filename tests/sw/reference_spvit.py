"""SPViT as its release computes it, in plain torch (no timm), to test :mod:`tokensift.sw.methods.spvit`.

Written from PeiyanFlying/SPViT ``vit_l2_3keep_senet.py`` (commit a1f9423):

* lines 155-200 ``Attention``: the masked softmax with ``eps=1e-6`` in training, ``0`` in eval;
* lines 203-231 ``Block`` (the ``i is None`` branch, the one the forward uses);
* lines 326-403 ``MultiheadPredictorLG``: the per-token SE head weights (``AdaptiveAvgPool2d((n, H))`` on
  (B, N, C) is each head's channel mean per token; Linear, GELU, Linear, sigmoid), one ``in_conv`` /
  ``out_conv`` module listed ``H`` times (so the heads share weights), and the weighted means of the per-head
  log-softmax and softmax;
* lines 508-612 ``VisionTransformerDiffPruning.forward``: the predictor sees ``x[:, 1:]`` (patches and the
  package tokens so far, the latter with policy 1), Gumbel-softmax decisions times the previous ones, the
  package token ``sum(keep probability x newly dropped token)`` appended at every stage (the division is
  commented out in the release), tokens masked, never removed.

Left out: dropout/drop path (0 in eval), the NaN prints and ``nan_to_num``, and the eval branch's side
effects (the sparsity statistics moved to CUDA, the scores appended to ``score_placeholder.json``); the
number of patches is the model's instead of the hard-coded 14 x 14. ``gumbel`` replaces
``F.gumbel_softmax(pred_score, hard=True)`` so that tests can give both models the same noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from reference_vit import Mlp, ReferenceViT, softmax_with_policy
from torch import Tensor, nn


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, policy: Tensor | None) -> Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0].float(), qkv[1].float(), qkv[2].float()
        attn = (q @ k.transpose(-2, -1)) * self.scale
        if policy is None:
            attn = attn.softmax(dim=-1)
        elif not self.training:
            attn = softmax_with_policy(attn, policy, 0)
        else:
            attn = softmax_with_policy(attn, policy, 1e-6)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x: Tensor, policy: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), policy=policy)
        return x + self.mlp(self.norm2(x))


class MultiheadPredictorLG(nn.Module):
    def __init__(self, num_heads: int, embed_dim: int):
        super().__init__()
        self.num_heads, self.embed_dim = num_heads, embed_dim
        hd = embed_dim // num_heads
        self.senet = nn.Sequential(nn.Linear(num_heads, num_heads // 2), nn.GELU(),
                                   nn.Linear(num_heads // 2, num_heads), nn.Sigmoid())
        onehead_in_conv = nn.Sequential(nn.LayerNorm(hd), nn.Linear(hd, hd), nn.GELU())
        onehead_out_conv = nn.Sequential(nn.Linear(hd, hd // 2), nn.GELU(), nn.Linear(hd // 2, hd // 4), nn.GELU(),
                                         nn.Linear(hd // 4, 2))
        self.in_conv = nn.ModuleList([onehead_in_conv for _ in range(num_heads)])
        self.out_conv = nn.ModuleList([onehead_out_conv for _ in range(num_heads)])

    def forward(self, x: Tensor, policy: Tensor) -> tuple[Tensor, Tensor]:
        multihead_score = 0
        multihead_softmax_score = 0
        _, n, _ = x.size()
        x_head = nn.AdaptiveAvgPool2d((n, self.num_heads))(x)
        head_weights = self.senet(x_head)
        head_weights_sum = torch.unsqueeze(torch.sum(head_weights, dim=2), dim=2)
        hd = self.embed_dim // self.num_heads
        for i in range(self.num_heads):
            x_single = self.in_conv[i](x[:, :, hd * i:hd * (i + 1)])
            B, N, C = x_single.size()
            local_x = x_single[:, :, :C // 2]
            global_x = (x_single[:, :, C // 2:] * policy).sum(dim=1, keepdim=True) / torch.sum(
                policy, dim=1, keepdim=True)
            x_single = torch.cat([local_x, global_x.expand(B, N, C // 2)], dim=-1)
            x_single = self.out_conv[i](x_single)
            multihead_softmax_score += F.softmax(x_single, dim=-1) * head_weights[:, :, i:i + 1]
            multihead_score += F.log_softmax(x_single, dim=-1) * head_weights[:, :, i:i + 1]
        return multihead_score / head_weights_sum, multihead_softmax_score / head_weights_sum


def release_gumbel(pred_score: Tensor) -> Tensor:
    return F.gumbel_softmax(pred_score, hard=True)


class ReferenceSPViT(ReferenceViT):
    """``forward(x, gumbel)`` -> (logits, per-stage hard keep decisions of the patches (B, num_patches),
    per-stage package tokens (B, C))."""

    def __init__(self, *, pruning_loc: tuple[int, ...], **kwargs):
        super().__init__(Block, **kwargs)
        self.pruning_loc = tuple(pruning_loc)
        self.score_predictor = nn.ModuleList(MultiheadPredictorLG(kwargs["num_heads"], kwargs["embed_dim"])
                                             for _ in pruning_loc)

    def forward(self, x: Tensor, gumbel=release_gumbel) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        B = x.shape[0]
        x = self.embed(x)
        init_n = self.num_patches
        p_count = 0
        decisions, packages = [], []
        policy = torch.ones(B, init_n + 1, 1, dtype=x.dtype, device=x.device)
        prev_decision = torch.ones(B, init_n, 1, dtype=x.dtype, device=x.device)
        for i, blk in enumerate(self.blocks):
            if i in self.pruning_loc:
                spatial_x = x[:, 1:]
                if i != self.pruning_loc[0]:
                    rep_decision = torch.ones(B, p_count, 1, dtype=x.dtype, device=x.device)
                    prev_decision = torch.cat([prev_decision, rep_decision], dim=1)
                pred_score, softmax_score = self.score_predictor[p_count](spatial_x, prev_decision)
                pred_score = pred_score.reshape(B, -1, 2)
                softmax_score = softmax_score.reshape(B, -1, 2)
                if i == self.pruning_loc[0]:
                    hard_keep_decision = gumbel(pred_score)[:, :, 0:1] * prev_decision
                    hard_drop_decision = (1 - hard_keep_decision) - (1 - prev_decision)
                else:
                    hard_keep_decision_all = gumbel(pred_score)[:, :, 0:1] * prev_decision
                    hard_keep_decision = torch.cat([hard_keep_decision_all[:, :-p_count], rep_decision], dim=1)
                    hard_drop_decision = (1 - hard_keep_decision) - (1 - prev_decision)
                placeholder_score = softmax_score[:, :, 0:1] * hard_drop_decision
                represent_token = torch.unsqueeze(torch.sum(spatial_x * placeholder_score, dim=1), dim=1)
                x = torch.cat((x, represent_token), dim=1)
                if i != self.pruning_loc[0]:
                    hard_keep_decision = hard_keep_decision[:, :-p_count]
                cls_policy = torch.ones(B, 1, 1, dtype=hard_keep_decision.dtype, device=hard_keep_decision.device)
                rep_policy = torch.ones(B, p_count + 1, 1, dtype=hard_keep_decision.dtype,
                                        device=hard_keep_decision.device)
                policy = torch.cat([cls_policy, hard_keep_decision, rep_policy], dim=1)
                x = blk(x, policy=policy)
                prev_decision = hard_keep_decision
                decisions.append(hard_keep_decision.reshape(B, init_n))
                packages.append(represent_token[:, 0])
                p_count += 1
            else:
                x = blk(x, policy)
        return self.classify(x), decisions, packages
