"""`tokensift flops`: multiply-accumulates of a model under a token-pruning schedule.

    tokensift flops --model deit_small_patch16_224 --method dynamicvit --keep 0.7 --json
    tokensift flops --model vit_mnist_patch4_28 --method asvit --checkpoint runs/asvit/asvit_keep0.6.pth \
        --images 1000

    tokensift flops --model lvvit_s --method dynamicvit --keep 0.7 --convention paper --json

Adaptive methods (AS-ViT, SaiT) keep a different number of tokens per image: their static count is the
worst case (nothing pruned); ``--images N`` counts each of the first N bundled MNIST test images on the
inference path and averages, ``--checkpoint`` loads the trained weights the counts depend on.

``--convention macs`` (default) counts the true multiply-accumulates (``--count-norms`` adds LayerNorm and
batch norm as fvcore counts them); ``--convention paper`` the method's published estimator, which reproduces
the DynamicViT, SPViT and AS-ViT tables (see :mod:`tokensift.sw.flops`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tokensift.errors import InvalidArgumentError

__all__ = ["add_arguments", "run", "flops_summary"]


def _locs(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated block indices, not {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tokensift.sw.methods import list_methods
    from tokensift.sw.registry import list_models

    parser.add_argument("--model", default="deit_small_patch16_224", choices=list_models(),
                        help="registered model (default: %(default)s)")
    parser.add_argument("--method", default="none", choices=list_methods(),
                        help="token-pruning method; 'none' is the dense model (default: %(default)s)")
    parser.add_argument("--keep", type=float, default=None,
                        help="keep ratio rho in (0, 1] (default: 0.7 for pruning methods, 1 for 'none')")
    parser.add_argument("--locs", type=_locs, default=None,
                        help="pruning stage blocks, e.g. 3,6,9 (default: the model's)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="trained weights of this model and method (e.g. from 'tokensift train --out'; "
                             "default: untrained weights)")
    parser.add_argument("--images", type=int, default=None, metavar="N",
                        help="count on the first N bundled MNIST test images (per-image counts of adaptive "
                             "methods); default: the static schedule")
    parser.add_argument("--convention", default="macs", choices=["macs", "paper"],
                        help="'macs': true multiply-accumulates; 'paper': the method's published estimator "
                             "(default: %(default)s)")
    parser.add_argument("--count-norms", action="store_true",
                        help="add LayerNorm and batch norm as fvcore counts them (with --convention macs)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _mnist_images(model, model_name: str, n: int):
    import torch

    from tokensift.sw.data import load_mnist

    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1000:
        raise InvalidArgumentError(f"--images must be between 1 and 1000 (the MNIST test split), not {n}")
    cfg = model.config
    if (cfg.img_size, cfg.in_chans, cfg.num_classes) != (28, 1, 10):
        raise InvalidArgumentError(f"--images counts on the bundled MNIST test images, which need a 28x28, "
                                   f"1-channel, 10-class model, not {model_name}")
    _, test = load_mnist()
    return torch.stack([test[i][0] for i in range(n)])


def flops_summary(model_name: str, method: str, keep: float | None, locs: tuple[int, ...] | None = None,
                  images: int | None = None, checkpoint: Path | None = None, convention: str = "macs",
                  count_norms: bool = False) -> dict:
    """The ``--json`` object: GFLOPs and tokens entering each block, with the dense reference (same
    convention)."""
    import torch

    from tokensift.sw import create_model
    from tokensift.sw.checkpoint import load_checkpoint
    from tokensift.sw.flops import PAPER_ESTIMATORS, count_flops

    if count_norms and convention != "macs":
        raise InvalidArgumentError("--count-norms applies to --convention macs only (the papers' estimators "
                                   "leave the norms out)")
    if convention == "paper" and method not in PAPER_ESTIMATORS:
        raise InvalidArgumentError(f"no published FLOPs estimator is reproduced for method {method!r} (only "
                                   f"for {', '.join(sorted(PAPER_ESTIMATORS))}); use --convention macs")
    try:
        model = create_model(model_name, method=method, keep_ratio=keep, prune_locs=locs)
        # the dense reference is counted, never run: its shapes are enough
        with torch.device("meta"):
            dense = create_model(model_name)
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError(str(exc)) from None
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    batch = None if images is None else _mnist_images(model, model_name, images)
    kw = {"convention": convention, "norms": count_norms}
    report, dense_report = count_flops(model.eval(), batch, **kw), count_flops(dense, **kw)
    adaptive = any(getattr(sel, "adaptive", False) for _, sel in model.stage_selectors())
    extra = {"adaptive": adaptive, "images": 0 if images is None else images}
    if adaptive and images is None:
        extra["note"] = (f"{method} keeps a different number of tokens per image: this static count is the "
                         f"worst case (nothing pruned); pass --checkpoint and --images N to measure")
    return {
        "model": model_name,
        "method": method,
        "keep": model.keep_ratio,
        "convention": convention,
        "count_norms": count_norms,
        "gflops": report.gflops,
        "tokens": report.attn_tokens,
        "mlp_tokens": report.mlp_tokens,
        "dense_gflops": dense_report.gflops,
        "ratio": report.gflops / dense_report.gflops,
        "flops_speedup": dense_report.gflops / report.gflops,
        "prune_locs": [b for b, _ in model.stage_selectors()],
        "breakdown_gflops": {k: v / 1e9 for k, v in report.breakdown.items() if k != "total"},
        **extra,
    }


def run(args: argparse.Namespace) -> int:
    summary = flops_summary(args.model, args.method, args.keep, args.locs, args.images, args.checkpoint,
                            args.convention, args.count_norms)
    if args.json:
        from tokensift.cli import emit_json

        emit_json(summary)
        return 0
    from rich.console import Console
    from rich.table import Table

    unit = {"macs": "GFLOPs (MACs" + (" + norms)" if summary["count_norms"] else ")"),
            "paper": "GFLOPs (paper estimator)"}[summary["convention"]]
    table = Table(title=f"{summary['model']} / {summary['method']} / keep {summary['keep']:g}")
    table.add_column("part")
    table.add_column(unit, justify="right")
    for part, value in summary["breakdown_gflops"].items():
        table.add_row(part, f"{value:.4f}")
    table.add_row("[bold]total", f"[bold]{summary['gflops']:.4f}")
    table.add_row("dense", f"{summary['dense_gflops']:.4f}")
    console = Console()
    console.print(table)
    console.print(f"ratio {summary['ratio']:.3f} of dense ({summary['flops_speedup']:.2f}x fewer FLOPs); "
                  f"tokens entering each block: {summary['tokens']}")
    if "note" in summary:
        console.print(f"note: {summary['note']}")
    return 0
