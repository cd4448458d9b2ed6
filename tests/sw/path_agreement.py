"""The check every method's selector owes: the mask path (training) and the gather path (inference) agree."""

from __future__ import annotations

import torch


def assert_mask_and_gather_agree(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Same logits (to float tolerance) and the same kept tokens per stage; the gather path really removes
    tokens. Returns the (mask, gather) logits."""
    with torch.no_grad():
        masked, gathered = model.forward_state(x, path="mask"), model.forward_state(x, path="gather")
        lm, lg = model.forward_head(masked.x), model.forward_head(gathered.x)
    assert gathered.x.shape[1] < masked.x.shape[1]
    torch.testing.assert_close(lm, lg, rtol=1e-4, atol=1e-5)
    for dm, dg in zip(masked.decisions, gathered.decisions, strict=True):
        for im, km, ig, kg in zip(dm.index, dm.keep, dg.index, dg.keep, strict=True):
            assert sorted(im[km > 0.5].tolist()) == sorted(ig[kg > 0.5].tolist())
    return lm, lg
