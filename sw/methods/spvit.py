"""SPViT (Kong et al., 2022): soft token pruning with a multi-head selector, a package token and a budget.

As released (PeiyanFlying/SPViT ``vit_l2_3keep_senet.py``: ``MultiheadPredictorLG`` and
``VisionTransformerDiffPruning.forward``), except where noted:

* **Multi-head selector** (:class:`MultiHeadPredictor`): DynamicViT's prediction module applied to each
  head's ``C / H`` channels (per-head keep/drop logits), mixed by head weights computed **per token** by a
  squeeze-and-excitation branch: each head's channel mean at that token -> ``H // 2`` -> GELU -> ``H`` ->
  sigmoid. The mixed decision is the **weighted mean of the per-head log-probabilities**,
  ``log p(c) = sum_h w_h log p_h(c) / sum_h w_h`` (not normalised: it is what the Gumbel-softmax and the
  inference rule read), and the package weights are the weighted mean of the per-head keep probabilities.
  Difference: tokensift gives each head its own predictor weights (``heads.{h}``); the release builds one
  module and lists it ``H`` times, so its heads share weights (load it by copying that module into every
  head). With one head the release's SE branch has no hidden unit; tokensift keeps one.
* **Predictor input**: every token but the class token, i.e. the patches and the package tokens of the
  earlier stages; the package tokens count in the global (kept-token mean) feature, and their own
  decisions are ignored (they are protected).
* **Package token** (:func:`package_tokens`): at each stage the newly pruned tokens are fused into one,
  ``sum_i p_i x_i`` with ``p_i`` the mixed keep probability (``package="sum"``: the release leaves the sum
  **unnormalised**, its division is commented out). ``package="mean"`` divides by ``sum_i p_i`` (tokensift's
  earlier form, the one the hardware package unit and :func:`tokensift.quant.select.package_token`
  compute). A package token is appended at **every** stage, also where an image pruned nothing (then it is
  zero, and attended, as in the release; with ``decision="topk"`` a stage whose schedule prunes nothing
  adds none, as the hardware); it is placed right after the class token and the earlier
  package tokens and protected (the release appends it at the end: the order does not change any result).
* **Decisions.** Training (mask path): hard Gumbel-softmax on the mixed log-probabilities (temperature
  ``tau``, default 1), multiplied by the previous stage's decisions, tokens masked in attention, as
  released. Inference: the release samples the same Gumbel noise in eval (random inference, masked
  tokens); tokensift's default (``decision="threshold"``) is its noise-free form, keep a token when its
  mixed keep log-probability exceeds its drop log-probability, so each image keeps its own number of
  tokens; the pruned tokens are removed (gather path). ``decision="topk"`` keeps the static schedule's
  ``int(num_patches * q ** (s + 1))`` best patches instead (the count the budget plans, the same in every
  image). :func:`set_decision` switches a model.
* **Computation-aware keep ratios**: the ``keep_ratio`` given to ``create_model`` is the *budget*, the
  target cost as a fraction of the dense model's. :func:`plan_keep_ratio` picks the per-stage schedule
  (``int(num_patches * q ** (s + 1))`` patches kept after stage ``s``, DynamicViT's form) with the largest
  ``q`` whose cost under ``model.budget`` fits the budget. The budget is FLOPs
  (:class:`tokensift.sw.budget.FlopsBudget`) unless another callable is passed, e.g. a latency model.
  This schedule is the model's static schedule (``expected_tokens``) in both decision modes: the one the
  keep-ratio loss trains for; with ``decision="threshold"`` the counts of each image vary around it, and
  :func:`tokensift.sw.flops.count_flops` with images measures them.
* **Loss** (:class:`SPViTLoss`): cross-entropy + 2.0 x keep-ratio MSE against the planned schedule + 1.0 x
  |soft cost / dense - planned cost / dense| (budget) + 0.5 x (KL to the dense teacher + MSE on the kept
  tokens), trained on the mask path.

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
from ..selection import (
    AttnInfo,
    Decision,
    TokenSelector,
    TokenState,
    check_keep_ratio,
    gather_tokens,
    gumbel_keep,
    pack_keep_mask,
    stable_topk_mask,
)
from . import MethodSpec, register_method
from .dynamicvit import PredictorLG, keep_count

__all__ = ["MultiHeadPredictor", "SPViTSelector", "SPViTLoss", "plan_keep_ratio", "static_stage_counts",
           "package_tokens", "set_decision", "DECISIONS", "PACKAGES"]

#: inference decision rules: the release's rule without its noise (adaptive), or the planned top-k
DECISIONS = ("threshold", "topk")
#: package token forms: the release's unnormalised score-weighted sum, or the score-weighted mean
PACKAGES = ("sum", "mean")


def package_tokens(x: Tensor, scores: Tensor, pruned: Tensor, normalise: bool = False) -> tuple[Tensor, Tensor]:
    """Fuse the pruned tokens of each image into one: ``sum_i s_i x_i`` over pruned ``i`` (the release),
    divided by ``sum_i s_i`` when ``normalise``.

    ``x`` (B, N, C), ``scores`` (B, N) non-negative keep scores, ``pruned`` (B, N) pruning weights (1 for
    a pruned token, 0 otherwise; straight-through values keep their gradients). Returns the package
    tokens (B, 1, C), all zeros where nothing is pruned (or, normalised, where the pruned scores sum to 0),
    and the pruned scores' sum (B,).

    >>> x = torch.tensor([[[0.0, 0.0], [10.0, -10.0], [20.0, 5.0]]])
    >>> s, pruned = torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[0.0, 1.0, 1.0]])
    >>> package_tokens(x, s, pruned)[0].flatten().tolist()
    [50.0, 0.0]
    >>> p, total = package_tokens(x, s, pruned, normalise=True)
    >>> [round(v, 3) for v in p.flatten().tolist()], total.tolist()
    ([16.667, 0.0], [3.0])
    """
    w = scores * pruned
    total = w.sum(dim=1)
    acc = (x * w[..., None]).sum(dim=1, keepdim=True)
    if not normalise:
        return acc, total
    safe = torch.where(total > 0, total, torch.ones_like(total))
    pkg = torch.where((total > 0)[:, None, None], acc / safe[:, None, None], torch.zeros_like(acc))
    return pkg, total


def _at_least_zero(v):
    return v.clamp_min(0) if isinstance(v, Tensor) else max(0, v)


class MultiHeadPredictor(nn.Module):
    """Per-head DynamicViT predictors mixed by per-token squeeze-and-excitation head weights."""

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
        self.se = nn.Sequential(nn.Linear(num_heads, hidden), nn.GELU(), nn.Linear(hidden, num_heads),
                                nn.Sigmoid())

    def forward(self, x: Tensor, policy: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, N, C) tokens, policy (B, N, 1) keep weights -> (mixed log-probabilities (B, N, 2), mixed
        probabilities (B, N, 2), head weights (B, N, H)); index 0 is keep, 1 drop."""
        B, N, _ = x.shape
        xh = x.reshape(B, N, self.num_heads, self.head_dim)
        weights = self.se(xh.mean(dim=-1))  # per token: the release's AdaptiveAvgPool2d((N, H)) on (B, N, C)
        logp = torch.stack([head(xh[:, :, h], policy) for h, head in enumerate(self.heads)], dim=2)
        w, total = weights[..., None], weights.sum(dim=-1)[..., None]
        return (w * logp).sum(dim=2) / total, (w * logp.exp()).sum(dim=2) / total, weights

    def macs_per_token(self) -> int:
        hidden = self.se[0].out_features
        return self.num_heads * PredictorLG.macs_per_token(self.head_dim) + 2 * self.num_heads * hidden


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, not {value!r}")
    return value


