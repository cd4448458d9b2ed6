"""Split registered products: exact after their latency; steady operands reach each multiplier through a chain
of copies (each with an input of its own), one cycle per copy."""

from __future__ import annotations

import doctest

from amaranth.hdl import Elaboratable, Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from tokensift.hw.vector import products as products_module
from tokensift.hw.vector.products import Products, product_latency


def test_doctests():
    assert doctest.testmod(products_module).failed == 0


class _Lanes(Elaboratable):
    """``lanes`` products of their own ``a`` by one shared ``b`` (steady or not)."""

    def __init__(self, lanes: int, steady: bool):
        self.a = [Signal(signed(32), name=f"a{i}") for i in range(lanes)]
        self.b = Signal(unsigned(16))
        self.p = [Signal(signed(49), name=f"p{i}") for i in range(lanes)]
        self.steady = steady
        self.steady_depth = None

    def elaborate(self, platform):
        m = Module()
        products = Products(m, "t")
        for a, p in zip(self.a, self.p, strict=True):
            m.d.comb += p.eq(products.multiply(a, self.b, steady_b=self.steady))
        self.steady_depth = products.steady_depth
        return m


def _run(dut, a_values, b_before, b_after, cycles):
    """Products seen ``cycles`` cycles after ``b`` changes from ``b_before`` to ``b_after``, per cycle."""
    seen = []

    async def tb(ctx):
        for a, v in zip(dut.a, a_values, strict=True):
            ctx.set(a, v)
        ctx.set(dut.b, b_before)
        for _ in range(40):
            await ctx.tick()
        ctx.set(dut.b, b_after)
        for _ in range(cycles):
            await ctx.tick()
            seen.append([ctx.get(p) for p in dut.p])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return seen


def test_steady_operand_settles_one_copy_per_cycle():
    a_values = [-(1 << 31), 123_456_789, -7]
    steady = _Lanes(3, steady=True)
    seen = _run(steady, a_values, 3, 65_535, 20)
    # a 32-bit signed a is two chunks: two copies of b per lane, six in the chain
    assert steady.steady_depth == 6
    lat = product_latency(signed(32), unsigned(16))
    assert seen[-1] == [a * 65_535 for a in a_values]
    # lane i's last copy of b is 2 i + 2 links down the chain: its product is new 2 i + 1 cycles after lane 0's
    first_new = [next(t for t, row in enumerate(seen) if row[i] == a_values[i] * 65_535) for i in range(3)]
    plain = _Lanes(3, steady=False)
    plain_new = _run(plain, a_values, 3, 65_535, 20)
    assert plain.steady_depth == 0
    plain_first = [next(t for t, row in enumerate(plain_new) if row[i] == a_values[i] * 65_535) for i in range(3)]
    assert plain_first == [lat - 1] * 3
    assert first_new == [lat - 1 + 1, lat - 1 + 3, lat - 1 + 5]
