"""CLI glue of the streaming LayerNorm unit (:mod:`tokensift.hw.vector.layernorm`)."""

from __future__ import annotations

from tokensift.quant.fixed import FixedFormat, Rounding

HELP = "streaming integer LayerNorm: int8 tokens -> int8, bit-exact with quant.layernorm, constants loaded per job"

#: the header's token count is 16 bits wide
_TOKENS_MAX = (1 << 16) - 1


def _common(parser):
    parser.add_argument("--c-max", type=int, default=384, help="most channels per token (C), 1 to 4096")
    parser.add_argument("--lanes", type=int, default=16, help="codes per beat, a power of two 1 to 64")
    parser.add_argument("--in-bits", type=int, default=8, help="width of the signed input codes")
    parser.add_argument("--recip-bits", type=int, default=16, help="significant bits of the reciprocal square root")
    parser.add_argument("--norm-bits", type=int, default=16, help="width of the normalised values")
    parser.add_argument("--gamma-bits", type=int, default=16, help="width of the gamma codes")
    parser.add_argument("--acc-bits", type=int, default=32, help="width of the affine accumulator (and beta codes)")
    parser.add_argument("--out-bits", type=int, default=8, help="width of the signed output codes")
    parser.add_argument("--rounding", choices=[Rounding.HALF_UP.value, Rounding.FLOOR.value], default="half_up",
                        help="rounding of the output requantization")
    parser.add_argument("--mult-bits", type=int, default=16, help="width of the run-time requantization multiplier")
    parser.add_argument("--eps-bits", type=int, default=32, help="width of the run-time epsilon")


def _params(args) -> dict:
    return {"c_max": args.c_max, "lanes": args.lanes, "in_bits": args.in_bits, "recip_bits": args.recip_bits,
            "norm_bits": args.norm_bits, "gamma_bits": args.gamma_bits, "acc_bits": args.acc_bits,
            "out_bits": args.out_bits, "rounding": args.rounding, "mult_bits": args.mult_bits,
            "eps_bits": args.eps_bits}


def _config(p: dict):
    from tokensift.hw.vector.layernorm_layout import LayerNormConfig

    out = FixedFormat(bits=p["out_bits"], rounding=Rounding(p["rounding"]))
    return LayerNormConfig(c_max=p["c_max"], lanes=p["lanes"], in_bits=p["in_bits"], recip_bits=p["recip_bits"],
                           norm_bits=p["norm_bits"], gamma_bits=p["gamma_bits"], acc_bits=p["acc_bits"], out=out,
                           mult_bits=p["mult_bits"], eps_bits=p["eps_bits"])


def add_generate_arguments(parser):
    _common(parser)


def build(args):
    from tokensift.hw.vector.layernorm import LayerNorm

    p = _params(args)
    cfg = _config(p)
    return LayerNorm(config=cfg), "tokensift_layernorm", {**p, "stats_latency": cfg.stats_latency,
                                                          "row_depth": cfg.row_depth}


def add_simulate_arguments(parser):
    _common(parser)
    parser.add_argument("--dim", type=int, default=None, help="C of the simulated jobs (default --c-max)")
    parser.add_argument("--tokens", type=int, default=8, help="tokens per job")
    parser.add_argument("--jobs", type=int, default=2, help="jobs back to back, each with its own random constants")
    parser.add_argument("--stall", type=float, default=0.3, help="probability of a ready/valid stall per cycle")


def simulate(args) -> dict:
    from tokensift.commands.blocks import check_count, check_stall, check_tokens
    from tokensift.hw.vector.layernorm import LayerNorm
    from tokensift.sim.runner import run_cocotb

    p = _params(args)
    cfg = _config(p)  # the build-time parameters first: the run-time ones are checked against them
    dim = check_tokens(args.dim, cfg.c_max, option="--dim", limit="--c-max")
    tokens = check_tokens(args.tokens, _TOKENS_MAX, option="--tokens", limit="the header's")
    jobs = check_count("--jobs", args.jobs)
    check_stall(args.stall)
    params = {"config": cfg.to_dict(), "seed": args.seed, "jobs": [[dim, tokens]] * jobs, "idle": args.stall,
              "stall": args.stall}
    res = run_cocotb(LayerNorm(config=cfg), toplevel="tokensift_layernorm", test_module="tokensift.sim.tb_layernorm",
                     params=params, build_dir=args.build_dir, waves=args.waves or False, seed=args.seed)
    r = res.report
    exact = all(r.get(k) == 0 for k in ("mismatches", "timed_mismatches", "reset_mismatches"))
    return {"bit_exact": exact, "cycles": r.get("total_cycles"),
            "expected_cycles": sum(r.get("expected_cycles", [])), "job_cycles": r.get("cycles"),
            "cycles_per_token": cfg.beats(dim), "beats": r.get("timed_beats"),
            "acc_overflows": r.get("acc_overflows"), "out_overflows": r.get("out_overflows"),
            "build_dir": str(res.build_dir), "waves": str(res.waves) if res.waves else None}
