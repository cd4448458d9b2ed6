"""AS-ViT's integer stage: per-token head weights, the threshold code, the stage's corners, and the stage in
the integer model against the float selector on a quickly trained MNIST model."""

import math

import numpy as np
import pytest
import torch
from stage_models import TINY, calib_batches, spread, train_dense

from tokensift.quant.fixed import FixedFormat, OverflowCounter
from tokensift.quant.integer_model import IntegerViT
from tokensift.quant.select import SCORE_FORMAT, head_importance
from tokensift.quant.stages.agreement import decision_agreement, float_decisions
from tokensift.quant.stages.asvit import (
    HEAD_WEIGHT_FRAC,
    ASViTStage,
    from_float,
    threshold_code,
    token_head_weights,
)
from tokensift.quant.stages.base import StageContext, TokenFrame
from tokensift.sw import create_model
from tokensift.sw.data import load_mnist
from tokensift.sw.methods import get_method
from tokensift.sw.methods.asvit import calibrate_thresholds
from tokensift.sw.train import TrainConfig, fit

torch.set_num_threads(1)

PROB_FRAC = 15


def ctx(counter=None):
    return StageContext(counter=counter or OverflowCounter(), res=FixedFormat(bits=16), prob_frac=PROB_FRAC)


def frame_of(cls_rows, head_out):
    n = np.asarray(cls_rows).shape[1]
    return TokenFrame(x=np.arange(n * 4, dtype=np.int64).reshape(n, 4), index=np.arange(n, dtype=np.int64),
                      cls_rows=np.asarray(cls_rows, dtype=np.int64), head_out=np.asarray(head_out, dtype=np.int64))


# -- kernels ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("heads, head_dim", [(2, 16), (3, 8), (6, 64)])
def test_token_head_weights_against_float(heads, head_dim):
    rng = np.random.default_rng(heads)
    o = rng.integers(-128, 128, size=(50, heads, head_dim)) >> rng.integers(0, 7, size=(50, heads, 1))
    w = token_head_weights(o)
    assert w.shape == (heads, 50) and w.dtype == np.int64
    norm = np.sqrt((o.astype(np.float64) ** 2).sum(axis=2)).T  # (H, N), the float rule's norms
    total = norm.sum(axis=0)
    ref = norm / total
    # floor(norm) moves each norm by less than one LSB, so the sum by less than H; the division keeps one
    # bit more than F and rounds it: 2**-F at most
    bound = np.where(total > heads, heads / (total - heads), 1.0) + 2.0 ** -HEAD_WEIGHT_FRAC
    err = np.abs(w * 2.0 ** -HEAD_WEIGHT_FRAC - ref)
    assert np.all(err <= bound)
    assert np.median(err) < 0.01  # and the typical error is far below the bound


def test_token_head_weights_corners():
    o = np.zeros((3, 4, 2), dtype=np.int64)
    o[1, 2] = [-128, -128]  # one head alone carries token 1
    o[2] = 5  # equal outputs: equal weights
    w = token_head_weights(o)
    assert w[:, 0].tolist() == [8192] * 4  # all zeros: equal weights (the float rule's 1e-8 gives 0)
    assert w[:, 1].tolist() == [0, 0, 1 << 15, 0]
    assert w[:, 2].tolist() == [8192] * 4
    with pytest.raises(ValueError, match=r"^head_out must have 3 dimensions \(tokens, heads, head_dim\), not 2$"):
        token_head_weights(np.zeros((3, 4)))


def test_threshold_code_is_the_float_compare():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.integers(0, 1 << 16, 2000), [0, 1, 16383, 16384, 16385, 65535]])
    thresholds = np.concatenate([rng.uniform(0, 2.5, 300), scores[:50] * 2.0 ** -15,  # exactly on a score
                                 [0.0, 2.0**-16, 0.5, 1.9999, 2.0, 7.0]])
    for t in thresholds:
        T = threshold_code(float(t))
        assert 0 <= T <= SCORE_FORMAT.max_int
        assert np.array_equal(scores > T, scores * 2.0 ** -15 > t), t


