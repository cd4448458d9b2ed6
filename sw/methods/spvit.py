"""SPViT (Kong et al., 2022): soft token pruning with a multi-head selector, a package token and a budget.

* **Multi-head selector** (:class:`MultiHeadPredictor`): DynamicViT's prediction module applied to each
  head's ``C / H`` channels, one independent module per head (the released code shares one by accident),
  the per-head keep scores mixed by head weights from a squeeze-and-excitation branch (each head's
  channels and kept tokens average-pooled -> ``H // 2`` -> ``H`` -> sigmoid). The scores are mixed as
  log-odds, ``z = sum_h w_h (log p_h(keep) - log p_h(drop))``, a weighted product of the heads' opinions
  (heads that agree make a confident decision; mixing probabilities instead learns several times slower
  with small heads), and the keep score is ``sigmoid(z)``.
* **Package token**: at each stage the newly pruned tokens are fused into one token, their features
  averaged with their keep scores as weights, ``sum_i s_i x_i / sum_i s_i`` (the float form of
  :func:`tokensift.quant.select.package_token`; all zeros if the pruned scores sum to 0). It is placed
  right after the class token and protected, so no later stage prunes it; a stage that prunes nothing
  adds none (an image that pruned nothing on the mask path gets a masked one). Training (mask path) and
  inference (gather path) build it the same way.
* **Computation-aware keep ratios**: the ``keep_ratio`` given to ``create_model`` is the *budget*, the
  target cost as a fraction of the dense model's. :func:`plan_keep_ratio` picks the per-stage schedule
  (``int(num_patches * q ** (s + 1))`` patches kept after stage ``s``, DynamicViT's form) with the largest
  ``q`` whose cost under ``model.budget`` fits the budget. The budget is FLOPs
  (:class:`tokensift.sw.budget.FlopsBudget`) unless another callable is passed, e.g. a latency model.
* **Loss** (:class:`SPViTLoss`): cross-entropy + 2.0 x keep-ratio MSE against the planned schedule + 1.0 x
  |soft cost / dense - planned cost / dense| (budget) + 0.5 x (KL to the dense teacher + MSE on the kept
  tokens), trained on the mask path with Gumbel-softmax decisions as DynamicViT.

Example:
    >>> import torch
    >>> from tokensift.sw import create_model
    >>> model = create_model("vit_mnist_patch4_28", method="spvit", keep_ratio=0.6).eval()
    >>> state = model.forward_state(torch.randn(2, 1, 28, 28))
    >>> state.index[0, :4].tolist()  # the class token, then one package token per stage
    [0, -1, -1, -1]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..budget import Budget
from ..losses_budget import budget_ratio, largest_within, model_budget
from ..losses_distill import add_distillation
from ..selection import AttnInfo, TokenSelector, TokenState, check_keep_ratio, gumbel_keep, stable_topk_mask
from . import MethodSpec, register_method
from .dynamicvit import PredictorLG, keep_count

__all__ = ["MultiHeadPredictor", "SPViTSelector", "SPViTLoss", "plan_keep_ratio", "static_stage_counts",
           "package_tokens"]

_EPS = 1e-6


def package_tokens(x: Tensor, scores: Tensor, pruned: Tensor) -> tuple[Tensor, Tensor]:
    """Fuse the pruned tokens of each image into one: ``sum_i s_i x_i / sum_i s_i`` over pruned ``i``.

    ``x`` (B, N, C), ``scores`` (B, N) non-negative keep scores, ``pruned`` (B, N) pruning weights (1 for
    a pruned token, 0 otherwise; straight-through values keep their gradients). Returns the package
    tokens (B, 1, C), all zeros where the pruned scores sum to 0, and that sum (B,).

    >>> x = torch.tensor([[[0.0, 0.0], [10.0, -10.0], [20.0, 5.0]]])
    >>> p, s = package_tokens(x, torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[0.0, 1.0, 1.0]]))
    >>> [round(v, 3) for v in p.flatten().tolist()], s.tolist()
    ([16.667, 0.0], [3.0])
    """
    w = scores * pruned
    total = w.sum(dim=1)
    acc = (x * w[..., None]).sum(dim=1, keepdim=True)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    pkg = torch.where((total > 0)[:, None, None], acc / safe[:, None, None], torch.zeros_like(acc))
    return pkg, total


def _at_least_zero(v):
    return v.clamp_min(0) if isinstance(v, Tensor) else max(0, v)


class MultiHeadPredictor(nn.Module):
    """Per-head DynamicViT predictors (independent weights) mixed by squeeze-and-excitation head weights."""

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        head_dim = embed_dim // num_heads
        if head_dim < 4:
            raise ValueError(f"SPViT needs at least 4 channels per head for its predictor, not {head_dim}")
        self.num_heads, self.head_dim = num_heads, head_dim
        self.heads = nn.ModuleList(PredictorLG(head_dim) for _ in range(num_heads))
        hidden = max(1, num_heads // 2)
        self.se = nn.Sequential(nn.Linear(num_heads, hidden), nn.ReLU(), nn.Linear(hidden, num_heads),
                                nn.Sigmoid())

    def forward(self, x: Tensor, policy: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, N, C) tokens, policy (B, N, 1) keep weights -> (mixed keep log-odds (B, N), per-head keep
        log-odds (B, H, N), head weights (B, H))."""
        B, N, _ = x.shape
        xh = x.reshape(B, N, self.num_heads, self.head_dim)
        logp = [head(xh[:, :, h], policy) for h, head in enumerate(self.heads)]
        logits = torch.stack([lp[..., 0] - lp[..., 1] for lp in logp], dim=1)
        pooled = (xh.mean(dim=-1) * policy).sum(dim=1) / policy.sum(dim=1).clamp_min(_EPS)  # (B, H)
        weights = self.se(pooled)
        return (weights[:, :, None] * logits).sum(dim=1), logits, weights

    def macs_per_token(self) -> int:
        return self.num_heads * PredictorLG.macs_per_token(self.head_dim)

    def macs_per_image(self) -> int:
        hidden = self.se[0].out_features
        return 2 * self.num_heads * hidden


