"""The token selector: top-k, threshold or mass selection, compaction and the package token, in O(N) cycles.

One hardware block serves the inference-time rules of DynamicViT and EViT (top-k at a run-time k), AS-ViT
and SPViT (scores above a run-time threshold), SaiT (mass mode: the best tokens holding a run-time share
of the total score) and SPViT/HeatViT/EViT (plus a package token fusing the pruned tokens: their weighted
mean, or their unnormalised weighted sum, weighted by the scores or by package weights of their own). It
is bit-exact with :func:`tokensift.quant.select.select_frame`.

Streams (``amaranth.lib.stream``, valid/ready, every one stall-tolerant)
-----------------------------------------------------------------------
``i_cmd`` (one beat per frame, :func:`command_layout`)
    ``mode`` (:class:`~tokensift.quant.select.Mode`: 0 top-k, 1 threshold, 2 mass), ``n_tokens`` (N,
    class token included), ``k`` (patch tokens to keep, top-k), ``threshold`` (keep ``score > threshold``);
    ``package`` and ``package_sum`` (0: the weighted mean, 1: the sum) when built with a package token;
    ``mass`` (``mass / 2**mass_frac`` of the candidates' total score) when built with mass mode.
``i_score`` (N beats, :func:`score_layout`)
    The unsigned scores of tokens 0..N-1 (token 0's is ignored: the class token is always kept), each
    with its package weight when built with ``weight_bits``.
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

Run-time settings the frame cannot satisfy (N = 0, N > n_max, a mode not built, top-k with k > N - 1,
mass above the whole) are reported on ``o_frame`` (and the ``status`` output) with ``n_kept`` = 0; the
frame's inputs are still consumed so the streams stay aligned, and no token is output. With a package
token, ``overflows`` counts the sum rule's saturated package values since reset.

Algorithm
---------
1. Load: scores and features into memories; the histogram of the scores' top radix digit is counted on
   the fly (top-k).
2. Search (top-k): per further digit, one pass over the candidates' scores and a 16-bin scan
   (:class:`tokensift.hw.selector.histogram.HistogramSelect`) finds the k-th largest score ``v`` and how many
   ties at ``v`` to admit; no sort: ``digits * 20 + (digits - 1) * N`` cycles, ``digits =
   ceil(score_bits / 4)``. Mass mode: the target ``ceil(mass * S / 2**mass_frac)`` first
   (:class:`tokensift.hw.selector.mass.MassTarget`), then the same search over a histogram of score sums,
   and a divider for the ties.
3. Compaction (:class:`tokensift.hw.selector.compactor.Compactor`): one pass in index order writes the kept indices
   (ascending) and the pruned ones into a list memory; lower indices win ties.
4. Output: the kept tokens' beats from the feature memory at one beat per cycle; then, per beat of the
   package token, the pruned tokens' beats through ``lanes`` MACs and dividers, or the sum rule's
   rounding (:class:`tokensift.hw.selector.package.PackageMAC`).

Timing: every memory read goes straight into a register (an ECP5 block RAM's output arrives almost 6 ns
after the clock), the feature memory is split into banks of one EBR depth whose registered outputs are
multiplexed between registers, the multipliers' inputs and products are registered, and the histogram
counts and scans without wide multiplexers; :func:`cycles` counts the added stages.

:func:`cycles` gives the exact cycle count of a frame without stalls.
"""

from __future__ import annotations

from amaranth.hdl import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from tokensift.checks import check_int
from tokensift.hw.selector.compactor import Compactor
from tokensift.hw.selector.histogram import HistogramSelect
from tokensift.hw.selector.mass import MassTarget
from tokensift.hw.selector.package import PackageMAC
from tokensift.quant.select import (
    FIELD_BITS,
    MODE_BITS,
    PACKAGE_RULES,
    RADIX_BITS,
    Mode,
    SelectorParams,
    Status,
)

