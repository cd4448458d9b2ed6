"""The attention core's output requantizer with run-time constants: ``fit(round_shift(x * m, s))``.

The arithmetic is :func:`tokensift.quant.fixed.requantize` with half-up rounding and saturation (the output
format of :class:`tokensift.quant.attention.AttentionParams`). ``m`` and ``s`` are the frame's constants, set
by the engine for each chunk of values; the pipeline is never stalled (the engine only issues a chunk when
the output FIFO has room for it): :func:`tokensift.hw.attention.scaling.scaled_product`, then
:func:`tokensift.hw.attention.scaling.round_shift_stages`, then the saturation register.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tokensift.hw.attention.scaling import PRODUCT_STAGES, SHIFT_STAGES, round_shift_stages, scaled_product
from tokensift.hw.common import fixed as hwfixed
from tokensift.quant.fixed import FixedFormat, Rounding

__all__ = ["RuntimeRequantizer"]


class RuntimeRequantizer(wiring.Component):
    """``o_value = fit(round_shift(i_value * multiplier, shift))``, :attr:`latency` cycles, one per cycle.

    ``multiplier`` and ``shift`` are registers of the caller that go with ``i_value`` (the shift is carried
    along inside); ``tag`` travels with each value; ``overflows`` counts values that saturated (stopping at
    its maximum, two cycles after the value).
    """

    latency = PRODUCT_STAGES + SHIFT_STAGES + 1

    def __init__(self, *, value_bits: int, out: FixedFormat, mult_bits: int, shift_max: int, tag_bits: int = 1,
                 counter_bits: int = 16):
        if not isinstance(out, FixedFormat):
            raise TypeError(f"out must be a FixedFormat, not {type(out).__name__}")
        if out.rounding is not Rounding.HALF_UP:
            raise ValueError(f"out rounding must be half_up, not {out.rounding.value}")
        self._out = out
        super().__init__({
            "i_valid": In(1),
            "i_value": In(signed(value_bits)),
            "i_tag": In(tag_bits),
            "multiplier": In(unsigned(mult_bits)),
            "shift": In(range(shift_max + 1)),
            "o_valid": Out(1),
            "o_value": Out(out.shape),
            "o_tag": Out(tag_bits),
            "overflows": Out(counter_bits),
        })

    def elaborate(self, platform):
        m = Module()
        valid, tag, shift = self.i_valid, self.i_tag, self.shift
        prod = scaled_product(m, self.i_value, self.multiplier, name="rq")
        for s in range(PRODUCT_STAGES):
            nv, nt = Signal(name=f"p{s}_valid"), Signal.like(self.i_tag, name=f"p{s}_tag")
            ns = Signal.like(self.shift, name=f"p{s}_shift")
            m.d.sync += [nv.eq(valid), nt.eq(tag), ns.eq(shift)]
            valid, tag, shift = nv, nt, ns
        rounded = round_shift_stages(m, prod, shift, name="rq")
        for s in range(SHIFT_STAGES):
            nv, nt = Signal(name=f"r{s}_valid"), Signal.like(self.i_tag, name=f"r{s}_tag")
            m.d.sync += [nv.eq(valid), nt.eq(tag)]
            valid, tag = nv, nt
        value, overflowed = hwfixed.fit(rounded, self._out)
        ovf = Signal()
        m.d.sync += [self.o_value.eq(value), self.o_valid.eq(valid), self.o_tag.eq(tag), ovf.eq(valid & overflowed)]
        hwfixed.count_overflows(m, self.overflows, ovf)
        return m
