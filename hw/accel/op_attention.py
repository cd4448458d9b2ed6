"""The ``ATTENTION`` engine: head ``h = arg`` of the QKV buffer through the attention core
(:class:`tokensift.hw.attention.core.Attention`), bit-exact with the reference sequencer's
:func:`tokensift.quant.attention.attention_head` step.

One op runs one frame of the core (one head): the header (``n``, the source's run-time rows), then the ``n`` rows of
``Q`` (columns ``h hd ..``), of ``K`` (``C + h hd ..``) and of ``V`` (``2C + h hd ..``) of ``src``, ``hd = k``,
``C = m``, each row ``hd / lanes`` buffer words streamed by a :class:`~tokensift.hw.accel.rows.RowReader`
(one walk per matrix). The core's output rows go to ``dst`` columns ``h hd ..`` rows ``0 .. n-1``, its
class-attention row to row ``h`` of ``src2`` (``CLS``), columns ``0 .. n-1``; ``rows`` answers ``n``.

Before the frame the engine fetches the layer's ``ATTN`` record (:func:`tokensift.quant.accel.records.
attention_record`: a 16-byte header, then one int64 scalar per 8 bytes) from ``memory_base + addr_a`` and
checks it field by field against the generated core: the tag and length, ``n_max`` (at most the envelope's
``max_tokens``: an image of a smaller envelope runs), ``head_dim``, the widths and softmax formats; ``lanes`` and ``heads_parallel`` are the
reference model's hints (they change no bit of the result), checked as valid values only. The per-layer
constants (score scale and output requantization multipliers and shifts) land in registers in ONE place
(:meth:`AttentionOpEngine._drive_constants`), the place that will drive the core's run-time constants port.

A fault (``done``, nothing written): the op's checks (rows mode not ``ALL``, a head beyond the envelope's,
``k`` not the envelope's head dimension, ``(h + 1) hd > C``, ``3C`` beyond ``src``'s columns or ``C`` beyond
``dst``'s, ``src2`` not ``CLS``, ``n`` of 0 or beyond ``dst``'s rows, a head after the first over another
token count than the class rows hold, a record offset not 8-byte aligned, a record that does not end inside
the address space, which the AXI reader would drop), then the record's (tag, length, a field that does not
match the core or is out of range, an AXI error). Beyond the reference's faults the
hardware also refuses ``C`` not a multiple of ``lanes`` (``K`` and ``V`` would not start on a buffer word),
a ``src`` wider than the core's data, a ``dst`` narrower than it or ``dst = CLS``. A head after the first
checks ``n`` against ``n2``, the class rows' count (the reference checks ``dst``'s; only a head writes both).

The op is ``done`` once the head's frame is loaded into a core copy (``attention_cores`` copies, taken round
robin): the next heads load while it computes. Its outputs follow while ``busy`` is high; the sequencer fences
every other op behind them (:mod:`tokensift.hw.accel.sequencer`). Each copy keeps its last two frames'
destinations, since a copy takes its next header while its previous frame's last rows drain.

Cycles: :func:`cycles` and :func:`drain_cycles` for one head, :class:`HeadSchedule` for a layer's heads (exact
with a fixed DRAM latency and no gaps).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import Out
from amaranth.utils import ceil_log2

from tokensift.checks import check_int
from tokensift.hw.accel.config import AccelConfig
from tokensift.hw.accel.ports import READ_LATENCY, OpEngine, check_config
from tokensift.hw.accel.rows import RecordSlots, RowReader, walk_layout
from tokensift.hw.attention.core import Attention
from tokensift.hw.attention.cycles import cycles as core_cycles
from tokensift.hw.attention.cycles import frame_schedule
from tokensift.hw.common.mac_array import mul_const
from tokensift.quant.accel.isa import Buffer, Rows
from tokensift.quant.accel.records import RECORD_HEADER, SCHEMAS, Tag, record_size
from tokensift.quant.attention import AttentionParams
from tokensift.quant.softmax import SoftmaxParams, SoftmaxVariant

__all__ = ["AttentionOpEngine", "RECORD_BYTES", "RECORD_FIELDS", "core_params", "cycles", "drain_cycles", "HeadSchedule",
           "FEED_DELAY"]

#: the record's scalars, in order (each one 8-byte field after the two header fields)
_SCALARS = SCHEMAS[Tag.ATTENTION].scalars
#: bytes the engine fetches: the ``ATTN`` record (it has no arrays)
RECORD_BYTES = record_size(Tag.ATTENTION, {})
#: 8-byte fields of the record: the header (tag and length, reserved), then the scalars
RECORD_FIELDS = RECORD_BYTES // 8
_HEADER_FIELDS = RECORD_HEADER // 8
#: the run-time constants (register widths): what the core will take per frame once it takes them at run time
_CONSTANTS = {"scale_multiplier": 17, "scale_shift": 6, "out_multiplier": 31, "out_shift": 6}
#: valid ranges of the record's values where the core does not fix them (as :class:`AttentionParams` checks)
_RANGES = {"lanes": (1, 256), "scale_multiplier": (1, (1 << 17) - 1), "scale_shift": (0, 48),
           "out_multiplier": (1, (1 << 31) - 1), "out_shift": (0, 62), "heads_parallel": (1, 16)}
# the engine's steps
_IDLE, _CHECK, _DECIDE, _CMD, _FETCH, _RUN = range(6)


def core_params(config: AccelConfig, constants: AttentionParams | None = None) -> AttentionParams:
    """The core an engine of ``config`` generates: the envelope's ``max_tokens`` and head dimension, the
    buffers' ``lanes``, one head at a time, and the widths, softmax formats and (until the core takes them at
    run time) per-layer constants of ``constants`` (default: :class:`AttentionParams`' defaults with the
    envelope's probability format)."""
    env = check_config(config).envelope
    if constants is None:
        constants = AttentionParams(n_max=env.max_tokens, head_dim=env.head_dim, lanes=config.lanes,
                                    softmax=SoftmaxParams(prob_frac=env.prob_frac))
    if not isinstance(constants, AttentionParams):
        raise TypeError(f"constants must be an AttentionParams, not {type(constants).__name__}")
    if constants.softmax.prob_frac != env.prob_frac:
        raise ValueError(f"the constants' probabilities have {constants.softmax.prob_frac} fractional bits, the "
                         f"envelope's class rows {env.prob_frac}")
    return AttentionParams(n_max=env.max_tokens, head_dim=env.head_dim, lanes=config.lanes,
                           data_bits=constants.data_bits, acc_bits=constants.acc_bits, softmax=constants.softmax,
                           scale_multiplier=constants.scale_multiplier, scale_shift=constants.scale_shift,
                           out_multiplier=constants.out_multiplier, out_shift=constants.out_shift,
                           heads_parallel=config.attention_cores)


def _field_rules(p: AttentionParams, ranges=None) -> list[tuple[int, int, int | None]]:
    """Per record field: the low 32 bits' range and the high 32 bits' value (None: any)."""
    fixed = {"head_dim": p.head_dim, "data_bits": p.data_bits, "acc_bits": p.acc_bits,
             "variant": list(SoftmaxVariant).index(p.softmax.variant), "log2_frac": p.softmax.log2_frac,
             "exp_frac": p.softmax.exp_frac, "prob_frac": p.softmax.prob_frac}
    rules = [(Tag.ATTENTION, Tag.ATTENTION, RECORD_BYTES), (0, (1 << 32) - 1, None)]  # tag | length, reserved
    for name in _SCALARS:
        if name == "n_max":  # the image's envelope may be smaller than the design's
            low, high = 1, p.n_max
        else:
            low, high = (fixed[name], fixed[name]) if name in fixed else _core_range(name, ranges)
        rules.append((low, high, 0))
    return rules


def _core_range(name: str, ranges) -> tuple[int, int]:
    """A record field's valid range: the core's run-time constant ranges (a constant outside them would make
    the core drop the frame, so the engine faults the op instead), else the record's own bounds."""
    if ranges is not None:
        core = {"scale_multiplier": (1, (1 << ranges.scale_mult_bits) - 1), "scale_shift": (0, ranges.scale_shift_max),
                "out_multiplier": (1, (1 << ranges.out_mult_bits) - 1), "out_shift": (0, ranges.out_shift_max)}
        if name in core:
            return core[name]
    return _RANGES[name]


class AttentionOpEngine(OpEngine):
    """See the module docstring; ports as :func:`tokensift.hw.accel.ports.engine_signature` (with the DRAM
    channel).

    ``constants`` (keyword-only, optional): the per-layer constants the core is generated with. This is a
    crutch for today's core, which takes them as generation parameters: the tests generate it with the
    constants of the block under test (decoded from that instruction's record), and an op whose record holds
    other constants faults. It goes away (with the interlock in :meth:`_drive_constants`) once the core takes
    its constants at run time; the widths and softmax formats then come from the envelope.
    """

    def __init__(self, *, config: AccelConfig, constants: AttentionParams | None = None):
        super().__init__(config=config, members={"busy": Out(1)})
        self._params = core_params(config, constants)
        if config.axi.data_bytes < 8:
            raise ValueError(f"the attention engine reads its record's int64 fields whole from each AXI word: "
                             f"the word must be at least 8 bytes, not {config.axi.data_bytes}")
        # the op's checks refuse a token count of 0 or above n_max before any header goes out
        self._core = Attention(params=self._params, checked_headers=True)

    @property
    def params(self) -> AttentionParams:
        """The generated core's parameters."""
        return self._params

    def elaborate(self, platform):
        m = Module()
        cfg, p = self.config, self._params
        env = cfg.envelope
        lanes, chunks = cfg.lanes, p.chunks
        bank_bits = ceil_log2(cfg.banks)
        lane_bits = max(1, ceil_log2(lanes))
        m.submodules.core = core = self._core
        m.submodules.reader = reader = RowReader(config=cfg)
        wiring.connect(m, reader.rd, wiring.flipped(self.rd))

        state = Signal(range(6))
        op = self.latch_op(m)
        with m.If(self.start):
            m.d.sync += state.eq(_CHECK)

        # -- the op's checks: products and table look-ups registered, compared the cycle after --------------
        h = op.arg
        geo = {b: cfg.geometry(b) for b in Buffer}
        three_c = Signal(18)
        heads_end = Signal(range((1 << 8) * p.head_dim + 1))  # (h + 1) hd
        m_words = Signal(16)                                   # C / lanes (rounded down)
        head_word = Signal(cfg.word_bits)                      # h hd / lanes
        src_cols, dst_cols = Signal(range(max(g.cols for g in geo.values()) + 1)), Signal.like(three_c)
        dst_rows = Signal(cfg.row_bits)
        src_ok, dst_ok = Signal(), Signal()
        record_addr = Signal(cfg.axi.addr_width + 1)                # with the carry: past the address space?
        div_shift = 16 + ceil_log2(lanes)
        div_mult = -(-(1 << div_shift) // lanes)  # m // lanes = (m div_mult) >> div_shift for any 16-bit m
        with m.If(state == _CHECK):
            m.d.sync += [three_c.eq(mul_const(op.m, 3)), heads_end.eq(mul_const(h + 1, p.head_dim)),
                         m_words.eq(mul_const(op.m, div_mult) >> div_shift),
                         head_word.eq(mul_const(h, chunks)), record_addr.eq(op.memory_base + op.addr_a),
                         src_cols.eq(0), dst_cols.eq(0), dst_rows.eq(0), src_ok.eq(0), dst_ok.eq(0),
                         state.eq(_DECIDE)]
            with m.Switch(op.src):
                for b, g in geo.items():
                    with m.Case(b):
                        m.d.sync += [src_cols.eq(g.cols), src_ok.eq(g.signed & (g.bits <= p.data_bits))]
            with m.Switch(op.dst):
                for b, g in geo.items():
                    with m.Case(b):
                        m.d.sync += [dst_cols.eq(g.cols), dst_rows.eq(g.rows),
                                     dst_ok.eq(g.signed & (g.bits >= p.data_bits))]
        n = op.n
        op_fault = Signal()
        # the verdict, registered in DECIDE and acted on in CMD (the compares' OR would otherwise run on into the
        # state machine's next-state logic): a good op loses no cycle, a bad one answers a cycle later
        op_bad = Signal()
        m.d.comb += op_fault.eq((op.rows != Rows.ALL) | (h >= env.heads) | (op.k != p.head_dim) |
                                (heads_end > op.m) | (three_c > src_cols) | (op.m > dst_cols) |
                                (mul_const(m_words, lanes) != op.m) | ~src_ok | ~dst_ok |
                                (op.src2 != Buffer.CLS) | (n == 0) | (n > dst_rows) | (n > p.n_max) |
                                ((h != 0) & (op.n2 != n)) | (op.addr_a[:3] != 0) |
                                (record_addr > (1 << cfg.axi.addr_width) - RECORD_BYTES))

        # -- the record: fetched from the aligned word at or below it, checked one 8-byte field a cycle ------
        axi = cfg.axi
        per_word = axi.data_bytes // 8
        word_low = ceil_log2(axi.data_bytes)
        skip = Signal(range(per_word))                         # fields before the record in its first word
        if per_word > 1:
            m.d.comb += skip.eq(record_addr[3:word_low])
        m.d.comb += [self.dram_cmd.payload.addr.eq(record_addr[:axi.addr_width] >> word_low << word_low),
                     self.dram_cmd.payload.length.eq(RECORD_BYTES + (skip << 3)),
                     self.dram_cmd.valid.eq((state == _CMD) & ~op_bad)]
        # every field of the words read goes out (those before and after the record too, as :func:`cycles`
        # counts them): the words' ``keep`` is not passed on
        m.submodules.slots = slots = RecordSlots(config=cfg)
        slot = slots.o_slot
        m.d.comb += [slots.i_word.valid.eq(self.dram_data.valid & (state == _FETCH)),
                     self.dram_data.ready.eq(slots.i_word.ready & (state == _FETCH)),
                     slots.i_word.payload.eq(self.dram_data.payload), slots.i_word.payload.keep.eq(-1),
                     slot.ready.eq(1)]
        emit = slot.valid
        last_seen = Signal()                                   # the record's last field went out
        bus_error = Signal()
        with m.If(emit):
            m.d.sync += [last_seen.eq(last_seen | slot.payload.last), bus_error.eq(bus_error | slot.payload.error)]
        index = Signal(signed(ceil_log2(RECORD_FIELDS + per_word) + 2))  # the next field's index in the record
        with m.If(emit):
            m.d.sync += index.eq(index + 1)
        field = Signal(64)
        field_index = Signal.like(index)
        field_valid = Signal()
        m.d.sync += [field.eq(slot.payload.data), field_index.eq(index), field_valid.eq(emit)]
        low, high = field[:32], field[32:]
        rules = _field_rules(p, self._core.ranges)
        bad = Signal()
        with m.If(field_valid):
            with m.Switch(field_index):
                for i, (lo, hi, top) in enumerate(rules):
                    with m.Case(i):
                        m.d.sync += bad.eq((low < lo) | (low > hi) | ((high != top) if top is not None else 0))
                with m.Default():
                    m.d.sync += bad.eq(0)
        with m.Else():
            m.d.sync += bad.eq(0)
        lanes_at = _HEADER_FIELDS + _SCALARS.index("lanes")
        with m.If(field_valid & (field_index == lanes_at)):  # a lane count must divide the head dimension
            divisors = [d for d in range(1, _RANGES["lanes"][1] + 1) if p.head_dim % d == 0]
            m.d.sync += bad.eq(~Cat(*(low == d for d in divisors)).any() | (high != 0))
        checked_valid = Signal()
        m.d.sync += checked_valid.eq(field_valid)
        record_ok = Signal()
        with m.If(checked_valid & bad):
            m.d.sync += record_ok.eq(0)
        constants = Signal(data.StructLayout({name: unsigned(w) for name, w in _CONSTANTS.items()}))
        for name, width in _CONSTANTS.items():
            with m.If(field_valid & (field_index == _HEADER_FIELDS + _SCALARS.index(name))):
                m.d.sync += constants[name].eq(low[:width])
        fetched = last_seen & ~emit & ~field_valid & ~checked_valid
        constants_ok = self._drive_constants(m, constants, (state == _FETCH) & fetched & record_ok & ~bus_error)

        # -- the frame: the header, then Q, K, V rows from three walks -------------------------------------
        k_word, v_word = Signal(cfg.word_bits), Signal(cfg.word_bits)  # Q's is ``head_word``
        m.d.sync += [k_word.eq(m_words + head_word), v_word.eq((m_words << 1) + head_word)]
        header = Signal()
        walks = Signal(range(4))
        walk = reader.i_walk
        walk_req = Signal(walk_layout(cfg))  # the next walk, registered
        # the walks start once the core took the header, so a frame's load takes the same cycles whether or not
        # its copy kept the header waiting
        m.d.comb += [walk.valid.eq((state == _RUN) & ~header & (walks != 3)), walk.payload.eq(walk_req)]
        with m.If(state == _DECIDE):
            m.d.sync += [walk_req.buffer.eq(op.src), walk_req.row0.eq(0), walk_req.rows.eq(n),
                         walk_req.word0.eq(head_word), walk_req.words.eq(chunks)]
        with m.If(walk.valid & walk.ready):
            m.d.sync += [walks.eq(walks + 1), walk_req.word0.eq(Mux(walks == 0, k_word, v_word))]
        feed = core.i_stream
        with m.If(header):
            m.d.comb += [feed.valid.eq(1), feed.payload.header.n_tokens.eq(n)]
        with m.Else():
            m.d.comb += [feed.valid.eq(reader.o_word.valid), reader.o_word.ready.eq(feed.ready)]
            for i in range(lanes):
                m.d.comb += feed.payload.row[i].eq(reader.o_word.payload.data[i][:p.data_bits])
        with m.If(header & feed.ready):
            m.d.sync += header.eq(0)
        beats_left = Signal(range(3 * p.n_max * chunks + 1))  # Q, K and V beats still to feed
        with m.If(state == _DECIDE):
            m.d.sync += beats_left.eq(mul_const(n, 3 * chunks))
        loaded = Signal()
        m.d.comb += loaded.eq((state == _RUN) & ~header & feed.valid & feed.ready & (beats_left == 1))
        with m.If(~header & feed.valid & feed.ready):
            m.d.sync += beats_left.eq(beats_left - 1)
        with m.If(loaded):  # the frame is the core's: the op is done, its outputs follow (``busy``)
            self.finish(m, rows=n)
            m.d.sync += state.eq(_IDLE)

        # -- the steps ----------------------------------------------------------------------------------
        with m.If(state == _DECIDE):
            m.d.sync += [op_bad.eq(op_fault), state.eq(_CMD), index.eq(-skip), record_ok.eq(1), bus_error.eq(0),
                         last_seen.eq(0)]
        with m.If((state == _CMD) & op_bad):
            self.finish(m, fault=True)
            m.d.sync += state.eq(_IDLE)
        with m.If(self.dram_cmd.valid & self.dram_cmd.ready):
            m.d.sync += state.eq(_FETCH)
        with m.If((state == _FETCH) & fetched):
            with m.If(record_ok & constants_ok & ~bus_error):
                m.d.sync += [state.eq(_RUN), header.eq(1), walks.eq(0)]
            with m.Else():
                self.finish(m, fault=True)
                m.d.sync += state.eq(_IDLE)

        # -- the outputs: O rows into their frame's ``dst`` (first), the class row into ``CLS`` row h -------
        # Frames outlive their op: ``done`` answers once a frame is loaded into its core copy, which computes
        # while the next heads' ops load the other copies. Each copy keeps the descriptors of its last two frames
        # (a copy takes its next header while its previous frame's last rows drain) and counts the frames it
        # was sent and those whose O rows and class row are written; ``busy`` holds while any frame is pending.
        desc_layout = data.StructLayout({"dst": 4, "head_word": cfg.word_bits, "n": cfg.row_bits,
                                         "cls_tile": cfg.tile_bits, "cls_bank": max(1, bank_bits)})
        copies = p.heads_parallel
        descs = [[Signal(desc_layout, name=f"desc{c}_{i}") for i in range(2)] for c in range(copies)]
        issued = [Signal(2, name=f"issued{c}") for c in range(copies)]
        o_fin = [Signal(2, name=f"o_fin{c}") for c in range(copies)]
        s_fin = [Signal(2, name=f"s_fin{c}") for c in range(copies)]
        o_row = [Signal(cfg.row_bits, name=f"o_row{c}") for c in range(copies)]
        o_chunk = [Signal(range(chunks), name=f"o_chunk{c}") for c in range(copies)]
        s_col = [Signal(cfg.row_bits, name=f"s_col{c}") for c in range(copies)]
        copy = Signal(range(copies))  # the copy the core sends the next frame to (its round robin)
        cls_tile, cls_bank = Signal(cfg.tile_bits), Signal(max(1, bank_bits))
        m.d.sync += [cls_tile.eq(h >> bank_bits), cls_bank.eq(h[:bank_bits] if bank_bits else 0)]
        with m.If(header & feed.ready):
            for c in range(copies):
                with m.If(copy == c):
                    for i in range(2):
                        with m.If(issued[c][0] == i):
                            m.d.sync += [descs[c][i].dst.eq(op.dst), descs[c][i].head_word.eq(head_word),
                                         descs[c][i].n.eq(n), descs[c][i].cls_tile.eq(cls_tile),
                                         descs[c][i].cls_bank.eq(cls_bank)]
                    m.d.sync += issued[c].eq(issued[c] + 1)
            m.d.sync += copy.eq(Mux(copy == copies - 1, 0, copy + 1))
        pending = Signal()
        m.d.comb += pending.eq(Cat(*((issued[c] != o_fin[c]) | (issued[c] != s_fin[c]) for c in range(copies))).any())
        m.d.sync += self.busy.eq(pending)

        out, scores = core.o_stream, core.s_stream
        o_desc, s_desc = Signal(desc_layout), Signal(desc_layout)
        o_at_row, o_at_chunk, s_at_col = Signal(cfg.row_bits), Signal(range(chunks)), Signal(cfg.row_bits)
        with m.Switch(out.payload.head):
            for c in range(copies):
                with m.Case(c):
                    m.d.comb += [o_desc.eq(Mux(o_fin[c][0], descs[c][1], descs[c][0])), o_at_row.eq(o_row[c]),
                                 o_at_chunk.eq(o_chunk[c])]
        with m.Switch(scores.payload.head):
            for c in range(copies):
                with m.Case(c):
                    m.d.comb += [s_desc.eq(Mux(s_fin[c][0], descs[c][1], descs[c][0])), s_at_col.eq(s_col[c])]
        m.d.comb += [out.ready.eq(1), scores.ready.eq(~out.valid)]
        write_o = out.valid
        write_s = scores.valid & ~out.valid
        m.d.comb += self.wr.en.eq(write_o | write_s)
        with m.If(write_o):
            m.d.comb += [self.wr.buffer.eq(o_desc.dst), self.wr.tile.eq(o_at_row >> bank_bits),
                         self.wr.word.eq(o_desc.head_word + o_at_chunk)]
            for bank in range(cfg.banks):
                for i in range(lanes):
                    m.d.comb += [self.wr.data[bank][i].eq(out.payload.row[i]),
                                 self.wr.mask[bank][i].eq(o_at_row[:bank_bits] == bank if bank_bits else 1)]
        with m.Else():
            s_lane = s_at_col[:lane_bits] if lanes > 1 else 0
            m.d.comb += [self.wr.buffer.eq(Buffer.CLS), self.wr.tile.eq(s_desc.cls_tile),
                         self.wr.word.eq(s_at_col >> ceil_log2(lanes))]
            for bank in range(cfg.banks):
                for i in range(lanes):
                    m.d.comb += [self.wr.data[bank][i].eq(scores.payload.prob),
                                 self.wr.mask[bank][i].eq(((s_desc.cls_bank == bank) if bank_bits else 1) &
                                                          (s_lane == i))]
        for c in range(copies):
            with m.If(write_o & (out.payload.head == c)):
                with m.If(o_chunk[c] == chunks - 1):
                    m.d.sync += o_chunk[c].eq(0)
                    with m.If(o_row[c] + 1 == o_desc.n):
                        m.d.sync += [o_row[c].eq(0), o_fin[c].eq(o_fin[c] + 1)]
                    with m.Else():
                        m.d.sync += o_row[c].eq(o_row[c] + 1)
                with m.Else():
                    m.d.sync += o_chunk[c].eq(o_chunk[c] + 1)
            with m.If(write_s & (scores.payload.head == c)):
                with m.If(s_col[c] + 1 == s_desc.n):
                    m.d.sync += [s_col[c].eq(0), s_fin[c].eq(s_fin[c] + 1)]
                with m.Else():
                    m.d.sync += s_col[c].eq(s_col[c] + 1)
        m.d.comb += self.overflows.eq(core.status.overflows)
        return m

    def _drive_constants(self, m: Module, constants, ready_to_run) -> Signal:
        """The record's per-layer constants go to the core's constants port ``k_stream``: one beat, offered
        from the cycle the record has been fetched and checked (``ready_to_run``; the core holds one beat
        and takes it at once, as the previous head's header took its own) until taken, so it is there before
        the header. The record's ranges are the core's own (:func:`_core_range`), so the core never rejects
        it. Returns the constants' verdict (always 1: the range checks are the record's)."""
        k = self._core.k_stream
        pending = Signal()
        m.d.comb += k.valid.eq(ready_to_run | pending)
        for name in _CONSTANTS:
            m.d.comb += k.payload[name].eq(constants[name])
        with m.If(k.valid & k.ready):
            m.d.sync += pending.eq(0)
        with m.Elif(ready_to_run):
            m.d.sync += pending.eq(1)
        ok = Signal()
        m.d.comb += ok.eq(1)
        return ok


#: cycles a frame's schedule runs behind the core's own (:mod:`tokensift.hw.attention.cycles`, whose Q rows
#: follow the header at once): the walk starts the cycle after the header (1), its first word reaches the core
#: ``READ_LATENCY + 2`` cycles later (the buffer's latency, the reader's FIFO), and the reader pauses one cycle
#: between its three walks (2)
FEED_DELAY = READ_LATENCY + 5


def _header_offset(config: AccelConfig, dram_latency: int, record_address: int) -> int:
    """Cycles from ``start`` to the header offered to the core: the start latched, the op's two check
    cycles, the DRAM command taken (4), the DRAM latency, one 8-byte field a cycle (the record's, plus the
    word's fields before it), the last field's check pipeline and the decision (4)."""
    check_int("dram_latency", dram_latency, low=0, numpy=False)
    check_int("record_address", record_address, low=0, numpy=False)
    if record_address % 8:
        raise ValueError(f"record_address must be 8-byte aligned, not {record_address}")
    word = config.axi.data_bytes
    fields = -(-(RECORD_BYTES + record_address % word) // word) * word // 8
    return 4 + dram_latency + fields + 4


class HeadSchedule:
    """The cycle model of consecutive ATTENTION ops (a layer's heads) on one engine, exact when DRAM answers a
    command ``dram_latency`` cycles after taking it and then sends its words back to back.

    Times are cycles on one clock (the caller's). :meth:`run` takes an op's ``start`` and returns its ``done``:
    the head's header goes to core copy ``i mod attention_cores`` (``i``: the op's place in the group) once the
    record is checked (:func:`_header_offset`) and that copy has taken its previous frame's last step (the
    core's :func:`~tokensift.hw.attention.cycles.frame_interval`); ``done`` follows the frame's ``3 N C`` input
    beats (``C = head_dim / lanes``). :attr:`drained` is when the engine's ``busy`` falls: every frame's last
    output written (the core's frame latency after its header), then ``busy``'s register. Every time in a
    frame is the core's own plus :data:`FEED_DELAY`.
    """

    def __init__(self, config: AccelConfig, constants: AttentionParams | None = None):
        self._cfg = check_config(config)
        self._p = core_params(config, constants)
        self._free = [0] * self._p.heads_parallel
        self._next = 0
        self._drained = 0
        self._frames: dict[int, tuple[int, int]] = {}

    def _frame(self, n: int) -> tuple[int, int]:
        """The core's (latency, interval) of an ``n``-token frame."""
        if n not in self._frames:
            sched = frame_schedule(self._p, n_tokens=n)
            self._frames[n] = (core_cycles(self._p, n_tokens=n), sched.next_header)
        return self._frames[n]

    def run(self, start: int, *, n_tokens: int, dram_latency: int, record_address: int = 0) -> int:
        """The ``done`` of a head started at ``start`` over ``n_tokens`` rows."""
        latency, interval = self._frame(n_tokens)
        copy = self._next
        header = max(start + _header_offset(self._cfg, dram_latency, record_address), self._free[copy])
        self._free[copy] = header + interval + FEED_DELAY
        self._next = (copy + 1) % len(self._free)
        self._drained = max(self._drained, header + latency + FEED_DELAY + 2)
        return header + 3 * n_tokens * self._p.chunks + FEED_DELAY + 1

    @property
    def drained(self) -> int:
        """When ``busy`` falls: every head run so far written."""
        return self._drained


def cycles(config: AccelConfig, *, n_tokens: int, dram_latency: int, constants: AttentionParams | None = None,
           record_address: int = 0) -> int:
    """Cycles from ``start`` to ``done`` of one head over ``n_tokens`` rows on a free core copy (``done``
    answers once the frame is loaded), exact when DRAM answers a command ``dram_latency`` cycles after taking
    it and then sends its words back to back (``record_address``: the record's absolute byte address, whose
    offset within a bus word adds the fields before it); :func:`drain_cycles` is when its last output is
    written, :class:`HeadSchedule` the model of several heads."""
    return HeadSchedule(config, constants).run(0, n_tokens=n_tokens, dram_latency=dram_latency,
                                              record_address=record_address)


def drain_cycles(config: AccelConfig, *, n_tokens: int, dram_latency: int, constants: AttentionParams | None = None,
                 record_address: int = 0) -> int:
    """Cycles from ``start`` until ``busy`` falls for one head alone (its last output written)."""
    sched = HeadSchedule(config, constants)
    sched.run(0, n_tokens=n_tokens, dram_latency=dram_latency, record_address=record_address)
    return sched.drained