__all__ = [
    "Selector",
    "command_layout",
    "score_layout",
    "feature_layout",
    "frame_layout",
    "token_layout",
    "cycles",
    "cycle_breakdown",
    "feature_banks",
    "BANK_DEPTH",
    "OUT_FIFO_DEPTH",
    "STATUS_BITS",
    "OVERFLOW_BITS",
]

#: words of one feature-memory bank: one ECP5 EBR column at the feature memory's width (1,024 x 18 per
#: EBR); a deeper memory would be built from several address ranges with a multiplexer right after the
#: EBRs' 5.8 ns clock-to-output, so the memory is banked explicitly and the bank multiplexer sits between
#: registers
BANK_DEPTH = 1024
#: cycles from a beat's issue to its data leaving the feature memory's bank registers: list memory, its
#: output register (the feature address is added from a register), feature memory, bank register
READ_LATENCY = 4
#: entries of the output FIFO: a beat holds its credit from its issue until the cycle after it is read,
#: READ_LATENCY + 3 cycles (the bank multiplexer's register, the FIFO, the reader), so one beat per
#: cycle needs that many entries
OUT_FIFO_DEPTH = READ_LATENCY + 3
#: width of the ``status`` output and of ``o_frame``'s status field (:class:`Status`)
STATUS_BITS = 3
#: width of the saturating ``overflows`` counter (package values the sum rule saturated)
OVERFLOW_BITS = 32
#: cycles between the package pass's last issue and the divide: its read and product reach the accumulator
_PKG_WAIT = READ_LATENCY + PackageMAC.latency - 2


def feature_banks(params: SelectorParams) -> list[int]:
    """The depths of the feature memory's banks: ``n_max * beats`` words in banks of :data:`BANK_DEPTH`
    (the last one holds the rest).

    >>> feature_banks(SelectorParams(n_max=197, dim=384, lanes=16))
    [1024, 1024, 1024, 1024, 632]
    """
    depth = params.n_max * params.beats
    return [min(BANK_DEPTH, depth - start) for start in range(0, depth, BANK_DEPTH)]


def command_layout(params: SelectorParams) -> data.StructLayout:
    fields = {"mode": MODE_BITS, "n_tokens": FIELD_BITS, "k": FIELD_BITS, "threshold": params.score_bits}
    if params.package:
        fields["package"] = 1
        fields["package_sum"] = 1
    if params.mass:
        fields["mass"] = params.mass_bits
    return data.StructLayout(fields)


def score_layout(params: SelectorParams):
    """One ``i_score`` beat: the unsigned score, or ``{score, weight}`` when built with ``weight_bits``."""
    if params.weight_bits:
        return data.StructLayout({"score": params.score_bits, "weight": params.weight_bits})
    return unsigned(params.score_bits)


def feature_layout(params: SelectorParams) -> data.ArrayLayout:
    return data.ArrayLayout(signed(params.feature_bits), params.lanes)


def frame_layout(params: SelectorParams) -> data.StructLayout:
    return data.StructLayout({"status": STATUS_BITS, "n_kept": FIELD_BITS, "package": 1})


def token_layout(params: SelectorParams) -> data.StructLayout:
    return data.StructLayout({"data": feature_layout(params), "index": params.idx_bits, "package": 1, "last": 1})


