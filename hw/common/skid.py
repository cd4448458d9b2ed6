"""Stream register slices.

:class:`SkidBuffer` adds no latency: the ``ready`` it gives its producer is a register, so a consumer's
``ready`` logic ends at the slice instead of running on into the producer's output register (and, in the whole
accelerator, through the multiplexer that hands the DRAM channel to one engine).

:class:`RegisterSlice` adds one cycle and registers both directions: ``o.valid`` and ``o.payload`` are
registers as well as ``i.ready``, so a producer's ``valid`` logic ends at the slice (in the whole accelerator,
an engine's DRAM command, combinational from its state, no longer runs through the owner multiplexer into the
read DMA). It keeps full throughput: a consumer that takes a beat every cycle gets one every cycle.

In the skid buffer ``o`` is ``i`` passed through while the spare register is empty. A beat offered while ``o`` is stalled goes
into the spare and ``i.ready`` drops until ``o`` has taken it; the spare is then offered first. Every beat
comes out in order, none is lost or repeated, and a consumer that keeps up sees the producer's beats in the
same cycles as without the slice.

Both slices copy ``i.payload`` into the spare in every cycle it is empty, so the spare's wide enable is one
register (``full``), not the consumer's ``ready``; only the copy of the cycle that fills it is ever read.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer", "RegisterSlice"]


class _StreamSlice(wiring.Component):
    """``i`` -> ``o``, streams of ``layout``."""

    def __init__(self, *, layout: data.Layout):
        self._layout = layout
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(layout))})


class SkidBuffer(_StreamSlice):
    """``i`` -> ``o``, streams of ``layout``; ``i.ready`` is a register."""

    def elaborate(self, platform):
        m = Module()
        spare = Signal(self._layout)
        full = Signal()
        m.d.comb += [self.i.ready.eq(~full), self.o.valid.eq(full | self.i.valid),
                     self.o.payload.eq(Mux(full, Value.cast(spare), Value.cast(self.i.payload)))]
        with m.If(~full):
            m.d.sync += spare.eq(self.i.payload)
        with m.If(~full & self.i.valid & ~self.o.ready):
            m.d.sync += full.eq(1)
        with m.Elif(full & self.o.ready):
            m.d.sync += full.eq(0)
        return m


class RegisterSlice(_StreamSlice):
    """``i`` -> ``o`` one cycle later, streams of ``layout``; ``o.valid``, ``o.payload`` and ``i.ready`` are
    registers.

    A beat taken while ``o`` is free (empty, or handing its beat over in this cycle) goes to ``o``; one taken
    while ``o`` is stalled waits in the spare register, and ``i.ready`` drops until the spare has moved to ``o``.
    """

    def elaborate(self, platform):
        m = Module()
        spare = Signal(self._layout)
        full = Signal()
        m.d.comb += self.i.ready.eq(~full)
        with m.If(~self.o.valid | self.o.ready):
            m.d.sync += [self.o.valid.eq(full | self.i.valid),
                         self.o.payload.eq(Mux(full, Value.cast(spare), Value.cast(self.i.payload))), full.eq(0)]
        with m.Elif(~full & self.i.valid):
            m.d.sync += full.eq(1)
        with m.If(~full):
            m.d.sync += spare.eq(self.i.payload)
        return m
