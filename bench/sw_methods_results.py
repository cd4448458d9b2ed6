"""Accuracy vs GFLOPs of DynamicViT, SPViT, AS-ViT and SaiT on the bundled MNIST model (docs/methods.md).

Every operating point is a real, seeded fine-tuning run of ``tokensift train``'s recipe
(:func:`tokensift.sw.pipeline.run_pipeline`): the dense ``vit_mnist_patch4_28`` comes from the pipeline's
cache (trained once if missing), each pruned model starts from it with the dense model as teacher. Test
accuracy is measured on the fixed 1,000-image MNIST test split; GFLOPs (MACs) are counted per test image
on the inference path and averaged (AS-ViT and SaiT keep a different number of tokens per image).

* DynamicViT: keep ratio rho (``int(49 * rho ** s)`` patches after stage s), one run per rho.
* SPViT: the budget (target FLOPs / dense FLOPs); keep ratios planned from it; one run per budget, measured
  with the default noise-free threshold rule (and, in the JSON's ``topk``, with the planned top-k).
* AS-ViT: rho, the FLOPs target of the budget loss; one run per rho (counts adapt per image).
* SaiT: ONE run (sparse steps at attention masses 0.85 / 0.9 / 0.95 alternating with dense steps),
  evaluated at several run-time settings with ``model.set_keep_ratio`` (1.0 is the dense model, bit for bit).

Writes ``bench/sw_methods_results.json`` and ``docs/img/accuracy_vs_flops.png`` and prints a Markdown table.

    .venv/bin/python bench/sw_methods_results.py            # ~15 minutes on 2 CPU cores (cached dense)
    .venv/bin/python bench/sw_methods_results.py --quick    # a few steps per run, to check the script
    .venv/bin/python bench/sw_methods_results.py --seeds 0 1 2 --methods spvit asvit  # rerun two methods

With ``--methods``, only those methods are trained; the other methods' runs are kept from the existing
``--out`` file and the summary, table and plot are rebuilt from all of them.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from tokensift.sw import create_model
from tokensift.sw.checkpoint import load_checkpoint
from tokensift.sw.data import load_mnist
from tokensift.sw.flops import count_flops
from tokensift.sw.methods.spvit import set_decision
from tokensift.sw.pipeline import PipelineConfig, run_pipeline
from tokensift.sw.train import evaluate

MODEL = "vit_mnist_patch4_28"
ROOT = Path(__file__).resolve().parents[1]
# (method, keep ratio given to create_model / the pipeline)
TRAINED = [("dynamicvit", 0.9), ("dynamicvit", 0.75), ("dynamicvit", 0.6),
           ("spvit", 0.8), ("spvit", 0.65), ("spvit", 0.5),
           ("asvit", 0.8), ("asvit", 0.65), ("asvit", 0.5),
           ("sait", 0.85)]
SAIT_DENSITIES = (0.99, 0.97, 0.93, 0.85)  # run-time attention masses of the one SaiT model (plus 1.0)
LABELS = {"none": "dense", "dynamicvit": "DynamicViT", "spvit": "SPViT", "asvit": "AS-ViT", "sait": "SaiT"}


def measure(model, test) -> dict:
    images = torch.stack([test[i][0] for i in range(len(test))])
    flops = count_flops(model, images)
    return {"accuracy": evaluate(model, test), "gflops": flops.gflops,
            "tokens": [round(t, 3) for t in flops.attn_tokens]}


def run_point(method: str, keep: float, seed: int, epochs: int, quick: bool, test, workdir: Path) -> list[dict]:
    cfg = PipelineConfig(model=MODEL, method=method, keep_ratio=keep, seed=seed, epochs=epochs,
                         out=workdir / f"{method}-{keep:g}-s{seed}", progress=False)
    if quick:
        cfg.max_steps = 3
    r = run_pipeline(cfg)
    model = create_model(MODEL, method=method, keep_ratio=keep).eval()
    load_checkpoint(model, r["checkpoint"])
    common = {"method": method, "seed": seed, "epochs": epochs, "train_seconds": r.get("train_seconds"),
              "dense_accuracy": r["dense_accuracy"], "dense_gflops": r["dense_gflops"]}
    if method != "sait":
        row = {**common, "keep": keep, **measure(model, test)}
        if method == "spvit":  # the default is the noise-free threshold rule; the planned top-k for comparison
            row["planned_flops_ratio"] = model.planned_ratio
            set_decision(model, "topk")
            row["topk"] = measure(model, test)
        if method == "asvit":
            row["thresholds_x_num_patches"] = [float(s.threshold.detach()) * s.num_patches
                                               for s in model.selectors.values()]
        return [row]
    rows = []
    for density in (1.0, *SAIT_DENSITIES):
        model.set_keep_ratio(density)
        rows.append({**common, "keep": density, "trained_keep": keep, **measure(model, test)})
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """One row per (method, keep): mean (and spread) over the seeds."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["keep"]), []).append(r)
    out = []
    for (method, keep), rs in groups.items():
        acc = [r["accuracy"] for r in rs]
        out.append({"method": method, "keep": keep, "seeds": [r["seed"] for r in rs],
                    "accuracy": statistics.fmean(acc), "accuracy_min": min(acc), "accuracy_max": max(acc),
                    "gflops": statistics.fmean(r["gflops"] for r in rs)})
    return out


