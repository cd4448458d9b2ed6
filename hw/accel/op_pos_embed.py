"""The ``POS_EMBED`` engine: ``dst`` rows ``1 .. p`` = ``fit(dst rows 1 .. p + pos)`` on the residual adder
(:class:`tokensift.hw.vector.residual.ResidualAdd`), ``dst`` row 0 = ``cls``, both arrays streamed from the
instruction's POS record at ``memory_base + addr_a`` (:mod:`tokensift.quant.accel.records`: the header, the
scalars ``patches``, ``dim``, ``bits``, then ``cls`` and ``pos`` as int16 arrays).

The record is one DRAM read: its header and scalars are checked as they arrive (before any array value), then
its int16 values are cut into chunks of ``gcd(4, lanes)`` values (a 64-bit slot holds four), one chunk per
cycle, and packed into words of ``lanes``: the ``cls`` words are written to row 0 as they complete, the ``pos``
words are added to ``dst`` rows ``1 .. p`` streamed from the read port (the sums written back in place: the
writes trail the reads). ``rows`` answers ``p + 1``; the sequencer resets the protected count, the index and
the attention buffers' counts itself, as the reference does.

A fault (``done`` with ``fault``, nothing written): ``k`` (the patches) or ``m`` (the width) is 0, ``m`` is
beyond the destination's columns or not whole words of ``lanes``, the destination is not a residual buffer,
``dst``'s run-time row count ``n`` is not ``k + 1``, ``arg`` is not the residual width the adder was generated
for, the record is not aligned on the bus or longer than one command moves, its tag or length word is not a POS
record of that size, its ``patches``, ``dim`` or ``bits`` differ from ``k``, ``m``, ``arg``, or its header came
back with a read error (a header fault drains the rest of the read first). A read error in the arrays is a
fault too, flagged with ``done`` after the writes. The arrays' values are ``bits``-bit codes, as the compiler
writes them (they enter the adder in that width).
"""

from __future__ import annotations

import math

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.utils import ceil_log2

from tokensift.hw.accel.config import AccelConfig
from tokensift.hw.accel.ports import OpEngine, check_config
from tokensift.hw.accel.rows import RecordSlots, RowReader, buffer_fits, record_cycles, slot_wrong, words_of
from tokensift.hw.vector.residual import LATENCY as ADD_LATENCY
from tokensift.hw.vector.residual import ResidualAdd, ResidualParams
from tokensift.quant.accel.isa import Buffer
from tokensift.quant.accel.records import RECORD_HEADER, SCHEMAS, Tag
from tokensift.quant.fixed import FixedFormat

__all__ = ["PosEmbedEngine", "record_bytes", "chunk_values", "cycles"]

_SCALARS = SCHEMAS[Tag.POSITION].scalars
#: the slot of the first array value (``cls``): the header's two slots, then one per scalar
_ARRAYS_SLOT = RECORD_HEADER // 8 + len(_SCALARS)
_RESIDUAL = (Buffer.X, Buffer.T)


