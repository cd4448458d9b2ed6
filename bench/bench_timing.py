"""Fmax of every generated block after place and route on ECP5, next to the clocks the cost model uses.

    python bench/bench_timing.py             # P&R every configuration at speed 6 and 8, print the table
    python bench/bench_timing.py --write     # ... and store the figures in tests/hw/baselines/fmax.json
    python bench/bench_timing.py --block requant --speeds 6
    python bench/bench_timing.py --block selector --config demo_package --write   # one configuration

Each configuration of :data:`GRID` is a block with ``tokensift generate`` parameters; it is synthesized with
Yosys ``synth_ecp5`` and placed and routed out of context by nextpnr-ecp5 on the LFE5U-85F (CABGA381), default
seed, 100 MHz constraint (:mod:`tokensift.hw.cost.pnr`; results cached under ``build/pnr``). The table shows
Fmax at each speed grade, the speed-6 critical path, and the clocks the cost model assumes: on ECP5 the
device database's 100 MHz capped by the measured Fmax (:mod:`tokensift.hw.cost.clock`); on the Xilinx
families the database's clocks, assumed because no open place and route exists for them. ``fmax.json`` is
what the cost model's ECP5 clock reads and what ``tests/hw/test_fmax_baselines.py`` (slow) re-measures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

#: (block, configuration name, what it is, ``tokensift generate BLOCK`` arguments)
GRID: list[tuple[str, str, str, list[str]]] = [
    ("attention", "deit_s", "DeiT-S: n-max 197, head-dim 64, 16 lanes",
     ["--n-max", "197", "--head-dim", "64", "--lanes", "16"]),
    ("attention", "demo", "demo (vit_mnist): n-max 50, head-dim 16, 16 lanes x 4 cores",
     ["--n-max", "50", "--head-dim", "16", "--lanes", "16", "--heads-parallel", "4"]),
    ("selector", "deit_s", "DeiT-S: n-max 197, dim 384, 16 lanes",
     ["--n-max", "197", "--dim", "384", "--lanes", "16"]),
    ("selector", "deit_s_package", "DeiT-S + package token",
     ["--n-max", "197", "--dim", "384", "--lanes", "16", "--package"]),
    ("selector", "demo_package", "demo (vit_mnist): n-max 50, dim 64, int16 features, 16 lanes, package token",
     ["--n-max", "50", "--dim", "64", "--lanes", "16", "--feature-bits", "16", "--package"]),
    ("selector", "deit_s_methods", "DeiT-S + package token, 16-bit package weights (frac 15), mass mode",
     ["--n-max", "197", "--dim", "384", "--lanes", "16", "--package", "--weight-bits", "16", "--weight-frac", "15",
      "--mass-mode"]),
    ("selector", "demo_methods", "demo + 16-bit package weights (frac 15), mass mode",
     ["--n-max", "50", "--dim", "64", "--lanes", "16", "--feature-bits", "16", "--package", "--weight-bits", "16",
      "--weight-frac", "15", "--mass-mode"]),
    ("score_combiner", "deit_s", "DeiT-S: n-max 197, 6 heads, 1 lane", ["--n-max", "197", "--heads", "6"]),
    ("score_combiner", "deit_s_16_lanes", "DeiT-S: n-max 197, 6 heads, 16 lanes",
     ["--n-max", "197", "--heads", "6", "--lanes", "16"]),
    ("score_combiner", "demo", "demo (vit_mnist): n-max 50, 4 heads, 1 lane", ["--n-max", "50", "--heads", "4"]),
    ("score_combiner", "deit_s_per_token", "DeiT-S, released AS-ViT: 1 lane, per-token weights",
     ["--n-max", "197", "--heads", "6", "--per-token-weights"]),
    ("score_combiner", "deit_s_per_token_signed", "DeiT-S, SPViT: 1 lane, per-token weights, signed",
     ["--n-max", "197", "--heads", "6", "--per-token-weights", "--signed"]),
    ("score_combiner", "deit_s_16_lanes_per_token_signed", "DeiT-S, SPViT: 16 lanes, per-token weights, signed",
     ["--n-max", "197", "--heads", "6", "--lanes", "16", "--per-token-weights", "--signed"]),
    ("gemm", "deit_s", "DeiT-S linear layers (K <= 384): 4 x 8 MACs, max-tokens 197, max-out 1536, 8-byte weight beats",
     ["--rows", "4", "--cols", "8", "--max-tokens", "197", "--max-in", "384", "--max-out", "1536", "--weight-bytes", "8"]),
    ("gemm", "demo", "demo (vit_mnist): 2 x 64 MACs, max-tokens 50, max-in 128, max-out 192, 16-byte weight beats",
     ["--rows", "2", "--cols", "64", "--max-tokens", "50", "--max-in", "128", "--max-out", "192", "--weight-bytes", "16"]),
    ("requant", "default", "int32 -> int8, multiplier 12345, shift 20", ["--multiplier", "12345", "--shift", "20"]),
    ("layernorm", "c48_l2", "C up to 48, 2 lanes, run-time constants", ["--c-max", "48", "--lanes", "2"]),
    ("accel_layernorm", "demo", "the demo accelerator's LayerNorm engine (vit_mnist_patch4_28: 2 banks, 8 lanes, "
     "64 GEMM columns): the unit, its record reader and row reader", ["--model", "vit_mnist_patch4_28"]),
    # every other op engine of the same demo accelerator, and its token buffers (ATTENTION and POS_EMBED alone
    # are synthesized with their array aliases renamed: Yosys's abc9 trips over the names, hw/cost/pnr.py)
    *[(block, "demo", f"the demo accelerator's {about} (vit_mnist_patch4_28: 2 banks, 8 lanes, 64 GEMM columns)",
       ["--model", "vit_mnist_patch4_28"]) for block, about in (
        ("accel_gemm", "GEMM engine: activation path, transposers, record checks, the 2 x 64 array"),
        ("accel_pos_embed", "POS_EMBED engine: record reader and residual adder"),
        ("accel_attention", "ATTENTION engine: Q/K/V walks, record checks, the 8-lane attention core"),
        ("accel_token_mean", "TOKEN_MEAN engine: two walks and the token-mean unit"),
        ("accel_residual", "RESIDUAL_ADD engine: two walks and the residual adder"),
        ("accel_gelu", "GELU engine: walk, record reader and the GELU unit"),
        ("accel_select", "SELECT engine: walks, token selector, score combiner, AS-ViT squares"),
        ("accel_logits", "WRITE_LOGITS engine: walk and the write channel's word packing"),
        ("accel_buffers", "token buffers: registered requests and reads, one-hot select"))],
    ("gelu", "deit_s", "DeiT-S MLP: 16 lanes of int8, 16-bit run-time multiplier", ["--lanes", "16"]),
    ("residual", "deit_s", "16 lanes of 16-bit residual codes, saturating", ["--lanes", "16"]),
    ("token_mean", "deit_s", "DeiT-S predictor's global half: 16 lanes, n-max 197, 192 channels",
     ["--lanes", "16", "--n-max", "197", "--c-max", "192"]),
    ("axi_lite", "control", "AXI4-Lite bank: the example control block (8 registers, 8-bit addresses)", []),
    ("axi_reader", "hp64", "read DMA, 64-bit HP port: 16-beat bursts, 4 outstanding, 32-bit addresses", []),
    ("axi_reader", "hp128", "read DMA, 128-bit: 64-beat bursts, 8 outstanding",
     ["--data-bytes", "16", "--max-burst", "64", "--max-outstanding", "8"]),
    ("axi_writer", "hp64", "write DMA, 64-bit HP port: 16-beat bursts, 4 outstanding, 32-bit addresses", []),
    ("axi_writer", "hp128", "write DMA, 128-bit: 64-beat bursts, 8 outstanding",
     ["--data-bytes", "16", "--max-burst", "64", "--max-outstanding", "8"]),
]
#: the whole accelerator: not in the grid until its place and route finishes in reasonable time on a quiet
#: machine; ``--block accelerator`` measures these (``--config`` picks one): the shape sized for the ECP5-85F
#: (over an hour of nextpnr per speed grade), and the smallest shape the envelope allows (13-18 minutes), on
#: which the glue's critical paths are found
ACCELERATORS = [
    ("accelerator", "ecp5_sized", "the whole accelerator as sized for the ECP5-85F (vit_mnist_patch4_28: 4 banks = "
     "4 x 16 GEMM, 4 lanes, 128-bit AXI; 151 of 156 multipliers)",
     ["--model", "vit_mnist_patch4_28", "--banks", "4", "--gemm-cols", "16", "--lanes", "4", "--axi-bytes", "16"]),
    ("accelerator", "b1_c8_l2_w8", "the whole accelerator's smallest shape (vit_mnist_patch4_28: 1 bank, 8 GEMM "
     "columns, 2 lanes, 64-bit AXI)",
     ["--model", "vit_mnist_patch4_28", "--banks", "1", "--gemm-cols", "8", "--lanes", "2", "--axi-bytes", "8"]),
]
#: the speed grades measured by default (6: the issue's goal; 8: the stretch and the ECP5-85F in the device
#: database)
DEFAULT_SPEEDS = (6, 8)
BASELINE = Path(__file__).resolve().parents[1] / "tests" / "hw" / "baselines" / "fmax.json"


#: engines of the whole-model accelerator (:mod:`tokensift.hw.accel`), which have no ``tokensift generate`` entry
#: of their own: GRID block name -> (module, class); each is built from the AccelConfig that ``tokensift generate
#: accelerator`` makes of the same arguments (``--model M`` and the shape options)
ENGINES = {"accel_layernorm": ("tokensift.hw.accel.op_layernorm", "LayerNormEngine"),
           "accel_gemm": ("tokensift.hw.accel.op_gemm", "GemmOpEngine"),
           "accel_pos_embed": ("tokensift.hw.accel.op_pos_embed", "PosEmbedEngine"),
           "accel_token_mean": ("tokensift.hw.accel.op_token_mean", "TokenMeanEngine"),
           "accel_attention": ("tokensift.hw.accel.op_attention", "AttentionOpEngine"),
           "accel_residual": ("tokensift.hw.accel.op_residual", "ResidualEngine"),
           "accel_gelu": ("tokensift.hw.accel.op_gelu", "GeluEngine"),
           "accel_select": ("tokensift.hw.accel.op_select", "SelectEngine"),
           "accel_logits": ("tokensift.hw.accel.op_logits", "LogitsEngine"),
           "accel_buffers": ("tokensift.hw.accel.buffers", "TokenBuffers")}


def _build_engine(block: str, argv: list[str]):
    """One accelerator engine, for the configuration ``tokensift generate accelerator argv`` would build."""
    import importlib

    from tokensift.commands import block_accelerator as glue

    parser = argparse.ArgumentParser(prog=f"bench_timing {block}")
    glue.add_generate_arguments(parser)
    args = parser.parse_args(argv)
    if args.model is None:
        parser.error(f"{block} needs --model")
    glue.check_shape(args)
    cfg = glue._config(args, glue.model_envelope(args.model))
    module, name = ENGINES[block]
    engine = getattr(importlib.import_module(module), name)(config=cfg)
    params = {"model": args.model, "banks": cfg.banks, "lanes": cfg.lanes, "gemm_cols": cfg.gemm_cols,
              "axi_bytes": cfg.axi.data_bytes}
    return engine, f"tokensift_{block}", params


def build(block: str, argv: list[str]):
    """The component, top-level name and parameters of ``tokensift generate BLOCK argv`` (or of the accelerator
    engine ``block``, :data:`ENGINES`)."""
    from tokensift.commands import blocks

    if block in ENGINES:
        return _build_engine(block, argv)
    glue = blocks.load(block)
    parser = argparse.ArgumentParser(prog=f"tokensift generate {block}")
    glue.add_generate_arguments(parser)
    args = parser.parse_args(argv)
    component, top, params = glue.build(args)
    params = {k: v for k, v in params.items() if isinstance(v, (int, float, str, bool))}
    if block == "accelerator":
        # what tokensift.hw.cost.clock.accelerator_clock matches a design against
        params.update(model=args.model, axi_bytes=args.axi_bytes)
    return component, top, params


def measure(block: str, argv: list[str], speeds, *, use_cache: bool = True, timeout: float | None = 3600,
            seeds: tuple[int, ...] = ()) -> dict:
    """P&R one configuration at each speed grade: ``{"params", "fmax_mhz": {speed: MHz}, "critical_path",
    "utilization"}`` (the path and utilization at the first speed); with ``seeds``, also ``"seed_fmax_mhz":
    {speed: {"default" and each seed: MHz}}`` at the first speed, the spread placement alone makes."""
    from tokensift.hw.cost.pnr import place_and_route

    out = {"params": None, "top": None, "fmax_mhz": {}, "critical_path": {}, "seconds": {}}
    for speed in speeds:
        # a fresh component per run: one that declares its memories up front elaborates only once
        component, top, out["params"] = build(block, argv)
        out["top"] = top
        r = place_and_route(component, top=top, speed=speed, use_cache=use_cache, timeout=timeout)
        out["fmax_mhz"][str(speed)] = r["fmax_mhz"]
        cp = r["critical_path"]
        out["critical_path"][str(speed)] = {k: cp[k] for k in ("from", "to", "logic_ns", "routing_ns", "total_ns")}
        out["seconds"][str(speed)] = r["seconds"]
        out["utilization"] = r["utilization"]
        out["tools"] = {"yosys": r["yosys"], "nextpnr": r["nextpnr"]}
    if seeds:
        speed = speeds[0]
        spread = {"default": out["fmax_mhz"][str(speed)]}
        for seed in seeds:
            component, top, _ = build(block, argv)
            r = place_and_route(component, top=top, speed=speed, use_cache=use_cache, timeout=timeout, seed=seed)
            spread[str(seed)] = r["fmax_mhz"]
        out["seed_fmax_mhz"] = {str(speed): spread}
    return out


def assumed_clocks() -> dict:
    """The clock the cost model uses per device (and whether it is measured)."""
    from tokensift.devices import get_device, list_devices
    from tokensift.hw.cost.clock import model_clock

    out = {}
    for name in list_devices():
        dev = get_device(name)
        clk = model_clock(dev, units=("attention", "selector", "linear"), package=True)
        out[name] = {"family": dev.family, "device_mhz": dev.clock_mhz, "mhz": clk.mhz, "source": clk.source}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--block", action="append", default=None, help="only this block (repeatable)")
    ap.add_argument("--config", action="append", default=None, help="only this configuration name (repeatable)")
    ap.add_argument("--speeds", default=",".join(map(str, DEFAULT_SPEEDS)), help="comma-separated speed grades")
    ap.add_argument("--write", action="store_true", help=f"store the figures in {BASELINE.relative_to(BASELINE.parents[3])}")
    ap.add_argument("--no-cache", action="store_true", help="run the tools even when a cached result exists")
    ap.add_argument("--seeds", default="",
                    help="comma-separated nextpnr seeds to place and route again at the first speed grade, for the "
                         "spread of Fmax over placements (default: none)")
    ap.add_argument("--timeout", type=float, default=3600,
                    help="seconds each tool run may take (default: %(default)s; the whole accelerator needs more)")
    args = ap.parse_args(argv)
    speeds = tuple(int(s) for s in args.speeds.split(","))
    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    except ValueError:
        ap.error(f"--seeds must be comma-separated integers, not {args.seeds!r}")
    from tokensift.hw.cost.pnr import MAX_SEED

    if any(not 1 <= seed <= MAX_SEED for seed in seeds):
        ap.error(f"--seeds must each be between 1 and {MAX_SEED}, not {args.seeds!r}")
    grid = [g for g in (GRID if args.block is None else [*GRID, *ACCELERATORS])
            if (args.block is None or g[0] in args.block) and (args.config is None or g[1] in args.config)]
    if not grid:
        ap.error(f"no configuration of {args.block or ''} {args.config or ''} in the grid: "
                 f"{', '.join(f'{g[0]}/{g[1]}' for g in GRID)}")
    rows = []
    for block, name, about, cfg_argv in grid:
        t = time.monotonic()
        m = measure(block, cfg_argv, speeds, use_cache=not args.no_cache, timeout=args.timeout, seeds=seeds)
        print(f"{block} {name}: " + ", ".join(f"speed {s} {m['fmax_mhz'][str(s)]:g} MHz" for s in speeds)
              + f" ({time.monotonic() - t:.0f} s)", file=sys.stderr)
        rows.append({"block": block, "name": name, "about": about, "args": cfg_argv, **m})
        if args.write:
            # after every configuration: a long run that is stopped keeps what it measured
            write(rows, speeds)
    _print(rows, speeds, assumed_clocks())
    if args.write:
        print(f"wrote {BASELINE}", file=sys.stderr)
    return 0


def write(rows: list[dict], speeds) -> None:
    """Store ``rows`` in the baseline file, replacing their configurations and keeping the others."""
    configs = [{k: r[k] for k in ("block", "name", "about", "args", "params", "fmax_mhz", "critical_path",
                                  "utilization", "tools", "seed_fmax_mhz") if k in r} for r in rows]
    order = {(b, n): i for i, (b, n, _, _) in enumerate(GRID)}
    if BASELINE.exists():
        done = {(c["block"], c["name"]) for c in configs}
        configs += [c for c in json.loads(BASELINE.read_text())["configs"]
                    if (c["block"], c["name"]) not in done and (c["block"], c["name"]) in order]
    configs.sort(key=lambda c: order.get((c["block"], c["name"]), len(order)))
    data = {"_about": "Fmax (MHz) after place and route: Yosys synth_ecp5, nextpnr-ecp5 out of context on the "
                      "LFE5U-85F CABGA381, default seed, 100 MHz constraint; critical path per speed grade, "
                      "utilization at the first. Written by `python bench/bench_timing.py --write`; read by "
                      "tokensift.hw.cost.clock; re-measured by tests/hw/test_fmax_baselines.py (slow).",
            "speeds": list(speeds), "constraint_mhz": 100.0, "configs": configs}
    partial = BASELINE.with_suffix(".tmp")
    partial.write_text(json.dumps(data, indent=1) + "\n")
    partial.replace(BASELINE)


def _print(rows: list[dict], speeds, clocks: dict) -> None:
    """The tables, as Markdown (docs/cost.md quotes them as printed)."""
    print("| block | configuration | " + " | ".join(f"Fmax speed {s} (MHz)" for s in speeds)
          + f" | critical path at speed {speeds[0]}: from -> to | logic / routing ns |")
    print("|---|---|" + "---:|" * len(speeds) + "---|---:|")
    for r in rows:
        cp = r["critical_path"][str(speeds[0])]
        print(f"| {r['block']} | {r['name']}: {r['about']} | "
              + " | ".join(f"{r['fmax_mhz'][str(s)]:.1f}" for s in speeds)
              + f" | `{cp['from']}` -> `{cp['to']}` | {cp['logic_ns']:.1f} / {cp['routing_ns']:.1f} |")
    spread = [r for r in rows if "seed_fmax_mhz" in r]
    if spread:
        print()
        print(f"| block | configuration | Fmax at speed {speeds[0]} by nextpnr seed (MHz) | min / median / max |")
        print("|---|---|---|---:|")
        for r in spread:
            by_seed = r["seed_fmax_mhz"][str(speeds[0])]
            values = sorted(by_seed.values())
            print(f"| {r['block']} | {r['name']} | " + ", ".join(f"{k} {v:.1f}" for k, v in by_seed.items())
                  + f" | {values[0]:.1f} / {statistics.median(values):.1f} / {values[-1]:.1f} |")
    print()
    print("| device | family | device clock (MHz) | clock the latency uses (MHz) | source |")
    print("|---|---|---:|---:|---|")
    for name, c in clocks.items():
        print(f"| {name} | {c['family']} | {c['device_mhz']:g} | {c['mhz']:g} | {c['source']} |")


if __name__ == "__main__":
    sys.exit(main())
