"""`tokensift train`: dense training, then token-pruning fine-tuning with the dense model as teacher.

    tokensift train --model vit_mnist_patch4_28 --method dynamicvit --keep 0.7 --epochs 10 --out runs/dvit --json
    torchrun --nproc-per-node 8 -m tokensift train --data imagenet/ ...   # DDP: one GPU per process (nccl)
    torchrun --nproc-per-node 2 -m tokensift train --accelerator cpu ...  # DDP on CPU processes (gloo)

Progress goes to stderr; with ``--json`` one JSON object (accuracies, FLOPs, checkpoints) goes to stdout.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tokensift.errors import InvalidArgumentError

__all__ = ["add_arguments", "run"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tokensift.sw.methods import list_methods
    from tokensift.sw.pipeline import PipelineConfig
    from tokensift.sw.registry import list_models

    d = PipelineConfig()
    parser.add_argument("--model", default=d.model, choices=list_models(), help="default: %(default)s")
    parser.add_argument("--method", default=d.method, choices=list_methods(), help="default: %(default)s")
    parser.add_argument("--keep", type=float, default=None,
                        help="keep ratio rho (default: the method's, 0.7 for most)")
    parser.add_argument("--epochs", type=_positive_int, default=d.epochs,
                        help="fine-tuning epochs (dense epochs with --method none; default: %(default)s)")
    parser.add_argument("--dense-epochs", type=_positive_int, default=d.dense_epochs,
                        help="epochs of the dense model when it is not cached (default: %(default)s)")
    parser.add_argument("--batch-size", type=_positive_int, default=d.batch_size,
                        help="images per step, over all processes")
    parser.add_argument("--lr", type=float, default=d.lr, help="dense learning rate (default: %(default)s)")
    parser.add_argument("--finetune-lr", type=float, default=d.finetune_lr,
                        help="selector learning rate when pruning (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of initialisation, data order, augmentation")
    parser.add_argument("--out", type=Path, default=None, help="folder for checkpoints (default: none are written "
                                                               "except the dense cache)")
    parser.add_argument("--data", type=Path, default=None,
                        help="ImageNet-style folder (train/ and val/ of class folders, or class folders; "
                             "default: the bundled MNIST)")
    parser.add_argument("--skip-bad-images", action="store_true",
                        help="leave out images that cannot be read (counted in the output) instead of stopping "
                             "before training")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="DeiT/timm .pth to start the dense model from (default: random initialisation)")
    parser.add_argument("--dense-checkpoint", type=Path, default=None,
                        help="a trained dense model (ours or timm's) to use as is, skipping dense training "
                             "(default: train or take it from the cache)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where trained dense models are cached (default: ~/.cache/tokensift)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the dense cache")
    parser.add_argument("--max-steps", type=_positive_int, default=None,
                        help="stop each training stage after this many steps (quick checks; default: no limit)")
    from tokensift.sw.placement import ACCELERATORS

    parser.add_argument("--accelerator", default=d.accelerator, choices=ACCELERATORS,
                        help="auto: the GPU of this process's LOCAL_RANK when CUDA is available, else the CPU "
                             "(default: %(default)s)")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast in training (GPUs)")
    parser.add_argument("--workers", type=int, default=d.workers,
                        help="data-loading processes per training process (default: %(default)s; use several "
                             "for image folders)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    from tokensift.coopt.latency_cli import add_latency_arguments

    add_latency_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from tokensift.checks import check_finite, check_input_file, check_output_dir
    from tokensift.sw.pipeline import PipelineConfig, default_cache_dir, run_pipeline
    from tokensift.sw.placement import shutdown_distributed
    from tokensift.sw.registry import create_model
    from tokensift.sw.train import is_main_process

    # everything that can be checked is checked here, before hours of training can be lost to it
    try:
        student = create_model(args.model, method=args.method, keep_ratio=args.keep)
        check_finite("--lr", args.lr, low=0, low_open=True)
        check_finite("--finetune-lr", args.finetune_lr, low=0, low_open=True)
        if args.workers < 0:
            raise ValueError(f"--workers must be a non-negative integer, not {args.workers}")
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError(str(exc)) from None
    for option in ("checkpoint", "dense_checkpoint"):
        if getattr(args, option) is not None:
            check_input_file(f"--{option.replace('_', '-')}", getattr(args, option))
    if args.out is not None:
        check_output_dir("--out", args.out)
    if not args.no_cache and args.dense_checkpoint is None:
        check_output_dir("--cache-dir", args.cache_dir if args.cache_dir is not None else default_cache_dir())
    cfg = PipelineConfig(
        model=args.model, method=args.method, keep_ratio=args.keep, epochs=args.epochs,
        dense_epochs=args.dense_epochs, batch_size=args.batch_size, lr=args.lr, finetune_lr=args.finetune_lr,
        seed=args.seed, out=args.out, data=args.data, checkpoint=args.checkpoint,
        dense_checkpoint=args.dense_checkpoint, cache_dir=args.cache_dir, use_cache=not args.no_cache,
        max_steps=args.max_steps, progress=not args.no_progress, accelerator=args.accelerator, amp=args.amp,
        workers=args.workers, skip_bad_images=args.skip_bad_images,
    )
    from tokensift.coopt.latency_cli import latency_plan

    cfg.budget_plan = latency_plan(args)  # None without --target-latency-ms
    stage_keep = getattr(cfg.budget_plan, "stage_keep", None)
    if stage_keep is not None and len(stage_keep) != len(student.selectors):
        raise InvalidArgumentError(f"--stage-keep needs {len(student.selectors)} ratios for {args.model} "
                                   f"(one per pruning stage), not {len(stage_keep)}")
    try:
        result = run_pipeline(cfg)
    except (ValueError, TypeError) as exc:
        shutdown_distributed(wait=False)
        if isinstance(exc, InvalidArgumentError) or hasattr(exc, "__module__") and "tokensift" in type(
                exc).__module__:
            raise
        raise InvalidArgumentError(str(exc)) from None
    except BaseException:
        shutdown_distributed(wait=False)
        raise
    main_process = is_main_process()
    shutdown_distributed()
    if not main_process:
        return 0
    if args.json:
        from tokensift.cli import emit_json

        emit_json(result)
    else:
        print(f"dense accuracy {result['dense_accuracy']:.4f} ({result['dense_gflops']:.4f} GFLOPs); "
              f"{result['method']} keep {result['keep']:g}: accuracy {result['accuracy']:.4f} "
              f"({result['gflops']:.4f} GFLOPs, {result['ratio']:.3f} of dense)")
        if "latency" in result:
            lat = result["latency"]
            print(f"latency on {lat['device']}: {lat['latency_ms']:.4g} ms per image (target {lat['target_latency_ms']:g} "
                  f"ms, dense {lat['dense_latency_ms']:.4g} ms): {'meets' if lat['meets_target'] else 'misses'} the target")
    return 0
