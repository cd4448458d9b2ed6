"""CLI glue of the GEMM engine (:mod:`tokensift.hw.gemm`): the linear layers' int8 matrix array."""

from __future__ import annotations

from tokensift.quant.qparams import MULTIPLIER_BITS

HELP = "GEMM engine: rows x cols int8 MAC array computing IntLinear (bias, per-channel requantization)"


def _common(parser):
    parser.add_argument("--rows", type=int, default=4, help="tokens per tile (a power of two; epilogue lanes)")
    parser.add_argument("--cols", type=int, default=8, help="output channels per tile")
    parser.add_argument("--max-tokens", type=int, default=197, help="largest runtime N of a job")
    parser.add_argument("--max-in", type=int, default=384, help="largest runtime K (input features)")
    parser.add_argument("--max-out", type=int, default=1536, help="largest runtime M (output features)")
    parser.add_argument("--weight-bytes", type=int, default=8, help="bytes per beat of the weight stream")
    parser.add_argument("--out-bits", type=int, default=8,
                        help="widest signed output the engine writes (the residual's, or 16 for logits); "
                             "each job picks its own width 2..this at run time")
    parser.add_argument("--rounding", choices=["half_up", "floor"], default="half_up",
                        help="rounding of the requantization")
    parser.add_argument("--multiplier-bits", type=int, default=MULTIPLIER_BITS,
                        help="width of the unsigned per-channel requantization multipliers")
    parser.add_argument("--pack-pairs", action="store_true",
                        help="two int8 products per DSP48 (xc7, xcup): columns 2j and 2j+1 share one multiplier; "
                             "cols must be even")


def _config(args):
    from tokensift.checks import check_int
    from tokensift.hw.gemm import GemmConfig
    from tokensift.quant.fixed import FixedFormat, Rounding

    check_int("out_bits", args.out_bits, low=2, high=32, numpy=False)
    return GemmConfig(rows=args.rows, cols=args.cols, max_tokens=args.max_tokens, max_in=args.max_in,
                      max_out=args.max_out, weight_bytes=args.weight_bytes,
                      out=FixedFormat(bits=args.out_bits, rounding=Rounding(args.rounding)),
                      multiplier_bits=args.multiplier_bits, pack_pairs=args.pack_pairs)


def add_generate_arguments(parser):
    _common(parser)


def build(args):
    from tokensift.hw.gemm import GemmEngine
    from tokensift.hw.gemm.layout import describe_formats

    cfg = _config(args)
    return GemmEngine(config=cfg), "tokensift_gemm", {**cfg.as_dict(), "formats": describe_formats(cfg)}


def add_simulate_arguments(parser):
    _common(parser)
    parser.add_argument("--tokens", type=int, default=None, help="N of the timed job (default --max-tokens)")
    parser.add_argument("--in-features", type=int, default=None, help="K of the timed job (default --max-in)")
    parser.add_argument("--out-features", type=int, default=None, help="M of the timed job (default --max-out)")
    parser.add_argument("--jobs", type=int, default=3,
                        help="jobs back to back: the timed one (at --out-bits), then random sizes and widths")
    parser.add_argument("--stall", type=float, default=0.3,
                        help="probability of an idle, dry or stalled cycle on each stream in the random run")
    parser.add_argument("--rate", type=int, default=None,
                        help="weight memory bytes per cycle (default --weight-bytes: one beat per cycle)")
    parser.add_argument("--latency", type=int, default=20, help="weight memory latency in cycles")


def simulate(args) -> dict:
    import numpy as np

    from tokensift.commands.blocks import check_count, check_stall, check_tokens
    from tokensift.errors import InvalidArgumentError
    from tokensift.hw.gemm import GemmEngine
    from tokensift.hw.gemm.cycles import cycles
    from tokensift.sim.runner import run_cocotb

    cfg = _config(args)  # the build-time parameters first: the run-time ones depend on them
    n = check_tokens(args.tokens, cfg.max_tokens, limit="--max-tokens")
    k = check_tokens(args.in_features, cfg.max_in, option="--in-features", limit="--max-in")
    m = check_tokens(args.out_features, cfg.max_out, option="--out-features", limit="--max-out")
    check_count("--jobs", args.jobs)
    check_stall(args.stall)
    rate = cfg.weight_bytes if args.rate is None else check_count("--rate", args.rate)
    if args.latency < 0:
        raise InvalidArgumentError(f"--latency must be at least 0, not {args.latency}")
    rng = np.random.default_rng(args.seed)
    jobs = [[n, k, m, "random", cfg.out.bits]] + [
        [int(rng.integers(1, cfg.max_tokens + 1)), int(rng.integers(1, cfg.max_in + 1)),
         int(rng.integers(1, cfg.max_out + 1)), "random", int(rng.integers(2, cfg.out.bits + 1))]
        for _ in range(args.jobs - 1)]
    res = run_cocotb(GemmEngine(config=cfg), toplevel="tokensift_gemm", test_module="tokensift.sim.tb_gemm",
                     params={"config": cfg.as_dict(), "seed": args.seed, "jobs": jobs, "rate": rate,
                             "latency": args.latency, "idle": args.stall, "dry": args.stall, "stall": args.stall},
                     build_dir=args.build_dir, waves=args.waves or False, seed=args.seed)
    r = res.report
    cyc = r["cycles"]
    first = cyc["last_out"][0] - cyc["accepted"][0]
    return {"cycles": first, "expected_cycles": cycles(cfg, n, k, m, weight_bytes_per_cycle=rate,
                                                        weight_latency=args.latency),
            "cycles_match": cyc["last_out"] == cyc["expected_last_out"],
            "bit_exact": sum(r["stalls"]["mismatches"]) + sum(cyc["mismatches"]) == 0,
            "mac_utilization": round(n * k * m / (cfg.macs * first), 4), "jobs": len(jobs),
            "acc_overflows": r["stalls"]["acc_overflows"][0], "out_overflows": r["stalls"]["out_overflows"][0],
            "rejected_flagged": r["range"]["rejected"] == r["range"]["expected_rejected"],
            "reset_exact": r["reset"]["mismatches"] == [0], "build_dir": str(res.build_dir),
            "waves": str(res.waves) if res.waves else None}