def test_threshold_code_rejects():
    for bad in (-0.1, math.inf, math.nan):
        with pytest.raises(ValueError, match=r"^threshold must be a non-negative finite number, not "):
            threshold_code(bad)
    with pytest.raises(ValueError, match=r"^head_importance must be 'token' or 'image', not 'heads'$"):
        ASViTStage(block=1, stage=0, threshold=0, head_importance="heads")


# -- the stage ----------------------------------------------------------------------------------------------
def test_stage_keeps_scores_strictly_above_the_threshold():
    # two heads with equal output norms at every token: the score is the mean of the two class rows
    rows = [[0, 8000, 4000, 4000, 12000, 0], [0, 8000, 4000, 6000, 4000, 2000]]
    o = np.ones((6, 2, 4), dtype=np.int64)
    frame = frame_of(rows, o)
    stage = ASViTStage(block=2, stage=1, threshold=5000)
    new, rec = stage(frame, ctx())
    assert rec.scores.tolist() == [0, 8000, 4000, 5000, 8000, 1000]  # 5000 equals T: dropped (strictly greater)
    assert rec.keep.tolist() == [True, True, False, False, True, False]
    assert new.index.tolist() == [0, 1, 4] and np.array_equal(new.x, frame.x[[0, 1, 4]])
    assert (rec.stage, rec.block, rec.num_protected) == (1, 2, 1) and new.cls_rows is None
    everything, rec = ASViTStage(block=2, stage=1, threshold=0)(frame, ctx())
    assert rec.keep.tolist() == [True, True, True, True, True, True]  # every score is above 0
    nothing, rec = ASViTStage(block=2, stage=1, threshold=SCORE_FORMAT.max_int)(frame, ctx())
    assert rec.keep.tolist() == [True] + [False] * 5 and nothing.n == 1  # the class token stays


def test_stage_head_importance_modes():
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 1 << 13, size=(3, 10))
    o = rng.integers(-128, 128, size=(10, 3, 8))
    frame = frame_of(rows, o)
    per_token = ASViTStage(block=1, stage=0, threshold=0).scores(frame, ctx())
    per_image = ASViTStage(block=1, stage=0, threshold=0, head_importance="image").scores(frame, ctx())
    w_tok = token_head_weights(o)
    w_img = head_importance(np.transpose(o, (1, 0, 2)), out_frac=HEAD_WEIGHT_FRAC)
    # the score combiner's rule, written out: exact sum, rounded half up by prob_frac + F - 15 bits
    assert per_token.tolist() == [((rows[:, j] * w_tok[:, j]).sum() + (1 << 14)) >> 15 for j in range(10)]
    assert per_image.tolist() == [((rows[:, j] * w_img).sum() + (1 << 14)) >> 15 for j in range(10)]
    assert not np.array_equal(per_token, per_image)


def test_stage_saturation_is_counted():
    counter = OverflowCounter()
    rows = [[0, 1 << 17, 100], [0, 1 << 17, 100]]  # not probabilities: scores of 4.0 do not fit [0, 2)
    _, rec = ASViTStage(block=3, stage=0, threshold=16384)(frame_of(rows, np.ones((3, 2, 2))), ctx(counter))
    assert rec.scores.tolist() == [0, SCORE_FORMAT.max_int, 100]
    assert counter.by_site == {"blocks.3.asvit.scores": 1}


def test_stage_needs_the_previous_attention():
    frame = TokenFrame(x=np.zeros((3, 4), dtype=np.int64), index=np.arange(3))
    with pytest.raises(RuntimeError, match=r"^the AS-ViT stage before block 1 needs the previous block's attention$"):
        ASViTStage(block=1, stage=0, threshold=0)(frame, ctx())


