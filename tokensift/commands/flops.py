"""`tokensift flops`: multiply-accumulates of a model under a token-pruning schedule.

    tokensift flops --model deit_small_patch16_224 --method dynamicvit --keep 0.7 --json
"""

from __future__ import annotations

import argparse

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
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def flops_summary(model_name: str, method: str, keep: float | None, locs: tuple[int, ...] | None = None) -> dict:
    """The ``--json`` object: GFLOPs (MACs) and tokens entering each block, with the dense reference."""
    from tokensift.sw import create_model
    from tokensift.sw.flops import count_flops

    try:
        model = create_model(model_name, method=method, keep_ratio=keep, prune_locs=locs)
        dense = create_model(model_name)
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError(str(exc)) from None
    report, dense_report = count_flops(model), count_flops(dense)
    return {
        "model": model_name,
        "method": method,
        "keep": model.keep_ratio,
        "gflops": report.gflops,
        "tokens": report.attn_tokens,
        "mlp_tokens": report.mlp_tokens,
        "dense_gflops": dense_report.gflops,
        "ratio": report.gflops / dense_report.gflops,
        "flops_speedup": dense_report.gflops / report.gflops,
        "prune_locs": [b for b, _ in model.stage_selectors()],
        "breakdown_gflops": {k: v / 1e9 for k, v in report.breakdown.items() if k != "total"},
    }


def run(args: argparse.Namespace) -> int:
    summary = flops_summary(args.model, args.method, args.keep, args.locs)
    if args.json:
        from tokensift.cli import emit_json

        emit_json(summary)
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{summary['model']} / {summary['method']} / keep {summary['keep']:g}")
    table.add_column("part")
    table.add_column("GFLOPs (MACs)", justify="right")
    for part, value in summary["breakdown_gflops"].items():
        table.add_row(part, f"{value:.4f}")
    table.add_row("[bold]total", f"[bold]{summary['gflops']:.4f}")
    table.add_row("dense", f"{summary['dense_gflops']:.4f}")
    console = Console()
    console.print(table)
    console.print(f"ratio {summary['ratio']:.3f} of dense ({summary['flops_speedup']:.2f}x fewer FLOPs); "
                  f"tokens entering each block: {summary['tokens']}")
    return 0