class SPViTSelector(TokenSelector):
    """One SPViT stage (before its block): multi-head scores, Gumbel / threshold / top-k keep, a package token.

    ``keep_ratio`` here is the per-stage factor ``q`` of the schedule (``int(num_patches * q ** (s + 1))``
    patches kept after stage ``s``); :func:`plan_keep_ratio` sets it from the budget. ``decision`` and
    ``package`` are described in the module docstring.
    """

    site = "pre"
    needs_attn_info = False

    def __init__(self, embed_dim: int, num_heads: int, num_patches: int, keep_ratio: float = 1.0,
                 tau: float = 1.0, decision: str = "threshold", package: str = "sum"):
        super().__init__(keep_ratio)
        self.num_patches = num_patches
        self.tau = tau
        self.decision = _check_choice("decision", decision, DECISIONS)
        self.package = _check_choice("package", package, PACKAGES)
        self.predictor = MultiHeadPredictor(embed_dim, num_heads)

    @property
    def adaptive(self) -> bool:
        """Each image keeps its own count (the threshold rule)."""
        return self.decision == "threshold"

    # -- the static schedule -------------------------------------------------------------------------
    def kept_patches(self, stage: int | None = None) -> int:
        """Patch tokens kept after ``stage`` (default: this one); ``num_patches`` before stage 0."""
        stage = self.stage if stage is None else stage
        return self.num_patches if stage < 0 else keep_count(self.num_patches, self.keep_ratio, stage)

    def adds_package(self, stage: int | None = None) -> bool:
        """Whether the static schedule has a package token after ``stage``: where it prunes patches (with
        ``decision="threshold"`` the forward appends one at every stage, as the release; the schedule
        leaves out the zero token of a stage planned to prune nothing, as the hardware does)."""
        stage = self.stage if stage is None else stage
        return self.kept_patches(stage) < self.kept_patches(stage - 1)

    def _appends_package(self) -> bool:
        return self.decision == "threshold" or self.adds_package()

    def protected_in(self) -> int:
        """Protected tokens entering this stage: the class token and the earlier stages' package tokens."""
        if self.decision == "threshold":
            return 1 + self.stage
        return 1 + sum(self.adds_package(s) for s in range(self.stage))

    def expected_tokens(self, n_in: int) -> int:
        """The planned schedule (with ``decision="threshold"`` each image's count varies around it)."""
        return n_in - self.kept_patches(self.stage - 1) + self.kept_patches() + int(self.adds_package())

    def macs(self, n_in, n_out, dim: int):
        # every token but the class token is scored (the release scores the package tokens too); at counts
        # no schedule reaches nothing is counted below 0
        scored = _at_least_zero(n_in - 1)
        pruned = _at_least_zero(n_in - n_out + int(self._appends_package()))
        return scored * self.predictor.macs_per_token() + pruned * dim  # package: one MAC per pruned channel

    # -- the stage -----------------------------------------------------------------------------------
    def _decide(self, keep_logit: Tensor, state: TokenState) -> Tensor:
        """(B, N - P) hard keep values of the candidates' positions (before the cumulative mask)."""
        P = state.num_protected
        cand_logit = keep_logit[:, P - 1:]
        if self.training and state.path == "mask":
            return gumbel_keep(cand_logit, tau=self.tau)
        if self.decision == "threshold":
            return (cand_logit > 0).to(keep_logit.dtype)
        return stable_topk_mask(cand_logit, self.kept_patches(), state.candidates()[:, P:]).to(keep_logit.dtype)

    def forward(self, state: TokenState, info: AttnInfo | None = None) -> TokenState:
        P = state.num_protected
        B, N, _ = state.x.shape
        prev = state.x.new_ones(B, N) if state.keep is None else state.keep  # padding or the cumulative mask
        logp, prob, _ = self.predictor(state.x[:, 1:], prev[:, 1:, None])
        keep_logit = logp[..., 0] - logp[..., 1]  # (B, N - 1)
        scores = torch.cat([keep_logit.new_zeros(B, 1), keep_logit], dim=1)
        keep = torch.cat([prev[:, :P], self._decide(keep_logit, state) * prev[:, P:]], dim=1)
        block = len(state.attn_tokens)
        state.decisions.append(Decision(self.stage, block, keep, scores, state.index, P))
        # newly pruned: kept before, dropped now (the release's prev - keep; straight-through values)
        pruned = prev - keep
        keep_prob = torch.cat([prob.new_zeros(B, 1), prob[..., 0]], dim=1)
        pkg, _ = package_tokens(state.x, keep_prob, pruned, normalise=self.package == "mean")
        if not self._appends_package():
            pkg = pkg[:, :0]  # top-k at a stage planned to prune nothing: no (zero) package token
        if state.path == "mask":
            x, index, valid = state.x, state.index, keep
        else:
            indices, valid = pack_keep_mask(keep > 0.5)  # the protected tokens come first, in order
            x, index = gather_tokens(state.x, indices), torch.gather(state.index, 1, indices)
            valid = None if valid is None else valid.to(x.dtype)
        E = pkg.shape[1]
        x = torch.cat([x[:, :P], pkg.to(x.dtype), x[:, P:]], dim=1)
        index = torch.cat([index[:, :P], index.new_full((B, E), -1), index[:, P:]], dim=1)
        if valid is not None:
            valid = torch.cat([valid[:, :P], valid.new_ones(B, E), valid[:, P:]], dim=1)
        return state.replace(x=x, keep=valid, index=index, num_protected=P + E, attn_info=None)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", heads={self.predictor.num_heads}, keep={self.kept_patches()}, "
                f"decision={self.decision!r}, package={self.package!r}")


def set_decision(model: nn.Module, decision: str) -> None:
    """Set the inference decision rule (``"threshold"`` or ``"topk"``) of every SPViT stage of ``model``."""
    decision = _check_choice("decision", decision, DECISIONS)
    for sel in _spvit_stages(model, "set_decision"):
        sel.decision = decision


# -- computation-aware keep ratios -----------------------------------------------------------------------
def _spvit_stages(model: nn.Module, caller: str = "plan_keep_ratio") -> list[SPViTSelector]:
    module = getattr(model, "module", model)
    sels = [s for _, s in module.stage_selectors()]
    if not sels or not all(isinstance(s, SPViTSelector) for s in sels):
        raise ValueError(f"{caller} needs a model whose token selectors are all SPViT selectors")
    return sels


def static_stage_counts(model: nn.Module) -> list[int]:
    """Tokens leaving each pruning stage under the selectors' current keep ratios (the planned schedule)."""
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
