"""SaiT's integer stage: the mass count, the run-time density switch of the integer model, and the stage
against the float selector on a quickly trained MNIST model."""

import numpy as np
import pytest
import torch
from stage_models import TINY, calib_batches, spread, train_dense

from tokensift.quant.fixed import FixedFormat, OverflowCounter
from tokensift.quant.integer_model import IntegerViT
from tokensift.quant.select import SCORE_FORMAT, mass_keep_count
from tokensift.quant.stages.agreement import decision_agreement, float_decisions
from tokensift.quant.stages.base import StageContext, TokenFrame
from tokensift.quant.stages.sait import MASS_FRAC, SaiTStage, mass_code
from tokensift.sw import create_model
from tokensift.sw.data import load_mnist
from tokensift.sw.methods.sait import mass_keep_counts

torch.set_num_threads(1)


def ctx(counter=None):
    return StageContext(counter=counter or OverflowCounter(), res=FixedFormat(bits=16), prob_frac=15)


def frame_of(cls_rows):
    n = np.asarray(cls_rows).shape[1]
    return TokenFrame(x=np.arange(n * 4, dtype=np.int64).reshape(n, 4), index=np.arange(n, dtype=np.int64),
                      cls_rows=np.asarray(cls_rows, dtype=np.int64),
                      head_out=np.zeros((n, len(cls_rows), 2), dtype=np.int64))


# -- kernels and the stage ----------------------------------------------------------------------------------
def test_mass_code():
    assert [mass_code(r) for r in (1.0, 0.5, 0.85, 2.0**-16, 1e-9)] == [1 << 15, 1 << 14, 27853, 1, 1]
    assert mass_code(1 - 2.0**-17) == 1 << 15  # rounds to the whole mass: keeps every candidate
    with pytest.raises(ValueError, match=r"^keep ratio must be in \(0, 1\], not 1\.5$"):
        mass_code(1.5)
    with pytest.raises(ValueError, match=r"^keep ratio must be in \(0, 1\], not 0$"):
        mass_code(0.0)
    with pytest.raises(TypeError, match=r"^keep ratio must be a real number, not str$"):
        mass_code("0.5")


def test_count_matches_the_float_rule():
    # the integer count is the float rule's on the integer scores' real values (a mass exactly on a boundary
    # aside, where the float rule's rounding decides)
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(2, 60))
        scores = rng.integers(0, 1 << int(rng.integers(1, 16)), size=n)
        r = float(rng.uniform(0.05, 0.999))
        k = mass_keep_count(scores, n, mass_code(r), mass_frac=MASS_FRAC)
        cand = torch.ones(1, n, dtype=torch.bool)
        cand[0, 0] = False
        ref = int(mass_keep_counts(torch.tensor(scores[None], dtype=torch.float64), cand,
                                   mass_code(r) / 2**MASS_FRAC)[0])
        assert k == ref, (trial, scores.tolist(), r)


def test_stage_keeps_the_mass():
    # one head: the scores are the class row itself; candidates 8000, 4000, 2000, 2000 (total 16000)
    frame = frame_of([[16000, 8000, 2000, 4000, 2000]])
    new, rec = SaiTStage(block=1, stage=0, keep_ratio=0.5)(frame, ctx())
    assert rec.scores.tolist() == [16000, 8000, 2000, 4000, 2000]
    assert rec.keep.tolist() == [True, True, False, False, False]  # 8000 alone holds half
    new, rec = SaiTStage(block=1, stage=0, keep_ratio=0.8)(frame, ctx())
    assert rec.keep.tolist() == [True, True, True, True, False]  # 12000 < 12800: 8000 + 4000 + the first 2000
    assert new.index.tolist() == [0, 1, 2, 3]
    # two heads are averaged
    _, rec = SaiTStage(block=1, stage=0, keep_ratio=0.5)(frame_of([[0, 100, 301], [0, 300, 100]]), ctx())
    assert rec.scores.tolist() == [0, 200, 201]  # 401 / 2 rounds half up
    assert rec.keep.tolist() == [True, False, True]


def test_stage_all_zero_scores_and_density_one():
    frame = frame_of([[1 << 15, 0, 0, 0]])
    _, rec = SaiTStage(block=2, stage=1, keep_ratio=0.3)(frame, ctx())
    assert rec.keep.tolist() == [True] * 4  # no attention mass to rank: all are kept (the float rule)
    stage = SaiTStage(block=2, stage=1, keep_ratio=1.0)
    same, rec = stage(frame, ctx())
    assert same is frame and rec is None  # the dense model: nothing touched, nothing recorded
    stage.set_keep_ratio(0.3)
    assert stage.mass == mass_code(0.3) and stage(frame, ctx())[1] is not None


def test_stage_saturation_is_counted():
    counter = OverflowCounter()
    _, rec = SaiTStage(block=2, stage=0, keep_ratio=0.5)(frame_of([[0, 1 << 17, 5]]), ctx(counter))
    assert rec.scores.tolist() == [0, SCORE_FORMAT.max_int, 5]
    assert counter.by_site == {"blocks.2.sait.scores": 1}


def test_stage_needs_the_previous_attention():
    frame = TokenFrame(x=np.zeros((3, 4), dtype=np.int64), index=np.arange(3))
    with pytest.raises(RuntimeError, match=r"^the SaiT stage before block 2 needs the previous block's attention$"):
        SaiTStage(block=2, stage=0, keep_ratio=0.5)(frame, ctx())


