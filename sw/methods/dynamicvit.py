"""DynamicViT (Rao et al., 2021): a learned prediction module keeps rho, rho^2, rho^3 of the patch tokens.

Training (``"mask"`` path): hard Gumbel-softmax decisions, multiplied by the previous stage's, mask the
attention; inference (``"gather"`` path): the top ``int(num_patches * rho^s)`` scores are kept and gathered.
The loss (:class:`DynamicViTLoss`) is cross-entropy + 2.0 x keep-ratio MSE + 0.5 x KL to a dense teacher +
0.5 x MSE between the kept tokens and the teacher's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..selection import AttnInfo, TokenSelector, TokenState, gumbel_keep, stable_topk_mask

__all__ = ["PredictorLG", "DynamicViTSelector", "DynamicViTLoss", "keep_count"]


def keep_count(num_patches: int, keep_ratio: float, stage: int) -> int:
    """Patch tokens kept after ``stage`` (0-based): ``int(num_patches * rho ** (stage + 1))``, at least 1."""
    return max(1, int(num_patches * keep_ratio ** (stage + 1) + 1e-6))


class PredictorLG(nn.Module):
    """DynamicViT's prediction module: local and global features -> log-probabilities (keep, drop)."""

    def __init__(self, embed_dim: int):
        super().__init__()
        self.in_conv = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, embed_dim), nn.GELU())
        self.out_conv = nn.Sequential(
            nn.Linear(embed_dim, embed_dim // 2), nn.GELU(),
            nn.Linear(embed_dim // 2, embed_dim // 4), nn.GELU(),
            nn.Linear(embed_dim // 4, 2), nn.LogSoftmax(dim=-1),
        )

    def forward(self, x: Tensor, policy: Tensor) -> Tensor:
        """x (B, N, C) patch tokens, policy (B, N, 1) current keep weights -> (B, N, 2) log-probs."""
        x = self.in_conv(x)
        C = x.shape[-1]
        local_x = x[..., : C // 2]
        # mean over the kept tokens; an image whose patches are all dropped gets a zero global feature
        # (the released code divides by zero there)
        global_x = (x[..., C // 2:] * policy).sum(dim=1, keepdim=True) / policy.sum(
            dim=1, keepdim=True).clamp_min(1e-6)
        return self.out_conv(torch.cat([local_x, global_x.expand_as(local_x)], dim=-1))

    @staticmethod
    def macs_per_token(dim: int) -> int:
        return dim * dim + dim * (dim // 2) + (dim // 2) * (dim // 4) + (dim // 4) * 2


class DynamicViTSelector(TokenSelector):
    """One DynamicViT pruning stage (runs before its block)."""

    site = "pre"
    needs_attn_info = False

    def __init__(self, embed_dim: int, num_patches: int, keep_ratio: float, tau: float = 1.0):
        super().__init__(keep_ratio)
        self.num_patches = num_patches
        self.tau = tau
        self.predictor = PredictorLG(embed_dim)

    def score(self, state: TokenState, info: AttnInfo | None) -> Tensor:
        P = state.num_protected
        if state.keep is None:
            policy = state.x.new_ones(state.x.shape[0], state.x.shape[1] - P, 1)
        else:
            policy = state.keep[:, P:, None]
        logp = self.predictor(state.x[:, P:], policy)
        keep_logit = logp[..., 0] - logp[..., 1]  # monotone in p(keep): top-k order unchanged
        return torch.cat([keep_logit.new_zeros(keep_logit.shape[0], P), keep_logit], dim=1)

    def num_keep(self, state: TokenState) -> int:
        return keep_count(self.num_patches, self.keep_ratio, self.stage)

    def decide(self, scores: Tensor, state: TokenState) -> Tensor:
        if self.training and state.path == "mask":
            return gumbel_keep(scores, tau=self.tau)  # multiplied by the previous mask in forward()
        return stable_topk_mask(scores, self.num_keep(state), state.candidates()).to(state.x.dtype)

    def expected_tokens(self, n_in: int) -> int:
        return 1 + keep_count(self.num_patches, self.keep_ratio, self.stage)

    def macs(self, n_in, n_out, dim: int):
        return (n_in - 1) * PredictorLG.macs_per_token(dim)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", keep={keep_count(self.num_patches, self.keep_ratio, self.stage)}"


class DynamicViTLoss(nn.Module):
    """DynamicViT's training objective with a frozen dense teacher.

    ``forward(student, teacher, images, labels)`` runs both models (the teacher without gradients) and
    returns (loss, parts) where ``parts`` holds the four terms as detached 0-dim tensors.
    """

    def __init__(self, keep_ratio: float, num_stages: int, ratio_weight: float = 2.0,
                 distill_weight: float = 0.5, clf_weight: float = 1.0):
        super().__init__()
        self.targets = [keep_ratio ** (s + 1) for s in range(num_stages)]
        self.ratio_weight = ratio_weight
        self.distill_weight = distill_weight
        self.clf_weight = clf_weight

    def forward(self, student: nn.Module, teacher: nn.Module | None, images: Tensor, labels: Tensor
                ) -> tuple[Tensor, dict[str, Tensor | float]]:
        state = student.forward_state(images, path="mask")
        logits = student.forward_head(state.x)
        if len(state.decisions) != len(self.targets):
            raise RuntimeError(f"expected {len(self.targets)} pruning stages, got {len(state.decisions)}")
        ratio_loss = logits.new_zeros(())
        for target, d in zip(self.targets, state.decisions, strict=True):
            kept = d.keep[:, d.num_protected:].mean(dim=1)
            ratio_loss = ratio_loss + ((kept - target) ** 2).mean()
        ratio_loss = ratio_loss / len(self.targets)
        cls_loss = F.cross_entropy(logits, labels)
        loss = self.clf_weight * cls_loss + self.ratio_weight * ratio_loss
        parts = {"cls": cls_loss.detach(), "ratio": ratio_loss.detach()}
        if teacher is not None:
            with torch.no_grad():
                t_state = teacher.forward_state(images, path="gather")
                t_logits = teacher.forward_head(t_state.x)
            kl = F.kl_div(F.log_softmax(logits, dim=-1), F.log_softmax(t_logits, dim=-1),
                          reduction="batchmean", log_target=True)
            mask = state.keep[:, 1:] > 0.5 if state.keep is not None else None
            tok_s, tok_t = state.x[:, 1:], t_state.x[:, 1:]
            if mask is not None and tok_s.shape[1] == tok_t.shape[1] and bool(mask.any()):
                token_loss = (tok_s[mask] - tok_t[mask]).pow(2).mean()
            else:
                token_loss = logits.new_zeros(())
            loss = loss + self.distill_weight * (kl + token_loss)
            parts.update(kl=kl.detach(), token=token_loss.detach())
        return loss, parts
