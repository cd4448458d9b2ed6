"""Integer-only selection vs float for every pruning method, at trained operating points on MNIST (issue 15).

For the dense model and each method (EViT, DynamicViT, SPViT, AS-ViT, SaiT) at one trained operating
point of ``vit_mnist_patch4_28``, on ``--images`` MNIST test images (1,000: the whole split; fewer are spread
evenly over it, as it is sorted by class):

* accuracy of the float model, of the fake-quant model (:func:`tokensift.quant.fake.quantize_model`: every
  linear layer and the patch embedding on int8 codes; attention, LayerNorm, GELU and the selection itself
  stay float) and of the integer-only model (:class:`tokensift.quant.integer_model.IntegerViT`, its
  selection included);
* the fraction of per-token keep decisions where the integer model and the float model agree: at each
  stage, over the candidate patch tokens that entered it in both models (matched by original position),
  float run one image at a time (the per-image rule, no padding);
* the average number of tokens each stage keeps (the class token included), float and integer;
* the integer model's saturations per site over the run (:attr:`IntegerViT.counter`);
* with ``--rtl N`` (default 4): every stage's selection step on N of the images through the score combiner
  and the token selector in Verilator (:func:`tokensift.sim.real_images.simulate_stage`), bit for bit against
  the integer model, cycles against the blocks' formulas.

Trained models: the dense model is the pipeline's cached one (``tokensift train``'s recipe, 40 epochs);
each method is fine-tuned from it with :func:`tokensift.sw.pipeline.run_pipeline` (``--epochs`` epochs, the
dense model as teacher) and its checkpoint cached under ``build/integer_methods/`` so that reruns only
measure (``--retrain`` trains again). The integer models are calibrated on 400 training images spread evenly
over the training split (it is sorted by class too: its first 400 images are all zeros); SaiT's once, at
density 1.0, then moved to each run-time density with ``IntegerViT.set_keep_ratio`` (no rebuild).
A method whose integer stage does not exist yet is listed as such, with its float and fake-quant numbers.

    .venv/bin/python bench/integer_methods.py            # ~10 minutes on 2 busy CPU cores (cached models: less)
    .venv/bin/python bench/integer_methods.py --quick    # 3 training steps per method, 50 images: checks the script
    .venv/bin/python bench/integer_methods.py --methods asvit sait

Writes ``bench/integer_methods.json`` (not with ``--quick``) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from tokensift.quant.fake import quantize_model
from tokensift.quant.integer_model import IntegerViT
from tokensift.quant.stages import stage_module
from tokensift.quant.stages.agreement import decision_agreement, float_run
from tokensift.sw import create_model
from tokensift.sw.checkpoint import load_checkpoint
from tokensift.sw.data import load_mnist, spread_indices, spread_subset
from tokensift.sw.pipeline import PipelineConfig, run_pipeline

MODEL = "vit_mnist_patch4_28"
ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "integer_methods"
# (method, keep ratio of the trained operating point): the middle points of bench/sw_methods_results.py
POINTS = [("none", 1.0), ("evit", 0.7), ("dynamicvit", 0.75), ("spvit", 0.65), ("asvit", 0.65), ("sait", 0.85)]
SAIT_DENSITIES = (1.0, 0.93, 0.85)  # run-time densities of the one SaiT model
LABELS = {"none": "dense", "evit": "EViT", "dynamicvit": "DynamicViT", "spvit": "SPViT", "asvit": "AS-ViT",
          "sait": "SaiT"}
CALIB_IMAGES = 400
QUICK_STEPS = 3


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def trained_model(method: str, keep: float, *, epochs: int, quick: bool, retrain: bool):
    """The float model of one operating point: the cached dense model, or the method fine-tuned from it."""
    steps = QUICK_STEPS if quick else None
    if method == "none":
        r = run_pipeline(PipelineConfig(model=MODEL, method="none", epochs=40, max_steps=steps, progress=False))
        model = create_model(MODEL)
        load_checkpoint(model, r["dense_checkpoint"])
        return model.eval()
    out = CACHE / (f"{method}-{keep:g}-e{epochs}" + ("-quick" if quick else ""))
    path = out / f"{method}_keep{keep:g}.pth"
    if retrain or not path.is_file():
        t0 = time.time()
        r = run_pipeline(PipelineConfig(model=MODEL, method=method, keep_ratio=keep, epochs=epochs, out=out,
                                        max_steps=steps, progress=False))
        path = Path(r["checkpoint"])
        log(f"{method} {keep:g}: fine-tuned in {time.time() - t0:.0f} s -> {path}")
    model = create_model(MODEL, method=method, keep_ratio=keep)
    load_checkpoint(model, path)
    return model.eval()


def integer_support(model) -> str | None:
    """None when every stage of ``model`` has an integer form, else the reason it has not."""
    try:
        for _, sel in model.stage_selectors():
            stage_module(sel)
    except ValueError as e:
        return str(e)
    return None


def mean_kept(per_image: list[list[int]]) -> list[float]:
    """Average kept tokens per stage over the images (every image runs every stage)."""
    if not per_image or not per_image[0]:
        return []
    return [round(float(v), 3) for v in np.mean(np.array(per_image, dtype=np.float64), axis=0)]


def measure(method: str, keep: float, model, fq, int_model, unsupported: str | None, images, labels) -> dict:
    row: dict = {"method": method, "keep": keep}
    t0 = time.time()
    float_pred, float_dec = float_run(model, images)
    row["float_accuracy"] = float((float_pred == labels).mean())
    row["float_kept"] = mean_kept([[int(decs[s][1].sum()) for s in sorted(decs)] for decs in float_dec])
    with torch.no_grad():
        row["fake_quant_accuracy"] = float((fq(images).argmax(dim=-1).numpy() == labels).mean())
    if int_model is None:
        row["integer_missing"] = unsupported
        row["seconds"] = round(time.time() - t0, 1)
        return row
    int_model.counter.reset()
    t1 = time.time()
    int_pred = int_model.predict(images)
    row["integer_ms_per_image"] = round(1e3 * (time.time() - t1) / len(images), 2)
    row["integer_accuracy"] = float((int_pred == labels).mean())
    row["integer_kept"] = mean_kept([[int(r.keep.sum()) for r in recs] for recs in int_model.decisions])
    agree = decision_agreement(int_model.decisions, float_dec)
    row["decision_agreement"] = agree["fraction"]
    row["decision_agreement_per_stage"] = [a / t for a, t in agree["per_stage"].values()]
    row["prediction_agreement"] = float((int_pred == float_pred).mean())
    row["overflows"] = dict(sorted(int_model.counter.by_site.items()))
    row["seconds"] = round(time.time() - t0, 1)
    return row


def rtl_check(int_model, images, work: Path) -> dict:
    """Every stage's selection step on ``images`` through the score combiner and the selector in Verilator
    (:func:`tokensift.sim.real_images.simulate_stage`): hardware == reference == integer model, and the
    measured cycles against the blocks' formulas."""
    from tokensift.sim.real_images import capture_stage, simulate_stage

    out = {"images": len(images), "stages": [], "bit_exact": True, "cycles_match": True}
    for block, blk in enumerate(int_model.blocks):
        if blk.selector is None:
            continue
        cap = capture_stage(int_model, images, block)
        if any(r is None for r in cap.records):  # a stage that selects nothing at this setting (SaiT at 1.0)
            continue
        r = simulate_stage(int_model, cap, lanes=16, work_dir=work / f"block{block}")
        cycles_ok = len(r["selector"]["cycles"]) == len(images) and r["selector"]["cycles"] == r["selector"][
            "expected_cycles"]
        if "combiner" in r:
            c = r["combiner"]
            cycles_ok = (cycles_ok and len(c["cycles"]) == len(images) - 1  # one period per frame but the last
                         and c["cycles"] == c["expected_cycles"][:len(c["cycles"])])
        out["stages"].append({"block": block, "bit_exact": r["bit_exact"], "cycles_match": cycles_ok,
                              "reference_mismatches": r["reference_mismatches"],
                              "selector_cycles": r["selector"]["cycles"],
                              "combiner_cycles": r.get("combiner", {}).get("cycles")})
        out["bit_exact"] = out["bit_exact"] and r["bit_exact"]
        out["cycles_match"] = out["cycles_match"] and cycles_ok
    return out


