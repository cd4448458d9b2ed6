"""The whole accelerator in Verilator, whole images end to end: the MNIST model and one DeiT-S image.

For each case a model with random weights (seeded; the cycles depend on the token counts, not on what the
weights have learned) is calibrated, **sized for a device by the accelerator's own models**
(:func:`tokensift.coopt.accel_sizing.size_accelerator`: resources, then the images' exact cycles), compiled for
that shape, generated, and its images run through the Verilator model of the one design (cocotbext-axi
``AxiRam`` as DRAM at a fixed latency, ``AxiLiteMaster`` as host), each image's logits checked against the
reference sequencer. Printed side by side, per run-time register set:

- Verilator's cycles next to the cost model's (equal at a fixed DRAM latency);
- MAC utilization: the program's multiply-accumulates over (the design's MACs per cycle x cycles), and the
  fraction of the device's peak (one MAC per DSP per cycle), the figure accelerator papers quote;
- simulated cycles per wall-clock second of the simulation (the run only; the Verilator build apart);
- latency at the clock the design may assume: the measured Fmax after place and route where it exists
  (ECP5, the shape measured in ``tests/hw/baselines/fmax.json``), else the device's typical clock, labelled
  assumed (no open place and route exists for the Xilinx parts);
- with the dense registers (``METHOD = dense``) on the same design: cycles(dense) / cycles(pruned) next to
  MACs(dense) / MACs(pruned), and their ratio (goal >= 0.95 of the ideal).

Cases: ``mnist`` (vit_mnist_patch4_28, DynamicViT keep 0.7, sized for PYNQ-Z2, two test images, pruned and
dense) and ``deit_s`` (deit_small_patch16_224, DynamicViT keep 0.7, calibrated and run on random images,
sized for ZCU102 at 300 MHz assumed; one image; ``--dense`` adds the dense run, about 1.6x the cycles). The
DeiT-S case takes over an hour on a 2-core machine (the six-core design's Verilog builds in about 30 minutes
beside other jobs, its 4.54 M cycles simulate at 3,000-4,000 per second): a slow benchmark, not ``make test``.

    .venv/bin/python bench/bench_accel_model.py                     # both cases
    .venv/bin/python bench/bench_accel_model.py --case deit_s --dense --json out.json   # bench/accel_model.json holds both cases
"""

from __future__ import annotations

import argparse
import json
import sys
import time

#: name -> (model, method, keep ratio, device, images, data: "mnist" or "random", runs the dense registers)
CASES = {
    "mnist": ("vit_mnist_patch4_28", "dynamicvit", 0.7, "pynq-z2", 2, "mnist", True),
    "deit_s": ("deit_small_patch16_224", "dynamicvit", 0.7, "zcu102", 1, "random", False),
}


def _model(name: str, method: str, keep: float, data: str, images: int):
    """The calibrated integer model and the images to run: MNIST's own, or random ones
    (:func:`~tokensift.coopt.accel_sizing.random_int_model`)."""
    import torch

    from tokensift.coopt.accel_sizing import random_int_model

    if data != "mnist":
        int_model, picked, _ = random_int_model(name, method, keep, images=images)
        return int_model, picked
    from tokensift.quant.integer_model import IntegerViT
    from tokensift.sw import create_model
    from tokensift.sw.data import load_mnist, spread_indices, spread_subset

    torch.manual_seed(0)
    model = create_model(name, method=method, keep_ratio=keep).eval()
    train, test = load_mnist()
    calib = spread_subset(train, 200)
    loader = [(torch.stack([calib[i][0] for i in range(len(calib))]), None)]
    picked = torch.stack([test[i][0] for i in spread_indices(len(test), images)])
    return IntegerViT.from_float(model, loader, num_batches=1), picked


