"""A first-word-fall-through queue of a few entries held in flip-flops (the DMAs' bursts in flight).

Flip-flops, not an inferred memory: the queues are at most 16 entries of a few bits, where LUT RAM would
save nothing and make the resource model depend on each family's memory mapping.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from tokensift.checks import check_int

__all__ = ["SmallQueue"]


def _next(ptr: Signal, depth: int):
    if depth == 1:
        return 0
    if depth & (depth - 1) == 0:
        return ptr + 1  # wraps by its width
    return Mux(ptr == depth - 1, 0, ptr + 1)


class SmallQueue(wiring.Component):
    """``depth`` entries of ``layout``; ``i_stream`` is ready while there is room, ``o_stream`` shows the
    oldest entry (a write is visible the next cycle)."""

    def __init__(self, *, layout: data.Layout, depth: int):
        self._depth = check_int("depth", depth, low=1, high=64, numpy=False)
        self._layout = layout
        super().__init__({"i_stream": In(stream.Signature(layout)), "o_stream": Out(stream.Signature(layout))})

    def elaborate(self, platform):
        m = Module()
        depth = self._depth
        ptr_bits = max(1, ceil_log2(depth))
        slots = Array(Signal(self._layout, name=f"slot{i}") for i in range(depth))
        wptr, rptr = Signal(ptr_bits), Signal(ptr_bits)
        level = Signal(range(depth + 1))
        push = self.i_stream.valid & self.i_stream.ready
        pop = self.o_stream.valid & self.o_stream.ready
        # the oldest entry is a register (always equal to slots[rptr]), so that the consumer's logic on it
        # (the writer's beat count against the burst length, which decides the pop) starts at a register
        # rather than behind the slots' multiplexer; on a pop it loads the next slot (or the entry pushed into it)
        head = Signal(self._layout)
        rptr_next = Signal(ptr_bits)
        # "not full" and "not empty" are registers that follow the level, not compares of it: the writer's AW
        # handshake waits on the first and loads this queue's head, and that compare on it was the whole
        # accelerator's worst path
        room = Signal(init=1)
        nonempty = Signal()
        m.d.comb += [self.i_stream.ready.eq(room), self.o_stream.valid.eq(nonempty),
                     self.o_stream.payload.eq(head), rptr_next.eq(_next(rptr, depth))]
        with m.If(push):
            m.d.sync += slots[wptr].eq(self.i_stream.payload)
            m.d.sync += wptr.eq(_next(wptr, depth))
        with m.If(pop):
            m.d.sync += [rptr.eq(rptr_next),
                         head.eq(Mux(push & (wptr == rptr_next), self.i_stream.payload, slots[rptr_next]))]
        with m.Elif(push & (wptr == rptr)):
            m.d.sync += head.eq(self.i_stream.payload)
        with m.If(push & ~pop):
            m.d.sync += [level.eq(level + 1), room.eq(level != depth - 1), nonempty.eq(1)]
        with m.Elif(pop & ~push):
            m.d.sync += [level.eq(level - 1), room.eq(1), nonempty.eq(level != 1)]
        return m
