"""`tokensift estimate`: resources and latency of a whole model, or of one block, on a device.

    tokensift estimate --device zcu102 --model deit_small_patch16_224 --lanes 16 --keep 0.7 --json
    tokensift estimate --block attention --n-max 100 --head-dim 48 --lanes 12 --family xcup --json
    tokensift estimate --block selector --n-max 197 --dim 384 --lanes 16 --package --family xcup --json
    tokensift estimate --block gemm --rows 8 --cols 128 --n-tokens 68 --in-features 384 --out-features 384 --json
    tokensift estimate --block layernorm --dim 384 --lanes 16 --n-tokens 197 --family ecp5 --json
    tokensift estimate --validate [--block selector] [--family xc7]

The whole-model estimate adds up the accelerator's units (:mod:`tokensift.hw.cost.layer`: attention,
token selector, the GEMM engine and the LayerNorm/GELU/residual units) and the exact cycles of the model's token schedule; a block alone gives
that block's resources and cycles, the same numbers the whole-model estimate adds. ``--validate``
prints the cost model against the stored Yosys baselines with the error of every configuration.
"""

from __future__ import annotations

import argparse

from tokensift.errors import InvalidArgumentError, NotYetAvailableError

__all__ = ["add_arguments", "run", "estimate_model", "estimate_block", "check_fit"]

