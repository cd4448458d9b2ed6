"""Regenerate the measured MNIST numbers of the README's software section.

Trains (or takes from the cache) the dense ``vit_mnist_patch4_28`` on the bundled MNIST split, fine-tunes
DynamicViT at rho = 0.9 / 0.8 / 0.7 and EViT at 0.7 with the dense model as teacher, and writes
``bench/sw_results.json`` plus a Markdown table on stdout. Same recipe as ``tokensift train``.

    .venv/bin/python bench/sw_results.py            # about an hour on 2 busy CPU cores
    .venv/bin/torchrun --nproc-per-node 2 bench/sw_results.py    # the same recipe over 2 processes (DDP)
    .venv/bin/python bench/sw_results.py --quick    # a few steps per stage, to check the script
    .venv/bin/python bench/sw_results.py --tables   # the README tables from the recorded JSON files
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from tokensift.sw.pipeline import PipelineConfig, run_pipeline
from tokensift.sw.train import is_main_process

RUNS = [("none", None), ("dynamicvit", 0.9), ("dynamicvit", 0.8), ("dynamicvit", 0.7), ("evit", 0.7)]


def markdown(rows: list[dict]) -> str:
    dense = rows[0]
    lines = ["| model | keep ratio | test accuracy (%) | vs dense (points) | GFLOPs (MACs) | FLOPs vs dense |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        name = "dense" if r["method"] == "none" else r["method"]
        lines.append(f"| {name} | {r['keep']:g} | {100 * r['accuracy']:.1f} | "
                     f"{100 * (r['accuracy'] - dense['accuracy']):+.1f} | {r['gflops']:.4f} | {r['ratio']:.3f} |")
    return "\n".join(lines)


def speed_markdown(speed: dict) -> str:
    lines = ["| batch | model | GFLOPs | images/s | FLOPs ratio | measured speedup | speedup / FLOPs ratio |",
             "|---|---|---|---|---|---|---|"]
    for r in speed["rows"]:
        lines.append(f"| {r['batch']} | {r['model']} | {r['gflops']:.2f} | {r['images_per_s']:.2f} | "
                     f"{r['flops_ratio']:.2f}x | {r['speedup']:.2f}x | {r['efficiency']:.2f} |")
    return "\n".join(lines)


def tables(results_path: Path, speed_path: Path) -> str:
    """The README's tables, rendered from the recorded JSON files."""
    res = json.loads(results_path.read_text())
    out = [markdown(res["runs"]), ""]
    if speed_path.is_file():
        out.append(speed_markdown(json.loads(speed_path.read_text())))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps per stage (checks the script)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("sw_results.json"))
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--dense-epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default: the recipe's)")
    parser.add_argument("--tables", action="store_true",
                        help="only print the README tables from the recorded sw_results.json and sw_speed.json")
    args = parser.parse_args(argv)
    if args.tables:
        print(tables(args.out, Path(__file__).with_name("sw_speed.json")))
        return 0
    rows = []
    t0 = time.time()
    for method, keep in RUNS:
        cfg = PipelineConfig(model="vit_mnist_patch4_28", method=method, keep_ratio=keep, seed=args.seed,
                             progress=not args.no_progress)
        if args.dense_epochs is not None:
            cfg.dense_epochs = args.dense_epochs
        if args.epochs is not None:
            cfg.epochs = args.epochs
        if method == "none":
            cfg.epochs = cfg.dense_epochs
        if args.quick:
            cfg.max_steps = 3
        r = run_pipeline(cfg)
        rows.append(r)
        if is_main_process():
            print(json.dumps({k: r[k] for k in ("method", "keep", "accuracy", "gflops", "ratio")}),
                  file=sys.stderr, flush=True)
        if not args.quick and is_main_process():  # after every run: a long run leaves its finished rows
            recipe = {k: v for k, v in PipelineConfig().__dict__.items()
                      if k not in ("out", "data", "checkpoint", "dense_checkpoint", "cache_dir")}
            payload = {"recipe": {**recipe, "dense_epochs": cfg.dense_epochs, "epochs": cfg.epochs},
                       "processes": r["world_size"], "torch": torch.__version__, "machine": platform.machine(),
                       "seconds": time.time() - t0, "test_images": rows[0]["test_images"],
                       "complete": len(rows) == len(RUNS), "runs": rows}
            args.out.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    if is_main_process():
        print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
