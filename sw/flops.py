"""FLOPs of a (pruned) ViT under two conventions, both counting one multiply-add as one FLOP.

``convention="macs"`` (the default) is the true multiply-accumulate count: the patch embedding, per block
the qkv and output projections, the two attention matmuls (q k^T and attn v) and the MLP, the classifier
head (and LV-ViT's auxiliary head over the final tokens), and the token selectors (DynamicViT's predictor,
EViT's token fusion, ...). Not counted: LayerNorm, softmax, GELU, additions; ``norms=True`` adds the norms
as fvcore counts them (5 per element for LayerNorm, 2 for inference batch norm), which gives DynamicViT's
released fvcore count. Token counts follow the actual schedule: per block, the tokens entering attention
and (they differ when a selector runs inside the block, as EViT does) the tokens entering the MLP.

``convention="paper"`` reproduces the estimators behind the published tables (:func:`paper_macs`), so every
DeiT and LV-ViT GFLOPs figure of the DynamicViT, SPViT and AS-ViT papers comes out to the printed decimal.

The formulas work on Python numbers and on torch tensors alike, so :mod:`tokensift.sw.budget` differentiates
the very same count with respect to soft token counts.

Example:
    >>> from tokensift.sw import create_model
    >>> report = count_flops(create_model("deit_small_patch16_224"))
    >>> round(report.gflops, 2), report.attn_tokens[0]
    (4.6, 197)
    >>> model = create_model("deit_small_patch16_224", method="dynamicvit", keep_ratio=0.7)
    >>> round(count_flops(model).gflops, 2), round(count_flops(model, convention="paper").gflops, 2)
    (2.98, 2.91)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = ["CONVENTIONS", "PAPER_ESTIMATORS", "FlopsSpec", "FlopsReport", "block_macs", "schedule_macs",
           "norm_flops", "paper_macs", "static_schedule", "count_flops"]

#: the two ways of counting (see the module docstring)
CONVENTIONS = ("macs", "paper")

#: method -> the published estimator ``convention="paper"`` uses for it
PAPER_ESTIMATORS = {
    "none": "dynamicvit",  # the dense DeiT / LV-ViT rows of all three papers
    "dynamicvit": "dynamicvit",
    "spvit": "dynamicvit",  # SPViT's est_flops_dynamicvit.py, package tokens left out
    "asvit": "asvit",
}


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
    aux_head_macs: int = 0  # per token other than the class token leaving the last block (LV-ViT)

    @classmethod
    def from_model(cls, model: nn.Module) -> FlopsSpec:
        model = getattr(model, "module", model)
        pe = model.patch_embed
        dim = model.embed_dim
        blk = model.blocks[0]
        aux = getattr(model, "aux_head", None)
        return cls(
            dim=dim,
            hidden=blk.mlp.fc1.out_features,
            depth=len(model.blocks),
            num_tokens=pe.num_patches + 1,
            patch_macs=pe.macs(),
            head_macs=dim * model.head.out_features,
            stages=[(b, s.site, s) for b, s in model.stage_selectors()],
            aux_head_macs=0 if aux is None else dim * aux.out_features,
        )


def schedule_macs(spec: FlopsSpec, attn_tokens: list, mlp_tokens: list) -> dict:
    """Total MACs and their breakdown for per-block token counts (numbers or broadcastable tensors)."""
    parts = {"patch_embed": spec.patch_macs, "qkv": 0, "attn_matmul": 0, "proj": 0, "mlp": 0,
             "selectors": 0, "head": spec.head_macs}
    for b in range(spec.depth):
        for k, v in block_macs(attn_tokens[b], mlp_tokens[b], spec.dim, spec.hidden).items():
            parts[k] = parts[k] + v
    for b, site, sel in spec.stages:
        n_in = _stage_input(spec, b, site, attn_tokens, mlp_tokens)
        n_out = attn_tokens[b] if site == "pre" else mlp_tokens[b]
        parts["selectors"] = parts["selectors"] + sel.macs(n_in, n_out, spec.dim)
    if spec.aux_head_macs:
        parts["aux_head"] = (mlp_tokens[-1] - 1) * spec.aux_head_macs
    total = 0
    for v in parts.values():
        total = total + v
    parts["total"] = total
    return parts


def _stage_input(spec: FlopsSpec, block: int, site: str, attn_tokens: list, mlp_tokens: list):
    if site == "pre":
        return mlp_tokens[block - 1] if block > 0 else spec.num_tokens
    return attn_tokens[block]


def norm_flops(model: nn.Module, attn_tokens: list, mlp_tokens: list):
    """The normalisation layers as fvcore counts them: 5 FLOPs per element of every LayerNorm input (the
    blocks' ``norm1``/``norm2``, the final norm, the selectors' own), 2 per element of an inference batch norm
    (LV-ViT's stem). Selector norms are counted over the tokens other than the class token entering them."""
    model = getattr(model, "module", model)
    spec = FlopsSpec.from_model(model)
    total = 0
    for b in range(spec.depth):
        total = total + 5 * (attn_tokens[b] + mlp_tokens[b]) * spec.dim
    total = total + 5 * mlp_tokens[-1] * spec.dim
    for b, site, sel in spec.stages:
        width = sum(m.weight.numel() if m.weight is not None else math.prod(m.normalized_shape)
                    for m in sel.modules() if isinstance(m, nn.LayerNorm))
        if width:
            total = total + 5 * (_stage_input(spec, b, site, attn_tokens, mlp_tokens) - 1) * width
    bns = [m for m in model.patch_embed.modules() if isinstance(m, nn.BatchNorm2d)]
    if bns:
        pe = model.patch_embed
        half = (pe.img_size // 2) ** 2  # LV-ViT's stem runs its batch norms at half resolution
        total = total + sum(2 * m.num_features * half for m in bns)
    return total


def paper_macs(model: nn.Module, tokens: list) -> dict:
    """The published estimators, for per-block token counts ``tokens`` (class token included, numbers or
    tensors; tokens a method adds, such as SPViT's package tokens, left out).

    ``"dynamicvit"`` (DynamicViT's and SPViT's tables; SPViT's ``est_flops_dynamicvit.py``): the patch
    embedding over N + 1 = 197 tokens (LV-ViT: its convolutional stem, exactly), per block
    ``4 N C^2 + 2 N^2 C + 2 N C hidden`` with the tokens N entering the block, per pruning stage a predictor of
    ``5/8 N C^2 + N C / 2`` over the N tokens entering it (class token included; the predictor's first C x C
    layer is left out), the head ``C x classes`` and LV-ViT's auxiliary head over the final patch tokens.

    ``"asvit"`` (AS-ViT's ``vit.py``: ``PatchEmbed.flops``, ``Block.flops``, ``cal_flops``): the same block
    formula over the patch tokens only (196 when dense), the patch embedding over 196 tokens; no head, no
    scoring.
    """
    model = getattr(model, "module", model)
    method = getattr(model, "method", "none")
    if method not in PAPER_ESTIMATORS:
        raise ValueError(f"no published FLOPs estimator is reproduced for method {method!r} (only for "
                         f"{', '.join(sorted(PAPER_ESTIMATORS))}); use the 'macs' convention")
    spec = FlopsSpec.from_model(model)
    pe = model.patch_embed
    C, classes = spec.dim, model.head.out_features
    if any(site != "pre" for _, site, _ in spec.stages):
        raise ValueError(f"the published estimators assume selectors before their blocks; method "
                         f"{method!r} prunes inside a block")
    parts = {"patch_embed": 0, "blocks": 0, "selectors": 0, "head": 0}
    if PAPER_ESTIMATORS[method] == "asvit":
        per_token_patch = pe.in_chans * pe.patch_size**2 * C
        parts["patch_embed"] = pe.macs() if hasattr(pe, "conv1") else pe.num_patches * per_token_patch
        for n in tokens:
            parts["blocks"] = parts["blocks"] + _block_total(n - 1, C, spec.hidden)
    else:
        if hasattr(pe, "conv1"):
            parts["patch_embed"] = pe.macs()
        else:
            parts["patch_embed"] = spec.num_tokens * pe.in_chans * pe.patch_size**2 * C
        for n in tokens:
            parts["blocks"] = parts["blocks"] + _block_total(n, C, spec.hidden)
        for b, _, _ in spec.stages:
            n_in = tokens[b - 1] if b > 0 else spec.num_tokens
            parts["selectors"] = parts["selectors"] + 5 * n_in * C * C / 8 + n_in * C // 2
        parts["head"] = C * classes
        if spec.aux_head_macs:
            parts["aux_head"] = (tokens[-1] - 1) * C * classes
    total = 0
    for v in parts.values():
        total = total + v
    parts["total"] = total
    return parts


def _block_total(n, dim: int, hidden: int):
    total = 0
    for v in block_macs(n, n, dim, hidden).values():
        total = total + v
    return total


def _paper_tokens(model: nn.Module, attn_tokens: list, measured: bool) -> list:
    """Per block, the tokens the published estimator counts.

    DynamicViT's static schedule is the estimator's own: it floors cumulatively, ``N <- int((N - 1) rho) + 1``
    per stage (197 -> 138 -> 96 -> 67 at rho 0.7, where the released inference keeps ``int(196 rho^s)``:
    138, 97, 68); the printed LV-ViT-M figure at 0.8 (9.6) depends on it. SPViT: the model's schedule with
    the package tokens (one per stage, as released) removed. Measured schedules are counted as they are.
    """
    method = getattr(model, "method", "none")
    if method == "dynamicvit" and not measured:
        sels = dict(model.stage_selectors())
        n, tokens = model.num_patches + 1, []
        for b in range(len(model.blocks)):
            if b in sels:
                n = int((n - 1) * sels[b].keep_ratio) + 1
            tokens.append(n)
        return tokens
    if method != "spvit":
        return list(attn_tokens)
    stage_blocks = sorted(b for b, _ in model.stage_selectors())
    return [n - sum(1 for sb in stage_blocks if sb <= b) for b, n in enumerate(attn_tokens)]


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
    """FLOPs of a model under a token schedule (averaged over images when measured on a batch)."""

    macs: float
    attn_tokens: list[float]
    mlp_tokens: list[float]
    breakdown: dict[str, float]
    convention: str = "macs"
    norms: bool = False

    @property
    def gflops(self) -> float:
        return self.macs / 1e9

    def as_dict(self) -> dict:
        return {"gflops": self.gflops, "tokens": self.attn_tokens, "mlp_tokens": self.mlp_tokens,
                "convention": self.convention, "norms": self.norms,
                "breakdown_gflops": {k: v / 1e9 for k, v in self.breakdown.items() if k != "total"}}


def _mean(v) -> float:
    return float(v.double().mean()) if isinstance(v, Tensor) else float(v)


@torch.no_grad()
def count_flops(model: nn.Module, images: Tensor | None = None, *, convention: str = "macs",
                norms: bool = False) -> FlopsReport:
    """Count FLOPs. Without ``images``: the static schedule of the keep ratios. With ``images``: run the
    inference path and count each image's actual schedule (per-image counts for adaptive methods); the
    report is the mean over the batch.

    ``convention``: ``"macs"`` (true multiply-accumulates) or ``"paper"`` (the method's published estimator,
    :func:`paper_macs`; ``attn_tokens`` then report the tokens it counted, see :func:`_paper_tokens`). ``norms=True`` adds
    LayerNorm and batch norm as fvcore counts them (``"macs"`` only; the papers' estimators leave them out).
    """
    if not isinstance(convention, str):
        raise TypeError(f"convention must be a string, not {convention!r}")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(map(repr, CONVENTIONS))}, not {convention!r}")
    if not isinstance(norms, bool):
        raise TypeError(f"norms must be True or False, not {norms!r}")
    if norms and convention != "macs":
        raise ValueError("norms=True applies to the 'macs' convention only (the papers' estimators leave "
                         "the norms out)")
    spec = FlopsSpec.from_model(model)
    module = getattr(model, "module", model)
    if convention == "paper" and getattr(module, "method", "none") not in PAPER_ESTIMATORS:
        paper_macs(module, [])  # raises the one-sentence error before any forward pass
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
    if convention == "paper":
        attn = _paper_tokens(module, attn, measured=images is not None)
        mlp = attn
        parts = paper_macs(module, attn)
    else:
        parts = schedule_macs(spec, attn, mlp)
        if norms:
            parts["norms"] = norm_flops(module, attn, mlp)
            parts["total"] = parts["total"] + parts["norms"]
    return FlopsReport(
        macs=_mean(parts["total"]),
        attn_tokens=[_mean(v) if isinstance(v, Tensor) else v for v in attn],
        mlp_tokens=[_mean(v) if isinstance(v, Tensor) else v for v in mlp],
        breakdown={k: _mean(v) for k, v in parts.items()},
        convention=convention,
        norms=norms,
    )
