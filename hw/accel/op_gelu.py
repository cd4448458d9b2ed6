"""The ``GELU`` engine: ``dst = gelu_int(src rows)`` on the GELU unit (:class:`tokensift.hw.vector.gelu.GeluUnit`).

The op's constants are the GELU record at ``memory_base + addr_a`` (:mod:`tokensift.quant.accel.records`),
fetched as one DRAM read of :data:`RECORD_BYTES` and loaded on the unit's ``i_cfg``; then the source rows
``start .. start + n - 1`` (the instruction's Rows mode, resolved by the sequencer), ``m`` columns, stream
through the unit at one word per cycle and are written to ``dst`` rows ``0 .. n - 1`` as they leave. In place
(``F -> F``, the MLP's GELU) is safe: the writes trail the reads, so a row is read before it is overwritten.

A fault (``done`` with ``fault``, nothing written): the source holds no rows (``n = 0`` from row 0), ``m`` is 0
or beyond the source's or the destination's columns, a source whose values do not fit the unit's inputs or a
destination that cannot hold its outputs, ``arg`` is not the unit's output width, the record is not 8-byte
aligned on the bus, its tag or length word is not a GELU record's, its ``out_bits`` is not ``arg``, its
``in_bits`` not the unit's, a constant does not fit the unit's ``i_cfg`` field, or the read came back with an
error. ``n = 0`` after the protected rows (no candidates) writes nothing and answers ``rows = 0``, as the
reference sequencer does.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.utils import ceil_log2

from tokensift.hw.accel.config import AccelConfig
from tokensift.hw.accel.ports import READ_LATENCY, OpEngine, check_config
from tokensift.hw.accel.rows import (
    RecordSlots,
    RowReader,
    buffer_fits,
    record_cycles,
    slot_wrong,
    words_of,
    write_rows,
)
from tokensift.hw.vector.gelu import LATENCY as GELU_LATENCY
from tokensift.hw.vector.gelu import GeluUnit, GeluUnitParams
from tokensift.quant.accel.isa import Buffer
from tokensift.quant.accel.records import SCHEMAS, Tag, record_size
from tokensift.quant.fixed import FixedFormat
from tokensift.quant.qparams import MULTIPLIER_BITS

__all__ = ["GeluEngine", "unit_params", "cycles", "RECORD_BYTES"]

_SCALARS = SCHEMAS[Tag.GELU].scalars
#: bytes of a GELU record (a header and seven int64 scalars, no arrays)
RECORD_BYTES = record_size(Tag.GELU, dict.fromkeys(_SCALARS, 0))


def unit_params(cfg: AccelConfig) -> GeluUnitParams:
    """The GELU unit of an accelerator: ``lanes`` codes per cycle, the MLP buffer's int8 codes in and out."""
    bits = cfg.geometry(Buffer.F).bits
    return GeluUnitParams(lanes=cfg.lanes, in_bits=bits, out=FixedFormat(bits=bits), multiplier_bits=MULTIPLIER_BITS)


def _sources(cfg: AccelConfig) -> tuple[Buffer, ...]:
    """Buffers whose values fit the unit's inputs."""
    bits = unit_params(cfg).in_bits
    return tuple(b for b in Buffer if cfg.geometry(b).signed and cfg.geometry(b).bits <= bits)


def _destinations(cfg: AccelConfig) -> tuple[Buffer, ...]:
    """Buffers that hold the unit's outputs."""
    bits = unit_params(cfg).out.bits
    return tuple(b for b in Buffer if cfg.geometry(b).signed and cfg.geometry(b).bits >= bits)


