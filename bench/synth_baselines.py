"""(Re)synthesize the validation grid with Yosys and write the baselines in ``tests/hw/baselines/``.

Every entry of :data:`GRID` is synthesized for every family (``xcup``, ``xc7``, ``ecp5``) by
:func:`tokensift.hw.cost.synth.synthesize` (cached in ``build/synth``) and stored with the measured cell
counts; the tolerances the tests apply are written next to them. Nothing is entered by hand: run this
script to regenerate, then ``python bench/fit_cost_model.py`` to refit the LUT/FF coefficients.

Usage::

    python bench/synth_baselines.py                      # every block, every family
    python bench/synth_baselines.py --block selector --family xcup --jobs 2
    python bench/synth_baselines.py --list               # the grid, without synthesizing
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tokensift.hw.cost.registry import BLOCKS, block_cost
from tokensift.hw.cost.synth import FAMILIES, SynthesisError, synthesize
from tokensift.hw.vector.layernorm_layout import LayerNormConfig
from tokensift.toolchain import find_yosys

OUT_DIR = Path(__file__).resolve().parent.parent / "tests" / "hw" / "baselines"

#: DSP and block RAM must match exactly; LUT and FF within 20% (the issue's tolerance, goal 10%)
TOLERANCES = {
    "dsp": {"abs": 0}, "bram18": {"abs": 0}, "bram36": {"abs": 0}, "ebr": {"abs": 0},
    "lut": {"rel": 0.20}, "ff": {"rel": 0.20},
}
#: the whole accelerator: its issue's tolerance (DSP and block RAM exact, LUT and FF within 10%)
ACCEL_TOLERANCES = {**TOLERANCES, "lut": {"rel": 0.10}, "ff": {"rel": 0.10}}
#: the primitive probes: a memory's block RAM and LUT RAM exactly (its soft logic within 20%); a
#: multiplier's DSPs exactly (the adders of a split product are not part of the rule)
PROBE_TOLERANCES = {
    "memory": {**TOLERANCES, "lutram": {"abs": 0}},
    "multiplier": {"dsp": {"abs": 0}},
}

_SEL = dict(score_bits=16, feature_bits=8)

#: block -> list of (name, params); names marked ``quick`` are the live configurations of test_synth.py
GRID: dict[str, list[tuple[str, dict]]] = {
    "memory": [
        (f"m{w}x{d}{'s' if s else 'a'}", {"width": w, "depth": d, "sync_read": s})
        for w, d, s in [(8, 197, True), (16, 64, True), (16, 197, True), (10, 400, True), (32, 1024, True),
                        (72, 512, True), (128, 394, True), (64, 1576, True), (128, 4728, True), (42, 4, False),
                        (130, 4, False), (12, 64, False), (3, 5000, True), (36, 2000, True), (4, 16, True)]
    ] + [
        (f"m{w}x{d}e", {"width": w, "depth": d, "sync_read": True, "read_en": True})
        for w, d in [(40, 15), (16, 197), (30, 3)]
    ] + [
        (f"r{w}x{d}", {"width": w, "depth": d, "sync_read": True, "rom": True})
        for w, d in [(17, 256), (17, 64), (9, 1024), (10, 256), (40, 512)]
    ],
    "multiplier": [
        (f"x{a}x{b}{'s' if s else 'u'}", {"a_bits": a, "b_bits": b, "signed": s})
        for a, b, s in [(8, 8, True), (8, 8, False), (17, 8, True), (25, 18, True), (26, 18, True),
                        (27, 18, True), (28, 18, True), (32, 15, True), (32, 32, True), (18, 18, False),
                        (3, 3, True), (9, 9, True), (24, 24, False), (40, 17, True), (19, 19, True),
                        (17, 17, False)]
    ],
    "requant": [
        ("acc32_m12345_s20", {"acc_bits": 32, "out_bits": 8, "multiplier": 12345, "shift": 20}),
        ("acc24_m3_s7_even_wrap", {"acc_bits": 24, "out_bits": 8, "multiplier": 3, "shift": 7,
                                   "rounding": "half_even", "overflow": "wrap"}),
        ("acc18_mbig_s34_floor", {"acc_bits": 18, "out_bits": 6, "multiplier": (1 << 30) - 1, "shift": 34,
                                  "rounding": "floor"}),
        ("acc32_m16384_s20", {"acc_bits": 32, "out_bits": 8, "multiplier": 1 << 14, "shift": 20}),
        ("acc16_m200_s10", {"acc_bits": 16, "out_bits": 8, "multiplier": 200, "shift": 10}),
        ("acc32_m1e6_s28_away", {"acc_bits": 32, "out_bits": 8, "multiplier": 1000003, "shift": 28,
                                 "rounding": "half_away"}),
        ("acc24_m777_s12_trunc", {"acc_bits": 24, "out_bits": 12, "multiplier": 777, "shift": 12,
                                  "rounding": "trunc"}),
        ("acc20_m91_s9", {"acc_bits": 20, "out_bits": 8, "multiplier": 91, "shift": 9}),
        ("acc32_m65535_s24", {"acc_bits": 32, "out_bits": 8, "multiplier": 65535, "shift": 24}),
        ("acc32_m40000_s30_even", {"acc_bits": 32, "out_bits": 8, "multiplier": 40000, "shift": 30,
                                   "rounding": "half_even"}),
        ("acc28_m5_s3", {"acc_bits": 28, "out_bits": 8, "multiplier": 5, "shift": 3}),
        ("acc16_m2_s1", {"acc_bits": 16, "out_bits": 8, "multiplier": 2, "shift": 1}),
        ("acc32_m99_s10_wrap", {"acc_bits": 32, "out_bits": 8, "multiplier": 99, "shift": 10, "overflow": "wrap"}),
        ("acc24_m65535_s16_floor", {"acc_bits": 24, "out_bits": 10, "multiplier": 65535, "shift": 16,
                                    "rounding": "floor"}),
    ],
    "selector": [
        ("n32_d32_l4", {"n_max": 32, "dim": 32, "lanes": 4, "package": False, **_SEL}),
        ("n32_d32_l4_pkg", {"n_max": 32, "dim": 32, "lanes": 4, "package": True, **_SEL}),
        ("n64_d64_l8_pkg", {"n_max": 64, "dim": 64, "lanes": 8, "package": True, **_SEL}),
        ("n100_d96_l8", {"n_max": 100, "dim": 96, "lanes": 8, "package": False, **_SEL}),
        ("n128_d128_l16_pkg", {"n_max": 128, "dim": 128, "lanes": 16, "package": True, **_SEL}),
        ("n197_d192_l16", {"n_max": 197, "dim": 192, "lanes": 16, "package": False, **_SEL}),
        ("n197_d384_l16_pkg", {"n_max": 197, "dim": 384, "lanes": 16, "package": True, **_SEL}),
        ("n50_d64_l2_pkg", {"n_max": 50, "dim": 64, "lanes": 2, "package": True, **_SEL}),
        # package weights apart from the scores (SPViT) and mass mode (SaiT)
        ("n32_d32_l4_mass", {"n_max": 32, "dim": 32, "lanes": 4, "package": False, "mass": True, **_SEL}),
        ("n64_d64_l8_pkg_w12", {"n_max": 64, "dim": 64, "lanes": 8, "package": True, "weight_bits": 12,
                                "weight_frac": 11, **_SEL}),
        ("n100_d96_l8_mass10", {"n_max": 100, "dim": 96, "lanes": 8, "package": False, "mass": True,
                                "mass_frac": 10, **_SEL}),
        ("n128_d128_l16_pkg_mass", {"n_max": 128, "dim": 128, "lanes": 16, "package": True, "mass": True, **_SEL}),
        ("n197_d384_l16_pkg_w16_mass", {"n_max": 197, "dim": 384, "lanes": 16, "package": True, "weight_bits": 16,
                                        "weight_frac": 15, "mass": True, **_SEL}),
    ],
    "mac_array": [
        (f"l{lanes}_a{a}b{b}", {"lanes": lanes, "a_bits": a, "b_bits": b, "dot_bits": a + b, "acc_bits": 32,
                                "tag_bits": 8})
        for lanes, a, b in [(4, 8, 8), (8, 8, 8), (12, 8, 8), (16, 8, 8), (32, 8, 8), (16, 12, 10)]
    ],
    "attention": [],  # filled by attention_grid() once the block is there
    "gemm": [],  # filled by the block's own baseline_grid()
    "accelerator": [],  # the whole top: hw/accel/resources.py's baseline_grid(), each entry for its own families
    "score_combiner": [
        ("n197_h6_l1", {"n_max": 197, "heads": 6, "lanes": 1}),
        ("n197_h6_l4", {"n_max": 197, "heads": 6, "lanes": 4}),
        ("n197_h6_l16", {"n_max": 197, "heads": 6, "lanes": 16}),
        ("n50_h4_l1", {"n_max": 50, "heads": 4, "lanes": 1}),
        ("n64_h12_l8_a12w8", {"n_max": 64, "heads": 12, "lanes": 8, "attn_bits": 12, "attn_frac": 11,
                              "importance_bits": 8, "importance_frac": 7}),
        ("n32_h2_l2_s10", {"n_max": 32, "heads": 2, "lanes": 2, "score_bits": 10, "score_frac": 9}),
        ("n197_h6_l1_pt", {"n_max": 197, "heads": 6, "lanes": 1, "per_token_weights": True}),
        ("n100_h3_l2_pt", {"n_max": 100, "heads": 3, "lanes": 2, "per_token_weights": True}),
        ("n197_h6_l1_pt_signed", {"n_max": 197, "heads": 6, "lanes": 1, "per_token_weights": True, "signed": True}),
        ("n197_h6_l4_pt_signed", {"n_max": 197, "heads": 6, "lanes": 4, "per_token_weights": True, "signed": True}),
        ("n197_h6_l16_pt_signed", {"n_max": 197, "heads": 6, "lanes": 16, "per_token_weights": True,
                                   "signed": True}),
    ],
    "layernorm": [
        (f"c{c}_l{lanes}_r{r}" + (f"_i{i}" if i != 8 else ""),
         {**LayerNormConfig(c_max=c, lanes=lanes, recip_bits=r, in_bits=i).to_dict()})
        for c, lanes, r, i in [(16, 1, 16, 8), (48, 4, 16, 8), (64, 8, 12, 8), (96, 2, 16, 8), (32, 4, 8, 8),
                               (384, 16, 16, 8), (96, 4, 16, 16)]
    ],
    "gelu": [
        (f"l{lanes}_i{i}_m{mb}_o{o}", {"lanes": lanes, "in_bits": i, "multiplier_bits": mb, "out_bits": o})
        for lanes, i, mb, o in [(1, 8, 16, 8), (2, 8, 16, 8), (4, 8, 16, 8), (8, 8, 16, 8), (16, 8, 16, 8),
                                (4, 12, 24, 8), (2, 16, 20, 12), (8, 10, 12, 8)]
    ],
    "residual": [
        (f"l{lanes}_r{r}{'_wrap' if w else ''}", {"lanes": lanes, "res_bits": r,
                                                  "overflow": "wrap" if w else "saturate"})
        for lanes, r, w in [(1, 16, False), (4, 16, False), (16, 16, False), (8, 8, False), (32, 16, False),
                            (4, 24, False), (16, 20, False), (8, 16, True)]
    ],
    "token_mean": [
        (f"l{lanes}_b{b}_n{n}_c{c}", {"lanes": lanes, "bits": b, "n_max": n, "c_max": c})
        for lanes, b, n, c in [(1, 8, 197, 192), (4, 8, 197, 192), (16, 8, 197, 192), (8, 8, 64, 64),
                               (16, 8, 197, 384), (4, 12, 100, 50), (2, 8, 16, 8), (8, 6, 50, 96)]
    ],    "axi_lite": [],  # filled by axi_lite_grid()
    "axi_reader": [
        (f"b{b}_l{n}_o{o}_a{a}", {"data_bytes": b, "max_burst": n, "max_outstanding": o, "addr_width": a,
                                  "length_bits": lb, "id_width": 1})
        for b, n, o, a, lb in [(8, 16, 4, 32, 24), (16, 64, 8, 32, 24), (4, 4, 1, 20, 16), (32, 128, 16, 40, 32),
                               (8, 256, 2, 32, 20), (16, 16, 3, 48, 28), (8, 8, 6, 24, 12)]
    ],
}

#: the configurations test_synth.py synthesizes live (small, a few seconds each)
QUICK = {"memory": ["m16x197s", "m42x4a"], "multiplier": ["x32x15s"], "requant": ["acc32_m12345_s20"],
         "selector": ["n32_d32_l4_pkg"], "mac_array": ["l4_a8b8"], "attention": [], "score_combiner": [], "gemm": [],
         "layernorm": [], "gelu": [], "residual": [], "token_mean": [], "axi_lite": ["rw4_small"],
         "axi_reader": ["b4_l4_o1_a20"], "axi_writer": ["b4_l4_o1_a20"], "accelerator": []}
GRID["axi_writer"] = GRID["axi_reader"]


def axi_lite_grid() -> list[tuple[str, dict]]:
    """The example control block and maps from one register to 40, mixing the four kinds and ranges."""
    from tokensift.hw.axi.config import Access, Register, RegisterMap, example_regmap

    def regs(n: int, width: int, ranged: int, kinds=(Access.RW,)):
        out = []
        for i in range(n):
            access = kinds[i % len(kinds)]
            r = dict(name=f"r{i}", offset=4 * i, width=width, access=access)
            if access is Access.RW and i < ranged:
                r.update(low=1, high=(1 << width) - 2, reset=1)
            if access is Access.W1C:
                r.update(irq=i % 2 == 0)
            out.append(Register(**r))
        return tuple(out)

    every = (Access.RW, Access.RO, Access.W1C, Access.W1S)
    maps = {"control": example_regmap(),
            "one": RegisterMap(registers=regs(1, 32, 0)),
            "rw8_ranged": RegisterMap(registers=regs(8, 16, 8)),
            "mixed16": RegisterMap(registers=regs(16, 32, 4, every), addr_width=10),
            "ro24": RegisterMap(registers=regs(24, 32, 0, (Access.RO,)), error_irq=False),
            "mixed40_narrow": RegisterMap(registers=regs(40, 8, 10, every), addr_width=12),
            "rw32_wide_ranged": RegisterMap(registers=regs(32, 32, 16)),
            "rw4_small": RegisterMap(registers=regs(4, 8, 2)),
            "w1c8_irq": RegisterMap(registers=regs(8, 16, 0, (Access.W1C,))),
            "w1s_rw": RegisterMap(registers=regs(8, 4, 0, (Access.W1S, Access.RW))),
            "ro_rw12": RegisterMap(registers=regs(12, 24, 3, (Access.RO, Access.RW)), addr_width=12),
            "ranged16_narrow": RegisterMap(registers=regs(16, 12, 16))}
    return [(name, m.as_dict()) for name, m in maps.items()]


def attention_grid() -> list[tuple[str, dict]]:
    try:
        from tokensift.hw.attention.resources import baseline_grid
    except ModuleNotFoundError:
        return []
    return baseline_grid()


def grid(block: str) -> list[tuple[str, dict]]:
    if block == "attention":
        return attention_grid()
    if block == "gemm":
        from tokensift.hw.gemm.resources import baseline_grid

        return baseline_grid()
    if block == "axi_lite":
        return axi_lite_grid()
    if block == "accelerator":
        from tokensift.hw.accel.resources import baseline_grid

        return baseline_grid()
    return GRID[block]


def families_of(block: str, name: str, families=None) -> list[str]:
    """The families configuration ``name`` of ``block`` is synthesized for (of ``families``, default all): every
    family, but the whole accelerator's configurations each name theirs (a synthesis takes minutes)."""
    chosen = list(families or FAMILIES)
    if block == "accelerator":
        from tokensift.hw.accel.resources import GRID_FAMILIES

        return [f for f in chosen if f in GRID_FAMILIES[name]]
    return chosen


