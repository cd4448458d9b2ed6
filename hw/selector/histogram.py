"""Radix (histogram) search for the k-th largest score: the selection core of the token selector.

The hardware form of :func:`tokensift.quant.select.radix_threshold`. Scores are resolved one
``radix_bits`` digit at a time from the most significant end: the parent streams the candidates' scores
in (``sample``), the unit counts the current digit of those whose higher digits equal the prefix found
so far in ``2**radix_bits`` histogram counters, then a fixed-length scan (``scan``) walks the bins from
the top and picks the bin where the running count reaches the remaining rank. After the last digit,
``threshold`` is the k-th largest candidate score and ``ties`` how many candidates equal to it to admit,
lowest index first.

Timing: a sample is counted through two registered stages (so a memory output can drive ``score``
directly) and each bin has its own counter; the scan shifts the bins past one comparison instead of
reading them through a 16:1 multiplexer. A ``scan`` pulse is followed by exactly ``2 + 2**radix_bits``
busy cycles and sees every sample given up to and including its own cycle; one pass of ``n`` scores
takes ``n`` cycles of ``sample``. Counters and the scan are a few dozen LUTs and flip-flops; no DSP, no
memory.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
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

    Ports
    -----
    start, k : In
        ``start`` (one cycle) begins a search for the ``k``-th largest score (``k = 0``: nothing is
        kept; the result is ``threshold`` all ones, ``ties`` 0).
    sample, score : In
        One candidate score of the current pass; ignored while ``busy``.
    scan : In
        After a pass (or in its last sample's cycle): resolve the current digit (:attr:`scan_cycles`
        busy cycles follow).
    busy, done, digit : Out
        Scanning; all digits resolved; the digit the next pass counts (0 = most significant).
    threshold, ties : Out
        The result once ``done``: keep ``score > threshold`` and the first ``ties`` equal to it.
    """

    def __init__(self, *, score_bits: int, count_bits: int, radix_bits: int = RADIX_BITS):
        for name, value, high in (("score_bits", score_bits, 24), ("count_bits", count_bits, 16),
                                  ("radix_bits", radix_bits, 8)):
            check_int(name, value, low=1, high=high, numpy=False)
        self._score_bits, self._count_bits, self._radix_bits = score_bits, count_bits, radix_bits
        self._digits = -(-score_bits // radix_bits)
        super().__init__({
            "start": In(1),
            "k": In(count_bits),
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

    #: registered stages between a ``sample`` and its counter (``scan`` follows the same stages)
    count_latency = 2

    def elaborate(self, platform):
        m = Module()
        r, digits, bins = self._radix_bits, self._digits, 1 << self._radix_bits
        width = digits * r
        cb = self._count_bits
        hist = [Signal(cb, name=f"hist{b}") for b in range(bins)]
        prefix = Signal(width)  # resolved digits, left-aligned: bits above the current digit
        above = Signal(width)  # mask of the bits above the current digit
        rank = Signal(cb)  # rank still to find among candidates matching the prefix
        remaining = Signal(cb)  # during a scan: the rank minus the counts of the bins above this one
        scanning = Signal()
        found = Signal()
        sel = Signal(r)
        sel_rank = Signal(cb)
        bin_ = Signal(r)

        # -- counting in two registered stages, so that no path runs from the parent's memory read to a
        #    counter: 1. the sample as it comes; 2. its current digit and whether its higher digits equal
        #    the prefix; then only the counter of that bin increments (no read-modify-write through a
        #    16:1 mux). ``scan`` travels down the same stages, so it sees every sample up to its own cycle.
        sample1, score1, scan1 = Signal(), Signal(width), Signal()
        sample2, cur2, scan2 = Signal(), Signal(r), Signal()
        m.d.comb += [
            self.busy.eq(scan1 | scan2 | scanning),
            self.threshold.eq(prefix),
            self.ties.eq(rank),
            self.done.eq(self.digit == digits),
        ]
        idle = ~self.busy & ~self.done
        m.d.sync += [sample1.eq(self.sample & idle), score1.eq(self.score), scan1.eq(self.scan & idle)]
        cur = Signal(r)
        with m.Switch(self.digit):
            for d in range(digits):
                with m.Case(d):
                    m.d.comb += cur.eq(score1[(digits - 1 - d) * r:][:r])
        match = ((score1 ^ prefix) & above) == 0
        m.d.sync += [sample2.eq(sample1 & match), cur2.eq(cur), scan2.eq(scan1)]
        for b in range(bins):
            with m.If(sample2 & (cur2 == b)):
                m.d.sync += hist[b].eq(hist[b] + 1)

        # -- scanning: the bins shift towards the top one per cycle, so the bin under test is always the
        #    last register and the histogram is all zeros when the scan ends; ``remaining`` counts down
        #    instead of a running sum being compared with the rank
        with m.If(scan2):
            m.d.sync += [scanning.eq(1), bin_.eq(bins - 1), remaining.eq(rank), found.eq(0)]
        h = hist[-1]
        hit = ~found & (h >= remaining)
        with m.If(scanning):
            m.d.sync += [hist[b].eq(hist[b - 1]) for b in range(1, bins)]
            m.d.sync += [hist[0].eq(0), bin_.eq(bin_ - 1)]
            with m.If(hit):
                m.d.sync += [found.eq(1), sel.eq(bin_), sel_rank.eq(remaining)]
            with m.Elif(~found):
                m.d.sync += remaining.eq(remaining - h)
            with m.If(bin_ == 0):  # last scan cycle: commit the digit
                with m.Switch(self.digit):
                    for d in range(digits):
                        low = (digits - 1 - d) * r
                        with m.Case(d):
                            m.d.sync += [prefix[low:low + r].eq(Mux(hit, bin_, sel)),
                                         above.eq(((1 << width) - 1) ^ ((1 << low) - 1))]
                m.d.sync += [rank.eq(Mux(hit, remaining, sel_rank)), self.digit.eq(self.digit + 1),
                             scanning.eq(0)]

        with m.If(self.start):
            m.d.sync += [prefix.eq(0), above.eq(0), rank.eq(self.k), self.digit.eq(0), scanning.eq(0),
                         sample1.eq(0), sample2.eq(0), scan1.eq(0), scan2.eq(0)]
            m.d.sync += [c.eq(0) for c in hist]
        return m
