"""Walking a token buffer: :class:`RowReader` streams ``rows`` rows x ``words`` words of a buffer (from row
``row0``, word ``word0``) out of a buffer read port, one word per cycle while its consumer keeps up.

The read port has no back-pressure, so the reader keeps every word it requested a place: a word is requested
only while fewer than :data:`DEPTH` are requested and not yet taken, and the words land in a FIFO of that
depth (enough to cover the port's latency at full rate). Rows are walked with a running row register (its bank
is the low bits, its tile the high bits), so no multiplier sits between registers.

Fetching a constant record (:mod:`tokensift.quant.accel.records` puts one scalar in each 64-bit slot): either
:class:`RecordSlots` turns the DRAM read channel's bus words (any AXI width) into the record's slots, one per
cycle, for an engine that checks them one by one; or :class:`RecordFields` lands the slots an engine names in
registers as their bus words arrive, one word per cycle, for an engine that checks them all at once.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, Value, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from tokensift.hw.accel.config import ELEMENT_BITS, AccelConfig
from tokensift.hw.accel.ports import BUFFER_BITS, READ_LATENCY, check_config, read_port_signature
from tokensift.hw.axi.reader import word_layout as reader_word_layout

__all__ = ["RowReader", "DEPTH", "word_layout", "walk_layout", "RecordSlots", "slot_layout", "record_cycles",
           "words_of", "buffer_fits", "write_rows", "RecordFields", "slot_wrong"]

#: words requested and not yet taken, at most (the FIFO's depth): the port's latency plus the FIFO's own
DEPTH = READ_LATENCY + 3


def word_layout(cfg: AccelConfig) -> data.StructLayout:
    """One word of a row: ``lanes`` elements, the row's index ``i`` within the walk, the word's index ``w``
    within the row, ``last`` (the walk's final word)."""
    return data.StructLayout({"data": data.ArrayLayout(signed(ELEMENT_BITS), cfg.lanes),
                              "i": unsigned(cfg.row_bits), "w": unsigned(cfg.word_bits), "last": 1})


def walk_layout(cfg: AccelConfig) -> data.StructLayout:
    """A walk: ``buffer``, first row ``row0``, ``rows`` (at least 1), first word ``word0``, ``words`` per row
    (at least 1)."""
    return data.StructLayout({"buffer": BUFFER_BITS, "row0": cfg.row_bits, "rows": cfg.row_bits,
                              "word0": cfg.word_bits, "words": cfg.word_bits + 1})


class RowReader(wiring.Component):
    """``i_walk`` (one beat starts a walk; the next is taken when it has issued every request) ->
    ``o_word`` beats; ``rd`` is the buffer read port it drives."""

    def __init__(self, *, config: AccelConfig):
        self._cfg = check_config(config)
        super().__init__({
            "i_walk": In(stream.Signature(walk_layout(config))),
            "o_word": Out(stream.Signature(word_layout(config))),
            "rd": Out(read_port_signature(config)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        bank_bits = ceil_log2(cfg.banks)
        m.submodules.fifo = q = fifo.SyncFIFOBuffered(width=len(self.o_word.payload.as_value()), depth=DEPTH)
        m.d.comb += [self.o_word.payload.eq(q.r_data), self.o_word.valid.eq(q.r_rdy), q.r_en.eq(self.o_word.ready)]

        active = Signal()
        walk = Signal(walk_layout(cfg))
        row = Signal(cfg.row_bits + 1)          # the buffer row being read
        i = Signal(cfg.row_bits)                # its index within the walk
        w = Signal(cfg.word_bits + 1)
        last_row = Signal()
        last_word = Signal()
        outstanding = Signal(range(DEPTH + 1))
        issue = Signal()
        popped = self.o_word.valid & self.o_word.ready
        m.d.comb += issue.eq(active & (outstanding < DEPTH))
        with m.If(issue & ~popped):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(~issue & popped):
            m.d.sync += outstanding.eq(outstanding - 1)

        m.d.comb += [self.i_walk.ready.eq(~active), self.busy.eq(active | (outstanding != 0))]
        with m.If(self.i_walk.valid & ~active):
            p = self.i_walk.payload
            m.d.sync += [active.eq(1), walk.eq(p), row.eq(p.row0), i.eq(0), w.eq(p.word0),
                         last_row.eq(p.rows == 1), last_word.eq(p.words == 1)]

        m.d.comb += [self.rd.en.eq(issue), self.rd.buffer.eq(walk.buffer), self.rd.tile.eq(row >> bank_bits),
                     self.rd.word.eq(w)]
        # what each request needs when its data arrives, delayed with it
        tag = data.StructLayout({"bank": max(1, bank_bits), "i": cfg.row_bits, "w": cfg.word_bits, "last": 1,
                                 "valid": 1})
        pipe = [Signal(tag, name=f"req{d}") for d in range(READ_LATENCY)]
        m.d.sync += [pipe[0].valid.eq(issue), pipe[0].bank.eq(row[:max(1, bank_bits)] if bank_bits else 0),
                     pipe[0].i.eq(i), pipe[0].w.eq(w - walk.word0), pipe[0].last.eq(last_row & last_word)]
        for d in range(1, READ_LATENCY):
            m.d.sync += pipe[d].eq(pipe[d - 1])
        arrived = pipe[-1]
        word = Signal(word_layout(cfg))
        for bank in range(cfg.banks):
            with m.If(arrived.bank == bank):
                m.d.comb += word.data.eq(self.rd.data[bank])
        m.d.comb += [word.i.eq(arrived.i), word.w.eq(arrived.w), word.last.eq(arrived.last),
                     q.w_data.eq(word), q.w_en.eq(arrived.valid)]

        with m.If(issue):
            with m.If(last_word):
                m.d.sync += [w.eq(walk.word0), last_word.eq(walk.words == 1), row.eq(row + 1), i.eq(i + 1),
                             last_row.eq(i + 2 == walk.rows)]
                with m.If(last_row):
                    m.d.sync += active.eq(0)
            with m.Else():
                m.d.sync += [w.eq(w + 1), last_word.eq(w + 2 - walk.word0 == walk.words)]
        return m


def slot_layout() -> data.StructLayout:
    """One 64-bit slot of a record (:mod:`tokensift.quant.accel.records`: the header's tag and length, then one
    int64 scalar per slot, then the arrays), ``last`` on the command's final slot, ``error`` when its bus word
    came back with a read error."""
    return data.StructLayout({"data": 64, "last": 1, "error": 1})


class RecordSlots(wiring.Component):
    """A DRAM read channel's ``i_word`` beats (the AxiReader's ``o_data``) -> ``o_slot``: the command's bytes as
    64-bit slots, one per cycle, for a command of a whole number of slots (a record is one: every record's
    length is a multiple of 8).

    A bus word of 4 bytes is half a slot (two beats are joined); a wider word holds ``data_bytes // 8`` slots,
    shifted out of a register one per cycle (its slots past the command's length, their ``keep`` bytes clear,
    are dropped). Every output is a register."""

    def __init__(self, *, config: AccelConfig):
        self._cfg = check_config(config)
        super().__init__({
            "i_word": In(stream.Signature(reader_word_layout(config.axi))),
            "o_slot": Out(stream.Signature(slot_layout())),
        })

    def elaborate(self, platform):
        m = Module()
        width = self._cfg.axi.data_bytes
        word = self.i_word.payload
        out = self.o_slot
        if width == 4:
            low = Signal(32)
            have_low = Signal()
            error = Signal()
            m.d.comb += self.i_word.ready.eq(~have_low | ~out.valid | out.ready)
            with m.If(out.ready):
                m.d.sync += out.valid.eq(0)
            with m.If(self.i_word.valid & self.i_word.ready):
                with m.If(~have_low):
                    m.d.sync += [low.eq(word.data), have_low.eq(1), error.eq(word.error)]
                with m.Else():
                    m.d.sync += [out.valid.eq(1), out.payload.data.eq(Cat(low, word.data)),
                                 out.payload.last.eq(word.last), out.payload.error.eq(error | word.error),
                                 have_low.eq(0)]
            return m
        slots = width // 8
        held = Signal(8 * width)
        present = Signal(slots)          # which held slots are still to go out (a prefix)
        last_word = Signal()
        error = Signal()
        final = Signal()                 # the head slot is the held word's final one
        m.d.comb += [final.eq(present[1:] == 0) if slots > 1 else final.eq(1),
                     out.valid.eq(present[0]), out.payload.data.eq(held[:64]),
                     out.payload.last.eq(last_word & final), out.payload.error.eq(error),
                     self.i_word.ready.eq(~present[0] | (out.ready & final))]
        with m.If(out.valid & out.ready):
            m.d.sync += [held.eq(held >> 64), present.eq(present >> 1)]
        with m.If(self.i_word.valid & self.i_word.ready):
            m.d.sync += [held.eq(word.data), last_word.eq(word.last), error.eq(word.error),
                         present.eq(Cat(*(word.keep[8 * s] for s in range(slots))))]
        return m


class RecordFields(wiring.Component):
    """The record's 64-bit slots at the byte offsets ``fields`` (name -> offset in the record, a multiple of 8),
    captured from the DRAM read channel's bus words as they arrive (any AXI width, one word per cycle, every
    word taken): ``start`` begins a record whose byte 0 is at byte ``skew`` (a multiple of 8) of its first bus
    word (the command is word-aligned down); ``fields`` are registers, complete the cycle after the word with
    ``last``, when ``done`` pulses, and unchanged until the next ``start`` (while a record arrives, a slot whose
    word has not come yet holds whatever the bus carries). ``length``: the record's bytes the command covers, at
    most."""

    def __init__(self, *, config: AccelConfig, fields: dict[str, int], length: int):
        self._cfg = check_config(config)
        self._fields = dict(fields)
        self._length = length
        super().__init__({
            "start": In(1),
            "skew": In(range(max(2, config.axi.data_bytes))),
            "i_word": In(stream.Signature(reader_word_layout(config.axi))),
            "fields": Out(data.StructLayout(dict.fromkeys(self._fields, 64))),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        db = self._cfg.axi.data_bytes
        piece = min(db, 8)                      # bytes of a field in one word (a 4-byte word holds half of one)
        pos = Signal(range(-db, self._length + 2 * db))  # the record's offset of the next word's byte 0
        word = self.i_word.payload.data
        m.d.comb += self.i_word.ready.eq(1)
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += pos.eq(-self.skew)
        with m.If(self.i_word.valid):
            m.d.sync += [pos.eq(pos + db), self.done.eq(self.i_word.payload.last)]
        # a slot copies the bus word in every cycle the position is its word's, not only in the word's valid
        # cycle: pos moves on with that word and never comes back within the record, so the last copy is the
        # word itself, and the slot's wide enable is a compare of one register (valid, the consumer's handshake,
        # reaches only pos)
        for j in range(db // piece):
            for name, at in self._fields.items():
                for h in range(8 // piece):
                    with m.If(pos == at + h * piece - j * piece):
                        m.d.sync += self.fields[name][8 * piece * h:8 * piece * (h + 1)].eq(
                            word[8 * piece * j:8 * piece * (j + 1)])
        return m


def slot_wrong(slot, s, *, tag, length, equal: dict) -> Value:
    """A :class:`RecordSlots` beat ``slot``, slot ``s`` of its record, is not what the engine expects: its word
    came with a read error, the header (slot 0) holds another tag or length, or a slot of ``equal`` (slot ->
    value) holds another value."""
    value = slot.payload.data
    wrong = slot.payload.error | ((s == 0) & ((value[:32] != tag) | (value[32:] != length)))
    for at, want in equal.items():
        wrong |= (s == at) & (value != want)
    return wrong


def record_cycles(cfg: AccelConfig, length: int, dram_latency: int) -> int:
    """Cycles from an engine's ``start`` to a ``done`` decided on a ``length``-byte record's last slot (through
    :class:`RecordSlots`, a registered decision after it), for an engine that requests the record two cycles
    after ``start`` (its checks registered) from a DRAM answering ``dram_latency`` cycles after the command's
    handshake, one bus word per cycle: a 4-byte bus takes two words per slot, a wider one gives a slot per
    cycle."""
    slots = length // 8
    return 5 + dram_latency + (2 * slots if cfg.axi.data_bytes == 4 else slots)


def words_of(m, lanes: int):
    """``ceil(m / lanes)``, the words of a row of ``m`` columns (``m`` below ``2**17``): a shift when ``lanes``
    is a power of two, else one multiplication by a constant reciprocal (exact over that range; register the
    result, its operand registered too)."""
    if lanes & (lanes - 1) == 0:
        return (m + lanes - 1) >> ceil_log2(lanes)
    shift = 18 + ceil_log2(lanes)
    return ((m + lanes - 1) * -(-(1 << shift) // lanes)) >> shift


def buffer_fits(cfg: AccelConfig, buffer, cols, among) -> Value:
    """True when ``buffer`` is one of the buffers ``among`` and has at least ``cols`` columns."""
    return Cat(*((buffer == b) & (cols <= cfg.geometry(b).cols) for b in among)).any()


def write_rows(m, cfg: AccelConfig, wr, out, *, buffer, cols, words, rows) -> Signal:
    """Writes ``out``'s beats (``lanes`` values each, always taken: a unit's output stream) through the write
    port ``wr`` to rows ``0 .. rows - 1`` of ``buffer``, ``words`` words a row in the order a
    :class:`RowReader` walks them, the columns from ``cols`` on left alone. Returns the cycle's "the last
    beat is written" (the counters are back at row 0 after it)."""
    lanes = cfg.lanes
    bank_bits = ceil_log2(cfg.banks)
    row = Signal(cfg.row_bits)
    w = Signal(cfg.word_bits + 1)
    m.d.comb += [out.ready.eq(1), wr.buffer.eq(buffer), wr.tile.eq(row >> bank_bits), wr.word.eq(w),
                 wr.en.eq(out.valid)]
    # "At the row's last word" and "at the last row" are registers, set as the counters step onto those
    # positions (compares of the counters with registered "minus two"s), so the engine's done starts at flip-flops:
    # the compares of the counters with the last positions were the whole design's worst path. Between beats at a
    # row's first word they follow the op's fields (stable while it runs; its first beat comes cycles after they
    # are latched, so the flags are current by then).
    # signed and a bit wider than the op's fields: "minus two" of a small count never equals a counter
    words_m2 = Signal(signed(len(words) + 2))
    rows_m2 = Signal(signed(len(rows) + 2))
    m.d.sync += [words_m2.eq(words - 2), rows_m2.eq(rows - 2)]
    at_last_w = Signal()
    at_last_row = Signal()
    # the columns from the current word's first on, and which of its lanes are among them
    cols_left = Signal(signed(18))
    lane_on = Signal(lanes)

    def restart_columns(value):
        m.d.sync += [cols_left.eq(value)] + [lane_on[i].eq(value > i) for i in range(lanes)]

    for bank in range(cfg.banks):
        for i in range(lanes):
            m.d.comb += [wr.data[bank][i].eq(out.payload.data[i]),
                         wr.mask[bank][i].eq((row[:bank_bits] == bank if bank_bits else 1) & lane_on[i])]
    last = Signal()
    with m.If(out.valid):
        with m.If(at_last_w):
            m.d.sync += [w.eq(0), row.eq(row + 1), at_last_w.eq(words == 1), at_last_row.eq(row == rows_m2)]
            restart_columns(cols)
            with m.If(at_last_row):
                m.d.comb += last.eq(1)
                m.d.sync += [row.eq(0), at_last_row.eq(rows == 1)]
        with m.Else():
            m.d.sync += [w.eq(w + 1), at_last_w.eq(w == words_m2)]
            restart_columns(cols_left - lanes)
    with m.Elif(w == 0):
        # between beats at a row's first word, and so before an op's first beat: follow the op's columns
        restart_columns(cols)
        m.d.sync += at_last_w.eq(words == 1)
        with m.If(row == 0):
            m.d.sync += at_last_row.eq(rows == 1)
    return last
