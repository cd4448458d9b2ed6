"""The Fmax baselines (tests/hw/baselines/fmax.json, written by ``python bench/bench_timing.py --write``): they
cover the timing grid, and (slow) place and route reproduces them.

Tolerance: Yosys and nextpnr are deterministic for a given design, seed and tool version, so with the tool
versions the baseline records the figures reproduce to the reported 0.01 MHz; the slow test allows 2% so that
a patch release of a tool that moves a few cells does not fail it, and names the configuration and both
figures when it does.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_timing.py"
BASELINE = Path(__file__).resolve().parent / "baselines" / "fmax.json"
TOLERANCE = 0.02


def _bench():
    spec = importlib.util.spec_from_file_location("bench_timing", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _configs() -> list[dict]:
    return json.loads(BASELINE.read_text())["configs"]


def test_baseline_covers_the_grid_at_speeds_6_and_8():
    bench = _bench()
    stored = {(c["block"], c["name"]): c for c in _configs()}
    assert set(stored) == {(g[0], g[1]) for g in bench.GRID}
    for block, name, _, argv in bench.GRID:
        c = stored[(block, name)]
        assert c["args"] == argv, f"{block} {name}: the grid changed; run python bench/bench_timing.py --write"
        assert set(c["fmax_mhz"]) >= {"6", "8"} and all(v > 0 for v in c["fmax_mhz"].values())
        # a faster speed grade is never slower on the same netlist by more than placement noise
        assert c["fmax_mhz"]["8"] >= 0.95 * c["fmax_mhz"]["6"], (block, name, c["fmax_mhz"])


@pytest.mark.slow
@pytest.mark.synth
@pytest.mark.parametrize("config", _configs(), ids=lambda c: f"{c['block']}-{c['name']}")
def test_place_and_route_reproduces_the_baseline(config, tmp_path):
    from tokensift.hw.cost.pnr import place_and_route

    component, top, _ = _bench().build(config["block"], config["args"])
    for speed, stored in config["fmax_mhz"].items():
        r = place_and_route(component, top=top, speed=int(speed), cache_dir=tmp_path)
        assert r["fmax_mhz"] == pytest.approx(stored, rel=TOLERANCE), (
            f"{config['block']} {config['name']} at speed {speed}: {r['fmax_mhz']} MHz now, {stored} MHz in the "
            f"baseline (tools now: yosys {r['yosys']}, nextpnr {r['nextpnr']}; baseline: {config['tools']})")


@pytest.mark.parametrize("seeds", ["1,x", "0", "2,-3"])
def test_bad_seeds_stop_before_any_tool_runs(seeds, capsys, monkeypatch):
    bench = _bench()
    monkeypatch.setattr(bench, "measure", lambda *a, **k: pytest.fail("no tool may run before --seeds is checked"))
    with pytest.raises(SystemExit) as exc:
        bench.main(["--block", "requant", "--seeds", seeds])
    assert exc.value.code == 2 and "--seeds must" in capsys.readouterr().err


def test_seed_spread_table(capsys):
    """The seed table prints every seed's Fmax and their min / median / max."""
    bench = _bench()
    row = {"block": "attention", "name": "demo", "about": "", "fmax_mhz": {"6": 90.0},
           "critical_path": {"6": {"from": "a", "to": "b", "logic_ns": 1.0, "routing_ns": 9.0}},
           "seed_fmax_mhz": {"6": {"default": 90.0, "1": 101.5, "2": 95.25}}}
    bench._print([row], (6,), {})
    out = capsys.readouterr().out
    assert "| attention | demo | default 90.0, 1 101.5, 2 95.2 | 90.0 / 95.2 / 101.5 |" in out
