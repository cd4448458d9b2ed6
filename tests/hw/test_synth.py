"""Live Yosys synthesis: a few small configurations in the default suite, the whole grid as ``slow``.

Each synthesis runs for real (a fresh cache directory), must reproduce the stored baseline cell counts
(the baselines are current) and must agree with the cost model within the stored tolerances.
"""

import importlib.util
from pathlib import Path

import pytest

from tokensift.hw.cost.registry import block_cost
from tokensift.hw.cost.synth import synthesize
from tokensift.hw.cost.validation import _within, load_baselines

pytestmark = pytest.mark.synth

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("synth_baselines", ROOT / "bench" / "synth_baselines.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)

#: (block, configuration, family): one per family, all small
LIVE = [("memory", "m16x197s", "ecp5"), ("multiplier", "x32x15s", "xc7"), ("requant", "acc32_m12345_s20", "xcup"),
        ("gemm", "r2_c4_w2", "ecp5")]

METRICS = ("dsp", "bram18", "bram36", "ebr", "lut", "ff")


def _stored(block, name, family):
    data = load_baselines(block)
    assert data is not None, f"no baselines for {block}"
    entry = next(e for e in data["entries"] if e["name"] == name and e["family"] == family)
    return data, entry


def _check(block, name, family, cache_dir):
    data, entry = _stored(block, name, family)
    cost = block_cost(block)
    params = cost.normalize(dict(gen.grid(block))[name])
    got = synthesize(cost.build(params), family=family, top=f"{block}_{name}", cache_dir=cache_dir, use_cache=False)
    assert got["cached"] is False
    # the stored baseline is what synthesis gives today
    assert {k: got[k] for k in METRICS} == {k: entry["synth"][k] for k in METRICS}
    # and the model is within tolerance of it
    res = cost.resources(params, family)
    for metric, tol in data["tolerances"].items():
        if metric == "lutram":
            continue
        _, ok = _within(float(getattr(res, metric)), float(got[metric]), tol)
        assert ok, f"{block} {name} {family} {metric}: model {getattr(res, metric)} synth {got[metric]}"


@pytest.mark.parametrize("block,name,family", LIVE, ids=lambda v: str(v))
def test_live_synthesis_matches_baseline_and_model(block, name, family, tmp_path):
    _check(block, name, family, tmp_path)


def _all_entries():
    out = []
    for block in ("memory", "multiplier", "requant", "mac_array", "selector", "attention", "score_combiner", "gemm"):
        data = load_baselines(block)
        for e in (data or {}).get("entries", []):
            out.append((block, e["name"], e["family"]))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("block,name,family", _all_entries(), ids=lambda v: str(v))
def test_full_grid_live(block, name, family, tmp_path_factory):
    _check(block, name, family, tmp_path_factory.mktemp("synth"))