def quick(block: str) -> list[str]:
    if block == "gemm":
        from tokensift.hw.gemm.resources import QUICK_CONFIGS

        return list(QUICK_CONFIGS)
    if block == "accelerator":
        from tokensift.hw.accel.resources import QUICK_CONFIGS

        return list(QUICK_CONFIGS)
    if block == "attention":
        try:
            from tokensift.hw.attention.resources import QUICK_CONFIGS
        except ModuleNotFoundError:
            return []
        return list(QUICK_CONFIGS)
    return QUICK[block]


def _measured(result: dict) -> dict:
    keys = ("dsp", "bram18", "bram36", "uram", "ebr", "lut", "lut_logic", "lutram", "ff", "carry", "muxf")
    return {k: result[k] for k in keys}


def synthesize_entry(block: str, name: str, params: dict, family: str) -> dict:
    cost = block_cost(block)
    params = cost.normalize(params)
    # the whole accelerator takes tens of minutes on a shared machine, past the default half hour
    timeout = 4 * 3600 if block == "accelerator" else 1800
    result = synthesize(cost.build(params), family=family, top=f"{block}_{name}".replace("-", "_"), timeout=timeout)
    return {"name": name, "family": family, "params": params, "synth": _measured(result),
            "command": f"python bench/synth_baselines.py --block {block} --family {family}",
            "cells": result["cells"], "seconds": result["seconds"], "quick": name in quick(block)}


