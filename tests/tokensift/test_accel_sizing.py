"""Sizing the whole accelerator for a device: every shape costed by the accelerator's own resource model and
exact cycle model, the choice rule, and the errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hw"))  # the accelerator tests' models
from accel_models import _int_model, _mnist, images_labels  # noqa: E402

from tokensift.coopt.accel_sizing import AccelSpace, project_for, size_accelerator, useful_cores  # noqa: E402
from tokensift.devices import get_device  # noqa: E402
from tokensift.hw.accel.resources import resources  # noqa: E402

SPACE = AccelSpace(banks=(1, 2, 4, 8), gemm_cols=(16, 64), lanes=(4, 16), axi_bytes=(16,))


@pytest.fixture(scope="module")
def model_and_images():
    return _int_model("dynamicvit"), images_labels(_mnist()[1], 2, start=500)[0]


def test_every_fitting_shape_is_costed_by_the_accelerators_own_models(model_and_images):
    iv, images = model_and_images
    result = size_accelerator(iv, "zcu102", images, clock_mhz=300.0, space=SPACE)
    head_dim, heads = iv.blocks[0].attn.head_dim, iv.blocks[0].num_heads
    assert len(result.points) == len(SPACE.shapes(head_dim=head_dim, heads=heads)) > 0
    for p in result.points[::3]:
        project = project_for(iv, p.shape)
        assert p.resources == resources(project.config, "xcup").as_dict("xcup")
        assert p.fits and p.cycles == project.estimate(images, latency=10)["cycles"]
    # no target: the fastest shape, and a bigger design really is faster on this model
    fastest = min(result.points, key=lambda p: max(p.cycles))
    assert result.chosen is fastest and result.target_latency_ms is None
    assert max(result.chosen.cycles) < max(next(p for p in result.points if p.shape["banks"] == 1).cycles)


def test_packed_shapes_halve_the_gemm_dsps_at_the_same_cycles_on_dsp48_families_only(model_and_images):
    iv, images = model_and_images
    space = AccelSpace(banks=(2, 4), gemm_cols=(16, 64), lanes=(4,), axi_bytes=(16,), attention_cores=(1,))
    result = size_accelerator(iv, "zcu102", images, clock_mhz=300.0, space=space)
    by_shape = {tuple(p.shape.values()): p for p in result.points}
    packed = [p for p in result.points if p.shape["pack_pairs"]]
    assert len(packed) == len(result.points) // 2 == 4
    for p in packed:
        twin = by_shape[tuple({**p.shape, "pack_pairs": False}.values())]
        macs = p.shape["banks"] * p.shape["gemm_cols"]
        assert twin.resources["dsp"] - p.resources["dsp"] == macs // 2 and p.cycles == twin.cycles
        assert p.resources["bram36"] == twin.resources["bram36"] and p.resources["lut"] > twin.resources["lut"]
    # ECP5's 18 x 18 multipliers take two blocks per packed pair: no packed shape is tried there
    ecp5 = size_accelerator(iv, "ecp5-85f", images, clock_mhz=100.0, space=space)
    assert len(ecp5.points) == 4 and not any(p.shape["pack_pairs"] for p in ecp5.points)
    with pytest.raises(ValueError, match=r"^pack_pairs must be a non-empty tuple of bools, not \(\)$"):
        AccelSpace(pack_pairs=())


def test_attention_cores_compute_a_layers_heads_side_by_side(model_and_images):
    """The TINY model's two heads: a second core copy costs its lanes' DSPs and its block RAM and saves
    cycles on every shape (the heads' frames overlap instead of following each other)."""
    iv, images = model_and_images
    assert iv.blocks[0].num_heads == 2
    space = AccelSpace(banks=(2,), gemm_cols=(16, 64), lanes=(4, 16), axi_bytes=(16,), pack_pairs=(False,))
    result = size_accelerator(iv, "zcu102", images, clock_mhz=300.0, space=space)
    by_shape = {tuple(p.shape.values()): p for p in result.points}
    two = [p for p in result.points if p.shape["attention_cores"] == 2]
    assert len(two) == len(result.points) // 2 == 4
    for p in two:
        one = by_shape[tuple({**p.shape, "attention_cores": 1}.values())]
        assert p.resources["dsp"] > one.resources["dsp"] and p.resources["bram36"] > one.resources["bram36"]
        assert max(p.cycles) < max(one.cycles) and p.cycles == project_for(iv, p.shape).estimate(images, latency=10)["cycles"]
    assert useful_cores(4) == (1, 2, 4) and useful_cores(6) == (1, 2, 3, 6) and useful_cores(1) == (1,)
    assert {s["attention_cores"] for s in AccelSpace().shapes(head_dim=64, heads=6)} == {1, 2, 3, 6}
    assert {s["attention_cores"] for s in AccelSpace(attention_cores=(1, 4, 8)).shapes(head_dim=64, heads=6)} == {1, 4}


def test_a_target_picks_the_smallest_shape_that_meets_it(model_and_images):
    iv, images = model_and_images
    free = size_accelerator(iv, "zcu102", images, clock_mhz=300.0, space=SPACE)
    latencies = sorted(p.latency_ms for p in free.points)
    target = latencies[len(latencies) // 2]  # half the shapes meet it
    result = size_accelerator(iv, "zcu102", images, clock_mhz=300.0, space=SPACE, target_latency_ms=target)
    meeting = [p for p in result.points if p.latency_ms <= target]
    assert result.chosen.meets_target and len(meeting) == result.as_dict()["meet_target"] < len(result.points)
    assert result.chosen.scarcest == min(p.scarcest for p in meeting)
    # an impossible target: the fastest that fits, said so
    missed = size_accelerator(iv, "zcu102", images, clock_mhz=300.0, space=SPACE, target_latency_ms=1e-6)
    assert not missed.chosen.meets_target and "none of" in missed.message
    assert max(missed.chosen.cycles) == max(free.chosen.cycles)


def test_shapes_that_do_not_fit_are_not_chosen_nor_simulated(model_and_images):
    iv, images = model_and_images
    result = size_accelerator(iv, "pynq-z2", images, clock_mhz=100.0, space=SPACE)
    cap = get_device("pynq-z2").capacity()
    out = [p for p in result.points if not p.fits]
    assert out and all(p.cycles == [] and p.latency_ms is None for p in out)
    assert all(any(p.resources[k] > cap[k] for k in cap) for p in out)
    assert result.chosen.fits
    big = AccelSpace(banks=(16,), gemm_cols=(128,), lanes=(16,), axi_bytes=(16,))
    none = size_accelerator(iv, "pynq-z2", images, clock_mhz=100.0, space=big)
    assert none.chosen is None and "no accelerator shape" in none.message


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"banks": (3,)}, ValueError, "power of two"),
    ({"lanes": ()}, ValueError, "at least one value"),
    ({"axi_bytes": (64,)}, ValueError, "axi_bytes must be among"),
    ({"gemm_cols": (0,)}, ValueError, "gemm_cols"),
    ({"attention_cores": ()}, ValueError, "^attention_cores needs at least one value$"),
    ({"attention_cores": (17,)}, ValueError, "^attention_cores must be"),
])
def test_space_rejects(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        AccelSpace(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"clock_mhz": 0.0}, "clock_mhz must be positive"),
    ({"clock_mhz": 100.0, "target_latency_ms": -1.0}, "target_latency_ms must be positive"),
])
def test_sizing_rejects(model_and_images, kwargs, message):
    iv, images = model_and_images
    with pytest.raises(ValueError, match=message):
        size_accelerator(iv, "zcu102", images, space=SPACE, **kwargs)
    with pytest.raises(ValueError, match="at least one image"):
        size_accelerator(iv, "zcu102", images[:0], clock_mhz=100.0, space=SPACE)