_DEFAULT_DEVICE = "zcu102"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tokensift.hw.cost.synth import FAMILIES
    from tokensift.sw.methods import list_methods
    from tokensift.sw.registry import list_models

    parser.add_argument("--device", default=None,
                        help=f"target device, e.g. zcu102, zcu104, kv260, pynq-z2, alveo-u250, ecp5-85f "
                             f"(default: {_DEFAULT_DEVICE}; with --block it sets the family)")
    parser.add_argument("--clock-mhz", type=float, default=None,
                        help="clock (default: on ECP5 the device's clock capped by the measured Fmax of the blocks, "
                             "elsewhere the device's assumed clock)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    whole = parser.add_argument_group("whole model")
    whole.add_argument("--model", default="deit_small_patch16_224", choices=list_models(),
                       help="registered model (default: %(default)s)")
    whole.add_argument("--method", default="dynamicvit", choices=list_methods(),
                       help="token-pruning method; 'none' is the dense model (default: %(default)s)")
    whole.add_argument("--keep", type=float, default=None,
                       help="keep ratio rho in (0, 1] (default: 0.7 for pruning methods, 1 for 'none')")
    whole.add_argument("--lanes", type=int, default=None,
                       help="MAC lanes of the attention core and the linear array, features per selector beat "
                            "(default: 16)")
    whole.add_argument("--heads-parallel", type=int, default=1, help="attention cores (default: %(default)s)")
    whole.add_argument("--linear-lanes", type=int, default=None, help="MACs of the linear engine (default: --lanes)")
    whole.add_argument("--linear-rows", type=int, default=None,
                       help="rows of the linear engine's array, a power of two (default: sized for its MACs)")
    block = parser.add_argument_group("one block (--block)")
    block.add_argument("--block", choices=["attention", "selector", "requant", "gemm", "layernorm", "gelu", "residual",
                                           "token_mean", "mac_array", "memory", "multiplier"],
                       default=None, help="estimate one block instead of a model (the last three: --validate only; "
                            "default: the whole model)")
    block.add_argument("--family", choices=list(FAMILIES), default=None,
                       help="device family of a block estimate (default: the device's, else xcup)")
    block.add_argument("--n-max", type=int, default=None, help="most tokens per frame (default: 197)")
    block.add_argument("--head-dim", type=int, default=64, help="attention: channels per head (default: 64)")
    block.add_argument("--dim", type=int, default=384, help="selector: features per token; layernorm: channels C (and c_max) (default: 384)")
    block.add_argument("--package", action="store_true", help="selector: build the package-token datapath")
    block.add_argument("--score-bits", type=int, default=16, help="selector: score width (default: 16)")
    block.add_argument("--feature-bits", type=int, default=8, help="selector: feature width (default: 8)")
    block.add_argument("--n-tokens", type=int, default=None, help="tokens of the frame (default: --n-max)")
    block.add_argument("--heads", type=int, default=1, help="attention: frames (heads) sent back to back")
    block.add_argument("--kept", type=int, default=None,
                       help="selector: tokens kept, class token included (default: about 70%%)")
    block.add_argument("--mode", choices=["topk", "threshold"], default="topk", help="selector rule")
    block.add_argument("--softmax", default=None, help="attention softmax variant (default: its default)")
    block.add_argument("--n-values", type=int, default=1000,
                       help="requant, gelu, residual: values streamed (default: 1000)")
    block.add_argument("--channels", type=int, default=192,
                       help="token_mean: channels averaged, also the unit's maximum (default: 192, DeiT-S's global "
                            "half)")
    block.add_argument("--rows", type=int, default=8, help="gemm: tokens per tile (default: 8)")
    block.add_argument("--cols", type=int, default=128, help="gemm: output channels per tile (default: 128)")
    block.add_argument("--max-in", type=int, default=1536, help="gemm: largest input features K (default: 1536)")
    block.add_argument("--max-out", type=int, default=1536, help="gemm: largest output features M (default: 1536)")
    block.add_argument("--weight-bytes", type=int, default=16, help="gemm: bytes per weight beat (default: 16)")
    block.add_argument("--in-features", type=int, default=None, help="gemm: K of the job (default: --max-in)")
    block.add_argument("--out-features", type=int, default=None, help="gemm: M of the job (default: --max-out)")
    block.add_argument("--rate", type=int, default=None,
                       help="gemm: weight memory bytes per cycle (default: --weight-bytes)")
    block.add_argument("--latency", type=int, default=100, help="gemm: weight memory latency, cycles (default: 100)")
    val = parser.add_argument_group("validation")
    val.add_argument("--validate", action="store_true",
                     help="print the model against the stored synthesis baselines (use --block/--family to filter)")


# -- helpers -----------------------------------------------------------------------------------------------
def _positive(name: str, value) -> int:
    if value is not None and value < 1:
        raise InvalidArgumentError(f"--{name} must be at least 1, not {value}")
    return value


def check_fit(used: dict, device) -> tuple[dict, bool, list[str]]:
    """Utilization per resource, whether everything fits, and one sentence per resource that does not."""
    names = {"dsp": "DSPs" if device.family != "ecp5" else "18x18 multipliers", "bram36": "BRAM36 blocks",
             "ebr": "EBR blocks", "uram": "URAMs", "lut": "LUTs", "ff": "flip-flops"}
    def num(v) -> str:
        return str(int(v)) if float(v).is_integer() else f"{v:.1f}"

    util, problems = {}, []
    for key, capacity in device.capacity().items():
        need = used.get(key, 0)
        util[key] = need / capacity if capacity else (0.0 if need == 0 else float("inf"))
        if need > capacity:
            problems.append(f"needs {num(need)} {names[key]}, {num(need - capacity)} more than {device.name} has "
                            f"({capacity})")
    return util, not problems, problems


def estimate_model(*, model: str, method: str, keep: float | None, lanes: int | None, heads_parallel: int,
                   linear_lanes: int | None, device: str, clock_mhz: float | None,
                   linear_rows: int | None = None) -> dict:
    """The ``--json`` object of a whole-model estimate."""
    from tokensift.checks import check_finite
    from tokensift.devices import get_device
    from tokensift.hw.cost.layer import HwConfig, ModelCost

    dev = get_device(device)
    if clock_mhz is not None:
        try:  # an infinite clock would report 0 ms and "fits"
            check_finite("--clock-mhz", clock_mhz, low=0, low_open=True)
        except (ValueError, TypeError) as exc:
            raise InvalidArgumentError(str(exc)) from None
    try:
        hw = HwConfig(lanes=lanes or 16, heads_parallel=heads_parallel, linear_lanes=linear_lanes,
                      linear_rows=linear_rows)
        cost = ModelCost.from_name(model, method=method, keep_ratio=keep, hw=hw)
        # the device's DRAM at the clock the units run at feeds the linear engine's weight stream
        from dataclasses import replace

        from tokensift.hw.cost.linear import device_weight_rate

        hw = replace(hw, weight_rate=device_weight_rate(dev, cost.clock(dev, clock_mhz=clock_mhz).mhz))
        cost = ModelCost.from_name(model, method=method, keep_ratio=keep, hw=hw)
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError(str(exc)) from None
    from tokensift.hw.common.resources import MissingFitError

    try:
        units = cost.units(dev.family)
    except MissingFitError as exc:
        raise NotYetAvailableError(f"'tokensift estimate' of a whole model needs every block's LUT/FF fit ({exc}), "
                                   f"which is not implemented yet in this version of tokensift") from None
    clock = cost.clock(dev, clock_mhz=clock_mhz)
    total = sum(units.values(), start=units["linear"] * 0)
    used = total.as_dict(dev.family)
    util, fits, problems = check_fit(used, dev)
    per_block = cost.per_block()
    cycles = cost.cycles()
    sched = cost.schedule()
    return {
        "device": dev.name,
        "family": dev.family,
        "model": model,
        "method": method,
        "keep_ratio": cost.desc.selectors[0][1].keep_ratio if cost.desc.selectors else 1.0,
        "hw": {"lanes": hw.lanes, "heads_parallel": hw.heads_parallel, "linear_lanes": cost.linear.lanes,
               "linear_rows": cost.linear.rows, "linear_cols": cost.linear.cols,
               "weight_bytes_per_cycle": cost.linear.weight_rate,
               "selector_lanes": cost.selector.lanes if cost.selector else None},
        "resources": used,
        "capacity": dev.capacity(),
        "utilization": util,
        "fits": fits,
        "problems": problems,
        "cycles": cycles,
        "latency_ms": cycles / (clock.mhz * 1e3),
        "clock_mhz": clock.mhz,
        "clock": clock.as_dict(),
        "tokens": sched.attn_tokens,
        "units": {name: {"resources": r.as_dict(dev.family)} for name, r in units.items()},
        "fixed": cost.fixed_cycles(),
        "per_block": per_block,
        # what the cost model does not yet count cycle for cycle (every unit's resources are counted)
        "not_modeled": ["the token predictors' MLPs run at the linear engine's peak rate (a lower bound until the "
                        "whole-model sequencer issues their layers as GEMM jobs)",
                        "the whole-model sequencer and its DRAM traffic for activations and the program"],
    }


_ESTIMABLE = ("attention", "selector", "requant", "gemm", "layernorm", "gelu", "residual", "token_mean")


def estimate_block(args) -> dict:
    """The ``--json`` object of a one-block estimate."""
    if args.block not in _ESTIMABLE:
        raise InvalidArgumentError(f"--block {args.block} is only compared with synthesis (--validate); estimate "
                                   f"one of {', '.join(_ESTIMABLE)}")
    family = args.family
    if family is None:
        if args.device is not None:
            from tokensift.devices import get_device

            family = get_device(args.device).family
        else:
            family = "xcup"
    n_max = _positive("n-max", args.n_max) or 197
    n_tokens = _positive("n-tokens", args.n_tokens) or n_max
    try:
        if args.block == "attention":
            from tokensift.hw.attention.cycles import cycles
            from tokensift.hw.attention.resources import resources
            from tokensift.quant.attention import AttentionParams

            kwargs = {"n_max": n_max, "head_dim": args.head_dim, "lanes": args.lanes or 16,
                      "heads_parallel": args.heads_parallel}
            if args.softmax is not None:
                kwargs["softmax"] = args.softmax
            p = AttentionParams(**kwargs)
            res = resources(p, family)
            cyc = cycles(p, n_tokens=n_tokens, heads=args.heads)
            params = {"n_max": p.n_max, "head_dim": p.head_dim, "lanes": p.lanes, "heads_parallel": p.heads_parallel,
                      "softmax": p.softmax.variant.value, "n_tokens": n_tokens, "heads": args.heads}
        elif args.block == "selector":
            from tokensift.hw.selector.core import cycles
            from tokensift.hw.selector.resources import resources
            from tokensift.quant.select import Mode, SelectorParams

            p = SelectorParams(n_max=n_max, dim=args.dim, lanes=args.lanes or 16, score_bits=args.score_bits,
                               feature_bits=args.feature_bits, package=args.package)
            kept = args.kept if args.kept is not None else 1 + -(-(n_tokens - 1) * 7 // 10)
            mode = Mode.TOPK if args.mode == "topk" else Mode.THRESHOLD
            res = resources(p, family)
            cyc = cycles(p, n_tokens=n_tokens, kept=kept, mode=mode, package=args.package)
            params = {"n_max": p.n_max, "dim": p.dim, "lanes": p.lanes, "score_bits": p.score_bits,
                      "feature_bits": p.feature_bits, "package": p.package,
                      "n_tokens": n_tokens, "kept": kept, "mode": args.mode}
        elif args.block == "gemm":
            from tokensift.hw.gemm import GemmConfig
            from tokensift.hw.gemm.cycles import cycles
            from tokensift.hw.gemm.resources import resources

            cfg = GemmConfig(rows=args.rows, cols=args.cols, max_tokens=n_max, max_in=args.max_in,
                             max_out=args.max_out, weight_bytes=args.weight_bytes)
            k = _positive("in-features", args.in_features) or cfg.max_in
            m = _positive("out-features", args.out_features) or cfg.max_out
            rate = _positive("rate", args.rate) or cfg.weight_bytes
            if args.latency < 0:
                raise InvalidArgumentError(f"--latency must be at least 0, not {args.latency}")
            for option, value, limit in (("--n-tokens", n_tokens, n_max), ("--in-features", k, cfg.max_in),
                                         ("--out-features", m, cfg.max_out)):
                if value > limit:
                    raise InvalidArgumentError(f"{option} must be at most {limit}, not {value}")
            res = resources(cfg, family)
            cyc = cycles(cfg, n_tokens, k, m, weight_bytes_per_cycle=rate, weight_latency=args.latency)
            params = {**cfg.as_dict(), "n_tokens": n_tokens, "in_features": k, "out_features": m,
                      "weight_bytes_per_cycle": rate, "weight_latency": args.latency,
                      "mac_utilization": round(n_tokens * k * m / (cfg.macs * cyc), 4)}
        elif args.block == "layernorm":
            from tokensift.hw.vector.layernorm_cost import cycles
            from tokensift.hw.vector.layernorm_layout import LayerNormConfig
            from tokensift.hw.vector.layernorm_resources import resources

            cfg = LayerNormConfig(c_max=args.dim, lanes=args.lanes or 16)
            cyc = cycles(cfg, dim=cfg.c_max, n_tokens=n_tokens)
            res = resources(cfg, family)
            params = {"c_max": cfg.c_max, "lanes": cfg.lanes, "dim": cfg.c_max, "n_tokens": n_tokens,
                      "cycles_per_token": cfg.beats(cfg.c_max)}
        elif args.block in ("gelu", "residual", "token_mean"):
            res, cyc, params = _vector_block(args, family, n_max, n_tokens)
        else:
            from tokensift.hw.common.requant_resources import RequantParams, cycles, resources
            from tokensift.quant.fixed import INT8

            p = RequantParams(acc_bits=32, out=INT8, multiplier=(1 << 16) - 1, shift=24)
            res = resources(p, family)
            cyc = cycles(p, n_values=args.n_values)
            params = {"acc_bits": 32, "out_bits": 8, "multiplier": p.multiplier, "shift": p.shift,
                      "n_values": args.n_values}
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError(str(exc)) from None
    return {"block": args.block, "family": family, "params": params, "resources": res.as_dict(family),
            "cycles": cyc}


def _vector_block(args, family: str, n_max: int, n_tokens: int):
    """(resources, cycles, parameters) of a streaming vector unit."""
    lanes = args.lanes or 16
    if args.block == "token_mean":
        from tokensift.hw.vector.token_mean import TokenMeanParams, cycles
        from tokensift.hw.vector.token_mean_resources import resources

        p = TokenMeanParams(lanes=lanes, n_max=n_max, c_max=args.channels)
        return (resources(p, family), cycles(p, n_tokens, args.channels),
                {"lanes": lanes, "bits": p.bits, "n_max": n_max, "c_max": p.c_max, "n_tokens": n_tokens,
                 "channels": args.channels})
    if args.n_values < 1:
        raise InvalidArgumentError(f"--n-values must be at least 1, not {args.n_values}")
    beats = -(-args.n_values // lanes)
    if args.block == "gelu":
        from tokensift.hw.vector.gelu import GeluUnitParams, cycles
        from tokensift.hw.vector.gelu_resources import resources

        p = GeluUnitParams(lanes=lanes)
        return (resources(p, family), cycles(p, beats),
                {"lanes": lanes, "in_bits": p.in_bits, "out_bits": p.out.bits, "multiplier_bits": p.multiplier_bits,
                 "n_values": args.n_values})
    from tokensift.hw.vector.residual import ResidualParams, cycles
    from tokensift.hw.vector.residual_resources import resources

    p = ResidualParams(lanes=lanes)
    return (resources(p, family), cycles(p, beats),
            {"lanes": lanes, "res_bits": p.res.bits, "n_values": args.n_values})


def _validate(args) -> int:
    from tokensift.hw.cost.validation import BASELINE_DIR, compare, summary

    blocks = [args.block] if args.block else None
    families = [args.family] if args.family else None
    rows = compare(blocks, families)
    if not rows:
        raise InvalidArgumentError(f"no synthesis baselines found in {BASELINE_DIR}; run "
                                   f"`python bench/synth_baselines.py` in a source checkout")
    failures = [r for r in rows if not r.ok]
    if args.json:
        from tokensift.cli import emit_json

        emit_json({"rows": [r.as_dict() for r in rows], "summary": summary(rows), "failures": len(failures),
                   "ok": not failures})
        return 0 if not failures else 1
    from rich.table import Table

    console = _console()
    table = Table(title="cost model vs Yosys synthesis")
    for col in ("block", "config", "family", "metric", "model", "synth", "error", "tolerance", ""):
        table.add_column(col, justify="right" if col in ("model", "synth", "error") else "left")
    for r in rows:
        tol = f"±{r.tolerance['abs']}" if "abs" in r.tolerance else f"{r.tolerance['rel']:.0%}"
        err = f"{r.error:.1%}" if r.metric in ("lut", "ff") or r.synth else f"{r.error:g}"
        table.add_row(r.block, r.name, r.family, r.metric, f"{r.model:.0f}", f"{r.synth:.0f}", err, tol,
                      "ok" if r.ok else "[red]FAIL")
    console.print(table)
    s = summary(rows)
    small = Table(title="per block and family")
    for col in ("block", "family", "configs", "failures", "LUT max err", "LUT mean err", "FF max err", "FF mean err"):
        small.add_column(col)
    for block, fams in s.items():
        for family, v in fams.items():
            small.add_row(block, family, str(v["configs"]), str(v["failures"]),
                          *(f"{v[k]:.1%}" if k in v else "-" for k in ("lut_max_err", "lut_mean_err",
                                                                        "ff_max_err", "ff_mean_err")))
    console.print(small)
    return 0 if not failures else 1


def _console():
    import sys

    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 150)


def _print_model(summary: dict) -> None:
    from rich.table import Table

    console = _console()
    title = (f"{summary['model']} / {summary['method']} / keep {summary['keep_ratio']:g} on {summary['device']} "
             f"({summary['family']}, {summary['clock_mhz']:g} MHz)")
    res = Table(title=title)
    res.add_column("resource")
    for name in summary["units"]:
        res.add_column(name, justify="right")
    res.add_column("total", justify="right")
    res.add_column(summary["device"], justify="right")
    res.add_column("used", justify="right")
    for key, total in summary["resources"].items():
        cap = summary["capacity"].get(key)
        util = summary["utilization"].get(key)
        res.add_row(key, *(f"{u['resources'].get(key, 0):g}" for u in summary["units"].values()), f"{total:g}",
                    "-" if cap is None else str(cap), "-" if util is None else
                    (f"[red]{util:.1%}" if util > 1 else f"{util:.1%}"))
    console.print(res)
    cyc = Table(title="cycles per encoder layer")
    parts = ["qkv", "attention", "proj", "selector", "predictor", "fc1", "fc2"]
    for col in ["block", "tokens", *parts, "total"]:
        cyc.add_column(col, justify="right")
    for row in summary["per_block"]:
        cyc.add_row(str(row["block"]), str(row["tokens"]), *(str(row["cycles"].get(p, "")) for p in parts),
                    str(row["total"]))
    console.print(cyc)
    console.print(f"patch embedding {summary['fixed']['patch_embed']} cycles, head {summary['fixed']['head']} cycles")
    console.print(f"[bold]{summary['cycles']} cycles = {summary['latency_ms']:.3f} ms at {summary['clock_mhz']:g} MHz")
    console.print(f"clock {summary['clock_mhz']:g} MHz: {summary['clock']['note']}")
    if summary["fits"]:
        console.print(f"[green]fits on {summary['device']}")
    else:
        console.print(f"[red]does not fit on {summary['device']}: " + "; ".join(summary["problems"]))
    console.print("not modeled: " + ", ".join(summary["not_modeled"]))


def run(args: argparse.Namespace) -> int:
    from tokensift.cli import emit_json

    if args.clock_mhz is not None and not 0 < args.clock_mhz < float("inf"):  # NaN fails this too
        raise InvalidArgumentError(f"--clock-mhz must be a positive finite number, not {args.clock_mhz:g}")
    if args.validate:
        return _validate(args)
    for name in ("lanes", "heads_parallel", "linear_lanes", "linear_rows"):
        _positive(name.replace("_", "-"), getattr(args, name))
    if args.block is not None:
        out = estimate_block(args)
        if args.json:
            emit_json(out)
            return 0
        from rich.table import Table

        table = Table(title=f"{out['block']} on {out['family']}: " + ", ".join(f"{k}={v}" for k, v in out["params"].items()))
        table.add_column("resource")
        table.add_column("count", justify="right")
        for k, v in out["resources"].items():
            table.add_row(k, f"{v:g}")
        table.add_row("cycles", str(out["cycles"]))
        _console().print(table)
        return 0
    out = estimate_model(model=args.model, method=args.method, keep=args.keep, lanes=args.lanes,
                         heads_parallel=args.heads_parallel, linear_lanes=args.linear_lanes,
                         device=args.device or _DEFAULT_DEVICE, clock_mhz=args.clock_mhz, linear_rows=args.linear_rows)
    if args.json:
        emit_json(out)
    else:
        _print_model(out)
    return 0
