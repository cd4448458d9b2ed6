"""SaiT: run-time density switch (1.0 == dense bit for bit), attention-mass pruning, alternating training."""

import numpy as np
import pytest
import torch
from path_agreement import assert_mask_and_gather_agree

from tokensift.sw import create_model
from tokensift.sw.flops import count_flops
from tokensift.sw.methods import get_method
from tokensift.sw.methods.sait import SaiTLoss, default_densities, early_selection_distill, mass_keep_counts

MODEL = "vit_mnist_patch4_28"


def _peaked(model):
    """Peaked class attention (as after training): at initialisation it is almost uniform."""
    torch.manual_seed(0)
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn.qkv.weight.normal_(0, 0.15)
    return model


def _dense_twin(model):
    dense = create_model(MODEL).eval()
    dense.load_state_dict(model.state_dict())
    return dense


@pytest.mark.parametrize("path", ["gather", "mask"])
def test_density_one_reproduces_the_dense_model_bit_for_bit(path):
    model = _peaked(create_model(MODEL, method="sait", keep_ratio=0.5)).eval()
    dense = _dense_twin(model)
    x = torch.randn(7, 1, 28, 28)
    with torch.no_grad():
        sparse = model.forward_head(model.forward_state(x, path=path).x)
        model.set_keep_ratio(1.0)
        same = model.forward_head(model.forward_state(x, path=path).x)
        ref = dense.forward_head(dense.forward_state(x, path=path).x)
    assert torch.equal(same, ref)
    assert not torch.equal(sparse, ref)  # at 0.5 the model really pruned
    model.set_keep_ratio(0.5)  # and back, without retraining
    with torch.no_grad():
        assert torch.equal(model.forward_head(model.forward_state(x, path=path).x), sparse)


def test_density_one_stays_exact_after_alternating_training_steps():
    model = _peaked(create_model(MODEL, method="sait", keep_ratio=0.5)).train()
    teacher = create_model(MODEL).eval()
    crit = get_method("sait").build_criterion(0.5, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    densities = []
    for _ in range(4):
        densities.append(crit.next_density())
        loss, parts = crit(model, teacher, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert [s.keep_ratio for s in model.selectors.values()] == [0.5] * 3  # restored after each step
        assert ("attn" in parts) == (parts["density"] < 1)
    assert densities == [1.0, 0.5, 1.0, pytest.approx(2 / 3)]
    model.eval().set_keep_ratio(1.0)
    dense = _dense_twin(model)
    with torch.no_grad():
        assert torch.equal(model(x), dense(x))


def test_lower_density_keeps_fewer_tokens_per_image_and_the_class_token():
    model = _peaked(create_model(MODEL, method="sait", keep_ratio=0.9)).eval()
    x = torch.randn(6, 1, 28, 28) * torch.linspace(0.3, 3, 6)[:, None, None, None]
    flops = []
    for r in (0.95, 0.8, 0.6, 0.4):
        model.set_keep_ratio(r)
        with torch.no_grad():
            state = model.forward_state(x)
        assert (state.index[:, 0] == 0).all()
        assert all((d.keep[:, 0] == 1).all() for d in state.decisions)
        flops.append(count_flops(model, x).macs)
    assert flops == sorted(flops, reverse=True) and flops[-1] < flops[0]
    counts = state.attn_tokens[1]
    assert isinstance(counts, torch.Tensor) and len(counts.unique()) > 1  # adapts to each image


def test_mask_and_gather_paths_agree():
    model = _peaked(create_model(MODEL, method="sait", keep_ratio=0.8)).eval()
    x = torch.randn(5, 1, 28, 28) * torch.linspace(0.5, 2, 5)[:, None, None, None]
    assert_mask_and_gather_agree(model, x)


def test_mass_rule_matches_a_naive_model():
    g = torch.Generator().manual_seed(2)
    for _ in range(30):
        n = int(torch.randint(3, 20, (1,), generator=g))
        scores = torch.randint(0, 5, (4, n), generator=g).float()  # ties
        cand = torch.rand(4, n, generator=g) < 0.8
        cand[:, 0] = False
        mass = float(torch.rand(1, generator=g)) * 0.9 + 0.05
        got = mass_keep_counts(scores, cand, mass)
        for b in range(4):
            idx = [i for i in range(n) if cand[b, i]]
            total = sum(float(scores[b, i]) for i in idx)
            order = sorted(idx, key=lambda i: (-float(scores[b, i]), i))
            k, acc = 0, 0.0
            for i in order:
                if acc >= mass * total and k > 0:
                    break
                acc += float(scores[b, i])
                k += 1
            if total == 0:
                k = min(1, len(idx))
            assert int(got[b]) == k, (scores[b], cand[b], mass)


def test_early_selection_distillation_pulls_the_first_stage_toward_the_teacher():
    torch.manual_seed(0)
    model = _peaked(create_model(MODEL, method="sait", keep_ratio=0.6)).train()
    teacher = _peaked(create_model(MODEL)).eval()
    with torch.no_grad():  # a teacher that looks elsewhere than the student
        for blk in teacher.blocks:
            blk.attn.qkv.weight.normal_(0, 0.2)
    from tokensift.sw.losses_distill import teacher_outputs

    x = torch.randn(8, 1, 28, 28)
    t = teacher_outputs(teacher, x, last_attention=True)
    torch.testing.assert_close(t.logits, teacher(x))
    opt = torch.optim.Adam(model.blocks[0].parameters(), lr=3e-3)
    hist = []
    for _ in range(15):
        loss = early_selection_distill(model.forward_state(x, path="gather"), t.last_cls_attn)
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append(float(loss.detach()))
    assert np.mean(hist[-3:]) < 0.7 * np.mean(hist[:3])


def test_flops_counter_agrees_with_a_hand_count_per_image():
    model = _peaked(create_model(MODEL, method="sait", keep_ratio=0.5, img_size=8, embed_dim=16,
                                 num_heads=2, depth=3, prune_locs=(1,))).eval()
    x = torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        n1 = model.forward_state(x).attn_tokens[1]
    n1 = n1.tolist() if isinstance(n1, torch.Tensor) else [n1] * 6

    def block(n):
        return n * 16 * 48 + 2 * n * n * 16 + n * 16 * 16 + 2 * n * 16 * 32

    hand = [4 * 16 * 16 + block(5) + 2 * block(n) + 16 * 10 for n in n1]  # scoring costs no multiplies
    assert count_flops(model, x).macs == pytest.approx(float(np.mean(hand)), rel=1e-12)
    assert min(n1) < 5


def test_default_densities_and_errors():
    assert default_densities(0.4) == (0.4, 0.6, 0.8)
    assert default_densities(1.0) == (1.0,)
    with pytest.raises(ValueError, match=r"^keep ratio must be in \(0, 1\], not 1\.2$"):
        SaiTLoss(0.5, 3, densities=(0.5, 1.2))
    model = create_model(MODEL, method="sait", keep_ratio=0.5)
    with pytest.raises(ValueError, match=r"^keep ratio must be in \(0, 1\], not 0$"):
        model.set_keep_ratio(0)
    with pytest.raises(ValueError, match=r"^the teacher must be a dense model without token selectors, not one "
                                         r"with 3$"):
        SaiTLoss(0.5, 3)(model, model, torch.randn(2, 1, 28, 28), torch.zeros(2, dtype=torch.long))