def cycles(cfg: AccelConfig, *, n: int, m: int, dram_latency: int) -> int:
    """Cycles from ``start`` to ``done`` of a GELU over ``n`` rows of ``m`` columns, the DRAM answering every
    command ``dram_latency`` cycles after its handshake with no gaps (the only term that depends on it).

    The record's read (:func:`~tokensift.hw.accel.rows.record_cycles`); the decision and the configuration
    beat; then ``n`` rows of ``ceil(m / lanes)`` words at one per cycle through the
    read port, the reader's FIFO and the unit's pipeline."""
    check_config(cfg, "cfg")
    words = -(-m // cfg.lanes)
    fetch = record_cycles(cfg, RECORD_BYTES, dram_latency)
    if n == 0:
        return fetch
    return fetch + 3 + READ_LATENCY + n * words + GELU_LATENCY


class GeluEngine(OpEngine):
    """See the module docstring; ports as :func:`tokensift.hw.accel.ports.engine_signature` (a DRAM read
    channel, no second read port)."""

    def __init__(self, *, config: AccelConfig):
        super().__init__(config=config)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        lanes = cfg.lanes
        params = unit_params(cfg)
        m.submodules.reader = reader = RowReader(config=cfg)
        m.submodules.slots = slots = RecordSlots(config=cfg)
        m.submodules.gelu = gelu = GeluUnit(params=params)
        wiring.connect(m, reader.rd, wiring.flipped(self.rd))
        wiring.connect(m, wiring.flipped(self.dram_data), slots.i_word)
        m.d.comb += [gelu.i_stream.valid.eq(reader.o_word.valid), reader.o_word.ready.eq(gelu.i_stream.ready)]
        for i in range(lanes):
            m.d.comb += gelu.i_stream.payload[i].eq(reader.o_word.payload.data[i])

        op = self.latch_op(m)
        addr = Signal.like(self.op.memory_base)
        words = Signal(cfg.word_bits + 1)
        with m.If(self.start):
            m.d.sync += addr.eq(self.op.memory_base + self.op.addr_a)
        m.d.sync += words.eq(words_of(op.m, lanes))
        # the instruction's checks are registered: the record is requested two cycles after ``start``
        checked = Signal()
        m.d.sync += checked.eq(self.start)
        align = max(8, cfg.axi.data_bytes)
        # ... from the op as it arrives, into a register: the state machine's branch starts at a flip-flop
        new = self.op
        bad_op = Signal()
        with m.If(self.start):
            low = ceil_log2(align)
            m.d.sync += bad_op.eq(((new.n == 0) & (new.start == 0)) | (new.m == 0) | (new.arg != params.out.bits) |
                                  ~buffer_fits(cfg, new.src, new.m, _sources(cfg)) |
                                  ~buffer_fits(cfg, new.dst, new.m, _destinations(cfg)) |
                                  ((new.memory_base[:low] + new.addr_a[:low])[:low] != 0))

        # the record's slots: the header, then one scalar per slot
        index = {name: 2 + i for i, name in enumerate(_SCALARS)}
        fields = {"pre_shift": 5, "clip": 17, "one": params.one_bits, "multiplier": params.multiplier_bits,
                  "shift": 6}
        slot = slots.o_slot
        s = Signal(range(RECORD_BYTES // 8 + 1))
        bad = Signal()
        cfg_beat = gelu.i_cfg.payload
        with m.FSM():
            with m.State("idle"):
                with m.If(checked):
                    with m.If(bad_op):
                        self.finish(m, fault=True)
                    with m.Else():
                        m.d.sync += [s.eq(0), bad.eq(0)]
                        m.next = "request"
            with m.State("request"):
                with m.If(self.request(m, addr=addr, length=RECORD_BYTES)):
                    m.next = "record"
            with m.State("record"):
                m.d.comb += slot.ready.eq(1)
                with m.If(slot.valid):
                    value = slot.payload.data
                    m.d.sync += s.eq(s + 1)
                    wrong = slot_wrong(slot, s, tag=Tag.GELU, length=RECORD_BYTES,
                                       equal={index["in_bits"]: params.in_bits, index["out_bits"]: op.arg})
                    for name, bits in fields.items():
                        wrong |= (s == index[name]) & (value[bits:] != 0)
                        with m.If(s == index[name]):
                            m.d.sync += cfg_beat[name].eq(value[:bits])
                    with m.If(wrong):
                        m.d.sync += bad.eq(1)
                    with m.If(slot.payload.last):
                        m.next = "decide"
            with m.State("decide"):
                with m.If(bad | (s != RECORD_BYTES // 8)):
                    self.finish(m, fault=True)
                    m.next = "idle"
                with m.Elif(op.n == 0):
                    self.finish(m)
                    m.next = "idle"
                with m.Else():
                    m.next = "configure"
            with m.State("configure"):
                # the unit takes a configuration once its pipeline is empty; the walk starts with it
                m.d.comb += [gelu.i_cfg.valid.eq(1), reader.i_walk.valid.eq(gelu.i_cfg.ready)]
                with m.If(gelu.i_cfg.ready):
                    m.next = "run"
            with m.State("run"):
                with m.If(self.done):
                    m.next = "idle"
        m.d.comb += [reader.i_walk.payload.buffer.eq(op.src), reader.i_walk.payload.row0.eq(op.start),
                     reader.i_walk.payload.rows.eq(op.n), reader.i_walk.payload.word0.eq(0),
                     reader.i_walk.payload.words.eq(words)]

        # the outputs, written to rows 0 .. n - 1 in the order they were read
        with m.If(write_rows(m, cfg, self.wr, gelu.o_stream, buffer=op.dst, cols=op.m, words=words, rows=op.n)):
            self.finish(m, rows=op.n)
        self.count_overflows(m, gelu.overflows)
        return m
