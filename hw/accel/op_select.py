"""The ``SELECT`` engine: one token-selection stage over the residual buffer ``X``, with the semantics of the
reference sequencer's ``_Sequencer.select`` (:mod:`tokensift.quant.accel.executor`).

Per stage: fetch the stage's ``STGE`` record (its tag, length and method checked against the method
register), stream one unsigned 16-bit key per candidate into the token selector
(:class:`tokensift.hw.selector.core.Selector`, built without features: it ranks and lists the kept
candidates in order, ties to the lower index as :func:`tokensift.quant.select.topk_keep`), then compact ``X``
in place: each kept candidate's row (every column of the buffer) moves up behind the protected rows, one
word per cycle. Rows only ever move up, and a row is read before any later write reaches it.

Methods:

* **DynamicViT**: the keys are the ``S`` buffer's logit differences (column 0 of the instruction's ``src``,
  one per candidate, sign bit inverted: :func:`tokensift.quant.select.order_key`), top-k with ``k =
  min(STAGE_KEEP[s], candidates)``; the ``P`` protected rows stay. The op's ``n`` is ``count[src]`` (the
  candidates), so the engine takes ``count[X] = n + P`` (the reference checks ``count[src] == count[X] - P``;
  the op carries no ``count[X]`` to check it against).
* EViT, AS-ViT, SaiT and SPViT are not built yet: their ``SELECT`` is a fault.

A fault (``done`` + ``fault``, nothing written): ``dst`` is not ``X``, the stage index has no registers
(``arg >= stages``), the method register is not one this engine runs, the record's offset is not 8-byte
aligned, its tag, length or method is wrong, the protected count is 0, the candidates and protected rows
exceed the envelope, or a score does not fit 16 signed bits (the faults of the record and the scores come
after the record's fetch and the selector's pass; still nothing is written).

``protected_out`` (the protected count after the stage) and ``stage_ran`` (the stage changed the tokens)
are valid with ``done``; :func:`cycles` is the exact cycle count at a fixed DRAM latency.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from tokensift.checks import check_int
from tokensift.hw.accel.config import AccelConfig
from tokensift.hw.accel.ports import engine_signature
from tokensift.hw.accel.rows import RowReader
from tokensift.hw.accel.sequencer import registers_layout
from tokensift.hw.selector.core import Selector
from tokensift.hw.selector.core import cycle_breakdown as selector_cycles
from tokensift.quant.accel.isa import Buffer
from tokensift.quant.accel.records import RECORD_HEADER, SCHEMAS, Tag
from tokensift.quant.accel.registers import METHODS
from tokensift.quant.select import Mode, SelectorParams, Status
from tokensift.quant.stages.predictor import LOGIT_BITS

__all__ = ["SelectEngine", "cycles", "record_words", "SUPPORTED_METHODS", "RECORD_BYTES"]

#: the methods whose stages this engine runs (the others' ``SELECT`` is a fault)
SUPPORTED_METHODS = ("dynamicvit",)
_STAGE_SCALARS = SCHEMAS[Tag.STAGE].scalars
#: bytes of a ``STGE`` record the engine reads: its header and scalars (SPViT's nested references follow)
RECORD_BYTES = RECORD_HEADER + 8 * len(_STAGE_SCALARS)
#: byte offset in the record of each scalar the engine checks or uses
_FIELD_AT = {"header": 0, **{name: RECORD_HEADER + 8 * i for i, name in enumerate(_STAGE_SCALARS)}}


def _selector_params(cfg: AccelConfig) -> SelectorParams:
    """The token selector the engine is built with: keys only (a dummy one-element feature per token)."""
    return SelectorParams(n_max=max(2, cfg.envelope.max_tokens), dim=1, lanes=1, score_bits=LOGIT_BITS,
                          feature_bits=2)


def record_words(cfg: AccelConfig, record_offset: int) -> int:
    """Bus words of the record's read: its header and scalars, from the bus word holding its first byte
    (``record_offset`` is ``MEMORY_BASE`` plus the instruction's offset)."""
    db = cfg.axi.data_bytes
    return -(-(record_offset % db + RECORD_BYTES) // db)


def cycles(cfg: AccelConfig, *, candidates: int, kept: int, latency: int, record_offset: int = 0) -> int:
    """Cycles from ``start`` to ``done`` of a stage that does not fault, with the DRAM answering ``latency``
    cycles after it accepts the record's read (the only term that depends on the DRAM) and no gaps.

    With ``N = candidates + 1`` selector tokens (the class token's dummy key first), ``k`` = ``kept`` candidates
    and ``B`` = the words of a row of ``X``::

        12 + latency + record words     start, checks, the record's read, its checks, the selector's command;
                                        the class token's key, the score walk's read latency, the frame
        + the selector's load, search,  :func:`tokensift.hw.selector.core.cycle_breakdown` (one key per
          compaction and header        cycle)
        + k * (B + 1)                   each kept row: its walk, then B words read and written
        + 8 if k > 0                    the selector's output and the last row's read latency
    """
    check_int("candidates", candidates, low=0, high=cfg.envelope.max_tokens - 1, numpy=False)
    check_int("kept", kept, low=0, high=candidates, numpy=False)
    check_int("latency", latency, low=0, numpy=False)
    check_int("record_offset", record_offset, low=0, numpy=False)
    parts = selector_cycles(_selector_params(cfg), n_tokens=candidates + 1, kept=kept + 1, mode=Mode.TOPK)
    selector = parts["load"] + parts["search"] + parts["compact"] + parts["header"]
    words = cfg.geometry(Buffer.X).words
    return 12 + latency + record_words(cfg, record_offset) + selector + kept * (words + 1) + (8 if kept else 0)


class SelectEngine(wiring.Component):
    """See the module docstring. Ports: :func:`tokensift.hw.accel.ports.engine_signature` (DRAM channel, no
    ``rd2``) plus ``regs`` (the run-time registers), ``protected_out`` and ``stage_ran``."""

    def __init__(self, *, config: AccelConfig):
        if not isinstance(config, AccelConfig):
            raise TypeError(f"config must be an AccelConfig, not {type(config).__name__}")
        self._cfg = config
        members = dict(engine_signature(config, dram=True).members)
        members.update(regs=In(registers_layout()), protected_out=Out(config.row_bits), stage_ran=Out(1))
        super().__init__(wiring.Signature(members))

    @property
    def config(self) -> AccelConfig:
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        env = cfg.envelope
        axi = cfg.axi
        db = axi.data_bytes
        row_bits = cfg.row_bits
        bank_bits = ceil_log2(cfg.banks)
        lanes = cfg.lanes
        gx = cfg.geometry(Buffer.X)
        params = _selector_params(cfg)

        m.submodules.reader = reader = RowReader(config=cfg)
        wiring.connect(m, reader.rd, wiring.flipped(self.rd))
        m.submodules.selector = sel = Selector(n_max=params.n_max, dim=params.dim, lanes=params.lanes,
                                               score_bits=params.score_bits, feature_bits=params.feature_bits)

        op = Signal.like(self.op)
        method = Signal(3)
        keep_reg = Signal(16)
        cand = Signal(row_bits)          # candidates: the op's n
        k = Signal(row_bits)             # candidates to keep
        m.d.sync += [self.done.eq(0), self.fault.eq(0)]
        m.d.comb += self.overflows.eq(0)

        # -- the record: one read of its header and scalars, word-aligned down ----------------------
        rec_addr = Signal(axi.addr_width)
        m.d.comb += rec_addr.eq(op.memory_base + op.addr_a)
        skew_bits = ceil_log2(db) - 3 if db > 8 else 0
        pos = Signal(range(-db, RECORD_BYTES + 2 * db))   # offset in the record of the next bus word's byte 0
        piece = min(db, 8)
        fields = {name: Signal(64, name=f"rec_{name}") for name in ("header", "method", "nrefs")}
        word = self.dram_data.payload.data

        walk = reader.i_walk
        out = reader.o_word
        first = Signal()          # the class token's key is still to be sent
        walked = Signal()         # the score walk was handed to the reader
        scored = Signal(row_bits)
        feats = Signal(row_bits + 1)
        bad_score = Signal()
        discard = Signal()        # a fault found after the selector's pass: drain it, write nothing
        dst_row = Signal(row_bits)

        def fault():
            m.d.sync += [self.done.eq(1), self.fault.eq(1), self.rows.eq(0), self.stage_ran.eq(0)]
            m.next = "IDLE"

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [op.eq(self.op), method.eq(self.regs.method),
                                 keep_reg.eq(self.regs.keep[self.op.arg[:3]])]
                    m.next = "CHECK"
            with m.State("CHECK"):
                supported = 0
                for name in SUPPORTED_METHODS:
                    supported = supported | (method == METHODS.index(name))
                bad = ((op.dst != Buffer.X) | (op.arg >= env.stages) | ~supported | (op.addr_a[:3] != 0) |
                       (op.protected == 0) | (op.n + op.protected > env.max_tokens))
                m.d.sync += [cand.eq(op.n), k.eq(Mux(keep_reg < op.n, keep_reg, op.n)), first.eq(1),
                             walked.eq(0), scored.eq(0), feats.eq(0), bad_score.eq(0), discard.eq(0),
                             dst_row.eq(op.protected)]
                m.d.sync += pos.eq(-(rec_addr[3:3 + skew_bits] << 3) if skew_bits else 0)
                with m.If(bad):
                    fault()
                with m.Else():
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += [self.dram_cmd.valid.eq(1),
                             self.dram_cmd.payload.addr.eq(rec_addr & ~(db - 1)),
                             self.dram_cmd.payload.length.eq(RECORD_BYTES - pos)]
                with m.If(self.dram_cmd.ready):
                    m.next = "RECORD"
            with m.State("RECORD"):
                m.d.comb += self.dram_data.ready.eq(1)
                with m.If(self.dram_data.valid):
                    m.d.sync += pos.eq(pos + db)
                    for j in range(db // piece):
                        for name, f in fields.items():
                            for h in range(8 // piece):
                                with m.If(pos == _FIELD_AT[name] + h * piece - j * piece):
                                    m.d.sync += f[8 * piece * h:8 * piece * (h + 1)].eq(
                                        word[8 * piece * j:8 * piece * (j + 1)])
                    with m.If(self.dram_data.payload.last):
                        m.next = "RECORD_CHECK"
            with m.State("RECORD_CHECK"):
                tag, length = fields["header"][:32], fields["header"][32:]
                nrefs = fields["nrefs"]
                # the length follows from nrefs (4-byte references, the record 8-byte aligned), as decode_record
                want = RECORD_BYTES + ((nrefs[:29] + 1) >> 1 << 3)
                good = ((tag == Tag.STAGE) & (nrefs[29:] == 0) & (length == want) & (fields["method"][3:] == 0) &
                        (fields["method"][:3] == method))
                with m.If(~good):
                    fault()
                with m.Else():
                    m.next = "COMMAND"
            with m.State("COMMAND"):
                m.d.comb += [sel.i_cmd.valid.eq(1), sel.i_cmd.payload.mode.eq(Mode.TOPK),
                             sel.i_cmd.payload.n_tokens.eq(cand + 1), sel.i_cmd.payload.k.eq(k),
                             sel.i_cmd.payload.threshold.eq(0)]
                with m.If(sel.i_cmd.ready):
                    m.next = "SCORES"
            with m.State("SCORES"):
                # the reader walks column 0 of the candidates' score rows; the class token's key goes first
                m.d.comb += [walk.valid.eq(~walked & (cand != 0)), walk.payload.buffer.eq(op.src),
                             walk.payload.row0.eq(0), walk.payload.rows.eq(cand), walk.payload.word0.eq(0),
                             walk.payload.words.eq(1)]
                with m.If(walk.valid & walk.ready):
                    m.d.sync += walked.eq(1)
                value = out.payload.data[0]
                m.d.comb += [sel.i_score.valid.eq(first | out.valid),
                             sel.i_score.payload.eq(Mux(first, 0, value[:LOGIT_BITS] ^ (1 << (LOGIT_BITS - 1)))),
                             out.ready.eq(~first & sel.i_score.ready)]
                with m.If(sel.i_score.ready):
                    m.d.sync += first.eq(0)
                with m.If(out.valid & out.ready):
                    m.d.sync += [scored.eq(scored + 1),
                                 bad_score.eq(bad_score | (value[LOGIT_BITS] != value[LOGIT_BITS - 1]))]
                with m.If(~first & (scored == cand)):
                    m.next = "FRAME"
            with m.State("FRAME"):
                m.d.comb += sel.o_frame.ready.eq(1)
                with m.If(sel.o_frame.valid):
                    m.d.sync += discard.eq(bad_score | (sel.o_frame.payload.status != Status.OK))
                    m.next = "COMPACT"
            with m.State("COMPACT"):
                tok = sel.o_token
                candidate = tok.payload.index != 0
                m.d.comb += [tok.ready.eq(~candidate | discard | walk.ready),
                             walk.valid.eq(tok.valid & candidate & ~discard), walk.payload.buffer.eq(Buffer.X),
                             walk.payload.row0.eq(op.protected + tok.payload.index - 1), walk.payload.rows.eq(1),
                             walk.payload.word0.eq(0), walk.payload.words.eq(gx.words)]
                with m.If(tok.valid & tok.ready & tok.payload.last):
                    m.next = "FINISH"
            with m.State("FINISH"):
                with m.If(~reader.busy):
                    m.d.sync += [self.done.eq(1), self.fault.eq(discard), self.rows.eq(Mux(discard, 0, dst_row)),
                                 self.protected_out.eq(op.protected), self.stage_ran.eq(~discard)]
                    m.next = "IDLE"

        # the selector ranks keys only: one dummy feature beat per token
        m.d.comb += [sel.i_feature.valid.eq(fsm.ongoing("SCORES") & (feats <= cand)), sel.i_feature.payload.eq(0)]
        with m.If(sel.i_feature.valid & sel.i_feature.ready):
            m.d.sync += feats.eq(feats + 1)

        # -- compaction: each kept candidate's row, word by word, to the next row behind the kept ones ---
        writing = fsm.ongoing("COMPACT") | fsm.ongoing("FINISH")
        last_word = out.payload.w == gx.words - 1
        with m.If(writing):
            m.d.comb += out.ready.eq(1)
        m.d.comb += [self.wr.en.eq(writing & out.valid & ~discard), self.wr.buffer.eq(Buffer.X),
                     self.wr.tile.eq(dst_row >> bank_bits), self.wr.word.eq(out.payload.w)]
        for bank in range(cfg.banks):
            for i in range(lanes):
                # column w * lanes + i exists in X: w below a constant per lane (no multiplier)
                m.d.comb += [self.wr.data[bank][i].eq(out.payload.data[i]),
                             self.wr.mask[bank][i].eq((dst_row[:bank_bits] == bank if bank_bits else 1) &
                                                      (out.payload.w < -(-(gx.cols - i) // lanes)))]
        with m.If(self.wr.en & last_word):
            m.d.sync += dst_row.eq(dst_row + 1)
        return m
