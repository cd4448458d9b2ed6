"""hw.fixed in the Amaranth simulator, exhaustively on 10-bit inputs, against quant.fixed."""

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed
from amaranth.sim import Simulator

from tokensift.hw.common import fixed as hwfixed
from tokensift.quant.fixed import FixedFormat, Overflow, Rounding, round_shift

WIDTH = 10
INPUTS = np.arange(-(1 << (WIDTH - 1)), 1 << (WIDTH - 1))


def simulate_all(outputs_for):
    """Drive every 10-bit input through combinational logic and collect each named output."""
    m = Module()
    x = Signal(signed(WIDTH))
    outs = {}
    for name, expr in outputs_for(x).items():
        sig = Signal(expr.shape(), name=f"o_{name}")
        m.d.comb += sig.eq(expr)
        outs[name] = sig
    got = {name: [] for name in outs}

    async def testbench(ctx):
        for value in INPUTS.tolist():
            ctx.set(x, value)
            for name, sig in outs.items():
                got[name].append(ctx.get(sig))

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()
    return {name: np.array(v) for name, v in got.items()}


@pytest.mark.parametrize("shift", [-3, -1, 0, 1, 3, 9])
def test_round_shift_all_modes_exhaustive(shift):
    got = simulate_all(lambda x: {r.value: hwfixed.round_shift(x, shift, r) for r in Rounding})
    for rounding in Rounding:
        np.testing.assert_array_equal(got[rounding.value], round_shift(INPUTS, shift, rounding))


@pytest.mark.parametrize("fmt", [
    FixedFormat(bits=6), FixedFormat(bits=6, signed=False), FixedFormat(bits=6, overflow=Overflow.WRAP),
    FixedFormat(bits=5, signed=False, overflow=Overflow.WRAP),
])
def test_fit_exhaustive(fmt):
    def outputs(x):
        result, overflowed = hwfixed.fit(x, fmt)
        return {"result": result, "overflowed": overflowed}

    got = simulate_all(outputs)
    np.testing.assert_array_equal(got["result"], fmt.fit(INPUTS))
    np.testing.assert_array_equal(got["overflowed"], ~((INPUTS >= fmt.min_int) & (INPUTS <= fmt.max_int)))


def test_round_shift_rejects_a_shift_that_is_not_an_integer():
    with pytest.raises(TypeError, match=r"^shift must be an integer, not float$"):
        hwfixed.round_shift(Signal(8), 1.0)


@pytest.mark.parametrize("width", [1, 3])
def test_count_overflows_counts_two_cycles_later_and_stops_at_its_maximum(width):
    m = Module()
    counter, event = Signal(width, name="overflows"), Signal()
    hwfixed.count_overflows(m, counter, event)
    events = np.random.default_rng(width).random(40) < 0.5
    events[:3] = [1, 0, 1]
    seen = []

    async def testbench(ctx):
        for e in events.tolist():
            ctx.set(event, e)
            await ctx.tick()
            seen.append(ctx.get(counter))

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    # after the tick that ends cycle t, the counter holds the events of cycles 0 .. t - 1
    want = np.minimum(np.concatenate([[0], np.cumsum(events)[:-1]]), (1 << width) - 1)
    np.testing.assert_array_equal(seen, want)
    assert want[-1] == (1 << width) - 1  # it did saturate


def test_count_overflows_rejects_what_is_not_a_signal():
    with pytest.raises(TypeError, match=r"^counter must be an Amaranth Signal, not int$"):
        hwfixed.count_overflows(None, 3, Signal())
    with pytest.raises(TypeError, match=r"^m must be an Amaranth Module, not NoneType$"):
        hwfixed.count_overflows(None, Signal(4), Signal())
