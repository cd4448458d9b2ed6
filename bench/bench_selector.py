"""Token selector benchmark: cycles per frame, overhead on DeiT-S attention, DSPs next to HeatViT's.

Prints, as ``rich`` tables:

1. cycles per frame as a function of N (dim 384, 16 lanes) and of dim / lanes (N = 197), from the
   closed form :func:`tokensift.hw.selector.core.cycles` (equal to simulation, cycle for cycle, by the tests);
2. DeiT-S (N = 197, dim 384, 6 heads of 64, 16 lanes): the selector's cycles, measured in Verilator next
   to the formula, against (a) the attention core it follows (:func:`tokensift.hw.attention.cycles.cycles`,
   six heads on one 16-lane core) and (b) the whole attention layer including the qkv and output
   projections at its ideal ``MACs / 16`` on 16 MACs; goal: under 3%;
3. the selector's DSPs, BRAM, LUT and FF from Yosys (``synth_xilinx -family xcup``, cached under
   ``build/synth``), as a share of ZCU102 / KV260 DSPs, next to HeatViT's 8-11% DSP overhead.

    .venv/bin/python bench/bench_selector.py            # everything (first run: Verilator + Yosys, minutes)
    .venv/bin/python bench/bench_selector.py --quick    # formula tables only
    .venv/bin/python bench/bench_selector.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict

from rich.console import Console
from rich.table import Table

from tokensift.hw.selector.core import Selector, cycle_breakdown, cycles
from tokensift.quant.select import Mode, SelectorParams

DEIT_S = {"n": 197, "dim": 384, "heads": 6, "head_dim": 64, "lanes": 16, "mlp_ratio": 4}
KEEP_RATIO = 0.7  # DynamicViT / EViT keep ratio of the first stage
HEATVIT_DSP_OVERHEAD = (8.0, 11.0)  # % of the backbone accelerator's DSPs (REFERENCE.md)


def topk_kept(n: int, rho: float) -> int:
    """Tokens a top-k stage keeps: the class token plus ceil(rho * patches), as sw.selection does."""
    return 1 + math.ceil((n - 1) * rho - 1e-9)


def table_vs_n(console: Console, out: dict) -> None:
    t = Table(title=f"Selector cycles per frame vs N (dim 384, 16 lanes, top-k at rho = {KEEP_RATIO})")
    for col in ("N", "kept", "top-k", "top-k + package (mean)", "top-k + package (sum)", "threshold",
                "mass", "top-k cycles / (N x beats)", "search share"):
        t.add_column(col, justify="right")
    rows = []
    for n in (17, 50, 100, 197, 394, 785):
        p = SelectorParams(n_max=n, dim=384, lanes=16, package=True, mass=True)
        kept = topk_kept(n, KEEP_RATIO)
        topk = cycles(p, n_tokens=n, kept=kept, mode=Mode.TOPK)
        pkg = cycles(p, n_tokens=n, kept=kept, mode=Mode.TOPK, package=True)
        pkg_sum = cycles(p, n_tokens=n, kept=kept, mode=Mode.TOPK, package=True, package_rule="sum")
        thr = cycles(p, n_tokens=n, kept=kept, mode=Mode.THRESHOLD)
        mass = cycles(p, n_tokens=n, kept=kept, mode=Mode.MASS)
        search = cycle_breakdown(p, n_tokens=n, kept=kept, mode=Mode.TOPK)["search"]
        rows.append({"n": n, "kept": kept, "topk": topk, "topk_package": pkg, "topk_package_sum": pkg_sum,
                     "threshold": thr, "mass": mass})
        t.add_row(str(n), str(kept), f"{topk:,}", f"{pkg:,}", f"{pkg_sum:,}", f"{thr:,}", f"{mass:,}",
                  f"{topk / (n * p.beats):.3f}", f"{100 * search / topk:.1f}%")
    console.print(t)
    out["vs_n"] = rows


def table_vs_width(console: Console, out: dict) -> None:
    t = Table(title="Selector cycles per frame vs dim / lanes (N = 197, top-k at rho = 0.7, package token)")
    for col in ("dim", "lanes", "beats/token", "load", "search", "compact", "output", "package", "total"):
        t.add_column(col, justify="right")
    rows = []
    n = 197
    kept = topk_kept(n, KEEP_RATIO)
    for dim, lanes in ((192, 8), (192, 16), (384, 16), (384, 32), (768, 16), (768, 64)):
        p = SelectorParams(n_max=n, dim=dim, lanes=lanes, package=True)
        br = cycle_breakdown(p, n_tokens=n, kept=kept, mode=Mode.TOPK, package=True)
        total = sum(br.values())
        rows.append({"dim": dim, "lanes": lanes, **br, "total": total})
        t.add_row(str(dim), str(lanes), str(p.beats), *(f"{br[k]:,}" for k in
                  ("load", "search", "compact", "output", "package")), f"{total:,}")
    console.print(t)
    out["vs_width"] = rows


def attention_cycles() -> tuple[int | None, str]:
    """Cycles of the attention core for DeiT-S (6 heads of 64 on one 16-lane core), if it exists."""
    try:
        from tokensift.hw.attention.cycles import cycles as attn_cycles
        from tokensift.quant.attention import AttentionParams
    except ImportError as exc:  # the attention core has not landed: fall back to the ideal bound
        return None, f"hw.attention_cost not available ({exc})"
    a = AttentionParams(n_max=DEIT_S["n"], head_dim=DEIT_S["head_dim"], lanes=DEIT_S["lanes"])
    return attn_cycles(a, n_tokens=DEIT_S["n"], heads=DEIT_S["heads"]), "hw.attention_cost.cycles"


def attention_layer_macs(n: int, dim: int) -> int:
    """MACs of one DeiT attention layer: qkv projection, QK^T, attention x V, output projection."""
    return n * dim * 3 * dim + 2 * n * n * dim + n * dim * dim


def _mode(case: dict) -> Mode:
    return Mode.TOPK if case["keep"] is not None else Mode.THRESHOLD if case["threshold"] is not None else Mode.MASS


def reference_kept(p: SelectorParams, *, keep: int | None, threshold: int | None, mass: int | None, package: bool,
                   package_rule: str) -> int:
    """Tokens the reference keeps on the random frame the Verilator run gets (same generator, seed 1)."""
    import numpy as np

    from tokensift.sim.tb_selector import make_frame

    frame = make_frame(p, np.random.default_rng(1), n=p.n_max, mode=_mode({"keep": keep, "threshold": threshold}),
                       k=keep or 0, t=threshold or 0, mass=mass or 0, package=package, rule=package_rule)
    return frame["ref"].n_kept


def simulate_deit_frame(p: SelectorParams, **case) -> dict:
    """One DeiT-S frame through Verilator (cocotb ``cli_frame``); returns the testbench report."""
    from tokensift.sim.runner import run_cocotb

    params = {"config": asdict(p), "seed": 1, "tokens": p.n_max, **case}
    return run_cocotb(Selector(**asdict(p)), toplevel="tokensift_selector", test_module="tokensift.sim.tb_selector",
                      params=params, testcase="cli_frame", seed=1).report


#: DeiT-S with every method's selection step built: package token, 16-bit package weights (SPViT's keep
#: probabilities, 15 fractional bits) apart from the scores, and SaiT's mass mode
DEIT_S_METHODS = {"package": True, "weight_bits": 16, "weight_frac": 15, "mass": True, "mass_frac": 15}


def table_deit(console: Console, out: dict, *, simulate: bool) -> None:
    n, dim, lanes = DEIT_S["n"], DEIT_S["dim"], DEIT_S["lanes"]
    p = SelectorParams(n_max=n, dim=dim, lanes=lanes, **DEIT_S_METHODS)
    attn, attn_src = attention_cycles()
    ideal = attention_layer_macs(n, dim) // lanes
    kept = topk_kept(n, KEEP_RATIO)
    off = {"keep": None, "threshold": None, "mass": None, "package": False, "package_rule": "mean"}
    cases = [
        ("DynamicViT / EViT top-k", {**off, "keep": kept - 1}),
        ("HeatViT top-k + package (mean)", {**off, "keep": kept - 1, "package": True}),
        ("SPViT / EViT top-k + package (sum)", {**off, "keep": kept - 1, "package": True, "package_rule": "sum"}),
        ("AS-ViT threshold (T = 2^15, uniform scores)", {**off, "threshold": 1 << 15}),
        ("SaiT mass 0.9 (uniform scores)", {**off, "mass": round(0.9 * (1 << 15))}),
    ]
    t = Table(title=f"DeiT-S: selector vs the attention it follows (N = {n}, dim {dim}, 6 x 64 heads, "
                    f"{lanes} lanes)")
    for col in ("rule", "kept", "selector (formula)", "selector (Verilator)", "bit-exact",
                "vs attention core", "vs attention layer (ideal)"):
        t.add_column(col, justify="right")
    rows = []
    for name, case in cases:
        kept_now = reference_kept(p, **case)
        formula = cycles(p, n_tokens=n, kept=kept_now, mode=_mode(case), package=case["package"] and kept_now < n,
                         package_rule=case["package_rule"])
        measured = exact = None
        if simulate:
            rep = simulate_deit_frame(p, **case)
            measured, exact = rep["cycles"], rep["bit_exact"]
            if rep["kept"] != kept_now:
                raise RuntimeError(f"Verilator kept {rep['kept']} tokens, the reference {kept_now}")
        sel = measured if measured is not None else formula
        row = {"rule": name, "kept": kept_now, "formula": formula, "measured": measured, "bit_exact": exact,
               "attention_core": attn, "attention_layer_ideal": ideal,
               "ratio_core": sel / attn if (sel and attn) else None,
               "ratio_layer": sel / ideal if sel else None}
        rows.append(row)
        t.add_row(name, str(kept_now), f"{formula:,}", f"{measured:,}" if measured else "(not run)",
                  "-" if exact is None else str(exact),
                  f"{100 * row['ratio_core']:.2f}%" if row["ratio_core"] else "-",
                  f"{100 * row['ratio_layer']:.2f}%" if row["ratio_layer"] else "-")
    console.print(t)
    if attn is None:
        console.print(f"[yellow]attention core cycles unavailable: {attn_src}; only the ideal bound is shown[/]")
    console.print(f"attention core: {attn:,} cycles ({attn_src}, 6 heads on one 16-lane core); attention "
                  f"layer ideal: {attention_layer_macs(n, dim):,} MACs / {lanes} = {ideal:,} cycles (lower bound)"
                  if attn else "")
    out["deit_s"] = {"attention_core_cycles": attn, "attention_core_source": attn_src,
                     "attention_layer_ideal_cycles": ideal, "rows": rows}


def table_resources(console: Console, out: dict) -> None:
    from tokensift.devices import get_device
    from tokensift.hw.cost.synth import synthesize

    n, dim, lanes = DEIT_S["n"], DEIT_S["dim"], DEIT_S["lanes"]
    t = Table(title="Selector resources, Yosys synth_xilinx -family xcup (DeiT-S: n_max 197, dim 384, 16 lanes)")
    for col in ("selector options", "DSP", "RAMB36", "RAMB18", "LUT", "FF", "DSP % ZCU102", "DSP % KV260",
                "HeatViT DSP overhead"):
        t.add_column(col, justify="right")
    zcu, kv = get_device("zcu102"), get_device("kv260")
    rows = []
    for name, extra in (("none", {}), ("package", {"package": True}), ("package, weights, mass", DEIT_S_METHODS)):
        comp = Selector(n_max=n, dim=dim, lanes=lanes, **extra)
        r = synthesize(comp, family="xcup", top="tokensift_selector")
        rows.append({"block": "selector", "options": name, **{k: r[k] for k in ("dsp", "bram36", "bram18", "lut", "ff")},
                     "seconds": r.get("seconds"), "cached": r.get("cached")})
        t.add_row(name, str(r["dsp"]), str(r["bram36"]), str(r["bram18"]), f"{r['lut']:,}",
                  f"{r['ff']:,}", f"{100 * r['dsp'] / zcu.dsp:.2f}%", f"{100 * r['dsp'] / kv.dsp:.2f}%",
                  f"{HEATVIT_DSP_OVERHEAD[0]:.0f}-{HEATVIT_DSP_OVERHEAD[1]:.0f}% of its backbone")
    try:
        from tokensift.hw.attention.core import Attention
        from tokensift.quant.attention import AttentionParams
    except ImportError as exc:
        console.print(f"[yellow]attention core not available for comparison ({exc})[/]")
        out["resources"] = rows
        return
    a = synthesize(Attention(params=AttentionParams(n_max=n, head_dim=DEIT_S["head_dim"], lanes=lanes)),
                   family="xcup", top="tokensift_attention")
    rows.append({"block": "attention core", **{k: a[k] for k in ("dsp", "bram36", "bram18", "lut", "ff")}})
    t.add_row("attention core", str(a["dsp"]), str(a["bram36"]), str(a["bram18"]), f"{a['lut']:,}",
              f"{a['ff']:,}", f"{100 * a['dsp'] / zcu.dsp:.2f}%", f"{100 * a['dsp'] / kv.dsp:.2f}%", "")
    console.print(t)
    sel = rows[1]
    console.print(f"selector with package token: {sel['dsp']} DSPs = {100 * sel['dsp'] / zcu.dsp:.2f}% of a ZCU102, "
                  f"{100 * sel['dsp'] / a['dsp']:.0f}% of the 16-lane attention core's {a['dsp']} (which holds only the "
                  f"QK^T and AV matmuls); HeatViT: {HEATVIT_DSP_OVERHEAD[0]:.0f}-{HEATVIT_DSP_OVERHEAD[1]:.0f}% "
                  f"of a whole ZCU102 accelerator")
    out["resources"] = rows
    out["attention_core_resources"] = {k: a[k] for k in ("dsp", "bram36", "bram18", "lut", "ff")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="formula tables only (no Verilator, no Yosys)")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    console = Console(width=150)
    out: dict = {}
    table_vs_n(console, out)
    table_vs_width(console, out)
    table_deit(console, out, simulate=not args.quick)
    if not args.quick:
        table_resources(console, out)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
