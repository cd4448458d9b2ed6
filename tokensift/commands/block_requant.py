"""CLI glue of the streaming requantizer (:mod:`tokensift.hw.common.requant`)."""

from __future__ import annotations

from tokensift.quant.fixed import FixedFormat, Overflow, Rounding

HELP = "streaming requantizer: int32 accumulators -> int8 by a fixed-point multiplier and rounding shift"


def _common(parser):
    parser.add_argument("--acc-bits", type=int, default=32, help="width of the signed accumulators")
    parser.add_argument("--out-bits", type=int, default=8, help="width of the signed outputs")
    parser.add_argument("--multiplier", type=int, default=1 << 14, help="fixed-point multiplier, 1 to 2**31 - 1")
    parser.add_argument("--shift", type=int, default=20, help="rounding right shift after the multiply, 0 to 62")
    parser.add_argument("--rounding", choices=[r.value for r in Rounding], default="half_up",
                        help="rounding of the shift")
    parser.add_argument("--overflow", choices=[o.value for o in Overflow], default="saturate",
                        help="what happens to outputs out of range")


def _params(args) -> dict:
    return {"acc_bits": args.acc_bits, "out_bits": args.out_bits, "multiplier": args.multiplier,
            "shift": args.shift, "rounding": args.rounding, "overflow": args.overflow}


def _component(p: dict):
    from tokensift.hw.common.requant import Requantizer

    out = FixedFormat(bits=p["out_bits"], rounding=Rounding(p["rounding"]), overflow=Overflow(p["overflow"]))
    return Requantizer(acc_bits=p["acc_bits"], out=out, multiplier=p["multiplier"], shift=p["shift"])


def add_generate_arguments(parser):
    _common(parser)


def build(args):
    p = _params(args)
    return _component(p), "tokensift_requant", p


def add_simulate_arguments(parser):
    _common(parser)
    parser.add_argument("--count", type=int, default=1000, help="values to stream through")
    parser.add_argument("--stall", type=float, default=0.2, help="probability of a ready/valid stall per cycle")


def simulate(args) -> dict:
    from tokensift.commands.blocks import check_count, check_stall
    from tokensift.sim.runner import run_cocotb

    check_count("--count", args.count)
    check_stall(args.stall)
    p = _params(args)
    params = {**p, "seed": args.seed, "count": args.count, "idle": args.stall, "stall": args.stall}
    res = run_cocotb(_component(p), toplevel="tokensift_requant", test_module="tokensift.sim.tb_requant",
                     params=params, build_dir=args.build_dir, waves=args.waves or False, seed=args.seed)
    r = res.report
    return {"bit_exact": r.get("mismatches") == 0, "count": r.get("count"), "mismatches": r.get("mismatches"),
            "overflows": r.get("overflows_hw"), "build_dir": str(res.build_dir),
            "waves": str(res.waves) if res.waves else None}
