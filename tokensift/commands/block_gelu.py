"""CLI glue of the GELU unit (:mod:`tokensift.hw.vector.gelu`)."""

from __future__ import annotations

HELP = "GELU unit: lanes int8 codes per cycle through the integer GELU polynomial, constants loaded at run time"

_DEFAULT_SCALES = "0.05:0.05,0.2:0.01,0.004:0.003"


def _common(parser):
    parser.add_argument("--lanes", type=int, default=16, help="codes per beat")
    parser.add_argument("--in-bits", type=int, default=8, help="width of the signed input codes")
    parser.add_argument("--out-bits", type=int, default=8, help="width of the signed output codes")
    parser.add_argument("--multiplier-bits", type=int, default=16,
                        help="width of the run-time requantization multiplier")


def _params(args) -> dict:
    return {"lanes": args.lanes, "in_bits": args.in_bits, "out_bits": args.out_bits,
            "multiplier_bits": args.multiplier_bits}


def _component(p: dict):
    from tokensift.hw.vector.gelu import GeluUnit
    from tokensift.sim.tb_gelu import gelu_unit_params

    return GeluUnit(params=gelu_unit_params(p))


def add_generate_arguments(parser):
    _common(parser)


def build(args):
    p = _params(args)
    return _component(p), "tokensift_gelu", p


def add_simulate_arguments(parser):
    _common(parser)
    parser.add_argument("--scales", default=_DEFAULT_SCALES,
                        help="the layers loaded one after another, as comma-separated IN:OUT scale pairs")
    parser.add_argument("--count", type=int, default=1000,
                        help="random codes per layer (every code when the input width has fewer)")
    parser.add_argument("--beats", type=int, default=200, help="beats of the unstalled, timed run")
    parser.add_argument("--stall", type=float, default=0.3, help="probability of a ready/valid stall per cycle")


def parse_scales(text: str) -> list[tuple[float, float]]:
    """``"IN:OUT,IN:OUT"`` -> scale pairs (each positive and finite)."""
    from tokensift.checks import check_scale
    from tokensift.errors import InvalidArgumentError

    pairs = []
    for item in text.split(","):
        parts = item.split(":")
        try:
            if len(parts) != 2:
                raise ValueError
            pair = (float(parts[0]), float(parts[1]))
        except ValueError:
            raise InvalidArgumentError(f"--scales must be comma-separated IN:OUT scale pairs, not {text!r}") from None
        try:
            pairs.append((check_scale("--scales input scale", pair[0]), check_scale("--scales output scale", pair[1])))
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(str(exc)) from None
    return pairs


def simulate(args) -> dict:
    from tokensift.commands.blocks import check_count, check_stall
    from tokensift.sim.runner import run_cocotb
    from tokensift.sim.tb_gelu import gelu_unit_params, layer_params

    p = _params(args)
    component = _component(p)  # the widths first: the layers' constants are derived for them
    scales = parse_scales(args.scales)
    layer_params(gelu_unit_params(p), scales)  # a scale too coarse for the polynomial is refused here
    check_count("--count", args.count)
    check_count("--beats", args.beats)
    check_stall(args.stall)
    params = {**p, "seed": args.seed, "scales": scales, "count": args.count, "timed_beats": args.beats,
              "idle": args.stall, "stall": args.stall}
    res = run_cocotb(component, toplevel="tokensift_gelu", test_module="tokensift.sim.tb_gelu", params=params,
                     build_dir=args.build_dir, waves=args.waves or False, seed=args.seed)
    r = res.report
    return {"bit_exact": r.get("mismatches") == 0, "values": r.get("values"), "layers": r.get("layers"),
            "mismatches": r.get("mismatches"), "cycles": r.get("cycles"), "expected_cycles": r.get("expected_cycles"),
            "cycles_match": r.get("cycles") == r.get("expected_cycles"),
            "full_throughput": r.get("full_throughput"), "overflows": r.get("overflows_hw"),
            "build_dir": str(res.build_dir), "waves": str(res.waves) if res.waves else None}
