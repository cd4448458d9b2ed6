"""Fit the LUT and FF coefficients of the cost model from the synthesis baselines.

For every block with a fitted model and every family, the part of the measured LUT / FF counts that the
primitive rules do not explain (``synth - exact``: control and datapath logic) is fitted as a
non-negative linear combination of the block's structural features (``features(params, family)`` in
``hw/<block>_resources.py``, plus an intercept), minimizing the *relative* error of the total, since the
tolerance is relative. Features that do not vary over the grid are dropped (their effect lands in the
intercept). The coefficients, the in-sample errors and the leave-one-out errors (each configuration
predicted by a fit without it) go to ``tokensift/data/lut_ff_fit.json``.

Usage::

    python bench/fit_cost_model.py            # refit every block that has baselines
    python bench/fit_cost_model.py --check    # fail if the stored fit differs from a fresh one
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from tokensift.hw.common.resources import Resources
from tokensift.hw.cost.registry import FITTED_BLOCKS, block_cost

ROOT = Path(__file__).resolve().parent.parent
BASELINES = ROOT / "tests" / "hw" / "baselines"
OUT = ROOT / "tokensift" / "data" / "lut_ff_fit.json"
METRICS = ("lut", "ff")


#: (metrics fitted, with an intercept) per block: a memory's soft logic is 0 when it has none, and its
#: flip-flops are exact rules
#: coefficients smaller than this (in LUTs or FFs per unit of a feature) are dropped
_NEGLIGIBLE = 1e-9

SETTINGS = {"memory": (("lut",), False)}
DEFAULT = (("lut", "ff"), True)


def _design(rows: list[dict], names: list[str], intercept: bool = True) -> np.ndarray:
    return np.array([([1.0] if intercept else [0.0]) + [r["features"][n] for n in names] for r in rows])


def _solve(X: np.ndarray, y: np.ndarray, total: np.ndarray) -> np.ndarray:
    w = 1.0 / np.maximum(total, 1.0)
    coef, _ = nnls(X * w[:, None], y * w)
    return coef


def fit_one(rows: list[dict], metric: str, intercept: bool = True) -> dict:
    """Coefficients and errors of one (block, family, metric)."""
    names = sorted(rows[0]["features"])
    varying = [n for n in names if len({r["features"][n] for r in rows}) > 1]
    X = _design(rows, varying, intercept)
    y = np.array([r["synth"][metric] - r["exact"][metric] for r in rows], dtype=float)
    total = np.array([r["synth"][metric] for r in rows], dtype=float)
    coef = _solve(X, y, total)
    pred = X @ coef + np.array([r["exact"][metric] for r in rows])
    rel = np.abs(pred - total) / np.maximum(total, 1.0)
    loo = []
    for i in range(len(rows)):
        keep = np.arange(len(rows)) != i
        if keep.sum() < 2:
            continue
        c = _solve(X[keep], y[keep], total[keep])
        p = X[i] @ c + rows[i]["exact"][metric]
        loo.append(abs(p - total[i]) / max(total[i], 1.0))
    coefs = {"const": float(coef[0])} if intercept else {}
    # a coefficient that only LAPACK rounding keeps off zero (1e-16 on one machine, 0 on another) is zero
    coefs.update({n: float(c) for n, c in zip(varying, coef[1:], strict=True) if abs(c) > _NEGLIGIBLE})
    return {
        "coefficients": coefs,
        "errors": {"max_rel": float(rel.max()), "mean_rel": float(rel.mean()),
                   "loo_max_rel": float(max(loo)) if loo else None,
                   "loo_mean_rel": float(np.mean(loo)) if loo else None},
    }


def rows_of(block: str) -> dict[str, list[dict]]:
    path = BASELINES / f"{block}.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    cost = block_cost(block)
    by_family: dict[str, list[dict]] = {}
    for e in data["entries"]:
        exact = (cost.fit_base or cost.exact)(e["params"], e["family"])
        if block == "memory":  # the probe's exact part: its primitives and flip-flops, no soft LUTs
            exact = Resources(lut=exact.lut, ff=exact.ff)
        by_family.setdefault(e["family"], []).append({
            "name": e["name"], "params": e["params"], "synth": e["synth"],
            "features": cost.features(e["params"], e["family"]),
            "exact": {"lut": float(exact.lut), "ff": float(exact.ff)},
        })
    return by_family


def fit_all() -> dict:
    from tokensift.hw.common.resources import use_fit_table

    blocks = {}
    try:
        for block in FITTED_BLOCKS:
            # the blocks fitted so far (the memories first) are in effect for the ones that contain them
            use_fit_table({"blocks": blocks})
            by_family = rows_of(block)
            if not by_family:
                continue
            metrics, intercept = SETTINGS.get(block, DEFAULT)
            fitted_block = {}
            for family, rows in sorted(by_family.items()):
                entry = {"n": len(rows)}
                fits = {m: fit_one(rows, m, intercept) for m in metrics}
                for m in metrics:
                    entry[m] = fits[m]["coefficients"]
                entry["errors"] = {m: fits[m]["errors"] for m in metrics}
                fitted_block[family] = entry
            blocks[block] = fitted_block
    finally:
        use_fit_table(None)
    return {
        "generated_by": "bench/fit_cost_model.py",
        "about": ("LUT/FF = exact part (primitive rules) + sum(coef * feature) with coef >= 0, fitted per "
                  "block and family to the synthesis baselines in tests/hw/baselines by relative-error "
                  "weighted non-negative least squares; errors are relative to the measured totals, "
                  "loo = leave-one-out."),
        "blocks": blocks,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the stored fit instead of writing")
    args = parser.parse_args(argv)
    fit = fit_all()
    for block, fams in fit["blocks"].items():
        for family, e in fams.items():
            errs = " ".join(f"{m}: max {e['errors'][m]['max_rel']:.1%} loo-max "
                            f"{(e['errors'][m]['loo_max_rel'] or 0):.1%}" for m in e["errors"])
            print(f"{block:10s} {family:5s} n={e['n']:2d} {errs}")
    if args.check:
        stored = json.loads(OUT.read_text()) if OUT.exists() else {}
        if stored.get("blocks") != json.loads(json.dumps(fit["blocks"])):
            print(f"{OUT} is out of date: run python bench/fit_cost_model.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(json.dumps(fit, indent=1) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
