"""bench/bench_whole_model.py: the whole-model row is the co-optimizer's fastest design that fits, and its
MAC-rate fractions are what its cycles say."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_whole_model", ROOT / "bench" / "bench_whole_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_row_is_the_fastest_design_that_fits(bench):
    import numpy as np

    from tokensift.coopt import CostEvaluator

    r = bench.run_case("vit_mnist_patch4_28", "dynamicvit", 0.7, "pynq-z2")
    ev = CostEvaluator("vit_mnist_patch4_28", method="dynamicvit", device="pynq-z2")
    g = ev.grid(points=[(0.7,)])
    assert r["latency_ms"] == pytest.approx(float(g.latency_ms[g.fits, 0].min()))
    assert r["latency_ms"] == pytest.approx(r["cycles"] / (r["clock_mhz"] * 1e3))
    assert r["cycles"] == sum(r["cycles_by_unit"].values()) and r["dsp"] <= r["device_dsp"] == 220
    # the fractions: the model's MACs over (device DSPs or the design's multipliers) x cycles, both below 1
    macs = r["gmacs"] * 1e9
    assert r["fraction_of_device_peak"] == pytest.approx(macs / (220 * r["cycles"]))
    design = r["hw"]["lanes"] * r["hw"]["heads_parallel"] + r["hw"]["linear_lanes"]
    assert r["fraction_of_design_macs"] == pytest.approx(macs / (design * r["cycles"]))
    assert 0 < r["fraction_of_device_peak"] <= r["fraction_of_design_macs"] < 1
    assert np.isclose(r["clock_mhz"], 100.0) and r["clock_source"] == "assumed"


def test_accelerator_row_is_the_generated_designs_fastest_shape_by_its_own_models(bench):
    from tokensift.coopt.accel_sizing import random_int_model, size_accelerator

    r = bench.accelerator_case("vit_mnist_patch4_28", "dynamicvit", 0.7, "pynq-z2")
    iv, images, _ = random_int_model("vit_mnist_patch4_28", "dynamicvit", 0.7)
    sizing = size_accelerator(iv, "pynq-z2", images, clock_mhz=100.0)
    assert r["shape"] == sizing.chosen.shape and r["cycles"] == max(sizing.chosen.cycles)
    assert r["cycles"] == min(max(p.cycles) for p in sizing.points if p.fits)
    assert sum(r["cycles_by_op"].values()) < r["cycles"]  # the sequencer's fetches come on top of the engines
    sh = r["shape"]
    macs = r["gmacs"] * 1e9
    assert r["fraction_of_design_macs"] == pytest.approx(macs / ((sh["banks"] * sh["gemm_cols"] + sh["lanes"] * sh["attention_cores"]) * r["cycles"]))
    assert 0 < r["fraction_of_device_peak"] < r["fraction_of_design_macs"] < 1 and r["dsp"] <= 220
    assert (r["clock_mhz"], r["clock_source"]) == (100.0, "assumed")


def test_accelerator_row_says_what_is_short_when_nothing_fits(bench):
    # the design keeps every token's activations on chip: DeiT-T's buffers alone exceed a PYNQ-Z2's block RAM
    from tokensift.coopt.accel_sizing import AccelSpace

    smallest = AccelSpace(banks=(1,), gemm_cols=(16,), lanes=(4,), axi_bytes=(8,))
    r = bench.accelerator_case("deit_tiny_patch16_224", "none", None, "pynq-z2", space=smallest)
    assert r["fits"] is False and r["message"] == "no accelerator shape of the space fits PYNQ-Z2"
    assert r["utilization"]["bram36"] > 1 and r["resources"]["bram36"] > 140
