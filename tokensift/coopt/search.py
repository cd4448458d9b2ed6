"""The search: exhaustive grid or NSGA-II (optuna), the Pareto front, the chosen point, the training budget.

Objectives: latency in ms (minimize), the largest resource utilization of the device, DSP, block RAM,
LUT, FF (minimize), and an accuracy proxy (maximize): by default the retained backbone FLOPs (the share of
the dense model's multiply-accumulates the token schedule still computes), or measured accuracy
(:class:`tokensift.coopt.accuracy.MeasuredAccuracy`). Constraint: the design fits the device
(utilization <= 1).

* ``grid``: every hardware point x every keep point through :meth:`CostEvaluator.grid` (vectorised), the
  exact front by :func:`tokensift.coopt.pareto.grid_front`.
* ``nsga2``: optuna's NSGA-II sampler over the same axes, one design point per trial, with the fit as its
  constraint; a new study's first generation is seeded from the cost grid's frontier; ``storage`` (an optuna storage URL such as ``sqlite:///study.db``) lets several workers
  share one study, and each worker's answer is computed from every trial in the study.

The chosen point meets the target latency and fits the device; among those it has the best accuracy proxy
(then the lowest utilization, then the lowest latency) with ``prefer="accuracy"``, or the lowest
utilization (then the best accuracy) with ``prefer="resources"``. Either way it lies on the front.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field

import numpy as np

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; _run_trial still survives the race
    fcntl = None

from tokensift.coopt.evaluate import CostEvaluator
from tokensift.coopt.pareto import grid_front, pareto_mask
from tokensift.errors import MemoryBudgetError, TokensiftError

__all__ = ["CoOptResult", "InfeasibleTargetError", "co_optimize", "choose", "training_budget", "SEARCHES"]

SEARCHES = ("grid", "nsga2")
#: largest grid evaluated in one go (hardware points x keep points)
MAX_GRID_POINTS = 50_000_000


class InfeasibleTargetError(TokensiftError, ValueError):
    """No design point in the space fits the device and meets the target."""


@dataclass
class CoOptResult:
    """What :func:`co_optimize` found. ``summary`` is the ``--json`` object; the arrays feed the report."""

    summary: dict
    front: list[dict]
    evaluator: CostEvaluator
    latency_ms: np.ndarray        # every evaluated point
    utilization: np.ndarray
    accuracy: np.ndarray
    fits: np.ndarray
    chosen: dict | None
    closest: dict | None
    extra: dict = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return self.chosen is not None


def _order_key(prefer: str, acc, util, lat):
    if prefer == "accuracy":
        return (lat, util, -acc)  # np.lexsort: last key is the primary one
    return (lat, -acc, util)


def choose(latency, utilization, accuracy, fits, target_ms: float, prefer: str = "accuracy") -> tuple[int | None, int]:
    """(index of the chosen point or None, index of the closest point) over flat arrays of points.

    The closest point, reported when nothing meets the target, is the fastest point that fits (or, when
    nothing fits, the one with the lowest utilization).
    """
    if prefer not in ("accuracy", "resources"):
        raise ValueError(f"prefer must be 'accuracy' or 'resources', not {prefer!r}")
    lat, util, acc = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (latency, utilization, accuracy))
    fits = np.asarray(fits, dtype=bool).reshape(-1)
    ok = np.flatnonzero(fits & (lat <= target_ms))
    chosen = None
    if len(ok):
        order = np.lexsort(_order_key(prefer, acc[ok], util[ok], lat[ok]))
        chosen = int(ok[order[0]])
    fit = np.flatnonzero(fits)
    if len(fit):
        closest = int(fit[np.lexsort((util[fit], -acc[fit], lat[fit]))[0]])
    else:
        closest = int(np.lexsort((lat, util))[0])
    return chosen, closest


def _space_signature(ev: CostEvaluator) -> str:
    sig = {"model": ev.desc.name, "method": ev.method, "device": ev.device.name, "hw": ev.hw_space.as_dict(),
           "keep": ev.keep_space.as_dict(), "dim": ev.desc.dim, "depth": ev.desc.depth}
    return hashlib.sha1(json.dumps(sig, sort_keys=True).encode()).hexdigest()[:16]


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=Console(file=sys.stderr),
                    disable=not enabled, transient=False)


def _open_storage(url: str | None, attempts: int = 8):
    """An optuna storage for ``url`` (None: in memory). SQLite waits up to a minute for a lock; opening a new
    database from several workers at once races in optuna's schema set-up (``UNIQUE constraint failed:
    alembic_version``), so opening is retried with a growing pause."""
    import random

    import optuna

    if url is None:
        return None
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except ImportError as exc:  # a missing database driver
            raise ValueError(f"cannot open the optuna storage {url!r}: {exc}") from None
        except Exception as exc:  # sqlalchemy's IntegrityError / OperationalError while another worker sets up
            if type(exc).__module__.startswith("sqlalchemy") and attempt < attempts - 1:
                time.sleep(0.2 * (attempt + 1) + random.random() * 0.2)
                continue
            if isinstance(exc, ValueError) or type(exc).__module__.startswith("sqlalchemy"):
                raise ValueError(f"cannot open the optuna storage {url!r}: {str(exc).splitlines()[0]}") from None
            raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _study_lock(url: str | None):
    """Serialize the workers of one SQLite study around popping a trial and seeding the first generation.

    SQLite has no row locks, so optuna's WAITING -> RUNNING check races: two workers can pop the same
    enqueued trial and both tell it, and two workers opening a new study can both see it empty and both
    seed it. Servers (PostgreSQL, MySQL) lock the row themselves, so only SQLite files take this lock, an
    advisory ``flock`` on a file beside the database."""
    path = _sqlite_path(url)
    if path is None or fcntl is None:
        yield
        return
    with open(f"{path}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sqlite_path(url: str | None) -> str | None:
    """The database file of a ``sqlite:///path`` URL; None for memory, other databases or no storage."""
    if not url or not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):].split("?", 1)[0]
    return None if path in ("", ":memory:") else path


