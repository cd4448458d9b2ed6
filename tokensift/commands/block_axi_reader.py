"""CLI glue of the AXI4 read DMA (:mod:`tokensift.hw.axi.reader`); the write DMA's glue shares it."""

from __future__ import annotations

HELP = "AXI4 master read DMA: (address, length) commands -> bus words, INCR bursts cut at 4 KiB, several in flight"
KIND = "reader"


def add_dma_arguments(parser):
    parser.add_argument("--data-bytes", type=int, default=8, help="bytes per bus word (4, 8, 16 or 32)")
    parser.add_argument("--addr-width", type=int, default=32, help="byte-address width")
    parser.add_argument("--max-burst", type=int, default=16, help="beats per burst at most (1..256)")
    parser.add_argument("--max-outstanding", type=int, default=4, help="bursts in flight at most (1..16)")
    parser.add_argument("--length-bits", type=int, default=24, help="width of a command's byte length")


def dma_config(args):
    from tokensift.hw.axi.config import AxiDmaConfig

    return AxiDmaConfig(data_bytes=args.data_bytes, addr_width=args.addr_width, max_burst=args.max_burst,
                        max_outstanding=args.max_outstanding, length_bits=args.length_bits)


def build_dma(args, kind: str):
    from tokensift.hw.axi.reader import AxiReader
    from tokensift.hw.axi.writer import AxiWriter

    cfg = dma_config(args)
    component = (AxiReader if kind == "reader" else AxiWriter)(config=cfg)
    return component, f"tokensift_axi_{kind}", cfg.as_dict()


def add_simulate_dma_arguments(parser):
    add_dma_arguments(parser)
    parser.add_argument("--latency", type=int, default=2,
                        help="memory latency in cycles (AR -> first R, last W -> B); AxiRam alone takes 2")
    parser.add_argument("--commands", type=int, default=30, help="random commands under back-pressure")
    parser.add_argument("--max-length", type=int, default=600, help="longest random command in bytes")
    parser.add_argument("--pause", type=float, default=0.3, help="probability of a pause per cycle on each AXI channel")
    parser.add_argument("--stall", type=float, default=0.3, help="probability of a stall per cycle on the streams")


def simulate_dma(args, kind: str) -> dict:
    from tokensift.commands.blocks import check_count, check_stall
    from tokensift.errors import InvalidArgumentError
    from tokensift.sim.axi_memory import AXIRAM_LATENCY
    from tokensift.sim.axi_runs import run_dma

    cfg = dma_config(args)
    if args.latency < AXIRAM_LATENCY:
        raise InvalidArgumentError(f"--latency must be at least {AXIRAM_LATENCY} (AxiRam's own), not {args.latency}")
    check_count("--commands", args.commands)
    check_count("--max-length", args.max_length)
    if args.max_length > min(cfg.max_length, 1 << 15):
        raise InvalidArgumentError(f"--max-length must be at most {min(cfg.max_length, 1 << 15)}, not "
                                   f"{args.max_length}")
    check_stall(args.pause, "--pause")
    check_stall(args.stall)
    b = cfg.data_bytes
    timed = [(0, 1), (0, cfg.burst_bytes + 1), (4096 - 2 * b, 6 * b + 3), (b, min(4 * cfg.burst_bytes + 5, 30_000))]
    r = run_dma(kind, cfg, latency=args.latency, timed=timed, seed=args.seed, pause=args.pause, stall=args.stall,
                commands=args.commands, max_length=args.max_length, build_dir=args.build_dir,
                waves=args.waves or False)
    cycles_match = r.get("measured") == r["expected"]
    exact = r.get("bad_commands") == 0 and r.get("after_reset_bad") == 0 and r.get("errors") == 0
    return {"bit_exact": bool(exact and cycles_match and r.get("errors_flagged")), "commands": r.get("commands"),
            "bytes": r.get("bytes"), "bad_commands": r.get("bad_commands"), "timed_commands": timed,
            "cycles": r.get("measured"), "expected_cycles": r["expected"], "cycles_match": cycles_match,
            "errors_flagged": r.get("errors_flagged"), "reset_recovered": r.get("after_reset_bad") == 0,
            "build_dir": r["build_dir"], "waves": r["waves"]}


def add_generate_arguments(parser):
    add_dma_arguments(parser)


def build(args):
    return build_dma(args, KIND)


def add_simulate_arguments(parser):
    add_simulate_dma_arguments(parser)


def simulate(args) -> dict:
    return simulate_dma(args, KIND)
