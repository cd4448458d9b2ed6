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
    parser.add_argument("--keep", type=float, default=None, help="keep ratio rho (default 0.7)")
    parser.add_argument("--epochs", type=_positive_int, default=d.epochs,
                        help="fine-tuning epochs (dense epochs with --method none; default: %(default)s)")
    parser.add_argument("--dense-epochs", type=_positive_int, default=d.dense_epochs,
                        help="epochs of the dense model when it is not cached (default: %(default)s)")
    parser.add_argument("--batch-size", type=_positive_int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr, help="dense learning rate (default: %(default)s)")
    parser.add_argument("--finetune-lr", type=float, default=d.finetune_lr,
                        help="selector learning rate when pruning (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--out", type=Path, default=None, help="folder for checkpoints")
    parser.add_argument("--data", type=Path, default=None,
                        help="ImageNet-style folder (train/ and val/ of class folders, or class folders)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="DeiT/timm .pth to start the dense model from")
    parser.add_argument("--dense-checkpoint", type=Path, default=None,
                        help="a trained dense model (ours or timm's) to use as is, skipping dense training")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where trained dense models are cached (default: ~/.cache/tokensift)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the dense cache")
    parser.add_argument("--max-steps", type=_positive_int, default=None,
                        help="stop each training stage after this many steps (quick checks)")
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
    from tokensift.sw.pipeline import PipelineConfig, run_pipeline
    from tokensift.sw.placement import shutdown_distributed
    from tokensift.sw.registry import create_model
    from tokensift.sw.train import is_main_process

    try:
        create_model(args.model, method=args.method, keep_ratio=args.keep)  # validate before any work
        if not args.lr > 0 or not args.finetune_lr > 0:
            raise ValueError(f"learning rates must be positive, not {args.lr} and {args.finetune_lr}")
        if args.workers < 0:
            raise ValueError(f"--workers must be a non-negative integer, not {args.workers}")
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError(str(exc)) from None
    cfg = PipelineConfig(
        model=args.model, method=args.method, keep_ratio=args.keep, epochs=args.epochs,
        dense_epochs=args.dense_epochs, batch_size=args.batch_size, lr=args.lr, finetune_lr=args.finetune_lr,
        seed=args.seed, out=args.out, data=args.data, checkpoint=args.checkpoint,
        dense_checkpoint=args.dense_checkpoint, cache_dir=args.cache_dir, use_cache=not args.no_cache,
        max_steps=args.max_steps, progress=not args.no_progress, accelerator=args.accelerator, amp=args.amp,
        workers=args.workers,
    )
    from tokensift.coopt.latency_cli import latency_plan

    cfg.budget_plan = latency_plan(args)  # None without --target-latency-ms
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
