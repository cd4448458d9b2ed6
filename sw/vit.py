"""A timm-compatible Vision Transformer whose blocks can prune tokens.

Module and parameter names follow ``timm.models.vision_transformer.VisionTransformer`` exactly
(``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.{i}.norm1``, ``blocks.{i}.attn.qkv``,
``blocks.{i}.attn.proj``, ``blocks.{i}.norm2``, ``blocks.{i}.mlp.fc1``, ``blocks.{i}.mlp.fc2``, ``norm``,
``head``), so a timm or DeiT state dict loads without key mapping. LayerNorm eps is 1e-6, GELU is exact and
the fused ``qkv`` output is laid out as (3, heads, head_dim), as in timm.

LV-ViT (Jiang et al., 2021, the second backbone of the DynamicViT, SPViT and AS-ViT tables) is the same model
with four changes, each a constructor argument: a convolutional stem (:class:`ConvStemPatchEmbed`,
``embed_layer="conv4"``), residual branches divided by 2 (``residual_scale=0.5``, the release's
``skip_lam=2``), LayerNorm eps 1e-5 and no ``qkv`` bias, and an auxiliary token-labelling head
(``aux_head=True``: logits = head(class token) + 0.5 x max over the other tokens of aux_head(token)). Its
parameter names are those of DynamicViT's released ``LVViTDiffPruning`` (and TokenLabeling's ``lvvit_s``).

Token selectors (:class:`tokensift.sw.selection.TokenSelector`) sit in ``selectors``, a ``ModuleDict`` keyed by
the index of the block they act on; each one runs either before the block (``site="pre"``) or between the
block's attention and its MLP (``site="mid"``). The backbone never knows which method is in use.

Example:
    >>> import torch
    >>> from tokensift.sw.vit import VisionTransformer
    >>> model = VisionTransformer(img_size=28, patch_size=4, in_chans=1, num_classes=10,
    ...                           embed_dim=48, depth=2, num_heads=3)
    >>> model(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokensift.checks import check_count, check_int

from .selection import AttnInfo, TokenSelector, TokenState, masked_softmax

__all__ = ["PatchEmbed", "ConvStemPatchEmbed", "Attention", "Mlp", "Block", "VisionTransformer",
           "sincos_pos_embed"]


def _check_positive_int(name: str, value: object) -> int:
    check_int(name, value, numpy=False, show="repr")
    return check_count(name, value, numpy=False)


def _check_images(x: Tensor, in_chans: int, img_size: int) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"input images must be a torch.Tensor, not {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"input images must be a floating-point tensor, not {x.dtype}; convert them with "
                        f".float() and normalise them as the training data was")
    if x.ndim != 4 or tuple(x.shape[1:]) != (in_chans, img_size, img_size):
        raise ValueError(f"input images must have shape (batch, {in_chans}, {img_size}, {img_size}), "
                         f"not {tuple(x.shape)}")


class PatchEmbed(nn.Module):
    """Image to patch tokens: a ``patch_size`` x ``patch_size`` convolution with the same stride."""

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768):
        super().__init__()
        _check_positive_int("img_size", img_size)
        _check_positive_int("patch_size", patch_size)
        _check_positive_int("in_chans", in_chans)
        _check_positive_int("embed_dim", embed_dim)
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} must be a multiple of patch_size {patch_size}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        _check_images(x, self.in_chans, self.img_size)
        # the convolution has stride == kernel size: a linear map of each flattened patch (same numbers,
        # and much faster than a strided convolution on CPU)
        B, C, H, W = x.shape
        p, g = self.patch_size, self.grid_size
        patches = x.reshape(B, C, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(B, g * g, C * p * p)
        x = F.linear(patches, self.proj.weight.reshape(self.proj.out_channels, -1), self.proj.bias)
        return self.norm(x)

    def macs(self) -> int:
        """Multiply-accumulates of the embedding (one per weight and patch)."""
        return self.num_patches * self.in_chans * self.patch_size**2 * self.proj.out_channels


class ConvStemPatchEmbed(nn.Module):
    """LV-ViT's convolutional stem (DynamicViT's ``PatchEmbed4_2``): three convolutions with batch norm and
    ReLU at half resolution, then a ``patch_size / 2`` projection with the same stride.

    conv1 7x7 stride 2 (``in_chans`` -> 64), conv2 and conv3 3x3 (64 -> 64), all without bias; ``proj``
    (64 -> ``embed_dim``) with bias. Parameter names are the release's (``conv1``, ``bn1``, ..., ``proj``).
    """

    stem_channels = 64

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 384):
        super().__init__()
        _check_positive_int("img_size", img_size)
        _check_positive_int("patch_size", patch_size)
        _check_positive_int("in_chans", in_chans)
        _check_positive_int("embed_dim", embed_dim)
        if patch_size % 2 or img_size % patch_size:
            raise ValueError(f"the convolutional stem needs an even patch_size that divides img_size, not "
                             f"patch_size {patch_size} and img_size {img_size}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2
        c = self.stem_channels
        self.conv1 = nn.Conv2d(in_chans, c, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)
        self.proj = nn.Conv2d(c, embed_dim, kernel_size=patch_size // 2, stride=patch_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        _check_images(x, self.in_chans, self.img_size)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        return self.proj(x).flatten(2).transpose(1, 2)

    def macs(self) -> int:
        """Multiply-accumulates of the four convolutions (batch norm and ReLU not counted)."""
        half = (self.img_size // 2) ** 2  # conv1 has stride 2 and padding 3: a 112 x 112 output at 224
        c = self.stem_channels
        return (half * self.in_chans * c * 7 * 7 + 2 * half * c * c * 3 * 3
                + self.num_patches * c * (self.patch_size // 2) ** 2 * self.proj.out_channels)


class Attention(nn.Module):
    """Multi-head self-attention with an optional soft keep mask over the keys.

    ``keep`` (B, N) weights every key column: a token with keep 0 receives no attention from the others
    but still attends to itself, so no row of the attention matrix is empty (DynamicViT's rule). Without a
    mask, the fused ``scaled_dot_product_attention`` kernel runs.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        _check_positive_int("dim", dim)
        _check_positive_int("num_heads", num_heads)
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.Identity()
        self.k_norm = nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, keep: Tensor | None = None, want_info: bool = False
                ) -> tuple[Tensor, AttnInfo | None]:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # B, H, N, head_dim
        q, k = self.q_norm(q), self.k_norm(k)
        cls_attn = None
        if keep is None:
            o = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
            if want_info:
                # the class token's attention row only: O(N) extra work, not a second attention pass
                cls_attn = ((q[:, :, :1] * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)[:, :, 0]
        else:
            attn = masked_softmax((q * self.scale) @ k.transpose(-2, -1), keep)
            if want_info:
                cls_attn = attn[:, :, 0]
            o = self.attn_drop(attn) @ v
        info = None
        if want_info:
            sq = o.square().sum(dim=-1)  # (B, H, N)
            token_norm = sq.sqrt()
            if keep is not None:
                sq = sq * keep[:, None, :]
            info = AttnInfo(cls_attn=cls_attn, head_norm=sq.sum(dim=-1).sqrt(), head_token_norm=token_norm)
        x = o.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x)), info


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2, timm's ``Mlp``."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.norm = nn.Identity()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))


