"""The ViT pieces the SPViT and AS-ViT releases share (timm's DeiT code with DynamicViT's masked softmax), in
plain torch, for the reference models in ``reference_spvit.py`` and ``reference_asvit.py``.

Written from PeiyanFlying/SPViT ``vit_l2_3keep_senet.py`` (commit a1f9423) lines 137-152 (``Mlp``), 168-179
(``Attention.softmax_with_policy``) and 234-251 (``PatchEmbed``); Cydia2018/AS-ViT ``vit.py`` (commit
ea7ccdb) has the same code at lines 136-153, 169-181 and 338-355. The parameter names are timm's, the ones
:mod:`tokensift.sw` uses, so one state dict loads into both.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def softmax_with_policy(attn: Tensor, policy: Tensor, eps: float = 1e-6) -> Tensor:
    """The releases' masked softmax: key ``j`` weighted by ``policy[j]``, the diagonal by 1, and ``eps``."""
    B, N, _ = policy.size()
    attn_policy = policy.reshape(B, 1, 1, N)
    eye = torch.eye(N, dtype=attn_policy.dtype, device=attn_policy.device).view(1, 1, N, N)
    attn_policy = attn_policy + (1.0 - attn_policy) * eye
    max_att = torch.max(attn, dim=-1, keepdim=True)[0]
    attn = attn - max_att
    attn = attn.to(torch.float32).exp_() * attn_policy.to(torch.float32)
    attn = (attn + eps / N) / (attn.sum(dim=-1, keepdim=True) + eps)
    return attn.type_as(max_att)


class ReferenceViT(nn.Module):
    """DeiT's embedding, blocks and head; ``block_cls`` builds each block (the releases differ there)."""

    def __init__(self, block_cls, *, img_size: int, patch_size: int, in_chans: int, num_classes: int,
                 embed_dim: int, depth: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.num_patches = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, embed_dim))
        self.blocks = nn.ModuleList(block_cls(embed_dim, num_heads, int(embed_dim * mlp_ratio))
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return x + self.pos_embed

    def classify(self, x: Tensor) -> Tensor:
        return self.head(self.norm(x)[:, 0])