# -- in the integer model -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


@pytest.fixture(scope="module")
def quick_dense(mnist):
    return train_dense(mnist[0])


def sait_from(dense, keep_ratio):
    model = create_model("vit_mnist_patch4_28", method="sait", keep_ratio=keep_ratio, **TINY)
    model.load_state_dict(dense.state_dict())
    return model.eval()


@pytest.fixture(scope="module")
def sait_int(quick_dense, mnist):
    """The SaiT model calibrated at density 1.0 (one integer model for every density)."""
    train, _ = mnist
    model = sait_from(quick_dense, 1.0)
    return model, IntegerViT.from_float(model, calib_batches(train))


def test_density_one_is_the_dense_integer_model(quick_dense, mnist, sait_int):
    train, test = mnist
    _, int_model = sait_int
    dense_int = IntegerViT.from_float(quick_dense, calib_batches(train))
    images = torch.stack([test[i][0] for i in range(20)])
    int_model.set_keep_ratio(1.0)
    expected = dense_int.logits(images)
    int_model.counter.reset()
    assert np.array_equal(int_model.logits(images), expected)
    assert int_model.decisions == [[] for _ in range(20)]
    assert int_model.counter.by_site == dense_int.counter.by_site  # the same saturations, site by site
    int_model.set_keep_ratio(0.6)  # a sparse run in between leaves nothing behind
    assert max(t.shape[0] for t in int_model.forward_tokens(images)) < 50
    int_model.set_keep_ratio(1.0)
    int_model.counter.reset()
    assert np.array_equal(int_model.logits(images), expected)
    assert int_model.counter.by_site == dense_int.counter.by_site


@pytest.mark.parametrize("density", [0.9, 0.7])
def test_density_switch_matches_float(quick_dense, mnist, sait_int, density):
    _, test = mnist
    model, int_model = sait_int
    int_model.set_keep_ratio(density)  # no rebuild: the same integer model at another density
    model.set_keep_ratio(density)
    try:
        images, labels = spread(test)
        int_pred = int_model.predict(images)
        with torch.no_grad():
            float_pred = model(images).argmax(dim=-1).numpy()
        agreement = decision_agreement(int_model.decisions, float_decisions(model, images))["fraction"]
    finally:
        model.set_keep_ratio(1.0)
    assert agreement >= 0.97
    float_acc, int_acc = (float_pred == labels).mean(), (int_pred == labels).mean()
    assert float_acc > 0.4  # the quick model (about 50% on all ten classes) learned something: 4x chance
    assert abs(int_acc - float_acc) <= 0.01
    mass = mass_code(density)
    kept = []
    for recs in int_model.decisions:  # k of every stage comes from the run-time density
        assert len(recs) == 2
        for rec in recs:
            k = int(rec.keep[1:].sum())
            assert k == mass_keep_count(rec.scores, len(rec.scores), mass, mass_frac=MASS_FRAC)
            kept.append(k)
    assert np.std(kept) > 1  # the count adapts to each image


def test_set_keep_ratio_rejects(quick_dense, mnist, sait_int):
    train, _ = mnist
    _, int_model = sait_int
    with pytest.raises(ValueError, match=r"^keep ratio must be in \(0, 1\], not 1\.5$"):
        int_model.set_keep_ratio(1.5)
    with pytest.raises(TypeError, match=r"^keep ratio must be a real number, not NoneType$"):
        int_model.set_keep_ratio(None)
    dense_int = IntegerViT.from_float(quick_dense, calib_batches(train, n=1, size=8))
    with pytest.raises(ValueError, match=r"^the integer model has no stage with a run-time density$"):
        dense_int.set_keep_ratio(0.5)


@pytest.mark.slow
def test_full_model_trained(tmp_path):
    """The SaiT model of ``tokensift train`` (dense/sparse alternating, 2 epochs from the cached dense model),
    calibrated once at density 1.0, on the whole 1,000-image test split at run-time densities."""
    from tokensift.sw.checkpoint import load_checkpoint
    from tokensift.sw.pipeline import PipelineConfig, run_pipeline

    train, test = load_mnist()
    r = run_pipeline(PipelineConfig(model="vit_mnist_patch4_28", method="sait", keep_ratio=0.85, epochs=2,
                                    out=tmp_path, progress=False))
    model = create_model("vit_mnist_patch4_28", method="sait", keep_ratio=1.0).eval()
    load_checkpoint(model, r["checkpoint"])
    int_model = IntegerViT.from_float(model, calib_batches(train, n=4))
    images = torch.stack([test[i][0] for i in range(len(test))])
    labels = np.array([test[i][1] for i in range(len(test))])
    for density in (0.97, 0.85):
        model.set_keep_ratio(density)
        int_model.set_keep_ratio(density)
        with torch.no_grad():
            float_acc = (model(images).argmax(dim=-1).numpy() == labels).mean()
        int_acc = (int_model.predict(images) == labels).mean()
        assert abs(int_acc - float_acc) <= 0.01, density
        assert decision_agreement(int_model.decisions, float_decisions(model, images))["fraction"] >= 0.97, density


def test_docstring_examples():
    import doctest

    import tokensift.quant.stages.sait as module

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