def run_method(method: str, keep: float, args, calib, images, labels) -> list[dict]:
    model = trained_model(method, keep, epochs=args.epochs, quick=args.quick, retrain=args.retrain)
    densities = SAIT_DENSITIES if method == "sait" else (keep,)
    if method == "sait":
        model.set_keep_ratio(1.0)  # calibrate once at the dense setting: one integer model for every density
    fq = quantize_model(model, calib).eval()
    unsupported = integer_support(model)
    int_model = None if unsupported else IntegerViT.from_float(model, calib)
    rows = []
    for density in densities:
        if method == "sait":
            for m in (model, fq) + ((int_model,) if int_model is not None else ()):
                m.set_keep_ratio(density)
        row = measure(method, density, model, fq, int_model, unsupported, images, labels)
        if int_model is not None and args.rtl and method != "none":
            pick = np.linspace(0, len(images) - 1, args.rtl).round().astype(int)
            row["rtl"] = rtl_check(int_model, images[pick], ROOT / "build" / "integer_methods" / "rtl" /
                                   f"{method}-{density:g}")
        if method == "sait":
            row["trained_keep"] = keep
        rows.append(row)
        acc = "missing" if int_model is None else f"{row['integer_accuracy']:.4f}"
        log(f"{method} {density:g}: float {row['float_accuracy']:.4f} fake-quant {row['fake_quant_accuracy']:.4f} "
            f"integer {acc} ({row['seconds']} s)")
    return rows


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _rtl(rtl: dict | None) -> str:
    if not rtl or not rtl["stages"]:
        return "-"
    verdict = "bit-exact" if rtl["bit_exact"] else "MISMATCH"
    cycles = "cycles = formula" if rtl["cycles_match"] else "cycles differ"
    return f"{verdict}, {cycles} ({len(rtl['stages'])} stages x {rtl['images']} images)"