def cycle_breakdown(params: SelectorParams, *, n_tokens: int, kept: int, mode: Mode, package: bool = False,
                    package_rule: str = "mean", status: Status = Status.OK) -> dict[str, int]:
    """The terms of :func:`cycles` by phase: ``load``, ``search``, ``compact``, ``header``, ``output``,
    ``package`` (an invalid frame has ``load`` and ``header`` only).

    >>> cycle_breakdown(SelectorParams(n_max=8, dim=8, lanes=4), n_tokens=8, kept=3, mode=Mode.TOPK)
    {'load': 18, 'search': 104, 'compact': 11, 'header': 1, 'output': 7, 'package': 0}
    """
    if not isinstance(params, SelectorParams):
        raise TypeError(f"params must be SelectorParams, not {type(params).__name__}")
    if not isinstance(mode, Mode):
        raise TypeError(f"mode must be a Mode, not {type(mode).__name__}")
    if not isinstance(status, Status):
        raise TypeError(f"status must be a Status, not {type(status).__name__}")
    if package_rule not in PACKAGE_RULES:
        raise ValueError(f"package_rule must be 'mean' or 'sum', not {package_rule!r}")
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
    if mode is Mode.MASS and not params.mass:
        raise ValueError("mass mode asked of a selector built without mass=True")
    d = params.digits
    scan = HistogramSelect.count_latency + (1 << RADIX_BITS)
    search = 0
    if mode is not Mode.THRESHOLD:
        search = d * (scan + 2) + (d - 1) * n
    if mode is Mode.MASS:
        search += _mass_cycles(params)
    finish = 1 + params.feature_bits + 2 if package_rule == "mean" else 2
    return {
        "load": load,
        "search": search,
        "compact": n + 3,
        "header": 1,
        "output": kept * b + 1,
        "package": b * ((n - kept) + 1 + _PKG_WAIT + finish) if package and kept < n else 0,
    }


def _mass_cycles(p: SelectorParams) -> int:
    """Cycles a mass search adds to a top-k one: the mass target (and one to leave its wait) and the ties."""
    return p.mass_frac + 2 + p.count_bits + 3


def cycles(params: SelectorParams, *, n_tokens: int, kept: int, mode: Mode, package: bool = False,
           package_rule: str = "mean", status: Status = Status.OK) -> int:
    """Clock cycles of one frame with no stalls: from the cycle its command is accepted to the cycle the
    next command can be (the frame period when frames come back to back; inputs always valid, outputs
    always ready). Equal to simulation, cycle for cycle (``tests/sim/test_selector_sim.py``).

    With ``N = n_tokens``, ``B = dim / lanes`` beats per token, ``D = ceil(score_bits / 4)`` digits and
    ``P = N - kept`` pruned tokens::

        load     = 2 + N * B                      command, N * B feature beats (scores alongside), exit
        search   = D * 20 + (D - 1) * N           top-k and mass: D scans (2 counting stages + 16 bins,
                                                  +2), D - 1 score passes
                 + mass_frac + 2 + count_bits + 3 mass only: the target ceil(mass * S / 2**mass_frac)
                                                  one bit per cycle, the saturated tie divider
        compact  = N + 3                          start, N reads, the last one's 2-stage read
        header   = 1
        output   = kept * B + 1                   one beat per cycle, then one cycle for the last read
        package  = B * (P + feature_bits + 9)     mean rule, per beat: P MACs, 1 + 5 pipeline (read, bank
                                                  register, multiplier input and product), 1 + fb + 1
                                                  divider, push
                   B * (P + 8)                    sum rule: the divider's fb + 1 cycles skipped
        invalid frame (status not OK): 3 + N * B  (inputs drained, header only)

    ``kept`` counts the class token (1 + k in top-k mode), not the package token. For an invalid frame
    only ``n_tokens`` matters.

    >>> p = SelectorParams(n_max=197, dim=384, lanes=16, package=True)
    >>> cycles(p, n_tokens=197, kept=99, mode=Mode.TOPK, package=True)
    10739
    >>> cycles(p, n_tokens=197, kept=99, mode=Mode.TOPK, package=True, package_rule="sum")
    10523
    >>> cycles(p, n_tokens=197, kept=99, mode=Mode.THRESHOLD)
    7308
    """
    return sum(cycle_breakdown(params, n_tokens=n_tokens, kept=kept, mode=mode, package=package,
                               package_rule=package_rule, status=status).values())


