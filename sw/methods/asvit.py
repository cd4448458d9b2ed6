"""AS-ViT (Liu et al., 2023): adaptive token pruning by learned thresholds on head-weighted class attention.

As released (Cydia2018/AS-ViT ``vit.py``, ``main.py``, ``infer.py``), except where noted:

* **Score** (no predictor): the class token's attention to each token, summed over heads weighted by the
  head importance **of that token**, ``w_hj = ||o_hj|| / (sum_g ||o_gj|| + 1e-8)``, the L2 norm of head
  ``h``'s attention output at token ``j`` over the heads' sum (``head_importance="token"``, the release's
  ``Attention.forward``). ``head_importance="image"`` is tokensift's earlier variant, one weight per head
  from the norm over all valid tokens: the form the hardware score combiner
  (:func:`tokensift.quant.select.head_weighted_scores`) computes. Both come from
  :class:`tokensift.sw.selection.AttnInfo` of the block just before the stage, i.e. from the attention
  that block computes anyway (the release also scores from the previous block's attention).
* **Where**: before the 5th, 8th and 11th blocks of DeiT (0-indexed 4, 7, 10, as the release's
  ``main.py``/``infer.py``), one block later than DynamicViT's 3, 6, 9. On a model of another depth the
  positions are scaled, ``round(l * depth / 12)`` (:func:`default_prune_locs`): 2, 4, 5 on the 6-block
  MNIST model. ``create_model(..., prune_locs=...)`` overrides them.
* **Learnable threshold per stage**. A patch token is kept when its score is greater than the stage's
  ``threshold = exp(log_threshold) / num_patches`` (the release's hard rule ``score > keep_threshold``).
  tokensift learns the logarithm of the threshold in units of uniform attention (the release learns the
  threshold itself, initialised at 0.001 / 0.002 / 0.003 with a sigmoid of temperature 1e-4), because the
  scores are heavy-tailed (a few tokens take most of the attention) and a step of the optimiser should
  move the threshold by a ratio, not by an absolute amount. Training: a steep sigmoid of the log-ratio,
  ``sigmoid((log(score * num_patches) - log_threshold) / temperature)``, with a straight-through estimator
  (hard 0/1 forward, as the release; sigmoid gradient). Inference: the hard comparison ``score >
  threshold``, so the number of kept tokens adapts to each image. In a batch each image keeps its own
  tokens (pad + mask); the release's batched inference keeps the batch's ``floor(mean)`` count in every
  image (its per-image rule runs only at batch size 1), which makes an image's prediction depend on the
  other images of its batch: tokensift keeps the per-image rule.
* **Budget-aware loss** (:class:`ASViTLoss`): cross-entropy + 2.0 x |FLOPs(soft counts) / dense FLOPs -
  rho| + 0.5 x (KL to the dense teacher + MSE on the kept tokens). ``keep_ratio`` is rho, the target
  FLOPs as a fraction of the dense model's; the FLOPs are ``model.budget`` (replaceable by a latency model).
* **Threshold initialisation** (:func:`calibrate_thresholds`, run by the loss on its first batch): a
  pretrained backbone's scores span orders of magnitude, so the thresholds start where the budget would
  be met by the schedule ``int(num_patches * q ** (s + 1))`` (the largest ``q`` within budget, found with
  the budget callable): stage ``s``'s threshold is the batch quantile of its candidates' scores that keeps
  that fraction. The loss then learns them.

Example:
    >>> import torch
    >>> from tokensift.sw import create_model
    >>> from tokensift.sw.flops import count_flops
    >>> model = create_model("vit_mnist_patch4_28", method="asvit", keep_ratio=0.6).eval()
    >>> images = torch.randn(8, 1, 28, 28)
    >>> _ = calibrate_thresholds(model, images)  # thresholds that meet 60% of the dense FLOPs here
    >>> model.config.prune_locs  # the release's 4, 7, 10 of DeiT's 12 blocks, scaled to 6
    (2, 4, 5)
    >>> counts = model.forward_state(images).attn_tokens[2]  # tokens entering block 2, one count per image
    >>> tuple(counts.shape), round(count_flops(model, images).macs / model.budget.dense, 2)
    ((8,), 0.6)
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..losses_budget import budget_gap, largest_within, model_budget
from ..losses_distill import add_distillation
from ..selection import AttnInfo, TokenSelector, TokenState
from . import MethodSpec, register_method

__all__ = ["ASViTSelector", "ASViTLoss", "head_weighted_scores", "calibrate_thresholds", "default_prune_locs"]


HEAD_IMPORTANCE = ("token", "image")


def head_weighted_scores(info: AttnInfo, head_importance: str = "token") -> Tensor:
    """(B, N) class-token attention summed over heads, weighted by normalised head-output norms.

    ``"token"``: each token's head weights are its head-output norms over their sum (the release);
    ``"image"``: one weight per head from its output norm over all valid tokens.
    """
    if head_importance == "token":
        norm = info.head_token_norm
        w = norm / (norm.sum(dim=1, keepdim=True) + 1e-8)  # the release's epsilon
        return (w * info.cls_attn).sum(dim=1)
    norm = info.head_norm
    total = norm.sum(dim=-1, keepdim=True)
    w = torch.where(total > 0, norm / total.clamp_min(1e-30), torch.full_like(norm, 1.0 / norm.shape[-1]))
    return (w[:, :, None] * info.cls_attn).sum(dim=1)


#: the release's pruning locations on the 12-block DeiT (0-indexed blocks the stages run before)
RELEASED_PRUNE_LOCS = (4, 7, 10)


def default_prune_locs(cfg) -> tuple[int, ...]:
    """AS-ViT's pruning locations for a model configuration: the release's 4, 7, 10 of 12 blocks, scaled
    to ``cfg.depth`` (rounded half up, kept inside ``[1, depth - 1]`` and distinct).

    >>> from types import SimpleNamespace
    >>> default_prune_locs(SimpleNamespace(depth=12)), default_prune_locs(SimpleNamespace(depth=6))
    ((4, 7, 10), (2, 4, 5))
    """
    locs = sorted({min(max(int(loc * cfg.depth / 12 + 0.5), 1), cfg.depth - 1) for loc in RELEASED_PRUNE_LOCS})
    return tuple(locs)


class ASViTSelector(TokenSelector):
    """One AS-ViT stage (before its block): keep the patch tokens whose score exceeds a learned threshold.

    Args:
        num_patches: patch tokens of the model (sets the threshold's unit).
        num_heads: attention heads (for the MAC count of the scoring).
        keep_ratio: rho, the FLOPs target of the budget loss (not a per-stage count: counts adapt).
        threshold: initial threshold, in units of uniform attention ``1 / num_patches``.
        temperature: width of the training sigmoid on the log scale (smaller is steeper).
        head_importance: ``"token"`` (per-token head weights, the release) or ``"image"`` (one weight per
            head, as the hardware score combiner).
    """

    site = "pre"
    needs_attn_info = True
    adaptive = True

    def __init__(self, num_patches: int, num_heads: int, keep_ratio: float, threshold: float = 0.5,
                 temperature: float = 0.2, head_importance: str = "token"):
        super().__init__(keep_ratio)
        if not isinstance(head_importance, str):
            raise TypeError(f"head_importance must be a string, not {head_importance!r}")
        if head_importance not in HEAD_IMPORTANCE:
            raise ValueError(f"head_importance must be 'token' or 'image', not {head_importance!r}")
        self.head_importance = head_importance
        if not threshold > 0:
            raise ValueError(f"threshold must be positive, not {threshold!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, not {temperature!r}")
        self.num_patches, self.num_heads, self.temperature = num_patches, num_heads, float(temperature)
        self.log_threshold = nn.Parameter(torch.tensor(math.log(threshold)))
        self.register_buffer("calibrated", torch.tensor(False))

    @property
    def threshold(self) -> Tensor:
        """The inference rule's threshold on the scores (a patch token is kept when its score is greater)."""
        return self.log_threshold.exp() / self.num_patches

    def score(self, state: TokenState, info: AttnInfo | None) -> Tensor:
        return head_weighted_scores(info, self.head_importance)

    def decide(self, scores: Tensor, state: TokenState) -> Tensor:
        z = (scores * self.num_patches).clamp_min(1e-30).log() - self.log_threshold
        hard = (z > 0).to(scores.dtype)
        if self.training:
            soft = torch.sigmoid(z / self.temperature)
            hard = hard + soft - soft.detach()  # straight-through: hard forward, sigmoid gradient
        return hard * state.candidates().to(scores.dtype)

    def expected_tokens(self, n_in: int) -> int:
        """The count adapts to each image: the static schedule is the worst case (nothing pruned)."""
        return n_in

    def macs(self, n_in, n_out, dim: int):
        # head importance (sum of squares of every head output) and the head-weighted sum of class attention
        return n_in * dim + n_in * self.num_heads

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", head_importance={self.head_importance!r}, threshold={float(self.threshold.detach()) * self.num_patches:.4g}/"
                f"{self.num_patches}, temperature={self.temperature}")


