"""The accelerator's GEMM op engine on DeiT-S's linear layers: op cycles against the GEMM engine alone.

The op's cycles come from :func:`tokensift.hw.accel.op_gemm.cycles`, which equals the RTL's measured cycles
exactly at a fixed DRAM latency (``tests/hw/test_accel_gemm.py``: every GEMM and PATCH_EMBED of compiled
dense and DynamicViT models, several buffer shapes). The engine is ``banks x gemm_cols = 8 x 128`` MACs,
buffers of 8 lanes, a 128-bit AXI port (16 bytes per cycle), DRAM latency 100 cycles. Per layer:

- **op**: ``start`` to ``done`` of the instruction (record fetch and check, activations from the token
  buffers or the input region, the weight stream, the outputs written back);
- **engine (first job)**: the GEMM engine alone on the same job, from its job beat with the activations
  already loaded and the weights waiting (:func:`tokensift.hw.gemm.cycles.cycles`);
- **engine (stream)**: the same job in a stream of jobs (activations and first weight tile loaded during
  the previous job), the engine's best case;
- **act load**: ``ceil(n / banks) x k`` act beats at one per cycle: the GEMM engine takes a job beat only
  after all of its activations, so this is not hidden.

utilization = n k m / (MACs x op cycles).

    .venv/bin/python bench/bench_accel_gemm.py
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from tokensift.hw.accel.config import AccelConfig
from tokensift.hw.accel.op_gemm import cycles, gemm_config
from tokensift.hw.axi.config import AxiDmaConfig
from tokensift.hw.gemm.cycles import cycles as engine_cycles
from tokensift.hw.gemm.cycles import schedule
from tokensift.quant.accel.image import Envelope
from tokensift.quant.accel.isa import Opcode

DEIT_S = Envelope(max_tokens=197, width=384, heads=6, mlp_hidden=1536, depth=12, classes=1000, patch_size=16,
                  in_chans=3, patches=196, res_bits=16, prob_frac=15, stages=3, head_dim=64)
CONFIG = AccelConfig(envelope=DEIT_S, banks=8, lanes=8, gemm_cols=128, axi=AxiDmaConfig(data_bytes=16))
LATENCY = 100
#: (name, opcode, n, k, m): a dense block, the same after DynamicViT's three stages (68 tokens), the ends
LAYERS = [("patch embed", Opcode.PATCH_EMBED, 197, 768, 384)] + [
    (f"{name} n={n}", Opcode.GEMM, n, k, m) for n in (197, 68)
    for name, k, m in (("qkv", 384, 1152), ("proj", 384, 384), ("fc1", 384, 1536), ("fc2", 1536, 384))
] + [("head", Opcode.GEMM, 1, 384, 1000)]


def rows() -> list[dict]:
    g = gemm_config(CONFIG)
    rate = CONFIG.axi.data_bytes
    out = []
    for name, opcode, n, k, m in LAYERS:
        op = cycles(CONFIG, opcode, k, m, n=n, dram_latency=LATENCY)
        first = engine_cycles(g, n, k, m, weight_bytes_per_cycle=rate, weight_latency=0)
        pair = schedule(g, [(n, k, m, 0), (n, k, m, 0)], weight_bytes_per_cycle=rate, weight_latency=0)
        stream = pair[1].last_out - pair[0].last_out
        out.append({"layer": name, "n": n, "k": k, "m": m, "op": op, "engine_first": first,
                    "engine_stream": stream, "act_load": -(-n // CONFIG.banks) * k,
                    "utilization": n * k * m / (g.macs * op)})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    data = rows()
    table = Table(title=f"GEMM op engine, {CONFIG.banks} x {CONFIG.gemm_cols} MACs, {CONFIG.axi.data_bytes} B/cycle "
                        f"weights, DRAM latency {LATENCY}")
    for col in ("layer", "n x k x m", "op cycles", "engine first job", "engine in a stream", "op / first",
                "act load", "utilization"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for r in data:
        table.add_row(r["layer"], f"{r['n']} x {r['k']} x {r['m']}", f"{r['op']:,}", f"{r['engine_first']:,}",
                      f"{r['engine_stream']:,}", f"{r['op'] / r['engine_first']:.3f}", f"{r['act_load']:,}",
                      f"{100 * r['utilization']:.1f}%")
    Console().print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
