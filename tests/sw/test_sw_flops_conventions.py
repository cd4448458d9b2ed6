"""FLOPs conventions: the published tables to the printed decimal, the released estimators' formulas exactly,
the fvcore-style norm count, and the errors.

Sources of the printed figures (GFLOPs):
* DynamicViT (Rao et al., NeurIPS 2021), Table 1, rho = 1.0 / 0.9 / 0.8 / 0.7 for DeiT-S, LV-ViT-S and
  LV-ViT-M; the same figures in the model zoo of raoyongming/DynamicViT's README (DynamicViT-256/0.7 1.3,
  DynamicViT-384/0.7 2.9, DynamicViT-LV-S/0.5 3.7, DynamicViT-LV-S/0.7 4.6, DynamicViT-LV-M/0.7 8.5).
* The dense DeiT-T / DeiT-S / DeiT-B rows (1.3 / 4.6 / 17.6) and LV-ViT-S (6.6) that the DynamicViT, SPViT
  and AS-ViT tables share.
* The estimators themselves: PeiyanFlying/SPViT ``est_flops_dynamicvit.py`` (``DynamicViT``, ``DeiT12``,
  ``Dynamic_LV_ViT``, ``LV_ViT``, ``Dynamic_Soft_Mask_ViT`` with the sparsities the file prints) and
  Cydia2018/AS-ViT ``vit.py`` (``PatchEmbed.flops``, ``Block.flops``, ``cal_flops``); the integers below are
  those functions' outputs.
"""

import json

import pytest
import torch

from tokensift.cli import main
from tokensift.sw import create_model
from tokensift.sw.flops import CONVENTIONS, count_flops, norm_flops, paper_macs, static_schedule

LVVIT_M = {"embed_dim": 512, "depth": 20, "num_heads": 8, "prune_locs": (5, 10, 15)}  # DynamicViT's lvvit_m
DEIT_256 = {"embed_dim": 256, "num_heads": 4}  # DynamicViT's deit_256


def shapes_only(name, method="none", keep=None, **kw):
    """The model's shapes (all the count needs) without initialising weights: quick for DeiT-B."""
    with torch.device("meta"):
        return create_model(name, method=method, keep_ratio=keep, **kw)


PRINTED = [
    # (model, overrides, method, rho, printed GFLOPs, source)
    ("deit_tiny_patch16_224", {}, "none", None, 1.3, "DeiT-T dense row (SPViT tables)"),
    ("deit_small_patch16_224", {}, "none", None, 4.6, "DynamicViT Table 1, DeiT-S rho 1.0"),
    ("deit_base_patch16_224", {}, "none", None, 17.6, "DeiT-B dense row (SPViT tables)"),
    ("deit_small_patch16_224", {}, "dynamicvit", 0.9, 4.0, "DynamicViT Table 1, DeiT-S rho 0.9"),
    ("deit_small_patch16_224", {}, "dynamicvit", 0.8, 3.4, "DynamicViT Table 1, DeiT-S rho 0.8"),
    ("deit_small_patch16_224", {}, "dynamicvit", 0.7, 2.9, "DynamicViT Table 1 / README DynamicViT-384/0.7"),
    ("deit_small_patch16_224", DEIT_256, "dynamicvit", 0.7, 1.3, "DynamicViT README DynamicViT-256/0.7"),
    ("lvvit_s", {}, "none", None, 6.6, "DynamicViT Table 1, LV-ViT-S rho 1.0"),
    ("lvvit_s", {}, "dynamicvit", 0.9, 5.8, "DynamicViT Table 1, LV-ViT-S rho 0.9"),
    ("lvvit_s", {}, "dynamicvit", 0.8, 5.1, "DynamicViT Table 1, LV-ViT-S rho 0.8"),
    ("lvvit_s", {}, "dynamicvit", 0.7, 4.6, "DynamicViT Table 1 / README DynamicViT-LV-S/0.7"),
    ("lvvit_s", {}, "dynamicvit", 0.5, 3.7, "DynamicViT README DynamicViT-LV-S/0.5"),
    ("lvvit_s", LVVIT_M, "none", None, 12.7, "DynamicViT Table 1, LV-ViT-M rho 1.0"),
    ("lvvit_s", LVVIT_M, "dynamicvit", 0.9, 11.1, "DynamicViT Table 1, LV-ViT-M rho 0.9"),
    ("lvvit_s", LVVIT_M, "dynamicvit", 0.8, 9.6, "DynamicViT Table 1, LV-ViT-M rho 0.8"),
    ("lvvit_s", LVVIT_M, "dynamicvit", 0.7, 8.5, "DynamicViT Table 1 / README DynamicViT-LV-M/0.7"),
]


@pytest.mark.parametrize("name, kw, method, rho, printed, source", PRINTED,
                         ids=[f"{p[0]}{'-' + str(p[1]['embed_dim']) if p[1] else ''}-{p[2]}-{p[3]}" for p in PRINTED])
def test_paper_convention_reproduces_the_printed_figure(name, kw, method, rho, printed, source):
    report = count_flops(shapes_only(name, method, rho, **kw), convention="paper")
    assert round(report.gflops, 1) == printed, source
    assert report.convention == "paper"