def _asvit_stages(model: nn.Module) -> list[ASViTSelector]:
    sels = [s for _, s in getattr(model, "module", model).stage_selectors()]
    if not sels or not all(isinstance(s, ASViTSelector) for s in sels):
        raise ValueError("calibrate_thresholds needs a model whose token selectors are all AS-ViT selectors")
    return sels


@torch.no_grad()
def calibrate_thresholds(model: nn.Module, images: Tensor) -> list[float]:
    """Set each stage's threshold so that ``images`` meet the budget rho on average; return the thresholds.

    The per-stage kept fractions follow ``int(num_patches * q ** (s + 1))`` with the largest ``q`` whose
    cost under ``model.budget`` is within rho of the dense cost; stage ``s``'s threshold is the quantile
    of the scores of its candidates over the batch that keeps its fraction. Under ``torch.distributed``
    the thresholds are averaged over the processes.
    """
    module = getattr(model, "module", model)
    sels = _asvit_stages(module)
    budget = model_budget(module)
    n = sels[0].num_patches

    def kept(q: float) -> list[int]:
        return [max(1, int(n * q ** (s + 1) + 1e-6)) for s in range(len(sels))]

    def cost(q: float) -> float:
        return float(budget(torch.tensor([1.0 + k for k in kept(q)], dtype=torch.float64)))

    q = largest_within(cost, sels[0].keep_ratio * budget.dense, 0.5 / n, 1.0)
    targets = [n] + kept(q)
    was_training = module.training
    module.eval()
    try:
        for s, sel in enumerate(sels):
            state = module.forward_state(images, path="mask")
            d = state.decisions[s]
            cand = d.index >= 1
            if s > 0:
                cand &= state.decisions[s - 1].keep > 0.5
            scores = d.scores[cand].double()
            frac = targets[s + 1] / targets[s]
            t = float(torch.quantile(scores, 1.0 - frac)) if frac < 1 and scores.numel() else 0.0
            sel.log_threshold.fill_(math.log(max(t * sel.num_patches, 1e-12)))
            sel.calibrated.fill_(True)
    finally:
        module.train(was_training)
    if dist.is_available() and dist.is_initialized():
        for sel in sels:
            dist.all_reduce(sel.log_threshold.data)
            sel.log_threshold.data /= dist.get_world_size()
    return [float(sel.threshold) for sel in sels]