def markdown(rows: list[dict]) -> str:
    lines = ["| method | setting | float % | fake-quant % | integer % | int - float (pts) | decisions agreeing % "
             "| kept tokens per stage, float | integer | saturations | RTL selection steps (Verilator) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    setting = {"none": "-", "evit": "keep {:g}", "dynamicvit": "rho {:g}", "spvit": "budget {:g}",
               "asvit": "rho {:g}", "sait": "density {:g}"}
    for r in rows:
        fk = " / ".join(f"{v:.1f}" for v in r["float_kept"]) or "-"
        if "integer_missing" in r:
            lines.append(f"| {LABELS[r['method']]} | {setting[r['method']].format(r['keep'])} | "
                         f"{_pct(r['float_accuracy'])} | {_pct(r['fake_quant_accuracy'])} | no integer stage in "
                         f"this branch | - | - | {fk} | - | - | - |")
            continue
        ik = " / ".join(f"{v:.1f}" for v in r["integer_kept"]) or "-"
        sat = sum(r["overflows"].values())
        lines.append(f"| {LABELS[r['method']]} | {setting[r['method']].format(r['keep'])} | "
                     f"{_pct(r['float_accuracy'])} | {_pct(r['fake_quant_accuracy'])} | "
                     f"{_pct(r['integer_accuracy'])} | "
                     f"{100 * (r['integer_accuracy'] - r['float_accuracy']):+.1f} | "
                     f"{_pct(r['decision_agreement'])} | {fk} | {ik} | {sat} | {_rtl(r.get('rtl'))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_STEPS} training steps per method and 50 test images (checks the script)")
    parser.add_argument("--methods", nargs="+", choices=[m for m, _ in POINTS], default=None,
                        help="only these methods (default: all)")
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs per method (default: 2)")
    parser.add_argument("--images", type=int, default=None,
                        help="test images, evenly spread over the split (default: 1000, 50 with --quick)")
    parser.add_argument("--rtl", type=int, default=4,
                        help="images whose selection steps also run through the score combiner and the selector "
                             "in Verilator, per method (default: 4; 0: none)")
    parser.add_argument("--retrain", action="store_true", help="fine-tune again even when a checkpoint is cached")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "integer_methods.json",
                        help="the JSON written (default: bench/integer_methods.json; not with --quick)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, not {args.epochs}")
    train, test = load_mnist()
    n_images = args.images if args.images is not None else (50 if args.quick else len(test))
    if not 1 <= n_images <= len(test):
        parser.error(f"--images must be between 1 and {len(test)}, not {n_images}")
    torch.set_num_threads(args.threads)
    t0 = time.time()
    calib = [im for im, _ in DataLoader(spread_subset(train, CALIB_IMAGES), batch_size=100)]
    picks = spread_indices(len(test), n_images)
    images = torch.stack([test[i][0] for i in picks])
    labels = np.array([test[i][1] for i in picks])
    methods = args.methods or [m for m, _ in POINTS]
    rows = []
    for method, keep in POINTS:
        if method in methods:
            rows += run_method(method, keep, args, calib, images, labels)
    table = markdown(rows)
    if not args.quick:
        payload = {"model": MODEL, "test_images": n_images, "calibration_images": CALIB_IMAGES,
                   "fine_tune_epochs": args.epochs, "command": "python bench/integer_methods.py "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
                   "torch": torch.__version__, "machine": platform.machine(), "threads": args.threads,
                   "seconds": round(time.time() - t0, 1), "rows": rows}
        args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
