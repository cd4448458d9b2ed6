"""Cost model versus Yosys synthesis: every stored configuration, every metric, with its error.

Reads the baselines of ``tests/hw/baselines`` (``bench/synth_baselines.py`` writes them from real
synthesis runs) and prints, per block and family, the model's DSP / block RAM (exact) and LUT / FF
(fitted) next to the measured counts, the relative error and the tolerance; then the worst and mean
LUT/FF errors per block and family and the leave-one-out errors of the fit. Exit status 1 when a
configuration is outside its tolerance. Same report as ``tokensift estimate --validate``.

    python bench/bench_cost_model.py          (or: tokensift bench cost_model)
    python bench/bench_cost_model.py --markdown   # the summary table of docs/cost.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tokensift.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def loo_table() -> Table:
    fit = json.loads((ROOT / "tokensift" / "data" / "lut_ff_fit.json").read_text())
    table = Table(title="LUT/FF fit: in-sample and leave-one-out relative errors")
    for col in ("block", "family", "n", "LUT max", "LUT mean", "LUT LOO max", "FF max", "FF mean", "FF LOO max"):
        table.add_column(col, justify="left" if col in ("block", "family") else "right")
    for block, fams in fit["blocks"].items():
        for family, e in fams.items():
            cells = []
            for metric in ("lut", "ff"):
                err = e["errors"].get(metric)  # the memories' flip-flops are rules, not fitted
                # a fit on one shape has no leave-one-out error (None)
                cells += ([_pct(err["max_rel"]), _pct(err["mean_rel"]), _pct(err["loo_max_rel"])]
                          if err else ["-", "-", "-"])
            table.add_row(block, family, str(e["n"]), cells[0], cells[1], cells[2], cells[3], cells[4], cells[5])
    return table


def markdown() -> str:
    """The per block and family summary as a Markdown table (for docs/cost.md)."""
    from tokensift.hw.cost.validation import compare, summary

    rows = compare()
    s = summary(rows)
    fit = json.loads((ROOT / "tokensift" / "data" / "lut_ff_fit.json").read_text())["blocks"]
    exact = {}
    for r in rows:
        if r.metric in ("dsp", "bram18", "bram36", "ebr", "lutram"):
            key = (r.block, r.family)
            ok, n = exact.get(key, (0, 0))
            exact[key] = (ok + (r.model == r.synth), n + 1)
    lines = ["| block | family | configs | DSP/BRAM/LUTRAM exact | LUT max / mean err | LUT leave-one-out max "
             "| FF max / mean err | FF leave-one-out max |", "|---|---|---|---|---|---|---|---|"]
    for block, fams in s.items():
        for family, v in fams.items():
            ok, n = exact.get((block, family), (0, 0))
            loo = fit.get(block, {}).get(family, {}).get("errors", {})

            def err(metric, v=v):
                if f"{metric}_max_err" not in v:
                    return "-"
                return f"{v[f'{metric}_max_err']:.1%} / {v[f'{metric}_mean_err']:.1%}"

            def loo_of(metric, loo=loo):
                # one configuration has no leave-one-out fit (the xcup accelerator)
                value = loo.get(metric, {}).get("loo_max_rel")
                return "-" if value is None else f"{value:.1%}"

            lines.append(f"| {block} | {family} | {v['configs']} | {ok}/{n} | {err('lut')} | {loo_of('lut')} | "
                         f"{err('ff')} | {loo_of('ff')} |")
    return "\n".join(lines)


def main() -> int:
    if "--markdown" in sys.argv[1:]:
        print(markdown())
        return 0
    status = cli_main(["estimate", "--validate"])
    Console(width=None if sys.stdout.isatty() else 150).print(loo_table())
    return status


if __name__ == "__main__":
    sys.exit(main())
