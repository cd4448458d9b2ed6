"""The ``SELECT`` engine: one token-selection stage over the residual buffer ``X``, with the semantics of the
reference sequencer's ``_Sequencer.select`` (:mod:`tokensift.quant.accel.executor`).

Per stage: fetch the stage's ``STGE`` record (its tag, length and method checked against the method
register; EViT's fuse flag read from it), stream the tokens' rows of ``X`` and one unsigned 16-bit key per
token into the token selector (:class:`tokensift.hw.selector.core.Selector`: top-k or SaiT's mass rule,
ties to the lower index, the kept tokens out in order, EViT's fused token by its sum package rule), then
write the kept tokens back into ``X`` from the first row after the protected ones, one word per cycle (the
selector holds the rows, so writing over them is safe). The rows past the new count keep what they held.

Methods (the method register picks one at run time):

* **DynamicViT**: the selector's tokens are a dummy class token then the candidates ``X[P:]``; the keys are
  column 0 of the instruction's ``src`` (the ``S`` buffer's logit differences, one per candidate) with the
  sign bit inverted (:func:`tokensift.quant.select.order_key`); top-k with ``k = min(STAGE_KEEP[s],
  candidates)``; the ``P`` protected rows stay. The op's ``n`` is ``count[src]`` (the candidates), so the
  engine takes ``count[X] = n + P``: the reference's check ``count[src] == count[X] - P`` needs a
  ``count[X]`` the op does not carry.
* **EViT**: the keys are the heads' mean class attention (the score combiner,
  :class:`tokensift.hw.score_combiner.core.ScoreCombiner`, over the ``CLS`` rows with the weights
  :func:`tokensift.quant.stages.evit.equal_head_weights`), top-k with ``k = min(STAGE_KEEP[s], n - 1)``,
  then the fused token ``fit(round_shift(sum_pruned a_i x_i, 15))`` appended when the record's option says
  so (all zeros when nothing was pruned, as :func:`tokensift.quant.select.package_token`).
* **SaiT**: the same keys, the selector's mass rule with ``mass = DENSITY``; at ``DENSITY = 1.0``
  (:data:`~tokensift.quant.accel.registers.MASS_ONE`) the stage leaves everything as it was (``stage_ran``
  0, nothing read but the record).
* **AS-ViT**: first the head weights from the heads' int8 outputs in ``A``
  (:func:`tokensift.quant.stages.asvit.token_head_weights`, or with the record's image option
  :func:`tokensift.quant.select.head_importance` over every token): the squares of a word's ``lanes``
  values (registered inputs and products, a registered adder tree) summed per head, a restoring square
  root and a restoring divider one bit per cycle (``(norm << 16) // total``, rounded half up; equal weights
  when every norm is 0); the token rule's weights go to a small memory read out lane-aligned with the
  class rows (the combiner's per-token mode). Then the combiner's scores, the selector's threshold mode
  with ``STAGE_THRESHOLD[s]``. The serial root and divider make the token rule cost about ``H * (R + 21)``
  cycles per token (``R`` = :func:`_root_iters`), far more than the selection itself: the place to
  pipeline first.
* SPViT (its nested predictors and head-weight branch) is not built: its ``SELECT`` is a fault.

For EViT, SaiT and AS-ViT the op's ``n`` is ``count[A]`` and must equal ``n2 = count[CLS]`` (the attention ran over
the tokens); it is taken as ``count[X]``, which the op does not carry to check against.

A fault (``done`` + ``fault``, nothing written): ``dst`` is not ``X``, the rows mode is not ``ALL`` (the
op's ``n`` would not be ``count[src]``; the reference ignores the field), the stage index has no registers
(``arg >= stages``), the method register is not one this engine runs, the record's offset is not 8-byte
aligned, the protected count is 0 (or not 1 for the attention-scored methods, whose stages protect the class
token only), the tokens exceed the envelope (EViT's fused token included), their ``src``/``src2`` are not
``A``/``CLS`` or their counts differ or are 0; after the record's read: its tag, length (from its
``nrefs``) or method is wrong; after the selector's load: a DynamicViT score does not fit 16 signed bits,
or the selector refuses the frame (a density above 1.0).

``protected_out`` (the protected count after the stage) and ``stage_ran`` (the stage changed the tokens)
are valid with ``done``; ``overflows`` counts the saturated scores and fused-token values since reset (the
selector's and the combiner's counters, saturating at 16 bits). :func:`cycles` is the exact cycle count at a
fixed DRAM latency.

Memory: the selector's feature memory holds a copy of the stage's tokens (``max_tokens x width`` values of
``res_bits``, one more ``X``-sized memory); the combiner's accumulators, the selector's score and list
memories and AS-ViT's weight memory (``heads x max_tokens`` 16-bit weights) are ``max_tokens`` deep.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from tokensift.checks import check_bool, check_int
from tokensift.hw.accel.config import AccelConfig
from tokensift.hw.accel.ports import READ_LATENCY, OpEngine, check_config
from tokensift.hw.accel.rows import RecordFields, RowReader
from tokensift.hw.accel.sequencer import registers_layout
from tokensift.hw.common.skid import SkidBuffer
from tokensift.hw.score_combiner.core import CombinerParams, ScoreCombiner, combiner_cycles
from tokensift.hw.selector.core import Selector
from tokensift.hw.selector.core import cycle_breakdown as selector_cycles
from tokensift.quant.accel.isa import Buffer, Rows
from tokensift.quant.accel.records import RECORD_HEADER, SCHEMAS, Tag
from tokensift.quant.accel.registers import MASS_ONE, METHODS
from tokensift.quant.fixed import round_shift
from tokensift.quant.select import SCORE_FORMAT, Mode, SelectorParams, Status
from tokensift.quant.stages.evit import HEAD_WEIGHT_FRAC, equal_head_weights
from tokensift.quant.stages.predictor import LOGIT_BITS
from tokensift.quant.stages.sait import MASS_FRAC

__all__ = ["SelectEngine", "cycles", "asvit_weight_cycles", "record_words", "SUPPORTED_METHODS", "RECORD_BYTES"]

#: the methods whose stages this engine runs (the others' ``SELECT`` is a fault)
SUPPORTED_METHODS = ("dynamicvit", "evit", "sait", "asvit")
_STAGE_SCALARS = SCHEMAS[Tag.STAGE].scalars
#: bytes of a ``STGE`` record the engine reads: its header and scalars (SPViT's nested references follow)
RECORD_BYTES = RECORD_HEADER + 8 * len(_STAGE_SCALARS)
#: byte offset in the record of each scalar the engine checks or uses
_FIELD_AT = {"header": 0, **{name: RECORD_HEADER + 8 * i for i, name in enumerate(_STAGE_SCALARS)}}


def _selector_params(cfg: AccelConfig) -> SelectorParams:
    """The token selector the engine is built with: X's rows as its features, the sum package rule on
    15-fractional-bit scores (EViT's fused token), SaiT's mass mode."""
    env = cfg.envelope
    return SelectorParams(n_max=max(2, env.max_tokens), dim=env.width, lanes=cfg.lanes, score_bits=LOGIT_BITS,
                          feature_bits=env.res_bits, package=True, weight_frac=SCORE_FORMAT.frac, mass=True,
                          mass_frac=MASS_FRAC)


def record_words(cfg: AccelConfig, record_offset: int) -> int:
    """Bus words of the record's read: its header and scalars, from the bus word holding its first byte
    (``record_offset`` is ``MEMORY_BASE`` plus the instruction's offset)."""
    db = cfg.axi.data_bytes
    return -(-(record_offset % db + RECORD_BYTES) // db)


def cycles(cfg: AccelConfig, *, method: str, candidates: int, kept: int, latency: int, record_offset: int = 0,
           fused: bool = False, skipped: bool = False, image: bool = False) -> int:
    """Cycles from ``start`` to ``done`` of a stage that does not fault, with the DRAM answering ``latency``
    cycles after it accepts the record's read (the only term that depends on the DRAM) and no gaps.

    ``candidates``: DynamicViT's op ``n`` (``count[S]``), the others' ``n - 1``; ``kept``: the candidates
    kept (SaiT's mass count); ``fused``: EViT's record asks for the fused token. With ``N = candidates + 1``
    selector tokens, ``B`` words per row of ``X``, ``H`` heads and the selector's terms
    (:func:`tokensift.hw.selector.core.cycle_breakdown`: search, compaction, header, output of the ``1 +
    kept`` tokens, the package token when one is fused and a token was pruned)::

        latency + record words          the record's read (:func:`record_words`)
        + the selector's terms
        DynamicViT: 14 + B * N + (N - 1) + max(0, 3 + RL - B)   the dummy class token's B feature beats
                                                           (the reader's first word comes 3 + RL cycles
                                                           after the walk, RL = READ_LATENCY), the
                                                           candidates' rows, their keys
                    (13 + B when there is no candidate)
        EViT, SaiT: 16 + RL + B * N + combiner          the rows, then the class rows through the score
                                                        combiner (:func:`~tokensift.hw.score_combiner.core.
                                                        combiner_cycles` over N tokens and H heads)
                    - 4 when the package token is sent; + B for EViT's zero token when nothing was pruned

        AS-ViT:     as EViT (the combiner per head and token for the token rule), plus the head weights
                    before the load (:func:`asvit_weight_cycles`; ``image``: the record's image rule)

    ``skipped``: SaiT at density 1 (the stage left as it is): ``5 + latency + record words``.
    """
    if method not in SUPPORTED_METHODS:
        raise ValueError(f"method must be one of {', '.join(SUPPORTED_METHODS)}, not {method!r}")
    check_int("candidates", candidates, low=0, high=cfg.envelope.max_tokens - 1, numpy=False)
    check_int("kept", kept, low=0, high=candidates, numpy=False)
    check_int("latency", latency, low=0, numpy=False)
    check_int("record_offset", record_offset, low=0, numpy=False)
    fused = check_bool("fused", fused) and method == "evit"
    image = check_bool("image", image) and method == "asvit"
    if check_bool("skipped", skipped):
        return 5 + latency + record_words(cfg, record_offset)
    package = fused and kept < candidates
    n = candidates + 1
    parts = selector_cycles(_selector_params(cfg), n_tokens=n, kept=kept + 1,
                            mode={"sait": Mode.MASS, "asvit": Mode.THRESHOLD}.get(method, Mode.TOPK),
                            package=package, package_rule="sum")
    words = cfg.geometry(Buffer.X).words
    total = (latency + record_words(cfg, record_offset) + parts["search"] + parts["compact"] + parts["header"] +
             parts["output"] + parts["package"])
    if method == "dynamicvit":
        if candidates == 0:
            return total + 13 + words
        return total + 14 + words * n + candidates + max(0, READ_LATENCY + 3 - words)
    combiner = combiner_cycles(_combiner_params(cfg), n_tokens=n, heads=cfg.envelope.heads,
                               per_token=method == "asvit" and not image)
    total += words * n + combiner + READ_LATENCY + (12 if package else 16) + (words if fused and not package else 0)
    return total + (asvit_weight_cycles(cfg, n, image=image) if method == "asvit" else 0)


def asvit_weight_cycles(cfg: AccelConfig, tokens: int, *, image: bool) -> int:
    """Cycles of AS-ViT's head weights over ``tokens`` tokens (part of :func:`cycles`).

    Per token and head: its ``head_dim / lanes`` words of ``A``, the squares' pipeline drained (``3 +
    ceil(log2 lanes)``); the token rule then takes each head's root (``R`` = ceil(bits / 2) cycles of the
    restoring root over the image rule's widest sum) and moves on (2 cycles, 1 after the last head), then each
    head's weight (19: the 17-bit restoring division, its set-up and the write). The image rule takes the
    roots and weights once, after every token (plus one cycle per root)."""
    env = cfg.envelope
    H, R = env.heads, _root_iters(cfg)
    pipe = 3 + ceil_log2(cfg.lanes)
    words = env.head_dim // cfg.lanes
    if image:
        return ASVIT_START + tokens * H * (words + pipe) + H * (R + 3) - 2 + 19 * H
    return ASVIT_START + tokens * (H * (words + pipe + R + 2) - 1 + 19 * H)


#: AS-ViT's weight phase: the walk over ``A`` handed to the reader, its first word's read latency
ASVIT_START = READ_LATENCY + 4


def _root_iters(cfg: AccelConfig) -> int:
    """Iterations of the restoring root: half the width of the image rule's largest sum of int8 squares."""
    env = cfg.envelope
    return ((env.max_tokens * env.head_dim * (1 << 14)).bit_length() + 1) // 2


class SelectEngine(OpEngine):
    """See the module docstring. Ports: :func:`tokensift.hw.accel.ports.engine_signature` (DRAM channel, no
    ``rd2``) plus ``regs`` (the run-time registers), ``protected_out`` and ``stage_ran``."""

    def __init__(self, *, config: AccelConfig):
        check_config(config)
        if config.lanes > config.envelope.max_tokens:
            raise ValueError(f"lanes ({config.lanes}) must not exceed the envelope's {config.envelope.max_tokens} "
                             "tokens (a class row's word of the score combiner)")
        super().__init__(config=config, members={"regs": In(registers_layout()),
                                                 "protected_out": Out(config.row_bits), "stage_ran": Out(1)})

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        env = cfg.envelope
        axi = cfg.axi
        db = axi.data_bytes
        row_bits = cfg.row_bits
        bank_bits = ceil_log2(cfg.banks)
        lanes = cfg.lanes
        words = cfg.geometry(Buffer.X).words
        sp, cp = _selector_params(cfg), _combiner_params(cfg)

        m.submodules.reader = reader = RowReader(config=cfg)
        wiring.connect(m, reader.rd, wiring.flipped(self.rd))
        m.submodules.selector = sel = Selector(n_max=sp.n_max, dim=sp.dim, lanes=sp.lanes, score_bits=sp.score_bits,
                                               feature_bits=sp.feature_bits, package=sp.package,
                                               weight_frac=sp.weight_frac, mass=sp.mass, mass_frac=sp.mass_frac)
        m.submodules.combiner = comb = ScoreCombiner(n_max=cp.n_max, heads=cp.heads, lanes=cp.lanes,
                                                     attn_bits=cp.attn_bits, attn_frac=cp.attn_frac,
                                                     importance_bits=cp.importance_bits,
                                                     importance_frac=cp.importance_frac, score=cp.score,
                                                     per_token_weights=cp.per_token_weights)

        op = Signal.like(self.op)
        method = Signal(3)
        keep_reg = Signal(16)
        threshold = Signal(16)
        density = Signal(16)
        is_dvit, is_evit, is_sait, is_asvit = (method == METHODS.index(name)
                                               for name in ("dynamicvit", "evit", "sait", "asvit"))
        image = Signal()                 # AS-ViT: one weight per head (else per head and token)
        token_weights = Signal()         # AS-ViT's token rule: the combiner takes a weight per head and token
        cand = Signal(row_bits)          # candidates (the selector's tokens but its first)
        sel_n = Signal(row_bits + 1)     # the selector's tokens, cand + 1 (a register: no adder at its command)
        walk_any = Signal()              # the walks have rows: not DynamicViT without candidates (a register)
        k = Signal(row_bits)             # top-k: candidates to keep
        fuse = Signal()                  # EViT: the fused token is appended
        m.d.sync += [self.done.eq(0), self.fault.eq(0)]
        total = Signal(len(sel.overflows) + 1)
        m.d.comb += [total.eq(sel.overflows + comb.overflows),
                     self.overflows.eq(Mux(total[16:] != 0, 0xFFFF, total[:16]))]

        # -- the record: one read of its header and scalars, word-aligned down ----------------------
        rec_addr = Signal(axi.addr_width)
        m.d.comb += rec_addr.eq(op.memory_base + op.addr_a)
        skew_bits = ceil_log2(db) - 3 if db > 8 else 0
        skew = (rec_addr[3:3 + skew_bits] << 3) if skew_bits else 0  # the record's byte 0 in its first word
        m.submodules.record = record = RecordFields(
            config=cfg, fields={name: _FIELD_AT[name] for name in ("header", "method", "option", "nrefs")},
            length=RECORD_BYTES)
        m.d.comb += [record.skew.eq(skew), record.i_word.payload.eq(self.dram_data.payload)]
        fields = record.fields

        walk = reader.i_walk
        # the words pass a skid buffer: the consumers' ready (a phase's OR of the selector's and the combiner's)
        # ends there instead of running on into the reader's FIFO and its output register's enable
        m.submodules.words = words_skid = SkidBuffer(layout=reader.o_word.payload.shape())
        wiring.connect(m, reader.o_word, words_skid.i)
        out = words_skid.o
        walks = Signal(2)         # walks handed to the reader: the features', then the scores'
        feat_phase = Signal()     # the reader's words are features (else scores)
        dummy = Signal(range(words + 1))  # DynamicViT: the class token's dummy feature beats still to send
        first_key = Signal()      # DynamicViT: the class token's dummy key is still to be sent
        scored = Signal(row_bits + 1)
        weights_sent = Signal(range(env.heads + 1))
        # the head weights' valid, ``comb_load & (weights_sent != heads)`` kept as a register (written wherever
        # either changes): the combiner's row ready waits on it, and the compare then ran on into the reader
        weights_valid = Signal()
        bad_score = Signal()
        discard = Signal()        # a fault found after the load: drain the selector, write nothing
        packaged = Signal()       # the selector sends a package token
        dst_row = Signal(row_bits)
        beat = Signal(range(words + 1))
        rows_x = Signal(row_bits)  # the tokens the stage selects from (count[X])
        rows_last = Signal(row_bits)  # rows_x - 1, a register (valid from FETCH on: rows_x is set at CHECK)
        m.d.sync += rows_last.eq(rows_x - 1)
        writing = Signal()
        zero = Signal()
        # the load's phase, one-hot registers (all clear outside LOAD), so that the reader's ready is one level
        # of logic over registers: its FIFO's read enable fans out to the FIFO's pointers and the consumers
        ph_dummy = Signal()       # DynamicViT's dummy class token's feature beats
        ph_feat = Signal()        # the reader's words are features
        ph_keys = Signal()        # DynamicViT: the reader's words are the candidates' keys
        ph_comb = Signal()        # the others: the reader's words are class rows for the score combiner
        ph_squares = Signal()     # AS-ViT: the state is W_SQ (a head's words into the squares)
        comb_load = Signal()      # LOAD, for a method the score combiner scores (its head weights are sent)
        # words of a class row over rows_x tokens: ceil(n / lanes), a shift or a small table (no divider), and
        # the last word's index; registers (rows_x is set at the op's check, long before the walks use them),
        # so that no adder stands in front of the word counters' compares
        cls_words = Signal(range(-(-env.max_tokens // lanes) + 1))
        cls_last = Signal(len(cls_words))
        m.d.sync += cls_last.eq(cls_words - 1)
        if lanes & (lanes - 1) == 0:
            m.d.sync += cls_words.eq((rows_x + lanes - 1) >> ceil_log2(lanes))
        else:
            m.submodules.cls_words = table = Memory(shape=len(cls_words), depth=env.max_tokens + 1,
                                                    init=[-(-n // lanes) for n in range(env.max_tokens + 1)])
            port = table.read_port()
            m.d.comb += [port.addr.eq(rows_x), cls_words.eq(port.data)]

        def fault():
            m.d.sync += [self.done.eq(1), self.fault.eq(1), self.rows.eq(0), self.stage_ran.eq(0)]
            m.next = "IDLE"

        # the record's verdict, acted on from the state after RECORD_CHECK on (a good record costs no cycle): three
        # registers that follow the captured fields every cycle (complete in RECORD_CHECK, unchanged until the
        # next op starts its record), each a shallow tree beside the fields, and one LUT over them where states use it
        skip = Signal()           # SaiT at density 1: the stage leaves the tokens as they are
        k_over = Signal()         # EViT: the kept tokens and the fused one exceed the envelope
        m.d.sync += [skip.eq(is_sait & (density == MASS_ONE)), k_over.eq(k + 2 > env.max_tokens)]
        tag, length, nrefs = fields.header[:32], fields.header[32:], fields.nrefs
        head_good = Signal()      # the tag and the method
        refs_good = Signal()      # the length follows from nrefs (4-byte references, the record 8-byte aligned)
        fits = Signal()           # not EViT's fused token beyond the envelope
        # the length's words past the scalars, and one less, from the header alone: it arrives at least two bus
        # words before nrefs, so these are set when the verdict takes nrefs, which then meets them in equality
        # compares (no adder in front of the compare: the sum of nrefs was the whole design's worst path)
        pairs = Signal(30)        # (length - RECORD_BYTES) / 8: the 8-byte words of references
        pairs_less = Signal(30)   # that minus 1 (all ones when there are none)
        pairs_ok = Signal()       # length a whole number of 8-byte words, at least RECORD_BYTES
        m.d.sync += [pairs.eq(length[3:] - RECORD_BYTES // 8), pairs_less.eq(length[3:] - (RECORD_BYTES // 8 + 1)),
                     pairs_ok.eq((length[:3] == 0) & (length[3:] >= RECORD_BYTES // 8))]
        half = nrefs[1:29]        # ceil(nrefs / 2) is half, or half + 1 for an odd nrefs
        m.d.sync += [head_good.eq((tag == Tag.STAGE) & (fields.method[3:] == 0) & (fields.method[:3] == method)),
                     refs_good.eq(pairs_ok & (nrefs[29:] == 0) & Mux(nrefs[0], pairs_less == half, pairs == half)),
                     fits.eq(~(is_evit & (fields.option != 0) & k_over))]
        op_bad = Signal()         # the op's checks fail (registered in CHECK, acted on in FETCH)
        record_bad = Signal()     # the record's checks fail, or EViT's fused token would not fit
        m.d.comb += record_bad.eq(~(head_good & refs_good & fits))
        # the selector's and the combiner's commands (the combiner's for the methods it scores), offered from
        # registers once COMMAND has judged the record (an accept fans out into its block; the verdict in front
        # of it would be a path across both); their fields are the op's registers, steady until the blocks take
        # them a cycle later, before the walks begin
        sel_cmd_pending = Signal()
        comb_cmd_pending = Signal()
        m.d.comb += [comb.i_cmd.valid.eq(comb_cmd_pending), comb.i_cmd.payload.n_tokens.eq(rows_x),
                     comb.i_cmd.payload.heads.eq(env.heads), comb.i_cmd.payload.per_token.eq(token_weights)]
        with m.If(comb.i_cmd.ready):
            m.d.sync += comb_cmd_pending.eq(0)
        c = sel.i_cmd.payload
        m.d.comb += [sel.i_cmd.valid.eq(sel_cmd_pending),
                     c.mode.eq(Mux(is_sait, Mode.MASS, Mux(is_asvit, Mode.THRESHOLD, Mode.TOPK))),
                     c.n_tokens.eq(sel_n), c.k.eq(k), c.threshold.eq(threshold), c.package.eq(fuse),
                     c.package_sum.eq(1), c.mass.eq(density)]
        with m.If(sel.i_cmd.ready):
            m.d.sync += sel_cmd_pending.eq(0)

        # -- AS-ViT's head weights: per token and head the head output's norm isqrt(sum o**2), over the heads'
        #    sum (a restoring root and divider, one bit per cycle); "image": per head over every token ------
        H = env.heads
        hbits = max(1, ceil_log2(H))
        head_words = env.head_dim // lanes
        a_words = cfg.geometry(Buffer.A).words
        root_iters = _root_iters(cfg)
        norm_bits = root_iters
        total_bits = norm_bits + hbits
        wmax = -(-env.max_tokens // lanes)                            # class-row words (weight memory words per head)
        equal = int(round_shift(np.array([(1 << (HEAD_WEIGHT_FRAC + 1)) // H]), 1)[0])
        acc = Signal(2 * root_iters)
        head_acc = Array(Signal(2 * root_iters, name=f"head_acc{h}") for h in range(H))
        norm = Array(Signal(norm_bits, name=f"norm{h}") for h in range(H))
        head_weight = Array(Signal(HEAD_WEIGHT_FRAC + 1, name=f"head_weight{h}") for h in range(H))
        norm_total = Signal(total_bits)
        wh = Signal(hbits + 1)             # the head
        wj = Signal(row_bits)              # the token
        wih = Signal(range(head_words + 1))
        rad = Signal(2 * root_iters)
        rem = Signal(root_iters + 2)
        root = Signal(root_iters)
        it = Signal(range(max(root_iters, 17) + 1))
        dnum = Signal(17)                  # the dividend's low bits still to shift in
        drem = Signal(total_bits + 1)
        quot = Signal(17)
        jw = Signal(range(wmax + 1))       # the token's class-row word and lane
        jl = Signal(range(lanes))
        wbase = Signal(range(H * wmax + 1))
        m.submodules.weights = wmem = Memory(shape=unsigned((HEAD_WEIGHT_FRAC + 1) * lanes), depth=H * wmax, init=[])
        w_wr = wmem.write_port(granularity=HEAD_WEIGHT_FRAC + 1)
        w_rd = wmem.read_port()
        w_stream_valid = Signal()
        w_read = Signal()              # AS-ViT's token weights: the block RAM's output holds a word of the stream
        w_word_q = Signal.like(w_rd.data)  # and the register behind it, the stream's word
        pipe_busy = Signal()

        def to_squares():
            """On to the next head's words (``W_SQ``, the reader's words taken while ``ph_squares``)."""
            m.d.sync += ph_squares.eq(1)
            m.next = "W_SQ"

        def asvit_states(m):
            with m.State("W_START"):
                m.d.comb += [walk.valid.eq(~record_bad), walk.payload.buffer.eq(Buffer.A), walk.payload.row0.eq(0),
                             walk.payload.rows.eq(rows_x), walk.payload.word0.eq(0), walk.payload.words.eq(a_words)]
                m.d.sync += [wh.eq(0), wj.eq(0), wih.eq(0), acc.eq(0), norm_total.eq(0), jw.eq(0), jl.eq(0),
                             wbase.eq(0)] + [a.eq(0) for a in head_acc]
                with m.If(record_bad):
                    fault()
                with m.Elif(walk.ready):
                    to_squares()
            with m.State("W_SQ"):  # the head's words into the squares' pipeline
                with m.If(out.valid):
                    m.d.sync += wih.eq(wih + 1)
                    with m.If(wih == head_words - 1):
                        m.d.sync += [wih.eq(0), ph_squares.eq(0)]
                        m.next = "W_DRAIN"
            with m.State("W_DRAIN"):
                with m.If(~pipe_busy):
                    m.d.sync += acc.eq(0)
                    with m.If(image):
                        m.d.sync += head_acc[wh[:hbits]].eq(head_acc[wh[:hbits]] + acc)
                        with m.If(wh == H - 1):
                            m.d.sync += [wh.eq(0), wj.eq(wj + 1)]
                            with m.If(wj == rows_last):
                                m.next = "W_IMAGE"
                            with m.Else():
                                to_squares()
                        with m.Else():
                            m.d.sync += wh.eq(wh + 1)
                            to_squares()
                    with m.Else():
                        m.d.sync += [rad.eq(acc), rem.eq(0), root.eq(0), it.eq(0)]
                        m.next = "W_ROOT"
            with m.State("W_IMAGE"):  # image rule: each head's root over every token
                m.d.sync += [rad.eq(head_acc[wh[:hbits]]), rem.eq(0), root.eq(0), it.eq(0)]
                m.next = "W_ROOT"
            with m.State("W_ROOT"):
                trial = Cat(C(1, 2), root)
                shifted = Cat(rad[-2:], rem)
                m.d.sync += [rad.eq(rad << 2), it.eq(it + 1)]
                with m.If(shifted >= trial):
                    m.d.sync += [rem.eq(shifted - trial), root.eq(Cat(C(1, 1), root))]
                with m.Else():
                    m.d.sync += [rem.eq(shifted), root.eq(Cat(C(0, 1), root))]
                with m.If(it == root_iters - 1):
                    m.next = "W_NORM"
            with m.State("W_NORM"):
                m.d.sync += [norm[wh[:hbits]].eq(root), norm_total.eq(norm_total + root)]
                with m.If(wh == H - 1):
                    m.d.sync += wh.eq(0)
                    m.next = "W_DIVIDE"
                with m.Else():
                    m.d.sync += wh.eq(wh + 1)
                    m.next = "W_NEXT"
            with m.State("W_NEXT"):
                with m.If(image):
                    m.next = "W_IMAGE"
                with m.Else():
                    to_squares()
            with m.State("W_DIVIDE"):  # (norm << 16) // total: the quotient is below 2**17 (norm <= total)
                num = norm[wh[:hbits]]
                m.d.sync += [drem.eq(num >> 1), dnum.eq(num[0] << 16), quot.eq(0), it.eq(0)]
                m.next = "W_DIVIDE_RUN"
            with m.State("W_DIVIDE_RUN"):
                shifted = Cat(dnum[-1], drem)
                m.d.sync += [dnum.eq(dnum << 1), it.eq(it + 1)]
                with m.If(shifted >= norm_total):
                    m.d.sync += [drem.eq(shifted - norm_total), quot.eq(Cat(C(1, 1), quot))]
                with m.Else():
                    m.d.sync += [drem.eq(shifted), quot.eq(Cat(C(0, 1), quot))]
                with m.If(it == 16):
                    m.next = "W_WEIGHT"
            with m.State("W_WEIGHT"):
                weight = Mux(norm_total == 0, equal, (quot + 1) >> 1)   # all heads zero: equal weights
                with m.If(image):
                    m.d.sync += head_weight[wh[:hbits]].eq(weight)
                with m.Else():
                    m.d.comb += [w_wr.addr.eq(wbase + jw), w_wr.data.eq(weight[:HEAD_WEIGHT_FRAC + 1].replicate(lanes))]
                    for i in range(lanes):
                        m.d.comb += w_wr.en[i].eq(jl == i)
                    m.d.sync += wbase.eq(wbase + wmax)
                with m.If(wh == H - 1):
                    m.d.sync += [wh.eq(0), wbase.eq(0), norm_total.eq(0)]
                    with m.If(image | (wj == rows_last)):
                        m.next = "COMMAND"
                    with m.Else():
                        m.d.sync += [wj.eq(wj + 1), jl.eq(Mux(jl == lanes - 1, 0, jl + 1)),
                                     jw.eq(Mux(jl == lanes - 1, jw + 1, jw))]
                        to_squares()
                with m.Else():
                    m.d.sync += wh.eq(wh + 1)
                    m.next = "W_DIVIDE"

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [op.eq(self.op), method.eq(self.regs.method), density.eq(self.regs.density),
                                 keep_reg.eq(self.regs.keep[self.op.arg[:3]]),
                                 threshold.eq(self.regs.threshold[self.op.arg[:3]])]
                    m.next = "CHECK"
            with m.State("CHECK"):
                supported = 0
                for name in SUPPORTED_METHODS:
                    supported = supported | (method == METHODS.index(name))
                # DynamicViT: n = count[S] candidates after P protected rows; the others: n = count[A], which
                # must be count[CLS] (the attention ran over these tokens), and one protected row
                bad = ((op.dst != Buffer.X) | (op.rows != Rows.ALL) | (op.arg >= env.stages) | ~supported |
                       (op.addr_a[:3] != 0) |
                       (op.protected == 0) |
                       Mux(is_dvit, op.n + op.protected > env.max_tokens,
                           (op.n == 0) | (op.n != op.n2) | (op.protected != 1) | (op.src != Buffer.A) |
                           (op.src2 != Buffer.CLS)))
                n_cand = Mux(is_dvit, op.n, op.n - 1)
                m.d.sync += [cand.eq(n_cand), sel_n.eq(n_cand + 1), walk_any.eq(~is_dvit | (op.n != 0)),
                             k.eq(Mux(keep_reg < n_cand, keep_reg, n_cand)),
                             rows_x.eq(Mux(is_dvit, op.n + op.protected, op.n)), walks.eq(0),
                             feat_phase.eq(~is_dvit | (op.n != 0)),
                             dummy.eq(Mux(is_dvit, words, 0)), first_key.eq(is_dvit), scored.eq(0),
                             weights_sent.eq(0), weights_valid.eq(comb_load), bad_score.eq(0), discard.eq(0),
                             dst_row.eq(op.protected), beat.eq(0)]
                m.d.comb += record.start.eq(1)
                # the op's verdict, registered here and acted on in FETCH (the compares' OR would otherwise run on
                # into the state machine): a good op loses no cycle, a bad one answers a cycle later
                m.d.sync += op_bad.eq(bad)
                m.next = "FETCH"
            with m.State("FETCH"):
                with m.If(op_bad):
                    fault()
                with m.Else():
                    with m.If(self.request(m, addr=rec_addr & ~(db - 1), length=RECORD_BYTES + skew)):
                        m.next = "RECORD"
            with m.State("RECORD"):
                m.d.comb += [self.dram_data.ready.eq(1), record.i_word.valid.eq(self.dram_data.valid)]
                with m.If(self.dram_data.valid & self.dram_data.payload.last):
                    m.next = "RECORD_CHECK"
            with m.State("RECORD_CHECK"):
                # the fields are complete: the verdict's registers take them at this cycle's end
                option = fields.option != 0
                m.d.sync += [fuse.eq(is_evit & option), image.eq(option), token_weights.eq(is_asvit & ~option)]
                with m.If(is_asvit):
                    m.next = "W_START"
                with m.Else():
                    m.next = "COMMAND"
            asvit_states(m)
            with m.State("COMMAND"):
                with m.If(record_bad):
                    fault()
                with m.Elif(skip):  # SaiT at density 1: the dense model
                    m.d.sync += [self.done.eq(1), self.rows.eq(rows_x), self.protected_out.eq(op.protected),
                                 self.stage_ran.eq(0)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [sel_cmd_pending.eq(1), comb_cmd_pending.eq(~is_dvit)]
                    m.next = "COMBINER"
            with m.State("COMBINER"):
                m.d.sync += [ph_dummy.eq(is_dvit), ph_feat.eq(~is_dvit), comb_load.eq(~is_dvit),
                             weights_valid.eq(~is_dvit & (weights_sent != env.heads))]
                m.next = "LOAD"
            with m.State("LOAD"):
                # first walk, the features: X's candidate rows (DynamicViT: after a dummy class token), every
                # word; second walk, the scores: DynamicViT's logits (column 0 of src), the others' class rows
                m.d.comb += walk.payload.word0.eq(0)
                with m.If(walks == 0):
                    m.d.comb += [walk.valid.eq(walk_any), walk.payload.buffer.eq(Buffer.X),
                                 walk.payload.row0.eq(Mux(is_dvit, op.protected, 0)),
                                 walk.payload.rows.eq(Mux(is_dvit, cand, rows_x)), walk.payload.words.eq(words)]
                with m.Elif(walks == 1):
                    m.d.comb += [walk.valid.eq(walk_any),
                                 walk.payload.buffer.eq(Mux(is_dvit, op.src, Buffer.CLS)),
                                 walk.payload.row0.eq(0), walk.payload.rows.eq(Mux(is_dvit, cand, env.heads)),
                                 walk.payload.words.eq(Mux(is_dvit, 1, cls_words))]
                with m.If(walk.valid & walk.ready):
                    m.d.sync += walks.eq(walks + 1)
                with m.If(sel.o_frame.valid):
                    m.d.comb += sel.o_frame.ready.eq(1)
                    ok = sel.o_frame.payload.status == Status.OK
                    m.d.sync += [discard.eq(bad_score | ~ok), packaged.eq(sel.o_frame.payload.package)]
                    m.next = "OUTPUT"
                    with m.If(~ok):  # no token follows
                        m.next = "FINISH"
            with m.State("OUTPUT"):
                tok = sel.o_token
                m.d.comb += [tok.ready.eq(1), writing.eq(tok.valid & ~discard &
                                                         ((tok.payload.index != 0) | tok.payload.package))]
                with m.If(tok.valid):
                    m.d.sync += beat.eq(Mux(beat == words - 1, 0, beat + 1))
                    with m.If(writing & (beat == words - 1)):
                        m.d.sync += dst_row.eq(dst_row + 1)
                    with m.If(tok.payload.last):
                        m.next = "FINISH"
                        with m.If(fuse & ~packaged & ~discard):  # nothing pruned: EViT appends a zero token
                            m.next = "ZERO"
            with m.State("ZERO"):
                m.d.comb += [writing.eq(1), zero.eq(1)]
                m.d.sync += beat.eq(Mux(beat == words - 1, 0, beat + 1))
                with m.If(beat == words - 1):
                    m.d.sync += dst_row.eq(dst_row + 1)
                    m.next = "FINISH"
            with m.State("FINISH"):
                m.d.sync += [self.done.eq(1), self.fault.eq(discard), self.rows.eq(Mux(discard, 0, dst_row)),
                             self.protected_out.eq(op.protected), self.stage_ran.eq(~discard)]
                m.next = "IDLE"

        # -- the load: the reader's words go to the selector's features, then to the scores -------------
        loading = fsm.ongoing("LOAD")
        value = out.payload.data[0]
        for i in range(lanes):
            m.d.comb += [sel.i_feature.payload[i].eq(out.payload.data[i][:env.res_bits]),
                         comb.i_attn.payload[i].eq(out.payload.data[i][:cp.attn_bits])]
        # one-hot phases: a flat OR, no priority chain (the W_SQ term is AS-ViT's weight phase, below)
        m.d.comb += [sel.i_feature.valid.eq(ph_dummy | ph_feat & out.valid), comb.i_attn.valid.eq(ph_comb & out.valid),
                     out.ready.eq(ph_feat & sel.i_feature.ready | ph_keys & ~first_key & sel.i_score.ready |
                                  ph_comb & comb.i_attn.ready | ph_squares)]
        with m.If(ph_dummy & sel.i_feature.ready):
            m.d.sync += dummy.eq(dummy - 1)
            with m.If(dummy == 1):
                m.d.sync += [ph_dummy.eq(0), ph_feat.eq(feat_phase), ph_keys.eq(~feat_phase)]
        with m.If(ph_feat & out.valid & sel.i_feature.ready & out.payload.last):
            m.d.sync += [feat_phase.eq(0), ph_feat.eq(0), ph_keys.eq(is_dvit), ph_comb.eq(~is_dvit)]
        load_over = loading & sel.o_frame.valid
        with m.If(load_over):
            m.d.sync += [ph_dummy.eq(0), ph_feat.eq(0), ph_keys.eq(0), ph_comb.eq(0), comb_load.eq(0),
                         weights_valid.eq(0)]
        # the scores: DynamicViT's keys (the class token's dummy first), or the combiner's mean attention
        with m.If(is_dvit):
            m.d.comb += [sel.i_score.valid.eq(loading & first_key | ph_keys & out.valid),
                         sel.i_score.payload.eq(Mux(first_key, 0, value[:LOGIT_BITS] ^ (1 << (LOGIT_BITS - 1))))]
            with m.If(loading & sel.i_score.ready):
                m.d.sync += first_key.eq(0)
        with m.Else():
            m.d.comb += [sel.i_score.valid.eq(comb.o_score.valid), sel.i_score.payload.eq(comb.o_score.payload),
                         comb.o_score.ready.eq(sel.i_score.ready)]
        with m.If(ph_keys & out.valid & out.ready):
            m.d.sync += bad_score.eq(bad_score | (value[LOGIT_BITS] != value[LOGIT_BITS - 1]))
        # the head weights: EViT's and SaiT's equal ones, AS-ViT's per head (image) or per head and token
        with m.If(token_weights):
            # w_stream_valid is set in LOAD only, and cleared before the next (the COMBINER state)
            m.d.comb += [comb.i_weight.valid.eq(w_stream_valid), comb.i_weight.payload.eq(w_word_q)]
        with m.Else():
            m.d.comb += [comb.i_weight.valid.eq(weights_valid),
                         comb.i_weight.payload[0].eq(Mux(is_asvit, head_weight[weights_sent[:max(1, ceil_log2(env.heads))]],
                                                         int(equal_head_weights(env.heads)[0])))]
            with m.If(comb.i_weight.valid & comb.i_weight.ready):
                m.d.sync += [weights_sent.eq(weights_sent + 1),
                             weights_valid.eq(~load_over & (weights_sent != env.heads - 1))]

        # -- AS-ViT's squares: int8 head outputs, squared (inputs and products registered), summed by a
        #    registered adder tree, accumulated per head ------------------------------------------------
        taken = Signal()
        m.d.sync += taken.eq(ph_squares & out.valid)
        x_q = [Signal(signed(8), name=f"sq_x{i}") for i in range(lanes)]
        sq = [Signal(15, name=f"sq{i}") for i in range(lanes)]
        m.d.sync += [x.eq(out.payload.data[i][:8]) for i, x in enumerate(x_q)]
        m.d.sync += [q.eq(x * x) for q, x in zip(sq, x_q, strict=True)]
        valids = [taken, Signal(name="sq_valid")]
        m.d.sync += valids[1].eq(taken)
        level = sq
        while len(level) > 1:
            nxt = [Signal(len(level[0]) + 1, name=f"sq_sum{len(valids)}_{i}") for i in range((len(level) + 1) // 2)]
            for i, t in enumerate(nxt):
                pair = level[2 * i:2 * i + 2]
                m.d.sync += t.eq(pair[0] + pair[1] if len(pair) == 2 else pair[0])
            v = Signal(name=f"sq_valid{len(valids)}")
            m.d.sync += v.eq(valids[-1])
            valids.append(v)
            level = nxt
        with m.If(valids[-1]):
            m.d.sync += acc.eq(acc + level[0])
        m.d.comb += pipe_busy.eq(Cat(*valids).any())

        # AS-ViT's per-token weights to the combiner, lane-aligned with the class rows' words: a read two words
        # ahead of the stream, the block RAM's word then a register (the RAM's clock-to-out is most of a cycle,
        # and the combiner writes the word into its own memory)
        w_head = Signal(hbits + 1)
        w_word = Signal(range(wmax + 1))
        w_addr = Signal(range(H * wmax + 1))
        advance = ~w_stream_valid | comb.i_weight.ready
        more = w_head != H
        m.d.comb += [w_rd.addr.eq(w_addr + w_word), w_rd.en.eq(advance)]
        with m.If(fsm.ongoing("COMBINER")):
            m.d.sync += [w_head.eq(0), w_word.eq(0), w_addr.eq(0), w_read.eq(0), w_stream_valid.eq(0)]
        with m.Elif(loading & token_weights & advance):
            m.d.sync += [w_read.eq(more), w_stream_valid.eq(w_read), w_word_q.eq(w_rd.data)]
            with m.If(more):
                with m.If(w_word == cls_last):
                    m.d.sync += [w_word.eq(0), w_head.eq(w_head + 1), w_addr.eq(w_addr + wmax)]
                with m.Else():
                    m.d.sync += w_word.eq(w_word + 1)

        # -- the kept tokens (and the fused one), word by word, from row P on -------------------------
        m.d.comb += [self.wr.en.eq(writing), self.wr.buffer.eq(Buffer.X), self.wr.tile.eq(dst_row >> bank_bits),
                     self.wr.word.eq(beat)]
        for bank in range(cfg.banks):
            for i in range(lanes):
                # column beat * lanes + i exists in X: the beat below a constant per lane (no multiplier)
                m.d.comb += [self.wr.data[bank][i].eq(Mux(zero, 0, sel.o_token.payload.data[i])),
                             self.wr.mask[bank][i].eq((dst_row[:bank_bits] == bank if bank_bits else 1) &
                                                      (beat < -(-(env.width - i) // lanes)))]
        return m


def _combiner_params(cfg: AccelConfig) -> CombinerParams:
    """The score combiner the engine is built with: one weight per head (EViT's and SaiT's mean, AS-ViT's image
    weights) or per head and token (AS-ViT's token weights)."""
    env = cfg.envelope
    return CombinerParams(n_max=env.max_tokens, heads=env.heads, lanes=cfg.lanes, attn_bits=env.prob_frac + 1,
                          attn_frac=env.prob_frac, importance_bits=HEAD_WEIGHT_FRAC + 1,
                          importance_frac=HEAD_WEIGHT_FRAC, score=SCORE_FORMAT, per_token_weights=True)