def record_bytes(patches: int, dim: int) -> int:
    """Bytes of a POS record of ``patches`` x ``dim`` (what the engine asks the DRAM for)."""
    return 8 * (_ARRAYS_SLOT + -(-dim // 4) + -(-patches * dim // 4))


def chunk_values(cfg: AccelConfig) -> int:
    """Values moved per cycle from a 64-bit slot into a word of ``lanes``: ``gcd(4, lanes)``."""
    return math.gcd(4, cfg.lanes)


def cycles(cfg: AccelConfig, *, patches: int, dim: int, dram_latency: int) -> int:
    """Cycles from ``start`` to ``done`` of a position embedding of ``patches`` x ``dim``, the DRAM answering
    the record's read ``dram_latency`` cycles after its handshake with no gaps (the only term that depends on
    it).

    The read is requested four cycles after ``start`` (the checks, then the record's size: a registered
    multiplication and a sum); its header and scalars take a slot per cycle (two on a 4-byte bus), its values
    one chunk of :func:`chunk_values` per cycle: ``ceil(dim / 4)`` slots of ``cls`` then ``patches * dim / g``
    chunks of ``pos`` (whichever of the chunks and the bus is slower paces the stream), the last sum written
    through the adder's pipeline."""
    check_config(cfg, "cfg")
    g = chunk_values(cfg)
    pace = max(4 // g, 2 if cfg.axi.data_bytes == 4 else 1)   # cycles per slot of values
    slots = -(-dim // 4) + -(-patches * dim // 4)
    tail = (patches * dim - 1) % 4 // g + 1                     # chunks of the last slot up to the last value
    header = record_cycles(cfg, 8 * _ARRAYS_SLOT, dram_latency) + 2
    return header + (slots - 1) * pace + tail + 3 + ADD_LATENCY


class PosEmbedEngine(OpEngine):
    """See the module docstring; ports as :func:`tokensift.hw.accel.ports.engine_signature` (a DRAM read
    channel, no second read port)."""

    def __init__(self, *, config: AccelConfig):
        super().__init__(config=config)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        env = cfg.envelope
        lanes = cfg.lanes
        g = chunk_values(cfg)
        per_word = lanes // g          # chunks per word
        per_slot = 4 // g              # chunks per slot
        m.submodules.reader = reader = RowReader(config=cfg)
        m.submodules.slots = slots = RecordSlots(config=cfg)
        m.submodules.add = add = ResidualAdd(params=ResidualParams(lanes=lanes, res=FixedFormat(bits=env.res_bits)))
        wiring.connect(m, reader.rd, wiring.flipped(self.rd))
        wiring.connect(m, wiring.flipped(self.dram_data), slots.i_word)
        m.d.comb += [add.i_x.valid.eq(reader.o_word.valid), reader.o_word.ready.eq(add.i_x.ready)]
        for i in range(lanes):
            m.d.comb += add.i_x.payload[i].eq(reader.o_word.payload.data[i])

        op = self.latch_op(m)
        addr = Signal.like(self.op.memory_base)
        with m.If(self.start):
            m.d.sync += addr.eq(self.op.memory_base + self.op.addr_a)
        # the record's size: a registered product, then the sum (the command waits for both)
        values = Signal(32)             # patches x dim
        cls_slots = Signal(15)
        length = Signal(36)
        words = Signal(cfg.word_bits + 1)
        m.d.sync += [values.eq(op.k * op.m), cls_slots.eq((op.m + 3) >> 2), words.eq(words_of(op.m, lanes)),
                     length.eq((_ARRAYS_SLOT + cls_slots + ((values + 3) >> 2)) << 3)]
        checked = Signal()
        sized = Signal(2)
        m.d.sync += [checked.eq(self.start), sized.eq(Cat(checked, sized[0]))]
        align = max(8, cfg.axi.data_bytes)
        lanes_bits = ceil_log2(lanes)
        whole_words = (op.m[:lanes_bits] == 0) if lanes & (lanes - 1) == 0 else (words * lanes == op.m)
        # the checks on the op's fields registered (valid two cycles after ``start``, used a cycle later): only
        # the record length's, which comes last, is left to the state machine's branch
        bad_fields = Signal()
        m.d.sync += bad_fields.eq((op.k == 0) | (op.m == 0) | ~buffer_fits(cfg, op.dst, op.m, _RESIDUAL) |
                                  ~whole_words | (op.n != op.k + 1) | (op.arg != env.res_bits) |
                                  (addr[:ceil_log2(align)] != 0))
        bad_op = bad_fields | (length[cfg.axi.length_bits:] != 0)

        slot = slots.o_slot
        s = Signal(range(_ARRAYS_SLOT + 1))
        bad = Signal()
        walk_valid = Signal()
        m.d.comb += [reader.i_walk.valid.eq(walk_valid), reader.i_walk.payload.buffer.eq(op.dst),
                     reader.i_walk.payload.row0.eq(1), reader.i_walk.payload.rows.eq(op.k),
                     reader.i_walk.payload.word0.eq(0), reader.i_walk.payload.words.eq(words)]
        m.d.sync += walk_valid.eq(0)
        streaming = Signal()            # the array slots go to the chunker
        stream_done = Signal()
        sums_done = Signal()
        index = {name: RECORD_HEADER // 8 + i for i, name in enumerate(_SCALARS)}
        with m.FSM():
            with m.State("idle"):
                with m.If(sized[1]):
                    with m.If(bad_op):
                        self.finish(m, fault=True)
                    with m.Else():
                        m.d.sync += [s.eq(0), bad.eq(0)]
                        m.next = "request"
            with m.State("request"):
                with m.If(self.request(m, addr=addr, length=length)):
                    m.next = "header"
            with m.State("header"):
                m.d.comb += slot.ready.eq(1)
                with m.If(slot.valid):
                    wrong = slot_wrong(slot, s, tag=Tag.POSITION, length=length,
                                       equal={index["patches"]: op.k, index["dim"]: op.m, index["bits"]: op.arg})
                    m.d.sync += s.eq(s + 1)
                    with m.If(wrong):
                        m.d.sync += bad.eq(1)
                    with m.If(slot.payload.last):
                        m.next = "fault"
                    with m.Elif(s == _ARRAYS_SLOT - 1):
                        m.next = "decide"
            with m.State("decide"):
                with m.If(bad):
                    m.next = "drain"
                with m.Else():
                    m.d.sync += [walk_valid.eq(1), streaming.eq(1), stream_done.eq(0), sums_done.eq(0)]
                    m.next = "arrays"
            with m.State("drain"):
                m.d.comb += slot.ready.eq(1)
                with m.If(slot.valid & slot.payload.last):
                    m.next = "fault"
            with m.State("fault"):
                self.finish(m, fault=True)
                m.next = "idle"
            with m.State("arrays"):
                with m.If(stream_done & sums_done):
                    m.d.sync += [self.done.eq(1), self.fault.eq(bad), self.rows.eq(op.n), streaming.eq(0)]
                    m.next = "idle"

        # the chunker: a slot's four values, ``g`` per cycle, ``cls`` chunks then ``pos`` chunks; the last slot of
        # each array keeps only its values (the padding after them is dropped), a mask set when it is taken
        held = Signal(64)
        present = Signal(per_slot)                # chunks of the held slot still to go (a prefix)
        values_mask = Signal(per_slot)            # which of them are values
        held_last = Signal()
        in_cls = Signal()                         # the held slot is one of ``cls``'s
        slot_count = Signal(15)                   # array slots taken
        tails = {"cls": (Signal(per_slot, name="cls_tail"), op.m[:2]),
                 "pos": (Signal(per_slot, name="pos_tail"), values[:2])}
        for tail, used in tails.values():         # the values in an array's last slot: its size mod 4, or 4
            with m.Switch(used):
                for r in range(4):
                    with m.Case(r):
                        m.d.sync += tail.eq((1 << (r // g if r else per_slot)) - 1)
        chunk = held[:16 * g]
        keep = values_mask[0]
        final = (present[1:] == 0) if per_slot > 1 else 1

        # the packer: chunks fill ``acc``; a complete word moves to ``word`` (a register), tagged cls or pos
        acc = Signal(16 * lanes)
        pos_in_word = Signal(range(per_word))
        word = Signal(16 * lanes)
        word_valid = Signal()
        word_cls = Signal()
        word_taken = Signal()
        completing = keep & (pos_in_word == per_word - 1)
        go = Signal()
        m.d.comb += go.eq(present[0] & (~completing | ~word_valid | word_taken))
        with m.If(go):
            m.d.sync += [held.eq(held >> (16 * g)), present.eq(present >> 1), values_mask.eq(values_mask >> 1)]
            with m.If(keep):
                for p in range(per_word):
                    with m.If(pos_in_word == p):
                        m.d.sync += acc[16 * g * p:16 * g * (p + 1)].eq(chunk)
                with m.If(completing):
                    m.d.sync += [pos_in_word.eq(0), word_valid.eq(1), word_cls.eq(in_cls),
                                 word.eq(Cat(acc[:16 * (lanes - g)], chunk))]
                with m.Else():
                    m.d.sync += pos_in_word.eq(pos_in_word + 1)
            with m.If(final & held_last):
                m.d.sync += stream_done.eq(1)
        with m.If(word_taken & ~(go & completing)):
            m.d.sync += word_valid.eq(0)
        # a new slot when the held one is spent (or spending its last chunk)
        with m.If(streaming):
            m.d.comb += slot.ready.eq(~present[0] | (go & final))
        with m.If(slot.valid & slot.ready & streaming):
            m.d.sync += [held.eq(slot.payload.data), present.eq((1 << per_slot) - 1), held_last.eq(slot.payload.last),
                         slot_count.eq(slot_count + 1), in_cls.eq(slot_count < cls_slots),
                         values_mask.eq(Mux(slot_count == cls_slots - 1, tails["cls"][0],
                                            Mux(slot.payload.last, tails["pos"][0], (1 << per_slot) - 1)))]
            with m.If(slot.payload.error):
                m.d.sync += bad.eq(1)
        with m.If(~streaming):
            m.d.sync += [slot_count.eq(0), pos_in_word.eq(0)]

        # the writes: a cls word to row 0, a sum to its row 1 .. p (never in the same cycle: every cls word
        # leaves before the first pos word reaches the adder)
        for i in range(lanes):
            m.d.comb += add.i_y.payload[i].eq(word[16 * i:16 * (i + 1)].as_signed())
        m.d.comb += add.i_y.valid.eq(word_valid & ~word_cls)
        write_cls = word_valid & word_cls
        m.d.comb += word_taken.eq(write_cls | add.i_y.ready)
        cls_w = Signal(cfg.word_bits + 1)
        row = Signal(cfg.row_bits)
        w = Signal(cfg.word_bits + 1)
        out = add.o_stream
        bank_bits = ceil_log2(cfg.banks)
        m.d.comb += [out.ready.eq(1), self.wr.en.eq(write_cls | out.valid), self.wr.buffer.eq(op.dst),
                     self.wr.tile.eq(Mux(write_cls, 0, row >> bank_bits)), self.wr.word.eq(Mux(write_cls, cls_w, w))]
        for bank in range(cfg.banks):
            for i in range(lanes):
                m.d.comb += [self.wr.data[bank][i].eq(Mux(write_cls, word[16 * i:16 * (i + 1)].as_signed(),
                                                          out.payload.data[i])),
                             self.wr.mask[bank][i].eq(Mux(write_cls, bank == 0,
                                                          row[:bank_bits] == bank if bank_bits else 1))]
        with m.If(write_cls):
            m.d.sync += cls_w.eq(cls_w + 1)
        with m.If(out.valid):
            with m.If(w + 1 == words):
                m.d.sync += [w.eq(0), row.eq(row + 1)]
                with m.If(row == op.k):
                    m.d.sync += sums_done.eq(1)
            with m.Else():
                m.d.sync += w.eq(w + 1)
        with m.If(~streaming):
            m.d.sync += [cls_w.eq(0), row.eq(1), w.eq(0)]
        self.count_overflows(m, add.overflows)
        return m
