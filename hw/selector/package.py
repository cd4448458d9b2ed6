"""Package-token datapath: ``lanes`` score x feature MACs and ``lanes`` restoring dividers.

The hardware form of :func:`tokensift.quant.select.package_token` for one beat of ``lanes`` features:
``acc_c += s_i * x[i, c]`` over the pruned tokens (one multiplier per lane, each one DSP), then, with
``S`` the sum of the pruned scores, ``p_c = fit(round_shift((2 * acc_c) // S, 1, HALF_UP))`` through
:func:`tokensift.hw.common.fixed.round_shift` and :func:`tokensift.hw.common.fixed.fit`, or 0 when ``S = 0``.

The floor division is a restoring divider per lane. Because ``acc_c / S`` lies in the feature range
``[-2**(fb-1), 2**(fb-1) - 1]``, the dividend ``2 * acc_c + S * 2**fb`` is non-negative and its
quotient by ``S`` fits ``fb + 1`` bits; the divider resolves them MSB first in ``fb + 1`` cycles and
subtracts the offset ``2**fb`` (``fb = feature_bits``).

Timing: the multipliers' inputs and products are registered (``sample``, ``weight`` and ``features`` go
straight into registers, so a memory output can drive them; Yosys can absorb both registers into the
DSP), so an accumulator holds a sample's product ``latency = 3`` cycles after its ``sample`` cycle; a
``divide`` pulse is followed by exactly ``feature_bits + 1`` busy cycles, after which ``result`` holds
until the next ``divide``.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from tokensift.checks import check_int
from tokensift.hw.common import fixed as hwfixed
from tokensift.quant.fixed import FixedFormat, Rounding

__all__ = ["PackageMAC"]


class PackageMAC(wiring.Component):
    """Score-weighted accumulation of feature beats and the rounding division by the score sum.

    Parameters (keyword-only)
    -------------------------
    lanes : int
        Features per beat = parallel multipliers and dividers (1..256).
    score_bits, feature_bits, count_bits : int
        Widths of the unsigned weights, the signed features and of a token count (the accumulators
        and the divisor get ``count_bits`` headroom).

    Ports
    -----
    clear : In
        Zero the accumulators (after a beat's result was taken).
    sample, weight, features : In
        Accumulate ``weight * features`` (``weight`` 0 adds nothing).
    divide, divisor : In
        Start ``result = round(acc / divisor)``; ``divisor`` must be the sum of the weights sampled
        since the last ``clear``, so that the quotient is a convex combination of the features.
    busy, result : Out
        Dividing; the rounded package beat.
    """

    latency = 3

    def __init__(self, *, lanes: int, score_bits: int, feature_bits: int, count_bits: int):
        for name, value, low, high in (("lanes", lanes, 1, 256), ("score_bits", score_bits, 1, 24),
                                       ("feature_bits", feature_bits, 2, 16), ("count_bits", count_bits, 1, 17)):
            check_int(name, value, low=low, high=high, numpy=False)
        self._lanes, self._score_bits, self._feature_bits = lanes, score_bits, feature_bits
        self._sum_bits = score_bits + count_bits
        self._acc_bits = feature_bits + score_bits + count_bits + 1
        beat = data.ArrayLayout(signed(feature_bits), lanes)
        super().__init__({
            "clear": In(1),
            "sample": In(1),
            "weight": In(score_bits),
            "features": In(beat),
            "divide": In(1),
            "divisor": In(self._sum_bits),
            "busy": Out(1),
            "result": Out(beat),
        })

    @property
    def divide_cycles(self) -> int:
        """Busy cycles after each ``divide`` pulse."""
        return self._feature_bits + 1

    def elaborate(self, platform):
        m = Module()
        fb, lanes = self._feature_bits, self._lanes
        rem_bits = fb + 1 + self._sum_bits
        out_fmt = FixedFormat(bits=fb, frac=0, signed=True, rounding=Rounding.HALF_UP)

        in_valid, prod_valid = Signal(), Signal()
        weight = Signal(self._score_bits)
        step = Signal(range(fb + 1))
        shifted = Signal(rem_bits)  # divisor << step
        zero = Signal()
        m.d.sync += [in_valid.eq(self.sample), weight.eq(self.weight), prod_valid.eq(in_valid)]

        for lane in range(lanes):
            x = Signal(signed(fb), name=f"x{lane}")
            prod = Signal(signed(self._score_bits + fb + 1), name=f"prod{lane}")
            acc = Signal(signed(self._acc_bits), name=f"acc{lane}")
            rem = Signal(unsigned(rem_bits), name=f"rem{lane}")
            quo = Signal(unsigned(fb + 1), name=f"quo{lane}")
            m.d.sync += [x.eq(self.features[lane]), prod.eq(weight * x)]  # one DSP multiplier per lane
            with m.If(self.clear):
                m.d.sync += acc.eq(0)
            with m.Elif(prod_valid):
                m.d.sync += acc.eq(acc + prod)

            trial = Signal(signed(rem_bits + 1), name=f"trial{lane}")
            m.d.comb += trial.eq(rem - shifted)
            with m.If(self.busy):
                m.d.sync += quo.eq((quo << 1) | ~trial[-1])
                with m.If(~trial[-1]):
                    m.d.sync += rem.eq(trial)
            with m.Elif(self.divide):
                m.d.sync += [rem.eq((acc << 1) + (self.divisor << fb)), quo.eq(0)]

            # floor(2 acc / S) = quo - 2**fb, then half up by one bit, then the feature format
            floor2 = Signal(signed(fb + 2), name=f"floor2_{lane}")
            m.d.comb += floor2.eq(quo - (1 << fb))
            rounded, _ = hwfixed.fit(hwfixed.round_shift(floor2, 1, Rounding.HALF_UP), out_fmt)
            m.d.comb += self.result[lane].eq(Mux(zero, 0, rounded))

        with m.If(self.busy):
            m.d.sync += [step.eq(step - 1), shifted.eq(shifted >> 1)]
            with m.If(step == 0):
                m.d.sync += self.busy.eq(0)
        with m.Elif(self.divide):
            m.d.sync += [self.busy.eq(1), step.eq(fb), shifted.eq(self.divisor << fb),
                         zero.eq(self.divisor == 0)]
        return m
