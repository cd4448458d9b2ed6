"""GEMM engine benchmark: MAC utilization of a 1,024-MAC array on DeiT-S's linear layers, dense and pruned.

One Verilator run (cocotb, every output checked bit for bit against ``quant.gemm.IntLinear``; the pruned
layers and the dense projection, :data:`SIMULATED`; the other dense layers from the cycle model) of a
``rows x cols = 8 x 128`` engine with weights streamed at 16 bytes per cycle (latency 100 cycles) over the
four linear layers of a DeiT-S block (qkv 197x384x1152, proj 197x384x384, fc1 197x384x1536,
fc2 197x1536x384) and the same with N = 68 tokens (DynamicViT keep 0.7^3 ~ 68 of 197). Each layer runs as
two jobs back to back on an idle engine:

- **first**: cycles from the job beat to the last output of a job on an idle engine (pipeline fill, the
  first weight tile's load, which nothing hides, and the last drain included);
- **stream**: cycles between the last outputs of the two jobs, i.e. a job in a stream of jobs, whose first
  weight tile and activations load while the previous job computes (how a whole model runs).

utilization = useful MACs (n k m) / (rows x cols x cycles); goal >= 90 % at <= 16 bytes per cycle. The
table also prints the weight bytes per cycle the stream actually consumed, and the lowest memory rate
(bytes per cycle) at which the model gives the same stream cycles, and checks every measured cycle count
against :func:`tokensift.hw.gemm.cycles.schedule`.

    .venv/bin/python bench/bench_gemm.py             # Verilog, Verilator build and run: tens of minutes
    .venv/bin/python bench/bench_gemm.py --quick     # the cycle model only (seconds)
    .venv/bin/python bench/bench_gemm.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from rich.console import Console
from rich.table import Table

from tokensift.hw.gemm import GemmConfig
from tokensift.hw.gemm.cycles import schedule

CONFIG = GemmConfig(rows=8, cols=128, max_tokens=197, max_in=1536, max_out=1536, weight_bytes=16)
RATE = 16
LATENCY = 100
LAYERS = [(n, k, m) for n in (197, 68) for k, m in ((384, 1152), (384, 384), (384, 1536), (1536, 384))]
NAMES = ("qkv", "proj", "fc1", "fc2")
SEED = 7


def model_pair(cfg: GemmConfig, n: int, k: int, m: int, accepted: list[int], rate: int) -> tuple[int, int]:
    """(first, stream) cycles from the model, given the cycles the two job beats were accepted."""
    t = schedule(cfg, [(n, k, m, a) for a in accepted], weight_bytes_per_cycle=rate, weight_latency=LATENCY)
    return t[0].last_out - accepted[0], t[1].last_out - t[0].last_out


def needed_rate(cfg: GemmConfig, n: int, k: int, m: int, accepted: list[int]) -> int:
    """The lowest weight rate (bytes per cycle) at which the stream cycles are those of an unlimited rate."""
    best = model_pair(cfg, n, k, m, accepted, 1 << 16)[1]
    lo, hi = 1, 1 << 16
    while lo < hi:
        mid = (lo + hi) // 2
        if model_pair(cfg, n, k, m, accepted, mid)[1] <= best:
            hi = mid
        else:
            lo = mid + 1
    return lo


#: the layers the Verilator run simulates (every pruned layer and the smallest dense one: 333k cycles); the
#: other dense layers come from the cycle model, which is exact against Verilator on every simulated job
SIMULATED = [(68, k, m) for k, m in ((384, 1152), (384, 384), (384, 1536), (1536, 384))] + [(197, 384, 384)]


def simulate(layers) -> list[dict]:
    from tokensift.hw.gemm import GemmEngine
    from tokensift.sim import runner
    from tokensift.sim.runner import run_cocotb

    # the 1,024-PE model is 26 MB of C++: at -O2 it takes an hour to compile on two shared cores, at -O0
    # minutes, and the cocotb driver's per-cycle Python dominates the run time either way
    runner._MAKE_FLAGS = [f for f in runner._MAKE_FLAGS if not f.startswith("OPT_FAST")] + ["OPT_FAST=-O0"]
    res = run_cocotb(GemmEngine(config=CONFIG), toplevel="gemm", test_module="tokensift.sim.tb_gemm",
                     params={"config": CONFIG.as_dict(), "seed": SEED, "rate": RATE, "latency": LATENCY,
                             "layers": [list(x) for x in layers], "jobs": []}, testcase="layers")
    return res.report["layers"]


def estimate_accepts(cfg: GemmConfig, n: int, k: int) -> list[int]:
    """Job-beat cycles when the driver sends each job's activations (one beat per cycle) then its job
    beat: the first job at cycle 0, the second once its activations are in (the model's --quick input)."""
    return [0, 3 + -(-n // cfg.rows) * k]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="cycle model only, no Verilator (default: off)")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON (default: none)")
    args = ap.parse_args(argv)
    console = Console(width=150)
    wall = time.perf_counter()
    measured = None if args.quick else dict(zip(SIMULATED, simulate(SIMULATED), strict=True))
    rows = []
    t = Table(title=f"GEMM engine {CONFIG.rows} x {CONFIG.cols} = {CONFIG.macs} MACs, weights {RATE} B/cycle "
                    f"(latency {LATENCY}): MAC utilization (goal >= 90 % in a stream)")
    for col in ("layer", "n x k x m", "first: cycles", "util.", "stream: cycles", "util.", "model = Verilator",
                "B/cycle used", "B/cycle needed"):
        t.add_column(col, justify="right")
    for i, (n, k, m) in enumerate(LAYERS):
        if measured is None or (n, k, m) not in measured:
            accepted = estimate_accepts(CONFIG, n, k)
            first, stream = model_pair(CONFIG, n, k, m, accepted, RATE)
            exact = None
        else:
            r = measured[(n, k, m)]
            assert (r["n"], r["k"], r["m"]) == (n, k, m) and sum(r["mismatches"]) == 0, r
            accepted = r["accepted"]
            first = r["last_out"][0] - accepted[0]
            stream = r["last_out"][1] - r["last_out"][0]
            exact = (first, stream) == model_pair(CONFIG, n, k, m, accepted, RATE)
        macs = n * k * m
        weight_bytes = CONFIG.tile_beats(k) * -(-m // CONFIG.cols) * CONFIG.weight_bytes
        row = {"layer": NAMES[i % 4], "n": n, "k": k, "m": m, "first_cycles": first, "stream_cycles": stream,
               "first_utilization": macs / (CONFIG.macs * first), "stream_utilization": macs / (CONFIG.macs * stream),
               "model_exact": exact, "bytes_per_cycle_used": weight_bytes / stream,
               "bytes_per_cycle_needed": needed_rate(CONFIG, n, k, m, accepted), "source": "model" if exact is None
               else "verilator"}
        rows.append(row)
        t.add_row(row["layer"], f"{n} x {k} x {m}", f"{first:,}", f"{100 * row['first_utilization']:.1f} %",
                  f"{stream:,}", f"{100 * row['stream_utilization']:.1f} %",
                  "model only" if exact is None else ("yes" if exact else "NO"), f"{row['bytes_per_cycle_used']:.2f}",
                  str(row["bytes_per_cycle_needed"]))
    console.print(t)
    worst = min(r["stream_utilization"] for r in rows)
    console.print(f"lowest stream utilization {100 * worst:.1f} % (goal >= 90 %); "
                  f"{'Verilator, bit-exact' if measured else 'cycle model only (--quick)'}; "
                  f"wall {time.perf_counter() - wall:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": CONFIG.as_dict(), "rate": RATE, "latency": LATENCY, "layers": rows}, f, indent=1)
    return 0 if worst >= 0.9 and all(r["model_exact"] in (None, True) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
