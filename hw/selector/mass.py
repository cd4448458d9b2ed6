"""SaiT's mass target: ``ceil(mass * S / 2**mass_frac)`` by shift and add, for the radix search's room.

The mass rule (:func:`tokensift.quant.select.mass_keep_count`) keeps a candidate while the score mass
ranked above it, times ``2**mass_frac``, is below ``mass * S`` (``S`` the candidates' total). As the mass
above is an integer, that is "below ``ceil(mass * S / 2**mass_frac)``", a value no wider than ``S``: the
radix search then compares sums of scores only (:class:`tokensift.hw.selector.histogram.HistogramSelect`).

The product is formed least significant bit of ``mass`` first, one bit per cycle: the partial sum is
shifted right as it goes, so the adder is ``sum_bits + 1`` wide whatever ``mass_frac`` is, and the bits
shifted out are OR-ed into a sticky bit that turns the floor into the ceiling. Bit ``mass_frac`` of
``mass`` (the whole, ``mass = 2**mass_frac``) is left to the caller (every candidate is kept then).
``start`` is followed by exactly ``mass_frac + 1`` busy cycles. No DSP, one adder.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tokensift.checks import check_int

__all__ = ["MassTarget"]


class MassTarget(wiring.Component):
    """``target = ceil((mass mod 2**mass_frac) * total / 2**mass_frac)``, sequentially.

    Parameters (keyword-only)
    -------------------------
    sum_bits : int
        Width of ``total`` and ``target`` (1..48).
    mass_frac : int
        Fractional bits of ``mass`` (0..24); ``mass`` is ``mass_frac + 1`` bits wide.

    Ports
    -----
    start, mass, total : In
        ``start`` (one cycle) takes ``mass`` and ``total``.
    busy, target : Out
        Multiplying (:attr:`cycles` cycles after ``start``); the result, held until the next ``start``.
    """

    def __init__(self, *, sum_bits: int, mass_frac: int):
        check_int("sum_bits", sum_bits, low=1, high=48, numpy=False)
        check_int("mass_frac", mass_frac, low=0, high=24, numpy=False)
        self._sum_bits, self._mass_frac = sum_bits, mass_frac
        super().__init__({
            "start": In(1),
            "mass": In(mass_frac + 1),
            "total": In(sum_bits),
            "busy": Out(1),
            "target": Out(sum_bits),
        })

    @property
    def cycles(self) -> int:
        """Busy cycles after ``start``: one per fractional bit of ``mass``, then the ceiling."""
        return self._mass_frac + 1

    def elaborate(self, platform):
        m = Module()
        mf = self._mass_frac
        total = Signal(self._sum_bits)
        bits = Signal(max(1, mf))  # the multiplier bits still to add, least significant first
        acc = Signal(self._sum_bits)  # the partial product, shifted right by the bits done
        sticky = Signal()  # a bit shifted out of the product was 1
        step = Signal(range(mf + 1))
        partial = Signal(self._sum_bits + 1)
        m.d.comb += partial.eq(acc + Mux(bits[0], total, 0) if mf else acc)
        with m.If(self.start):
            m.d.sync += [total.eq(self.total), bits.eq(self.mass[:mf] if mf else 0), acc.eq(0), sticky.eq(0),
                         step.eq(mf), self.busy.eq(1)]
        with m.Elif(self.busy):
            with m.If(step != 0):
                m.d.sync += [acc.eq(partial >> 1), sticky.eq(sticky | partial[0]), bits.eq(bits >> 1),
                             step.eq(step - 1)]
            with m.Else():
                m.d.sync += [self.target.eq(acc + sticky), self.busy.eq(0)]
        return m
