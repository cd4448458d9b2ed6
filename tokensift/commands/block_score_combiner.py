"""CLI glue of the score combiner (:mod:`tokensift.hw.score_combiner.core`)."""

from __future__ import annotations

from tokensift.quant.fixed import Rounding

HELP = "score combiner: per-head class-attention rows x head weights -> one token score per token"


def _common(parser):
    parser.add_argument("--n-max", type=int, default=197, help="most tokens per frame, class token included")
    parser.add_argument("--heads", type=int, default=6, help="most heads per frame")
    parser.add_argument("--lanes", type=int, default=1, help="probabilities per beat (= multipliers)")
    parser.add_argument("--attn-bits", type=int, default=16,
                        help="width of the values: unsigned attention probabilities (signed with --signed)")
    parser.add_argument("--attn-frac", type=int, default=15, help="fractional bits of the probabilities")
    parser.add_argument("--importance-bits", type=int, default=9, help="width of the unsigned head weights")
    parser.add_argument("--importance-frac", type=int, default=8, help="fractional bits of the head weights")
    parser.add_argument("--score-bits", type=int, default=16, help="width of the token scores")
    parser.add_argument("--score-frac", type=int, default=15, help="fractional bits of the token scores")
    parser.add_argument("--rounding", choices=[r.value for r in Rounding], default="half_up",
                        help="rounding of the weighted sum into the score format")
    parser.add_argument("--signed", action="store_true",
                        help="signed values and scores (SPViT's logit differences); o_score then carries "
                             "order_key(score), the unsigned key the selector ranks")
    parser.add_argument("--per-token-weights", action="store_true",
                        help="build the per-token weight mode (the command's per_token bit: one weight per head "
                             "and token, lanes per weight beat; the released AS-ViT and SPViT)")


def _params(args) -> dict:
    return {"n_max": args.n_max, "heads": args.heads, "lanes": args.lanes, "attn_bits": args.attn_bits,
            "attn_frac": args.attn_frac, "importance_bits": args.importance_bits,
            "importance_frac": args.importance_frac, "score_bits": args.score_bits, "score_frac": args.score_frac,
            "rounding": args.rounding, "signed": args.signed, "per_token_weights": args.per_token_weights}


def _component(p: dict):
    from tokensift.hw.score_combiner.resources import build
    from tokensift.sim.tb_score_combiner import combiner_params

    return build(combiner_params(p))


def add_generate_arguments(parser):
    _common(parser)


def build(args):
    p = _params(args)
    return _component(p), "tokensift_score_combiner", p


def add_simulate_arguments(parser):
    _common(parser)
    parser.add_argument("--tokens", type=int, default=None, help="N of the timed frames (default n_max)")
    parser.add_argument("--frame-heads", type=int, default=None, help="H of the timed frames (default --heads)")
    parser.add_argument("--frames", type=int, default=4, help="random frames under stalls")
    parser.add_argument("--stall", type=float, default=0.3, help="probability of a ready/valid stall per cycle")
    parser.add_argument("--per-token", action="store_true",
                        help="time the per-token weight mode (needs --per-token-weights; the random frames "
                             "switch between the modes whenever the block has both)")


def simulate(args) -> dict:
    from tokensift.commands.blocks import check_count, check_stall, check_tokens
    from tokensift.errors import InvalidArgumentError
    from tokensift.sim.runner import run_cocotb

    p = _params(args)
    component = _component(p)  # validates the build-time parameters first: the run-time ones depend on them
    tokens = check_tokens(args.tokens, args.n_max)
    frame_heads = check_tokens(args.frame_heads, args.heads, option="--frame-heads", limit="--heads")
    check_count("--frames", args.frames)
    check_stall(args.stall)
    if args.per_token and not args.per_token_weights:
        raise InvalidArgumentError("--per-token needs a block built with --per-token-weights")
    params = {**p, "seed": args.seed, "frames": args.frames, "idle": args.stall, "stall": args.stall,
              "tokens": tokens, "frame_heads": frame_heads, "per_token": args.per_token}
    res = run_cocotb(component, toplevel="tokensift_score_combiner",
                     test_module="tokensift.sim.tb_score_combiner", params=params, build_dir=args.build_dir,
                     waves=args.waves or False, seed=args.seed)
    r = res.report
    return {"cycles": r.get("cycles"), "expected_cycles": r.get("expected_cycles"),
            "cycles_match": r.get("cycles") == r.get("expected_cycles"), "bit_exact": r.get("mismatches") == 0,
            "scores": r.get("scores"), "frames": r.get("frames"), "status": r.get("status"),
            "overflows": r.get("overflows_hw"), "build_dir": str(res.build_dir),
            "waves": str(res.waves) if res.waves else None}
