"""`tokensift co-opt`: which accelerator configuration and which keep ratios meet a latency target on a device.

    tokensift co-opt --device pynq-z2 --model vit_mnist_patch4_28 --method evit --target-fps 1000 --json
    tokensift co-opt --device zcu102 --model deit_small_patch16_224 --method dynamicvit --target-latency-ms 20 \\
        --search nsga2 --trials 300 --storage sqlite:///study.db --report out/coopt

The search (:mod:`tokensift.coopt.search`) spans attention lanes, parallel attention cores, softmax
variant, linear-array lanes, selector lanes and the clock x the method's keep ratios, under the device's
DSP/BRAM/LUT/FF budget; it prints the Pareto front, the chosen point (its resources and utilization) and
the training budget it implies. An unreachable target exits with code 2 and names the closest design.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tokensift.commands.block_accelerator import cores_option
from tokensift.errors import InvalidArgumentError

__all__ = ["add_arguments", "run", "parse_list"]


def parse_list(text: str, kind=int, name: str = "value") -> tuple:
    """``"4,8,16"`` -> ``(4, 8, 16)``; one sentence on a bad item."""
    out = []
    for item in text.split(","):
        item = item.strip()
        try:
            out.append(kind(item))
        except ValueError:
            raise InvalidArgumentError(f"--{name} takes a comma-separated list of {kind.__name__}s, not "
                                       f"{text!r}") from None
    return tuple(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tokensift.coopt.search import SEARCHES
    from tokensift.sw.methods import list_methods
    from tokensift.sw.registry import list_models

    parser.add_argument("--device", default="pynq-z2", help="target device (default: %(default)s)")
    parser.add_argument("--model", default="vit_mnist_patch4_28", choices=list_models(),
                        help="registered model (default: %(default)s)")
    parser.add_argument("--method", default="evit", choices=list_methods(),
                        help="token-pruning method (default: %(default)s)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-latency-ms", type=float, help="latency target per image in ms")
    target.add_argument("--target-fps", type=float, help="throughput target in images per second (1000 / latency)")
    parser.add_argument("--cost", choices=["blocks", "accelerator"], default="blocks",
                        help="blocks: the cost model of the units over the co-optimizer's hardware axes; "
                             "accelerator: the generated whole-model accelerator's own models (its shapes, "
                             "resources and exact cycles), keep ratio and shape together (default: %(default)s)")
    parser.add_argument("--search", choices=SEARCHES, default=None,
                        help="grid (exhaustive, vectorised) or nsga2 (optuna); default: grid, or nsga2 with "
                             "--storage or --accuracy measured")
    parser.add_argument("--trials", type=int, default=200, help="nsga2: trials of this worker (default: %(default)s)")
    parser.add_argument("--population", type=int, default=40, help="nsga2: population size (default: %(default)s)")
    parser.add_argument("--storage", default=None,
                        help="nsga2: optuna storage URL shared by workers, e.g. sqlite:///study.db "
                             "(default: in memory)")
    parser.add_argument("--study-name", default=None, help="nsga2: study name (default: derived from the space)")
    parser.add_argument("--seed", type=int, default=0, help="nsga2: sampler seed (default: %(default)s)")
    parser.add_argument("--prefer", choices=["accuracy", "resources"], default="accuracy",
                        help="among designs meeting the target: best accuracy proxy or fewest resources")
    axes = parser.add_argument_group("design space (comma-separated lists; defaults sized for the model)")
    axes.add_argument("--lanes", default=None, help="attention MAC lanes, e.g. 4,8,16 (default: sized for the model)")
    axes.add_argument("--heads-parallel", default=None,
                      help="parallel attention cores, e.g. 1,2,4 (default: sized for the model)")
    axes.add_argument("--linear-lanes", default=None,
                      help="linear engine MACs, e.g. 64,256,1024 (default: sized for the device)")
    axes.add_argument("--linear-rows", default=None,
                      help="linear engine array rows, powers of two, e.g. 4,8 (default: sized for each MAC count)")
    axes.add_argument("--selector-lanes", default=None,
                      help="token-selector lanes, e.g. 8,16 (default: sized for the model)")
    axes.add_argument("--softmax", default=None, help="softmax variants (default: exp2_lut,exp2_poly)")
    axes.add_argument("--clock-mhz", default=None, help="clock assumptions in MHz (default: the device's typical)")
    axes.add_argument("--keep-min", type=float, default=0.3, help="lowest keep ratio (default: %(default)s)")
    axes.add_argument("--keep-step", type=float, default=0.05,
                      help="keep-ratio step (per stage; a fifth of it for one-ratio methods; default: %(default)s)")
    acc = parser.add_argument_group("accuracy objective")
    acc.add_argument("--accuracy", choices=["flops", "measured"], default="flops",
                     help="retained-FLOPs proxy, or accuracy measured with --checkpoint (default: %(default)s)")
    acc.add_argument("--checkpoint", type=Path, default=None,
                     help="trained model of --method for --accuracy measured (default: none)")
    acc.add_argument("--data", type=Path, default=None, help="image folder for measured accuracy (default: MNIST)")
    acc.add_argument("--eval-images", type=int, default=500, help="images per accuracy measurement")
    parser.add_argument("--max-front", type=int, default=200, help="Pareto points listed (default: %(default)s)")
    parser.add_argument("--report", type=Path, default=None,
                        help="write report.md and PNG plots into this folder (default: no report)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _target_ms(args) -> float:
    if args.target_fps is not None:
        if not args.target_fps > 0 or args.target_fps == float("inf"):
            raise InvalidArgumentError(f"--target-fps must be a positive number, not {args.target_fps:g}")
        return 1e3 / args.target_fps
    if not args.target_latency_ms > 0 or args.target_latency_ms == float("inf"):
        raise InvalidArgumentError(f"--target-latency-ms must be a positive number, not {args.target_latency_ms:g}")
    return args.target_latency_ms


def _check_paths(args) -> None:
    """Files read and folders written, checked before the search so no search is lost to them."""
    from tokensift.checks import check_input_file, check_output_dir

    if args.report is not None:
        check_output_dir("--report", args.report)
    if args.checkpoint is not None:
        check_input_file("--checkpoint", args.checkpoint)
    if args.data is not None and not args.data.is_dir():
        raise InvalidArgumentError(f"--data {str(args.data)!r} is not a folder")


def _spaces(args, ev_desc, device):
    from tokensift.checks import check_finite
    from tokensift.coopt.space import HwSpace, default_hw_space, default_keep_space

    base = default_hw_space(ev_desc, device)
    axes = {}
    for name, kind in (("lanes", int), ("heads_parallel", int), ("linear_lanes", int), ("linear_rows", int),
                       ("selector_lanes", int), ("softmax", str), ("clock_mhz", float)):
        text = getattr(args, name)
        axes[name] = parse_list(text, kind, name.replace("_", "-")) if text is not None else getattr(base, name)
    for clock in axes["clock_mhz"]:
        check_finite("--clock-mhz", clock, low=0, low_open=True)
    hw = HwSpace(**axes, weight_rate=None)
    return hw, default_keep_space(args.method, len(ev_desc.selectors), low=args.keep_min, step=args.keep_step)


def _measured_oracle(args):
    from tokensift.coopt.accuracy import MeasuredAccuracy
    from tokensift.sw.checkpoint import load_checkpoint
    from tokensift.sw.data import load_image_folder, load_mnist
    from tokensift.sw.registry import create_model, get_config

    if args.checkpoint is None:
        raise InvalidArgumentError("--accuracy measured needs --checkpoint, a trained model of the method")
    cfg = get_config(args.model)
    if args.data is None:
        _, test = load_mnist()
        classes = 10
    else:
        _, test = load_image_folder(args.data, cfg.img_size, cfg.in_chans)
        classes = len(getattr(test, "dataset", test).classes)
    model = create_model(args.model, method=args.method, num_classes=classes)
    load_checkpoint(model, args.checkpoint, strict=True)
    return MeasuredAccuracy(model, test, images=args.eval_images)


#: options of the block model's search that ``--cost accelerator`` does not take (its space is the
#: accelerator's shapes x the keep grid; its answer is exact, so there is nothing to sample or measure)
_BLOCK_ONLY = ("search", "storage", "study_name", "checkpoint", "data", "report", "lanes", "heads_parallel",
               "linear_lanes", "linear_rows", "selector_lanes", "softmax")


def _run_accelerator(args, target: float) -> int:
    from tokensift.coopt.accel_sizing import PLANNABLE_METHODS, plan_accelerator
    from tokensift.coopt.space import default_keep_space
    from tokensift.sw.registry import create_model

    given = [name for name in _BLOCK_ONLY if getattr(args, name) is not None]
    if args.accuracy != "flops":
        given.insert(0, "accuracy")
    if given:
        raise InvalidArgumentError(f"--cost accelerator searches the accelerator's own shapes and keep ratios; it "
                                   f"does not take --{given[0].replace('_', '-')}")
    if args.method not in PLANNABLE_METHODS:
        raise InvalidArgumentError(f"--cost accelerator plans the keep ratio of a method whose registers fix the "
                                   f"token counts ({', '.join(PLANNABLE_METHODS)}), not {args.method}")
    clock = None
    if args.clock_mhz is not None:
        values = parse_list(args.clock_mhz, float, "clock-mhz")
        if len(values) != 1 or not values[0] > 0 or values[0] == float("inf"):
            raise InvalidArgumentError(f"--cost accelerator takes one positive --clock-mhz, not {args.clock_mhz!r}")
        clock = values[0]
    try:
        # the same keep axis as the block model's search (--keep-min, --keep-step mean the same)
        stages = len(create_model(args.model, method=args.method).stage_selectors())
        grid = default_keep_space(args.method, stages, low=args.keep_min, step=args.keep_step).values
        plan = plan_accelerator(args.model, args.device, target_latency_ms=target, method=args.method,
                                clock_mhz=clock, keep_grid=grid)
    except ValueError as exc:
        raise InvalidArgumentError(str(exc)) from None
    out = {"cost": "accelerator", "model": args.model, "method": args.method, "device": args.device,
           **plan.as_dict()}
    if plan.chosen is not None:
        shape = plan.chosen.sizing.chosen.shape
        cycles = max(plan.chosen.sizing.chosen.cycles)
        out["training_budget"] = {
            "keep_ratio": plan.chosen.keep_ratio, "planned_cycles": cycles, "dense_cycles": plan.dense_cycles,
            "latency_ratio": round(cycles / plan.dense_cycles, 4),
            "command": f"tokensift train --model {args.model} --method {args.method} --keep {plan.chosen.keep_ratio:g} "
                       f"--out runs/{args.method}",
            "simulate": f"tokensift simulate model --checkpoint runs/{args.method}/{args.method}_keep"
                        f"{plan.chosen.keep_ratio:g}.pth --banks "
                        f"{shape['banks']} --lanes {shape['lanes']} --gemm-cols {shape['gemm_cols']} --axi-bytes "
                        f"{shape['axi_bytes']}{' --pack-pairs' if shape.get('pack_pairs') else ''}"
                        f"{cores_option(shape)} --clock-mhz "
                        f"{plan.clock_mhz:g}"}
    if args.json:
        from tokensift.cli import emit_json

        emit_json(out)
    else:
        print(plan.message)
        print("| keep | keep counts | shape (banks x GEMM cols, [attention cores x] lanes, AXI bits) | cycles | "
              "latency (ms) | meets |")
        print("|---:|---|---|---:|---:|---|")
        for p in plan.points:
            d = p.as_dict()
            sh = d["shape"]
            cores = "" if sh is None or sh.get("attention_cores", 1) == 1 else f"{sh['attention_cores']} x "
            where = "-" if sh is None else (f"{sh['banks']} x {sh['gemm_cols']}{' packed' if sh.get('pack_pairs') else ''}, "
                                             f"{cores}{sh['lanes']}, {8 * sh['axi_bytes']}")
            cyc = "-" if d["cycles"] is None else f"{d['cycles']:,}"
            lat = "-" if d["latency_ms"] is None else f"{d['latency_ms']:.4g}"
            print(f"| {p.keep_ratio:g} | {list(p.keep)} | {where} | {cyc} | {lat} | {d['meets_target']} |")
        if plan.chosen is not None:
            print(f"dense on the same design: {plan.dense_cycles:,} cycles")
            print(f"train: {out['training_budget']['command']}")
            print(f"then: {out['training_budget']['simulate']}")
    if plan.chosen is None:
        print(f"tokensift co-opt: error: {plan.message}", file=sys.stderr)
        return 2
    return 0


def run(args: argparse.Namespace) -> int:
    from tokensift.coopt.evaluate import CostEvaluator
    from tokensift.coopt.search import co_optimize
    from tokensift.devices import get_device
    from tokensift.hw.cost.layer import ModelDesc

    target = _target_ms(args)
    for name in ("trials", "population", "max_front", "eval_images"):
        if getattr(args, name) < 1:
            raise InvalidArgumentError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")
    for name, value in (("keep-min", args.keep_min), ("keep-step", args.keep_step)):
        if not 0.0 < value <= 1.0:  # NaN fails this too
            raise InvalidArgumentError(f"--{name} must be in (0, 1], not {value:g}")
    device = get_device(args.device)
    if args.cost == "accelerator":
        return _run_accelerator(args, target)
    _check_paths(args)
    search = args.search or ("nsga2" if args.storage or args.accuracy == "measured" else "grid")
    if args.storage and search != "nsga2":
        raise InvalidArgumentError("--storage shares an optuna study between workers, so it needs --search nsga2")
    try:
        desc = ModelDesc.from_name(args.model, method=args.method)
        hw_space, keep_space = _spaces(args, desc, device)
        oracle = _measured_oracle(args) if args.accuracy == "measured" else None
        ev = CostEvaluator(desc, method=args.method, device=device, hw_space=hw_space, keep_space=keep_space)
        result = co_optimize(args.model, method=args.method, device=device, target_latency_ms=target,
                             search=search, trials=args.trials, storage=args.storage, study_name=args.study_name,
                             seed=args.seed, population=args.population, accuracy=oracle, prefer=args.prefer,
                             max_front=args.max_front, progress=not args.no_progress, evaluator=ev)
    except InvalidArgumentError:
        raise
    except (ValueError, TypeError) as exc:
        if type(exc).__module__.startswith("tokensift"):
            raise
        raise InvalidArgumentError(str(exc)) from None
    summary = result.summary
    if args.report is not None:
        from tokensift.coopt.report import write_report

        summary["report"] = str(write_report(result, args.report))
    if args.json:
        from tokensift.cli import emit_json

        emit_json(summary)
    else:
        _print_summary(summary)
    if not result.feasible:
        print(f"tokensift co-opt: error: {summary['message']}", file=sys.stderr)
        return 2
    return 0


def _print_summary(s: dict) -> None:
    c = s["chosen"]
    print(s["message"])
    print(f"search: {s['search']['kind']}, {s['search']['points']} design points in {s['search']['seconds']:.2f} s; "
          f"Pareto front: {s['pareto_size']} points")
    if c is None:
        return
    hw = c["hw"]
    print(f"hardware: attention lanes {hw['lanes']} x {hw['heads_parallel']} cores ({hw['softmax']}), linear lanes "
          f"{hw['linear_lanes']} ({hw['linear_rows']} rows), selector lanes {hw['selector_lanes']}, "
          f"{hw['clock_mhz']:g} MHz")
    print(f"clock: {hw['clock_mhz']:g} MHz, {c['clock']['note']}")
    print(f"keep: {c['keep']['point']} -> tokens per layer {c['keep']['tokens']}")
    print(f"cycles {c['cycles']}, latency {c['latency_ms']:.4g} ms, {c['fps']:.4g} fps")
    util = ", ".join(f"{k} {c['resources'][k]} ({100 * u:.1f}%)" for k, u in c["utilization"].items())
    print(f"resources: {util} [{c['resource_model']}]")
    print(f"train: {s['training_budget']['command']}")
