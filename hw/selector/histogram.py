"""Radix (histogram) search for the k-th largest score: the selection core of the token selector.

The hardware form of :func:`tokensift.quant.select.radix_threshold`. Scores are resolved one
``radix_bits`` digit at a time from the most significant end: the parent streams the candidates' scores
in (``sample``), the unit counts the current digit of those whose higher digits equal the prefix found
so far in ``2**radix_bits`` histogram counters, then a fixed-length scan (``scan``) walks the bins from
the top and picks the bin where the running count reaches the remaining rank. After the last digit,
``threshold`` is the k-th largest candidate score and ``ties`` how many candidates equal to it to admit,
lowest index first.

Timing: a ``scan`` pulse is followed by exactly ``2**radix_bits`` busy cycles; one pass of ``n`` scores
takes ``n`` cycles of ``sample``. Counters and the scan are a few dozen LUTs and flip-flops; no DSP, no
memory.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Signal
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
        After a pass: resolve the current digit (``2**radix_bits`` busy cycles follow).
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
        """Busy cycles after each ``scan`` pulse."""
        return 1 << self._radix_bits

    def elaborate(self, platform):
        m = Module()
        r, digits, bins = self._radix_bits, self._digits, 1 << self._radix_bits
        width = digits * r
        hist = Array(Signal(self._count_bits, name=f"hist{b}") for b in range(bins))
        prefix = Signal(width)  # resolved digits, left-aligned: bits above the current digit
        rank = Signal(self._count_bits)  # rank still to find among candidates matching the prefix
        cum = Signal(self._count_bits + 1)
        found = Signal()
        sel = Signal(r)
        sel_rank = Signal(self._count_bits)
        bin_ = Signal(r)

        score = self.score
        m.d.comb += [self.threshold.eq(prefix), self.ties.eq(rank), self.done.eq(self.digit == digits)]

        # -- counting: the current digit of scores whose higher digits equal the prefix ---------------
        cur = Signal(r)
        match = Signal()
        with m.Switch(self.digit):
            for d in range(digits):
                low = (digits - 1 - d) * r
                with m.Case(d):
                    m.d.comb += cur.eq((score >> low)[:r])
                    if d == 0:
                        m.d.comb += match.eq(1)
                    else:
                        m.d.comb += match.eq((score >> (low + r)) == (prefix >> (low + r)))
        with m.If(self.sample & ~self.busy & ~self.done & match):
            m.d.sync += hist[cur].eq(hist[cur] + 1)

        # -- scanning: bins from the top, first one where the running count reaches the rank ----------
        h = hist[bin_]
        hit = ~found & (cum + h >= rank)
        with m.If(self.busy):
            m.d.sync += bin_.eq(bin_ - 1)
            with m.If(hit):
                m.d.sync += [found.eq(1), sel.eq(bin_), sel_rank.eq(rank - cum)]
            with m.Elif(~found):
                m.d.sync += cum.eq(cum + h)
            with m.If(bin_ == 0):  # last scan cycle: commit the digit
                final_sel = Signal(r)
                final_rank = Signal(self._count_bits)
                m.d.comb += [final_sel.eq(sel), final_rank.eq(sel_rank)]
                with m.If(hit):
                    m.d.comb += [final_sel.eq(bin_), final_rank.eq(rank - cum)]
                with m.Switch(self.digit):
                    for d in range(digits):
                        low = (digits - 1 - d) * r
                        with m.Case(d):
                            m.d.sync += prefix[low:low + r].eq(final_sel)
                m.d.sync += [rank.eq(final_rank), self.digit.eq(self.digit + 1), self.busy.eq(0)]
                m.d.sync += [c.eq(0) for c in hist]
        with m.Elif(self.scan & ~self.done):
            m.d.sync += [self.busy.eq(1), bin_.eq(bins - 1), cum.eq(0), found.eq(0)]

        with m.If(self.start):
            m.d.sync += [prefix.eq(0), rank.eq(self.k), self.digit.eq(0), self.busy.eq(0)]
            m.d.sync += [c.eq(0) for c in hist]
        return m
