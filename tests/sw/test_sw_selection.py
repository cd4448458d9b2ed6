"""Token selection: tie rule, packing, masked softmax, both paths, invariants, train/infer agreement."""

import re

import pytest
import torch
from path_agreement import assert_mask_and_gather_agree

from tokensift.sw import TokenSelector, create_model
from tokensift.sw.selection import (
    check_keep_ratio,
    gather_tokens,
    gumbel_keep,
    masked_softmax,
    pack_keep_mask,
    stable_topk_indices,
    stable_topk_mask,
)


# -- pure functions --------------------------------------------------------------------------------------
def test_topk_ties_go_to_the_lower_index():
    scores = torch.tensor([[0.5, 1.0, 1.0, 0.2, 1.0, 1.0]])
    assert stable_topk_mask(scores, 3).tolist() == [[False, True, True, False, True, False]]
    assert stable_topk_indices(scores, 3).tolist() == [[1, 2, 4]]
    all_equal = torch.zeros(2, 200)
    assert stable_topk_indices(all_equal, 5).tolist() == [[0, 1, 2, 3, 4]] * 2
    assert stable_topk_mask(all_equal, 150)[:, :150].all() and not stable_topk_mask(all_equal, 150)[:, 150:].any()


def test_topk_matches_a_naive_model_on_random_ties():
    g = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 4, (16, 40), generator=g).float()  # many ties
    k = torch.randint(1, 40, (16,), generator=g)
    got = stable_topk_mask(scores, k)
    for row, kk, s in zip(got, k.tolist(), scores.tolist(), strict=True):
        naive = sorted(range(40), key=lambda i: (-s[i], i))[:kk]
        assert sorted(torch.nonzero(row).flatten().tolist()) == sorted(naive)


def test_topk_respects_candidates():
    scores = torch.tensor([[9.0, 3.0, 2.0, 1.0]])
    cand = torch.tensor([[False, True, False, True]])
    assert stable_topk_mask(scores, 1, cand).tolist() == [[False, True, False, False]]
    assert stable_topk_mask(scores, 3, cand).tolist() == [[False, True, False, True]]


def test_pack_keep_mask_pads_and_orders():
    keep = torch.tensor([[True, False, True, True], [True, True, False, False]])
    idx, valid = pack_keep_mask(keep)
    assert idx[0].tolist() == [0, 2, 3] and idx[1, :2].tolist() == [0, 1]
    assert valid.tolist() == [[True, True, True], [True, True, False]]
    idx, valid = pack_keep_mask(torch.tensor([[True, False, True]]))
    assert idx.tolist() == [[0, 2]] and valid is None
    x = torch.arange(12.0).reshape(1, 4, 3)
    assert gather_tokens(x, torch.tensor([[3, 1]])).tolist() == [[[9, 10, 11], [3, 4, 5]]]


def test_masked_softmax_equals_softmax_over_kept_tokens_and_rows_never_empty():
    logits = torch.randn(2, 3, 6, 6)
    keep = torch.tensor([[1, 1, 0, 1, 0, 1], [1, 0, 0, 0, 0, 0]], dtype=torch.float)
    p = masked_softmax(logits, keep)
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 3, 6))
    kept = keep[0].bool()
    ref = logits[0][:, kept][:, :, kept].softmax(-1)
    torch.testing.assert_close(p[0][:, kept][:, :, kept], ref)
    # nobody attends to a dropped token; it still attends to itself (and to the kept tokens)
    assert (p[0, :, kept, 2] == 0).all() and (p[0, :, 2, 2] > 0).all()
    assert (p[0, :, 2, 4] == 0).all()  # nor to another dropped token
    # with only the class token kept, a dropped token attends to exactly the class token and itself
    assert ((p[1, :, 3] > 0) == torch.tensor([True, False, False, True, False, False])).all()
    # extreme logits do not produce NaN rows for dropped tokens
    big = torch.full((1, 1, 3, 3), -1e4)
    big[..., 0] = 1e4
    assert torch.isfinite(masked_softmax(big, torch.tensor([[1.0, 0.0, 1.0]]))).all()


def test_gumbel_keep_is_hard_and_passes_gradients():
    logits = torch.zeros(4, 100, requires_grad=True)
    k = gumbel_keep(logits)
    assert set(k.unique().tolist()) <= {0.0, 1.0}
    k.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    sure = gumbel_keep(torch.full((1, 50), 30.0))
    assert sure.all()


@pytest.mark.parametrize("value,exc,msg", [
    (1.5, ValueError, r"^keep ratio must be in \(0, 1\], not 1\.5$"),
    (0, ValueError, r"^keep ratio must be in \(0, 1\], not 0$"),
    (float("nan"), ValueError, r"^keep ratio must be in \(0, 1\], not nan$"),
    ("0.7", TypeError, r"^keep ratio must be a number, not '0\.7'$"),
    (True, TypeError, r"^keep ratio must be a number, not True$"),
])
def test_keep_ratio_errors(value, exc, msg):
    with pytest.raises(exc, match=msg):
        check_keep_ratio(value)


