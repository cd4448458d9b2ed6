"""Radix (histogram) search for the k-th largest score: the selection core of the token selector.

The hardware form of :func:`tokensift.quant.select.radix_threshold`. Scores are resolved one
``radix_bits`` digit at a time from the most significant end: the parent streams the candidates' scores
in (``sample``), the unit counts the current digit of those whose higher digits equal the prefix found
so far in ``2**radix_bits`` histogram counters, then a fixed-length scan (``scan``) walks the bins from
the top and picks the bin where the running count reaches the remaining rank. After the last digit,
``threshold`` is the k-th largest candidate score and ``ties`` how many candidates equal to it to admit,
lowest index first.

Mass mode (built with ``mass=True``, chosen per search by ``mass`` at ``start``; SaiT's rule,
:func:`tokensift.quant.select.mass_keep_count`): each bin also sums its candidates' scores, and the rank
becomes a *room*, ``room = ceil(mass * S / 2**mass_frac)`` minus the score mass above the current bin
(``S`` the candidates' total). Ranked best first, a candidate is kept while the mass ranked above it is
below ``mass * S / 2**mass_frac``, i.e. below ``room`` in integers; so the last kept candidate lies in the
first non-empty bin whose sum reaches the room (or, when none does, in the last non-empty bin). After the
last digit, with ``v`` the value found, ``c`` the candidates equal to it and ``R`` the room before them,
``ties = min(c, ceil(R / v))`` (``c`` when ``v = 0``): a restoring divider of ``count_bits + 1`` steps,
saturated, so a search takes a fixed number of cycles (:attr:`HistogramSelect.tie_cycles` more than top-k).

Timing: a sample is counted through two registered stages (so a memory output can drive ``score``
directly) and each bin has its own counter; the scan shifts the bins past one comparison instead of
reading them through a 16:1 multiplexer. A ``scan`` pulse is followed by exactly ``2 + 2**radix_bits``
busy cycles and sees every sample given up to and including its own cycle; one pass of ``n`` scores
takes ``n`` cycles of ``sample``. Counters and the scan are a few dozen LUTs and flip-flops; no DSP, no
memory.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tokensift.checks import check_int
from tokensift.quant.select import RADIX_BITS

__all__ = ["HistogramSelect"]


class HistogramSelect(wiring.Component):
    """Histogram counters, digit prefix and remaining rank of the radix search.

    Parameters (keyword-only)
    -------------------------
    score_bits : int
        Width of the unsigned scores (1..24).
    count_bits : int
        Width of the counters and of ``k`` (enough for the number of candidates), 1..16.
    radix_bits : int
        Bits resolved per digit (1..8); ``2**radix_bits`` counters.
    sum_bits : int
        0: top-k only; otherwise mass mode is built, and this is the width of a sum of scores (of the
        bins' sums and of ``room``), at least ``score_bits``.

    Ports
    -----
    start, k, mass : In
        ``start`` (one cycle) begins a search for the ``k``-th largest score (``k = 0``: nothing is
        kept; the result is ``threshold`` all ones, ``ties`` 0), or with ``mass`` high (when built) a
        mass search.
    room : In
        Mass mode: ``ceil(mass * S / 2**mass_frac)``, at least 1, held from the first ``scan`` to ``done``.
    sample, score : In
        One candidate score of the current pass; ignored while ``busy``.
    scan : In
        After a pass (or in its last sample's cycle): resolve the current digit (:attr:`scan_cycles`
        busy cycles follow, and after a mass search's last digit :attr:`tie_cycles` more).
    busy, done, digit : Out
        Scanning; all digits resolved; the digit the next pass counts (0 = most significant).
    threshold, ties : Out
        The result once ``done``: keep ``score > threshold`` and the first ``ties`` equal to it.
    """

    def __init__(self, *, score_bits: int, count_bits: int, radix_bits: int = RADIX_BITS, sum_bits: int = 0):
        for name, value, high in (("score_bits", score_bits, 24), ("count_bits", count_bits, 16),
                                  ("radix_bits", radix_bits, 8)):
            check_int(name, value, low=1, high=high, numpy=False)
        check_int("sum_bits", sum_bits, low=0, high=48, numpy=False)
        if sum_bits and sum_bits < score_bits:
            raise ValueError(f"sum_bits must be 0 or at least score_bits={score_bits}, not {sum_bits}")
        self._score_bits, self._count_bits, self._radix_bits = score_bits, count_bits, radix_bits
        self._sum_bits = sum_bits
        self._digits = -(-score_bits // radix_bits)
        super().__init__({
            "start": In(1),
            "k": In(count_bits),
            "mass": In(1),
            "room": In(max(1, sum_bits)),
            "sample": In(1),
            "score": In(score_bits),
            "scan": In(1),
            "busy": Out(1),
            "done": Out(1),
            "digit": Out(range(self._digits + 1)),
            "threshold": Out(self._digits * radix_bits),
            "ties": Out(count_bits),
        })

    @property
    def digits(self) -> int:
        """Number of digits (passes) of one search."""
        return self._digits

    @property
    def scan_cycles(self) -> int:
        """Busy cycles after each ``scan`` pulse: the two counting stages, then one per bin."""
        return self.count_latency + (1 << self._radix_bits)

    @property
    def tie_cycles(self) -> int:
        """Busy cycles added after a mass search's last scan: the divider's set-up, its ``count_bits + 1``
        steps, and the ``min`` with the candidates at the value."""
        return self._count_bits + 3

    #: registered stages between a ``sample`` and its counter (``scan`` follows the same stages)
    count_latency = 2

    def elaborate(self, platform):
        m = Module()
        r, digits, bins = self._radix_bits, self._digits, 1 << self._radix_bits
        width = digits * r
        cb = self._count_bits
        built_mass = self._sum_bits > 0
        rb = max(cb, self._sum_bits)  # the rank, or in mass mode the room
        hist = [Signal(cb, name=f"hist{b}") for b in range(bins)]
        sums = [Signal(self._sum_bits, name=f"sum{b}") for b in range(bins)] if built_mass else []
        prefix = Signal(width)  # resolved digits, left-aligned: bits above the current digit
        above = Signal(width)  # mask of the bits above the current digit
        rank = Signal(rb)  # rank (room) still to find among candidates matching the prefix
        remaining = Signal(rb)  # during a scan: the rank (room) minus the counts (sums) of the bins above
        scanning = Signal()
        found = Signal()
        sel = Signal(r)
        sel_rank = Signal(rb)
        sel_count = Signal(cb)  # mass: candidates in the selected bin
        count = Signal(cb)  # mass: candidates at the final value
        bin_ = Signal(r)
        mass = Signal()  # this search is a mass search
        dividing = Signal()
        mass_ties = Signal(cb)

        # -- counting in two registered stages, so that no path runs from the parent's memory read to a
        #    counter: 1. the sample as it comes; 2. its current digit and whether its higher digits equal
        #    the prefix; then only the counter of that bin increments (no read-modify-write through a
        #    16:1 mux). ``scan`` travels down the same stages, so it sees every sample up to its own cycle.
        sample1, score1, scan1 = Signal(), Signal(width), Signal()
        sample2, cur2, scan2, score2 = Signal(), Signal(r), Signal(), Signal(self._score_bits)
        m.d.comb += [
            self.busy.eq(scan1 | scan2 | scanning | dividing),
            self.threshold.eq(prefix),
            self.ties.eq(Mux(mass, mass_ties, rank)),
            self.done.eq((self.digit == digits) & ~dividing),
        ]
        idle = ~self.busy & ~self.done
        m.d.sync += [sample1.eq(self.sample & idle), score1.eq(self.score), scan1.eq(self.scan & idle)]
        cur = Signal(r)
        with m.Switch(self.digit):
            for d in range(digits):
                with m.Case(d):
                    m.d.comb += cur.eq(score1[(digits - 1 - d) * r:][:r])
        match = ((score1 ^ prefix) & above) == 0
        m.d.sync += [sample2.eq(sample1 & match), cur2.eq(cur), scan2.eq(scan1), score2.eq(score1)]
        for b in range(bins):
            with m.If(sample2 & (cur2 == b)):
                m.d.sync += hist[b].eq(hist[b] + 1)
                if built_mass:
                    m.d.sync += sums[b].eq(sums[b] + score2)

        # -- scanning: the bins shift towards the top one per cycle, so the bin under test is always the
        #    last register and the histogram is all zeros when the scan ends; ``remaining`` counts down
        #    instead of a running sum being compared with the rank. Top-k takes the first bin whose count
        #    reaches the rank; mass mode the first non-empty bin whose sum reaches the room, else the
        #    last non-empty one (every candidate of the range is kept)
        with m.If(scan2):
            first = self.digit == 0
            m.d.sync += [scanning.eq(1), bin_.eq(bins - 1), found.eq(0),
                         remaining.eq(Mux(mass & first, self.room, rank) if built_mass else rank)]
        h = hist[-1]
        if built_mass:
            hs = sums[-1]
            reached = Mux(mass, (h != 0) & (hs >= remaining), h >= remaining)
            take = ~found & Mux(mass, h != 0, reached)
            spent = Mux(mass, hs, h)
        else:
            reached = h >= remaining
            take = ~found & reached
            spent = h
        with m.If(scanning):
            m.d.sync += [hist[b].eq(hist[b - 1]) for b in range(1, bins)]
            m.d.sync += [s.eq(sums[b - 1]) for b, s in enumerate(sums) if b]
            m.d.sync += [hist[0].eq(0), bin_.eq(bin_ - 1)]
            if sums:
                m.d.sync += sums[0].eq(0)
            with m.If(take):
                m.d.sync += [sel.eq(bin_), sel_rank.eq(remaining), sel_count.eq(h)]
            with m.If(~found & reached):
                m.d.sync += found.eq(1)
            with m.Elif(~found):
                m.d.sync += remaining.eq(remaining - spent)
            with m.If(bin_ == 0):  # last scan cycle: commit the digit
                digit_value = Mux(take, bin_, sel)
                with m.Switch(self.digit):
                    for d in range(digits):
                        low = (digits - 1 - d) * r
                        with m.Case(d):
                            m.d.sync += [prefix[low:low + r].eq(digit_value),
                                         above.eq(((1 << width) - 1) ^ ((1 << low) - 1))]
                m.d.sync += [rank.eq(Mux(take, remaining, sel_rank)), self.digit.eq(self.digit + 1),
                             scanning.eq(0), count.eq(Mux(take, h, sel_count))]
                if built_mass:
                    m.d.sync += dividing.eq(mass & (self.digit == digits - 1))

        if built_mass:
            self._tie_divider(m, prefix, rank, count, dividing, mass_ties)

        with m.If(self.start):
            m.d.sync += [prefix.eq(0), above.eq(0), rank.eq(self.k), self.digit.eq(0), scanning.eq(0),
                         sample1.eq(0), sample2.eq(0), scan1.eq(0), scan2.eq(0), dividing.eq(0),
                         mass.eq(self.mass if built_mass else 0)]
            m.d.sync += [c.eq(0) for c in hist + sums]
        return m

    def _tie_divider(self, m, value, room, count, dividing, ties):
        """``ties = min(count, ceil(room / value))`` (``count`` when ``value`` is 0), in :attr:`tie_cycles`.

        ``ceil(room / v) = floor((room - 1) / v) + 1``; the quotient is resolved MSB first over
        ``count_bits + 1`` bits, its top bit set whenever it is at least ``2**count_bits`` (more than any
        count), so the division never needs more steps."""
        cb = self._count_bits
        qb = cb + 1
        rb = len(room)
        rem = Signal(rb, name="tie_rem")
        shifted = Signal(len(value) + qb, name="tie_divisor")  # value << step
        quo = Signal(qb, name="tie_quo")
        step = Signal(range(qb + 1), name="tie_step")
        started = Signal(name="tie_started")
        trial = Signal(signed(max(rb, len(shifted)) + 1), name="tie_trial")
        m.d.comb += trial.eq(rem - shifted)
        with m.If(dividing):
            with m.If(~started):
                m.d.sync += [started.eq(1), rem.eq(room - 1), shifted.eq(value << cb), quo.eq(0), step.eq(qb)]
            with m.Elif(step != 0):
                m.d.sync += [step.eq(step - 1), shifted.eq(shifted >> 1), quo.eq((quo << 1) | ~trial[-1])]
                with m.If(~trial[-1]):
                    m.d.sync += rem.eq(trial)
            with m.Else():
                m.d.sync += [ties.eq(Mux(value == 0, count, Mux(quo < count, quo + 1, count))), dividing.eq(0),
                             started.eq(0)]
