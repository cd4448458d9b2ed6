"""The end-to-end demo (``tokensift demo`` / ``make demo``) on the bundled MNIST data.

1. **dense model**: train the small ViT (``vit_mnist_patch4_28``) or reuse the cached one
   (:func:`tokensift.sw.pipeline.run_pipeline`);
2. **co-optimize** for the device: the grid over the hardware axes x the method's keep ratios
   (:func:`tokensift.coopt.search.co_optimize`); the default target asks for ``speedup`` x the fastest dense
   design that fits the device, so pruning is needed whatever the resource model says;
3. **fine-tune with the latency budget** (:class:`tokensift.coopt.latency_train.LatencyPlan`) on the chosen
   hardware: EViT at the chosen per-stage ratios; DynamicViT and SPViT (top-k) at the largest schedule that
   meets the target; AS-ViT (learned thresholds) and SaiT (run-time density) at a budget whose per-image
   latency, measured image by image, meets it on average;
4. **quantize**: the integer-only model (:class:`tokensift.quant.integer_model.IntegerViT`), int8 accuracy;
5. **generate** the Verilog of the chosen attention core (with the integer model's scales), the selector and,
   for the methods that weigh heads (AS-ViT, SPViT), the score combiner, each for the model's first stage;
6. **simulate** real test images through Verilator (:mod:`tokensift.sim.real_images`): the attention core
   whose outputs the first stage reads, and that stage's selection step (score combiner, selector), each
   bit-exact against the integer reference, which is checked against the integer model's own decisions;
7. **the whole accelerator** (:mod:`tokensift.hw.accel`): compile the integer model into a DRAM image, generate
   the whole-model design in the shape step 2 planned on the design's own models (DynamicViT:
   :func:`~tokensift.coopt.accel_sizing.plan_accelerator`) or sized now for the device
   (:func:`~tokensift.coopt.accel_sizing.size_accelerator`), and run the same images through its Verilator model from DRAM under the model's own
   registers and then, on the same design, under a second setting (the dense method, or SaiT at density 1):
   bit-exact logits, Verilator cycles next to the cost model's, MAC utilization, and the measured pruned vs
   dense cycle ratio next to the MAC ratio;
8. print **one table** and write ``summary.json`` and the co-optimization report.

The default method is DynamicViT: its keep ratio fixes the token counts, so the latency target is met by
construction. ``--method`` runs any of the five.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["DemoConfig", "run_demo", "render_table", "RES_BITS", "DEMO_METHODS"]

#: width of the integer model's residual stream (and so of the tokens its selector moves)
RES_BITS = 16
#: the methods the demo runs end to end (the integer model, the selection step in RTL)
DEMO_METHODS = ("dynamicvit", "spvit", "asvit", "sait", "evit")


@dataclass
class DemoConfig:
    out: Path = Path("out/demo")
    device: str = "pynq-z2"
    model: str = "vit_mnist_patch4_28"
    method: str = "dynamicvit"
    target_latency_ms: float | None = None
    speedup: float = 1.5            # default target: fastest dense design that fits / speedup
    dense_epochs: int = 12
    finetune_epochs: int = 2
    max_steps: int | None = None    # per training stage (quick runs)
    keep_step: float = 0.05
    sim_images: int = 4
    eval_images: int = 1000
    calib_batches: int = 4
    synth: bool = False
    accelerator: bool = True        # step 7: the whole design in Verilator (minutes to build)
    accel_images: int = 2           # images through the whole design, under each of its two settings
    seed: int = 0
    progress: bool = True
    cache_dir: Path | None = None
    timings: dict = field(default_factory=dict)

    @classmethod
    def quick(cls, **kw) -> DemoConfig:
        """A couple of training steps, two simulated images, a coarse keep grid (for tests)."""
        base = {"dense_epochs": 1, "finetune_epochs": 1, "max_steps": 2, "keep_step": 0.1, "sim_images": 2,
                "eval_images": 100, "accel_images": 1}
        return cls(**{**base, **kw})


class _Steps:
    def __init__(self, console, total: int):
        self.console, self.total, self.n, self.t0 = console, total, 0, time.perf_counter()

    def __call__(self, text: str):
        self.n += 1
        self.console.print(f"[bold cyan][{self.n}/{self.total}][/] {text} "
                           f"[dim](+{time.perf_counter() - self.t0:.0f} s)[/]")


def _cores(shape: dict) -> str:
    """``"N x "`` before the attention lanes of a design with N attention core copies (nothing for one)."""
    cores = shape.get("attention_cores", 1)
    return f"{cores} x " if cores != 1 else ""


def _accuracy(model, dataset) -> float:
    from tokensift.sw.train import evaluate

    return evaluate(model, dataset)


def run_demo(cfg: DemoConfig) -> dict:
    """Run the demo; return the summary (also written to ``cfg.out / "summary.json"``)."""
    import torch
    from rich.console import Console

    from tokensift.coopt.accel_sizing import PLANNABLE_METHODS, plan_accelerator
    from tokensift.coopt.accuracy import MeasuredAccuracy, set_keep_point
    from tokensift.coopt.evaluate import CostEvaluator
    from tokensift.coopt.latency_train import LatencyPlan
    from tokensift.coopt.report import write_report
    from tokensift.coopt.search import co_optimize
    from tokensift.coopt.space import HwChoice, default_keep_space, keep_kind
    from tokensift.devices import get_device
    from tokensift.hw.cost.layer import HwConfig, ModelCost
    from tokensift.sw.checkpoint import load_checkpoint
    from tokensift.sw.data import load_mnist, spread_indices, spread_subset
    from tokensift.sw.pipeline import PipelineConfig, run_pipeline
    from tokensift.sw.registry import create_model

    if cfg.method not in DEMO_METHODS:
        raise ValueError(f"the demo runs one of {', '.join(DEMO_METHODS)}, not {cfg.method!r}")
    if not cfg.speedup > 0:
        raise ValueError(f"speedup must be positive, not {cfg.speedup}")
    t_start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    console = Console(file=sys.stderr)
    step = _Steps(console, 9 if cfg.accelerator else 8)
    device = get_device(cfg.device)
    torch.manual_seed(cfg.seed)
    _, test = load_mnist()
    # evenly strided subsets: the test split is ordered by digit, so its first images are all zeros
    eval_set = torch.utils.data.Subset(test, spread_indices(len(test), cfg.eval_images))
    timings: dict = {}

    # 1. dense model --------------------------------------------------------------------------------------
    step(f"dense {cfg.model} on MNIST ({cfg.dense_epochs} epochs, cached after the first run)")
    t = time.perf_counter()
    dense_cfg = PipelineConfig(model=cfg.model, method="none", epochs=cfg.dense_epochs, seed=cfg.seed,
                               max_steps=cfg.max_steps, progress=cfg.progress, cache_dir=cfg.cache_dir,
                               out=out / "dense")
    dense_res = run_pipeline(dense_cfg)
    dense_ckpt = dense_res["dense_checkpoint"]
    timings["dense_s"] = time.perf_counter() - t

    # 2. co-optimization ------------------------------------------------------------------------------------
    step(f"co-optimize hardware x keep ratios for {device.name}")
    t = time.perf_counter()
    # the integer model's residual stream is int16, so its selector moves int16 tokens: cost that selector
    n_stages = len(create_model(cfg.model, method=cfg.method).stage_selectors())
    ev = CostEvaluator(cfg.model, method=cfg.method, device=device, selector_feature_bits=RES_BITS,
                       keep_space=default_keep_space(cfg.method, n_stages, low=0.3, step=cfg.keep_step))
    acc_plan = None
    if cfg.accelerator and cfg.method in PLANNABLE_METHODS:
        # the keep ratio and the design come from the generated accelerator's own models (exact against
        # Verilator): the design chosen here is the one generated and simulated in step 7
        acc_plan = plan_accelerator(cfg.model, device, method=cfg.method, keep_grid=ev.keep_space.values,
                                    target_latency_ms=cfg.target_latency_ms,
                                    speedup=cfg.speedup if cfg.target_latency_ms is None else None)
        if acc_plan.chosen is None:
            raise ValueError(acc_plan.message)
        target = acc_plan.target_latency_ms
        target_note = f"{acc_plan.target_note}, the whole accelerator's models" if cfg.target_latency_ms is None \
            else "given"
    elif cfg.target_latency_ms is None:
        # the dense model has no predictors: keep 1.0 would still run them, so the dense cycles are the
        # model's without its selectors, on every hardware point that fits
        ones = tuple(1.0 for _ in ev.sels)
        fits = np.flatnonzero(ev.grid(points=[ones]).fits)
        hs = ev.hw_space
        fastest_dense = min((ev.dense_cycles(int(h)) / (hs.clock_mhz[hs.unravel(int(h))[3]] * 1e3) for h in fits),
                            default=None)
        if fastest_dense is None:
            raise ValueError(f"no hardware configuration of the space fits {device.name}")
        target = fastest_dense / cfg.speedup
        target_note = f"fastest dense design that fits ({fastest_dense:.4g} ms) / {cfg.speedup:g}"
    else:
        target, target_note = float(cfg.target_latency_ms), "given"
    result = co_optimize(cfg.model, method=cfg.method, device=device, target_latency_ms=target,
                         progress=cfg.progress, evaluator=ev)
    if not result.feasible:
        raise ValueError(result.summary["message"])
    chosen = result.chosen
    hw = chosen["hw"]
    keep = tuple(chosen["keep"]["point"]) if acc_plan is None else (acc_plan.chosen.keep_ratio,)
    # measured accuracy (dense weights, before fine-tuning) at the latency-accuracy frontier, for the plot
    dense_pruned = create_model(cfg.model, method=cfg.method)
    load_checkpoint(dense_pruned, dense_ckpt, strict=False)
    try:
        oracle = MeasuredAccuracy(dense_pruned, eval_set, images=len(eval_set))
    except ValueError:  # AS-ViT: its learned thresholds, not a keep point, decide what it keeps
        oracle = None
    # ... at 10 points spread along the latency-vs-retained-FLOPs frontier of the designs that fit
    from tokensift.coopt.pareto import front_2d

    fit_idx = np.flatnonzero(result.fits)
    frontier = fit_idx[front_2d(result.latency_ms[fit_idx], -result.accuracy[fit_idx])]
    frontier = frontier[np.argsort(result.latency_ms[frontier], kind="stable")]
    pick = frontier[np.unique(np.linspace(0, len(frontier) - 1, min(10, len(frontier))).round().astype(int))]
    points = ev.keep_space.points
    measured = [] if oracle is None else [(float(result.latency_ms[i]), oracle.at(points[i % len(points)]))
                                          for i in pick]
    report_dir = out / "coopt"
    write_report(result, report_dir, measured=measured, extra_sections=[
        "Red points: top-1 accuracy measured on MNIST test images at designs of the latency-FLOPs frontier, "
        "with the dense weights (before fine-tuning)." if oracle is not None else
        f"No measured points: {cfg.method}'s learned thresholds, not a keep point, decide what it keeps, so "
        "the frontier's accuracy is the retained-FLOPs proxy only."])
    (report_dir / "coopt.json").write_text(json.dumps(result.summary, indent=1, default=_json))
    timings["coopt_s"] = time.perf_counter() - t

    # 3. fine-tuning with the latency budget ---------------------------------------------------------------
    kind = keep_kind(cfg.method)
    step(f"fine-tune {cfg.method} with the latency budget ({target:.4g} ms)"
         + (f" at keep {list(keep)}" if kind == "per-stage" else "")
         + ("" if acc_plan is None else f" at keep {keep[0]:g}, the whole accelerator's choice"))
    t = time.perf_counter()
    hw_cfg = HwConfig(lanes=hw["lanes"], heads_parallel=hw["heads_parallel"], linear_lanes=hw["linear_lanes"],
                      selector_lanes=hw["selector_lanes"], softmax=hw["softmax"], linear_rows=hw["linear_rows"],
                      weight_rate=hw["weight_rate"])
    # EViT trains at the chosen per-stage ratios; the other methods' plans find their own knob on this hardware
    # (the largest static schedule within the target, or a budget met on average by per-image counts)
    plan = LatencyPlan(device=device.name, hw=hw_cfg, target_ms=target, clock_mhz=hw["clock_mhz"],
                       stage_keep=keep if kind == "per-stage" else None,
                       keep_ratio=None if acc_plan is None else keep[0])
    ft_cfg = PipelineConfig(model=cfg.model, method=cfg.method, keep_ratio=max(keep), epochs=cfg.finetune_epochs,
                            seed=cfg.seed, max_steps=cfg.max_steps, progress=cfg.progress, cache_dir=cfg.cache_dir,
                            dense_checkpoint=Path(dense_ckpt), out=out / "finetune", budget_plan=plan)
    ft = run_pipeline(ft_cfg)
    planned = ft["latency"]["keep"]
    keep = tuple(float(r) for r in (planned if kind == "per-stage" else [planned]))
    model = create_model(cfg.model, method=cfg.method, keep_ratio=max(keep))
    load_checkpoint(model, ft["checkpoint"], strict=True)
    set_keep_point(model, cfg.method, keep)
    model.eval()
    timings["finetune_s"] = time.perf_counter() - t
    cost = ModelCost(model, hw_cfg)
    # the whole image on the generated hardware (int16-token selector), at the schedule the model runs
    point = ev.point(ev.hw_space.index_of(HwChoice(**hw)), keep)
    model_cycles = point["cycles"]
    adaptive = kind == "adaptive"
    if adaptive:  # per-image token counts: the latency is the cost model's, image by image, on the test split
        model_cycles = round(ft["latency"]["latency_ms"] * hw["clock_mhz"] * 1e3)

    # 4. quantization ---------------------------------------------------------------------------------------
    step("quantize to the integer-only model (int8 weights and activations, int16 residual)")
    t = time.perf_counter()
    from tokensift.quant.integer_model import IntegerViT
    from tokensift.quant.softmax import SoftmaxParams

    train, _ = load_mnist()
    calib = torch.utils.data.DataLoader(spread_subset(train, 64 * cfg.calib_batches), batch_size=64)
    iv = IntegerViT.from_float(model, calib, num_batches=cfg.calib_batches, res_bits=RES_BITS,
                               softmax=SoftmaxParams(variant=hw["softmax"]))
    acc_float_dense = _accuracy(_dense(cfg, dense_ckpt), eval_set)
    acc_float = _accuracy(model, eval_set)
    acc_int8 = iv.evaluate(eval_set)
    timings["quantize_s"] = time.perf_counter() - t

    # 5. Verilog -----------------------------------------------------------------------------------------------
    step("generate the Verilog of the chosen attention core and the first stage's selection blocks")
    from dataclasses import asdict as _asdict

    from tokensift.commands.block_score_combiner import _component as combiner_component
    from tokensift.hw.attention.core import Attention
    from tokensift.hw.common.manifest import write_outputs
    from tokensift.hw.selector.core import Selector
    from tokensift.sim.real_images import (
        attention_hw_params,
        capture_attention,
        capture_stage,
        simulate_attention,
        simulate_stage,
        step_combiner_params,
        step_selector_params,
    )

    n_sim = min(cfg.sim_images, len(test))
    images = torch.stack([test[i][0] for i in spread_indices(len(test), n_sim)])
    stage_block = next(i for i, blk in enumerate(iv.blocks) if blk.selector is not None)
    # the attention whose outputs the stage reads: its own block's (a stage between attention and MLP) or the
    # previous block's (a stage before its block, on the tokens and class rows the previous block left)
    block = stage_block if iv.blocks[stage_block].selector.site == "mid" else max(stage_block - 1, 0)
    stage_cap = capture_stage(iv, images, stage_block)
    ap = attention_hw_params(iv, block, lanes=hw["lanes"], heads_parallel=hw["heads_parallel"])
    sp = step_selector_params(iv, stage_cap, lanes=hw["selector_lanes"])
    vdir = out / "verilog"
    verilog = {
        "attention": write_outputs(Attention(params=ap), toplevel="tokensift_attention", block="attention",
                                   parameters=ap.to_dict(), out_dir=vdir / "attention")["files"],
        "selector": write_outputs(Selector(**_asdict(sp)), toplevel="tokensift_selector", block="selector",
                                  parameters=_asdict(sp), out_dir=vdir / "selector")["files"],
    }
    cp = None
    if stage_cap.steps[0].combiner is not None:
        cp = step_combiner_params(iv, stage_cap, lanes=hw["selector_lanes"])
        verilog["score_combiner"] = write_outputs(combiner_component(cp), toplevel="tokensift_score_combiner",
                                                  block="score_combiner", parameters=cp,
                                                  out_dir=vdir / "score_combiner")["files"]
    synth = None
    if cfg.synth:
        synth = _synthesize(ap, sp, cp, device.family)

    # 6. cycle-accurate simulation of real images ---------------------------------------------------------
    step(f"simulate block {block}'s attention and block {stage_block}'s {cfg.method} selection step on {n_sim} "
         f"real MNIST test images in Verilator")
    t = time.perf_counter()
    att_cap = capture_attention(iv, images, block)
    sim = simulate_attention(iv, att_cap, lanes=hw["lanes"], heads_parallel=hw["heads_parallel"],
                             work_dir=out / "sim")
    sim["stage"] = simulate_stage(iv, stage_cap, lanes=hw["selector_lanes"], work_dir=out / "sim")
    timings["simulate_s"] = time.perf_counter() - t

    # 7. the whole accelerator -------------------------------------------------------------------------------
    t = time.perf_counter()
    accel = None
    if cfg.accelerator:
        accel = _whole_accelerator(iv, hw, images[:cfg.accel_images], cfg.method, vdir / "accelerator", step=step,
                                   device=device, target_ms=target, model=cfg.model, plan=acc_plan)
    else:
        step("whole accelerator: skipped (--no-accelerator)")
    timings["accelerator_s"] = time.perf_counter() - t

    # 8. the table ----------------------------------------------------------------------------------------
    step("summary")
    n_block = int(att_cap.q.shape[2])
    model_attn = cost.attention_cycles(n_block)
    latency_ms = model_cycles / (hw["clock_mhz"] * 1e3)
    block_meets = latency_ms <= target * (1 + 1e-12)
    if acc_plan is not None and accel is not None:  # the verdict is the generated design's, measured
        meets, meets_by = accel["meets_target"], "the whole accelerator in Verilator"
    else:
        meets, meets_by = block_meets, "the block model"
    summary = {
        "device": device.as_dict(),
        "model": cfg.model,
        "method": cfg.method,
        "target_latency_ms": target,
        "target": target_note,
        "accuracy": {"float_dense": acc_float_dense, "float_pruned": acc_float, "int8_pruned": acc_int8,
                     "images": len(eval_set)},
        "keep": {"kind": kind, "point": list(keep), "tokens": point["keep"]["tokens"],
                 "tokens_note": ("the expected schedule; each image keeps its own count" if adaptive
                                 else "every image")},
        "hw": hw,
        "clock": chosen["clock"],
        "cycles": model_cycles,
        "cycles_note": (f"cost model, mean over {ft['latency']['latency_images']} test images' own token counts"
                        if adaptive else "cost model"),
        "latency_ms": latency_ms,
        "fps": 1e3 / latency_ms,
        "meets_target": meets,
        "meets_target_by": meets_by,
        "block_model_meets_target": block_meets,
        "keep_chosen_by": "the block model" if acc_plan is None else "the whole accelerator's models",
        "accelerator_plan": None if acc_plan is None else acc_plan.as_dict(),
        "latency_report": ft.get("latency"),
        "resources": chosen["resources"],
        "utilization": chosen["utilization"],
        "resource_model": chosen["resource_model"],
        "units": chosen["units"],
        "synthesized": synth,
        "coopt": {**{k: result.summary[k] for k in ("search", "pareto_size", "message")},
                  "frontier_accuracy": [{"latency_ms": lat, "accuracy_dense_weights": a} for lat, a in measured]},
        "simulation": {**sim, "stage_block": stage_block, "model_attention_cycles": model_attn},
        "accelerator": accel,
        "bit_exact": bool(sim["attention"]["bit_exact"] and sim["stage"]["bit_exact"]
                          and (accel is None or accel["bit_exact"])),
        "verilog": verilog,
        "dense_checkpoint": dense_ckpt,
        "checkpoint": ft["checkpoint"],
        "report": str(report_dir / "report.md"),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "timings"},
    }
    timings["total_s"] = time.perf_counter() - t_start
    summary["timings"] = timings
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=_json))
    (out / "table.txt").write_text(render_table(summary) + "\n")
    return summary


def _whole_accelerator(iv, hw: dict, images, method: str, verilog_dir: Path, *, step, device, target_ms: float,
                       model: str, plan=None) -> dict:
    """Generate the whole accelerator and run ``images`` through its Verilator model under the model's
    registers and under a second setting on the same design. The shape is ``plan``'s (the keep ratio and
    design :func:`~tokensift.coopt.accel_sizing.plan_accelerator` chose, its cycles predicted before any
    training), else sized now for ``device`` with the design's own models (:func:`size_accelerator`: every
    shape's resources and the exact cycles of these very images). The Verilator build goes to the
    content-addressed build cache (``build/sim``): a second demo reuses it."""
    from tokensift.coopt.accel_sizing import project_for, size_accelerator
    from tokensift.hw.cost.clock import accelerator_clock
    from tokensift.quant.accel.registers import MASS_ONE

    note = ""
    if method == "spvit":  # SPViT's selection (per-head predictors, package token) has no engine yet
        note = "SPViT's selection stage has no engine in the design yet: only the dense setting runs"
    if plan is not None:
        sizing = plan.chosen.sizing
        step(f"the planned accelerator for {device.name} (keep {plan.chosen.keep_ratio:g}, chosen in step 2 by "
             f"its own models)")
    else:
        step(f"size the whole accelerator for {device.name}: every shape's resources, the exact cycles of "
             f"{len(images)} images")
        sizing = size_accelerator(iv, device, images, clock_mhz=hw["clock_mhz"], target_latency_ms=target_ms,
                                  registers=(lambda p: p.registers(method="dense")) if note else None)
        if sizing.chosen is None:
            raise ValueError(sizing.message)
    project = project_for(iv, sizing.chosen.shape)
    own = project.registers()
    predicted = list(sizing.chosen.cycles)
    if plan is not None:
        if tuple(own.keep[:len(plan.chosen.keep)]) != tuple(plan.chosen.keep):
            raise RuntimeError(f"the trained model keeps {list(own.keep)} tokens per stage, not the planned "
                               f"{list(plan.chosen.keep)}")
        # top-k at fixed counts: every image takes the planned image's cycles
        predicted = [predicted[0]] * len(images)
    files = project.generate(verilog_dir)["files"]
    if method == "sait":
        second, second_note = own.replace(density=MASS_ONE), "SaiT at density 1.0"
    else:
        second, second_note = own.replace(method="dense"), "METHOD=dense (no selection)"
    sets = [second] if note else [own, second]
    cfg = project.config
    clock = accelerator_clock(device, sizing.chosen.shape, model=model)
    step(f"whole accelerator ({cfg.banks} x {cfg.gemm_cols} GEMM, {cfg.lanes}-lane attention, "
         f"{cfg.axi.data_bytes}-byte AXI): {len(images)} real test images from DRAM in Verilator, under "
         f"{'the model' + chr(39) + 's registers and ' if len(sets) == 2 else ''}{second_note}")
    m = project.measure(images, register_sets=sets, latency=sizing.dram_latency, clock_mhz=clock.mhz)
    runs = {"own": m["sets"][0], "second": m["sets"][-1]} if len(sets) == 2 else {"second": m["sets"][0]}
    out = {"shape": {**cfg.as_dict(), "envelope": None},
           "sizing": sizing.as_dict(),
           "shape_note": ("planned with the keep ratio by the accelerator's own models (step 2): the smallest shape "
                          "that fits the device and meets the target; its cycles are a random-weight image's at the "
                          "same token counts" if plan is not None else
                          "sized by the accelerator's own models: the smallest shape that fits the device and "
                          "meets the target, else the fastest that fits; its cycles are the simulated images' "),
           "predicted_cycles": predicted,
           "verilog": files, "bit_exact": m["bit_exact"], "peak_macs_per_cycle": m["peak_macs_per_cycle"],
           "clock_mhz": m["clock_mhz"], "clock_source": clock.note, "clock": clock.as_dict(),
           "dram_latency": m["dram_latency"], "second_setting": second_note, "note": note, **runs}
    first = runs["second" if note else "own"]
    out["predicted_equals_measured"] = first["cycles"] == predicted
    out["latency_ms"] = max(first["latency_ms"])
    out["meets_target"] = bool(out["latency_ms"] <= target_ms * (1 + 1e-12))
    if len(sets) == 2:
        own_c, dense_c = sum(runs["own"]["cycles"]), sum(runs["second"]["cycles"])
        own_m, dense_m = sum(runs["own"]["macs"]), sum(runs["second"]["macs"])
        out["measured_speedup"] = dense_c / own_c
        out["mac_ratio"] = dense_m / own_m
        out["fraction_of_ideal"] = (dense_c / own_c) / (dense_m / own_m)
    return out


def _dense(cfg: DemoConfig, ckpt):
    from tokensift.sw.checkpoint import load_checkpoint
    from tokensift.sw.registry import create_model

    m = create_model(cfg.model)
    load_checkpoint(m, ckpt, strict=True)
    return m.eval()


def _synthesize(ap, sp, cp, family: str) -> dict:
    from dataclasses import asdict

    from tokensift.commands.block_score_combiner import _component as combiner_component
    from tokensift.hw.attention.core import Attention
    from tokensift.hw.cost.synth import synthesize
    from tokensift.hw.selector.core import Selector

    out = {}
    blocks = [("attention", Attention(params=ap)), ("selector", Selector(**asdict(sp)))]
    if cp is not None:
        blocks.append(("score_combiner", combiner_component(cp)))
    for name, comp in blocks:
        r = synthesize(comp, family=family, top=f"tokensift_{name}")
        out[name] = {k: r[k] for k in ("dsp", "bram18", "bram36", "ebr", "lut", "ff") if k in r}
    return out


def _cycle_list(cycles) -> str:
    """Cycles per frame: one number when every frame took the same."""
    cycles = list(cycles or [])
    if not cycles:
        return "not measured (a period needs two frames)"
    if len(set(cycles)) == 1:
        return f"{cycles[0]:,}"
    return ", ".join(f"{c:,}" for c in cycles)


def _json(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def render_table(s: dict) -> str:
    """The demo's one table, as text."""
    acc = s["accuracy"]
    sim = s["simulation"]
    hw = s["hw"]
    rows = [
        ("device", f"{s['device']['name']} ({s['device']['part']})"),
        ("clock", f"{hw['clock_mhz']:g} MHz, {s['clock']['note']}"),
        ("target", f"{s['target_latency_ms']:.4g} ms per image ({s['target']})"),
        ("accuracy float, dense", f"{100 * acc['float_dense']:.2f}% ({acc['images']} MNIST test images)"),
        ("accuracy float, pruned", f"{100 * acc['float_pruned']:.2f}%"),
        ("accuracy int8, pruned", f"{100 * acc['int8_pruned']:.2f}% (integer-only model)"),
        ("method", s["method"]),
        ("keep ratios per stage" if s["keep"]["kind"] == "per-stage" else "keep ratio (rho)",
         ", ".join(f"{r:.4g}" for r in s["keep"]["point"]) + f" (chosen by {s.get('keep_chosen_by', 'the block model')}"
         + (f": {s['accelerator_plan']['message']})" if s.get("accelerator_plan") else ")")),
        ("tokens per layer", ", ".join(str(n) for n in s["keep"]["tokens"])
         + ("" if s["keep"]["kind"] != "adaptive" else f" ({s['keep']['tokens_note']})")),
        ("hardware, block model", f"attention {hw['lanes']} lanes x {hw['heads_parallel']} cores ({hw['softmax']}), linear "
                     f"engine {hw['linear_rows']} x {hw['linear_lanes'] // hw['linear_rows']} MACs (weights "
                     f"{hw['weight_rate']} B/cycle), selector {hw['selector_lanes']} lanes"),
        ("cycles per image, block model", f"{s['cycles']:,} ({s['cycles_note']}: the units overlapped; the "
                                          f"generated design's are below)"),
        ("latency, block model", f"{s['latency_ms']:.4g} ms ({s['fps']:.4g} fps): "
                    f"{'meets' if s.get('block_model_meets_target', s['meets_target']) else 'misses'} the target"),
        (f"block {sim['block']} attention, simulated", f"{sim['attention']['cycles'][0]:,} cycles per image "
                                                         f"(cost model {sim['model_attention_cycles']:,})"),
    ]
    stage = sim["stage"]
    frames = sim["attention"]["frames"] + stage["images"]
    if "combiner" in stage:
        c = stage["combiner"]
        rows.append((f"block {sim['stage_block']} score combiner, simulated",
                     f"{_cycle_list(c['cycles'])} cycles per frame (formula {_cycle_list(c['expected_cycles'])})"))
        frames += stage["images"]
    sel = stage["selector"]
    rows.append((f"block {sim['stage_block']} selector, simulated",
                 f"{_cycle_list(sel['cycles'])} cycles per frame (formula {_cycle_list(sel['expected_cycles'])})"))
    acc_hw = s["accelerator"] or {}
    shape = acc_hw.get("shape")
    rows.append(("whole accelerator", "not simulated (--no-accelerator)") if not acc_hw else (
        "whole accelerator", f"{shape['banks']} x {shape['gemm_cols']} GEMM"
                             f"{' (two products per DSP48)' if shape.get('pack_pairs') else ''} + "
                             f"{_cores(shape)}{shape['lanes']}-lane "
                                      f"attention ({acc_hw['peak_macs_per_cycle']} MACs/cycle), "
                                      f"{shape['axi']['data_bytes']}-byte AXI, DRAM latency "
                                      f"{acc_hw['dram_latency']}"))
    if acc_hw:
        sz, chosen = acc_hw["sizing"], acc_hw["sizing"]["chosen"]
        used = ", ".join(f"{k.upper()} {chosen['resources'][k]:,.0f} ({100 * u:.0f}%)"
                         for k, u in chosen["utilization"].items() if k in ("dsp", "bram36", "ebr", "lut"))
        rows.append(("  sized", f"{sz['fit']} of {sz['shapes']} shapes fit, {sz['meet_target']} meet the target: "
                                f"{sz['message']}; {used}"))
        rows.append(("  predicted cycles", f"{_cycle_list(acc_hw['predicted_cycles'])} "
                                           f"({'= Verilator' if acc_hw['predicted_equals_measured'] else '!= Verilator'})"))
    for key, label in (("own", f"{s['method']} registers"), ("second", acc_hw.get("second_setting"))):
        if key not in acc_hw:
            continue
        r = acc_hw[key]
        rows.append((f"  {label}", f"{_cycle_list(r['cycles'])} cycles per image in Verilator (cost model "
                                   f"{'equal' if r['cycles_equal_model'] else _cycle_list(r['expected_cycles'])}),"
                                   f" MAC utilization {100 * sum(r['mac_utilization']) / len(r['cycles']):.1f}%, "
                                   f"{'bit-exact' if r['bit_exact'] else 'NOT bit-exact'}, predictions "
                                   f"{', '.join(map(str, r['predictions']))}"))
    if "measured_speedup" in acc_hw:
        rows.append(("  pruned vs dense, measured", f"{acc_hw['measured_speedup']:.3f}x cycles vs "
                                                    f"{acc_hw['mac_ratio']:.3f}x MACs = "
                                                    f"{acc_hw['fraction_of_ideal']:.2f} of the ideal ratio"))
    if acc_hw.get("note"):
        rows.append(("  note", acc_hw["note"]))
    own = acc_hw.get("own", acc_hw.get("second"))
    if own:
        rows.append(("  latency, whole design", f"{acc_hw['latency_ms']:.4g} ms at {acc_hw['clock_mhz']:g} MHz: "
                                                f"{'meets' if acc_hw['meets_target'] else 'misses'} the target "
                                                f"({acc_hw['clock_source']})"))
    rows.append(("bit-exact vs integer model", f"{'yes' if s['bit_exact'] else 'NO'} ({frames} frames of "
                                                f"{sim['images']} real images; the whole design's logits)"))
    for k, u in s["utilization"].items():
        cap = s["device"].get(k)
        if not cap:
            continue
        rows.append((f"{k.upper()}, block model", f"{s['resources'][k]} of {cap} ({100 * u:.1f}%)"))
    if s["resource_model"] == "hard-blocks-only":
        rows.append(("LUT", "not estimated (a unit's LUT/FF fit is missing in this checkout)"))
    if s.get("synthesized"):
        for name, r in s["synthesized"].items():
            rows.append((f"Yosys {name}", ", ".join(f"{k} {v}" for k, v in r.items())))
    rows.append(("wall time", f"{s['timings']['total_s']:.0f} s"))
    width = max(len(a) for a, _ in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * (max(len(b) for _, b in rows) + 2) + "+"
    body = [line] + [f"| {a.ljust(width)} | {b.ljust(len(line) - width - 7)} |" for a, b in rows] + [line]
    return "\n".join(body)
