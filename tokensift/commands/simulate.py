"""``tokensift simulate BLOCK ...``: cycle-accurate Verilator run, checked bit for bit against quant/."""

from __future__ import annotations

from tokensift.commands import blocks


def add_arguments(parser):
    sub = parser.add_subparsers(dest="block", metavar="BLOCK", required=True)
    for name, glue in blocks.available().items():
        p = sub.add_parser(name, help=glue.HELP, description=glue.HELP)
        glue.add_simulate_arguments(p)
        p.add_argument("--seed", type=int, default=1, help="seed of the random stimulus (default: %(default)s)")
        p.add_argument("--waves", choices=["vcd", "fst"], default=None,
                       help="write a waveform into the build dir (default: none)")
        p.add_argument("--build-dir", default=None,
                       help="Verilator build directory (default: build/sim/<toplevel>-<hash>)")
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        p.set_defaults(_glue=glue)


def run(args) -> int:
    from tokensift.checks import check_output_dir
    from tokensift.cli import emit_json

    if args.build_dir is not None:
        check_output_dir("--build-dir", args.build_dir)
    result = args._glue.simulate(args)
    if args.json:
        emit_json(result)
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
    return 0 if result.get("bit_exact", False) else 1