def _run_trial(study, objective, lock=contextlib.nullcontext) -> bool:
    """Ask, evaluate and tell one trial; False when another worker finished the same trial first.

    ``lock`` serializes the ask between the workers of one SQLite study (see :func:`_study_lock`); where no
    lock is possible the race is still survived: the loser's updates fail on a finished trial, its evaluation
    is a duplicate of the winner's (same parameters, same cost model), so it is dropped.
    """
    import optuna

    with lock():
        trial = study.ask()
    try:
        values = objective(trial)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    except BaseException:
        study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        raise
    try:
        study.tell(trial, values)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
        if study.get_trials(deepcopy=False)[trial.number].state.is_finished():
            return False
        raise
    return True


# -- the two searches ------------------------------------------------------------------------------------
def _grid_search(ev: CostEvaluator, accuracy, progress: bool):
    total = ev.hw_space.size * ev.keep_space.size
    if total > MAX_GRID_POINTS:
        raise MemoryBudgetError(f"the grid has {total:,} design points ({ev.hw_space.size:,} hardware x "
                                f"{ev.keep_space.size:,} keep ratios), more than the {MAX_GRID_POINTS:,} the "
                                f"search holds in memory; coarsen the keep step, narrow the axes or use the nsga2 "
                                f"search")
    with _progress(progress) as bar:
        task = bar.add_task("co-opt grid", total=1, info=f"{total} design points")
        g = ev.grid(accuracy=accuracy)
        bar.update(task, advance=1, info=f"{g.points} design points in {g.seconds:.2f} s")
    H, K = g.cycles.shape
    lat = g.latency_ms.reshape(-1)
    util = np.repeat(g.utilization, K)
    acc = np.tile(g.accuracy, H)
    fits = np.repeat(g.fits, K)
    fh, fk = grid_front(g.latency_ms, g.utilization, g.accuracy, valid=g.fits)
    scheds = g.extra["schedules"]
    points = [((int(h), scheds[k].point), float(g.latency_ms[h, k])) for h, k in zip(fh.tolist(), fk.tolist(),
                                                                                        strict=True)]
    flat_index = lambda i: (i // K, scheds[i % K].point)  # noqa: E731
    return {"kind": "grid", "points": g.points, "seconds": g.seconds,
            "points_per_s": g.points / g.seconds if g.seconds > 0 else None}, lat, util, acc, fits, points, flat_index


def _seed_points(ev: CostEvaluator, target_ms: float, n: int) -> list[tuple[int, tuple]]:
    """``n`` designs for NSGA-II's first generation: the latency vs retained-FLOPs frontier of everything
    that fits (from the cheap cost grid), spread evenly along latency and centred on the target."""
    from tokensift.coopt.pareto import front_2d

    g = ev.grid()
    K = g.cycles.shape[1]
    flat = np.flatnonzero(np.repeat(g.fits, K))
    if not len(flat):
        return []
    lat = g.latency_ms.reshape(-1)[flat]
    acc = np.tile(g.accuracy, g.cycles.shape[0])[flat]
    front = flat[front_2d(lat, -acc)]
    front = front[np.argsort(g.latency_ms.reshape(-1)[front], kind="stable")]
    near = np.searchsorted(g.latency_ms.reshape(-1)[front], target_ms, side="right")
    lo = max(0, min(near - n // 2, len(front) - n))
    pick = front[lo:lo + n]
    scheds = g.extra["schedules"]
    return [(int(i // K), scheds[i % K].point) for i in pick]


def _nsga2_search(ev: CostEvaluator, accuracy, *, trials: int, storage: str | None, study_name: str | None,
                  seed: int | None, population: int, progress: bool, seed_target: float | None = None):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    hs, ks = ev.hw_space, ev.keep_space
    used = ev.resources()
    util_all = ev.utilization(used).max(axis=1)
    signature = _space_signature(ev)
    sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    name = study_name or f"tokensift-{signature}"
    study = optuna.create_study(storage=_open_storage(storage), sampler=sampler, study_name=name,
                                load_if_exists=True, directions=["minimize", "minimize", "maximize"])
    existing = study.user_attrs.get("space")
    if existing is None:
        study.set_user_attr("space", signature)
    elif existing != signature:
        raise ValueError(f"study {name!r} in {storage} was created for another design space (model, method, "
                         f"device or axes differ); pass a new --study-name")
    keep_names = ([f"keep_{s}" for s in range(ks.stages)] if ks.kind == "per-stage"
                  else ["rho"] if ks.kind != "none" else [])
    seeded = 0
    lock = functools.partial(_study_lock, storage)
    with lock():
        if seed_target is not None and not study.get_trials(deepcopy=False) and hs.size * ks.size <= MAX_GRID_POINTS:
            for h, point in _seed_points(ev, seed_target, population):
                c = hs.choice(h)
                study.enqueue_trial({"lanes": c.lanes, "heads_parallel": c.heads_parallel,
                                     "linear": f"{c.linear_lanes}/{c.linear_rows}",
                                     "selector_lanes": c.selector_lanes, "softmax": c.softmax,
                                     "clock_mhz": c.clock_mhz, **dict(zip(keep_names, point, strict=True))})
                seeded += 1

    def objective(trial):
        from tokensift.coopt.space import HwChoice

        # the linear engine's (MACs, rows) shapes as one categorical axis, "MACs/rows"
        macs, rows = (int(v) for v in trial.suggest_categorical(
            "linear", [f"{m}/{r}" for m, r in hs.linear_variants]).split("/"))
        choice = HwChoice(lanes=trial.suggest_categorical("lanes", list(hs.lanes)),
                          heads_parallel=trial.suggest_categorical("heads_parallel", list(hs.heads_parallel)),
                          linear_lanes=macs, linear_rows=rows,
                          selector_lanes=trial.suggest_categorical("selector_lanes", list(hs.selector_lanes)),
                          softmax=trial.suggest_categorical("softmax", list(hs.softmax)),
                          clock_mhz=trial.suggest_categorical("clock_mhz", list(hs.clock_mhz)),
                          weight_rate=hs.weight_rate)
        point = tuple(float(trial.suggest_categorical(n, list(ks.values))) for n in keep_names)
        if ks.kind == "geometric" or ks.kind == "adaptive":
            point = point[:1]
        h = hs.index_of(choice)
        sched = ev.schedule(point)
        A, L, S = ev.unit_cycles([sched])
        a, li, si, _ = hs.unravel(h)
        cycles = int(A[a, 0] + L[li, 0] + S[si, 0])
        lat = cycles / (choice.clock_mhz * 1e3)
        acc = float(sched.retained if accuracy is None else np.asarray(accuracy([sched]))[0])
        util = float(util_all[h])
        trial.set_constraint("fits", util - 1.0)  # feasible when <= 0
        trial.set_user_attr("h", h)
        trial.set_user_attr("keep", list(point))
        trial.set_user_attr("cycles", cycles)
        return lat, util, acc

    t0 = time.perf_counter()
    with _progress(progress) as bar:
        task = bar.add_task("co-opt nsga2", total=trials, info="")

        done_here = 0
        while done_here < trials:
            if _run_trial(study, objective, lock):
                done_here += 1
                bar.update(task, advance=1, info=f"{len(study.get_trials(deepcopy=False))} trials in the study")
    seconds = time.perf_counter() - t0
    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    lat = np.array([t.values[0] for t in done])
    util = np.array([t.values[1] for t in done])
    acc = np.array([t.values[2] for t in done])
    fits = util <= 1.0
    keys = [(int(t.user_attrs["h"]), tuple(t.user_attrs["keep"])) for t in done]
    # the front of the distinct design points the study evaluated
    uniq: dict = {}
    for i, key in enumerate(keys):
        uniq.setdefault(key, i)
    idx = np.array(sorted(uniq.values()), dtype=np.int64)
    points = []
    if len(idx):
        cand = idx[fits[idx]]
        mask = pareto_mask(np.stack([lat[cand], util[cand], -acc[cand]], axis=1)) if len(cand) else []
        points = [(keys[i], float(lat[i])) for i in cand[np.asarray(mask, dtype=bool)]]
    info = {"kind": "nsga2", "trials": trials, "study_trials": len(done), "distinct_points": len(uniq),
            "study": name, "storage": storage, "seconds": seconds, "points": trials,
            "points_per_s": trials / seconds if seconds > 0 else None, "population": population, "seed": seed,
            "seeded_from_grid": seeded}
    return info, lat, util, acc, fits, points, lambda i: keys[i]


# -- the answer ------------------------------------------------------------------------------------------
def training_budget(ev: CostEvaluator, point: dict, target_ms: float, model_name: str) -> dict:
    """What training needs to meet the target on the chosen hardware: the latency budget and a command."""
    hw = point["hw"]
    h = ev.hw_space.index_of(_choice(hw))
    dense_ms = ev.dense_cycles(h) / (hw["clock_mhz"] * 1e3)
    cmd = (f"tokensift train --model {model_name} --method {ev.method} --device {ev.device.name.lower()} "
           f"--target-latency-ms {target_ms:g} --lanes {hw['lanes']} --heads-parallel {hw['heads_parallel']} "
           f"--linear-lanes {hw['linear_lanes']} --linear-rows {hw['linear_rows']} "
           f"--selector-lanes {hw['selector_lanes']} --softmax {hw['softmax']} "
           f"--clock-mhz {hw['clock_mhz']:g}")
    if ev.kind == "per-stage":
        cmd += " --stage-keep " + ",".join(f"{r:g}" for r in point["keep"]["point"])
    return {
        "method": ev.method,
        "device": ev.device.name,
        "hw": hw,
        "target_latency_ms": target_ms,
        "planned_latency_ms": point["latency_ms"],
        "dense_latency_ms": dense_ms,
        "latency_ratio": point["latency_ms"] / dense_ms,
        "keep": point["keep"],
        "budget": "tokensift.hw.cost.latency.LatencyBudget(model, HwConfig(**hw without clock_mhz), device, "
                  "clock_mhz=clock_mhz): the budget loss is |latency / dense - latency_ratio|",
        "command": cmd,
    }


def _choice(hw: dict):
    from tokensift.coopt.space import HwChoice

    return HwChoice(**hw)


def co_optimize(model, *, method: str | None = None, device="pynq-z2", target_latency_ms: float,
                hw_space=None, keep_space=None, search: str = "grid", trials: int = 200, storage: str | None = None,
                study_name: str | None = None, seed: int | None = 0, population: int = 40, accuracy=None,
                prefer: str = "accuracy", max_front: int = 200, progress: bool = False,
                evaluator: CostEvaluator | None = None, seed_from_grid: bool = True, **overrides) -> CoOptResult:
    """Search the design space of ``model`` on ``device`` for ``target_latency_ms``; see the module docstring.

    ``accuracy`` is None (the retained-FLOPs proxy) or a callable ``[KeepSchedule] -> accuracies``. With
    ``seed_from_grid`` a new NSGA-II study starts from ``population`` designs of the cheap cost grid's
    latency-vs-retained-FLOPs frontier around the target, so the expensive objective (measured accuracy)
    is spent near the answer.
    """
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {', '.join(SEARCHES)}, not {search!r}")
    if isinstance(target_latency_ms, bool) or not isinstance(target_latency_ms, (int, float)) \
            or not target_latency_ms > 0 or not np.isfinite(target_latency_ms):
        raise ValueError(f"the target latency must be a positive number of milliseconds, not {target_latency_ms!r}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be a positive integer, not {trials!r}")
    if prefer not in ("accuracy", "resources"):
        raise ValueError(f"prefer must be 'accuracy' or 'resources', not {prefer!r}")
    ev = evaluator or CostEvaluator(model, method=method, device=device, hw_space=hw_space, keep_space=keep_space,
                                    **overrides)
    if search == "grid":
        info, lat, util, acc, fits, front_keys, key_of = _grid_search(ev, accuracy, progress)
    else:
        info, lat, util, acc, fits, front_keys, key_of = _nsga2_search(
            ev, accuracy, trials=trials, storage=storage, study_name=study_name, seed=seed,
            population=population, progress=progress,
            seed_target=float(target_latency_ms) if seed_from_grid else None)
    acc_name = "retained_flops" if accuracy is None else getattr(accuracy, "name", "accuracy")
    chosen_i, closest_i = choose(lat, util, acc, fits, float(target_latency_ms), prefer)

    def describe(key):
        h, keep = key
        d = ev.point(h, keep)
        d["accuracy_proxy"] = (d["retained_flops"] if accuracy is None
                               else float(np.asarray(accuracy([ev.schedule(keep)]))[0]))
        return d

    # the front in latency order; only ``max_front`` of its points (evenly along latency) are described
    order = np.argsort(np.array([lat_ for _, lat_ in front_keys], dtype=np.float64), kind="stable")
    shown_idx = order
    if len(order) > max_front:
        shown_idx = order[np.unique(np.linspace(0, len(order) - 1, max_front).round().astype(int))]
    front = [describe(front_keys[i][0]) for i in shown_idx]
    chosen = describe(key_of(chosen_i)) if chosen_i is not None else None
    closest = describe(key_of(closest_i))
    target = float(target_latency_ms)
    name = model if isinstance(model, str) else ev.desc.name
    if chosen is not None:
        message = (f"{ev.device.name}: {chosen['latency_ms']:.4g} ms ({chosen['fps']:.4g} fps) at "
                   f"{100 * chosen['max_utilization']:.3g}% of the busiest resource meets the {target:g} ms target")
    elif closest["fits"]:
        message = (f"no design in the space meets {target:g} ms on {ev.device.name}: the fastest that fits takes "
                   f"{closest['latency_ms']:.4g} ms ({closest['fps']:.4g} fps) with lanes {closest['hw']['lanes']}, "
                   f"{closest['hw']['linear_lanes']} linear lanes and keep {closest['keep']['point']}")
    else:
        worst = max(closest["utilization"], key=closest["utilization"].get)
        message = (f"no hardware configuration in the space fits {ev.device.name}: the smallest needs "
                   f"{100 * closest['utilization'][worst]:.3g}% of its {worst}")
    summary = {
        "device": ev.device.as_dict(),
        "model": name,
        "method": ev.method,
        "target": {"latency_ms": target, "fps": 1e3 / target},
        "feasible": chosen is not None,
        "message": message,
        "clock": (chosen or closest)["clock"],
        "search": info,
        "objectives": {"latency_ms": "minimize", "max_utilization": "minimize", acc_name: "maximize"},
        "constraint": f"max_utilization <= 1 over {', '.join(ev.resource_keys())} of the device",
        "resource_model": ev.resource_model,
        "prefer": prefer,
        "space": {"hw": ev.hw_space.as_dict(), "keep": ev.keep_space.as_dict(), "hw_points": ev.hw_space.size,
                  "buffers": {"attention_n_max": ev.num_tokens, "note": "sized for the model's largest frame"}},
        "chosen": chosen,
        "closest": None if chosen is not None else closest,
        "training_budget": training_budget(ev, chosen, target, name) if chosen is not None else None,
        "pareto_size": len(front_keys),
        "pareto": front,
    }
    return CoOptResult(summary=summary, front=front, evaluator=ev, latency_ms=lat, utilization=util,
                       accuracy=acc, fits=fits, chosen=chosen, closest=None if chosen is not None else closest,
                       extra={"accuracy_name": acc_name, "front_keys": [k for k, _ in front_keys],
                              "front_latency_ms": np.array([v for _, v in front_keys])})
