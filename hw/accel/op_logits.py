"""The ``WRITE_LOGITS`` engine: row 0 of ``src``, ``m`` int16 logits, written to the DRAM at ``logits_base``.

The engine contract has a DRAM read channel only, so this engine has its own write channel, the
:class:`~tokensift.hw.axi.writer.AxiWriter`'s streams as they are (the integrator connects them straight to
it): ``dram_wcmd`` (its ``i_cmd``: byte ``addr``, ``length``), ``dram_wdata`` (its ``i_data``: one bus word,
byte 0 in bits 7..0) and ``dram_wdone`` (its ``o_done``: ``error``).

One command of ``2 m`` bytes; the row is read at one word per cycle and its values are moved
``gcd(lanes, data_bytes / 2)`` per cycle into bus words (the low 16 bits of each, as the reference's
``astype('<i2')``), the last word zero past the logits (the writer's strobes leave those bytes alone).
``done`` comes after the writer's ``o_done``; ``rows`` answers 1, the row written.

A fault (``done`` with ``fault``, nothing written): ``m`` is not the envelope's classes or beyond the
source's columns, ``arg`` is not 16, the source holds no rows, or ``logits_base`` is not aligned to the bus
word; also (after the write) the writer's ``o_done`` reports a write error.
"""

from __future__ import annotations

import math

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from tokensift.hw.accel.config import AccelConfig
from tokensift.hw.accel.ports import READ_LATENCY, OpEngine, check_config, engine_signature
from tokensift.hw.accel.rows import RowReader, buffer_fits, words_of
from tokensift.hw.axi.burst import command_layout
from tokensift.hw.axi.writer import data_layout, done_layout
from tokensift.quant.accel.isa import Buffer

__all__ = ["LogitsEngine", "logits_signature", "chunk_values", "cycles", "LOGIT_BITS"]

#: the width of a logit in the logits region
LOGIT_BITS = 16


def _write_channel(cfg: AccelConfig) -> dict:
    return {"dram_wcmd": Out(stream.Signature(command_layout(cfg.axi))),
            "dram_wdata": Out(stream.Signature(data_layout(cfg.axi))),
            "dram_wdone": In(stream.Signature(done_layout()))}


def logits_signature(cfg: AccelConfig) -> wiring.Signature:
    """:func:`~tokensift.hw.accel.ports.engine_signature` without a read channel, plus the write channel."""
    return wiring.Signature({**engine_signature(cfg, dram=False).members, **_write_channel(cfg)})