def test_from_float_threshold():
    model = create_model("vit_mnist_patch4_28", method="asvit", keep_ratio=0.6, **TINY)
    _, sel = model.stage_selectors()[1]
    with torch.no_grad():
        sel.log_threshold.fill_(math.log(0.7))
    sel.head_importance = "image"
    stage = from_float(sel, 2, None)
    t = math.exp(float(sel.log_threshold.detach())) / 49
    assert stage.threshold == math.floor(t * 2**15) and stage.head_importance == "image" and stage.stage == 1


# -- in the integer model -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


@pytest.fixture(scope="module")
def quick_dense(mnist):
    return train_dense(mnist[0])


def asvit_from(dense, train, head_importance, keep_ratio=0.75, steps=60):
    """AS-ViT on the dense weights: thresholds calibrated to meet rho, then briefly fine-tuned with its loss."""
    model = create_model("vit_mnist_patch4_28", method="asvit", keep_ratio=keep_ratio, **TINY)
    model.load_state_dict(dense.state_dict(), strict=False)
    for _, sel in model.stage_selectors():
        sel.head_importance = head_importance
    calibrate_thresholds(model, torch.cat(calib_batches(train)))
    fit(model, get_method("asvit").build_criterion(keep_ratio, 2), train,
        TrainConfig(epochs=1, batch_size=64, lr=1e-3, warmup_epochs=0, max_steps=steps, augment=False),
        teacher=dense, progress=False)
    return model.eval()


@pytest.mark.parametrize("head_importance", ["token", "image"])
def test_decisions_and_accuracy_match_float(quick_dense, mnist, head_importance):
    train, test = mnist
    model = asvit_from(quick_dense, train, head_importance)
    int_model = IntegerViT.from_float(model, calib_batches(train))
    images, labels = spread(test)
    int_pred = int_model.predict(images)
    with torch.no_grad():
        float_pred = model(images).argmax(dim=-1).numpy()
    kept = np.array([[r.keep[1:].sum() for r in recs] for recs in int_model.decisions])
    assert kept.shape == (len(labels), 2)
    assert 0.4 * 49 < kept[:, 0].mean() < 0.95 * 49 and kept[:, 0].std() > 1  # a real, adaptive selection
    agreement = decision_agreement(int_model.decisions, float_decisions(model, images))["fraction"]
    assert agreement >= 0.97
    float_acc, int_acc = (float_pred == labels).mean(), (int_pred == labels).mean()
    assert float_acc > 0.4  # the quick model (about 50% on all ten classes) learned something: 4x chance
    assert abs(int_acc - float_acc) <= 0.01
    stages = [b.selector for b in int_model.blocks if b.selector is not None]
    for recs in int_model.decisions:  # the recorded scores are the keys the threshold was applied to
        for rec, stage in zip(recs, stages, strict=True):
            assert np.array_equal(rec.keep[1:], rec.scores[1:] > stage.threshold)


@pytest.mark.slow
def test_full_model_fine_tuned(tmp_path):
    """The fine-tuned AS-ViT of ``tokensift train`` (rho 0.65, 2 epochs from the cached dense model) on the
    whole 1,000-image test split."""
    from tokensift.sw.checkpoint import load_checkpoint
    from tokensift.sw.pipeline import PipelineConfig, run_pipeline
    from tokensift.sw.train import evaluate

    train, test = load_mnist()
    r = run_pipeline(PipelineConfig(model="vit_mnist_patch4_28", method="asvit", keep_ratio=0.65, epochs=2,
                                    out=tmp_path, progress=False))
    model = create_model("vit_mnist_patch4_28", method="asvit", keep_ratio=0.65).eval()
    load_checkpoint(model, r["checkpoint"])
    int_model = IntegerViT.from_float(model, calib_batches(train, n=4))
    images = torch.stack([test[i][0] for i in range(len(test))])
    labels = np.array([test[i][1] for i in range(len(test))])
    int_acc = (int_model.predict(images) == labels).mean()
    assert abs(int_acc - evaluate(model, test)) <= 0.01
    assert decision_agreement(int_model.decisions, float_decisions(model, images))["fraction"] >= 0.97


def test_docstring_examples():
    import doctest

    import tokensift.quant.stages.asvit as module

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