def test_the_macs_convention_differs_where_the_issue_says():
    """True MACs: DeiT-S at 0.7 is 2.98 (printed 2.9), because the predictor's first C x C layer counts."""
    model = shapes_only("deit_small_patch16_224", "dynamicvit", 0.7)
    macs, paper = count_flops(model), count_flops(model, convention="paper")
    assert round(macs.gflops, 2) == 2.98 and round(paper.gflops, 2) == 2.91
    assert macs.attn_tokens == [197] * 3 + [138] * 3 + [97] * 3 + [68] * 3  # the model keeps int(196 rho^s)
    assert paper.attn_tokens == [197] * 3 + [138] * 3 + [96] * 3 + [67] * 3  # the estimator floors cumulatively
    assert paper.macs == 2906746176  # est_flops_dynamicvit.DynamicViT(C=384, rate=0.7)
    # measured on images, the paper formula counts the model's own schedule
    x = torch.randn(2, 1, 28, 28)
    mnist = create_model("vit_mnist_patch4_28", method="dynamicvit", keep_ratio=0.7)
    measured = count_flops(mnist, x, convention="paper")
    assert measured.attn_tokens == count_flops(mnist).attn_tokens
    assert measured.macs == paper_macs(mnist, measured.attn_tokens)["total"]


# the released estimator, function by function: integers from est_flops_dynamicvit.py
@pytest.mark.parametrize("name, kw, tokens, expected", [
    ("deit_small_patch16_224", {}, [197] * 12, 4599177216),  # DeiT12(C=384)
    # DynamicViT(C=384, rate=0.7): its schedule floors cumulatively, 197 -> 138 -> 96 -> 67
    ("deit_small_patch16_224", {}, [197] * 3 + [138] * 3 + [96] * 3 + [67] * 3, 2906746176),
    ("lvvit_s", {}, [197] * 16, 6551485440),  # LV_ViT(C=384, depth=16)
    ("lvvit_s", {}, [197] * 4 + [138] * 4 + [96] * 4 + [67] * 4, 4573820736),  # Dynamic_LV_ViT(rate=0.7)
])
def test_dynamicvit_estimator_formula_exactly(name, kw, tokens, expected):
    method = "none" if len(set(tokens)) == 1 else "dynamicvit"
    parts = paper_macs(shapes_only(name, method, None if method == "none" else 0.7, **kw), tokens)
    assert parts["total"] == expected


@pytest.mark.parametrize("sparse, expected", [
    ((0.06, 0.2, 0.526), 3708167232),  # Dynamic_Soft_Mask_ViT(C=384, sparse=[0.06, 0.2, 0.526])
    ((0.54, 0.72, 0.85), 2187736128),  # Dynamic_Soft_Mask_ViT(C=384, sparse=[0.54, 0.72, 0.85])
])
def test_spvit_estimator_formula_exactly(sparse, expected):
    # the estimator's SPViT schedule: int(196 (1 - sparsity)) + 1 tokens after each stage, package tokens
    # not counted
    kept = [int(196 * (1 - s)) + 1 for s in sparse]
    tokens = [197] * 3 + [kept[0]] * 3 + [kept[1]] * 3 + [kept[2]] * 3
    model = shapes_only("deit_small_patch16_224", "dynamicvit", 0.7)
    assert paper_macs(model, tokens)["total"] == expected


def test_spvit_paper_count_leaves_the_package_tokens_out():
    model = create_model("deit_small_patch16_224", method="spvit", keep_ratio=0.7)
    attn, _ = static_schedule(model)
    stage_blocks = [b for b, _ in model.stage_selectors()]
    # one package token per stage, as released: the estimator sees class + patch tokens only
    tokens = [n - sum(b >= sb for sb in stage_blocks) for b, n in enumerate(attn)]
    assert count_flops(model, convention="paper").macs == pytest.approx(paper_macs(model, tokens)["total"])
    assert tokens[-1] < attn[-1]


def test_asvit_paper_count_on_images_follows_each_images_patches():
    """Adaptive: on images, AS-ViT's formula counts each image's kept patch tokens, then the mean."""
    torch.manual_seed(0)
    from tokensift.sw.methods.asvit import calibrate_thresholds

    model = create_model("vit_mnist_patch4_28", method="asvit", keep_ratio=0.6).eval()
    x = torch.randn(4, 1, 28, 28)
    calibrate_thresholds(model, x)  # thresholds that prune, so that the images keep different counts
    report = count_flops(model, x, convention="paper")
    with torch.no_grad():
        state = model.forward_state(x, path="gather")
    per_image = [[int(t[i]) if isinstance(t, torch.Tensor) else t for t in state.attn_tokens] for i in range(4)]
    C, hidden = 64, 128
    # Block.flops over the patch tokens (the class token left out), PatchEmbed.flops over the 49 patches
    hand = [49 * 16 * C + sum(4 * p * C * C + 2 * p * p * C + 2 * p * C * hidden for p in (n - 1 for n in tokens))
            for tokens in per_image]
    assert len({sum(t) for t in per_image}) > 1  # the images really keep different counts
    assert report.macs == pytest.approx(sum(hand) / 4, rel=1e-12)