def run_block(block: str, families: list[str], jobs: int, log=print) -> dict:
    entries = grid(block)
    if not entries:
        raise SystemExit(f"no grid for block {block!r} (has it landed?)")
    todo = [(name, params, family) for family in families for name, params in entries
            if family in families_of(block, name, families)]
    start = time.monotonic()
    results = []

    def one(item):
        name, params, family = item
        try:
            entry = synthesize_entry(block, name, params, family)
        except SynthesisError as exc:  # a run killed from outside (memory pressure): try once more
            log(f"  {block:10s} {family:5s} {name:24s} retrying after: {exc}")
            entry = synthesize_entry(block, name, params, family)
        log(f"  {block:10s} {family:5s} {name:24s} dsp={entry['synth']['dsp']:<3d} "
            f"bram18={entry['synth']['bram18']:<3d} bram36={entry['synth']['bram36']:<3d} "
            f"ebr={entry['synth']['ebr']:<3d} lut={entry['synth']['lut']:<6d} ff={entry['synth']['ff']:<6d} "
            f"({entry['seconds']:.0f} s)")
        return entry

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(one, todo))
    return {
        "block": block,
        "generated_by": "bench/synth_baselines.py",
        "yosys": find_yosys().version,
        "scripts": {f: FAMILIES[f] for f in families},
        "tolerances": (PROBE_TOLERANCES[block] if BLOCKS[block] is None else
                       ACCEL_TOLERANCES if block == "accelerator" else TOLERANCES),
        "command": " ".join(["python bench/synth_baselines.py", f"--block {block}",
                             *(f"--family {f}" for f in families)]),
        "wall_seconds": round(time.monotonic() - start, 1),
        "entries": results,
    }


