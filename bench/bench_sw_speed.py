"""Inference speed on CPU: DeiT-S (random weights), dense vs DynamicViT rho=0.7 vs EViT 0.7.

Batch 1 and batch 32; the three models run alternately in one process (round-robin, several rounds, median
per model), so a machine whose load changes during the run affects them alike. Prints images/s and the
measured speedup next to the FLOPs ratio (dense FLOPs / pruned FLOPs); the goal is a measured speedup of
at least 0.9 x the FLOPs ratio at batch 32.

    .venv/bin/python bench/bench_sw_speed.py                 # a few minutes
    .venv/bin/python bench/bench_sw_speed.py --json-out bench/sw_speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from tokensift.sw import create_model
from tokensift.sw.flops import count_flops

MODELS = [("dense", "none", None), ("DynamicViT 0.7", "dynamicvit", 0.7), ("EViT 0.7", "evit", 0.7)]


def build(model_name: str):
    dense = create_model(model_name).eval()
    out = {}
    for label, method, keep in MODELS:
        m = create_model(model_name, method=method, keep_ratio=keep).eval()
        m.load_state_dict(dense.state_dict(), strict=False)  # same backbone weights
        out[label] = (m, count_flops(m).gflops)
    return out


@torch.inference_mode()
def measure(models: dict, batch: int, rounds: int, iters: int, img_size: int) -> dict[str, list[float]]:
    x = torch.randn(batch, 3, img_size, img_size)
    for m, _ in models.values():  # warm-up
        m(x)
    times: dict[str, list[float]] = {k: [] for k in models}
    labels = list(models)
    for r in range(rounds):
        order = labels if r % 2 == 0 else labels[::-1]  # alternate the order too
        for label in order:
            m = models[label][0]
            t = time.perf_counter()
            for _ in range(iters):
                m(x)
            times[label].append(batch * iters / (time.perf_counter() - t))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deit_small_patch16_224")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: stable on a shared machine)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = build(args.model)
    img = create_model(args.model).config.img_size
    dense_g = models["dense"][1]
    rows = []
    for batch in args.batches:
        iters = max(1, 16 // batch)
        speeds = measure(models, batch, args.rounds, iters, img)
        dense_ips = statistics.median(speeds["dense"])
        for label, (_, g) in models.items():
            ips = statistics.median(speeds[label])
            flops_ratio = dense_g / g
            speedup = ips / dense_ips
            rows.append({"batch": batch, "model": label, "gflops": g, "images_per_s": ips,
                         "flops_ratio": flops_ratio, "speedup": speedup, "efficiency": speedup / flops_ratio,
                         "runs": speeds[label]})
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{args.model} inference on CPU ({args.threads} thread(s), median of {args.rounds} "
                        f"alternating rounds)")
    for col in ("batch", "model", "GFLOPs", "images/s", "FLOPs ratio", "measured speedup", "speedup / ratio"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["batch"]), r["model"], f"{r['gflops']:.3f}", f"{r['images_per_s']:.2f}",
                      f"{r['flops_ratio']:.2f}x", f"{r['speedup']:.2f}x", f"{r['efficiency']:.2f}")
    Console().print(table)
    if args.json_out is not None:
        payload = {"model": args.model, "threads": args.threads, "rounds": args.rounds,
                   "torch": torch.__version__, "machine": platform.machine(), "rows": rows}
        args.json_out.write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
