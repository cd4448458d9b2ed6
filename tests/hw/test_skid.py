"""The register slices (:mod:`tokensift.hw.common.skid`): every beat out once and in order under random stalls
on both sides; the skid buffer's ``i.ready`` a register (no path from ``o.ready``) and no added cycle for a
consumer that keeps up; the register slice's ``o.valid``/``o.payload`` registers as well (no path from ``i``),
one cycle of latency and a beat every cycle at full rate."""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import unsigned
from amaranth.sim import Simulator
from amaranth_streams import StreamBench, run_to_completion

from tokensift.hw.common.skid import RegisterSlice, SkidBuffer


def _run(dut, benches, *, cycles: int = 20000):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for tb in benches:
        sim.add_testbench(tb)
    assert run_to_completion(sim, max_cycles=cycles), f"a testbench still runs after {cycles} cycles"


@pytest.mark.parametrize("component", [SkidBuffer, RegisterSlice])
@pytest.mark.parametrize("seed,idle,stall", [(0, 0.0, 0.0), (1, 0.3, 0.0), (2, 0.0, 0.5), (3, 0.4, 0.4),
                                             (4, 0.05, 0.9)])
def test_every_beat_once_in_order_under_stalls(component, seed, idle, stall):
    dut = component(layout=unsigned(16))
    bench = StreamBench(seed, idle=idle, stall=stall)
    items = [random.Random(seed).randrange(1 << 16) for _ in range(400)]
    got = []
    _run(dut, [bench.source(dut.i, items), bench.sink(dut.o, got, len(items))])
    assert got == items


@pytest.mark.parametrize("component", [SkidBuffer, RegisterSlice])
def test_ready_is_a_register(component):
    """``i.ready`` never changes with ``o.ready`` within a cycle: the producer's enable ends at the slice."""
    dut = component(layout=unsigned(8))
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


def _full_rate_trace(dut, *, seed: int, offered: float) -> list[tuple]:
    """With ``o.ready`` high, per cycle ``(i.valid, i.payload, o.valid, o.payload, i.ready)`` for random beats."""
    trace = []

    async def tb(ctx):
        rng = random.Random(seed)
        ctx.set(dut.o.ready, 1)
        for _ in range(200):
            valid, payload = rng.random() < offered, rng.randrange(256)
            ctx.set(dut.i.valid, valid)
            ctx.set(dut.i.payload, payload)
            trace.append((valid, payload, ctx.get(dut.o.valid), ctx.get(dut.o.payload), ctx.get(dut.i.ready)))
            await ctx.tick()

    _run(dut, [tb], cycles=300)
    return trace


def test_a_consumer_that_keeps_up_sees_the_same_cycles():
    """With ``o.ready`` high the slice is a wire: each beat leaves in the cycle it arrives."""
    trace = _full_rate_trace(SkidBuffer(layout=unsigned(8)), seed=6, offered=0.6)
    assert all(v == ov and (not v or p == op) and r for v, p, ov, op, r in trace)


def test_the_register_slice_output_is_a_register():
    """``o.valid`` and ``o.payload`` never change with ``i`` within a cycle: the producer's valid logic ends at
    the slice."""
    dut = RegisterSlice(layout=unsigned(8))
    seen = []

    async def tb(ctx):
        rng = random.Random(7)
        for _ in range(300):
            ctx.set(dut.o.ready, rng.random() < 0.5)
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.i.payload, 0)
            before = (ctx.get(dut.o.valid), ctx.get(dut.o.payload))
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, 255)
            seen.append((before, (ctx.get(dut.o.valid), ctx.get(dut.o.payload))))
            ctx.set(dut.i.valid, rng.random() < 0.7)
            ctx.set(dut.i.payload, rng.randrange(256))
            await ctx.tick()

    _run(dut, [tb], cycles=400)
    assert all(a == b for a, b in seen) and {a[0] for a, _ in seen} == {0, 1}


def test_the_register_slice_adds_one_cycle_at_full_rate():
    """With ``o.ready`` high each beat leaves one cycle after it arrives, and ``i.ready`` never drops."""
    trace = _full_rate_trace(RegisterSlice(layout=unsigned(8)), seed=8, offered=0.8)
    assert all(r for *_, r in trace)
    for (v, p, *_), (_, _, ov, op, _) in zip(trace, trace[1:], strict=False):
        assert v == ov and (not v or p == op)
