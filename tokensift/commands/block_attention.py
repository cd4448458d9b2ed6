"""CLI glue of the attention accelerator (:mod:`tokensift.hw.attention.core`)."""

from __future__ import annotations

HELP = "attention accelerator: one head of softmax(Q K^T * scale) V on int8, plus the class-attention row"

_TOPLEVEL = "tokensift_attention"


def _common(parser):
    from tokensift.quant.softmax import SoftmaxVariant

    parser.add_argument("--n-max", type=int, default=197, help="largest token count per frame")
    parser.add_argument("--head-dim", type=int, default=64, help="channels per head (a multiple of --lanes)")
    parser.add_argument("--lanes", type=int, default=16, help="multipliers of the MAC array")
    parser.add_argument("--data-bits", type=int, default=8, help="width of the signed Q, K, V and outputs")
    parser.add_argument("--acc-bits", type=int, default=32, help="width of the MAC accumulators")
    parser.add_argument("--softmax", choices=[v.value for v in SoftmaxVariant], default="exp2_lut",
                        help="softmax exponential: lookup table or polynomial")
    parser.add_argument("--log2-frac", type=int, default=8, help="fractional bits of the base-2 exponent")
    parser.add_argument("--exp-frac", type=int, default=15, help="fractional bits of the exponentials")
    parser.add_argument("--prob-frac", type=int, default=15, help="fractional bits of the probabilities")
    parser.add_argument("--scale-multiplier", type=int, default=None,
                        help="softmax scale into the log2 domain (default: 2**-8 / sqrt(head_dim))")
    parser.add_argument("--scale-shift", type=int, default=None,
                        help="right shift of the softmax scale (default: derived with --scale-multiplier)")
    parser.add_argument("--out-multiplier", type=int, default=1, help="requantization multiplier of the outputs")
    parser.add_argument("--out-shift", type=int, default=None, help="default: --prob-frac (output in V's scale)")
    parser.add_argument("--heads-parallel", type=int, default=1, help="core copies")


def params_from_args(args):
    """The :class:`AttentionParams` of the command line (its validation errors are the CLI's)."""
    from tokensift.quant.attention import AttentionParams
    from tokensift.quant.softmax import SoftmaxParams

    softmax = SoftmaxParams(variant=args.softmax, log2_frac=args.log2_frac, exp_frac=args.exp_frac,
                            prob_frac=args.prob_frac)
    return AttentionParams(n_max=args.n_max, head_dim=args.head_dim, lanes=args.lanes, data_bits=args.data_bits,
                           acc_bits=args.acc_bits, softmax=softmax, scale_multiplier=args.scale_multiplier,
                           scale_shift=args.scale_shift, out_multiplier=args.out_multiplier,
                           out_shift=args.out_shift, heads_parallel=args.heads_parallel)


def add_generate_arguments(parser):
    _common(parser)


def build(args):
    from tokensift.hw.attention.core import Attention, cycles
    from tokensift.hw.attention.layout import describe_formats

    p = params_from_args(args)
    dut = Attention(params=p)
    parameters = {**p.to_dict(), "constant_ranges": dut.ranges.to_dict(), "stream_formats": describe_formats(p),
                  "cycles_n_max": cycles(p, n_tokens=p.n_max)}
    return dut, _TOPLEVEL, parameters


def add_simulate_arguments(parser):
    _common(parser)
    parser.add_argument("--tokens", type=int, default=None, help="runtime token count N (default: --n-max)")
    parser.add_argument("--heads", type=int, default=1, help="frames (heads) sent back to back")


def simulate(args) -> dict:
    from tokensift.commands.blocks import check_count, check_tokens
    from tokensift.hw.attention.cycles import cycles
    from tokensift.quant.attention import macs
    from tokensift.sim.attention_harness import DEFAULT_FRAMES, run_attention

    p = params_from_args(args)
    n = check_tokens(args.tokens, p.n_max)
    check_count("--heads", args.heads)
    expected = cycles(p, n_tokens=n, heads=args.heads)
    # every frame carries the command line's constants
    res = run_attention(p, settings={"runs": [{"ns": [n] * args.heads}], "assert_checks": False, "layers": []},
                        testcase="bulk", seed=args.seed, frames=max(DEFAULT_FRAMES, args.heads),
                        build_dir=args.build_dir, waves=args.waves or False)
    r = res.report["bulk"][0]
    total_macs = args.heads * macs(n, p.head_dim)
    mismatches = r["o_mismatches"] + r["s_mismatches"] + r["flag_mismatches"]
    return {
        "cycles": r["cycles"],
        "bit_exact": r["o_mismatches"] == 0 and r["s_mismatches"] == 0 and r["flag_mismatches"] == 0,
        "macs": total_macs,
        "mac_utilization": total_macs / (p.lanes * p.heads_parallel * r["cycles"]),
        "sim_cycles_per_s": r["sim_cycles_per_s"],
        "sim_cycles_per_cpu_s": r["sim_cycles_per_cpu_s"],
        "expected_cycles": expected,
        "cycles_match": r["cycles"] == expected,
        "mismatches": mismatches,
        "tokens": n,
        "heads": args.heads,
        "output_beats": r["o_beats"],
        "score_beats": r["s_beats"],
        "overflows": r["overflows_hw"],
        "sim_cycles": r["elapsed"],
        "sim_wall_s": r["run_s"],
        "params": p.to_dict(),
        "build_dir": str(res.build_dir),
        "waves": str(res.waves) if res.waves else None,
    }
