"""bench/bench_score_combiner.py: the quick tables (formula and model) and its JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_score_combiner.py"


def test_quick_bench_reports_deit_s_cycles(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_score_combiner", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick", "--json", str(tmp_path / "out.json")]) == 0
    rows = json.loads((tmp_path / "out.json").read_text())["deit_s"]
    per_head, per_token = rows[:3], rows[3:]
    assert [r["lanes"] for r in per_head] == [r["lanes"] for r in per_token] == [1, 4, 16]
    assert [r["formula"] for r in per_head] == [1386, 504, 282]  # H * ceil(N / lanes) + N + 7
    assert [r["formula"] for r in per_token] == [1385, 503, 281]  # no wait for the first head weight: + N + 6
    assert {r["tail"] for r in per_head} == {197 + 7} and {r["tail"] for r in per_token} == {197 + 6}
    assert all(0 < r["ratio"] < 0.001 for r in rows)
