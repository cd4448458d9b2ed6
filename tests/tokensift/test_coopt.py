"""The co-optimizer: exact costs, Pareto fronts, the chosen point, infeasible targets, shared storage, scale."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tokensift.cli import main
from tokensift.coopt import CostEvaluator, HwSpace, KeepSpace
from tokensift.coopt.pareto import front_2d, grid_front, pareto_mask
from tokensift.coopt.search import choose, co_optimize
from tokensift.coopt.space import default_keep_space
from tokensift.hw.cost.layer import ModelCost, ModelDesc

MODEL = "vit_mnist_patch4_28"
ROOT = Path(__file__).resolve().parents[2]


def _brute_mask(obj: np.ndarray) -> np.ndarray:
    n = len(obj)
    return np.array([not any(np.all(obj[j] <= obj[i]) and np.any(obj[j] < obj[i]) for j in range(n))
                     for i in range(n)], dtype=bool)


def _small_space(**kw) -> HwSpace:
    base = dict(lanes=(4, 16), heads_parallel=(1, 4), linear_lanes=(16, 64, 128), selector_lanes=(16,),
                softmax=("exp2_lut",), clock_mhz=(100.0,))
    return HwSpace(**{**base, **kw})


@pytest.fixture(scope="module")
def evit_small():
    keep = default_keep_space("evit", 3, low=0.4, step=0.2)
    return CostEvaluator(MODEL, method="evit", device="pynq-z2", hw_space=_small_space(), keep_space=keep)


# -- Pareto fronts -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_pareto_mask_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    obj = rng.integers(0, 4, size=(60, 3)).astype(float)  # many ties and duplicates
    assert (pareto_mask(obj) == _brute_mask(obj)).all()
    assert (front_2d(obj[:, 0], obj[:, 1]) == _brute_mask(obj[:, :2])).all()


@pytest.mark.parametrize("seed", range(10))
def test_grid_front_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    H, K = rng.integers(1, 15, size=2)
    lat = rng.integers(0, 6, (H, K)).astype(float)
    util = rng.integers(0, 4, H).astype(float)
    acc = rng.integers(0, 5, K).astype(float)
    valid = rng.random(H) < 0.8
    h, k = grid_front(lat, util, acc, valid)
    hh, kk = (a.ravel() for a in np.meshgrid(np.arange(H), np.arange(K), indexing="ij"))
    sel = valid[hh]
    obj = np.stack([lat[hh, kk], util[hh], -acc[kk]], axis=1)[sel]
    m = _brute_mask(obj)
    assert set(zip(hh[sel][m].tolist(), kk[sel][m].tolist(), strict=True)) == set(zip(h.tolist(), k.tolist(),
                                                                                         strict=True))


def test_pareto_mask_rejects_a_flat_array():
    with pytest.raises(ValueError, match=r"^objectives must be a 2-D array \(points x objectives\), not shape \(3,\)$"):
        pareto_mask([1, 2, 3])


# -- exact costs -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["evit", "dynamicvit", "spvit"])
def test_grid_cycles_equal_model_cost(method):
    """Every unit table and the broadcasting sum equal ModelCost.cycles() point by point."""
    space = HwSpace(lanes=(2, 16), heads_parallel=(1, 2, 4), linear_lanes=(8, 64), selector_lanes=(8, 32),
                    softmax=("exp2_lut", "exp2_poly"), clock_mhz=(100.0,))
    keep = default_keep_space(method, 3, low=0.35, step=0.15)
    ev = CostEvaluator(MODEL, method=method, device="pynq-z2", hw_space=space, keep_space=keep)
    g = ev.grid()
    scheds = g.extra["schedules"]
    rng = np.random.default_rng(1)
    checked = 0
    for _ in range(12):
        h, k = int(rng.integers(space.size)), int(rng.integers(len(scheds)))
        point = scheds[k].point
        desc = ModelDesc.from_name(MODEL, method=method)
        sels = [s for _, s in desc.selectors]
        for i, s in enumerate(sels):
            s.set_keep_ratio(point[i] if len(point) > 1 else point[0])
        assert g.cycles[h, k] == ModelCost(desc, ev.hw_space.choice(h).hw_config()).cycles()
        checked += 1
    assert checked == 12


def test_evit_stage_that_keeps_everything(evit_small):
    """Nothing dropped, no fused token, no MACs -- but the selector frame still runs (the cost model's view)."""
    s = evit_small.schedule((1.0, 1.0, 1.0))
    assert s.attn == (50,) * 6 and s.mlp == (50,) * 6 and s.retained == 1.0
    assert [st[:2] + st[3:] for st in s.stages] == [(50, 50, None, 0)] * 3  # no package rule: no token added


def test_evit_fused_token_costs_the_selectors_sum_rule(evit_small):
    """EViT's fused token is the selector's sum package rule: no divider pass in its cycles."""
    from tokensift.hw.selector.core import cycles

    s = evit_small.schedule((0.5, 0.5, 0.5))
    assert all(st[3] == "sum" for st in s.stages)
    n_in, kept, mode, _, _ = s.stages[0]
    cost = evit_small._cost(evit_small.hw_space.lanes[0], 1, evit_small.hw_space.softmax[0], 16,
                            evit_small.hw_space.selector_lanes[0])
    total = evit_small._selector_cycles(0, s.stages[0])
    assert total == cycles(cost.selector, n_tokens=n_in, kept=kept, mode=mode, package=True, package_rule="sum")
    assert total < cycles(cost.selector, n_tokens=n_in, kept=kept, mode=mode, package=True, package_rule="mean")


def test_resources_do_not_depend_on_keep_ratios(evit_small):
    r = evit_small.resources()
    for keep in [(0.4, 0.6, 1.0), (1.0, 1.0, 1.0)]:
        for h in range(evit_small.hw_space.size):
            assert list(evit_small.point(h, keep)["resources"].values()) == r[h].tolist()


# -- search, choice, constraints ---------------------------------------------------------------------------
def test_chosen_point_meets_target_fits_and_is_best(evit_small):
    target = 1.3
    res = co_optimize(MODEL, method="evit", device="pynq-z2", target_latency_ms=target, evaluator=evit_small)
    c = res.chosen
    assert res.feasible and c["latency_ms"] <= target and c["fits"] and c["max_utilization"] <= 1.0
    feasible = res.fits & (res.latency_ms <= target)
    best = res.accuracy[feasible].max()
    assert c["accuracy_proxy"] == pytest.approx(best)
    ties = feasible & (res.accuracy == best)
    assert c["max_utilization"] == pytest.approx(res.utilization[ties].min())
    # the chosen point is on the front, and every front point fits
    front = [(p["latency_ms"], p["max_utilization"], -p["accuracy_proxy"]) for p in res.front]
    assert all(p["fits"] for p in res.front)
    assert not any(f[0] <= c["latency_ms"] and f[1] <= c["max_utilization"] and f[2] <= -c["accuracy_proxy"]
                   and f != (c["latency_ms"], c["max_utilization"], -c["accuracy_proxy"]) for f in front)


def test_prefer_resources_picks_the_smallest_design(evit_small):
    res = co_optimize(MODEL, method="evit", device="pynq-z2", target_latency_ms=3.0, evaluator=evit_small,
                      prefer="resources")
    feasible = res.fits & (res.latency_ms <= 3.0)
    assert res.chosen["max_utilization"] == pytest.approx(res.utilization[feasible].min())


def test_choose_on_flat_arrays():
    lat, util, acc, fits = [1.0, 2.0, 0.5, 3.0], [0.5, 0.2, 1.5, 0.1], [0.9, 0.9, 1.0, 0.5], [True, True, False, True]
    assert choose(lat, util, acc, fits, 2.5) == (1, 0)             # same accuracy: fewer resources
    assert choose(lat, util, acc, fits, 2.5, "resources") == (1, 0)
    assert choose(lat, util, acc, fits, 0.7) == (None, 0)          # nothing fast enough fits: closest is fastest


def test_training_budget_agrees_with_the_latency_budget(evit_small):
    """The chosen point's latency equals the differentiable LatencyBudget at its token counts."""
    import torch

    from tokensift.coopt.accuracy import set_keep_point
    from tokensift.coopt.space import HwChoice
    from tokensift.hw.cost.latency import LatencyBudget
    from tokensift.sw import create_model

    res = co_optimize(MODEL, method="evit", device="pynq-z2", target_latency_ms=1.3, evaluator=evit_small)
    c, tb = res.chosen, res.summary["training_budget"]
    model = create_model(MODEL, method="evit")
    set_keep_point(model, "evit", c["keep"]["point"])
    budget = LatencyBudget(model, HwChoice(**c["hw"]).hw_config(), "pynq-z2", clock_mhz=c["hw"]["clock_mhz"])
    counts = [float(n) for n in c["keep"]["mlp_tokens"][1::2]]  # EViT stages sit inside blocks 1, 3, 5
    assert float(budget(torch.tensor(counts))) == pytest.approx(c["latency_ms"], rel=1e-12)
    assert tb["dense_latency_ms"] == pytest.approx(budget.dense, rel=1e-12)
    assert tb["planned_latency_ms"] == c["latency_ms"] and "--stage-keep" in tb["command"]


def test_infeasible_target_names_the_closest_design(evit_small):
    res = co_optimize(MODEL, method="evit", device="pynq-z2", target_latency_ms=0.001, evaluator=evit_small)
    assert not res.feasible and res.summary["training_budget"] is None
    fastest = res.latency_ms[res.fits].min()
    assert res.closest["latency_ms"] == pytest.approx(fastest)
    assert __import__("re").match(
        r"^no design in the space meets 0\.001 ms on PYNQ-Z2: the fastest that fits takes [0-9.]+ ms "
        r"\([0-9.]+ fps\) with lanes \d+, \d+ linear lanes and keep \[[0-9., ]+\]$", res.summary["message"])


def test_nothing_fits_says_which_resource():
    space = _small_space(linear_lanes=(256,))
    res = co_optimize(MODEL, method="evit", device="pynq-z2", target_latency_ms=5.0, hw_space=space,
                      keep_space=default_keep_space("evit", 3, low=0.5, step=0.5))
    assert not res.feasible
    assert __import__("re").match(r"^no hardware configuration in the space fits PYNQ-Z2: the smallest needs "
                                  r"[0-9.]+% of its dsp$", res.summary["message"])


def test_cli_infeasible_exits_2_with_one_line(capsys):
    rc = main(["co-opt", "--device", "pynq-z2", "--target-fps", "1000000", "--lanes", "16", "--heads-parallel", "4",
               "--linear-lanes", "64", "--keep-step", "0.35", "--no-progress", "--json"])
    out, err = capsys.readouterr()
    assert rc == 2
    d = json.loads(out)
    assert d["feasible"] is False and d["closest"]["fits"] is True
    assert err.count("\n") == 1 and err.startswith("tokensift co-opt: error: no design in the space meets 0.001 ms")


def test_cli_json_and_report(tmp_path, capsys):
    rc = main(["co-opt", "--device", "ecp5-85f", "--target-latency-ms", "2", "--keep-step", "0.1", "--no-progress",
               "--report", str(tmp_path / "rep"), "--json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and d["feasible"] and d["chosen"]["latency_ms"] <= 2.0 and d["chosen"]["fits"]
    assert set(d["chosen"]["utilization"]) >= {"dsp", "ebr"}
    assert d["search"]["kind"] == "grid" and d["search"]["points"] == d["space"]["hw_points"] * d["space"]["keep"]["points"]
    for name in ("report.md", "pareto.png", "utilization.png"):
        assert (tmp_path / "rep" / name).stat().st_size > 1000
    assert "## Chosen design" in (tmp_path / "rep" / "report.md").read_text()


def test_cli_accelerator_cost_plans_keep_and_shape_on_the_designs_own_models(capsys):
    from tokensift.coopt.accel_sizing import plan_accelerator

    rc = main(["co-opt", "--cost", "accelerator", "--device", "pynq-z2", "--method", "dynamicvit",
               "--target-latency-ms", "2.5", "--keep-min", "0.6", "--keep-step", "1", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    d = json.loads(out)
    # --keep-step means what it means for the block model's search: one rho every step / 5
    plan = plan_accelerator("vit_mnist_patch4_28", "pynq-z2", target_latency_ms=2.5, keep_grid=(0.6, 0.8, 1.0))
    assert [p["keep_ratio"] for p in d["points"]] == [0.6, 0.8, 1.0]
    assert d["cost"] == "accelerator" and d["chosen"]["keep_ratio"] == plan.chosen.keep_ratio
    assert [p["cycles"] for p in d["points"]] == [p.as_dict()["cycles"] for p in plan.points]
    chosen = d["chosen"]
    assert chosen["meets_target"] and chosen["latency_ms"] <= 2.5 and chosen["sizing"]["chosen"]["fits"]
    budget = d["training_budget"]
    assert budget["command"] == (f"tokensift train --model vit_mnist_patch4_28 --method dynamicvit --keep "
                                 f"{chosen['keep_ratio']:g} --out runs/dynamicvit")
    s = chosen["shape"]
    # the shape as simulate model's options, the packed GEMM (two products per DSP48) and the attention core
    # copies included where chosen
    cores = s["attention_cores"]
    assert budget["simulate"].endswith(f"--banks {s['banks']} --lanes {s['lanes']} --gemm-cols {s['gemm_cols']} "
                                       f"--axi-bytes {s['axi_bytes']}{' --pack-pairs' if s['pack_pairs'] else ''}"
                                       f"{f' --attention-cores {cores}' if cores != 1 else ''} --clock-mhz 100")
    assert budget["dense_cycles"] > budget["planned_cycles"] == chosen["cycles"]
    # an unreachable target: exit 2, one line, and the table still says what is closest
    rc = main(["co-opt", "--cost", "accelerator", "--device", "pynq-z2", "--method", "dynamicvit",
               "--target-fps", "100000", "--keep-min", "0.5", "--keep-step", "0.5"])
    out, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith("tokensift co-opt: error: no keep ratio of the grid meets 0.01 ms on PYNQ-Z2")
    assert "| 0.5 | [24, 12, 6] |" in out


@pytest.mark.parametrize("argv, message", [
    (["--target-fps", "0"], r"^--target-fps must be a positive number, not 0$"),
    (["--target-latency-ms", "1", "--lanes", "4,x"], r"^--lanes takes a comma-separated list of ints, not '4,x'$"),
    (["--target-latency-ms", "1", "--lanes", "3"], r"^attention lanes must divide the head width 16, not 3$"),
    (["--target-latency-ms", "1", "--storage", "sqlite:///x.db", "--search", "grid"],
     r"^--storage shares an optuna study between workers, so it needs --search nsga2$"),
    (["--target-latency-ms", "1", "--accuracy", "measured"],
     r"^--accuracy measured needs --checkpoint, a trained model of the method$"),
    (["--target-latency-ms", "1", "--keep-min", "1.5"], r"^--keep-min must be in \(0, 1\], not 1\.5$"),
])
def test_cli_user_errors(argv, message, capsys):
    import re

    assert main(["co-opt", "--no-progress", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert re.match(message, err.removeprefix("tokensift co-opt: error: ")), err


@pytest.mark.parametrize("make, message", [
    (lambda: KeepSpace("per-stage", (0.5, 1.5), 3), r"^keep ratios must be in \(0, 1\], not 1\.5$"),
    (lambda: _small_space(lanes=()), r"^the lanes axis of the design space must not be empty$"),
    (lambda: _small_space(softmax=("exp",)), r"^softmax must be one of exp2_lut, exp2_poly, not 'exp'$"),
    (lambda: _small_space(heads_parallel=(1, 1)), r"^the heads_parallel axis repeats a value: \[1, 1\]$"),
])
def test_space_validation(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_cli_measured_accuracy_with_nsga2(tmp_path, capsys):
    """NSGA-II on measured accuracy, its first generation seeded from the cost grid's frontier."""
    import torch

    from tokensift.coopt.accuracy import MeasuredAccuracy
    from tokensift.sw import create_model
    from tokensift.sw.checkpoint import save_checkpoint
    from tokensift.sw.data import load_mnist

    torch.manual_seed(0)
    model = create_model(MODEL, method="evit")
    ckpt = save_checkpoint(tmp_path / "evit.pth", model)
    rc = main(["co-opt", "--device", "pynq-z2", "--target-latency-ms", "1.5", "--lanes", "4,16", "--heads-parallel",
               "1,4", "--linear-lanes", "16,128", "--selector-lanes", "16", "--keep-step", "0.2", "--accuracy",
               "measured", "--checkpoint", str(ckpt), "--trials", "10", "--population", "4", "--eval-images", "40",
               "--no-progress", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and d["search"]["kind"] == "nsga2" and d["search"]["seeded_from_grid"] == 4
    assert list(d["objectives"]) == ["latency_ms", "max_utilization", "measured_accuracy"]
    c = d["chosen"]
    assert c["latency_ms"] <= 1.5 and c["fits"]
    oracle = MeasuredAccuracy(model, load_mnist()[1], images=40)
    assert c["accuracy_proxy"] == oracle.at(c["keep"]["point"])


# -- NSGA-II and shared storage ----------------------------------------------------------------------------
def test_nsga2_finds_a_feasible_point(evit_small):
    res = co_optimize(MODEL, method="evit", device="pynq-z2", target_latency_ms=2.0, search="nsga2", trials=40,
                      population=10, evaluator=evit_small)
    assert res.feasible and res.chosen["latency_ms"] <= 2.0 and res.chosen["fits"]
    assert res.summary["search"]["study_trials"] == 40
    assert all(p["fits"] for p in res.front)


def _worker(storage: str, trials: int, seed: int, study: str = "shared") -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tokensift", "co-opt", "--device", "pynq-z2", "--target-latency-ms", "2",
           "--lanes", "4,16", "--heads-parallel", "1,4", "--linear-lanes", "16,64,128", "--selector-lanes", "16",
           "--softmax", "exp2_lut", "--keep-min", "0.4", "--keep-step", "0.2", "--search", "nsga2", "--trials",
           str(trials), "--population", "4", "--seed", str(seed), "--storage", storage, "--study-name", study,
           "--no-progress", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_two_workers_share_one_sqlite_study(tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    a, b = _worker(storage, 6, 1), _worker(storage, 6, 2)   # at the same time
    outs = [p.communicate(timeout=300) for p in (a, b)]
    for p, (_out, err) in zip((a, b), outs, strict=True):
        assert p.returncode == 0, err
    study = optuna.load_study(study_name="shared", storage=storage)
    assert len(study.trials) == 12
    seen = [json.loads(out)["search"]["study_trials"] for out, _ in outs]
    assert max(seen) == 12 and min(seen) >= 6        # the later finisher saw all of the other's trials
    c = _worker(storage, 1, 3)
    out, err = c.communicate(timeout=300)
    assert c.returncode == 0, err
    d = json.loads(out)
    assert d["search"]["study_trials"] == 13 and d["feasible"]


def test_a_study_of_another_space_is_refused(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    ev1 = CostEvaluator(MODEL, method="evit", device="pynq-z2", hw_space=_small_space(),
                        keep_space=default_keep_space("evit", 3, low=0.5, step=0.5))
    co_optimize(MODEL, method="evit", target_latency_ms=2.0, search="nsga2", trials=2, population=2,
                storage=storage, study_name="s", evaluator=ev1)
    ev2 = CostEvaluator(MODEL, method="evit", device="pynq-z2", hw_space=_small_space(lanes=(8,)),
                        keep_space=default_keep_space("evit", 3, low=0.5, step=0.5))
    with pytest.raises(ValueError, match=r"^study 's' in sqlite:///.* was created for another design space "
                                         r"\(model, method, device or axes differ\); pass a new --study-name$"):
        co_optimize(MODEL, method="evit", target_latency_ms=2.0, search="nsga2", trials=2, population=2,
                    storage=storage, study_name="s", evaluator=ev2)


# -- scale -------------------------------------------------------------------------------------------------
def test_ten_thousand_design_points_in_under_30_seconds():
    """Measured: a fresh evaluator (schedules, unit tables, resources), the whole grid and its front. The
    budget is this process's CPU time: on a shared machine the wall time also counts the other jobs."""
    t0, c0 = time.perf_counter(), time.process_time()
    res = co_optimize(MODEL, method="evit", device="pynq-z2", target_latency_ms=1.0)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    points = res.summary["search"]["points"]
    print(f"{points} design points in {cpu:.2f} s of CPU, {wall:.2f} s wall ({points / cpu:,.0f} points/s, grid "
          f"{res.summary['search']['seconds']:.2f} s)")
    assert points >= 10_000
    assert cpu < 30.0


@pytest.mark.parametrize("updates", ["suggest", "user_attr"])
def test_a_seed_trial_another_worker_finished_is_dropped_not_fatal(tmp_path, updates):
    """Two workers can pop the same enqueued trial from SQLite; the one that finishes second drops it."""
    import optuna

    from tokensift.coopt.search import _run_trial

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", directions=["minimize"])
    study.enqueue_trial({"x": 1})
    first = study.ask()
    twin = optuna.Trial(study, first._trial_id)  # what the racing worker got from its own pop
    study.tell(first, [1.0])

    def objective(trial):
        x = trial.suggest_int("x", 0, 2)
        if updates == "user_attr":
            trial.set_user_attr("h", x)
        return [float(x)]

    study.ask = lambda: twin
    assert _run_trial(study, objective) is False
    del study.ask
    assert _run_trial(study, objective) is True  # a fresh trial still counts
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    with pytest.raises(ZeroDivisionError):  # the objective's own errors still surface, the trial is failed
        _run_trial(study, lambda t: 1 / 0)
    assert study.trials[-1].state.name == "FAIL"
