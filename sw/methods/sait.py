"""SaiT (Li et al., 2022): one set of weights for every token density, chosen at run time.

* **Adaptive token pruning** (:class:`SaiTSelector`): before each pruning stage, the patch tokens are
  ranked by the class token's attention in the block just before (mean over heads, read from
  :class:`tokensift.sw.selection.AttnInfo`: no second attention pass), and each image keeps its smallest
  set of best-ranked tokens that holds a fraction ``r`` of the class attention given to the candidates
  (``r`` = the keep ratio). The count adapts to the image: a peaked attention map keeps few tokens, a flat
  one keeps many. No parameters.
* **Run-time density switch**: ``model.set_keep_ratio(r)`` moves every stage to attention mass ``r``
  without retraining; ``r = 1.0`` skips the stages entirely, so the model computes exactly the dense model
  (bit for bit).
* **Dense/sparse alternating training** (:class:`SaiTLoss`): steps alternate between the dense model
  (``r = 1``) and a sparse one (cycling through ``densities``), with the same weights. Both are distilled
  from the dense teacher (1.0 x KL of the class outputs: the shared weights must keep the dense model's
  accuracy); sparse steps add the **distillation for early selection**: 1.0 x KL(teacher's last-block
  class attention || student's class attention at the first pruning stage), over the patch tokens, so the
  early layers learn to look where the final layer does.

Example:
    >>> import torch
    >>> from tokensift.sw import create_model
    >>> model = create_model("vit_mnist_patch4_28", method="sait", keep_ratio=0.7).eval()
    >>> dense = create_model("vit_mnist_patch4_28").eval()
    >>> _ = dense.load_state_dict(model.state_dict())
    >>> x = torch.randn(2, 1, 28, 28)
    >>> model.set_keep_ratio(1.0)
    >>> torch.equal(model(x), dense(x))
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..losses_distill import logit_distill, teacher_outputs
from ..selection import AttnInfo, TokenSelector, TokenState, check_keep_ratio, stable_topk_mask
from . import MethodSpec, register_method

__all__ = ["SaiTSelector", "SaiTLoss", "mass_keep_counts", "default_densities"]


def mass_keep_counts(scores: Tensor, candidates: Tensor, mass: float) -> Tensor:
    """(B,) fewest best-ranked candidates holding at least ``mass`` of the candidates' total score.

    Ranking: higher score first, lower index on ties (the shared tie rule). At least one candidate is
    kept when there is one.

    >>> s = torch.tensor([[0.0, 0.5, 0.1, 0.3, 0.1]])
    >>> c = torch.tensor([[False, True, True, True, True]])
    >>> mass_keep_counts(s, c, 0.45).tolist(), mass_keep_counts(s, c, 0.7).tolist(), mass_keep_counts(s, c, 0.85).tolist()
    ([1], [2], [3])
    """
    w = scores * candidates
    p = w / w.sum(dim=-1, keepdim=True).clamp_min(1e-30)
    order = torch.sort(w.masked_fill(~candidates, float("-inf")), dim=-1, descending=True, stable=True).indices
    sp = torch.gather(p, -1, order)
    before = sp.cumsum(dim=-1) - sp  # mass of the better-ranked candidates
    is_cand = torch.gather(candidates, -1, order)
    return ((before < mass) & is_cand).sum(dim=-1)


def default_densities(keep_ratio: float) -> tuple[float, ...]:
    """Sparse-step levels of :class:`SaiTLoss`: ``keep_ratio`` and two evenly spaced levels up to 1."""
    step = (1.0 - keep_ratio) / 3
    return tuple(round(keep_ratio + i * step, 6) for i in range(3)) if keep_ratio < 1 else (1.0,)


class SaiTSelector(TokenSelector):
    """One SaiT stage (before its block): keep the tokens holding a fraction ``keep_ratio`` of class attention."""

    site = "pre"
    needs_attn_info = True
    adaptive = True

    def score(self, state: TokenState, info: AttnInfo | None) -> Tensor:
        return info.cls_attn.mean(dim=1)

    def num_keep(self, state: TokenState) -> Tensor:
        raise RuntimeError("SaiT's kept count depends on the scores; it is computed in decide()")

    def decide(self, scores: Tensor, state: TokenState) -> Tensor:
        cand = state.candidates()
        k = mass_keep_counts(scores.detach(), cand, self.keep_ratio)
        return stable_topk_mask(scores, k, cand).to(state.x.dtype)

    def expected_tokens(self, n_in: int) -> int:
        """The count adapts to each image: the static schedule is the worst case (nothing pruned)."""
        return n_in

    def forward(self, state: TokenState, info: AttnInfo | None = None) -> TokenState:
        if self.keep_ratio >= 1.0:
            return state  # the dense model: nothing is touched
        return super().forward(state, info)


class SaiTLoss(nn.Module):
    """Dense/sparse alternating training with distillation (see the module docstring).

    Each call is one step: even calls train the dense model, odd calls a sparse one, cycling through
    ``densities``. The model's own keep ratio is restored after the step.
    """

    def __init__(self, keep_ratio: float, num_stages: int, densities: tuple[float, ...] | None = None,
                 distill_weight: float = 1.0, attn_weight: float = 1.0):
        super().__init__()
        self.densities = tuple(check_keep_ratio(d) for d in (densities or default_densities(keep_ratio)))
        self.num_stages = num_stages
        self.distill_weight, self.attn_weight = distill_weight, attn_weight
        self.calls = 0

    def next_density(self) -> float:
        """The density of the coming step: 1.0 (dense) on even calls, then the sparse levels in turn."""
        if self.calls % 2 == 0:
            return 1.0
        return self.densities[(self.calls // 2) % len(self.densities)]

    def forward(self, student: nn.Module, teacher: nn.Module | None, images: Tensor, labels: Tensor
                ) -> tuple[Tensor, dict[str, Tensor | float]]:
        module = getattr(student, "module", student)
        density = self.next_density()
        self.calls += 1
        saved = [sel.keep_ratio for _, sel in module.stage_selectors()]
        module.set_keep_ratio(density)
        try:
            state = module.forward_state(images, path="gather")
        finally:
            for (_, sel), r in zip(module.stage_selectors(), saved, strict=True):
                sel.set_keep_ratio(r)
        if density < 1.0 and len(state.decisions) != self.num_stages:
            raise RuntimeError(f"expected {self.num_stages} pruning stages, got {len(state.decisions)}")
        logits = module.forward_head(state.x)
        cls_loss = F.cross_entropy(logits, labels)
        loss = cls_loss
        parts = {"cls": cls_loss.detach(), "density": density}
        if teacher is not None:
            sparse = density < 1.0 and self.attn_weight > 0
            t = teacher_outputs(teacher, images, last_attention=sparse)
            if self.distill_weight > 0:
                kl = logit_distill(logits, t.logits)
                loss = loss + self.distill_weight * kl
                parts["kl"] = kl.detach()
            if sparse:
                attn = early_selection_distill(state, t.last_cls_attn)
                loss = loss + self.attn_weight * attn
                parts["attn"] = attn.detach()
        return loss, parts


def early_selection_distill(state: TokenState, teacher_cls_attn: Tensor) -> Tensor:
    """KL(teacher's last-block class attention || student's at the first stage), over the patch tokens.

    Both distributions are the head means renormalised over the patches. The first stage sees every
    token in its original order, so the two line up position by position.
    """
    if not state.decisions:
        raise RuntimeError("early-selection distillation needs a forward pass that ran a pruning stage")
    d = state.decisions[0]
    t = teacher_cls_attn.mean(dim=1)[:, 1:]
    s = d.scores[:, 1:]
    if s.shape != t.shape:
        raise RuntimeError(f"the first pruning stage saw {s.shape[1]} patches, the teacher {t.shape[1]}")
    t = t / t.sum(dim=-1, keepdim=True)
    log_s = (s / s.sum(dim=-1, keepdim=True)).clamp_min(1e-12).log()
    return F.kl_div(log_s, t, reduction="batchmean")


register_method(MethodSpec(
    name="sait",
    build_selectors=lambda dim, n, rho, locs: {loc: SaiTSelector(rho) for loc in locs},
    build_criterion=lambda rho, stages: SaiTLoss(rho, stages),
    uses_teacher=True,
    description="adaptive class-attention-mass pruning, dense/sparse alternating training, run-time density",
))
