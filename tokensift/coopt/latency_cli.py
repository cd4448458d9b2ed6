"""The latency-budget options of ``tokensift train`` (kept here so the training command stays small).

    tokensift train --model vit_mnist_patch4_28 --method dynamicvit --device pynq-z2 --target-latency-ms 1.2 \\
        --lanes 16 --heads-parallel 4 --linear-lanes 128 --selector-lanes 16
"""

from __future__ import annotations

import argparse

from tokensift.errors import InvalidArgumentError

__all__ = ["add_latency_arguments", "latency_plan"]


def add_latency_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("latency budget (computation-aware training on a device's cost model)")
    g.add_argument("--device", default=None,
                   help="device whose latency model is the budget, e.g. pynq-z2 (default: no latency budget)")
    g.add_argument("--target-latency-ms", type=float, default=None,
                   help="latency per image the pruned model must meet (with --device; default: none)")
    g.add_argument("--lanes", type=int, default=16, help="attention MAC lanes (default: %(default)s)")
    g.add_argument("--heads-parallel", type=int, default=1, help="parallel attention cores (default: %(default)s)")
    g.add_argument("--linear-lanes", type=int, default=None, help="linear engine's MACs (default: --lanes)")
    g.add_argument("--linear-rows", type=int, default=None,
                   help="rows of the linear engine's array, a power of two (default: sized for its MACs)")
    g.add_argument("--selector-lanes", type=int, default=None, help="token-selector lanes (default: --lanes)")
    g.add_argument("--softmax", choices=["exp2_lut", "exp2_poly"], default=None,
                   help="softmax variant (default: exp2_lut)")
    g.add_argument("--clock-mhz", type=float, default=None, help="clock (default: the device's typical one)")
    g.add_argument("--stage-keep", default=None,
                   help="EViT: per-stage keep ratios, e.g. 0.7,0.6,0.5 (default: planned from the target)")
    g.add_argument("--latency-weight", type=float, default=2.0,
                   help="weight of the latency term added to DynamicViT's loss (default: %(default)s)")


def latency_plan(args: argparse.Namespace):
    """A :class:`~tokensift.coopt.latency_train.LatencyPlan` from the parsed options, or None without a target."""
    from tokensift.coopt.latency_train import LatencyPlan
    from tokensift.devices import get_device
    from tokensift.hw.cost.layer import HwConfig

    if args.target_latency_ms is None:
        if args.device is not None:
            raise InvalidArgumentError("--device sets the latency budget, so it needs --target-latency-ms")
        return None
    if args.device is None:
        raise InvalidArgumentError("--target-latency-ms needs --device, the device whose latency model is the budget")
    if args.method == "none":
        raise InvalidArgumentError("--target-latency-ms needs a pruning method (--method), not the dense model")
    from tokensift.checks import check_finite

    try:
        check_finite("--target-latency-ms", args.target_latency_ms, low=0, low_open=True)
        if args.clock_mhz is not None:
            check_finite("--clock-mhz", args.clock_mhz, low=0, low_open=True)
        check_finite("--latency-weight", args.latency_weight, low=0)
    except ValueError as exc:
        raise InvalidArgumentError(str(exc)) from None
    stage_keep = None
    if args.stage_keep is not None:
        if args.method != "evit":
            raise InvalidArgumentError(f"--stage-keep sets EViT's per-stage keep ratios; {args.method} plans its "
                                       f"own from the target")
        try:
            stage_keep = tuple(float(v) for v in args.stage_keep.split(","))
        except ValueError:
            raise InvalidArgumentError(f"--stage-keep takes comma-separated ratios, not {args.stage_keep!r}") from None
        if not all(0 < v <= 1 for v in stage_keep):  # NaN fails this too
            raise InvalidArgumentError(f"--stage-keep ratios must be in (0, 1], not {args.stage_keep}")
    get_device(args.device)
    try:
        hw = HwConfig(lanes=args.lanes, heads_parallel=args.heads_parallel, linear_lanes=args.linear_lanes,
                      selector_lanes=args.selector_lanes, softmax=args.softmax, linear_rows=args.linear_rows)
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError(str(exc)) from None
    return LatencyPlan(device=args.device, hw=hw, target_ms=args.target_latency_ms, clock_mhz=args.clock_mhz,
                       stage_keep=stage_keep, weight=args.latency_weight)