# -- the keep ratio and the shape together, from the accelerator's own models -------------------------------------

PLAN_SPACE = AccelSpace(banks=(2, 4), gemm_cols=(16, 32), lanes=(8,), axi_bytes=(16,))


@pytest.fixture(scope="module")
def plan():
    from tokensift.coopt.accel_sizing import plan_accelerator

    return plan_accelerator("vit_mnist_patch4_28", "pynq-z2", target_latency_ms=2.2, keep_grid=(0.4, 0.55, 0.7, 1.0),
                            space=PLAN_SPACE)


def test_plan_picks_the_largest_keep_ratio_that_meets_the_target(plan):
    from tokensift.sw.methods.dynamicvit import keep_count

    rows = [p.as_dict() for p in plan.points]
    assert [r["keep_ratio"] for r in rows] == [0.4, 0.55, 0.7, 1.0]
    assert [r["keep"] for r in rows][0] == [keep_count(49, 0.4, s) for s in range(3)]
    meeting = [r for r in rows if r["meets_target"]]
    assert meeting and len(meeting) < len(rows)  # the target splits the grid
    assert plan.chosen.keep_ratio == max(r["keep_ratio"] for r in meeting)
    assert all(r["latency_ms"] > 2.2 for r in rows if r["keep_ratio"] > plan.chosen.keep_ratio)
    # more tokens, more cycles and more MACs, on the best shape for each
    assert [r["macs"] for r in rows] == sorted(r["macs"] for r in rows)
    assert plan.dense_cycles > max(plan.chosen.sizing.chosen.cycles)
    assert plan.chosen.sizing.chosen.meets_target and f"keep {plan.chosen.keep_ratio:g}" in plan.message


