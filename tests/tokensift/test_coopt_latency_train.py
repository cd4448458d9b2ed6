"""Computation-aware training with the cost model's latency as the budget."""

from __future__ import annotations

import json

import pytest
import torch

from tokensift.cli import main
from tokensift.coopt.latency_train import LatencyBudgetLoss, LatencyPlan, measure_latency
from tokensift.devices import get_device
from tokensift.hw.cost.layer import HwConfig, ModelCost
from tokensift.hw.cost.linear import device_weight_rate
from tokensift.sw import create_model
from tokensift.sw.data import load_mnist

MODEL = "vit_mnist_patch4_28"
# PYNQ-Z2's DRAM at 100 MHz feeds the linear engine 15 weight bytes per cycle: the plan's budget uses it
HW = HwConfig(lanes=16, heads_parallel=4, linear_lanes=128, selector_lanes=16,
              weight_rate=device_weight_rate(get_device("pynq-z2"), 100))
TARGET = 1.2  # ms on PYNQ-Z2 at 100 MHz; the dense model takes 1.52 ms on HW


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


def _plan(**kw) -> LatencyPlan:
    return LatencyPlan(**{"device": "pynq-z2", "hw": HW, "target_ms": TARGET, **kw})


@pytest.mark.parametrize("method", ["dynamicvit", "spvit", "evit"])
def test_static_methods_plan_a_schedule_that_meets_the_target(method, mnist):
    model = create_model(MODEL, method=method)
    plan = _plan()
    crit = plan.prepare(model, get_crit(model), mnist[0])
    exact_ms = ModelCost(model, HW).cycles() / 100e3
    assert exact_ms <= TARGET and plan.info["planned_latency_ms"] == pytest.approx(exact_ms)
    assert exact_ms > 0.9 * TARGET  # the plan uses the budget, it does not prune everything
    report = plan.report(model, mnist[1], images=64)
    assert report["meets_target"] and report["latency_ms"] == pytest.approx(exact_ms)
    assert report["dense_latency_ms"] == pytest.approx(ModelCost(create_model(MODEL), HW).cycles() / 100e3)
    if method == "dynamicvit":
        assert isinstance(crit, LatencyBudgetLoss)


@pytest.mark.parametrize("method", ["asvit", "sait"])
def test_adaptive_methods_meet_the_target_on_average(method, mnist):
    model = create_model(MODEL, method=method)
    plan = _plan()
    crit = plan.prepare(model, get_crit(model), mnist[0])
    if method == "asvit":  # thresholds calibrate on the first batch, as in training
        images, labels = next(iter(torch.utils.data.DataLoader(mnist[0], batch_size=128)))
        crit(model, None, images, labels)
    report = plan.report(model, mnist[1], images=256)
    assert report["meets_target"], report
    assert report["latency_ms"] > 0.5 * TARGET


def get_crit(model):
    from tokensift.sw.methods import get_method

    return get_method(model.method).build_criterion(model.keep_ratio, len(model.selectors))


