"""CLI glue of the token mean (:mod:`tokensift.hw.vector.token_mean`)."""

from __future__ import annotations

HELP = "token mean: per-channel mean of a frame of kept tokens (DynamicViT's global half), lanes codes per cycle"


def _common(parser):
    parser.add_argument("--lanes", type=int, default=16, help="codes per beat (a power of two)")
    parser.add_argument("--bits", type=int, default=8, help="width of the signed codes")
    parser.add_argument("--n-max", type=int, default=197, help="most tokens per frame")
    parser.add_argument("--c-max", type=int, default=192, help="most channels per token")


def _params(args) -> dict:
    return {"lanes": args.lanes, "bits": args.bits, "n_max": args.n_max, "c_max": args.c_max}


def _component(p: dict):
    from tokensift.hw.vector.token_mean import TokenMean
    from tokensift.sim.tb_token_mean import token_mean_params

    return TokenMean(params=token_mean_params(p))


def add_generate_arguments(parser):
    _common(parser)


def build(args):
    p = _params(args)
    return _component(p), "tokensift_token_mean", p


def add_simulate_arguments(parser):
    _common(parser)
    parser.add_argument("--tokens", type=int, default=None, help="N of the timed frames (default n_max)")
    parser.add_argument("--channels", type=int, default=None, help="C of the timed frames (default c_max)")
    parser.add_argument("--frames", type=int, default=6, help="random frames under stalls (after the corners)")
    parser.add_argument("--stall", type=float, default=0.3, help="probability of a ready/valid stall per cycle")


def simulate(args) -> dict:
    from tokensift.commands.blocks import check_count, check_stall, check_tokens
    from tokensift.sim.runner import run_cocotb

    p = _params(args)
    component = _component(p)
    tokens = check_tokens(args.tokens, args.n_max)
    channels = check_tokens(args.channels, args.c_max, option="--channels", limit="--c-max")
    check_count("--frames", args.frames)
    check_stall(args.stall)
    params = {**p, "seed": args.seed, "frames": args.frames, "tokens": tokens, "channels": channels,
              "idle": args.stall, "stall": args.stall}
    res = run_cocotb(component, toplevel="tokensift_token_mean", test_module="tokensift.sim.tb_token_mean",
                     params=params, build_dir=args.build_dir, waves=args.waves or False, seed=args.seed)
    r = res.report
    return {"bit_exact": r.get("mismatches") == 0, "frames": r.get("frames"), "beats": r.get("beats"),
            "errors_flagged": r.get("errors_flagged"), "mismatches": r.get("mismatches"), "cycles": r.get("cycles"),
            "expected_cycles": r.get("expected_cycles"), "cycles_match": r.get("cycles") == r.get("expected_cycles"),
            "back_to_back_cycles": r.get("back_to_back_cycles"), "back_to_back_beats": r.get("back_to_back_beats"),
            "back_to_back_match": r.get("back_to_back_cycles") == r.get("expected_back_to_back_cycles"),
            "build_dir": str(res.build_dir), "waves": str(res.waves) if res.waves else None}
