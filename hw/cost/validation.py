"""Model versus synthesis: every stored baseline compared with the cost model, metric by metric.

The baselines (``tests/hw/baselines/<block>.json``, written by ``bench/synth_baselines.py``) hold the
measured Yosys counts of a grid of configurations per family and the tolerance of each metric (DSP and
block RAM exact, LUT and FF relative). :func:`compare` predicts every entry with the block's cost model
and returns one row per (configuration, metric) with the error and whether it is within tolerance;
:func:`summary` condenses the rows per block and family. ``tokensift estimate --validate`` and
``bench/bench_cost_model.py`` print them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from tokensift.hw.cost.registry import BLOCKS, block_cost

__all__ = ["BASELINE_DIR", "Row", "load_baselines", "compare", "summary", "METRICS"]

#: baselines live in the source checkout, beside the tests
BASELINE_DIR = Path(__file__).resolve().parents[2] / "tests" / "hw" / "baselines"

#: metrics compared, in report order (``lutram``: LUTs used as memory, checked on the primitive probes)
METRICS = ("dsp", "bram18", "bram36", "ebr", "lutram", "lut", "ff")


@dataclass(frozen=True)
class Row:
    block: str
    name: str
    family: str
    metric: str
    model: float
    synth: float
    error: float  # relative to the measured value (absolute difference when it is 0)
    tolerance: dict
    ok: bool

    def as_dict(self) -> dict:
        return asdict(self)


def load_baselines(block: str, directory: Path | None = None) -> dict | None:
    path = (directory or BASELINE_DIR) / f"{block}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _model_value(res, metric: str, block: str, params: dict, family: str) -> float:
    if metric == "lutram":
        from tokensift.hw.common.resources import map_memory

        if block != "memory":
            return float("nan")
        m = map_memory(params["width"], params["depth"], family=family, sync_read=params.get("sync_read", True),
                       rom=params.get("rom", False))
        return float(m.blocks.lut)
    return float(getattr(res, metric))


def _within(model: float, synth: float, tol: dict) -> tuple[float, bool]:
    diff = abs(model - synth)
    err = diff / synth if synth else diff
    if "abs" in tol:
        return err, diff <= tol["abs"]
    return err, (diff <= tol["rel"] * synth) if synth else diff <= tol.get("abs_floor", 0)


def compare(blocks=None, families=None, directory: Path | None = None) -> list[Row]:
    """Rows of model vs synthesis for the stored baselines of ``blocks`` (default: all present)."""
    rows = []
    for block in blocks or list(BLOCKS):
        data = load_baselines(block, directory)
        if data is None:
            continue
        cost = block_cost(block)
        tolerances = data["tolerances"]
        for e in data["entries"]:
            if families and e["family"] not in families:
                continue
            res = cost.resources(e["params"], e["family"])
            for metric in METRICS:
                if metric not in tolerances:
                    continue
                model = _model_value(res, metric, block, e["params"], e["family"])
                synth = float(e["synth"][metric])
                err, ok = _within(model, synth, tolerances[metric])
                rows.append(Row(block, e["name"], e["family"], metric, model, synth, err, tolerances[metric], ok))
    return rows


def summary(rows: list[Row]) -> dict:
    """Per block and family: configurations, failures, and the worst and mean relative LUT/FF errors."""
    out: dict = {}
    for r in rows:
        s = out.setdefault(r.block, {}).setdefault(r.family, {"configs": set(), "failures": 0})
        s["configs"].add(r.name)
        s["failures"] += 0 if r.ok else 1
        if r.metric in ("lut", "ff", "dsp", "bram18", "bram36", "ebr"):
            s.setdefault(r.metric, []).append(r.error)
    for fams in out.values():
        for s in fams.values():
            s["configs"] = len(s["configs"])
            for metric in ("lut", "ff", "dsp", "bram18", "bram36", "ebr"):
                if metric in s:
                    errs = s.pop(metric)
                    s[f"{metric}_max_err"] = max(errs)
                    s[f"{metric}_mean_err"] = sum(errs) / len(errs)
    return out