def merge(path: Path, new: dict) -> dict:
    """Keep entries of families not re-run this time."""
    if not path.exists():
        return new
    old = json.loads(path.read_text())
    redone = {(e["name"], e["family"]) for e in new["entries"]}
    keep = [e for e in old.get("entries", []) if (e["name"], e["family"]) not in redone
            and any(e["name"] == n for n, _ in grid(new["block"]))]
    merged = dict(new)
    merged["entries"] = sorted(keep + new["entries"], key=lambda e: (e["family"], e["name"]))
    merged["scripts"] = {**old.get("scripts", {}), **new["scripts"]}
    return merged


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block", action="append", choices=list(BLOCKS), help="block(s) to run (default: all)")
    parser.add_argument("--family", action="append", choices=list(FAMILIES), help="families (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="Yosys processes at once (default 1)")
    parser.add_argument("--list", action="store_true", help="print the grid and exit")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    blocks = args.block or list(BLOCKS)
    families = args.family or list(FAMILIES)
    if args.list:
        for block in blocks:
            for name, params in grid(block):
                print(f"{block:10s} {name:24s} {json.dumps(params)}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for block in blocks:
        if not grid(block):
            print(f"{block}: no grid yet, skipped", file=sys.stderr)
            continue
        print(f"{block}: synthesizing {len(grid(block))} configurations x {len(families)} families", file=sys.stderr)
        data = run_block(block, families, args.jobs, log=lambda s: print(s, file=sys.stderr, flush=True))
        path = args.out / f"{block}.json"
        data = merge(path, data)
        path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
        print(f"{block}: wrote {path} ({len(data['entries'])} entries)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
