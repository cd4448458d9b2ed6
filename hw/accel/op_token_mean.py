"""The ``TOKEN_MEAN`` engine: ``dst[0 .. n-1, :m] = src[start .. start+n-1, :m]`` with columns ``k .. m-1``
replaced by their mean over those rows (:func:`tokensift.quant.stages.predictor.mean_rows`, half up), on the
token-mean unit (:class:`tokensift.hw.vector.token_mean.TokenMean`). No DRAM: the op has no constants.

Two passes over the source rows, one buffer word per cycle (:class:`~tokensift.hw.accel.rows.RowReader`):

1. the words holding columns ``k .. m-1`` (from word ``k // lanes``) into the unit as one frame of ``n`` tokens;
   its means (the lanes of the first word below ``k`` included, then unused) land in a small memory indexed
   by word;
2. once the last mean is out, the rows again, each word written to the destination row with the columns
   ``>= k`` taken from the means memory (read a cycle ahead of the word, registered behind the RAM, then
   merged). In place (``src == dst``, ``start = 0``: DynamicViT's predictor) only the words from ``k // lanes``
   are read and only the columns ``k .. m-1`` written; otherwise every word ``< m`` is copied (columns ``< k``
   from the source).
   Row ``i`` is written after source row ``start + i`` is read, so ``src == dst`` with ``start > 0`` is safe.

The unit is built for the widest signed buffer (every source the ISA may name but the unsigned class rows)
and the most columns and rows of any buffer. A fault (``done`` at once, nothing written): ``k >= m``, ``m``
beyond the source's or destination's columns, an unsigned source, a destination narrower than the source or
unsigned, or ``n`` beyond the destination's rows. ``n = 0`` writes nothing and answers 0 rows.

:func:`cycles` is the exact count from ``start`` to ``done``.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.utils import ceil_log2

from tokensift.checks import check_int
from tokensift.hw.accel.config import AccelConfig
from tokensift.hw.accel.ports import READ_LATENCY, OpEngine, check_config
from tokensift.hw.accel.rows import RowReader
from tokensift.hw.vector.token_mean import TokenMean, TokenMeanParams
from tokensift.hw.vector.token_mean import cycles as unit_cycles
from tokensift.quant.accel.isa import Buffer

__all__ = ["TokenMeanEngine", "token_mean_params", "cycles"]


def token_mean_params(cfg: AccelConfig) -> TokenMeanParams:
    """The token-mean unit of an accelerator: its lanes, the widest signed buffer's bits, the rows and columns
    of the largest buffer."""
    check_config(cfg)
    if cfg.lanes & (cfg.lanes - 1):
        raise ValueError(f"the token-mean unit needs a power-of-two number of lanes, not {cfg.lanes}")
    signed_buffers = [cfg.geometry(b) for b in Buffer if cfg.geometry(b).signed]
    return TokenMeanParams(lanes=cfg.lanes, bits=max(g.bits for g in signed_buffers),
                           n_max=max(g.rows for g in signed_buffers), c_max=max(g.cols for g in signed_buffers))


def cycles(cfg: AccelConfig, *, k: int, m: int, n: int, in_place: bool) -> int:
    """Cycles from ``start`` to ``done`` of a well-formed op with ``n >= 1`` rows (``in_place``: ``src == dst``
    and ``start = 0``); no term depends on DRAM. With ``W = ceil(m / lanes)`` words and ``w_k = k // lanes``:

    * the op's check (2), the first walk's start, the buffer's read (:data:`READ_LATENCY`) and the reader's FIFO
      (2 more);
    * the unit's frame of ``n`` tokens of ``m - w_k lanes`` channels at one word per cycle, first input beat to
      last mean (:func:`tokensift.hw.vector.token_mean.cycles`);
    * the second walk's start, read and FIFO (``READ_LATENCY + 2``), its ``n (W - w_k)`` words in place,
      ``n W`` otherwise, at one per cycle, the merge with the means memory's registered read and the write (2), ``done`` (1).
    """
    p = token_mean_params(cfg)
    m = check_int("m", m, low=1, high=p.c_max, numpy=False)
    k = check_int("k", k, low=0, high=m - 1, numpy=False)
    n = check_int("n", n, low=1, high=p.n_max, numpy=False)
    lanes = cfg.lanes
    words, first = -(-m // lanes), k // lanes
    walk = READ_LATENCY + 2
    return 2 + walk + unit_cycles(p, n, m - first * lanes) + walk + n * (words - first if in_place else words) + 3


_IDLE, _CHECK, _MEANS, _WRITE = range(4)


class TokenMeanEngine(OpEngine):
    """See the module docstring; ports as :func:`tokensift.hw.accel.ports.engine_signature` (one read port, no
    DRAM channel)."""

    def __init__(self, *, config: AccelConfig):
        super().__init__(config=config, dram=False)
        self._params = token_mean_params(config)

    @property
    def unit_params(self) -> TokenMeanParams:
        return self._params

    def elaborate(self, platform):
        m = Module()
        cfg, p = self.config, self._params
        lanes = cfg.lanes
        lane_bits = ceil_log2(lanes)
        bank_bits = ceil_log2(cfg.banks)
        m.submodules.unit = unit = TokenMean(params=p)
        m.submodules.reader = reader = RowReader(config=cfg)
        wiring.connect(m, reader.rd, wiring.flipped(self.rd))

        # -- the op, latched at start; its checks registered ---------------------------------------------------
        op = self.latch_op(m)
        state = Signal(range(4))
        with m.If(self.start):
            m.d.sync += state.eq(_CHECK)
        src_ok, dst_ok = Signal(), Signal()
        src_bits = Signal(range(p.bits + 1))
        for b in Buffer:
            g = cfg.geometry(b)
            with m.If(op.src == b):
                m.d.comb += [src_ok.eq(Const(int(g.signed)) & (op.m <= g.cols)), src_bits.eq(g.bits)]
        for b in Buffer:
            g = cfg.geometry(b)
            with m.If(op.dst == b):
                m.d.comb += dst_ok.eq(Const(int(g.signed)) & (op.m <= g.cols) & (op.n <= g.rows) &
                                      (src_bits <= g.bits))
        fault = (op.k >= op.m) | ~src_ok | ~dst_ok
        words = Signal(cfg.word_bits + 1)       # W: words of the m columns
        first = Signal(cfg.word_bits + 1)       # w_k: the word holding column k
        in_place = Signal()
        in_place_op = (op.src == op.dst) & (op.start == 0)
        m.d.comb += [words.eq((op.m + lanes - 1) >> lane_bits), first.eq(op.k >> lane_bits)]
        with m.If(state == _CHECK):
            m.d.sync += in_place.eq(in_place_op)
            with m.If(fault | (op.n == 0)):
                m.d.sync += state.eq(_IDLE)
                self.finish(m, fault=fault)
            with m.Else():
                m.d.sync += state.eq(_MEANS)

        # -- pass 1: the columns from word w_k into the unit; its means into the means memory ------------------
        walk = reader.i_walk
        walk_pending = Signal()
        second = Signal()  # the walk pending is the second pass's
        m.d.comb += [walk.valid.eq(walk_pending), walk.payload.buffer.eq(op.src), walk.payload.row0.eq(op.start),
                     walk.payload.rows.eq(op.n), walk.payload.word0.eq(Mux(second & ~in_place, 0, first)),
                     walk.payload.words.eq(Mux(second & ~in_place, words, words - first))]
        with m.If(walk.ready):
            m.d.sync += walk_pending.eq(0)
        cmd_pending = Signal()
        m.d.comb += [unit.i_cmd.valid.eq(cmd_pending), unit.i_cmd.payload.n_tokens.eq(op.n),
                     unit.i_cmd.payload.channels.eq(op.m - (first << lane_bits))]
        with m.If(unit.i_cmd.ready):
            m.d.sync += cmd_pending.eq(0)
        with m.If((state == _CHECK) & ~fault & (op.n != 0)):
            m.d.sync += [walk_pending.eq(1), cmd_pending.eq(1), second.eq(0)]

        src = reader.o_word
        feeding = state == _MEANS
        m.d.comb += [unit.i_stream.valid.eq(src.valid & feeding)]
        for i in range(lanes):
            m.d.comb += unit.i_stream.payload[i].eq(src.payload.data[i])

        depth = -(-p.c_max // lanes)
        m.submodules.means = means = Memory(shape=data.ArrayLayout(p.in_layout.elem_shape, lanes), depth=depth, init=[])
        mw, mr = means.write_port(), means.read_port()
        mean_addr = Signal(range(depth))
        out = unit.o_stream
        m.d.comb += [out.ready.eq(1), mw.en.eq(out.valid), mw.addr.eq(mean_addr), mw.data.eq(out.payload.data)]
        with m.If(state == _CHECK):
            m.d.sync += mean_addr.eq(first)
        with m.If(out.valid):
            m.d.sync += mean_addr.eq(mean_addr + 1)
            with m.If(out.payload.last):
                m.d.sync += [state.eq(_WRITE), walk_pending.eq(1), second.eq(1)]

        # -- pass 2: each word merged with its means and written -------------------------------------------------
        m.d.comb += src.ready.eq(feeding & unit.i_stream.ready | (state == _WRITE))
        popped = src.valid & (state == _WRITE)
        row = Signal(cfg.row_bits)
        w = Signal(cfg.word_bits + 1)           # the popped word's index in the row (absolute)
        w_next = Signal.like(w)                 # ... in the next cycle
        # the means memory is read a cycle ahead, at w_next, and its word registered behind the block RAM (whose
        # clock-to-out leaves no room for the merge and the buffers' port multiplexer): the registered word is
        # the mean of the word popped a cycle before, as a read at w would give straight from the RAM. w_next
        # is a multiplexer over registers only (w + 1, the row's first word, whether w is the row's last), so the
        # read address does not wait on an adder or a compare
        mean_q = Signal.like(mr.data)
        w_plus1, w_last = Signal.like(w), Signal()
        wrap, wrap_plus1, wrap_last = Signal.like(w), Signal.like(w), Signal()   # the row's first word
        words_m1 = Signal.like(words)
        m.d.comb += [w_next.eq(w), mr.addr.eq(w_next), mr.en.eq(1)]
        m.d.sync += [w.eq(w_next), mean_q.eq(mr.data)]
        with m.If(state == _CHECK):
            m.d.sync += [row.eq(0), wrap.eq(Mux(in_place_op, first, 0)), wrap_plus1.eq(Mux(in_place_op, first + 1, 1)),
                         words_m1.eq(words - 1)]
            m.d.comb += w_next.eq(0)
        with m.If(state == _MEANS):
            m.d.comb += w_next.eq(wrap)
            # wrap_last follows wrap a cycle later: MEANS lasts longer than that (the walk's start and read)
            m.d.sync += [w_plus1.eq(wrap_plus1), w_last.eq(wrap_last), wrap_last.eq(wrap == words_m1)]
        # the word, where its columns k and m fall, registered beside the means memory's read
        word = Signal(data.ArrayLayout(src.payload.data.shape().elem_shape, lanes))
        valid, last, at_k, above_k, at_end = Signal(), Signal(), Signal(), Signal(), Signal()
        w_row = Signal(cfg.row_bits)
        w_word = Signal.like(w)
        m.d.sync += [valid.eq(popped), word.eq(src.payload.data), last.eq(src.payload.last), w_row.eq(row),
                     w_word.eq(w), at_k.eq(w == first), above_k.eq(w > first), at_end.eq(w_last)]
        with m.If(popped):
            with m.If(w_last):
                m.d.comb += w_next.eq(wrap)
                m.d.sync += [row.eq(row + 1), w_plus1.eq(wrap_plus1), w_last.eq(wrap_last)]
            with m.Else():
                m.d.comb += w_next.eq(w_plus1)
                m.d.sync += [w_plus1.eq(w_plus1 + 1), w_last.eq(w_plus1 == words_m1)]
        k_lane = op.k[:lane_bits] if lane_bits else Const(0, 1)
        m_lane = (op.m - 1)[:lane_bits] if lane_bits else Const(0, 1)
        m.d.comb += [self.wr.en.eq(valid), self.wr.buffer.eq(op.dst), self.wr.tile.eq(w_row >> bank_bits),
                     self.wr.word.eq(w_word)]
        for i in range(lanes):
            mean_col = above_k | (at_k & (i >= k_lane))
            live = ~at_end | (i <= m_lane)
            for bank in range(cfg.banks):
                m.d.comb += [self.wr.data[bank][i].eq(Mux(mean_col, mean_q[i], word[i])),
                             self.wr.mask[bank][i].eq((w_row[:bank_bits] == bank if bank_bits else 1) & live &
                                                      (mean_col | ~in_place))]
        with m.If(valid & last):
            m.d.sync += state.eq(_IDLE)
            self.finish(m, rows=op.n)
        m.d.comb += self.overflows.eq(0)  # a mean of codes always fits them
        return m
