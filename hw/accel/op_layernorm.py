"""The ``LAYERNORM`` engine: ``dst[0 .. n-1] = layernorm_int(src[start .. start+n-1, :m])`` on the streaming
LayerNorm unit (:class:`tokensift.hw.vector.layernorm.LayerNorm`), its constants fetched from the instruction's
``LNRM`` record in DRAM (:func:`tokensift.quant.accel.records.layernorm_record`).

One generated unit serves every LayerNorm of the models of the envelope. The unit takes a layer's ``dim`` (C,
here ``m``), ``eps_int``, requantization ``multiplier`` and ``shift`` and its gamma/beta at run time through its
``k_stream``; the widths of :class:`~tokensift.quant.layernorm.LayerNormParams` (``in_bits``, ``recip_bits``,
``norm_bits``, ``gamma_bits``, ``acc_bits``, the output format) and the multiplier's and epsilon's register
widths are generation parameters the ``k_stream`` does not carry (:func:`layernorm_config`): the engine builds
the unit for ``in_bits`` = the residual width (the widest input a record may declare: a narrower one gives the
same bits, the arithmetic is exact), the other widths at :class:`LayerNormParams`' defaults (what every
LayerNorm of :class:`~tokensift.quant.integer_model.IntegerViT` and its predictors uses), int8 outputs, the
project's requantization multiplier width (:data:`tokensift.quant.qparams.MULTIPLIER_BITS`) and the widest
epsilon the unit's 62-bit variance leaves room for; a record declaring other widths is a fault.

The record (a 16-byte header, ten int64 scalars, ``dim`` int32 gamma, ``dim`` int32 beta, each array 8-byte
aligned) is fetched with one DRAM command and read one 32-bit element per cycle (:class:`RecordElements`):
the header and scalars are checked as they arrive (each element from registers, the cycle after it was read,
into a registered fault flag); then the unit's job
header is sent and the source rows start streaming (:class:`~tokensift.hw.accel.rows.RowReader`); gamma
lands in a small memory of ``ceil(width / lanes)`` words and each beat of beta leaves with its gamma word as a
constants beat; the unit's outputs are written to the destination rows as they leave.

A fault (``done`` with ``fault``, nothing written): found from the op at once (``m`` 0 or beyond the width or
a buffer's columns, a source wider than the unit's input or unsigned, a destination narrower than int8, ``arg``
not 8, a record address not 8-byte aligned or not on a bus word); from the record's header and scalars after
its fetch (tag, length, ``dim != m``, a width the unit was not built for, ``out_bits != arg``, an epsilon,
multiplier or shift beyond the unit's registers, a bus error), when the record has been read to its end; from
gamma or beta (a value beyond ``gamma_bits`` / ``acc_bits``): the unit's job runs to its end with the writes
held back. ``n = 0`` (an empty row range) writes nothing and answers 0 rows once the record is checked.

:func:`cycles` is the exact count from ``start`` to ``done``.
"""

from __future__ import annotations

import dataclasses

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from tokensift.checks import check_int
from tokensift.hw.accel.config import AccelConfig
from tokensift.hw.accel.ports import READ_LATENCY, engine_signature
from tokensift.hw.accel.rows import RowReader
from tokensift.hw.axi.config import AxiDmaConfig
from tokensift.hw.axi.reader import word_layout
from tokensift.hw.vector.layernorm import LayerNorm, LayerNormConfig
from tokensift.hw.vector.layernorm_cost import latency as unit_latency
from tokensift.hw.vector.layernorm_layout import SHIFT_BITS
from tokensift.quant.accel.isa import Buffer
from tokensift.quant.accel.records import RECORD_HEADER, SCHEMAS, Tag
from tokensift.quant.fixed import INT8
from tokensift.quant.layernorm import LayerNormParams
from tokensift.quant.qparams import MULTIPLIER_BITS

__all__ = ["LayerNormEngine", "RecordElements", "layernorm_config", "record_bytes", "record_elements", "cycles",
           "SCALARS"]

#: the LNRM record's scalars, in their order
SCALARS = SCHEMAS[Tag.LAYERNORM].scalars
#: 32-bit elements before gamma: the header and the int64 scalars
_HEAD_ELEMENTS = RECORD_HEADER // 4 + 2 * len(SCALARS)
#: cycles from the scalars' last element to the unit's first source word, at the earliest (the launch, the
#: walk's handoff, the reader's request, the port's latency, the reader's FIFO): it binds only for ``m = 1``
_FIRST_WORD = 4 + READ_LATENCY