class DropPath(nn.Module):
    """Stochastic depth per sample (identity at inference)."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Block(nn.Module):
    """Pre-norm transformer block, split in two halves so a selector can act between them."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 norm_eps: float = 1e-6, residual_scale: float = 1.0):
        super().__init__()
        # LV-ViT divides both residual branches by its skip_lam = 2; 1.0 is the plain ViT
        self.residual_scale = residual_scale
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                              proj_drop=proj_drop)
        self.ls1 = nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.ls2 = nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward_attn(self, x: Tensor, keep: Tensor | None = None, want_info: bool = False
                     ) -> tuple[Tensor, AttnInfo | None]:
        y, info = self.attn(self.norm1(x), keep=keep, want_info=want_info)
        if self.residual_scale != 1.0:
            y = y * self.residual_scale
        return x + self.drop_path1(self.ls1(y)), info

    def forward_mlp(self, x: Tensor) -> Tensor:
        y = self.mlp(self.norm2(x))
        if self.residual_scale != 1.0:
            y = y * self.residual_scale
        return x + self.drop_path2(self.ls2(y))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_mlp(self.forward_attn(x)[0])


_EMBED_LAYERS = {"patch": PatchEmbed, "conv4": ConvStemPatchEmbed}


def sincos_pos_embed(dim: int, grid_size: int) -> Tensor:
    """(1 + grid_size**2, dim) 2-D sine-cosine position embedding, zeros for the class token (as MAE)."""
    if dim % 4:
        raise ValueError(f"a sine-cosine position embedding needs a dim divisible by 4, not {dim}")
    gy, gx = torch.meshgrid(torch.arange(grid_size, dtype=torch.float64),
                            torch.arange(grid_size, dtype=torch.float64), indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    parts = []
    for pos in (gy.flatten(), gx.flatten()):
        angle = pos[:, None] * omega[None]
        parts += [angle.sin(), angle.cos()]
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), torch.cat(parts, dim=1)]).float()