class ASViTLoss(nn.Module):
    """AS-ViT's budget-aware objective on the mask path (terms and weights in the module docstring)."""

    def __init__(self, keep_ratio: float, num_stages: int, budget_weight: float = 2.0,
                 distill_weight: float = 0.5):
        super().__init__()
        self.target = float(keep_ratio)
        self.num_stages = num_stages
        self.budget_weight, self.distill_weight = budget_weight, distill_weight

    def forward(self, student: nn.Module, teacher: nn.Module | None, images: Tensor, labels: Tensor
                ) -> tuple[Tensor, dict[str, Tensor | float]]:
        module = getattr(student, "module", student)
        if not all(bool(sel.calibrated) for sel in _asvit_stages(module)):
            calibrate_thresholds(module, images)
        state = module.forward_state(images, path="mask")
        logits = module.forward_head(state.x)
        if len(state.decisions) != self.num_stages:
            raise RuntimeError(f"expected {self.num_stages} pruning stages, got {len(state.decisions)}")
        gap, cost = budget_gap(module, state, self.target)
        cls_loss = F.cross_entropy(logits, labels)
        loss = cls_loss + self.budget_weight * gap.to(logits.dtype)
        parts = {"cls": cls_loss.detach(), "budget": gap.detach(), "cost": cost.detach()}
        loss = add_distillation(loss, parts, self.distill_weight, logits, state, teacher, images)
        return loss, parts


def _selectors(cfg, keep_ratio: float) -> dict[int, ASViTSelector]:
    return {loc: ASViTSelector(cfg.num_patches, cfg.num_heads, keep_ratio) for loc in cfg.prune_locs}


def _needs_config(dim, num_patches, keep_ratio, locs):
    raise TypeError("AS-ViT selectors need the number of heads: build them with selectors_from_config")


register_method(MethodSpec(
    name="asvit",
    build_selectors=_needs_config,
    selectors_from_config=_selectors,
    default_prune_locs=default_prune_locs,
    build_criterion=lambda rho, stages: ASViTLoss(rho, stages),
    uses_teacher=True,
    description="head-weighted class attention vs a learned threshold per stage, FLOPs-budget L1 loss",
))
