"""CLI glue of the token selector (:mod:`tokensift.hw.selector.core`): ``generate selector``, ``simulate selector``."""

from __future__ import annotations

HELP = ("token selector: top-k, threshold or mass keep in O(N) cycles, compaction in original order, package token "
        "(mean or sum)")

TOPLEVEL = "tokensift_selector"


def _common(parser):
    parser.add_argument("--n-max", type=int, default=197, help="most tokens per frame, class token included")
    parser.add_argument("--dim", type=int, default=384, help="features per token")
    parser.add_argument("--lanes", type=int, default=16, help="features per stream beat = package-token MACs")
    parser.add_argument("--score-bits", type=int, default=16, help="width of the unsigned scores")
    parser.add_argument("--feature-bits", type=int, default=8, help="width of the signed features")
    parser.add_argument("--package", action="store_true", help="build (and, when simulating, use) the package token")
    parser.add_argument("--weight-bits", type=int, default=0,
                        help="width of a per-token package weight next to each score (0: the score is the weight)")
    parser.add_argument("--weight-frac", type=int, default=0,
                        help="fractional bits of the package weights, rounded away by the sum package rule")
    parser.add_argument("--mass-mode", action="store_true", help="build SaiT's mass mode")
    parser.add_argument("--mass-frac", type=int, default=15, help="fractional bits of the run-time mass")


def _params(args):
    from tokensift.quant.select import SelectorParams

    return SelectorParams(n_max=args.n_max, dim=args.dim, lanes=args.lanes, score_bits=args.score_bits,
                          feature_bits=args.feature_bits, package=args.package, weight_bits=args.weight_bits,
                          weight_frac=args.weight_frac, mass=args.mass_mode or getattr(args, "mass", None) is not None,
                          mass_frac=args.mass_frac)


def _component(p):
    from dataclasses import asdict

    from tokensift.hw.selector.core import Selector

    return Selector(**asdict(p))


def add_generate_arguments(parser):
    _common(parser)


def build(args):
    from dataclasses import asdict

    p = _params(args)
    return _component(p), TOPLEVEL, asdict(p)


def add_simulate_arguments(parser):
    _common(parser)
    parser.add_argument("--tokens", type=int, default=None, help="tokens N of the frame (default: n_max)")
    rule = parser.add_mutually_exclusive_group(required=True)
    rule.add_argument("--keep", type=int, help="top-k: patch tokens to keep (the class token is always kept)")
    rule.add_argument("--threshold", type=int, help="threshold: keep patch tokens whose score is greater")
    rule.add_argument("--mass", type=int, help="mass (SaiT): keep the best patch tokens holding mass / 2**mass-frac "
                                               "of the candidates' total score (builds mass mode)")
    parser.add_argument("--package-rule", choices=("mean", "sum"), default="mean",
                        help="package token: the weighted mean or the unnormalised weighted sum of the pruned tokens")


def simulate(args) -> dict:
    from dataclasses import asdict

    from tokensift.commands.blocks import check_tokens
    from tokensift.errors import InvalidArgumentError
    from tokensift.quant.select import Mode, Status, check_runtime
    from tokensift.sim.runner import run_cocotb

    p = _params(args)
    tokens = check_tokens(args.tokens, p.n_max)
    mode, option = ((Mode.TOPK, "--keep") if args.keep is not None else
                    (Mode.THRESHOLD, "--threshold") if args.threshold is not None else (Mode.MASS, "--mass"))
    try:
        status = check_runtime(p, n_tokens=tokens, mode=mode, k=args.keep, threshold=args.threshold, mass=args.mass)
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError(f"{option}: {exc}") from None
    # the hardware answers these frames with an error status and no tokens; the CLI refuses them up front
    if status is Status.K_TOO_LARGE:
        raise InvalidArgumentError(f"--keep must be at most --tokens - 1 = {tokens - 1} (the class token is "
                                   f"always kept), not {args.keep}")
    if status is Status.MASS_TOO_LARGE:
        raise InvalidArgumentError(f"--mass must be at most 2**--mass-frac = {1 << p.mass_frac} (the whole), "
                                   f"not {args.mass}")
    params = {"config": asdict(p), "seed": args.seed, "tokens": tokens, "keep": args.keep,
              "threshold": args.threshold, "mass": args.mass, "package": args.package,
              "package_rule": args.package_rule}
    res = run_cocotb(_component(p), toplevel=TOPLEVEL, test_module="tokensift.sim.tb_selector",
                     params=params, build_dir=args.build_dir, testcase="cli_frame", waves=args.waves or False,
                     seed=args.seed)
    r = res.report
    return {
        "cycles": r.get("cycles"),
        "bit_exact": r.get("bit_exact", False),
        "kept": r.get("kept"),
        "expected_cycles": r.get("expected_cycles"),
        "cycles_match": r.get("cycles") == r.get("expected_cycles"),
        "status": status.name,
        "mode": mode.name.lower(),
        "tokens": tokens,
        "keep": args.keep,
        "threshold": args.threshold,
        "mass": args.mass,
        "package_rule": args.package_rule,
        "package": r.get("package"),
        "overflows": r.get("overflows"),
        "indices": r.get("indices"),
        "error": r.get("error"),
        "build_dir": str(res.build_dir),
        "waves": str(res.waves) if res.waves else None,
    }
