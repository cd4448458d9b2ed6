"""Attention accelerator benchmark: MAC utilization, pruning -> cycles, simulation speed, softmax error.

Measured in one Verilator run (cocotb bulk mode, the core bit-exact against quant/ on every frame) for
N = 197, head_dim = 64, lanes = 16 and the pruned token counts N' = 138, 97, 68, then four heads back
to back for the simulation speed. Prints ``rich`` tables:

1. MAC utilization = useful MACs (2 N^2 head_dim) / (lanes x cycles), measured and from the formula
   (:func:`tokensift.hw.attention.cycles.cycles`); goal >= 90 %;
2. cycles(197) / cycles(N') next to the ideal (197 / N')^2; goal: within 5 %;
3. simulated cycles per second of wall time and per second of CPU time of the simulator process (the
   machine's load average is printed: on a shared machine the wall figure is the CPU figure times the
   share of a core the process got); goal >= 1e6;
4. the integer softmax's error against float softmax (both variants), and optionally (``--synth``) the
   core's DSP / BRAM / LUT counts from Yosys.

    .venv/bin/python bench/bench_attention.py            # Verilator build on first use: minutes
    .venv/bin/python bench/bench_attention.py --quick    # formula and softmax tables only
    .venv/bin/python bench/bench_attention.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from rich.console import Console
from rich.table import Table

from tokensift.hw.attention.cycles import cycles
from tokensift.quant.attention import AttentionParams, attention_error, macs
from tokensift.quant.softmax import SoftmaxParams, SoftmaxVariant, measure_softmax_error

PARAMS = AttentionParams(n_max=197, head_dim=64, lanes=16)
PRUNED = (138, 97, 68)
SPEED_HEADS = 4


def simulate(out: dict) -> dict:
    """One Verilator run: N = 197 alone, each pruned N alone, then SPEED_HEADS heads of 197."""
    from tokensift.sim.attention_harness import run_attention

    runs = [{"ns": [197]}] + [{"ns": [n]} for n in PRUNED] + [{"ns": [197] * SPEED_HEADS}]
    res = run_attention(PARAMS, settings={"runs": runs}, testcase="bulk", seed=11)
    measured = {}
    for r in res.report["bulk"]:
        key = r["ns"][0] if len(r["ns"]) == 1 else "heads"
        measured[key] = r
        assert r["o_mismatches"] == r["s_mismatches"] == r["flag_mismatches"] == 0, r
    out["simulation"] = {str(k): {kk: v for kk, v in r.items() if kk not in ("o_words", "s_words")}
                         for k, r in measured.items()}
    return measured


def table_utilization(console: Console, out: dict, measured: dict | None) -> None:
    t = Table(title="MAC utilization: N = 197, head_dim = 64, lanes = 16 (goal >= 90 %)")
    for col in ("frames", "useful MACs", "cycles (formula)", "cycles (Verilator)", "utilization", "bit-exact"):
        t.add_column(col, justify="right")
    rows = []
    for heads in (1, SPEED_HEADS):
        formula = cycles(PARAMS, n_tokens=197, heads=heads)
        sim = None if measured is None else measured[197 if heads == 1 else "heads"]["cycles"]
        used = heads * macs(197, 64)
        util = used / (PARAMS.lanes * (sim if sim is not None else formula))
        rows.append({"heads": heads, "macs": used, "cycles_formula": formula, "cycles_sim": sim, "utilization": util})
        t.add_row(str(heads), f"{used:,}", f"{formula:,}", "-" if sim is None else f"{sim:,}", f"{100 * util:.2f} %",
                  "-" if sim is None else "yes")
    console.print(t)
    out["utilization"] = rows


def table_pruning(console: Console, out: dict, measured: dict | None) -> None:
    t = Table(title="Pruning -> cycles: cycles(197) / cycles(N') against (197 / N')^2 (goal: within 5 %)")
    for col in ("N'", "cycles (formula)", "cycles (Verilator)", "cycles(197)/cycles(N')", "(197/N')^2", "deviation"):
        t.add_column(col, justify="right")
    base = cycles(PARAMS, n_tokens=197) if measured is None else measured[197]["cycles"]
    rows = []
    for n in PRUNED:
        formula = cycles(PARAMS, n_tokens=n)
        sim = None if measured is None else measured[n]["cycles"]
        ratio = base / (sim if sim is not None else formula)
        ideal = (197 / n) ** 2
        rows.append({"n": n, "cycles_formula": formula, "cycles_sim": sim, "ratio": ratio, "ideal": ideal,
                     "deviation": ratio / ideal - 1})
        t.add_row(str(n), f"{formula:,}", "-" if sim is None else f"{sim:,}", f"{ratio:.3f}", f"{ideal:.3f}",
                  f"{100 * (ratio / ideal - 1):+.2f} %")
    console.print(t)
    out["pruning"] = rows


def table_speed(console: Console, out: dict, measured: dict) -> None:
    r = measured["heads"]
    load = os.getloadavg()[0]
    t = Table(title=f"Simulation speed, cocotb + Verilator bulk mode ({SPEED_HEADS} frames of N = 197; goal >= 1e6 "
                    f"cycles/s)")
    for col in ("simulated cycles", "wall s", "cycles / wall s", "CPU s", "cycles / CPU s", "load average",
                "CPUs"):
        t.add_column(col, justify="right")
    cpu_s = r["elapsed"] / r["sim_cycles_per_cpu_s"]
    t.add_row(f"{r['elapsed']:,}", f"{r['run_s']:.2f}", f"{r['sim_cycles_per_s']:,.0f}", f"{cpu_s:.2f}",
              f"{r['sim_cycles_per_cpu_s']:,.0f}", f"{load:.1f}", str(os.cpu_count()))
    console.print(t)
    out["speed"] = {"cycles": r["elapsed"], "wall_s": r["run_s"], "sim_cycles_per_s": r["sim_cycles_per_s"],
                    "cpu_s": cpu_s, "sim_cycles_per_cpu_s": r["sim_cycles_per_cpu_s"], "load_average": load,
                    "cpus": os.cpu_count()}


def table_softmax(console: Console, out: dict) -> None:
    t = Table(title="Integer softmax vs float softmax (random score rows of 197; probability units, bound derived)")
    for col in ("variant", "score spread", "max |error|", "mean |error|", "max / LSB", "largest bound", "within"):
        t.add_column(col, justify="right")
    rows = []
    for variant in SoftmaxVariant:
        sp = SoftmaxParams(variant=variant)
        for spread in (3_000, 30_000, 300_000):
            rng = np.random.default_rng(spread)
            s = rng.integers(-spread, spread, size=(256, 197))
            e = measure_softmax_error(s, multiplier=PARAMS.scale_multiplier, shift=PARAMS.scale_shift, params=sp)
            rows.append({"variant": variant.value, "spread": spread, **e})
            t.add_row(variant.value, f"+-{spread:,}", f"{e['max_abs']:.2e}", f"{e['mean_abs']:.2e}",
                      f"{e['max_lsb']:.2f}", f"{e['bound_max']:.2e}", "yes" if e["within_bound"] else "NO")
    console.print(t)
    rng = np.random.default_rng(0)
    q, k, v = (rng.integers(-32, 33, size=(197, 64)) for _ in range(3))
    err = attention_error(q, k, v, PARAMS)
    console.print(f"one head (N = 197, |Q|,|K|,|V| <= 32): output error max {err['out_max_lsb']:.3f} LSB, "
                  f"mean {err['out_mean_lsb']:.3f} LSB (bound {err['out_bound_max']:.3f}); "
                  f"probabilities max {err['prob_max_abs']:.2e}")
    out["softmax"] = rows
    out["head_error"] = err


def table_resources(console: Console, out: dict) -> None:
    from tokensift.hw.attention.core import Attention
    from tokensift.hw.cost.synth import synthesize

    r = synthesize(Attention(params=PARAMS), family="xcup", top="tokensift_attention")
    t = Table(title="Resources (Yosys synth_xilinx -family xcup), N_max 197, head_dim 64, 16 lanes")
    for col in ("DSP", "BRAM36", "BRAM18", "LUT", "LUTRAM", "FF"):
        t.add_column(col, justify="right")
    t.add_row(*(str(r[k]) for k in ("dsp", "bram36", "bram18", "lut", "lutram", "ff")))
    console.print(t)
    out["resources"] = {k: r[k] for k in ("dsp", "bram36", "bram18", "lut", "lutram", "ff")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="formula and softmax tables only (no Verilator)")
    parser.add_argument("--synth", action="store_true", help="also synthesize the core with Yosys (minutes)")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    console = Console(width=140)
    out: dict = {"params": PARAMS.to_dict()}
    measured = None if args.quick else simulate(out)
    table_utilization(console, out, measured)
    table_pruning(console, out, measured)
    if measured is not None:
        table_speed(console, out, measured)
    table_softmax(console, out)
    if args.synth:
        table_resources(console, out)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
