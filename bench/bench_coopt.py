"""Co-optimizer throughput: design points evaluated per second, measured end to end.

For each case a *fresh* :class:`tokensift.coopt.CostEvaluator` (nothing cached) builds the token schedules,
the unit cycle tables and the resources, evaluates the whole grid (hardware axes x keep ratios) and its
Pareto front; the wall time of all of it is the number reported. The NSGA-II case times optuna trials
(in memory) on the same space. The machine's load average is printed, since a shared machine slows
everything down.

    .venv/bin/python bench/bench_coopt.py [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

CASES = [
    ("vit_mnist_patch4_28", "evit", "pynq-z2"),
    ("vit_mnist_patch4_28", "dynamicvit", "ecp5-85f"),
    ("deit_small_patch16_224", "evit", "zcu102"),
    ("deit_small_patch16_224", "dynamicvit", "zcu102"),
]


def _grid_case(model: str, method: str, device: str) -> dict:
    from tokensift.coopt import CostEvaluator
    from tokensift.coopt.pareto import grid_front

    t0 = time.perf_counter()
    ev = CostEvaluator(model, method=method, device=device)
    t1 = time.perf_counter()
    g = ev.grid()
    t2 = time.perf_counter()
    h, _ = grid_front(g.latency_ms, g.utilization, g.accuracy, valid=g.fits)
    t3 = time.perf_counter()
    return {"model": model, "method": method, "device": device, "points": g.points, "setup_s": t1 - t0,
            "grid_s": t2 - t1, "front_s": t3 - t2, "total_s": t3 - t0, "points_per_s": g.points / (t3 - t0),
            "front": int(len(h)), "resource_model": ev.resource_model}


def _nsga2_case(trials: int) -> dict:
    from tokensift.coopt.search import co_optimize

    t0 = time.perf_counter()
    r = co_optimize("vit_mnist_patch4_28", method="evit", device="pynq-z2", target_latency_ms=1.2, search="nsga2",
                    trials=trials, population=40)
    wall = time.perf_counter() - t0
    return {"model": "vit_mnist_patch4_28", "method": "evit (nsga2)", "device": "pynq-z2", "points": trials,
            "total_s": wall, "points_per_s": trials / wall, "front": r.summary["pareto_size"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2, help="runs per case; the fastest is reported")
    ap.add_argument("--trials", type=int, default=300, help="NSGA-II trials")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    rows = []
    for case in CASES:
        runs = [_grid_case(*case) for _ in range(args.repeat)]
        rows.append(min(runs, key=lambda r: r["total_s"]))
    rows.append(_nsga2_case(args.trials))
    if args.json:
        print(json.dumps({"load_average": load, "cpus": os.cpu_count(), "cases": rows}, indent=1))
        return 0
    print(f"load average {load:.1f} on {os.cpu_count()} CPUs; fastest of {args.repeat} runs, fresh evaluator each")
    print(f"{'model':24} {'method':14} {'device':9} {'points':>10} {'seconds':>8} {'points/s':>12} {'front':>7}  resources")
    for r in rows:
        print(f"{r['model']:24} {r['method']:14} {r['device']:9} {r['points']:>10,} {r['total_s']:>8.2f} "
              f"{r['points_per_s']:>12,.0f} {r['front']:>7,}  {r.get('resource_model') or ''}")
    worst = min(r["points_per_s"] for r in rows[:-1])
    print(f"slowest grid case: {worst:,.0f} points/s -> 10,000 points in {1e4 / worst:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
