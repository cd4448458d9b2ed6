"""CLI glue of the saturating residual adder (:mod:`tokensift.hw.vector.residual`)."""

from __future__ import annotations

from tokensift.quant.fixed import Overflow

HELP = "residual adder: lanes pairs of residual codes per cycle, summed and saturated, overflows counted"


def _common(parser):
    parser.add_argument("--lanes", type=int, default=16, help="values per beat")
    parser.add_argument("--res-bits", type=int, default=16, help="width of the signed residual codes")
    parser.add_argument("--overflow", choices=[o.value for o in Overflow], default="saturate",
                        help="what happens to sums out of range")


def _params(args) -> dict:
    return {"lanes": args.lanes, "res_bits": args.res_bits, "overflow": args.overflow}


def _component(p: dict):
    from tokensift.checks import check_int
    from tokensift.hw.vector.residual import ResidualAdd
    from tokensift.sim.tb_residual import residual_params

    check_int("--res-bits", p["res_bits"], low=2, high=32)  # before the format, whose own limit is wider
    return ResidualAdd(params=residual_params(p))


def add_generate_arguments(parser):
    _common(parser)


def build(args):
    p = _params(args)
    return _component(p), "tokensift_residual", p


def add_simulate_arguments(parser):
    _common(parser)
    parser.add_argument("--beats", type=int, default=500, help="beats under random stalls")
    parser.add_argument("--timed-beats", type=int, default=200, help="beats of the unstalled, timed run")
    parser.add_argument("--stall", type=float, default=0.3, help="probability of a ready/valid stall per cycle")


def simulate(args) -> dict:
    from tokensift.commands.blocks import check_count, check_stall
    from tokensift.sim.runner import run_cocotb

    p = _params(args)
    component = _component(p)
    check_count("--beats", args.beats)
    check_count("--timed-beats", args.timed_beats)
    check_stall(args.stall)
    params = {**p, "seed": args.seed, "beats": args.beats, "timed_beats": args.timed_beats, "idle": args.stall,
              "stall": args.stall}
    res = run_cocotb(component, toplevel="tokensift_residual", test_module="tokensift.sim.tb_residual",
                     params=params, build_dir=args.build_dir, waves=args.waves or False, seed=args.seed)
    r = res.report
    return {"bit_exact": r.get("mismatches") == 0, "values": r.get("values"), "mismatches": r.get("mismatches"),
            "cycles": r.get("cycles"), "expected_cycles": r.get("expected_cycles"),
            "cycles_match": r.get("cycles") == r.get("expected_cycles"),
            "full_throughput": r.get("full_throughput"), "overflows": r.get("overflows_hw"),
            "build_dir": str(res.build_dir), "waves": str(res.waves) if res.waves else None}
