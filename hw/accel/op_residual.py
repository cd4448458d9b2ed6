"""The ``RESIDUAL_ADD`` engine: ``dst = fit(src + src2)`` row by row on the residual adder
(:class:`tokensift.hw.vector.residual.ResidualAdd`), both operands streamed from the token buffers at one word
per cycle (``src`` on the read port, ``src2`` on the second read port), the sums written back as they leave.

A fault (``done`` at once, nothing written): the operands' row counts differ or are 0, ``m`` is beyond a
buffer's columns, or ``arg`` is not the residual width the adder was generated for.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.utils import ceil_log2

from tokensift.hw.accel.config import AccelConfig
from tokensift.hw.accel.ports import engine_signature
from tokensift.hw.accel.rows import RowReader, words_of
from tokensift.hw.vector.residual import ResidualAdd, ResidualParams
from tokensift.quant.accel.isa import Buffer
from tokensift.quant.fixed import FixedFormat

__all__ = ["ResidualEngine"]


class ResidualEngine(wiring.Component):
    """See the module docstring; ports as :func:`tokensift.hw.accel.ports.engine_signature` (with ``rd2``,
    no DRAM channel)."""

    def __init__(self, *, config: AccelConfig):
        if not isinstance(config, AccelConfig):
            raise TypeError(f"config must be an AccelConfig, not {type(config).__name__}")
        self._cfg = config
        super().__init__(engine_signature(config, second_read=True, dram=False))

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
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

        op = Signal.like(self.op)
        words = Signal(cfg.word_bits + 1)
        running = Signal()
        with m.If(self.start):
            m.d.sync += op.eq(self.op)
        # the checks of a new op are registered: the walk starts one cycle after ``start``
        checked = Signal()
        m.d.sync += checked.eq(self.start)
        widest = min(cfg.geometry(Buffer.X).cols, cfg.geometry(Buffer.T).cols)
        fault = Signal()
        m.d.comb += fault.eq((op.n == 0) | (op.n != op.n2) | (op.m == 0) | (op.m > widest) |
                             (op.arg != env.res_bits) | (op.src == op.src2) |
                             ~_is_residual(op.src) | ~_is_residual(op.dst) | (op.src2 != Buffer.T))
        m.d.sync += [self.done.eq(0), self.fault.eq(0)]
        with m.If(checked):
            with m.If(fault):
                m.d.sync += [self.done.eq(1), self.fault.eq(1), self.rows.eq(0)]
            with m.Else():
                m.d.sync += running.eq(1)
        m.d.comb += words.eq(words_of(op.m, lanes))
        for reader, buf in ((x, op.src), (y, op.src2)):
            m.d.comb += [reader.i_walk.valid.eq(checked & ~fault), reader.i_walk.payload.buffer.eq(buf),
                         reader.i_walk.payload.row0.eq(0), reader.i_walk.payload.rows.eq(op.n),
                         reader.i_walk.payload.word0.eq(0), reader.i_walk.payload.words.eq(words)]

        # the sums, written in the order they were read
        row = Signal(cfg.row_bits)
        w = Signal(cfg.word_bits + 1)
        out = add.o_stream
        bank_bits = ceil_log2(cfg.banks)
        m.d.comb += [out.ready.eq(1), self.wr.buffer.eq(op.dst), self.wr.tile.eq(row >> bank_bits),
                     self.wr.word.eq(w), self.wr.en.eq(out.valid)]
        cols_left = Signal(signed(18))
        m.d.comb += cols_left.eq(op.m - w * lanes)
        for bank in range(cfg.banks):
            for i in range(lanes):
                m.d.comb += [self.wr.data[bank][i].eq(out.payload.data[i]),
                             self.wr.mask[bank][i].eq((row[:bank_bits] == bank if bank_bits else 1) &
                                                      (cols_left > i))]
        with m.If(out.valid):
            with m.If(w + 1 == words):
                m.d.sync += [w.eq(0), row.eq(row + 1)]
                with m.If(row + 1 == op.n):
                    m.d.sync += [running.eq(0), self.done.eq(1), self.rows.eq(op.n), row.eq(0)]
            with m.Else():
                m.d.sync += w.eq(w + 1)
        m.d.comb += self.overflows.eq(add.overflows[:16] | (add.overflows[16:] != 0).replicate(16))
        return m


def _is_residual(b):
    return (b == Buffer.X) | (b == Buffer.T)
