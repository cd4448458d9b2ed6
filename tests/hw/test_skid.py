"""The skid buffer (:mod:`tokensift.hw.common.skid`): every beat out once and in order under random stalls on
both sides, ``i.ready`` a register (no path from ``o.ready``), and no added cycle for a consumer that keeps up."""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import unsigned
from amaranth.sim import Simulator
from amaranth_streams import StreamBench, run_to_completion

from tokensift.hw.common.skid import SkidBuffer


def _run(dut, benches, *, cycles: int = 20000):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for tb in benches:
        sim.add_testbench(tb)
    assert run_to_completion(sim, max_cycles=cycles), f"a testbench still runs after {cycles} cycles"


@pytest.mark.parametrize("seed,idle,stall", [(0, 0.0, 0.0), (1, 0.3, 0.0), (2, 0.0, 0.5), (3, 0.4, 0.4),
                                             (4, 0.05, 0.9)])
def test_every_beat_once_in_order_under_stalls(seed, idle, stall):
    dut = SkidBuffer(layout=unsigned(16))
    bench = StreamBench(seed, idle=idle, stall=stall)
    items = [random.Random(seed).randrange(1 << 16) for _ in range(400)]
    got = []
    _run(dut, [bench.source(dut.i, items), bench.sink(dut.o, got, len(items))])
    assert got == items


def test_ready_is_a_register():
    """``i.ready`` never changes with ``o.ready`` within a cycle: the producer's enable ends at the slice."""
    dut = SkidBuffer(layout=unsigned(8))
    seen = []

    async def tb(ctx):
        rng = random.Random(5)
        for _ in range(300):
            ctx.set(dut.i.valid, rng.random() < 0.7)
            ctx.set(dut.i.payload, rng.randrange(256))
            ctx.set(dut.o.ready, 0)
            before = ctx.get(dut.i.ready)
            ctx.set(dut.o.ready, 1)
            seen.append((before, ctx.get(dut.i.ready)))
            ctx.set(dut.o.ready, rng.random() < 0.5)
            await ctx.tick()

    _run(dut, [tb], cycles=400)
    assert all(a == b for a, b in seen) and {a for a, _ in seen} == {0, 1}


def test_a_consumer_that_keeps_up_sees_the_same_cycles():
    """With ``o.ready`` high the slice is a wire: each beat leaves in the cycle it arrives."""
    dut = SkidBuffer(layout=unsigned(8))
    trace = []

    async def tb(ctx):
        rng = random.Random(6)
        ctx.set(dut.o.ready, 1)
        for _ in range(200):
            valid, payload = rng.random() < 0.6, rng.randrange(256)
            ctx.set(dut.i.valid, valid)
            ctx.set(dut.i.payload, payload)
            trace.append((valid, payload, ctx.get(dut.o.valid), ctx.get(dut.o.payload), ctx.get(dut.i.ready)))
            await ctx.tick()

    _run(dut, [tb], cycles=300)
    assert all(v == ov and (not v or p == op) and r for v, p, ov, op, r in trace)
