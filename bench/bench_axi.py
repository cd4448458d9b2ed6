"""AXI DMA benchmark: cycles of one transfer, measured in Verilator against cocotbext-axi's AxiRam at fixed
latency, next to the cycle model, and the share of the bus's peak (one word per cycle) that it reaches.

For the 64-bit and 128-bit configurations of the timing grid (16 / 64-beat bursts, 4 / 8 outstanding), a
read and a write of ``--kib`` KiB (default 16) from a 4 KiB-aligned address at memory latencies 2 (AxiRam
alone), 30 and 100 cycles: measured cycles (command handshake to the last word / the done, both included),
the model's (:mod:`tokensift.hw.axi.cycles`), and bus efficiency = words / cycles. With ``--quick`` only
the model is evaluated (no Verilator).

    .venv/bin/python bench/bench_axi.py            # Verilator builds the two DMAs of both configurations once
    .venv/bin/python bench/bench_axi.py --quick
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from tokensift.hw.axi.config import AxiDmaConfig
from tokensift.hw.axi.cycles import read_cycles, write_cycles

CONFIGS = {
    "hp64": AxiDmaConfig(data_bytes=8, max_burst=16, max_outstanding=4),
    "hp128": AxiDmaConfig(data_bytes=16, max_burst=64, max_outstanding=8),
}
LATENCIES = (2, 30, 100)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kib", type=int, default=16, help="KiB per transfer (default: 16)")
    ap.add_argument("--quick", action="store_true", help="the model only, no Verilator")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file (default: none)")
    args = ap.parse_args(argv)
    if not 1 <= args.kib <= 1024:
        ap.error(f"--kib must be between 1 and 1024, not {args.kib}")
    length = args.kib * 1024
    rows = []
    for name, cfg in CONFIGS.items():
        for kind, model in (("reader", read_cycles), ("writer", write_cycles)):
            measured = None
            if not args.quick:
                from tokensift.sim.axi_runs import run_dma

                out = run_dma(kind, cfg, latency=LATENCIES[0], timed=[(4096, length)], tests=("timed",))
                measured = {LATENCIES[0]: out["measured"][0]}
                for latency in LATENCIES[1:]:
                    measured[latency] = run_dma(kind, cfg, latency=latency, timed=[(4096, length)],
                                                tests=("timed",))["measured"][0]
            for latency in LATENCIES:
                expected = model(cfg, 4096, length, latency=latency)
                words = length // cfg.data_bytes
                rows.append({"config": name, "kind": kind, "latency": latency, "bytes": length, "words": words,
                             "model_cycles": expected,
                             "measured_cycles": None if measured is None else measured[latency],
                             "efficiency": words / (expected if measured is None else measured[latency])})
    table = Table(title=f"one {args.kib} KiB transfer: cycles, Verilator + AxiRam vs model")
    for col in ("config", "DMA", "latency", "words", "Verilator", "model", "words / cycle"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["config"], r["kind"], str(r["latency"]), str(r["words"]),
                      "-" if r["measured_cycles"] is None else str(r["measured_cycles"]), str(r["model_cycles"]),
                      f"{r['efficiency']:.3f}")
    Console().print(table)
    mismatches = [r for r in rows if r["measured_cycles"] not in (None, r["model_cycles"])]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if mismatches:
        print(f"{len(mismatches)} transfers differ from the model", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