class VisionTransformer(nn.Module):
    """ViT / DeiT with optional token selectors.

    Args:
        img_size, patch_size, in_chans, num_classes, embed_dim, depth, num_heads, mlp_ratio, qkv_bias,
        drop_rate, attn_drop_rate, drop_path_rate: as in timm.
        weight_init, pos_embed_init: initialisation (see ``_init_weights``); no effect on loading weights.
        embed_layer: ``"patch"`` (one strided convolution, ViT/DeiT) or ``"conv4"`` (LV-ViT's stem).
        norm_eps: LayerNorm eps (1e-6 in timm's ViT/DeiT, 1e-5 in LV-ViT).
        residual_scale: factor on every residual branch (0.5 in LV-ViT, whose release divides by 2).
        aux_head: LV-ViT's token-labelling head: logits = head(class token) + 0.5 x the per-class maximum
            of aux_head over the other tokens (those still kept, when pruning; none kept: no auxiliary term).
        selectors: block index -> :class:`TokenSelector`; empty for the dense model.
    """

    def __init__(self, *, img_size: int = 224, patch_size: int = 16, in_chans: int = 3,
                 num_classes: int = 1000, embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0, weight_init: str = "timm",
                 pos_embed_init: str = "trunc_normal", embed_layer: str = "patch", norm_eps: float = 1e-6,
                 residual_scale: float = 1.0, aux_head: bool = False,
                 selectors: Mapping[int, TokenSelector] | None = None):
        super().__init__()
        _check_positive_int("depth", depth)
        _check_positive_int("num_classes", num_classes)
        if embed_layer not in _EMBED_LAYERS:
            raise ValueError(f"embed_layer must be one of {', '.join(map(repr, _EMBED_LAYERS))}, "
                             f"not {embed_layer!r}")
        for name, value in (("norm_eps", norm_eps), ("residual_scale", residual_scale)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, not {value!r}")
            if not 0 < value < float("inf"):
                raise ValueError(f"{name} must be positive and finite, not {value}")
        if not isinstance(aux_head, bool):
            raise TypeError(f"aux_head must be True or False, not {aux_head!r}")
        self.num_classes = num_classes
        self.embed_dim = self.num_features = embed_dim
        self.num_prefix_tokens = 1
        self.patch_embed = _EMBED_LAYERS[embed_layer](img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        # stochastic depth grows linearly over the blocks (timm's rule), computed without a tensor so that
        # a model can be built on the meta device (shapes only, e.g. to count FLOPs)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, proj_drop=drop_rate, attn_drop=attn_drop_rate,
                  drop_path=dpr[i], norm_eps=norm_eps, residual_scale=residual_scale)
            for i in range(depth)
        ])
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.fc_norm = nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes)
        self.aux_head = nn.Linear(embed_dim, num_classes) if aux_head else None
        self._init_weights(weight_init, pos_embed_init)
        self.selectors = nn.ModuleDict()
        for index, selector in (selectors or {}).items():
            self.add_selector(index, selector)

    # -- construction -----------------------------------------------------------------------------------
    def _init_weights(self, weight_init: str, pos_embed_init: str) -> None:
        """``weight_init``: "timm" (truncated normal, std 0.02) or "jax" (Xavier-uniform linears, as timm's
        "jax" mode). ``pos_embed_init``: "trunc_normal" (std 0.02) or "sincos" (fixed 2-D sine-cosine values,
        then learned, as MAE). Small data sets train much faster with "jax" + "sincos"."""
        if weight_init not in ("timm", "jax"):
            raise ValueError(f"weight_init must be 'timm' or 'jax', not {weight_init!r}")
        if pos_embed_init not in ("trunc_normal", "sincos"):
            raise ValueError(f"pos_embed_init must be 'trunc_normal' or 'sincos', not {pos_embed_init!r}")
        if pos_embed_init == "sincos":
            with torch.no_grad():
                self.pos_embed.copy_(sincos_pos_embed(self.embed_dim, self.patch_embed.grid_size)[None])
        else:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                if weight_init == "jax":
                    nn.init.xavier_uniform_(m.weight)
                else:
                    nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def add_selector(self, block_index: int, selector: TokenSelector) -> None:
        """Attach ``selector`` to block ``block_index`` (before it or between its attention and MLP)."""
        if not isinstance(selector, TokenSelector):
            raise TypeError(f"selector must be a TokenSelector, not {type(selector).__name__}")
        if not isinstance(block_index, int) or not 0 <= block_index < len(self.blocks):
            raise ValueError(f"selector block index must be in [0, {len(self.blocks) - 1}], not {block_index!r}")
        if str(block_index) in self.selectors:
            raise ValueError(f"block {block_index} already has a token selector")
        if selector.site == "pre" and block_index == 0 and selector.needs_attn_info:
            raise ValueError("a selector that needs attention scores cannot run before block 0")
        self.selectors[str(block_index)] = selector
        # stages are numbered in block order, so the schedule is independent of insertion order
        ordered = sorted(self.selectors.items(), key=lambda kv: int(kv[0]))
        self.selectors = nn.ModuleDict(ordered)
        for stage, (_, sel) in enumerate(ordered):
            sel.stage = stage

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def num_patches(self) -> int:
        return self.patch_embed.num_patches

    def stage_selectors(self) -> list[tuple[int, TokenSelector]]:
        """(block index, selector) pairs in stage order."""
        return [(int(k), s) for k, s in self.selectors.items()]

    def set_keep_ratio(self, keep_ratio: float) -> None:
        """Change the base keep ratio of every selector at run time (no retraining)."""
        for _, sel in self.stage_selectors():
            sel.set_keep_ratio(keep_ratio)

    # -- forward ----------------------------------------------------------------------------------------
    def _embed(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.pos_drop(x)

    def forward_state(self, x: Tensor, path: str | None = None) -> TokenState:
        """Run embedding, blocks and final norm; return the final :class:`TokenState`.

        ``path`` is ``"mask"`` (tokens stay, masked in attention: differentiable decisions) or
        ``"gather"`` (tokens are removed, so compute shrinks); by default ``"mask"`` in training mode
        and ``"gather"`` in eval mode.
        """
        if path is None:
            path = "mask" if self.training else "gather"
        if path not in ("mask", "gather"):
            raise ValueError(f"path must be 'mask' or 'gather', not {path!r}")
        x = self._embed(x)
        state = TokenState.initial(x, path=path)
        sels = {int(k): s for k, s in self.selectors.items()}
        for i, blk in enumerate(self.blocks):
            pre, mid = None, None
            sel = sels.get(i)
            if sel is not None:
                pre, mid = (sel, None) if sel.site == "pre" else (None, sel)
            nxt = sels.get(i + 1)
            want_info = (mid is not None and mid.needs_attn_info) or (
                nxt is not None and nxt.site == "pre" and nxt.needs_attn_info)
            if pre is not None:
                state = pre(state, state.attn_info)
            state.record_block(attn=True)
            x, info = blk.forward_attn(state.x, keep=state.keep, want_info=want_info)
            state = state.replace(x=x, attn_info=info)
            if mid is not None:
                state = mid(state, info)
            state.record_block(attn=False)
            state = state.replace(x=blk.forward_mlp(state.x))
        return state.replace(x=self.norm(state.x))

    def forward_features(self, x: Tensor) -> Tensor:
        return self.forward_state(x).x

    def forward_head(self, x: Tensor, pre_logits: bool = False, keep: Tensor | None = None) -> Tensor:
        """Logits from the final tokens ``x`` (B, N, C). With an auxiliary head, ``keep`` (B, N) marks the
        tokens still kept (mask path, or padding on the gather path): the others do not enter its maximum."""
        cls = self.head_drop(self.fc_norm(x[:, 0]))  # class token pooling ('token'), as DeiT
        if pre_logits:
            return cls
        logits = self.head(cls)
        if self.aux_head is not None and x.shape[1] > 1:
            aux = self.aux_head(x[:, 1:])
            if keep is not None:
                kept = keep[:, 1:, None] > 0.5
                # an image that kept no token besides the class token (an adaptive method may prune them
                # all) gets no auxiliary term
                aux = aux.masked_fill(~kept, float("-inf")).max(dim=1).values
                aux = aux.masked_fill(~kept.any(dim=1), 0.0)
            else:
                aux = aux.max(dim=1).values
            logits = logits + 0.5 * aux
        return logits

    def forward(self, x: Tensor) -> Tensor:
        state = self.forward_state(x)
        return self.forward_head(state.x, keep=state.keep)

    def extra_repr(self) -> str:
        return f"num_patches={self.num_patches}, selectors={len(self.selectors)}"

