"""Verilator + cocotbext-axi: the read and write DMAs byte for byte against AxiRam under random pauses on
every channel, back-to-back commands, 4 KiB crossings, SLVERR, rejected commands and a reset mid-transfer;
and the cycle model exact against the measured cycles at fixed memory latencies."""

from __future__ import annotations

import random

import pytest

from tokensift.hw.axi.config import AxiDmaConfig
from tokensift.sim.axi_runs import run_dma

pytestmark = pytest.mark.sim

#: configuration -> (config, AXI pause probability, stream stall probability): the 128-bit one under pauses
#: on most cycles of every channel (marked slow: minutes, never wrong or stuck)
CONFIGS = {
    "64bit": (AxiDmaConfig(data_bytes=8, max_burst=8, max_outstanding=2, length_bits=16, addr_width=20), 0.3, 0.3),
    "128bit": (AxiDmaConfig(data_bytes=16, max_burst=16, max_outstanding=4, length_bits=16, addr_width=32), 0.7,
               0.5),
}


def timed_commands(cfg: AxiDmaConfig, seed: int, count: int = 6) -> list[tuple[int, int]]:
    """Directed corners (one byte, one word, one burst and one beat more, a 4 KiB crossing, many bursts) and
    seeded random commands."""
    b = cfg.data_bytes
    corners = [(0, 1), (0, b), (0, cfg.burst_bytes), (0, cfg.burst_bytes + 1), (4096 - 2 * b, 6 * b + 3),
               (b, 9 * cfg.burst_bytes + 5)]
    rng = random.Random(seed)
    return corners + [(rng.randrange(0, 60_000) // b * b, rng.randint(1, 2_000)) for _ in range(count)]


# one test per (kind, configuration): runs of the same Verilog share one build directory, which two
# pytest-xdist workers must not build at once


@pytest.mark.parametrize("kind", ["reader", "writer"])
@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name == "128bit" else name
                                  for name in CONFIGS])
def test_dma_against_axiram(kind, name):
    cfg, pause, stall = CONFIGS[name]
    timed = timed_commands(cfg, seed=3)
    out = run_dma(kind, cfg, latency=2, timed=timed, seed=5, pause=pause, stall=stall, commands=25, max_length=700)
    assert out["bad_commands"] == 0 and out["errors"] == 0 and out["busy_after"] == 0
    assert out["commands"] >= 15 and out["bytes"] > 3_000
    assert out["errors_flagged"] and out["after_reset_bad"] == 0
    assert out["measured"] == out["expected"]

    # latency 30: the outstanding limit decides the rate; the model still meets every cycle
    out = run_dma(kind, cfg, latency=30, timed=timed_commands(cfg, seed=8, count=3), seed=2, tests=("timed",))
    assert out["measured"] == out["expected"] and out["bad_commands"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["reader", "writer"])
@pytest.mark.parametrize("cfg", [
    AxiDmaConfig(data_bytes=8, max_burst=256, max_outstanding=1, length_bits=16, addr_width=32),
    AxiDmaConfig(data_bytes=16, max_burst=4, max_outstanding=8, length_bits=16, addr_width=20),
    AxiDmaConfig(data_bytes=4, max_burst=3, max_outstanding=3, length_bits=14, addr_width=20),
    AxiDmaConfig(data_bytes=32, max_burst=128, max_outstanding=16, length_bits=20, addr_width=32),
], ids=["256beats-1out", "4beats-8out", "32bit-3beats", "256bit-16out"])
def test_sweep(kind, cfg):
    for latency in (2, 7, 60):
        timed = timed_commands(cfg, seed=latency, count=10)
        out = run_dma(kind, cfg, latency=latency, timed=timed, seed=latency, commands=60, max_length=3_000)
        assert out["measured"] == out["expected"]
        assert out["bad_commands"] == 0 and out["errors"] == 0 and out["after_reset_bad"] == 0