def layernorm_config(cfg: AccelConfig) -> LayerNormConfig:
    """The LayerNorm unit of an accelerator (the module docstring says what each width is and why)."""
    if not isinstance(cfg, AccelConfig):
        raise TypeError(f"config must be an AccelConfig, not {type(cfg).__name__}")
    if cfg.lanes & (cfg.lanes - 1):
        raise ValueError(f"the LayerNorm unit needs a power-of-two number of lanes, not {cfg.lanes}")
    defaults = {f.name: f.default for f in dataclasses.fields(LayerNormParams)}
    widths = {name: defaults[name] for name in ("recip_bits", "norm_bits", "gamma_bits", "acc_bits")}
    env = cfg.envelope
    base = LayerNormConfig(c_max=env.width, lanes=cfg.lanes, in_bits=env.res_bits, out=INT8,
                           mult_bits=MULTIPLIER_BITS, eps_bits=1, **widths)
    eps_bits = min(61, ((1 << 62) - base.v_max).bit_length() - 1)
    return dataclasses.replace(base, eps_bits=eps_bits)


def record_bytes(dim: int) -> int:
    """Bytes of an LNRM record of ``dim`` channels (gamma and beta each start 8-byte aligned)."""
    return RECORD_HEADER + 8 * len(SCALARS) + 8 * (dim + dim % 2)