class SPViTSelector(TokenSelector):
    """One SPViT stage (before its block): multi-head scores, top-k / Gumbel keep, one package token.

    ``keep_ratio`` here is the per-stage factor ``q`` of the schedule (``int(num_patches * q ** (s + 1))``
    patches kept after stage ``s``); :func:`plan_keep_ratio` sets it from the budget.
    """

    site = "pre"
    needs_attn_info = False

    def __init__(self, embed_dim: int, num_heads: int, num_patches: int, keep_ratio: float = 1.0,
                 tau: float = 1.0):
        super().__init__(keep_ratio)
        self.num_patches = num_patches
        self.tau = tau
        self.predictor = MultiHeadPredictor(embed_dim, num_heads)

    # -- the static schedule -------------------------------------------------------------------------
    def kept_patches(self, stage: int | None = None) -> int:
        """Patch tokens kept after ``stage`` (default: this one); ``num_patches`` before stage 0."""
        stage = self.stage if stage is None else stage
        return self.num_patches if stage < 0 else keep_count(self.num_patches, self.keep_ratio, stage)

    def adds_package(self, stage: int | None = None) -> bool:
        stage = self.stage if stage is None else stage
        return self.kept_patches(stage) < self.kept_patches(stage - 1)

    def protected_in(self) -> int:
        """Protected tokens entering this stage: the class token and the earlier stages' package tokens."""
        return 1 + sum(self.adds_package(s) for s in range(self.stage))

    def expected_tokens(self, n_in: int) -> int:
        return n_in - self.kept_patches(self.stage - 1) + self.kept_patches() + int(self.adds_package())

    def macs(self, n_in, n_out, dim: int):
        # at counts no schedule reaches (fewer tokens than the protected ones) nothing is counted below 0
        candidates = _at_least_zero(n_in - self.protected_in())
        pruned = _at_least_zero(n_in - n_out + int(self.adds_package()))
        return (candidates * self.predictor.macs_per_token() + self.predictor.macs_per_image()
                + pruned * dim)  # the package token: one multiply-accumulate per channel of a pruned token

    # -- hooks ---------------------------------------------------------------------------------------
    def score(self, state: TokenState, info: AttnInfo | None) -> Tensor:
        P = state.num_protected
        B, N, _ = state.x.shape
        policy = state.x.new_ones(B, N - P, 1) if state.keep is None else state.keep[:, P:, None]
        logit, _, _ = self.predictor(state.x[:, P:], policy)
        return torch.cat([logit.new_zeros(B, P), torch.sigmoid(logit)], dim=1)  # keep scores in (0, 1)

    def num_keep(self, state: TokenState) -> int:
        return self.kept_patches()

    def decide(self, scores: Tensor, state: TokenState) -> Tensor:
        if self.training and state.path == "mask":
            p = scores.clamp(_EPS, 1 - _EPS)
            return gumbel_keep(p.log() - (-p).log1p(), tau=self.tau)  # multiplied by the previous mask
        return stable_topk_mask(scores, self.num_keep(state), state.candidates()).to(state.x.dtype)

    def extra_tokens(self, state: TokenState, keep: Tensor, info: AttnInfo | None) -> Tensor | None:
        pruned = state.candidates().to(keep.dtype) * (1.0 - keep)  # newly pruned at this stage
        pkg, _ = package_tokens(state.x, state.decisions[-1].scores, pruned)
        return pkg

    def forward(self, state: TokenState, info: AttnInfo | None = None) -> TokenState:
        P = state.num_protected
        newly_pruned = state.candidates()
        out = super().forward(state, info)
        newly_pruned &= out.decisions[-1].keep <= 0.5
        has_package = newly_pruned.any(dim=1)  # (B,)
        N = out.x.shape[1]
        if not bool(has_package.any()):  # nothing pruned anywhere: no package token
            keep = None if out.keep is None else out.keep[:, :-1]
            return out.replace(x=out.x[:, :-1], index=out.index[:, :-1], keep=keep)
        # the package token was appended last: move it right after the protected tokens and protect it
        order = torch.cat([torch.arange(P), torch.tensor([N - 1]), torch.arange(P, N - 1)]).to(out.x.device)
        keep = out.keep
        if keep is None and not bool(has_package.all()):
            keep = out.x.new_ones(out.x.shape[:2])
        if keep is not None:
            keep = keep.clone()
            keep[:, -1] = has_package.to(keep.dtype)  # an image that pruned nothing has no package token
            keep = keep[:, order]
        return out.replace(x=out.x[:, order], index=out.index[:, order], keep=keep, num_protected=P + 1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", heads={self.predictor.num_heads}, keep={self.kept_patches()}"


# -- computation-aware keep ratios -----------------------------------------------------------------------
def _spvit_stages(model: nn.Module) -> list[SPViTSelector]:
    module = getattr(model, "module", model)
    sels = [s for _, s in module.stage_selectors()]
    if not sels or not all(isinstance(s, SPViTSelector) for s in sels):
        raise ValueError("plan_keep_ratio needs a model whose token selectors are all SPViT selectors")
    return sels


def static_stage_counts(model: nn.Module) -> list[int]:
    """Tokens leaving each pruning stage under the selectors' current keep ratios."""
    module = getattr(model, "module", model)
    n = module.num_patches + 1
    counts = []
    for _, sel in module.stage_selectors():
        n = sel.expected_tokens(n)
        counts.append(n)
    return counts


def plan_keep_ratio(model: nn.Module, budget_ratio: float, budget: Budget | None = None,
                    iterations: int = 40) -> float:
    """Set the per-stage keep ratio ``q`` of an SPViT model from a computation budget; return ``q``.

    ``q`` is the largest value (to ``2 ** -iterations``) whose cost ``budget(counts)`` is at most
    ``budget_ratio * budget.dense``. ``budget`` defaults to ``model.budget`` (FLOPs unless replaced) and is
    stored as ``model.budget``, so the training loss uses the same one.
    """
    budget_ratio = check_keep_ratio(budget_ratio)
    sels = _spvit_stages(model)
    module = getattr(model, "module", model)
    if budget is not None:
        module.budget = budget
    budget = model_budget(module)
    limit = budget_ratio * budget.dense

    def cost(q: float) -> float:
        for s in sels:
            s.set_keep_ratio(q)
        return float(budget(torch.tensor(static_stage_counts(module), dtype=torch.float64)))

    lowest = 0.5 / module.num_patches  # keeps one patch token per stage
    if cost(lowest) > limit:
        raise ValueError(f"a budget of {budget_ratio:g} of the dense cost is below what SPViT can reach on "
                         f"this model ({cost(lowest) / budget.dense:.3f}, one patch token per stage)")
    q = largest_within(cost, limit, lowest, 1.0, iterations)
    cost(q)
    module.budget_ratio = budget_ratio
    module.planned_ratio = float(budget(torch.tensor(static_stage_counts(module), dtype=torch.float64))
                                 ) / budget.dense
    return q


# -- training --------------------------------------------------------------------------------------------
class SPViTLoss(nn.Module):
    """SPViT's objective on the mask path (see the module docstring for the terms and weights)."""

    def __init__(self, num_stages: int, ratio_weight: float = 2.0, budget_weight: float = 1.0,
                 distill_weight: float = 0.5):
        super().__init__()
        self.num_stages = num_stages
        self.ratio_weight, self.budget_weight, self.distill_weight = ratio_weight, budget_weight, distill_weight

    def forward(self, student: nn.Module, teacher: nn.Module | None, images: Tensor, labels: Tensor
                ) -> tuple[Tensor, dict[str, Tensor | float]]:
        module = getattr(student, "module", student)
        sels = _spvit_stages(module)
        state = module.forward_state(images, path="mask")
        logits = module.forward_head(state.x)
        if len(state.decisions) != self.num_stages:
            raise RuntimeError(f"expected {self.num_stages} pruning stages, got {len(state.decisions)}")
        ratio_loss = logits.new_zeros(())
        for sel, d in zip(sels, state.decisions, strict=True):
            kept = (d.keep * (d.index >= 1)).sum(dim=1) / sel.num_patches
            ratio_loss = ratio_loss + ((kept - sel.kept_patches() / sel.num_patches) ** 2).mean()
        ratio_loss = ratio_loss / self.num_stages
        cost = budget_ratio(module, state)
        target = getattr(module, "planned_ratio", None)
        budget_loss = (cost - target).abs().to(logits.dtype) if target is not None else logits.new_zeros(())
        cls_loss = F.cross_entropy(logits, labels)
        loss = cls_loss + self.ratio_weight * ratio_loss + self.budget_weight * budget_loss
        parts = {"cls": cls_loss.detach(), "ratio": ratio_loss.detach(),
                 "budget": budget_loss.detach(), "cost": cost.detach()}
        loss = add_distillation(loss, parts, self.distill_weight, logits, state, teacher, images)
        return loss, parts


def _selectors(cfg, budget: float) -> dict[int, SPViTSelector]:
    """One selector per pruning location; the keep ratios are planned from the budget afterwards."""
    return {loc: SPViTSelector(cfg.embed_dim, cfg.num_heads, cfg.num_patches) for loc in cfg.prune_locs}


def _needs_config(dim, num_patches, keep_ratio, locs):
    raise TypeError("SPViT selectors need the number of heads: build them with selectors_from_config")


register_method(MethodSpec(
    name="spvit",
    build_selectors=_needs_config,
    selectors_from_config=_selectors,
    prepare=lambda model: plan_keep_ratio(model, model.keep_ratio),
    build_criterion=lambda rho, stages: SPViTLoss(stages),
    uses_teacher=True,
    frozen_fraction=5 / 30,
    backbone_lr_scale=0.01,
    description="multi-head selector, package token, keep ratios planned from a FLOPs (or latency) budget",
))