def _count_lane_overflows(m: Module, counter: Signal, flags, event) -> None:
    """Add the number of set ``flags`` (one per lane) to the saturating ``counter`` when ``event``.

    The flags are registered, then their count, then the sum: no path from the rounding logic that
    raised a flag to the counter's carry chain (as :func:`tokensift.hw.common.fixed.count_overflows`,
    which counts one event per cycle)."""
    flags_q = Signal(len(flags), name=f"{counter.name}_flags")
    count = Signal(range(len(flags) + 1), name=f"{counter.name}_count")
    grown = Signal(len(counter) + 1, name=f"{counter.name}_grown")
    m.d.sync += [flags_q.eq(Mux(event, flags, 0)), count.eq(sum(flags_q[i] for i in range(len(flags))))]
    m.d.comb += grown.eq(counter + count)
    m.d.sync += counter.eq(Mux(grown[-1], (1 << len(counter)) - 1, grown[:len(counter)]))


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
    weight_bits, weight_frac : int
        A package weight per token next to each score (0: the score is the weight); the weights'
        fractional bits, rounded away by the sum package rule.
    mass, mass_frac : bool, int
        Build SaiT's mass mode; fractional bits of its run-time ``mass``.

    Example (then ``amaranth.back.verilog.convert(sel, name="top")``, or ``tokensift generate selector``)::

        sel = Selector(n_max=197, dim=384, lanes=16, package=True)
        sel.params.beats  # 24 beats of 16 features per token
    """

    def __init__(self, *, n_max: int, dim: int, score_bits: int = 16, feature_bits: int = 8, lanes: int = 16,
                 package: bool = False, weight_bits: int = 0, weight_frac: int = 0, mass: bool = False,
                 mass_frac: int = 15):
        self._params = SelectorParams(n_max=n_max, dim=dim, score_bits=score_bits, feature_bits=feature_bits,
                                      lanes=lanes, package=package, weight_bits=weight_bits,
                                      weight_frac=weight_frac, mass=mass, mass_frac=mass_frac)
        p = self._params
        ports = {
            "i_cmd": In(stream.Signature(command_layout(p))),
            "i_score": In(stream.Signature(score_layout(p))),
            "i_feature": In(stream.Signature(feature_layout(p))),
            "o_frame": Out(stream.Signature(frame_layout(p))),
            "o_token": Out(stream.Signature(token_layout(p))),
            "status": Out(STATUS_BITS),
        }
        if p.package:
            ports["overflows"] = Out(OVERFLOW_BITS)
        super().__init__(ports)

    @property
    def params(self) -> SelectorParams:
        return self._params

    def elaborate(self, platform):
        m = Module()
        p = self._params
        beats, n_max = p.beats, p.n_max

        # -- storage --------------------------------------------------------------------------------
        bank_depths = feature_banks(p)
        feat_wrs, feat_rds = [], []
        for j, depth in enumerate(bank_depths):
            bank = Memory(shape=unsigned(p.lanes * p.feature_bits), depth=depth, init=[])
            m.submodules[f"features{j}"] = bank
            feat_wrs.append(bank.write_port())
            feat_rds.append(bank.read_port())
        # the scores, and next to each its package weight when it has one of its own
        m.submodules.scores = score_mem = Memory(shape=unsigned(p.score_bits + p.weight_bits), depth=n_max, init=[])
        m.submodules.order = list_mem = Memory(shape=unsigned(p.idx_bits), depth=n_max, init=[])
        score_wr, score_rd = score_mem.write_port(), score_mem.read_port()
        list_wr, list_rd = list_mem.write_port(), list_mem.read_port()

        m.submodules.search = search = HistogramSelect(score_bits=p.score_bits, count_bits=p.count_bits,
                                                       sum_bits=p.sum_bits if p.mass else 0)
        m.submodules.compactor = comp = Compactor(score_bits=p.score_bits, threshold_bits=p.digits * RADIX_BITS,
                                                  idx_bits=p.idx_bits, count_bits=p.count_bits,
                                                  weight_bits=p.package_weight_bits)
        if p.package:
            m.submodules.mac = mac = PackageMAC(lanes=p.lanes, score_bits=p.package_weight_bits,
                                                feature_bits=p.feature_bits, count_bits=p.count_bits,
                                                frac=p.weight_frac)
        if p.mass:
            m.submodules.mass_target = target = MassTarget(sum_bits=p.sum_bits, mass_frac=p.mass_frac)
        tok = token_layout(p)
        m.submodules.out_fifo = fifo = SyncFIFO(width=tok.size, depth=OUT_FIFO_DEPTH)

        # -- frame registers ------------------------------------------------------------------------
        mode = Signal(MODE_BITS)
        pkg = Signal()
        pkg_sum = Signal()
        n = Signal(FIELD_BITS)
        thr = Signal(p.score_bits)
        ok = self.status == int(Status.OK)
        searched = mode != int(Mode.THRESHOLD)  # top-k and mass find their threshold by the radix search
        # mass mode: the command's mass, the candidates' total score, and the two cases that need no
        # search (mass 0 keeps no candidate; the whole mass, or candidates that all score 0, keep all)
        mass = Signal(p.mass_bits)
        total = Signal(p.sum_bits)
        keep_none, keep_all = Signal(), Signal()

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

        # -- read pipeline: every memory output goes straight into a register ------------------------
        #    s1: list memory read; s2: the token's index registered, feature (and score) address =
        #    beat base + index; s3: feature memory banks read; s4: every bank's output registered
        #    (``bank_q``), the bank multiplexer (select registered, one-hot) into the MAC's input
        #    registers or, s5, into ``feat_q`` and the FIFO
        s1_valid, s1_mac, s1_last = Signal(), Signal(), Signal()
        s1_base = Signal(range(n_max * beats))
        s2_valid, s2_mac, s2_last = Signal(), Signal(), Signal()
        s2_base = Signal(range(n_max * beats))
        s2_index = Signal(p.idx_bits)
        s3_valid, s3_mac, s3_last = Signal(), Signal(), Signal()
        s3_index = Signal(p.idx_bits)
        s4_valid, s4_mac, s4_last = Signal(), Signal(), Signal()
        s4_index = Signal(p.idx_bits)
        s5_valid, s5_last = Signal(), Signal()
        s5_index = Signal(p.idx_bits)
        feat_q = Signal(feature_layout(p))
        score_q = Signal(p.score_bits + p.weight_bits)  # the score memory's output register
        weight_q = score_q[p.score_bits:] if p.weight_bits else score_q
        i_score = self.i_score.payload.score if p.weight_bits else self.i_score.payload
        n_banks = len(bank_depths)
        bank_bits = (BANK_DEPTH - 1).bit_length()
        feat_rd_addr = Signal(range(n_max * beats))
        s3_bank, s4_bank = Signal(n_banks), Signal(n_banks)  # one-hot: the bank each stage's read is from
        bank_q = [Signal(p.lanes * p.feature_bits, name=f"bank_q{j}") for j in range(n_banks)]
        bank_out = Signal(p.lanes * p.feature_bits)
        bank_or = C(0, p.lanes * p.feature_bits)
        for j, q in enumerate(bank_q):
            bank_or = bank_or | Mux(s4_bank[j], q, 0)
        m.d.comb += bank_out.eq(bank_or)
        m.d.sync += [
            s1_valid.eq(0),
            s2_valid.eq(s1_valid), s2_mac.eq(s1_mac), s2_last.eq(s1_last), s2_base.eq(s1_base),
            s2_index.eq(list_rd.data),
            s3_valid.eq(s2_valid), s3_mac.eq(s2_mac), s3_last.eq(s2_last), s3_index.eq(s2_index),
            s4_valid.eq(s3_valid), s4_mac.eq(s3_mac), s4_last.eq(s3_last), s4_index.eq(s3_index),
            s5_valid.eq(s4_valid & ~s4_mac), s5_last.eq(s4_last), s5_index.eq(s4_index),
            s4_bank.eq(s3_bank),
            feat_q.eq(bank_out),
        ]
        m.d.comb += feat_rd_addr.eq(s2_base + s2_index)
        for j, rd in enumerate(feat_rds):
            m.d.comb += rd.addr.eq(feat_rd_addr[:bank_bits] if n_banks > 1 else feat_rd_addr)
            m.d.sync += [bank_q[j].eq(rd.data), s3_bank[j].eq(feat_rd_addr[bank_bits:] == j if n_banks > 1 else 1)]
        if p.package:
            # the score read alongside the feature address (s2) is in ``score_q`` at s4
            m.d.comb += [mac.sample.eq(s4_valid & s4_mac), mac.weight.eq(weight_q),
                         mac.features.eq(bank_out), mac.divisor.eq(comp.pruned_sum), mac.sum.eq(pkg_sum)]
            _count_lane_overflows(m, self.overflows, mac.overflowed, push_pkg)

        # -- load counters ----------------------------------------------------------------------------
        s_cnt = Signal(FIELD_BITS)
        f_tok = Signal(FIELD_BITS)
        f_beat = Signal(range(beats))
        f_addr = Signal(range(n_max * beats))
        # "more to load" as registers (s_cnt < n, f_tok < n kept up to date), so that no compare of the counters
        # stands in front of the ready outputs: a consumer's read enable and wide register enables follow them
        s_more, f_more = Signal(), Signal()
        n_last = Signal(FIELD_BITS)     # n - 1
        m.d.comb += [
            score_wr.addr.eq(s_cnt), score_wr.data.eq(self.i_score.payload.as_value() if p.weight_bits
                                                      else self.i_score.payload),
        ]
        for wr in feat_wrs:
            m.d.comb += [wr.addr.eq(f_addr[:bank_bits] if n_banks > 1 else f_addr),
                         wr.data.eq(self.i_feature.payload.as_value())]

        # -- pass counter (search and compaction passes, output and package issue) ---------------------
        #    a pass reads the score memory at ``i``; the score reaches ``score_q`` two cycles later
        i = Signal(FIELD_BITS)
        hist_pending = Signal(2)  # a score read of a search pass is in flight, by stage
        comp_pending = Signal(2)  # a score read of the compaction pass is in flight, by stage
        rd_index = Signal(2 * p.idx_bits)  # the index of each stage's read
        load_sample = Signal()
        m.d.sync += [hist_pending.eq(hist_pending << 1), comp_pending.eq(comp_pending << 1),
                     rd_index.eq(Cat(i[:p.idx_bits], rd_index)), score_q.eq(score_rd.data)]
        m.d.comb += [
            search.sample.eq(load_sample | hist_pending[1]),
            search.score.eq(Mux(hist_pending[1], score_q[:p.score_bits], i_score)),
            comp.sample.eq(comp_pending[1]),
            list_rd.addr.eq(i),
            score_rd.addr.eq(s2_index),  # package pass: the score of the token in pipeline stage 2
        ]
        all_ones = (1 << (p.digits * RADIX_BITS)) - 1
        m.d.comb += [
            comp.threshold.eq(Mux(~searched, thr, Mux(keep_none, all_ones, Mux(keep_all, 0, search.threshold)))),
            comp.ties.eq(Mux(~searched | keep_none, 0, Mux(keep_all, n, search.ties))),
            comp.n_tokens.eq(n),
            comp.index.eq(rd_index[p.idx_bits:]),
            comp.score.eq(score_q[:p.score_bits]),
            comp.weight.eq(weight_q[:p.package_weight_bits]),
            list_wr.en.eq(comp.w_en), list_wr.addr.eq(comp.w_addr), list_wr.data.eq(comp.w_data),
        ]
        beat = Signal(range(beats))
        base = Signal(range(n_max * beats))
        n_kept = comp.n_kept
        last_kept = Signal(FIELD_BITS)  # position of the last kept token in the list

        # FIFO write data: every field of token_layout (data, index, package, last) in one expression; a
        # field left to its default would become a constant process that event-driven simulators never
        # run (the field would stay X)
        pkg_word = Cat(mac.result, C(0, p.idx_bits), C(1, 1), beat == beats - 1) if p.package else C(0, tok.size)
        m.d.comb += [
            fifo.w_en.eq(s5_valid | push_pkg),
            fifo.w_data.eq(Mux(s5_valid, Cat(feat_q, s5_index, C(0, 1), s5_last), pkg_word)),
        ]
        pkg_out = pkg & (n_kept != n)  # a package token is output when requested and a token was pruned

        # the readies outside the FSM: s_more and f_more are clear outside LOAD
        m.d.comb += [self.i_score.ready.eq(s_more), self.i_feature.ready.eq(f_more)]
        # the search starts in LOAD's first cycle, from registers: its start clears every bin counter, and
        # driven by the command's valid it made the accept a path across the whole search unit. No score is
        # counted in that cycle (the class token's, the first, never is), so no cycle is lost
        search_start = Signal()
        search_k = Signal.like(search.k)
        m.d.sync += search_start.eq(0)
        m.d.comb += [search.start.eq(search_start), search.k.eq(search_k),
                     search.mass.eq(mode == int(Mode.MASS))]
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i_cmd.ready.eq(1)
                cmd = self.i_cmd.payload
                with m.If(self.i_cmd.valid):
                    top_mode = int(Mode.MASS) if p.mass else int(Mode.THRESHOLD)
                    cmd_mass = cmd.mass if p.mass else 0
                    status = Mux(cmd.n_tokens == 0, int(Status.N_ZERO),
                                 Mux(cmd.n_tokens > n_max, int(Status.N_TOO_LARGE),
                                     Mux(cmd.mode > top_mode, int(Status.MODE_UNSUPPORTED),
                                         Mux((cmd.mode == int(Mode.TOPK)) & (cmd.k >= cmd.n_tokens),
                                             int(Status.K_TOO_LARGE),
                                             Mux((cmd.mode == int(Mode.MASS)) & (cmd_mass > (1 << p.mass_frac)),
                                                 int(Status.MASS_TOO_LARGE), int(Status.OK))))))
                    m.d.sync += [self.status.eq(status), mode.eq(cmd.mode), n.eq(cmd.n_tokens),
                                 thr.eq(cmd.threshold), s_cnt.eq(0), f_tok.eq(0), f_beat.eq(0), f_addr.eq(0),
                                 s_more.eq(cmd.n_tokens != 0), f_more.eq(cmd.n_tokens != 0),
                                 n_last.eq(cmd.n_tokens - 1),
                                 total.eq(0), keep_none.eq(0), keep_all.eq(0)]
                    if p.package:
                        m.d.sync += [pkg.eq(cmd.package), pkg_sum.eq(cmd.package_sum)]
                    if p.mass:
                        m.d.sync += mass.eq(cmd.mass)
                    m.d.sync += [search_start.eq(1), search_k.eq(cmd.k)]
                    m.next = "LOAD"

            with m.State("LOAD"):
                score_take = self.i_score.valid & s_more
                feat_take = self.i_feature.valid & f_more
                m.d.comb += [
                    score_wr.en.eq(score_take & ok),
                    load_sample.eq(score_take & ok & searched & (s_cnt != 0)),
                ]
                if p.mass:
                    with m.If(score_take & (s_cnt != 0)):
                        m.d.sync += total.eq(total + i_score)
                for j, wr in enumerate(feat_wrs):
                    in_bank = (f_addr[bank_bits:] == j) if n_banks > 1 else 1
                    m.d.comb += wr.en.eq(feat_take & ok & in_bank)
                with m.If(score_take):
                    m.d.sync += [s_cnt.eq(s_cnt + 1), s_more.eq(s_cnt != n_last)]
                with m.If(feat_take):
                    with m.If(f_beat == beats - 1):
                        m.d.sync += [f_beat.eq(0), f_tok.eq(f_tok + 1), f_addr.eq(f_tok + 1),
                                     f_more.eq(f_tok != n_last)]
                    with m.Else():
                        m.d.sync += [f_beat.eq(f_beat + 1), f_addr.eq(f_addr + n_max)]
                with m.If(~s_more & ~f_more):
                    with m.If(~ok):
                        m.next = "HEADER"
                    with m.Elif(mode == int(Mode.MASS)):
                        if p.mass:
                            m.d.comb += [target.start.eq(1), target.mass.eq(mass), target.total.eq(total)]
                            m.d.sync += [keep_none.eq(mass == 0),
                                         keep_all.eq((mass != 0) & (mass[p.mass_frac] | (total == 0)))]
                            m.next = "MASS_TARGET"
                    with m.Elif(searched):
                        m.next = "SCAN"
                    with m.Else():
                        m.next = "COMPACT_START"

            if p.mass:
                with m.State("MASS_TARGET"):  # ceil(mass * S / 2**mass_frac), the radix search's room
                    with m.If(~target.busy):
                        m.next = "SCAN"
                m.d.comb += search.room.eq(target.target)

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
                    m.d.sync += [i.eq(i + 1), hist_pending[0].eq(1)]
                with m.Else():
                    m.next = "SCAN"

            with m.State("COMPACT_START"):
                m.d.comb += comp.start.eq(1)
                m.d.sync += i.eq(0)
                m.next = "COMPACT"

            with m.State("COMPACT"):
                m.d.comb += score_rd.addr.eq(i)
                with m.If(i < n):
                    m.d.sync += [i.eq(i + 1), comp_pending[0].eq(1)]
                with m.Else():
                    m.next = "COMPACT_END"

            with m.State("COMPACT_END"):  # the last score reaches the compactor
                m.next = "HEADER"

            with m.State("HEADER"):
                m.d.comb += [
                    self.o_frame.valid.eq(1),
                    self.o_frame.payload.status.eq(self.status),
                    self.o_frame.payload.n_kept.eq(Mux(ok, n_kept, 0)),
                    self.o_frame.payload.package.eq(ok & pkg_out),
                ]
                with m.If(self.o_frame.ready):
                    m.d.sync += [i.eq(0), beat.eq(0), base.eq(0), last_kept.eq(n_kept - 1)]
                    with m.If(ok):
                        m.next = "OUTPUT"
                    with m.Else():
                        m.next = "IDLE"

            with m.State("OUTPUT"):
                final = (i == last_kept) & (beat == beats - 1)
                with m.If(credit):
                    m.d.comb += issue_out.eq(1)
                    m.d.sync += [s1_valid.eq(1), s1_mac.eq(0), s1_base.eq(base), s1_last.eq(final & ~pkg_out)]
                    with m.If(beat == beats - 1):
                        m.d.sync += [beat.eq(0), base.eq(0), i.eq(i + 1)]
                    with m.Else():
                        m.d.sync += [beat.eq(beat + 1), base.eq(base + n_max)]
                    with m.If(final):
                        m.d.sync += [i.eq(n_kept), beat.eq(0), base.eq(0)]
                        m.next = "OUTPUT_END"

            with m.State("OUTPUT_END"):
                # one cycle, so that the next frame's first feature write (to address 0) comes after the
                # last beat's read even when that beat is token 0's only one
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
                    with m.If(i == _PKG_WAIT - 1):
                        m.next = "PKG_DIV"

                with m.State("PKG_DIV"):
                    m.d.comb += mac.divide.eq(1)
                    m.next = "PKG_PUSH"

                with m.State("PKG_PUSH"):
                    with m.If(~mac.busy & credit):
                        m.d.comb += [push_pkg.eq(1), mac.clear.eq(1)]
                        m.d.sync += [i.eq(n_kept), beat.eq(beat + 1), base.eq(base + n_max)]
                        with m.If(beat == beats - 1):
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "PKG_MAC"
        return m
