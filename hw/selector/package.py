"""Package-token datapath: ``lanes`` weight x feature MACs, ``lanes`` restoring dividers, the sum rule.

The hardware form of :func:`tokensift.quant.select.package_token` for one beat of ``lanes`` features:
``acc_c += w_i * x[i, c]`` over the pruned tokens (one multiplier per lane, each one DSP; the weights are
the scores, or per-token package weights), then by the rule chosen at each ``divide`` pulse:

* mean: with ``S`` the sum of the pruned weights, ``p_c = fit(round_shift((2 * acc_c) // S, 1, HALF_UP))``
  through :func:`tokensift.hw.common.fixed.round_shift` and :func:`tokensift.hw.common.fixed.fit`, or 0 when
  ``S = 0``;
* sum (``sum`` high): ``p_c = fit(round_shift(acc_c, frac, HALF_UP))``, registered in the ``divide`` cycle
  with its per-lane ``overflowed`` flags (no division, no busy cycle).

The floor division is a restoring divider per lane. Because ``acc_c / S`` lies in the feature range
``[-2**(fb-1), 2**(fb-1) - 1]``, the dividend ``2 * acc_c + S * 2**fb`` is non-negative and its
quotient by ``S`` fits ``fb + 1`` bits; the divider resolves them MSB first in ``fb + 1`` cycles and
subtracts the offset ``2**fb`` (``fb = feature_bits``). The sum rule's values can leave the feature range;
they saturate, and ``overflowed`` marks each lane that did (the selector counts them).

Timing: the multipliers' inputs and products are registered (``sample``, ``weight`` and ``features`` go
straight into registers, so a memory output can drive them; Yosys can absorb both registers into the
DSP), so an accumulator holds a sample's product ``latency = 3`` cycles after its ``sample`` cycle; a
mean-rule ``divide`` pulse is followed by exactly ``feature_bits + 1`` busy cycles, a sum-rule one by none;
then ``result`` holds until the next ``divide``.
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
    frac : int
        Fractional bits of the weights, rounded away by the sum rule (0..32).

    Ports
    -----
    clear : In
        Zero the accumulators (after a beat's result was taken).
    sample, weight, features : In
        Accumulate ``weight * features`` (``weight`` 0 adds nothing).
    divide, divisor, sum : In
        Start ``result = round(acc / divisor)``; ``divisor`` must be the sum of the weights sampled
        since the last ``clear``, so that the quotient is a convex combination of the features. With
        ``sum`` high: ``result = round(acc / 2**frac)`` instead, saturated, from the next cycle on.
    busy, result, overflowed : Out
        Dividing; the rounded package beat; per lane, whether the sum rule's value saturated (0 after a
        mean-rule divide).
    """

    latency = 3

    def __init__(self, *, lanes: int, score_bits: int, feature_bits: int, count_bits: int, frac: int = 0):
        for name, value, low, high in (("lanes", lanes, 1, 256), ("score_bits", score_bits, 1, 24),
                                       ("feature_bits", feature_bits, 2, 16), ("count_bits", count_bits, 1, 17),
                                       ("frac", frac, 0, 32)):
            check_int(name, value, low=low, high=high, numpy=False)
        self._lanes, self._score_bits, self._feature_bits, self._frac = lanes, score_bits, feature_bits, frac
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
            "sum": In(1),
            "busy": Out(1),
            "result": Out(beat),
            "overflowed": Out(lanes),
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
        summed = Signal()  # the latest divide used the sum rule
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

            # the sum rule: the accumulator rounded and saturated straight into a register
            sum_q = Signal(signed(fb), name=f"sum_q{lane}")
            sum_fit, sum_over = hwfixed.fit(hwfixed.round_shift(acc, self._frac, Rounding.HALF_UP), out_fmt)
            with m.If(self.divide & ~self.busy):
                m.d.sync += [sum_q.eq(sum_fit), self.overflowed[lane].eq(self.sum & sum_over)]
            m.d.comb += self.result[lane].eq(Mux(summed, sum_q, Mux(zero, 0, rounded)))

        with m.If(self.busy):
            m.d.sync += [step.eq(step - 1), shifted.eq(shifted >> 1)]
            with m.If(step == 0):
                m.d.sync += self.busy.eq(0)
        with m.Elif(self.divide):
            m.d.sync += [self.busy.eq(~self.sum), step.eq(fb), shifted.eq(self.divisor << fb),
                         zero.eq(self.divisor == 0), summed.eq(self.sum)]
        return m
