"""Score combiner benchmark: cycles on DeiT-S next to the attention core, and resources, model vs Yosys.

Prints, as ``rich`` tables:

1. DeiT-S (N = 197, 6 heads): the combiner's cycles per frame for 1, 4 and 16 lanes, per head (EViT, AS-ViT's
   "image" variant) and in SPViT's form (signed values, per-token weights), measured in Verilator
   (cocotb, no stalls, bit-exact check against ``quant.select.head_weighted_scores``) next to the closed
   form :func:`tokensift.hw.score_combiner.core.combiner_cycles`, as a share of the attention core it follows
   (:func:`tokensift.hw.attention.cycles.cycles`, six heads of 64 on one 16-lane core); only the N + 7 cycles
   after the last head add latency, the rest overlaps the attention core's rows;
2. resources for the same configurations: the exact model (:mod:`tokensift.hw.score_combiner.resources`:
   DSP, block RAM, memory LUT RAM) next to Yosys (``synth_xilinx -family xcup``, cached under ``build/synth``).

    .venv/bin/python bench/bench_score_combiner.py            # everything (first run: Verilator + Yosys, minutes)
    .venv/bin/python bench/bench_score_combiner.py --quick    # formula and model only
    .venv/bin/python bench/bench_score_combiner.py --json out.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys

from rich.console import Console
from rich.table import Table

from tokensift.hw.attention.cycles import cycles as attention_cycles
from tokensift.hw.score_combiner.core import CombinerParams, combiner_cycles
from tokensift.hw.score_combiner.resources import build, exact
from tokensift.quant.attention import AttentionParams
from tokensift.quant.fixed import FixedFormat

N, HEADS, HEAD_DIM, ATTENTION_LANES = 197, 6, 64, 16
LANES = (1, 4, 16)
#: (name, ``tokensift simulate score_combiner`` options, CombinerParams keywords, per_token)
MODES = (
    ("per head", [], {}, False),
    ("SPViT: signed, per token", ["--signed", "--per-token-weights", "--per-token"],
     {"score": FixedFormat(bits=16, frac=15, signed=True), "per_token_weights": True}, True),
)


def simulate(lanes: int, options: list[str], tag: str) -> dict:
    """One timed DeiT-S frame (no stalls) plus random stalled frames through Verilator."""
    from tokensift.commands import block_score_combiner as block

    parser = argparse.ArgumentParser()
    block.add_simulate_arguments(parser)
    args = parser.parse_args(["--n-max", str(N), "--heads", str(HEADS), "--lanes", str(lanes), "--stall", "0",
                              "--frames", "2", *options])
    args.seed, args.waves, args.build_dir = 1, None, f"build/sim/bench_score_combiner_l{lanes}{tag}"
    return block.simulate(args)


def table_cycles(console: Console, out: dict, *, run_sim: bool) -> None:
    attn = attention_cycles(AttentionParams(n_max=N, head_dim=HEAD_DIM, lanes=ATTENTION_LANES), n_tokens=N,
                            heads=HEADS)
    t = Table(title=f"DeiT-S score combiner (N = {N}, {HEADS} heads) vs the attention core "
                    f"({attn:,} cycles: {HEADS} x {HEAD_DIM} heads, {ATTENTION_LANES} lanes)")
    for col in ("mode", "lanes", "formula", "Verilator", "bit-exact", "vs attention core", "after the last head"):
        t.add_column(col, justify="right")
    rows = []
    for (mode, options, kwargs, per_token), lanes in itertools.product(MODES, LANES):
        p = CombinerParams(n_max=N, heads=HEADS, lanes=lanes, **kwargs)
        formula = combiner_cycles(p, n_tokens=N, heads=HEADS, per_token=per_token)
        measured = exact_ok = None
        if run_sim:
            rep = simulate(lanes, options, "_spvit" if per_token else "")
            measured, exact_ok = rep["cycles"], rep["bit_exact"]
            if measured != formula or not exact_ok:
                raise RuntimeError(f"{mode}, lanes {lanes}: Verilator {measured} cycles (bit-exact {exact_ok}), "
                                   f"formula {formula}")
        cycles = measured if measured is not None else formula
        tail = formula - HEADS * p.words  # what does not overlap the rows: the command, drain and scores
        rows.append({"mode": mode, "lanes": lanes, "formula": formula, "measured": measured, "bit_exact": exact_ok,
                     "attention_core": attn, "ratio": cycles / attn, "tail": tail})
        t.add_row(mode, str(lanes), f"{formula:,}", f"{measured:,}" if measured else "(not run)",
                  "-" if exact_ok is None else str(exact_ok), f"{100 * cycles / attn:.3f}%",
                  f"{tail} ({100 * tail / attn:.3f}%)")
    console.print(t)
    out["deit_s"] = rows


def table_resources(console: Console, out: dict) -> None:
    from tokensift.hw.cost.synth import synthesize

    t = Table(title=f"Score combiner resources (n_max {N}, {HEADS} heads), model vs Yosys synth_xilinx -family xcup")
    for col in ("mode", "lanes", "DSP model", "DSP Yosys", "BRAM18 model", "BRAM18 Yosys", "LUT Yosys (LUT RAM)",
                "FF Yosys"):
        t.add_column(col, justify="right")
    rows = []
    for (mode, _, kwargs, _), lanes in itertools.product(MODES, LANES):
        p = CombinerParams(n_max=N, heads=HEADS, lanes=lanes, **kwargs)
        model = exact(p, "xcup")
        r = synthesize(build(p), family="xcup", top="tokensift_score_combiner")
        model_b18, yosys_b18 = model.bram18 + 2 * model.bram36, r["bram18"] + 2 * r["bram36"]
        if (model.dsp, model_b18) != (r["dsp"], yosys_b18):
            raise RuntimeError(f"{mode}, lanes {lanes}: model {model.dsp} DSP / {model_b18} BRAM18, "
                               f"Yosys {r['dsp']} / {yosys_b18}")
        rows.append({"mode": mode, "lanes": lanes, "dsp": r["dsp"], "bram18": yosys_b18, "lut": r["lut"],
                     "lutram": r["lutram"], "ff": r["ff"], "dsp_model": model.dsp, "bram18_model": model_b18,
                     "lutram_model": model.lut})
        t.add_row(mode, str(lanes), str(model.dsp), str(r["dsp"]), str(model_b18), str(yosys_b18),
                  f"{r['lut']:,} ({r['lutram']})", f"{r['ff']:,}")
    console.print(t)
    out["resources"] = rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="formula and model only (no Verilator, no Yosys)")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    console = Console(width=150)
    out: dict = {}
    table_cycles(console, out, run_sim=not args.quick)
    if not args.quick:
        table_resources(console, out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