def record_elements(cfg: AccelConfig, dim: int) -> int:
    """32-bit elements the engine reads for the record: whole bus words."""
    width = cfg.axi.data_bytes
    return -(-record_bytes(dim) // width) * (width // 4)


def cycles(cfg: AccelConfig, *, m: int, n: int, dram_latency: int) -> int:
    """Cycles from ``start`` to ``done`` of a well-formed op with ``n >= 1`` rows of ``m`` columns, the DRAM
    answering a command ``dram_latency`` cycles after taking it and then one word per cycle (the only term that
    depends on DRAM is ``dram_latency``; the record's elements arrive at one per cycle for every bus width):

    * the op's check (2 cycles), the command (1), the DRAM's latency, the word into the element register (2);
    * the record read at one 32-bit element per cycle up to beta's last element: the header and scalars
      (``24``), gamma (``m``, plus one pad element for odd ``m``), beta (``m``);
    * that beta's constants beat: the gamma memory's read, the beat to the unit (2); for ``m = 1`` the
      source's first word is later than that beat (:data:`_FIRST_WORD` after the scalars);
    * the tokens into the unit at one word per cycle (``n ceil(m / lanes)``), then the unit's pipeline after
      the last input beat (:func:`tokensift.hw.vector.layernorm_cost.latency`) and the write of the last word
      with ``done`` (1).
    """
    ln = layernorm_config(cfg)
    m = check_int("m", m, low=1, high=ln.c_max, numpy=False)
    n = check_int("n", n, low=1, high=cfg.envelope.max_tokens, numpy=False)
    lat = check_int("dram_latency", dram_latency, low=0, numpy=False)
    words = ln.beats(m)
    return 5 + lat + _HEAD_ELEMENTS + max(2 * m + m % 2 + 2, _FIRST_WORD) + n * words + unit_latency(ln, m) + 1


class RecordElements(wiring.Component):
    """The DRAM channel's bus words (``i_data``, the AXI reader's ``o_data``) as a stream of 32-bit elements in
    address order, one per cycle (``o_elem``: ``value``, ``last`` = the command's final word's final element,
    ``error`` = that word came with a bus error)."""

    def __init__(self, *, config: AxiDmaConfig):
        if not isinstance(config, AxiDmaConfig):
            raise TypeError(f"config must be an AxiDmaConfig, not {type(config).__name__}")
        self._cfg = config
        super().__init__({
            "i_data": In(stream.Signature(word_layout(config))),
            "o_elem": Out(stream.Signature(data.StructLayout({"value": 32, "last": 1, "error": 1}))),
        })

    def elaborate(self, platform):
        m = Module()
        per_word = self._cfg.data_bytes // 4
        word = Signal(self._cfg.data_bits)
        index = Signal(range(per_word))
        last_word, error = Signal(), Signal()
        have = Signal()
        final = index == per_word - 1
        took = self.o_elem.valid & self.o_elem.ready
        m.d.comb += [self.o_elem.valid.eq(have), self.o_elem.payload.value.eq(word[:32]),
                     self.o_elem.payload.last.eq(last_word & final), self.o_elem.payload.error.eq(error),
                     self.i_data.ready.eq(~have | (took & final))]
        with m.If(took):  # the word shifts down: the next element is always its low 32 bits (no wide mux)
            m.d.sync += [word.eq(word >> 32), index.eq(index + 1)]
            with m.If(final):
                m.d.sync += [have.eq(0), index.eq(0)]
        with m.If(self.i_data.valid & self.i_data.ready):
            p = self.i_data.payload
            m.d.sync += [word.eq(p.data), have.eq(1), index.eq(0), last_word.eq(p.last), error.eq(p.error)]
        return m


# the record's reading phases
_HEAD, _GAMMA, _PAD, _BETA, _TAIL, _END = range(6)
# the engine's control states
_IDLE, _CHECK, _CMD, _FETCH, _LAUNCH, _RUN = range(6)


class LayerNormEngine(wiring.Component):
    """See the module docstring; ports as :func:`tokensift.hw.accel.ports.engine_signature` (one read port, the
    DRAM channel)."""

    def __init__(self, *, config: AccelConfig):
        if not isinstance(config, AccelConfig):
            raise TypeError(f"config must be an AccelConfig, not {type(config).__name__}")
        self._unit = layernorm_config(config)
        longest = record_bytes(config.envelope.width)
        if longest >= 1 << config.axi.length_bits:
            raise ValueError(f"the AXI reader's {config.axi.length_bits}-bit length cannot fetch a "
                             f"{longest}-byte LayerNorm record")
        self._cfg = config
        super().__init__(engine_signature(config))

    @property
    def unit_config(self) -> LayerNormConfig:
        return self._unit

    def elaborate(self, platform):
        m = Module()
        cfg, u = self._cfg, self._unit
        env = cfg.envelope
        lanes = cfg.lanes
        lane_bits = ceil_log2(lanes)
        bank_bits = ceil_log2(cfg.banks)
        m.submodules.unit = unit = LayerNorm(config=u)
        m.submodules.reader = reader = RowReader(config=cfg)
        m.submodules.record = rec = RecordElements(config=cfg.axi)
        wiring.connect(m, reader.rd, wiring.flipped(self.rd))
        wiring.connect(m, wiring.flipped(self.dram_data), rec.i_data)

        # -- the op, latched at start with its checks and its word count: the compares (carry chains of the
        # op's fields) end in registers, not in the resets and enables the check's outcome fans out to
        op = Signal.like(self.op)
        state = Signal(range(6))
        new = self.op
        words = Signal(cfg.word_bits + 1)
        src_ok = Signal()
        dst_ok = Signal()
        for b in Buffer:
            g = cfg.geometry(b)
            with m.If(new.src == b):
                m.d.comb += src_ok.eq(Const(int(g.signed and g.bits <= u.in_bits)) & (new.m <= g.cols))
            with m.If(new.dst == b):
                m.d.comb += dst_ok.eq(Const(int(g.signed and g.bits >= u.out.bits and g.rows >= env.max_tokens))
                                      & (new.m <= g.cols))
        word_mask = cfg.axi.data_bytes - 1
        aligned = ((new.memory_base[:8] + new.addr_a[:8]) & word_mask) == 0
        op_fault = Signal()
        with m.If(self.start):
            m.d.sync += [op.eq(new), state.eq(_CHECK), words.eq((new.m + lanes - 1) >> lane_bits),
                         op_fault.eq((new.m == 0) | (new.m > u.c_max) | ~src_ok | ~dst_ok | (new.arg != u.out.bits) |
                                     (new.addr_a[:3] != 0) | ~aligned)]
        rec_addr = Signal(cfg.axi.addr_width)
        rec_length = Signal(cfg.axi.length_bits)
        m.d.comb += [self.dram_cmd.payload.addr.eq(rec_addr), self.dram_cmd.payload.length.eq(rec_length),
                     self.dram_cmd.valid.eq(state == _CMD)]
        m.d.sync += [self.done.eq(0), self.fault.eq(0)]
        bad = Signal()          # the record is malformed: nothing is written, the op ends in a fault
        rec_done = Signal()     # the record's last element was read
        out_done = Signal()     # the unit's last output was written
        job = Signal()          # the unit runs a job for this op
        with m.Switch(state):
            with m.Case(_CHECK):
                with m.If(op_fault):
                    m.d.sync += [state.eq(_IDLE), self.done.eq(1), self.fault.eq(1), self.rows.eq(0)]
                with m.Else():
                    m.d.sync += [state.eq(_CMD), rec_addr.eq(op.memory_base + op.addr_a),
                                 rec_length.eq(RECORD_HEADER + 8 * len(SCALARS) + ((op.m + op.m[0]) << 3)),
                                 bad.eq(0), rec_done.eq(0), out_done.eq(0), job.eq(0)]
            with m.Case(_CMD):
                with m.If(self.dram_cmd.ready):
                    m.d.sync += state.eq(_FETCH)

        # -- the record, one element per cycle ------------------------------------------------------------
        elem = rec.o_elem.payload
        value = elem.value
        phase = Signal(range(6))
        count = Signal(range(max(_HEAD_ELEMENTS, u.c_max) + 1))   # elements of the phase read so far
        lane = Signal(range(lanes))
        stall = Signal()
        take = Signal()
        m.d.comb += [rec.o_elem.ready.eq((state != _IDLE) & (state != _CHECK) & ~stall),
                     take.eq(rec.o_elem.valid & rec.o_elem.ready)]
        with m.If((state == _CHECK) & ~op_fault):
            m.d.sync += [phase.eq(_HEAD), count.eq(0), lane.eq(0)]

        # every element is checked from registers one cycle after it was taken (its value, phase and index
        # copied at the take), so the compares and the choice among them end in ``bad``, not in the take's
        # fan-out; _LAUNCH, in the cycle the header's last element is checked, adds that element's own check
        # (the high word of the last scalar: zero), a short path
        chk_v = Signal()
        chk_val = Signal(32)
        chk_cnt = Signal.like(count)
        chk_phase = Signal.like(phase)
        chk_error = Signal()
        chk_last = Signal()
        m.d.sync += [chk_v.eq(take), chk_val.eq(value), chk_cnt.eq(count), chk_phase.eq(phase),
                     chk_error.eq(elem.error), chk_last.eq(elem.last)]

        # the header and scalars: element i checked on its own, the results gathered in ``bad``
        expected = Signal(32)
        m.d.comb += expected.eq(rec_length)
        eps = Signal(u.eps_bits)
        multiplier = Signal(u.mult_bits)
        shift = Signal(SHIFT_BITS)
        head_ok = Signal()
        value = chk_val
        lo_fits = {name: value < (1 << bits) for name, bits in (("eps", min(32, u.eps_bits)),
                                                                ("multiplier", u.mult_bits))}
        hi_zero = value == 0
        with m.Switch(Mux(chk_v & (chk_phase == _HEAD), chk_cnt, _HEAD_ELEMENTS)):  # nothing captured otherwise
            with m.Case(0):
                m.d.comb += head_ok.eq(value == Tag.LAYERNORM)
            with m.Case(1):
                m.d.comb += head_ok.eq(value == expected)
            with m.Case(2, 3):
                m.d.comb += head_ok.eq(1)
            for i, name in enumerate(SCALARS):
                lo, hi = 4 + 2 * i, 5 + 2 * i
                with m.Case(lo):
                    if name == "dim":
                        m.d.comb += head_ok.eq(value == op.m)
                    elif name == "in_bits":
                        m.d.comb += head_ok.eq((value >= 2) & (value <= u.in_bits))
                    elif name == "eps_int":
                        m.d.comb += head_ok.eq(lo_fits["eps"])
                        m.d.sync += eps[:32].eq(value)
                    elif name == "multiplier":
                        m.d.comb += head_ok.eq(lo_fits["multiplier"] & (value != 0))
                        m.d.sync += multiplier.eq(value)
                    elif name == "shift":
                        m.d.comb += head_ok.eq(value <= 62)
                        m.d.sync += shift.eq(value)
                    elif name == "out_bits":
                        m.d.comb += head_ok.eq(value == u.out.bits)
                    else:  # a width of the unit
                        m.d.comb += head_ok.eq(value == getattr(u, name))
                with m.Case(hi):
                    if name == "eps_int" and u.eps_bits > 32:
                        m.d.comb += head_ok.eq((value < (1 << (u.eps_bits - 32))) & ((value != 0) | (eps[:32] != 0)))
                        m.d.sync += eps[32:].eq(value)
                    elif name == "eps_int":
                        m.d.comb += head_ok.eq(hi_zero & (eps != 0))
                    else:
                        m.d.comb += head_ok.eq(hi_zero)
        # gamma and beta must fit the unit's widths (the reference's LayerNormParams checks the same)
        g_fits = (value[u.gamma_bits - 1:] == 0) | (value[u.gamma_bits - 1:] == (1 << (33 - u.gamma_bits)) - 1)
        b_fits = ((value[u.acc_bits - 1:] == 0) | (value[u.acc_bits - 1:] == (1 << (33 - u.acc_bits)) - 1)
                  if u.acc_bits < 32 else Const(1))

        # gamma words land in the constants memory; each beta word leaves with its gamma word
        nb_max = u.beats_max
        consts_l = unit.k_stream.payload.data.consts.shape()
        gamma_l = consts_l.members["gamma"]
        m.submodules.gamma = gmem = Memory(shape=gamma_l, depth=nb_max, init=[])
        gw, gr = gmem.write_port(), gmem.read_port()
        g_word = Signal(gamma_l)
        b_word = Signal(consts_l.members["beta"])
        b_beat = Signal.like(b_word)
        g_write, b_ready = Signal(), Signal()
        g_addr = Signal(range(nb_max))
        b_addr = Signal(range(nb_max))
        kv = Signal()          # a constants beat waits on k_stream
        k_last = Signal()
        hdr_pending = Signal()
        beat_end = (lane == lanes - 1) | (count + 1 == op.m)
        k_ready = unit.k_stream.ready
        advance = ~kv | (k_ready & ~hdr_pending)
        m.d.comb += [gw.en.eq(g_write), gw.addr.eq(g_addr), gw.data.eq(g_word),
                     gr.addr.eq(b_addr), gr.en.eq(b_ready & advance),
                     stall.eq((phase == _BETA) & b_ready & ~advance)]
        with m.If(g_write):
            m.d.sync += [g_write.eq(0), g_addr.eq(g_addr + 1)]
        with m.If(b_ready & advance):
            m.d.sync += [b_ready.eq(0), b_beat.eq(b_word), kv.eq(job), k_last.eq(b_addr + 1 == words),
                         b_addr.eq(b_addr + 1)]
        with m.Elif(advance):
            m.d.sync += kv.eq(0)
        with m.If((state == _CHECK) & ~op_fault):
            m.d.sync += [g_addr.eq(0), b_addr.eq(0), g_write.eq(0), b_ready.eq(0), kv.eq(0)]

        with m.If(chk_v):
            with m.If(chk_error | ((chk_phase == _HEAD) & ~head_ok) | ((chk_phase == _GAMMA) & ~g_fits)
                      | ((chk_phase == _BETA) & ~b_fits)):
                m.d.sync += bad.eq(1)
            with m.If(chk_last):  # whatever the phase: the record ends here, its last element checked
                m.d.sync += rec_done.eq(1)
        with m.If(take):
            m.d.sync += count.eq(count + 1)
            with m.Switch(phase):
                with m.Case(_HEAD):
                    with m.If(count == _HEAD_ELEMENTS - 1):
                        m.d.sync += [phase.eq(_GAMMA), count.eq(0), state.eq(_LAUNCH)]
                with m.Case(_GAMMA, _BETA):
                    m.d.sync += lane.eq(Mux(beat_end, 0, lane + 1))
                    with m.If(phase == _GAMMA):
                        m.d.sync += g_word[lane].eq(elem.value)
                        with m.If(beat_end):
                            m.d.sync += g_write.eq(1)
                    with m.Else():
                        m.d.sync += b_word[lane].eq(elem.value)
                        with m.If(beat_end):
                            m.d.sync += b_ready.eq(1)
                    with m.If(count + 1 == op.m):
                        m.d.sync += count.eq(0)
                        with m.If(phase == _BETA):
                            m.d.sync += phase.eq(_TAIL)
                        with m.Elif(op.m[0]):
                            m.d.sync += phase.eq(_PAD)
                        with m.Else():
                            m.d.sync += phase.eq(_BETA)
                with m.Case(_PAD):
                    m.d.sync += [phase.eq(_BETA), count.eq(0)]
            with m.If(elem.last):  # whatever the phase: the record ends here
                m.d.sync += phase.eq(_END)

        # -- the job: the unit's header and the source rows once the scalars passed --------------------------
        hdr = unit.k_stream.payload.data.header
        with m.If(hdr_pending):
            m.d.comb += [hdr.dim.eq(op.m), hdr.n_tokens.eq(op.n), hdr.eps.eq(eps), hdr.multiplier.eq(multiplier),
                         hdr.shift.eq(shift)]
        with m.Else():
            m.d.comb += [unit.k_stream.payload.data.consts.gamma.eq(gr.data),
                         unit.k_stream.payload.data.consts.beta.eq(b_beat), unit.k_stream.payload.last.eq(k_last)]
        m.d.comb += unit.k_stream.valid.eq(hdr_pending | kv)
        with m.If(hdr_pending & k_ready):
            m.d.sync += hdr_pending.eq(0)
        walk = reader.i_walk
        walk_pending = Signal()
        m.d.comb += [walk.valid.eq(walk_pending), walk.payload.buffer.eq(op.src), walk.payload.row0.eq(op.start),
                     walk.payload.rows.eq(op.n), walk.payload.word0.eq(0), walk.payload.words.eq(words)]
        with m.If(walk.ready):
            m.d.sync += walk_pending.eq(0)
        # what _LAUNCH reads: ``bad`` holds every element's check but the header's last one's, checked now
        assert _HEAD_ELEMENTS - 1 == 5 + 2 * (len(SCALARS) - 1) and SCALARS[-1] != "eps_int"
        last_bad = chk_error | (chk_val != 0)
        with m.If(state == _LAUNCH):
            with m.If(bad | last_bad | (op.n == 0)):
                m.d.sync += [state.eq(_RUN), out_done.eq(1)]
            with m.Else():
                m.d.sync += [state.eq(_RUN), job.eq(1), hdr_pending.eq(1), walk_pending.eq(1)]

        src = reader.o_word
        m.d.comb += [unit.i_stream.valid.eq(src.valid), src.ready.eq(unit.i_stream.ready),
                     unit.i_stream.payload.last.eq(src.payload.last)]
        for i in range(lanes):
            m.d.comb += unit.i_stream.payload.data[i].eq(src.payload.data[i])

        # -- the outputs, written in the order they leave ----------------------------------------------------
        out = unit.o_stream
        row = Signal(cfg.row_bits)
        w = Signal(cfg.word_bits + 1)
        cols_left = Signal(signed(18))
        m.d.comb += [out.ready.eq(1), cols_left.eq(op.m - (w << lane_bits)),
                     self.wr.en.eq(out.valid & ~bad), self.wr.buffer.eq(op.dst),
                     self.wr.tile.eq(row >> bank_bits), self.wr.word.eq(w)]
        for bank in range(cfg.banks):
            for i in range(lanes):
                m.d.comb += [self.wr.data[bank][i].eq(out.payload.data[i]),
                             self.wr.mask[bank][i].eq((row[:bank_bits] == bank if bank_bits else 1) &
                                                      (cols_left > i))]
        with m.If(out.valid):
            with m.If(out.payload.token_last):
                m.d.sync += [w.eq(0), row.eq(row + 1)]
            with m.Else():
                m.d.sync += w.eq(w + 1)
            with m.If(out.payload.last):
                m.d.sync += [out_done.eq(1), row.eq(0), w.eq(0)]

        with m.If((state == _RUN) & rec_done & out_done):
            m.d.sync += [state.eq(_IDLE), self.done.eq(1), self.fault.eq(bad), self.rows.eq(Mux(bad, 0, op.n)),
                         job.eq(0)]

        # the unit's saturation counts (since reset, as the residual adder's), summed and clipped to 16 bits
        total = Signal(unsigned(u.counter_bits + 1))
        m.d.sync += total.eq(unit.status.acc_overflows + unit.status.out_overflows)
        m.d.comb += self.overflows.eq(Mux(total >= 1 << 16, (1 << 16) - 1, total))
        return m