def chunk_values(cfg: AccelConfig) -> int:
    """Logits moved per cycle from a buffer word into a bus word: ``gcd(lanes, data_bytes / 2)``."""
    return math.gcd(cfg.lanes, cfg.axi.data_bytes // 2)


def cycles(cfg: AccelConfig, *, m: int, done_latency: int) -> int:
    """Cycles from ``start`` to ``done`` of ``m`` logits, the writer taking every bus word at once and
    answering ``o_done`` ``done_latency`` cycles after the last one's handshake (the only term that depends
    on the DRAM: an :class:`~tokensift.hw.axi.writer.AxiWriter`'s burst and response time).

    The checks (two cycles), the walk's start and the read port's latency, the reader's FIFO; then the row's
    ``ceil(m / g)`` chunks of :func:`chunk_values` at one per cycle (the last word's tail past ``m`` dropped
    at once); the last bus word registered and taken; the response, then ``done`` registered."""
    check_config(cfg, "cfg")
    g = chunk_values(cfg)
    chunks = -(-m // g)
    return 9 + READ_LATENCY + chunks + done_latency


class LogitsEngine(OpEngine):
    """See the module docstring; ports as :func:`logits_signature`."""

    def __init__(self, *, config: AccelConfig):
        super().__init__(config=check_config(config), dram=False, members=_write_channel(config))

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        lanes = cfg.lanes
        g = chunk_values(cfg)
        per_word = lanes // g                       # chunks per buffer word
        per_bus = cfg.axi.data_bytes // (2 * g)     # chunks per bus word
        m.submodules.reader = reader = RowReader(config=cfg)
        wiring.connect(m, reader.rd, wiring.flipped(self.rd))

        op = self.latch_op(m)
        words = Signal(cfg.word_bits + 1)
        chunks = Signal(16)
        m.d.sync += [words.eq(words_of(op.m, lanes)), chunks.eq((op.m + g - 1) >> ceil_log2(g))]
        checked = Signal(2)
        m.d.sync += checked.eq(Cat(self.start, checked[0]))
        bad_op = Signal()
        m.d.comb += bad_op.eq((op.m != cfg.envelope.classes) | (op.arg != LOGIT_BITS) | (op.n == 0) |
                              ~buffer_fits(cfg, op.src, op.m, tuple(Buffer)) |
                              (op.logits_base[:ceil_log2(cfg.axi.data_bytes)] != 0))

        walk_valid = Signal()
        m.d.sync += walk_valid.eq(0)
        m.d.comb += [reader.i_walk.valid.eq(walk_valid), reader.i_walk.payload.buffer.eq(op.src),
                     reader.i_walk.payload.row0.eq(0), reader.i_walk.payload.rows.eq(1),
                     reader.i_walk.payload.word0.eq(0), reader.i_walk.payload.words.eq(words)]
        cmd_sent = Signal()
        data_out = Signal()
        held = Signal(16 * lanes)                   # the buffer word being cut
        held_left = Signal(range(per_word + 1))     # its chunks still to go
        m.d.comb += [self.dram_wcmd.payload.addr.eq(op.logits_base), self.dram_wcmd.payload.length.eq(op.m << 1)]
        with m.If(self.dram_wcmd.valid & self.dram_wcmd.ready):
            m.d.sync += [self.dram_wcmd.valid.eq(0), cmd_sent.eq(1)]
        with m.FSM():
            with m.State("idle"):
                with m.If(checked[1]):
                    with m.If(bad_op):
                        self.finish(m, fault=True)
                    with m.Else():
                        m.d.sync += [walk_valid.eq(1), self.dram_wcmd.valid.eq(1), cmd_sent.eq(0)]
                        m.next = "write"
            with m.State("write"):
                m.d.comb += self.dram_wdone.ready.eq(cmd_sent & data_out & (held_left == 0) & ~reader.busy)
                with m.If(self.dram_wdone.valid & self.dram_wdone.ready):
                    m.d.sync += [self.done.eq(1), self.fault.eq(self.dram_wdone.payload.error), self.rows.eq(1)]
                    m.next = "idle"

        # a buffer word's logits, ``g`` per cycle, into bus words (the chunks past ``m`` dropped)
        kept = Signal(16)
        acc = Signal(8 * cfg.axi.data_bytes)
        at = Signal(range(per_bus))
        bus = self.dram_wdata
        # ``kept < chunks`` and ``kept + 1 == chunks`` as registers, set a cycle ahead: compared on the way,
        # they would put two carry chains in front of every register ``go`` enables
        keep = Signal()
        final = Signal()
        completing = keep & ((at == per_bus - 1) | final)
        go = Signal()
        m.d.comb += go.eq((held_left != 0) & (~completing | ~bus.valid | bus.ready))
        chunk = held[:16 * g]
        with m.If(bus.valid & bus.ready):
            m.d.sync += bus.valid.eq(0)
        with m.If(go):
            # past the last logit, the rest of the (last) word goes at once
            m.d.sync += [held.eq(held >> (16 * g)), held_left.eq(Mux(keep, held_left - 1, 0))]
            with m.If(keep):
                m.d.sync += [kept.eq(kept + 1), keep.eq(~final), final.eq(kept + 2 == chunks)]
                with m.If(completing):
                    # the bus word: the chunks so far, this one at its place, zeros after it (``acc`` is
                    # cleared with every word)
                    m.d.sync += [bus.payload.data.eq(Cat(*(Mux(at == p, chunk, acc[16 * g * p:16 * g * (p + 1)])
                                                           for p in range(per_bus)))),
                                 acc.eq(0), at.eq(0), bus.valid.eq(1)]
                    with m.If(final):
                        m.d.sync += data_out.eq(1)
                with m.Else():
                    for p in range(per_bus):
                        with m.If(at == p):
                            m.d.sync += acc[16 * g * p:16 * g * (p + 1)].eq(chunk)
                    m.d.sync += at.eq(at + 1)
        word = reader.o_word
        m.d.comb += word.ready.eq((held_left == 0) | (go & ((held_left == 1) | ~keep)))
        with m.If(word.valid & word.ready):
            m.d.sync += [held.eq(Cat(*(word.payload.data[i][:16] for i in range(lanes)))), held_left.eq(per_word)]
        with m.If(checked[1]):
            m.d.sync += [kept.eq(0), keep.eq(chunks != 0), final.eq(chunks == 1), at.eq(0), data_out.eq(0)]
        m.d.comb += self.overflows.eq(0)
        return m
