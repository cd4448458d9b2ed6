"""Requantizer: parameters, and streams with random stalls in the Amaranth simulator."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from tokensift.hw.common.requant import Requantizer
from tokensift.quant.fixed import INT8, FixedFormat, Overflow, OverflowCounter, Rounding, requantize


class TestRequantizerInit:
    def test_init(self):
        dut = Requantizer(out=INT8, multiplier=3, shift=4)
        assert (dut.multiplier, dut.shift, dut.out) == (3, 4, INT8)
        assert len(dut.overflows) == 16

    def test_init_wrong_acc_bits(self):
        with pytest.raises(ValueError, match=r"^acc_bits must be an integer between 2 and 32, not 33$"):
            Requantizer(acc_bits=33, out=INT8, multiplier=1, shift=0)

    def test_init_wrong_out(self):
        with pytest.raises(TypeError, match=r"^out must be a FixedFormat, not int$"):
            Requantizer(out=8, multiplier=1, shift=0)

    def test_init_wrong_multiplier(self):
        with pytest.raises(ValueError, match=r"^multiplier must be an integer between 1 and 2\*\*31 - 1, not 0$"):
            Requantizer(out=INT8, multiplier=0, shift=0)

    def test_init_wrong_shift(self):
        with pytest.raises(ValueError, match=r"^shift must be an integer between 0 and 62, not -2$"):
            Requantizer(out=INT8, multiplier=1, shift=-2)

    def test_positional_parameters_refused(self):
        with pytest.raises(TypeError):
            Requantizer(32, INT8, 1, 0)


def run_stream(dut, values, *, idle, stall, seed):
    """Producer and consumer as separate testbenches; returns what came out."""
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)
    received = []

    async def producer(ctx):
        for value in values:
            while rng_in.random() < idle:
                ctx.set(dut.i_stream.valid, 0)
                await ctx.tick()
            ctx.set(dut.i_stream.payload, int(value))
            ctx.set(dut.i_stream.valid, 1)
            await ctx.tick().until(dut.i_stream.ready)
        ctx.set(dut.i_stream.valid, 0)

    async def consumer(ctx):
        while len(received) < len(values):
            ready = rng_out.random() >= stall
            ctx.set(dut.o_stream.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o_stream.valid, dut.o_stream.payload)
            if ready and valid:
                received.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return np.array(received)


@pytest.mark.parametrize("out, multiplier, shift", [
    (INT8, 12345, 20),
    (FixedFormat(bits=8, rounding=Rounding.HALF_EVEN), 3, 2),
    (FixedFormat(bits=6, signed=False), 1 << 30, 40),
    (FixedFormat(bits=8, overflow=Overflow.WRAP), 77, 9),
])
def test_random_stream_with_stalls(out, multiplier, shift):
    rng = np.random.default_rng(7)
    values = np.concatenate([[-(2**31), 2**31 - 1, 0, -1, 1], rng.integers(-(2**20), 2**20, 300)])
    dut = Requantizer(out=out, multiplier=multiplier, shift=shift)
    got = run_stream(dut, values, idle=0.3, stall=0.3, seed=5)
    counter = OverflowCounter()
    np.testing.assert_array_equal(got, requantize(values, multiplier, shift, out, counter=counter))
    assert counter.total > 0  # the corners overflow on purpose


def test_full_throughput_without_stalls():
    dut = Requantizer(out=INT8, multiplier=1, shift=0)
    cycles = []

    async def producer(ctx):
        for value in range(50):
            ctx.set(dut.i_stream.payload, value)
            ctx.set(dut.i_stream.valid, 1)
            await ctx.tick().until(dut.i_stream.ready)
            cycles.append(1)

    async def consumer(ctx):
        ctx.set(dut.o_stream.ready, 1)
        n = 0
        ticks = 0
        while n < 50:
            _, _, valid = await ctx.tick().sample(dut.o_stream.valid)
            ticks += 1
            n += valid
        cycles.append(ticks)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    assert cycles[-1] == 51  # one value per cycle after one cycle of latency