def markdown(summary: list[dict], dense: dict) -> str:
    lines = ["| method | setting | test accuracy (%) | vs dense (points) | MFLOPs (MACs) | FLOPs vs dense |",
             "|---|---|---|---|---|---|"]
    setting = {"dynamicvit": "keep rho = {:g}", "spvit": "budget {:g}", "asvit": "rho = {:g}",
               "sait": "mass {:g}"}
    lines.append(f"| dense | - | {100 * dense['accuracy']:.1f} | 0.0 | {1e3 * dense['gflops']:.3f} | 1.000 |")
    for s in summary:
        spread = "" if len(s["seeds"]) == 1 else f" ({100 * s['accuracy_min']:.1f}-{100 * s['accuracy_max']:.1f})"
        lines.append(f"| {LABELS[s['method']]} | {setting[s['method']].format(s['keep'])} | "
                     f"{100 * s['accuracy']:.1f}{spread} | {100 * (s['accuracy'] - dense['accuracy']):+.1f} | "
                     f"{1e3 * s['gflops']:.3f} | {s['gflops'] / dense['gflops']:.3f} |")
    return "\n".join(lines)


def plot(summary: list[dict], dense: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    markers = {"dynamicvit": "o", "spvit": "s", "asvit": "^", "sait": "D"}
    for method, marker in markers.items():
        pts = sorted((s["gflops"], s["accuracy"]) for s in summary if s["method"] == method)
        if pts:
            ax.plot([1e3 * g for g, _ in pts], [100 * a for _, a in pts], marker=marker, label=LABELS[method])
    ax.plot([1e3 * dense["gflops"]], [100 * dense["accuracy"]], marker="*", markersize=14, color="black",
            linestyle="none", label="dense")
    ax.set_xlabel("MFLOPs per image (multiply-accumulates)")
    ax.set_ylabel("MNIST test accuracy (%)")
    ax.set_title("vit_mnist_patch4_28: accuracy vs FLOPs")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps per run (checks the script)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs per run (default: 2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="+", choices=sorted({m for m, _ in TRAINED}), default=None,
                        help="train only these methods and keep the others' runs from --out (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "sw_methods_results.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "accuracy_vs_flops.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    _, test = load_mnist()
    methods = set(args.methods or (m for m, _ in TRAINED))
    kept_rows = []
    if args.methods and not args.quick:
        if not args.out.exists():
            parser.error(f"--methods keeps the other methods' runs from {args.out}, which does not exist")
        kept_rows = [r for r in json.loads(args.out.read_text())["runs"] if r["method"] not in methods]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for method, keep in TRAINED:
                if method not in methods:
                    continue
                rows += run_point(method, keep, seed, args.epochs, args.quick, test, Path(tmp))
                last = rows[-1]
                print(f"{method} {keep:g} seed {seed}: accuracy {last['accuracy']:.4f}, "
                      f"{1e3 * last['gflops']:.3f} MFLOPs ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    rows = kept_rows + rows
    dense = {"accuracy": statistics.fmean(r["dense_accuracy"] for r in rows), "gflops": rows[0]["dense_gflops"]}
    summary = summarise(rows)
    table = markdown(summary, dense)
    if not args.quick:
        payload = {"model": MODEL, "recipe": {"fine_tune_epochs": args.epochs, "seeds": args.seeds,
                                              "pipeline": {k: v for k, v in PipelineConfig().__dict__.items()
                                                           if isinstance(v, (int, float, str))}},
                   "torch": torch.__version__, "machine": platform.machine(), "threads": args.threads,
                   "seconds": round(time.time() - t0, 1), "test_images": len(test), "dense": dense,
                   "summary": summary, "runs": rows}
        args.out.write_text(json.dumps(payload, indent=1) + "\n")
        plot(summary, dense, args.plot)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
