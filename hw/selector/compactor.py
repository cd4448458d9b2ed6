"""Compaction pass of the token selector: keep/prune each token in index order, build the index list.

The hardware form of :func:`tokensift.quant.select.keep_by_threshold`: token 0 (the class token) is
always kept; a patch token is kept when ``score > threshold``, or when ``score == threshold`` and fewer
than ``ties`` equal scores were admitted before it (lower index first). Top-k mode uses the radix
search's ``(threshold, ties)``; threshold mode uses ``(T, 0)``.

Each kept token's index is written to the list at ``n_kept`` (ascending from 0, original order); each
pruned one's at ``n_tokens - 1 - n_pruned`` (descending from the top), so after the pass the list holds
the kept indices in ``[0, n_kept)`` and the pruned ones in ``[n_kept, n_tokens)``. The pruned tokens'
package weights (their scores, or weights of their own) are summed for the package token. One token per cycle, no stalls.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tokensift.checks import check_int

__all__ = ["Compactor"]


class Compactor(wiring.Component):
    """Keep decision, kept/pruned counters, list write port and pruned score sum.

    Parameters (keyword-only)
    -------------------------
    score_bits : int
        Width of the unsigned scores (1..24).
    threshold_bits : int
        Width of ``threshold`` (at least ``score_bits``; the radix search pads to whole digits).
    weight_bits : int
        Width of the package weights (1..24).
    idx_bits, count_bits : int
        Widths of a token index and of a token count.

    Ports
    -----
    start : In
        One cycle: clear the counters and take ``threshold``, ``ties`` and ``n_tokens`` for the pass.
    sample, index, score, weight : In
        One token per cycle, in ascending index order starting at 0, with its package weight.
    w_en, w_addr, w_data : Out
        Write of the token's index into the list memory (combinational, same cycle as ``sample``).
    n_kept, pruned_sum : Out
        Tokens kept so far; sum of the pruned tokens' weights so far.
    """

    def __init__(self, *, score_bits: int, threshold_bits: int, idx_bits: int, count_bits: int, weight_bits: int):
        for name, value, high in (("score_bits", score_bits, 24), ("threshold_bits", threshold_bits, 32),
                                  ("idx_bits", idx_bits, 16), ("count_bits", count_bits, 17),
                                  ("weight_bits", weight_bits, 24)):
            check_int(name, value, low=1, high=high, numpy=False)
        if threshold_bits < score_bits:
            raise ValueError(f"threshold_bits must be at least score_bits={score_bits}, not {threshold_bits}")
        self._count_bits = count_bits
        super().__init__({
            "start": In(1),
            "threshold": In(threshold_bits),
            "ties": In(count_bits),
            "n_tokens": In(count_bits),
            "sample": In(1),
            "index": In(idx_bits),
            "score": In(score_bits),
            "weight": In(weight_bits),
            "w_en": Out(1),
            "w_addr": Out(idx_bits),
            "w_data": Out(idx_bits),
            "n_kept": Out(count_bits),
            "pruned_sum": Out(weight_bits + count_bits),
        })

    def elaborate(self, platform):
        m = Module()
        # the pass's settings are registers, and the per-token decision is one comparison of the score
        # with a register plus counters: no subtraction or count comparison on the way to the list write
        threshold = Signal.like(self.threshold)
        ties_left = Signal(self._count_bits)  # equal candidates still to admit
        pruned_addr = Signal(self._count_bits)  # n_tokens - 1 - (tokens pruned so far)
        first = Signal()  # the next sample is token 0, the class token
        equal = ~first & (self.score == threshold)
        admit_tie = equal & (ties_left != 0)
        keep = first | (self.score > threshold) | admit_tie
        m.d.comb += [
            self.w_en.eq(self.sample),
            self.w_data.eq(self.index),
            self.w_addr.eq(Mux(keep, self.n_kept, pruned_addr)),
        ]
        with m.If(self.sample):
            m.d.sync += first.eq(0)
            with m.If(admit_tie):
                m.d.sync += ties_left.eq(ties_left - 1)
            with m.If(keep):
                m.d.sync += self.n_kept.eq(self.n_kept + 1)
            with m.Else():
                m.d.sync += [pruned_addr.eq(pruned_addr - 1), self.pruned_sum.eq(self.pruned_sum + self.weight)]
        with m.If(self.start):
            m.d.sync += [self.n_kept.eq(0), self.pruned_sum.eq(0), first.eq(1), threshold.eq(self.threshold),
                         ties_left.eq(self.ties), pruned_addr.eq(self.n_tokens - 1)]
        return m