def test_latency_budget_loss_moves_the_latency_toward_the_target(mnist):
    """Only the latency term trains the predictors: the soft latency of a fixed batch moves to the plan."""
    from tokensift.sw.losses_budget import budget_ratio

    model = create_model(MODEL, method="dynamicvit").train()
    plan = _plan()
    crit = plan.prepare(model, get_crit(model), mnist[0])
    assert isinstance(crit, LatencyBudgetLoss)
    crit.base.ratio_weight, crit.base.clf_weight, crit.base.distill_weight = 0.0, 0.0, 0.0
    target = crit.target_ratio
    images, labels = next(iter(torch.utils.data.DataLoader(mnist[0], batch_size=64)))
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if n.startswith("selectors.")], lr=5e-3)

    def gap():
        torch.manual_seed(1)
        with torch.no_grad():
            return abs(float(budget_ratio(model, model.forward_state(images, path="mask"))) - target)

    before, losses = gap(), []
    for _ in range(25):
        loss, parts = crit(model, None, images, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(parts["latency_gap"])
    after = gap()
    assert after < 0.5 * before, (before, after)
    assert sum(losses[-5:]) < sum(losses[:5])


def test_measure_latency_is_exact_at_integer_counts(mnist):
    model = create_model(MODEL, method="evit", keep_ratio=0.5)
    budget = _plan().budget_for(model)
    ms = measure_latency(model, budget, torch.stack([mnist[1][i][0] for i in range(8)]))
    assert torch.allclose(ms, torch.full_like(ms, ModelCost(model, HW).cycles() / 100e3), rtol=1e-12, atol=0)


def test_unreachable_target_is_one_sentence(mnist):
    model = create_model(MODEL, method="dynamicvit")
    with pytest.raises(ValueError, match=r"^a latency target of 0\.01 ms is below what dynamicvit reaches with this "
                                         r"hardware on pynq-z2 \([0-9.]+ ms at the smallest keep ratio, dense "
                                         r"[0-9.]+ ms\)$"):
        _plan(target_ms=0.01).prepare(model, get_crit(model), mnist[0])


def test_a_given_keep_ratio_is_trained_with_the_budget_term_at_its_schedule(mnist):
    # the whole accelerator's planner chose rho: the plan takes it (even where this cost model's latency at rho
    # would miss the target) and its budget term holds the soft latency at that schedule's
    model = create_model(MODEL, method="dynamicvit")
    plan = _plan(target_ms=0.01, keep_ratio=0.6)
    crit = plan.prepare(model, get_crit(model), mnist[0])
    assert plan.info["keep"] == 0.6 and plan.info["keep_source"] == "given" and model.keep_ratio == 0.6
    assert isinstance(crit, LatencyBudgetLoss)
    assert plan.info["planned_latency_ms"] == pytest.approx(ModelCost(model, HW).cycles() / 100e3)
    for method in ("evit", "sait"):
        other = create_model(MODEL, method=method)
        with pytest.raises(ValueError, match=rf"^a given keep_ratio fixes a static schedule with one rho "
                                             rf"\(DynamicViT\); {method} plans its own knob from the target$"):
            _plan(keep_ratio=0.6).prepare(other, get_crit(other), mnist[0])
    for bad in (0, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match=r"^keep_ratio must be a number in \(0, 1\], not "):
            _plan(keep_ratio=bad)


def test_evit_stage_keep_over_the_target_is_refused(mnist):
    model = create_model(MODEL, method="evit")
    with pytest.raises(ValueError, match=r"^the keep ratios \[1\.0, 1\.0, 1\.0\] take [0-9.]+ ms on pynq-z2, more "
                                         r"than the 1\.2 ms target$"):
        _plan(stage_keep=(1.0, 1.0, 1.0)).prepare(model, get_crit(model), mnist[0])


@pytest.mark.parametrize("argv, message", [
    (["--method", "dynamicvit", "--target-latency-ms", "1"],
     r"^--target-latency-ms needs --device, the device whose latency model is the budget$"),
    (["--method", "dynamicvit", "--device", "pynq-z2"], r"^--device sets the latency budget, so it needs --target-latency-ms$"),
    (["--device", "pynq-z2", "--target-latency-ms", "1"],
     r"^--target-latency-ms needs a pruning method \(--method\), not the dense model$"),
    (["--method", "spvit", "--device", "pynq-z2", "--target-latency-ms", "1", "--stage-keep", "0.5,0.5,0.5"],
     r"^--stage-keep sets EViT's per-stage keep ratios; spvit plans its own from the target$"),
    (["--method", "evit", "--device", "pynq-z2", "--target-latency-ms", "1", "--stage-keep", "0.5,2,0.5"],
     r"^--stage-keep ratios must be in \(0, 1\], not 0\.5,2,0\.5$"),
    (["--method", "evit", "--device", "pynq-z2", "--target-latency-ms", "-1"],
     r"^--target-latency-ms must be positive, not -1$"),
])
def test_train_cli_latency_errors(argv, message, capsys):
    import re

    assert main(["train", "--no-progress", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert re.match(message, err.removeprefix("tokensift train: error: ")), err


def test_train_cli_with_a_latency_target(tmp_path, capsys):
    rc = main(["train", "--method", "dynamicvit", "--device", "pynq-z2", "--target-latency-ms", str(TARGET),
               "--lanes", "16", "--heads-parallel", "4", "--linear-lanes", "128", "--selector-lanes", "16",
               "--max-steps", "2", "--epochs", "1", "--dense-epochs", "1", "--cache-dir", str(tmp_path),
               "--no-progress", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0
    lat = d["latency"]
    assert lat["meets_target"] and lat["latency_ms"] <= TARGET and lat["method"] == "dynamicvit"
    assert lat["hw"]["heads_parallel"] == 4 and lat["target_latency_ms"] == TARGET
