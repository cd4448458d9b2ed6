"""FLOPs of a (pruned) ViT, counted as multiply-accumulates (one multiply-add = one FLOP), as the papers do.

Counted: the patch embedding, per block the qkv and output projections, the two attention matmuls
(q k^T and attn v) and the MLP, the classifier head, and the token selectors (DynamicViT's predictor, EViT's
token fusion). Not counted: LayerNorm, softmax, GELU, additions. Token counts follow the actual schedule:
per block, the tokens entering attention and (they differ when a selector runs inside the block, as EViT
does) the tokens entering the MLP.

The formulas work on Python numbers and on torch tensors alike, so :mod:`tokensift.sw.budget` differentiates
the very same count with respect to soft token counts.

Example:
    >>> from tokensift.sw import create_model
    >>> report = count_flops(create_model("deit_small_patch16_224"))
    >>> round(report.gflops, 2), report.attn_tokens[0]
    (4.6, 197)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = ["FlopsSpec", "FlopsReport", "block_macs", "schedule_macs", "static_schedule", "count_flops"]


def block_macs(n_attn, n_mlp, dim: int, hidden: int) -> dict:
    """MACs of one block with ``n_attn`` tokens in attention and ``n_mlp`` in the MLP (numbers or tensors)."""
    return {
        "qkv": n_attn * dim * 3 * dim,
        "attn_matmul": 2 * n_attn * n_attn * dim,  # q k^T and attn v over all heads
        "proj": n_attn * dim * dim,
        "mlp": 2 * n_mlp * dim * hidden,
    }


@dataclass
class FlopsSpec:
    """What the count needs to know about a model: sizes, and where each selector sits."""

    dim: int
    hidden: int
    depth: int
    num_tokens: int  # patches + class token
    patch_macs: int
    head_macs: int
    stages: list[tuple[int, str, nn.Module]] = field(default_factory=list)  # (block, site, selector)

    @classmethod
    def from_model(cls, model: nn.Module) -> FlopsSpec:
        model = getattr(model, "module", model)
        pe = model.patch_embed
        dim = model.embed_dim
        blk = model.blocks[0]
        return cls(
            dim=dim,
            hidden=blk.mlp.fc1.out_features,
            depth=len(model.blocks),
            num_tokens=pe.num_patches + 1,
            patch_macs=pe.num_patches * pe.in_chans * pe.patch_size**2 * dim,
            head_macs=dim * model.head.out_features,
            stages=[(b, s.site, s) for b, s in model.stage_selectors()],
        )


def schedule_macs(spec: FlopsSpec, attn_tokens: list, mlp_tokens: list) -> dict:
    """Total MACs and their breakdown for per-block token counts (numbers or broadcastable tensors)."""
    parts = {"patch_embed": spec.patch_macs, "qkv": 0, "attn_matmul": 0, "proj": 0, "mlp": 0,
             "selectors": 0, "head": spec.head_macs}
    for b in range(spec.depth):
        for k, v in block_macs(attn_tokens[b], mlp_tokens[b], spec.dim, spec.hidden).items():
            parts[k] = parts[k] + v
    for b, site, sel in spec.stages:
        n_in = (mlp_tokens[b - 1] if b > 0 else spec.num_tokens) if site == "pre" else attn_tokens[b]
        n_out = attn_tokens[b] if site == "pre" else mlp_tokens[b]
        parts["selectors"] = parts["selectors"] + sel.macs(n_in, n_out, spec.dim)
    total = 0
    for v in parts.values():
        total = total + v
    parts["total"] = total
    return parts


def static_schedule(model: nn.Module) -> tuple[list[int], list[int]]:
    """Per-block token counts (attention, MLP) implied by the selectors' keep ratios."""
    model = getattr(model, "module", model)
    sels = dict(model.stage_selectors())
    n = model.num_patches + 1
    attn, mlp = [], []
    for b in range(len(model.blocks)):
        sel = sels.get(b)
        if sel is not None and sel.site == "pre":
            n = sel.expected_tokens(n)
        attn.append(n)
        if sel is not None and sel.site == "mid":
            n = sel.expected_tokens(n)
        mlp.append(n)
    return attn, mlp


@dataclass
class FlopsReport:
    """MACs of a model under a token schedule (averaged over images when measured on a batch)."""

    macs: float
    attn_tokens: list[float]
    mlp_tokens: list[float]
    breakdown: dict[str, float]

    @property
    def gflops(self) -> float:
        return self.macs / 1e9

    def as_dict(self) -> dict:
        return {"gflops": self.gflops, "tokens": self.attn_tokens, "mlp_tokens": self.mlp_tokens,
                "breakdown_gflops": {k: v / 1e9 for k, v in self.breakdown.items() if k != "total"}}


def _mean(v) -> float:
    return float(v.double().mean()) if isinstance(v, Tensor) else float(v)


@torch.no_grad()
def count_flops(model: nn.Module, images: Tensor | None = None) -> FlopsReport:
    """Count MACs. Without ``images``: the static schedule of the keep ratios. With ``images``: run the
    inference path and count each image's actual schedule (per-image counts for adaptive methods); the
    report is the mean over the batch.
    """
    spec = FlopsSpec.from_model(model)
    module = getattr(model, "module", model)
    if images is None:
        attn, mlp = static_schedule(module)
    else:
        from .placement import module_device

        was_training = module.training
        module.eval()
        state = module.forward_state(images.to(module_device(module)), path="gather")
        module.train(was_training)
        B = images.shape[0]

        def per_image(v):
            if isinstance(v, Tensor):
                return v.double()
            return torch.full((B,), float(v), dtype=torch.float64, device=state.x.device)

        attn = [per_image(v) for v in state.attn_tokens]
        mlp = [per_image(v) for v in state.mlp_tokens]
    parts = schedule_macs(spec, attn, mlp)
    return FlopsReport(
        macs=_mean(parts["total"]),
        attn_tokens=[_mean(v) if isinstance(v, Tensor) else v for v in attn],
        mlp_tokens=[_mean(v) if isinstance(v, Tensor) else v for v in mlp],
        breakdown={k: _mean(v) for k, v in parts.items()},
    )
