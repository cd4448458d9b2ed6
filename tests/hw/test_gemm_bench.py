"""bench/bench_gemm.py --quick: the cycle model's table for the 1,024-MAC engine on DeiT-S's layers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_gemm.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gemm", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_bench_meets_the_utilization_goal(tmp_path):
    bench = _bench()
    assert bench.main(["--quick", "--json", str(tmp_path / "out.json")]) == 0
    rows = json.loads((tmp_path / "out.json").read_text())["layers"]
    assert [(r["n"], r["k"], r["m"]) for r in rows] == bench.LAYERS
    for r in rows:
        tiles = -(-r["n"] // 8) * -(-r["m"] // 128)
        # in a stream every tile costs exactly k cycles: the array never waits for weights or the drain
        assert r["stream_cycles"] == tiles * r["k"], r
        assert r["stream_utilization"] >= 0.9 and r["bytes_per_cycle_needed"] <= 16, r
        assert r["first_cycles"] > r["stream_cycles"]
