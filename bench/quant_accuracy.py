"""Float vs fake-quant vs integer-only accuracy of the MNIST ViT, and each integer kernel's measured error.

The dense ``vit_mnist_patch4_28`` comes from the sw training pipeline (the same recipe and cache as
``tokensift train``: trained once, then loaded); EViT runs its token selection on the dense weights (or on
weights fine-tuned with ``--evit-epochs``). For each model the script measures, on the MNIST test split:

* float accuracy (the PyTorch model),
* fake-quant accuracy (:func:`tokensift.quant.fake.quantize_model`: int8 weights per channel, int8
  activations per tensor at every linear layer's input),
* integer accuracy (:class:`tokensift.quant.integer_model.IntegerViT`: every operation integer-only),

then the error of every integer kernel against float on the model's real activations, with the derived
bounds. Prints ``rich`` tables; ``--json PATH`` also writes the numbers.

    .venv/bin/python bench/quant_accuracy.py                 # dense model from the cache (or trained)
    .venv/bin/python bench/quant_accuracy.py --limit 200     # quick look on 200 test images
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Subset

from tokensift.quant.fake import quantize_model
from tokensift.quant.integer_model import IntegerViT, kernel_errors
from tokensift.sw import create_model
from tokensift.sw.checkpoint import load_checkpoint
from tokensift.sw.data import load_mnist
from tokensift.sw.pipeline import PipelineConfig, run_pipeline
from tokensift.sw.train import evaluate

MODEL = "vit_mnist_patch4_28"


def models(args) -> list[tuple[str, torch.nn.Module]]:
    """The dense model (cached or trained by the sw pipeline) and EViT on its weights."""
    dense_run = run_pipeline(PipelineConfig(model=MODEL, method="none", epochs=args.dense_epochs,
                                            progress=False, threads=args.threads))
    dense = create_model(MODEL)
    load_checkpoint(dense, dense_run["dense_checkpoint"])
    out = [("dense", dense.eval())]
    evit = create_model(MODEL, method="evit", keep_ratio=args.keep_ratio)
    if args.evit_epochs:
        run = run_pipeline(PipelineConfig(model=MODEL, method="evit", keep_ratio=args.keep_ratio,
                                          epochs=args.evit_epochs, dense_epochs=args.dense_epochs,
                                          out=Path(args.out_dir), progress=False, threads=args.threads))
        load_checkpoint(evit, run["checkpoint"])
    else:
        load_checkpoint(evit, {"model": dense.state_dict()})
    label = f"EViT {args.keep_ratio:g}" + (f" (+{args.evit_epochs} ep.)" if args.evit_epochs else "")
    out.append((label, evit.eval()))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dense-epochs", type=int, default=40, help="dense training epochs (the cache key)")
    parser.add_argument("--keep-ratio", type=float, default=0.7, help="EViT keep ratio per stage")
    parser.add_argument("--evit-epochs", type=int, default=0, help="EViT fine-tuning epochs (0: none)")
    parser.add_argument("--observer", choices=["minmax", "percentile"], default="minmax")
    parser.add_argument("--calib-batches", type=int, default=4, help="calibration batches of 100 training images")
    parser.add_argument("--limit", type=int, default=None, help="test images to use (default: all)")
    parser.add_argument("--attention-images", type=int, default=8, help="images for the attention error rows")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", default="build/quant_accuracy", help="where fine-tuned checkpoints go")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    console = Console(width=130)

    train, test = load_mnist()
    if args.limit is not None:
        test = Subset(test, range(min(args.limit, len(test))))
    calib = [images for images, _ in DataLoader(Subset(train, range(100 * args.calib_batches)), batch_size=100)]
    results = {"model": MODEL, "test_images": len(test), "observer": args.observer,
               "calibration_images": 100 * args.calib_batches, "rows": [], "kernels": {}}

    acc_table = Table(title=f"MNIST test accuracy ({len(test)} images), {args.observer} calibration")
    for col in ("model", "float %", "fake-quant %", "integer %", "integer - float (points)", "saturated values",
                "integer s/image"):
        acc_table.add_column(col, justify="right" if col != "model" else "left")
    for label, model in models(args):
        float_acc = evaluate(model, test)
        fq = quantize_model(model, calib, observer=args.observer, num_batches=args.calib_batches)
        fq_acc = evaluate(fq, test)
        int_model = IntegerViT.from_float(model, calib, observer=args.observer, num_batches=args.calib_batches)
        t0 = time.perf_counter()
        int_acc = int_model.evaluate(test)
        per_image = (time.perf_counter() - t0) / len(test)
        row = {"model": label, "float": float_acc, "fake_quant": fq_acc, "integer": int_acc,
               "delta_points": 100 * (int_acc - float_acc), "saturated": int_model.counter.total,
               "saturated_by_site": dict(int_model.counter.by_site), "integer_seconds_per_image": per_image}
        results["rows"].append(row)
        acc_table.add_row(label, f"{100 * float_acc:.1f}", f"{100 * fq_acc:.1f}", f"{100 * int_acc:.1f}",
                          f"{row['delta_points']:+.1f}", str(int_model.counter.total), f"{per_image:.3f}")
        if label == "dense":
            images = torch.stack([test[i][0] for i in range(min(64, len(test)))])
            results["kernels"] = kernel_errors(model, int_model, images, attention_images=args.attention_images)
    console.print(acc_table)

    k_table = Table(title="Integer kernels vs float on the dense model's real activations (errors in output LSBs)")
    for col in ("kernel", "sites", "values", "max |error|", "mean |error|", "derived bound (max)", "within bound",
                "saturated"):
        k_table.add_column(col, justify="right" if col != "kernel" else "left")
    for r in results["kernels"]:
        k_table.add_row(r["kernel"], str(r["sites"]), str(r["n"]), f"{r['max_lsb']:.3f}", f"{r['mean_lsb']:.4f}",
                        f"{r['bound_max_lsb']:.3f}", "yes" if r["within_bound"] else "NO", str(r["saturated"]))
    console.print(k_table)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    ok = all(r["within_bound"] for r in results["kernels"]) and all(
        abs(r["delta_points"]) <= 1.0 for r in results["rows"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