def test_plan_cycles_hold_for_any_weights_at_the_same_keep_counts(plan):
    # the premise of planning on random weights: under top-k the registers fix every op's token count, so a
    # differently initialised and calibrated model of the backbone (another seed, other images) costs the same
    from tokensift.coopt.accel_sizing import plan_accelerator

    other = plan_accelerator("vit_mnist_patch4_28", "pynq-z2", target_latency_ms=2.2, keep_grid=(0.4, 0.55, 0.7, 1.0),
                             space=PLAN_SPACE, seed=7)
    for a, b in zip(plan.points, other.points, strict=True):
        assert [p.cycles for p in a.sizing.points] == [p.cycles for p in b.sizing.points]
    assert other.chosen.keep_ratio == plan.chosen.keep_ratio and other.dense_cycles == plan.dense_cycles


def test_plan_refuses_methods_whose_counts_the_registers_do_not_fix_and_says_when_nothing_meets():
    from tokensift.coopt.accel_sizing import plan_accelerator

    for method in ("asvit", "sait", "evit"):
        with pytest.raises(ValueError, match=r"^planning the keep ratio on the accelerator's own models needs a "
                                             r"method whose registers fix the token counts \(dynamicvit\), not"):
            plan_accelerator("vit_mnist_patch4_28", "pynq-z2", target_latency_ms=1.0, method=method)
    with pytest.raises(ValueError, match="must be positive"):
        plan_accelerator("vit_mnist_patch4_28", "pynq-z2", target_latency_ms=0.0)
    missed = plan_accelerator("vit_mnist_patch4_28", "pynq-z2", target_latency_ms=0.01, keep_grid=(0.5, 1.0),
                              space=PLAN_SPACE)
    assert missed.chosen is None and missed.dense_cycles is None
    assert missed.message.startswith("no keep ratio of the grid meets 0.01 ms on PYNQ-Z2: the fastest, keep 0.5")
    with pytest.raises(ValueError, match=r"^every keep ratio must be in \(0, 1\]"):
        plan_accelerator("vit_mnist_patch4_28", "pynq-z2", target_latency_ms=1.0, keep_grid=(0.5, 1.5),
                         space=PLAN_SPACE)


def test_plan_target_from_a_speedup_over_the_fastest_dense_design_that_fits(plan):
    from tokensift.coopt.accel_sizing import plan_accelerator, random_int_model, size_accelerator

    fast = plan_accelerator("vit_mnist_patch4_28", "pynq-z2", speedup=1.5, keep_grid=(0.4, 0.55, 0.7, 1.0),
                            space=PLAN_SPACE)
    # the fastest dense design, sized on its own: the same model under METHOD=dense on every shape that fits
    int_model, image, _ = random_int_model("vit_mnist_patch4_28", "dynamicvit", 0.4)
    dense = size_accelerator(int_model, "pynq-z2", image, clock_mhz=100.0, space=PLAN_SPACE,
                             registers=lambda p: p.registers(method="dense"))
    fastest = min(p.latency_ms for p in dense.points if p.fits)
    assert fast.target_latency_ms == pytest.approx(fastest / 1.5, rel=1e-12)
    assert fast.target_note == f"fastest dense design that fits ({fastest:.4g} ms) / 1.5"
    assert fast.as_dict()["target_note"] == fast.target_note and plan.target_note == "given"
    assert fast.chosen is not None and fast.chosen.sizing.chosen.latency_ms <= fast.target_latency_ms
    for kw in ({}, {"target_latency_ms": 2.0, "speedup": 1.5}):
        with pytest.raises(ValueError, match=r"^plan_accelerator needs exactly one of target_latency_ms and speedup$"):
            plan_accelerator("vit_mnist_patch4_28", "pynq-z2", **kw)
    with pytest.raises(ValueError, match=r"^speedup must be positive, not 0$"):
        plan_accelerator("vit_mnist_patch4_28", "pynq-z2", speedup=0)