def run_case(name: str, *, dense: bool | None = None, latency: int = 10) -> dict:
    from tokensift.coopt.accel_sizing import project_for, size_accelerator
    from tokensift.devices import get_device
    from tokensift.hw.cost.clock import accelerator_clock

    model, method, keep, device_name, n_images, data, with_dense = CASES[name]
    with_dense = with_dense if dense is None else dense
    device = get_device(device_name)
    t0 = time.perf_counter()
    int_model, images = _model(model, method, keep, data, n_images)
    sizing = size_accelerator(int_model, device, images, clock_mhz=device.clock_mhz, dram_latency=latency)
    if sizing.chosen is None:
        raise SystemExit(f"{name}: {sizing.message}")
    shape = sizing.chosen.shape
    project = project_for(int_model, shape)
    clk = accelerator_clock(device, shape, model=model)
    clock, source = clk.mhz, clk.note
    sets = [project.registers()] + ([project.registers(method="dense")] if with_dense else [])
    expected = project.estimate(images, latency=latency)["cycles"]
    prep = time.perf_counter() - t0
    m = project.measure(images, register_sets=sets, latency=latency, clock_mhz=clock,
                        max_cycles=4 * max(expected) + 100_000)
    runs = []
    for regs, s in zip(sets, m["sets"], strict=True):
        cycles = s["cycles"]
        runs.append({
            "method": regs.method, "bit_exact": s["bit_exact"], "cycles": cycles, "expected_cycles": s["expected_cycles"],
            "cycles_equal_model": s["cycles_equal_model"], "macs": s["macs"], "mac_utilization": s["mac_utilization"],
            "fraction_of_device_peak": [round(u / (device.dsp * c), 4) for u, c in zip(s["macs"], cycles, strict=True)],
            "latency_ms": s["latency_ms"], "sim_seconds": s["sim_seconds"],
            "cycles_per_wall_second": [round(c / w) for c, w in zip(cycles, s["sim_seconds"], strict=True)],
            "model_cycles_by_op": s["model_cycles_by_op"]})
    out = {"case": name, "model": model, "method": method, "keep": keep, "device": device.name,
           "shape": shape, "resources": sizing.chosen.resources, "utilization": sizing.chosen.utilization,
           "sizing": sizing.message, "peak_macs_per_cycle": m["peak_macs_per_cycle"], "clock_mhz": clock,
           "clock_source": source, "dram_latency": latency, "runs": runs, "bit_exact": m["bit_exact"],
           "prepare_seconds": round(prep, 1), "simulate_seconds": round(m["wall_s"], 1)}
    if with_dense:
        pruned, full = runs
        cyc = sum(full["cycles"]) / sum(pruned["cycles"])
        mac = sum(full["macs"]) / sum(pruned["macs"])
        out["dense_over_pruned"] = {"cycles": round(cyc, 4), "macs": round(mac, 4), "of_ideal": round(cyc / mac, 4)}
    return out


def _print(r: dict) -> None:
    s = r["shape"]
    print(f"## {r['case']}: {r['model']} {r['method']} keep {r['keep']} on {r['device']}")
    print(f"sized: {s['banks']} x {s['gemm_cols']} GEMM, {s.get('attention_cores', 1)} attention cores x {s['lanes']} "
          f"lanes, {8 * s['axi_bytes']}-bit AXI "
          f"({r['peak_macs_per_cycle']} MACs/cycle); utilization "
          + ", ".join(f"{k} {v:.0%}" for k, v in r["utilization"].items() if v) + f"; {r['sizing']}")
    print(f"clock {r['clock_mhz']:g} MHz ({r['clock_source']}); DRAM latency {r['dram_latency']} cycles; "
          f"prepare {r['prepare_seconds']} s, Verilator build + runs {r['simulate_seconds']} s")
    print()
    print("| registers | bit-exact | Verilator cycles | model cycles | equal | MACs | MAC utilization | of device peak "
          "| latency (ms) | simulated cycles / wall s |")
    print("|---|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for run in r["runs"]:
        for i, c in enumerate(run["cycles"]):
            print(f"| {run['method']} (image {i}) | {run['bit_exact']} | {c:,} | {run['expected_cycles'][i]:,} | "
                  f"{c == run['expected_cycles'][i]} | {run['macs'][i]:,} | {run['mac_utilization'][i]:.1%} | "
                  f"{run['fraction_of_device_peak'][i]:.1%} | {run['latency_ms'][i]:.3f} | "
                  f"{run['cycles_per_wall_second'][i]:,} |")
    top = sorted(r["runs"][0]["model_cycles_by_op"].items(), key=lambda kv: -kv[1])
    total = sum(v for _, v in top)
    print()
    print("engine cycles of the first image (model): " + ", ".join(f"{k} {v / total:.0%}" for k, v in top[:5]))
    if "dense_over_pruned" in r:
        d = r["dense_over_pruned"]
        print(f"dense / pruned on the same design: cycles {d['cycles']:.3f}x, MACs {d['macs']:.3f}x: "
              f"{d['of_ideal']:.3f} of the ideal ratio")
    print()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", choices=sorted(CASES), default=None, help="only this case (repeatable)")
    ap.add_argument("--dense", action=argparse.BooleanOptionalAction, default=None,
                    help="also run the dense registers (default: mnist yes, deit_s no)")
    ap.add_argument("--latency", type=int, default=10, help="DRAM latency in cycles (default: %(default)s)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    if args.latency < 2:
        ap.error(f"--latency must be at least 2 (the DRAM model's own), not {args.latency}")
    results = []
    for name in args.case or list(CASES):
        r = run_case(name, dense=args.dense, latency=args.latency)
        _print(r)
        results.append(r)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    return 0 if all(r["bit_exact"] and all(run["cycles_equal_model"] for run in r["runs"]) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
