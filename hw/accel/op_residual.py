"""The ``RESIDUAL_ADD`` engine: ``dst = fit(src + src2)`` row by row on the residual adder
(:class:`tokensift.hw.vector.residual.ResidualAdd`), both operands streamed from the token buffers at one word
per cycle (``src`` on the read port, ``src2`` on the second read port), the sums written back as they leave.

A fault (``done`` at once, nothing written): the operands' row counts differ or are 0, ``m`` is beyond a
buffer's columns, or ``arg`` is not the residual width the adder was generated for.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring

from tokensift.hw.accel.config import AccelConfig
from tokensift.hw.accel.ports import READ_LATENCY, OpEngine, check_config
from tokensift.hw.accel.rows import RowReader, words_of, write_rows
from tokensift.hw.vector.residual import ResidualAdd, ResidualParams
from tokensift.quant.accel.isa import Buffer
from tokensift.quant.fixed import FixedFormat

__all__ = ["ResidualEngine", "cycles"]


def cycles(cfg: AccelConfig, *, n: int, m: int) -> int:
    """Cycles from ``start`` to ``done`` of a well-formed op over ``n`` rows of ``m`` columns (no DRAM): the
    registered checks and the walks' start, the read port's latency (:data:`READ_LATENCY`) and the readers'
    FIFOs, the adder's pipeline and the last write (6 more), then ``n`` rows of ``ceil(m / lanes)`` words at one
    per cycle."""
    check_config(cfg, "cfg")
    return n * -(-m // cfg.lanes) + READ_LATENCY + 6


class ResidualEngine(OpEngine):
    """See the module docstring; ports as :func:`tokensift.hw.accel.ports.engine_signature` (with ``rd2``,
    no DRAM channel)."""

    def __init__(self, *, config: AccelConfig):
        super().__init__(config=config, second_read=True, dram=False)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        env = cfg.envelope
        lanes = cfg.lanes
        m.submodules.x = x = RowReader(config=cfg)
        m.submodules.y = y = RowReader(config=cfg)
        m.submodules.add = add = ResidualAdd(params=ResidualParams(lanes=lanes, res=FixedFormat(bits=env.res_bits)))
        wiring.connect(m, x.rd, wiring.flipped(self.rd))
        wiring.connect(m, y.rd, wiring.flipped(self.rd2))
        m.d.comb += [add.i_x.valid.eq(x.o_word.valid), x.o_word.ready.eq(add.i_x.ready),
                     add.i_y.valid.eq(y.o_word.valid), y.o_word.ready.eq(add.i_y.ready)]
        for i in range(lanes):
            m.d.comb += [add.i_x.payload[i].eq(x.o_word.payload.data[i]),
                         add.i_y.payload[i].eq(y.o_word.payload.data[i])]

        op = self.latch_op(m)
        words = Signal(cfg.word_bits + 1)
        # the checks of a new op are registered: the walk starts one cycle after ``start``
        checked = Signal()
        m.d.sync += checked.eq(self.start)
        widest = min(cfg.geometry(Buffer.X).cols, cfg.geometry(Buffer.T).cols)
        # ... from the op as it arrives, into a register beside the latched op: the walks' valid and the fault's
        # done start at a flip-flop, not at a tree of compares
        new = self.op
        fault = Signal()
        with m.If(self.start):
            m.d.sync += fault.eq((new.n == 0) | (new.n != new.n2) | (new.m == 0) | (new.m > widest) |
                                 (new.arg != env.res_bits) | (new.src == new.src2) |
                                 ~_is_residual(new.src) | ~_is_residual(new.dst) | (new.src2 != Buffer.T))
        with m.If(checked & fault):
            self.finish(m, fault=True)
        m.d.comb += words.eq(words_of(op.m, lanes))
        for reader, buf in ((x, op.src), (y, op.src2)):
            m.d.comb += [reader.i_walk.valid.eq(checked & ~fault), reader.i_walk.payload.buffer.eq(buf),
                         reader.i_walk.payload.row0.eq(0), reader.i_walk.payload.rows.eq(op.n),
                         reader.i_walk.payload.word0.eq(0), reader.i_walk.payload.words.eq(words)]

        # the sums, written in the order they were read
        with m.If(write_rows(m, cfg, self.wr, add.o_stream, buffer=op.dst, cols=op.m, words=words, rows=op.n)):
            self.finish(m, rows=op.n)
        self.count_overflows(m, add.overflows)
        return m


def _is_residual(b):
    return (b == Buffer.X) | (b == Buffer.T)
