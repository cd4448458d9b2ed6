"""A streaming requantizer: wide accumulators in, ``out`` format values out, ``acc * m * 2**-s``.

The arithmetic is :func:`tokensift.quant.fixed.requantize`, rounding by the output format's rule and
saturating (or wrapping) with a running count of values that did not fit. One register stage; full
throughput (one value per cycle) with valid/ready backpressure on both sides.
"""

from __future__ import annotations

from amaranth.hdl import Module, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from tokensift.hw.common import fixed as hwfixed
from tokensift.quant.fixed import FixedFormat

__all__ = ["Requantizer"]


class Requantizer(wiring.Component):
    """``o_stream.payload = fit(round_shift(i_stream.payload * multiplier, shift))``.

    Parameters (keyword-only)
    -------------------------
    acc_bits : int
        Width of the signed input accumulators (2..32).
    out : FixedFormat
        Output format; its rounding and overflow modes apply.
    multiplier, shift : int
        The fixed-point scale, ``1 <= multiplier < 2**31`` (maps onto one or two DSP multipliers),
        ``0 <= shift <= 62``.
    counter_bits : int
        Width of the saturating ``overflows`` counter.
    """

    def __init__(self, *, acc_bits: int = 32, out: FixedFormat, multiplier: int, shift: int,
                 counter_bits: int = 16):
        if not isinstance(acc_bits, int) or not 2 <= acc_bits <= 32:
            raise ValueError(f"acc_bits must be an integer between 2 and 32, not {acc_bits!r}")
        if not isinstance(out, FixedFormat):
            raise TypeError(f"out must be a FixedFormat, not {type(out).__name__}")
        if not isinstance(multiplier, int) or not 1 <= multiplier < (1 << 31):
            raise ValueError(f"multiplier must be an integer between 1 and 2**31 - 1, not {multiplier!r}")
        if not isinstance(shift, int) or not 0 <= shift <= 62:
            raise ValueError(f"shift must be an integer between 0 and 62, not {shift!r}")
        if not isinstance(counter_bits, int) or not 1 <= counter_bits <= 32:
            raise ValueError(f"counter_bits must be an integer between 1 and 32, not {counter_bits!r}")
        self._acc_bits, self._out, self._multiplier, self._shift = acc_bits, out, multiplier, shift
        super().__init__({
            "i_stream": In(stream.Signature(signed(acc_bits))),
            "o_stream": Out(stream.Signature(out.shape)),
            "overflows": Out(counter_bits),
        })

    @property
    def out(self) -> FixedFormat:
        return self._out

    @property
    def multiplier(self) -> int:
        return self._multiplier

    @property
    def shift(self) -> int:
        return self._shift

    def elaborate(self, platform):
        m = Module()
        product = self.i_stream.payload * self._multiplier
        result, overflowed = hwfixed.fit(hwfixed.round_shift(product, self._shift, self._out.rounding), self._out)

        # the output register accepts a new value when it is empty or being drained this cycle
        take = self.i_stream.valid & (~self.o_stream.valid | self.o_stream.ready)
        m.d.comb += self.i_stream.ready.eq(~self.o_stream.valid | self.o_stream.ready)
        with m.If(self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)
        with m.If(take):
            m.d.sync += [self.o_stream.payload.eq(result), self.o_stream.valid.eq(1)]
            with m.If(overflowed & (self.overflows != (1 << len(self.overflows)) - 1)):
                m.d.sync += self.overflows.eq(self.overflows + 1)
        return m