def test_asvit_formula_exactly():
    """AS-ViT's vit.py: 196 patch tokens per block, patch embedding over 196 tokens, no head, no scoring."""
    model = shapes_only("deit_small_patch16_224", "none")
    C, N, hidden = 384, 196, 1536
    block = 3 * C * C * N + 2 * C * N * N + C * C * N + 2 * C * hidden * N  # Block.flops(196)
    cal_flops = N * C * 3 * 16 * 16 + 12 * block  # PatchEmbed.flops() + the blocks
    model.method = "asvit"  # the formula, on the dense schedule (what cal_flops counts)
    assert paper_macs(model, [197] * 12)["total"] == cal_flops
    assert round(cal_flops / 1e9, 1) == 4.6  # AS-ViT's DeiT-S row


def test_norms_as_fvcore_counts_them():
    model = shapes_only("deit_small_patch16_224", "dynamicvit", 0.7)
    attn, mlp = static_schedule(model)
    blocks = 5 * 384 * (sum(attn) + sum(mlp))  # norm1 and norm2
    final = 5 * 384 * mlp[-1]
    predictors = 5 * 384 * (196 + 137 + 96)  # each predictor's LayerNorm over the patch tokens it scores
    assert norm_flops(model, attn, mlp) == blocks + final + predictors
    with_norms = count_flops(model, norms=True)
    assert with_norms.macs == count_flops(model).macs + blocks + final + predictors
    assert with_norms.breakdown["norms"] == blocks + final + predictors
    lv = shapes_only("lvvit_s")
    a, m = static_schedule(lv)
    stem = 3 * 2 * 64 * 112 * 112  # three inference batch norms, 2 FLOPs per element
    assert norm_flops(lv, a, m) == 5 * 384 * (sum(a) + sum(m) + m[-1]) + stem


def test_lvvit_macs_count_by_hand():
    """LV-ViT-S, true MACs: the stem, 16 blocks of width 384 with MLP 1152, head and auxiliary head."""
    report = count_flops(shapes_only("lvvit_s"))
    C, N, hidden = 384, 197, 1152
    stem = 112 * 112 * (3 * 64 * 49 + 2 * 64 * 64 * 9) + 196 * 64 * 64 * C
    blocks = 16 * (4 * N * C * C + 2 * N * N * C + 2 * N * C * hidden)
    assert report.macs == stem + blocks + C * 1000 + 196 * C * 1000
    assert report.breakdown["aux_head"] == 196 * C * 1000
    assert round(report.gflops, 2) == 6.55


def test_convention_errors():
    model = shapes_only("vit_mnist_patch4_28")
    assert CONVENTIONS == ("macs", "paper")
    with pytest.raises(ValueError, match=r"^convention must be one of 'macs', 'paper', not 'fvcore'$"):
        count_flops(model, convention="fvcore")
    with pytest.raises(TypeError, match=r"^convention must be a string, not 1$"):
        count_flops(model, convention=1)
    with pytest.raises(TypeError, match=r"^norms must be True or False, not 1$"):
        count_flops(model, norms=1)
    with pytest.raises(ValueError, match=r"^norms=True applies to the 'macs' convention only \(the papers' "
                                         r"estimators leave the norms out\)$"):
        count_flops(model, convention="paper", norms=True)
    evit = shapes_only("vit_mnist_patch4_28", "evit", 0.7)
    with pytest.raises(ValueError, match=r"^no published FLOPs estimator is reproduced for method 'evit' "
                                         r"\(only for asvit, dynamicvit, none, spvit\); use the 'macs' "
                                         r"convention$"):
        count_flops(evit, convention="paper")


def test_cli_conventions(capsys):
    assert main(["flops", "--model", "deit_small_patch16_224", "--method", "dynamicvit", "--keep", "0.7",
                 "--convention", "paper", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["convention"], out["count_norms"]) == ("paper", False)
    assert out["gflops"] == 2906746176 / 1e9 and round(out["gflops"], 1) == 2.9
    assert out["dense_gflops"] == 4599177216 / 1e9
    assert main(["flops", "--model", "deit_small_patch16_224", "--count-norms", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["count_norms"] and out["gflops"] == pytest.approx(
        count_flops(shapes_only("deit_small_patch16_224"), norms=True).gflops)
    assert "norms" in out["breakdown_gflops"]


@pytest.mark.parametrize("argv, message", [
    (["--method", "evit", "--convention", "paper"],
     "no published FLOPs estimator is reproduced for method 'evit' (only for asvit, dynamicvit, none, spvit); "
     "use --convention macs"),
    (["--convention", "paper", "--count-norms"],
     "--count-norms applies to --convention macs only (the papers' estimators leave the norms out)"),
])
def test_cli_convention_errors_are_one_line(capsys, argv, message):
    assert main(["flops", *argv]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"tokensift flops: error: {message}"]
