"""Integer vs float selection decisions, per token (shared by the integer-stage tests)."""

import numpy as np
import torch


def float_decisions(model, images) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per image (each run alone, so no padding), per stage: (original index, keep) of the tokens that entered."""
    out = []
    with torch.no_grad():
        for b in range(len(images)):
            state = model.forward_state(images[b:b + 1], path="gather")
            out.append([(d.index[0].numpy(), (d.keep[0] > 0.5).numpy()) for d in state.decisions])
    return out


def decision_agreement(int_decisions, float_decs) -> float:
    """Fraction of the candidate tokens (original index >= 1) entering a stage in both models whose keep
    decisions agree, over every image and stage."""
    agree = total = 0
    for records, decisions in zip(int_decisions, float_decs, strict=True):
        assert len(records) == len(decisions)
        for rec, (index, keep) in zip(records, decisions, strict=True):
            fk = {int(j): bool(k) for j, k in zip(index, keep, strict=True) if j >= 1}
            for j, k in zip(rec.index.tolist(), rec.keep.tolist(), strict=True):
                if j >= 1 and j in fk:
                    total += 1
                    agree += fk[j] == k
    return agree / total
