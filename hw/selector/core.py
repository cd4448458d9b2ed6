"""The token selector: top-k or threshold selection, compaction and the package token, in O(N) cycles.

One hardware block serves the inference-time rules of DynamicViT, EViT, SaiT (top-k at a run-time k),
AS-ViT (scores above a run-time threshold) and SPViT/HeatViT (plus a package token fusing the pruned
tokens). It is bit-exact with :func:`tokensift.quant.select.select_frame`.

Streams (``amaranth.lib.stream``, valid/ready, every one stall-tolerant)
-----------------------------------------------------------------------
``i_cmd`` (one beat per frame, :func:`command_layout`)
    ``mode`` (0 top-k, 1 threshold), ``n_tokens`` (N, class token included), ``k`` (patch tokens to
    keep, top-k), ``threshold`` (keep ``score > threshold``), and ``package`` when built with one.
``i_score`` (N beats)
    The unsigned scores of tokens 0..N-1 (token 0's is ignored: the class token is always kept).
``i_feature`` (N * dim / lanes beats, :func:`feature_layout`)
    The features, token by token, ``lanes`` signed values per beat. Scores and features are accepted
    concurrently, in any interleaving, into block RAM.
``o_frame`` (one beat per frame, :func:`frame_layout`)
    ``status`` (:class:`tokensift.quant.select.Status`), ``n_kept`` (class token included) and
    ``package`` (a package token follows the kept tokens: it was requested and at least one token was
    pruned, as SPViT's model adds none when nothing was pruned), sent before the frame's tokens.
``o_token`` (:func:`token_layout`)
    The kept tokens in their original order, ``dim / lanes`` beats each, every beat with the token's
    original ``index``; then the package token (``package`` = 1) when requested; ``last`` marks the
    frame's final beat.

Run-time settings the frame cannot satisfy (N = 0, N > n_max, top-k with k > N - 1) are reported on
``o_frame`` (and the ``status`` output) with ``n_kept`` = 0; the frame's inputs are still consumed so the
streams stay aligned, and no token is output.

Algorithm
---------
1. Load: scores and features into memories; the histogram of the scores' top radix digit is counted on
   the fly (top-k).
2. Search (top-k): per further digit, one pass over the candidates' scores and a 16-bin scan
   (:class:`tokensift.hw.selector.histogram.HistogramSelect`) finds the k-th largest score ``v`` and how many
   ties at ``v`` to admit; no sort: ``digits * 18 + (digits - 1) * N`` cycles, ``digits =
   ceil(score_bits / 4)``.
3. Compaction (:class:`tokensift.hw.selector.compactor.Compactor`): one pass in index order writes the kept indices
   (ascending) and the pruned ones into a list memory; lower indices win ties.
4. Output: the kept tokens' beats from the feature memory at one beat per cycle; then, per beat of the
   package token, the pruned tokens' beats through ``lanes`` MACs and dividers
   (:class:`tokensift.hw.selector.package.PackageMAC`).

:func:`cycles` gives the exact cycle count of a frame without stalls.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from tokensift.checks import check_int
from tokensift.hw.selector.compactor import Compactor
from tokensift.hw.selector.histogram import HistogramSelect
from tokensift.hw.selector.package import PackageMAC
from tokensift.quant.select import FIELD_BITS, RADIX_BITS, Mode, SelectorParams, Status

__all__ = [
    "Selector",
    "command_layout",
    "feature_layout",
    "frame_layout",
    "token_layout",
    "cycles",
    "cycle_breakdown",
    "OUT_FIFO_DEPTH",
]

#: entries of the output FIFO (enough for one beat per cycle through the two-stage read pipeline)
OUT_FIFO_DEPTH = 4
_PIPE = 2  # read pipeline: list memory, then feature/score memory


def command_layout(params: SelectorParams) -> data.StructLayout:
    fields = {"mode": 1, "n_tokens": FIELD_BITS, "k": FIELD_BITS, "threshold": params.score_bits}
    if params.package:
        fields["package"] = 1
    return data.StructLayout(fields)


def feature_layout(params: SelectorParams) -> data.ArrayLayout:
    return data.ArrayLayout(signed(params.feature_bits), params.lanes)


def frame_layout(params: SelectorParams) -> data.StructLayout:
    return data.StructLayout({"status": 2, "n_kept": FIELD_BITS, "package": 1})


def token_layout(params: SelectorParams) -> data.StructLayout:
    return data.StructLayout({"data": feature_layout(params), "index": params.idx_bits, "package": 1, "last": 1})


def cycle_breakdown(params: SelectorParams, *, n_tokens: int, kept: int, mode: Mode, package: bool = False,
                    status: Status = Status.OK) -> dict[str, int]:
    """The terms of :func:`cycles` by phase: ``load``, ``search``, ``compact``, ``header``, ``output``,
    ``package`` (an invalid frame has ``load`` and ``header`` only).

    >>> cycle_breakdown(SelectorParams(n_max=8, dim=8, lanes=4), n_tokens=8, kept=3, mode=Mode.TOPK)
    {'load': 18, 'search': 96, 'compact': 10, 'header': 1, 'output': 6, 'package': 0}
    """
    if not isinstance(params, SelectorParams):
        raise TypeError(f"params must be SelectorParams, not {type(params).__name__}")
    if not isinstance(mode, Mode):
        raise TypeError(f"mode must be a Mode, not {type(mode).__name__}")
    if not isinstance(status, Status):
        raise TypeError(f"status must be a Status, not {type(status).__name__}")
    for name, value in (("n_tokens", n_tokens), ("kept", kept)):
        check_int(name, value, numpy=False)
    if not 0 <= n_tokens < (1 << FIELD_BITS):
        raise ValueError(f"n_tokens must be between 0 and {(1 << FIELD_BITS) - 1}, not {n_tokens}")
    n, b = n_tokens, params.beats
    load = 2 + n * b
    if status is not Status.OK:
        return {"load": load, "header": 1}
    if not 1 <= kept <= n:
        raise ValueError(f"kept must be between 1 and n_tokens={n}, not {kept}")
    if package and not params.package:
        raise ValueError("package token requested from a selector built without package=True")
    d = params.digits
    return {
        "load": load,
        "search": d * ((1 << RADIX_BITS) + 2) + (d - 1) * n if mode is Mode.TOPK else 0,
        "compact": n + 2,
        "header": 1,
        "output": kept * b,
        "package": b * ((n - kept) + 1 + PackageMAC.latency + 1 + params.feature_bits + 2)
        if package and kept < n else 0,
    }


def cycles(params: SelectorParams, *, n_tokens: int, kept: int, mode: Mode, package: bool = False,
           status: Status = Status.OK) -> int:
    """Clock cycles of one frame with no stalls: from the cycle its command is accepted to the cycle the
    next command can be (the frame period when frames come back to back; inputs always valid, outputs
    always ready). Equal to simulation, cycle for cycle (``tests/sim/test_selector_sim.py``).

    With ``N = n_tokens``, ``B = dim / lanes`` beats per token, ``D = ceil(score_bits / 4)`` digits and
    ``P = N - kept`` pruned tokens::

        load     = 2 + N * B                      command, N * B feature beats (scores alongside), exit
        search   = D * 18 + (D - 1) * N           top-k only: D scans of 16 bins (+2), D - 1 score passes
        compact  = N + 2
        header   = 1
        output   = kept * B                       one beat per cycle
        package  = B * (P + feature_bits + 6)     per beat: P MACs, 1 + 2 pipeline, 1 + fb + 1 divider, push
        invalid frame (status not OK): 3 + N * B  (inputs drained, header only)

    ``kept`` counts the class token (1 + k in top-k mode), not the package token. For an invalid frame
    only ``n_tokens`` matters.

    >>> p = SelectorParams(n_max=197, dim=384, lanes=16, package=True)
    >>> cycles(p, n_tokens=197, kept=99, mode=Mode.TOPK, package=True)
    10657
    >>> cycles(p, n_tokens=197, kept=99, mode=Mode.THRESHOLD)
    7306
    """
    return sum(cycle_breakdown(params, n_tokens=n_tokens, kept=kept, mode=mode, package=package,
                               status=status).values())


class Selector(wiring.Component):
    """Streaming token selector (see the module docstring for streams and algorithm).

    Parameters (keyword-only; validated by :class:`tokensift.quant.select.SelectorParams`)
    -------------------------------------------------------------------------------------
    n_max : int
        Most tokens per frame, class token included.
    dim : int
        Features per token.
    score_bits, feature_bits : int
        Widths of the unsigned scores and the signed features.
    lanes : int
        Features per stream beat; the package token uses ``lanes`` multipliers (DSPs).
    package : bool
        Build the package-token datapath.

    Example (then ``amaranth.back.verilog.convert(sel, name="top")``, or ``tokensift generate selector``)::

        sel = Selector(n_max=197, dim=384, lanes=16, package=True)
        sel.params.beats  # 24 beats of 16 features per token
    """

    def __init__(self, *, n_max: int, dim: int, score_bits: int = 16, feature_bits: int = 8, lanes: int = 16,
                 package: bool = False):
        self._params = SelectorParams(n_max=n_max, dim=dim, score_bits=score_bits, feature_bits=feature_bits,
                                      lanes=lanes, package=package)
        p = self._params
        super().__init__({
            "i_cmd": In(stream.Signature(command_layout(p))),
            "i_score": In(stream.Signature(unsigned(p.score_bits))),
            "i_feature": In(stream.Signature(feature_layout(p))),
            "o_frame": Out(stream.Signature(frame_layout(p))),
            "o_token": Out(stream.Signature(token_layout(p))),
            "status": Out(2),
        })

    @property
    def params(self) -> SelectorParams:
        return self._params

    def elaborate(self, platform):
        m = Module()
        p = self._params
        beats, n_max = p.beats, p.n_max

        # -- storage --------------------------------------------------------------------------------
        m.submodules.features = feat_mem = Memory(shape=feature_layout(p), depth=n_max * beats, init=[])
        m.submodules.scores = score_mem = Memory(shape=unsigned(p.score_bits), depth=n_max, init=[])
        m.submodules.order = list_mem = Memory(shape=unsigned(p.idx_bits), depth=n_max, init=[])
        feat_wr, feat_rd = feat_mem.write_port(), feat_mem.read_port()
        score_wr, score_rd = score_mem.write_port(), score_mem.read_port()
        list_wr, list_rd = list_mem.write_port(), list_mem.read_port()

        m.submodules.search = search = HistogramSelect(score_bits=p.score_bits, count_bits=p.count_bits)
        m.submodules.compactor = comp = Compactor(score_bits=p.score_bits, threshold_bits=p.digits * RADIX_BITS,
                                                  idx_bits=p.idx_bits, count_bits=p.count_bits)
        if p.package:
            m.submodules.mac = mac = PackageMAC(lanes=p.lanes, score_bits=p.score_bits,
                                                feature_bits=p.feature_bits, count_bits=p.count_bits)
        tok = token_layout(p)
        m.submodules.out_fifo = fifo = SyncFIFO(width=tok.size, depth=OUT_FIFO_DEPTH)

        # -- frame registers ------------------------------------------------------------------------
        mode = Signal()
        pkg = Signal()
        n = Signal(FIELD_BITS)
        thr = Signal(p.score_bits)
        ok = self.status == int(Status.OK)
        topk = mode == int(Mode.TOPK)

        # -- output FIFO and credit: every beat issued has a FIFO entry reserved -------------------
        outstanding = Signal(range(OUT_FIFO_DEPTH + 1))
        credit = outstanding < OUT_FIFO_DEPTH
        issue_out = Signal()  # a kept-token beat enters the read pipeline
        push_pkg = Signal()  # a package beat is written into the FIFO
        m.d.comb += [
            self.o_token.payload.eq(fifo.r_data),
            self.o_token.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.o_token.ready),
        ]
        taken = self.o_token.valid & self.o_token.ready
        m.d.sync += outstanding.eq(outstanding + (issue_out | push_pkg) - taken)

        # -- read pipeline: list memory -> feature (and score) memory -> FIFO or MAC ----------------
        s1_valid, s1_mac, s1_last = Signal(), Signal(), Signal()
        s1_base = Signal(range(n_max * beats))
        s2_valid, s2_mac, s2_last = Signal(), Signal(), Signal()
        s2_index = Signal(p.idx_bits)
        m.d.sync += [s1_valid.eq(0), s2_valid.eq(s1_valid), s2_mac.eq(s1_mac), s2_last.eq(s1_last),
                     s2_index.eq(list_rd.data)]
        m.d.comb += feat_rd.addr.eq(s1_base + list_rd.data)
        beat_out = Signal(tok)
        m.d.comb += [beat_out.data.eq(feat_rd.data), beat_out.index.eq(s2_index), beat_out.last.eq(s2_last)]
        with m.If(s2_valid & ~s2_mac):
            m.d.comb += [fifo.w_en.eq(1), fifo.w_data.eq(beat_out)]
        if p.package:
            m.d.comb += [mac.sample.eq(s2_valid & s2_mac), mac.weight.eq(score_rd.data),
                         mac.features.eq(feat_rd.data), mac.divisor.eq(comp.pruned_sum)]

        # -- load counters ----------------------------------------------------------------------------
        s_cnt = Signal(FIELD_BITS)
        f_tok = Signal(FIELD_BITS)
        f_beat = Signal(range(beats))
        f_addr = Signal(range(n_max * beats))
        s_more = s_cnt < n
        f_more = f_tok < n
        m.d.comb += [
            score_wr.addr.eq(s_cnt), score_wr.data.eq(self.i_score.payload),
            feat_wr.addr.eq(f_addr), feat_wr.data.eq(self.i_feature.payload),
        ]

        # -- pass counter (search and compaction passes, output and package issue) ---------------------
        i = Signal(FIELD_BITS)
        hist_pending = Signal()  # a score read of a search pass is in flight
        comp_pending = Signal()  # a score read of the compaction pass is in flight
        rd_index = Signal(p.idx_bits)
        load_sample = Signal()
        m.d.sync += [hist_pending.eq(0), comp_pending.eq(0), rd_index.eq(i)]
        m.d.comb += [
            search.sample.eq(load_sample | hist_pending),
            search.score.eq(Mux(hist_pending, score_rd.data, self.i_score.payload)),
            comp.sample.eq(comp_pending),
            list_rd.addr.eq(i),
            score_rd.addr.eq(list_rd.data),  # package pass: the score of the token in pipeline stage 1
        ]
        m.d.comb += [
            comp.threshold.eq(Mux(topk, search.threshold, thr)),
            comp.ties.eq(Mux(topk, search.ties, 0)),
            comp.n_tokens.eq(n),
            comp.index.eq(rd_index),
            comp.score.eq(score_rd.data),
            list_wr.en.eq(comp.w_en), list_wr.addr.eq(comp.w_addr), list_wr.data.eq(comp.w_data),
        ]
        beat = Signal(range(beats))
        base = Signal(range(n_max * beats))
        n_kept = comp.n_kept
        pkg_out = pkg & (n_kept != n)  # a package token is output when requested and a token was pruned

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i_cmd.ready.eq(1)
                cmd = self.i_cmd.payload
                with m.If(self.i_cmd.valid):
                    status = Mux(cmd.n_tokens == 0, int(Status.N_ZERO),
                                 Mux(cmd.n_tokens > n_max, int(Status.N_TOO_LARGE),
                                     Mux((cmd.mode == int(Mode.TOPK)) & (cmd.k >= cmd.n_tokens),
                                         int(Status.K_TOO_LARGE), int(Status.OK))))
                    m.d.sync += [self.status.eq(status), mode.eq(cmd.mode), n.eq(cmd.n_tokens),
                                 thr.eq(cmd.threshold), s_cnt.eq(0), f_tok.eq(0), f_beat.eq(0), f_addr.eq(0)]
                    m.d.sync += pkg.eq(cmd.package if p.package else 0)
                    m.d.comb += [search.start.eq(1), search.k.eq(cmd.k)]
                    m.next = "LOAD"

            with m.State("LOAD"):
                m.d.comb += [self.i_score.ready.eq(s_more), self.i_feature.ready.eq(f_more)]
                score_take = self.i_score.valid & s_more
                feat_take = self.i_feature.valid & f_more
                m.d.comb += [
                    score_wr.en.eq(score_take & ok),
                    feat_wr.en.eq(feat_take & ok),
                    load_sample.eq(score_take & ok & topk & (s_cnt != 0)),
                ]
                with m.If(score_take):
                    m.d.sync += s_cnt.eq(s_cnt + 1)
                with m.If(feat_take):
                    with m.If(f_beat == beats - 1):
                        m.d.sync += [f_beat.eq(0), f_tok.eq(f_tok + 1), f_addr.eq(f_tok + 1)]
                    with m.Else():
                        m.d.sync += [f_beat.eq(f_beat + 1), f_addr.eq(f_addr + n_max)]
                with m.If(~s_more & ~f_more):
                    with m.If(~ok):
                        m.next = "HEADER"
                    with m.Elif(topk):
                        m.next = "SCAN"
                    with m.Else():
                        m.next = "COMPACT_START"

            with m.State("SCAN"):
                m.d.comb += search.scan.eq(1)
                m.next = "SCAN_WAIT"

            with m.State("SCAN_WAIT"):
                with m.If(~search.busy):
                    with m.If(search.done):
                        m.next = "COMPACT_START"
                    with m.Else():
                        m.d.sync += i.eq(1)
                        m.next = "HIST"

            with m.State("HIST"):
                m.d.comb += score_rd.addr.eq(i)
                with m.If(i < n):
                    m.d.sync += [i.eq(i + 1), hist_pending.eq(1)]
                with m.Else():
                    m.next = "SCAN"

            with m.State("COMPACT_START"):
                m.d.comb += comp.start.eq(1)
                m.d.sync += i.eq(0)
                m.next = "COMPACT"

            with m.State("COMPACT"):
                m.d.comb += score_rd.addr.eq(i)
                with m.If(i < n):
                    m.d.sync += [i.eq(i + 1), comp_pending.eq(1)]
                with m.Else():
                    m.next = "HEADER"

            with m.State("HEADER"):
                m.d.comb += [
                    self.o_frame.valid.eq(1),
                    self.o_frame.payload.status.eq(self.status),
                    self.o_frame.payload.n_kept.eq(Mux(ok, n_kept, 0)),
                    self.o_frame.payload.package.eq(ok & pkg_out),
                ]
                with m.If(self.o_frame.ready):
                    m.d.sync += [i.eq(0), beat.eq(0), base.eq(0)]
                    with m.If(ok):
                        m.next = "OUTPUT"
                    with m.Else():
                        m.next = "IDLE"

            with m.State("OUTPUT"):
                final = (i == n_kept - 1) & (beat == beats - 1)
                with m.If(credit):
                    m.d.comb += issue_out.eq(1)
                    m.d.sync += [s1_valid.eq(1), s1_mac.eq(0), s1_base.eq(base), s1_last.eq(final & ~pkg_out)]
                    with m.If(beat == beats - 1):
                        m.d.sync += [beat.eq(0), base.eq(0), i.eq(i + 1)]
                    with m.Else():
                        m.d.sync += [beat.eq(beat + 1), base.eq(base + n_max)]
                    with m.If(final):
                        m.d.sync += [i.eq(n_kept), beat.eq(0), base.eq(0)]
                        m.next = "PKG_MAC" if p.package else "IDLE"
                        if p.package:
                            with m.If(~pkg_out):
                                m.next = "IDLE"

            if p.package:
                with m.State("PKG_MAC"):
                    with m.If(i < n):
                        m.d.sync += [i.eq(i + 1), s1_valid.eq(1), s1_mac.eq(1), s1_base.eq(base),
                                     s1_last.eq(0)]
                    with m.Else():
                        m.d.sync += i.eq(0)
                        m.next = "PKG_WAIT"

                with m.State("PKG_WAIT"):  # the last product reaches its accumulator
                    m.d.sync += i.eq(i + 1)
                    with m.If(i == PackageMAC.latency - 1):
                        m.next = "PKG_DIV"

                with m.State("PKG_DIV"):
                    m.d.comb += mac.divide.eq(1)
                    m.next = "PKG_PUSH"

                with m.State("PKG_PUSH"):
                    with m.If(~mac.busy & credit):
                        pkg_beat = Signal(tok)
                        m.d.comb += [pkg_beat.data.eq(mac.result), pkg_beat.package.eq(1),
                                     pkg_beat.last.eq(beat == beats - 1),
                                     fifo.w_en.eq(1), fifo.w_data.eq(pkg_beat), push_pkg.eq(1), mac.clear.eq(1)]
                        m.d.sync += [i.eq(n_kept), beat.eq(beat + 1), base.eq(base + n_max)]
                        with m.If(beat == beats - 1):
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "PKG_MAC"
        return m
