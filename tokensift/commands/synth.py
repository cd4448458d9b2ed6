"""``tokensift synth BLOCK ...``: synthesize one block with Yosys, and with ``--pnr`` place and route it.

    tokensift synth requant --multiplier 12345 --shift 20 --json
    tokensift synth attention --n-max 197 --head-dim 64 --lanes 16 --family xcup --json
    tokensift synth selector --n-max 197 --dim 384 --lanes 16 --package --pnr --speed 6 --json

The block's parameters are those of ``tokensift generate BLOCK``. Without ``--pnr`` the answer is the
synthesized cell counts (:func:`tokensift.hw.cost.synth.synthesize`, the numbers the resource model is
validated against); with ``--pnr`` (ECP5 only: no open place and route exists for the Xilinx families) it
is nextpnr-ecp5's Fmax, critical path and post-P&R utilization, out of context on the LFE5U-85F
(:func:`tokensift.hw.cost.pnr.place_and_route`). Results are cached under ``build/synth`` / ``build/pnr``.
"""

from __future__ import annotations

import sys

from tokensift.commands import blocks
from tokensift.errors import InvalidArgumentError

__all__ = ["add_arguments", "run", "check_options"]


def add_arguments(parser):
    from tokensift.hw.cost.synth import FAMILIES

    sub = parser.add_subparsers(dest="block", metavar="BLOCK", required=True)
    for name, glue in blocks.available().items():
        p = sub.add_parser(name, help=glue.HELP, description=glue.HELP)
        glue.add_generate_arguments(p)
        p.add_argument("--family", default="ecp5",
                       help=f"synthesis flow: {', '.join(FAMILIES)} (default: %(default)s)")
        p.add_argument("--pnr", action="store_true",
                       help="also place and route with nextpnr-ecp5 (LFE5U-85F CABGA381, out of context): Fmax, "
                            "critical path, utilization")
        p.add_argument("--speed", type=int, default=6, help="ECP5 speed grade for --pnr: 6, 7 or 8 (default: 6)")
        p.add_argument("--constraint-mhz", type=float, default=None,
                       help="clock constraint nextpnr places for (default: 100)")
        p.add_argument("--seed", type=int, default=None,
                       help="nextpnr placement seed for --pnr (default: nextpnr's own); another seed is another "
                            "placement, and a design whose worst paths are mostly wire moves by several MHz")
        p.add_argument("--no-cache", action="store_true", help="run the tools even when a cached result exists")
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        p.set_defaults(_glue=glue)


def check_options(args) -> None:
    """Reject option combinations before any tool runs (one sentence each)."""
    from tokensift.hw.cost.pnr import SPEEDS
    from tokensift.hw.cost.synth import FAMILIES

    if args.family not in FAMILIES:
        raise InvalidArgumentError(f"--family must be one of {', '.join(FAMILIES)}, not {args.family!r}")
    if args.speed not in SPEEDS:
        raise InvalidArgumentError(f"--speed must be one of {', '.join(map(str, SPEEDS))}, not {args.speed}")
    if args.pnr and args.family != "ecp5":
        raise InvalidArgumentError(f"--pnr places and routes on ECP5 only (no open place and route exists for "
                                   f"{args.family}); use --family ecp5")
    if args.constraint_mhz is not None:
        if not args.pnr:
            raise InvalidArgumentError("--constraint-mhz is a place-and-route option; add --pnr")
        if not 0 < args.constraint_mhz < 1000:
            raise InvalidArgumentError(f"--constraint-mhz must be between 0 and 1000, not {args.constraint_mhz:g}")
    if args.seed is not None:
        if not args.pnr:
            raise InvalidArgumentError("--seed is a place-and-route option; add --pnr")
        from tokensift.hw.cost.pnr import MAX_SEED

        if not 1 <= args.seed <= MAX_SEED:
            raise InvalidArgumentError(f"--seed must be between 1 and {MAX_SEED}, not {args.seed}")


def run(args) -> int:
    from amaranth.back import verilog

    from tokensift.cli import emit_json
    from tokensift.hw.cost.pnr import DEFAULT_CONSTRAINT_MHZ, place_and_route_verilog
    from tokensift.hw.cost.synth import synthesize_verilog

    check_options(args)
    try:
        component, toplevel, parameters = args._glue.build(args)
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError(str(exc)) from None
    # with --pnr the Python source locations travel into the netlist: the critical path's hops name them
    text = verilog.convert(component, name=toplevel, emit_src=args.pnr)
    print(f"synthesizing {args.block} ({toplevel}) for {args.family}"
          + (f", then place and route at speed {args.speed}" if args.pnr else ""), file=sys.stderr)
    out = {"block": args.block, "top": toplevel,
           "params": {k: v for k, v in parameters.items() if isinstance(v, (int, float, str, bool))}}
    if args.pnr:
        constraint = args.constraint_mhz if args.constraint_mhz is not None else DEFAULT_CONSTRAINT_MHZ
        out["pnr"] = place_and_route_verilog(text, top=toplevel, speed=args.speed, constraint_mhz=constraint,
                                             use_cache=not args.no_cache, seed=args.seed)
    else:
        res = synthesize_verilog(text, family=args.family, top=toplevel, use_cache=not args.no_cache)
        out["synth"] = {k: v for k, v in res.items() if k != "cells"} | {"cells": res["cells"]}
    if args.json:
        emit_json(out)
        return 0
    _print(out)
    return 0


def _print(out: dict) -> None:
    print(f"{out['block']} ({out['top']}): " + ", ".join(f"{k}={v}" for k, v in out["params"].items()))
    if "synth" in out:
        s = out["synth"]
        print(f"Yosys {s['family']}: " + ", ".join(f"{k} {s[k]}" for k in ("dsp", "bram18", "bram36", "ebr", "lut", "ff")
                                                   if k in s))
        return
    p = out["pnr"]
    verdict = "meets" if p["meets_constraint"] else "misses"
    print(f"nextpnr-ecp5 {p['part']} {p['package']} speed {p['speed']}, seed {p['seed']}: Fmax {p['fmax_mhz']:g} MHz "
          f"({verdict} {p['constraint_mhz']:g} MHz)")
    cp = p["critical_path"]
    if cp is not None:
        print(f"critical path: {cp['from']} -> {cp['to']}: {cp['total_ns']:g} ns = {cp['logic_ns']:g} ns logic + "
              f"{cp['routing_ns']:g} ns routing")
        for hop in cp["hops"]:
            print(f"  {hop['at_ns']:7.3f} ns  {hop['net']}  {hop['source']}")
    print("utilization: " + ", ".join(f"{k} {v}" for k, v in p["utilization"].items()))
