"""Whole-model latency and MAC-rate fraction from the cost model built on the measured blocks.

For each case the co-optimizer's grid (every hardware point that fits the device x the keep point asked
for) gives the fastest design; the table prints its latency at the clock the model may assume (measured Fmax
on ECP5, the device's typical clock, labelled assumed, on the Xilinx parts), where its cycles go (attention
core, linear engine, selector), and two MAC-rate fractions:

- **of the device's peak**: the model's multiply-accumulates / (device DSPs x cycles), the figure the
  accelerator papers quote (one int8 MAC per DSP per cycle);
- **of the design's own MACs**: the same over the MACs the design instantiates (attention lanes x cores +
  the linear engine's array), i.e. how busy its multipliers are.

Cases (issue 16's performance goals): DeiT-S with DynamicViT at keep 0.7 on ZCU102 (goal <= 5 ms, >= 80% of
peak), DeiT-T dense and DynamicViT 0.7 on PYNQ-Z2.

The second table is the same cases on **the generated whole-model accelerator** (:mod:`tokensift.hw.accel`),
costed by its own models, which equal Yosys (DSP, block RAM) and Verilator (cycles): the fastest shape that
fits (:func:`tokensift.coopt.accel_sizing.size_accelerator`), with random weights (under top-k the keep
registers fix every op's token count, so the cycles are any trained model's). The block model above lets
several attention cores and the GEMM engine be sized freely, and overlaps its units; the generated design has
``attention_cores`` copies of an attention core of ``lanes`` MACs (a layer's heads side by side) next to its
``banks x gemm_cols`` GEMM array, and runs its other ops one after another.

    .venv/bin/python bench/bench_whole_model.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

CASES = [
    ("deit_small_patch16_224", "dynamicvit", 0.7, "zcu102"),
    ("deit_small_patch16_224", "none", None, "zcu102"),
    ("deit_tiny_patch16_224", "dynamicvit", 0.7, "pynq-z2"),
    ("deit_tiny_patch16_224", "none", None, "pynq-z2"),
]


def run_case(model: str, method: str, keep: float | None, device: str) -> dict:
    import numpy as np

    from tokensift.coopt import CostEvaluator

    t0 = time.perf_counter()
    ev = CostEvaluator(model, method=method, device=device)
    point = () if keep is None else (keep,)
    g = ev.grid(points=[point])
    fits = np.flatnonzero(g.fits)
    if not len(fits):
        raise SystemExit(f"no design of the space fits {device} for {model}")
    h = int(fits[np.argmin(g.latency_ms[fits, 0])])
    p = ev.point(h, point)
    hw = p["hw"]
    macs = p["gflops"] * 1e9
    design_macs = hw["lanes"] * hw["heads_parallel"] + hw["linear_lanes"]
    return {
        "model": model, "method": method, "keep": keep, "device": ev.device.name,
        "clock_mhz": hw["clock_mhz"], "clock_source": p["clock"]["source"],
        "hw": hw, "cycles": p["cycles"], "cycles_by_unit": p["cycles_by_unit"], "latency_ms": p["latency_ms"],
        "gmacs": macs / 1e9, "dsp": p["resources"].get("dsp"), "device_dsp": ev.device.dsp,
        "fraction_of_device_peak": macs / (ev.device.dsp * p["cycles"]),
        "fraction_of_design_macs": macs / (design_macs * p["cycles"]),
        "max_utilization": p["max_utilization"], "seconds": time.perf_counter() - t0,
    }


def accelerator_case(model: str, method: str, keep: float | None, device: str, *, space=None) -> dict:
    """The fastest shape of the generated accelerator that fits ``device``, by the design's own models."""
    from tokensift.coopt.accel_sizing import project_for, random_int_model, size_accelerator
    from tokensift.devices import get_device
    from tokensift.hw.accel.project import useful_macs
    from tokensift.hw.cost.clock import accelerator_clock

    t0 = time.perf_counter()
    dev = get_device(device)
    int_model, images, _ = random_int_model(model, method, keep)
    sizing = size_accelerator(int_model, dev, images, clock_mhz=dev.clock_mhz, space=space)
    if sizing.chosen is None:
        # what is short: the shape that comes closest, and each resource it needs over the device's
        closest = min(sizing.points, key=lambda p: p.scarcest)
        return {"model": model, "method": method, "keep": keep, "device": dev.name, "fits": False,
                "shape": closest.shape, "resources": closest.resources, "utilization": closest.utilization,
                "message": sizing.message, "shapes": len(sizing.points), "seconds": time.perf_counter() - t0}
    c = sizing.chosen
    shape = c.shape
    project = project_for(int_model, shape)
    traces = sizing.traces  # the sizing's own reference runs: the same on every shape
    est = project.estimate(traces=traces, latency=sizing.dram_latency)["images"][0]
    by_op: dict[str, int] = {}
    for _, op, cyc in est["ops"]:
        by_op[op] = by_op.get(op, 0) + cyc
    macs = useful_macs([e for _, e in traces[0]], int_model.blocks[0].attn.head_dim)
    cycles = est["cycles"]
    clk = accelerator_clock(dev, shape, model=model)
    design_macs = shape["banks"] * shape["gemm_cols"] + shape["lanes"] * shape.get("attention_cores", 1)
    return {"model": model, "method": method, "keep": keep, "device": dev.name, "fits": True, "shape": shape,
            "clock_mhz": clk.mhz, "clock_source": clk.source, "cycles": cycles, "cycles_by_op": by_op,
            "latency_ms": cycles / (clk.mhz * 1e3), "gmacs": macs / 1e9, "dsp": c.resources["dsp"],
            "device_dsp": dev.dsp, "utilization": c.utilization,
            "fraction_of_device_peak": macs / (dev.dsp * cycles), "fraction_of_design_macs": macs / (design_macs * cycles),
            "shapes_fit": sum(p.fits for p in sizing.points), "shapes": len(sizing.points),
            "seconds": time.perf_counter() - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    args = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    rows = [run_case(*case) for case in CASES]
    table = Table(title="whole model, fastest design that fits (cost model on the measured blocks)")
    for col in ("model", "method", "device", "clock", "design", "cycles: attention / linear / selector",
                "latency", "GMACs", "of device peak", "of design MACs"):
        table.add_column(col)
    for r in rows:
        hw, u = r["hw"], r["cycles_by_unit"]
        table.add_row(
            r["model"], r["method"] + ("" if r["keep"] is None else f" {r['keep']:g}"), r["device"],
            f"{r['clock_mhz']:g} MHz ({r['clock_source']})",
            f"attn {hw['lanes']}x{hw['heads_parallel']}, GEMM {hw['linear_rows']}x"
            f"{hw['linear_lanes'] // hw['linear_rows']}, {r['dsp']}/{r['device_dsp']} DSP",
            f"{u['attention']:,} / {u['linear']:,} / {u['selector']:,}", f"{r['latency_ms']:.3f} ms",
            f"{r['gmacs']:.3f}", f"{100 * r['fraction_of_device_peak']:.1f}%",
            f"{100 * r['fraction_of_design_macs']:.1f}%")
    Console(file=sys.stdout, width=200).print(table)
    accel = [accelerator_case(*case) for case in CASES]
    table = Table(title="whole model on the generated accelerator, fastest shape that fits (its own models: "
                        "cycles = Verilator, DSP/BRAM = Yosys)")
    for col in ("model", "method", "device", "clock", "design", "cycles: attention / GEMM / other", "latency",
                "GMACs", "of device peak", "of design MACs"):
        table.add_column(col)
    for r in accel:
        if not r["fits"]:
            over = ", ".join(f"{k} {v:.2f}x" for k, v in r["utilization"].items() if v > 1)
            table.add_row(r["model"], r["method"] + ("" if r["keep"] is None else f" {r['keep']:g}"), r["device"],
                          "-", f"no shape of {r['shapes']} fits: the closest needs {over} of the device", "-", "-",
                          "-", "-", "-")
            continue
        sh, u = r["shape"], r["cycles_by_op"]
        gemm = u.get("GEMM", 0) + u.get("PATCH_EMBED", 0)
        table.add_row(
            r["model"], r["method"] + ("" if r["keep"] is None else f" {r['keep']:g}"), r["device"],
            f"{r['clock_mhz']:g} MHz ({r['clock_source']})",
            f"attn {sh.get('attention_cores', 1)}x{sh['lanes']} lanes, GEMM {sh['banks']}x{sh['gemm_cols']}"
            f"{' (2 per DSP48)' if sh.get('pack_pairs') else ''}, {8 * sh['axi_bytes']}-bit AXI, "
            f"{r['dsp']}/{r['device_dsp']} DSP",
            f"{u.get('ATTENTION', 0):,} / {gemm:,} / {r['cycles'] - u.get('ATTENTION', 0) - gemm:,}",
            f"{r['latency_ms']:.3f} ms", f"{r['gmacs']:.3f}", f"{100 * r['fraction_of_device_peak']:.1f}%",
            f"{100 * r['fraction_of_design_macs']:.1f}%")
    Console(file=sys.stdout, width=200).print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": "python bench/bench_whole_model.py", "rows": rows, "accelerator": accel}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
