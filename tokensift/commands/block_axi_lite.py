"""CLI glue of the AXI4-Lite register bank (:mod:`tokensift.hw.axi.registers`)."""

from __future__ import annotations

HELP = "AXI4-Lite register bank: RW (range-checked) / RO / W1C / W1S registers, error register, irq"


def add_generate_arguments(parser):
    parser.add_argument("--regmap", default=None,
                        help="JSON register map (RegisterMap.as_dict's form); default: the example control block")


def _regmap(args):
    import json

    from tokensift.checks import check_input_file
    from tokensift.errors import InvalidArgumentError
    from tokensift.hw.axi.config import RegisterMap, example_regmap

    if args.regmap is None:
        return example_regmap()
    path = check_input_file("--regmap", args.regmap)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"--regmap {args.regmap!r} is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("registers"), list):
        raise InvalidArgumentError(f"--regmap {args.regmap!r} must be an object with a list of registers")
    try:
        return RegisterMap.from_dict(data)
    except (KeyError, TypeError) as exc:
        raise InvalidArgumentError(f"--regmap {args.regmap!r}: a register lacks or mistypes {exc}") from None


def build(args):
    from tokensift.hw.axi.registers import AxiLiteRegisters

    regmap = _regmap(args)
    return AxiLiteRegisters(regmap=regmap), "tokensift_axi_lite", regmap.as_dict()


def add_simulate_arguments(parser):
    add_generate_arguments(parser)
    parser.add_argument("--accesses", type=int, default=300, help="random reads and writes")
    parser.add_argument("--pause", type=float, default=0.3, help="probability of a pause per cycle on each channel")


def simulate(args) -> dict:
    from tokensift.commands.blocks import check_count, check_stall
    from tokensift.sim.axi_runs import run_registers

    regmap = _regmap(args)
    check_count("--accesses", args.accesses)
    check_stall(args.pause, "--pause")
    r = run_registers(regmap, seed=args.seed, pause=args.pause, accesses=args.accesses, build_dir=args.build_dir,
                      waves=args.waves or False)
    return {"bit_exact": r.get("mismatches") == [], "mismatches": r.get("mismatches"), "writes": r.get("writes"),
            "reads": r.get("reads"), "slverr": r.get("slverr"), "decerr": r.get("decerr"),
            "range_rejected": r.get("range_rejected"), "write_orders": r.get("write_orders"),
            "build_dir": r["build_dir"], "waves": r["waves"]}
