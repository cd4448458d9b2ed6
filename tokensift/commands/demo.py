"""`tokensift demo`: the end-to-end demo on the bundled MNIST data (see :mod:`tokensift.coopt.demo`).

    tokensift demo                       # out/demo: summary.json, table.txt, coopt/report.md, verilog/, sim/
    tokensift demo --device ecp5-85f --out out/ecp5 --json
    tokensift demo --method sait         # any of dynamicvit (default), spvit, asvit, sait, evit
    tokensift demo --quick               # a couple of training steps, two simulated images (a smoke test)

Progress goes to stderr; the table (or with ``--json`` the summary object) goes to stdout.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tokensift.errors import InvalidArgumentError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tokensift.coopt.demo import DEMO_METHODS, DemoConfig

    d = DemoConfig()
    parser.add_argument("--method", default=d.method, choices=DEMO_METHODS,
                        help="the token-pruning method trained, quantized and simulated (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=d.out, help="output folder (default: %(default)s)")
    parser.add_argument("--device", default=d.device, help="small device: pynq-z2 or ecp5-85f (default: %(default)s)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--target-latency-ms", type=float, default=None,
                        help="latency target per image (default: from --speedup)")
    target.add_argument("--target-fps", type=float, default=None,
                        help="throughput target in images per second (default: from --speedup)")
    target.add_argument("--speedup", type=float, default=d.speedup,
                        help="default target: the fastest dense design that fits, divided by this "
                             "(default: %(default)s)")
    parser.add_argument("--dense-epochs", type=int, default=d.dense_epochs, help="default: %(default)s")
    parser.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs, help="default: %(default)s")
    parser.add_argument("--sim-images", type=int, default=d.sim_images,
                        help="MNIST test images simulated cycle-accurately (default: %(default)s)")
    parser.add_argument("--accel-images", type=int, default=d.accel_images,
                        help="of those, images run through the whole accelerator under each of its two settings "
                             "(default: %(default)s)")
    parser.add_argument("--eval-images", type=int, default=d.eval_images,
                        help="test images for the accuracies (default: %(default)s)")
    parser.add_argument("--synth", action="store_true", help="also synthesize the generated blocks with Yosys")
    parser.add_argument("--no-accelerator", action="store_true",
                        help="skip step 7, the whole accelerator in Verilator (its build takes minutes)")
    parser.add_argument("--quick", action="store_true",
                        help="a couple of training steps, a coarse keep grid, two simulated images")
    parser.add_argument("--cache-dir", type=Path, default=None, help="dense-model cache (default: ~/.cache/tokensift)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    from tokensift.checks import check_finite, check_output_dir
    from tokensift.coopt.demo import DemoConfig, render_table, run_demo
    from tokensift.devices import get_device
    from tokensift.sw.pipeline import default_cache_dir

    for name in ("dense_epochs", "finetune_epochs", "sim_images", "accel_images", "eval_images"):
        if getattr(args, name) < 1:
            raise InvalidArgumentError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")
    if not args.quick and args.accel_images > args.sim_images:
        raise InvalidArgumentError(f"--accel-images ({args.accel_images}) must be at most --sim-images "
                                   f"({args.sim_images}): the whole design runs the same images")
    try:
        target = args.target_latency_ms
        if args.target_fps is not None:
            target = 1e3 / check_finite("--target-fps", args.target_fps, low=0, low_open=True)
        elif target is not None:
            check_finite("--target-latency-ms", target, low=0, low_open=True)
        check_finite("--speedup", args.speedup, low=0, low_open=True)
    except ValueError as exc:
        raise InvalidArgumentError(str(exc)) from None
    get_device(args.device)
    check_output_dir("--out", args.out)
    check_output_dir("--cache-dir", args.cache_dir if args.cache_dir is not None else default_cache_dir())
    kwargs = dict(out=args.out, method=args.method, device=args.device, target_latency_ms=target, speedup=args.speedup,
                  synth=args.synth, accelerator=not args.no_accelerator, progress=not args.no_progress, cache_dir=args.cache_dir)
    if args.quick:
        cfg = DemoConfig.quick(**kwargs)
    else:
        cfg = DemoConfig(**kwargs, dense_epochs=args.dense_epochs, finetune_epochs=args.finetune_epochs,
                         sim_images=args.sim_images, accel_images=args.accel_images, eval_images=args.eval_images)
    summary = run_demo(cfg)
    if args.json:
        from tokensift.cli import emit_json

        emit_json(summary)
    else:
        print(render_table(summary))
    return 0 if summary["bit_exact"] and summary["meets_target"] else 1