# -- the model-level invariants -------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["dynamicvit", "evit"])
def test_class_token_kept_and_counts_follow_schedule(method):
    model = create_model("vit_mnist_patch4_28", method=method, keep_ratio=0.7).eval()
    with torch.no_grad():
        state = model.forward_state(torch.randn(3, 1, 28, 28))
    assert (state.index[:, 0] == 0).all()  # class token first, always kept
    if method == "dynamicvit":
        # int(49 * 0.7^s) patches after stage s, before blocks 1, 3, 5
        assert state.attn_tokens == [50, 35, 35, 25, 25, 17]
        assert state.x.shape[1] == 17
        assert (state.index[:, 1:] > 0).all()
    else:
        # ceil(0.7 * candidates) kept + 1 fused token, inside blocks 1, 3, 5
        assert state.attn_tokens == [50, 50, 37, 37, 28, 28]
        assert state.mlp_tokens == [50, 37, 37, 28, 28, 21]
        assert (state.index[:, -1] == -1).all()
    for row in state.index:  # kept patches in original order, no duplicates
        patches = row[row > 0]
        assert torch.equal(patches, patches.sort().values) and len(patches.unique()) == len(patches)


def test_training_masks_are_cumulative_and_class_token_kept():
    model = create_model("vit_mnist_patch4_28", method="dynamicvit", keep_ratio=0.7).train()
    state = model.forward_state(torch.randn(4, 1, 28, 28))
    assert state.path == "mask" and state.x.shape[1] == 50  # nothing removed while training
    prev = torch.ones(4, 50)
    for d in state.decisions:
        assert (d.keep[:, 0] == 1).all()
        assert (d.keep <= prev).all()  # a dropped token never comes back
        assert set(d.keep.detach().unique().tolist()) <= {0.0, 1.0}
        prev = d.keep
    torch.testing.assert_close(state.keep, state.decisions[-1].keep)


def test_gradient_flows_to_predictor_and_backbone_through_mask_path():
    model = create_model("vit_mnist_patch4_28", method="dynamicvit", keep_ratio=0.7).train()
    model.forward_head(model.forward_state(torch.randn(4, 1, 28, 28)).x).square().sum().backward()
    for i in (1, 3, 5):
        g = model.selectors[str(i)].predictor.in_conv[1].weight.grad
        assert g is not None and g.abs().sum() > 0, f"no gradient reached the predictor of block {i}"
    assert model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["dynamicvit", "evit"])
def test_mask_and_gather_paths_agree_for_the_same_hard_decisions(method):
    model = create_model("vit_mnist_patch4_28", method=method, keep_ratio=0.7).eval()
    x = torch.randn(5, 1, 28, 28)
    lm, lg = assert_mask_and_gather_agree(model, x)
    assert torch.equal(lm.argmax(-1), lg.argmax(-1))


class NormThreshold(TokenSelector):
    """A per-image-count selector (AS-ViT style threshold), to exercise padding on the gather path."""

    def __init__(self, threshold):
        super().__init__(1.0)
        self.threshold = threshold

    def score(self, state, info):
        return state.x.norm(dim=-1)

    def decide(self, scores, state):
        return ((scores > self.threshold) & state.candidates()).to(state.x.dtype)


def test_variable_counts_per_image_pad_and_mask_and_match_batch_of_one():
    model = create_model("vit_mnist_patch4_28").eval()
    model.add_selector(2, NormThreshold(threshold=None))
    x = torch.randn(6, 1, 28, 28)
    with torch.no_grad():
        norms = model.blocks[1](model.blocks[0](model._embed(x))).norm(dim=-1)[:, 1:]
        model.selectors["2"].threshold = float(norms.median())
        batched = model.forward_state(x)
        counts = batched.attn_tokens[2]
        assert isinstance(counts, torch.Tensor) and len(counts.unique()) > 1  # really different per image
        assert batched.keep is not None  # padded, masked
        logits = model.forward_head(batched.x)
        for i in range(len(x)):
            one = model.forward_state(x[i:i + 1])
            assert one.keep is None  # a batch of one needs no mask
            assert one.x.shape[1] == int(counts[i])
            torch.testing.assert_close(model.forward_head(one.x), logits[i:i + 1], rtol=1e-4, atol=1e-5)
        masked = model.forward_head(model.forward_state(x, path="mask").x)
    torch.testing.assert_close(masked, logits, rtol=1e-4, atol=1e-5)


def test_set_keep_ratio_changes_the_schedule_at_run_time():
    model = create_model("vit_mnist_patch4_28", method="dynamicvit", keep_ratio=0.7).eval()
    model.set_keep_ratio(0.5)
    with torch.no_grad():
        assert model.forward_state(torch.randn(1, 1, 28, 28)).attn_tokens == [50, 25, 25, 13, 13, 7]
    with pytest.raises(ValueError, match=r"^keep ratio must be in \(0, 1\], not 2$"):
        model.set_keep_ratio(2)


def test_add_selector_errors():
    model = create_model("vit_mnist_patch4_28", method="dynamicvit")
    with pytest.raises(ValueError, match=r"^block 1 already has a token selector$"):
        model.add_selector(1, NormThreshold(0.0))
    with pytest.raises(ValueError, match=re.escape("selector block index must be in [0, 5], not 6") + "$"):
        model.add_selector(6, NormThreshold(0.0))
    with pytest.raises(TypeError, match=r"^selector must be a TokenSelector, not Linear$"):
        model.add_selector(2, torch.nn.Linear(2, 2))
