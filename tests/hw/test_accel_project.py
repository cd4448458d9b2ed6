"""The accelerator's Python flow: the shape a co-optimizer choice maps to, the MACs an image's program needs."""

from __future__ import annotations

import pytest

from tokensift.hw.accel.project import shape_from_choice, useful_macs

DEMO_CHOICE = {"lanes": 8, "heads_parallel": 2, "linear_lanes": 128, "linear_rows": 4, "weight_rate": 15,
               "selector_lanes": 64, "softmax": "exp2_lut", "clock_mhz": 100.0}


def _shape(choice, head_dim):
    s = shape_from_choice(choice, head_dim=head_dim)
    return s["banks"], s["gemm_cols"], s["lanes"], s["axi"].data_bytes, s["attention_cores"]


@pytest.mark.parametrize("changes, head_dim, expect", [
    ({}, 16, (4, 32, 8, 16, 2)),                                    # the demo's choice: 8 lanes x 2 cores
    ({"heads_parallel": 4, "lanes": 32}, 16, (4, 32, 16, 16, 4)),   # lanes at most the head dimension
    ({"heads_parallel": 1, "lanes": 6}, 64, (4, 32, 4, 16, 1)),     # a power of two below the lanes
    ({}, 12, (4, 32, 4, 16, 2)),                                    # dividing the head dimension
    ({"heads_parallel": 20}, 16, (4, 32, 8, 16, 16)),               # at most 16 copies
    ({"linear_rows": 3}, 16, (4, 32, 8, 16, 2)),                    # rows -> power-of-two banks, MACs kept
    ({"weight_rate": 8, "linear_lanes": 8, "linear_rows": 2}, 16, (2, 8, 8, 8, 2)),  # 64-bit AXI, cols >= a word
    ({"linear_rows": None}, 16, (1, 128, 8, 16, 2)),
])
def test_shape_from_a_coopt_choice(changes, head_dim, expect):
    assert _shape({**DEMO_CHOICE, **changes}, head_dim) == expect


def test_useful_macs_count_gemm_and_attention_not_skipped_ops():
    trace = [{"op": "PATCH_EMBED", "n": 49, "k": 16, "m": 64}, {"op": "GEMM", "n": 50, "k": 64, "m": 192},
             {"op": "ATTENTION", "n": 50}, {"op": "GEMM", "n": 50, "k": 64, "m": 1, "skipped": True},
             {"op": "LAYERNORM", "n": 50}]
    assert useful_macs(trace, head_dim=16) == 49 * 16 * 64 + 50 * 64 * 192 + 2 * 50 * 50 * 16


@pytest.mark.parametrize("variant", ["dynamicvit", "asvit", "sait"])
def test_one_trace_costs_every_shape_as_its_own_run(variant):
    # the reference sequencer's run of an image depends on the model and the run-time registers only: costed
    # on another shape (its own compiled image and register addresses), it gives that shape's own cycles
    from accel_models import _int_model, _mnist, images_labels

    from tokensift.hw.accel.cycles import image_cycles
    from tokensift.hw.accel.project import configure
    from tokensift.hw.axi.config import AxiDmaConfig

    iv = _int_model(variant)
    images = images_labels(_mnist()[1], 2, start=300)[0]
    a = configure(iv, banks=2, lanes=8, gemm_cols=64)
    b = configure(iv, banks=4, lanes=4, gemm_cols=32, axi=AxiDmaConfig(data_bytes=16))
    traces = a.traces(images)
    for project in (a, b):
        own = [image_cycles(project.config, project.image, project.registers(), data, latency=10)["cycles"]
               for data in project.inputs(images)]
        assert project.estimate(traces=traces, latency=10)["cycles"] == own
        assert project.estimate(images, latency=10)["cycles"] == own
    assert a.estimate(traces=traces)["cycles"] != b.estimate(traces=traces)["cycles"]
    with pytest.raises(ValueError, match="either images or their traces"):
        a.estimate(images, traces=traces)
