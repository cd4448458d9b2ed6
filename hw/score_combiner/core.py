"""The score combiner: per-head values in, one head-weighted score per token out.

The hardware form of :func:`tokensift.quant.select.head_weighted_scores`, between the attention core (which
produces each head's softmax row 0, head after head) or a predictor (per-head logits) and the token selector
(which consumes one score per token: ``o_score`` connects to :attr:`tokensift.hw.selector.core.Selector.i_score`).
It serves the scoring step of:

* EViT (the mean over heads: uniform per-head weights ``round(2**f / H)``), SaiT, and AS-ViT's "image"
  variant (``head_importance="image"`` in :mod:`tokensift.sw.methods.asvit`): one weight per head;
* the released AS-ViT: class attention weighted per head **and token** (``per_token_weights=True``, the
  frame's ``per_token`` command bit);
* the released SPViT: per-head keep-minus-drop logit differences, signed, weighted per head and token
  (a signed ``score`` format and ``per_token_weights=True``).

Streams (``amaranth.lib.stream``, valid/ready, every one stall-tolerant)
-----------------------------------------------------------------------
``i_cmd`` (one beat per frame, :func:`command_layout`)
    ``n_tokens`` (N) and ``heads`` (H) of the frame; with ``per_token_weights`` also ``per_token``, the
    frame's weight mode.
``i_weight`` (:func:`weight_layout`)
    Per-head mode: H beats, the unsigned head weights ``w_h`` (``importance_frac`` fractional bits), head 0
    first (in lane 0 when the block is built with ``per_token_weights``: its beats are ``lanes`` weights
    wide, and the other lanes are ignored). They are taken into a small weight memory as they come,
    independently of the rows: a producer may send all of them first, or interleave them with the rows.
    Per-token mode: H * ceil(N / lanes) beats of ``lanes`` weights ``w[h, i]``, lane-aligned with the row
    beats of ``i_attn``: a row beat and its weight beat are taken together and multiplied lane by lane.
``i_attn`` (H * ceil(N / lanes) beats, :func:`attn_layout`)
    Each head's values, ``lanes`` per beat (``attn_frac`` fractional bits), tokens in order: unsigned
    probabilities (class attention), or signed values when ``score`` is signed; the lanes past token N - 1
    in a row's last beat are ignored. In per-head mode a row's beats are taken once that head's weight has
    arrived.
``o_score`` (N beats, unsigned ``score.bits``)
    ``s_i = fit(round_shift(sum_h a[h, i] * w[h(, i)], attn_frac + importance_frac - score.frac))`` in the
    ``score`` format, one token per beat, after the frame's last head. With a signed ``score`` the beat
    carries :func:`tokensift.quant.select.order_key` ``(s_i)`` (the sign bit inverted: an unsigned key with
    the scores' order), so it connects straight to the selector's unsigned ``i_score``; a signed threshold
    ``t`` becomes ``order_key(t)``.

Outputs ``status`` (:class:`CombinerStatus` of the latest command) and ``overflows`` (scores that
saturated since reset, the count an :class:`~tokensift.quant.fixed.OverflowCounter` holds after the
same frames; it stops at its maximum, and counts a score two cycles after it left on ``o_score``).

Run-time settings the block cannot serve (N = 0, N > n_max, H = 0, H > heads) are flagged in
``status``; the frame's weight beats and H * ceil(N / lanes) row beats are still taken (so the streams stay
aligned) but nothing is accumulated and no score is output.

Why signedness is an elaboration choice (the ``score`` format's ``signed``), not a run-time bit: it is the
switch :func:`~tokensift.quant.select.head_weighted_scores` itself takes, and a method's values are signed or
not for good (SPViT's logit differences; AS-ViT's and EViT's probabilities). A run-time bit would make every
unsigned design pay for the signed datapath (a multiplier operand one bit wider, a signed accumulator one
bit wider, a second saturation range) or halve its probability range; the selector downstream ranks
unsigned keys either way.

Datapath
--------
``lanes`` multipliers (``attn_bits x importance_bits``; signed values times unsigned weights as a signed
``attn_bits x (importance_bits + 1)`` product; one DSP each when wide enough) feed a read-modify-write of
an accumulator memory of ``ceil(n_max / lanes)`` words of ``lanes`` exact sums
(:attr:`CombinerParams.acc_bits` wide: the largest sum of ``heads`` products never overflows). Each lane's
weight register takes the weight memory's word (per head) or its lane of the weight beat (per token). Head 0
writes its products (no clear pass); a four-stage pipeline (read and multiply, registered read word,
add and write) forwards the three writes its read cannot see, so rows shorter than four beats run at one
beat per cycle too. The read word is registered before the forwarding multiplexer (the block RAM's
clock-to-output took most of the cycle on ECP5: 94 MHz at speed 6 with the multiplexer behind it), and
the multiplexer's selects are registered address compares made a cycle early. After
the last head the words are read back one by one into a word register that shifts one sum per score
into one rounding and saturation unit (:func:`tokensift.hw.common.fixed.round_shift`,
:func:`tokensift.hw.common.fixed.fit`), whose result is registered: a token per cycle, and no lane
multiplexer, no counter and no stream handshake behind the rounding adder (timing by construction; the
word register costs one cycle per frame).

>>> p = CombinerParams(n_max=197, heads=6, lanes=4)
>>> p.acc_bits, p.words, combiner_cycles(p, n_tokens=197, heads=6)
(28, 50, 504)
>>> q = CombinerParams(n_max=197, heads=6, lanes=4, per_token_weights=True, score=FixedFormat(bits=16, frac=12))
>>> q.signed, q.acc_bits, combiner_cycles(q, n_tokens=197, heads=6, per_token=True)
(True, 28, 503)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from tokensift.checks import check_bool, check_int
from tokensift.hw.common import fixed as hwfixed
from tokensift.quant.fixed import FixedFormat
from tokensift.quant.select import FIELD_BITS, SCORE_FORMAT

__all__ = [
    "HEAD_FIELD_BITS",
    "OVERFLOW_BITS",
    "CombinerStatus",
    "CombinerParams",
    "ScoreCombiner",
    "command_layout",
    "attn_layout",
    "weight_layout",
    "check_runtime",
    "combiner_cycles",
]

#: width of the run-time ``heads`` field of the command (``n_tokens`` has :data:`FIELD_BITS`)
HEAD_FIELD_BITS = 8
#: width of the saturating ``overflows`` counter
OVERFLOW_BITS = 32


class CombinerStatus(enum.IntEnum):
    """Outcome of a frame's run-time settings; anything but ``OK`` means no score is output.

    Checked in this order: ``N_ZERO``, ``N_TOO_LARGE`` (N > n_max), ``HEADS_ZERO``, ``HEADS_TOO_LARGE``
    (H > heads).
    """

    OK = 0
    N_ZERO = 1
    N_TOO_LARGE = 2
    HEADS_ZERO = 3
    HEADS_TOO_LARGE = 4


@dataclass(frozen=True, kw_only=True)
class CombinerParams:
    """Elaboration parameters of the score combiner, shared by the hardware, its cycles and its costs.

    Attributes:
        n_max: most tokens per frame, 1..4096.
        heads: most heads per frame, 1..255.
        lanes: values per ``i_attn`` beat (= multipliers), 1..64 and at most ``n_max``.
        attn_bits, attn_frac: width and fractional bits of the values (1..31, 0..30; at least 2 bits when
            signed): unsigned probabilities, or signed values with a signed ``score``.
        importance_bits, importance_frac: the same for the unsigned head weights.
        score: the output format (rounding and overflow modes included); a signed one makes the values
            signed too (as in :func:`~tokensift.quant.select.head_weighted_scores`) and ``o_score`` carry
            :func:`~tokensift.quant.select.order_key` of the score.
        per_token_weights: build the per-token weight mode (the command's ``per_token`` bit): one weight
            per head and token, ``lanes`` per ``i_weight`` beat.

    >>> CombinerParams(n_max=8, heads=2, lanes=16)
    Traceback (most recent call last):
    ...
    ValueError: lanes must be at most n_max=8, not 16
    """

    n_max: int
    heads: int
    lanes: int = 1
    attn_bits: int = 16
    attn_frac: int = 15
    importance_bits: int = 9
    importance_frac: int = 8
    score: FixedFormat = SCORE_FORMAT
    per_token_weights: bool = False

    def __post_init__(self):
        check_int("n_max", self.n_max, low=1, high=4096, numpy=False)
        check_int("heads", self.heads, low=1, high=(1 << HEAD_FIELD_BITS) - 1, numpy=False)
        check_int("lanes", self.lanes, low=1, high=64, numpy=False)
        check_int("attn_bits", self.attn_bits, low=1, high=31, numpy=False)
        check_int("attn_frac", self.attn_frac, low=0, high=30, numpy=False)
        check_int("importance_bits", self.importance_bits, low=1, high=31, numpy=False)
        check_int("importance_frac", self.importance_frac, low=0, high=30, numpy=False)
        if not isinstance(self.score, FixedFormat):
            raise TypeError(f"score must be a FixedFormat, not {type(self.score).__name__}")
        check_bool("per_token_weights", self.per_token_weights)
        if self.score.signed and self.attn_bits < 2:
            raise ValueError(f"attn_bits must be at least 2 with a signed score, not {self.attn_bits}")
        if self.lanes > self.n_max:
            raise ValueError(f"lanes must be at most n_max={self.n_max}, not {self.lanes}")

    @property
    def signed(self) -> bool:
        """Whether the values and scores are signed (the ``score`` format's signedness)."""
        return self.score.signed

    @property
    def acc_bits(self) -> int:
        """Width of an exact sum of ``heads`` products of the largest value and weight (signed when
        :attr:`signed`: the most negative sum, ``-heads * 2**(attn_bits - 1) * (2**importance_bits - 1)``,
        sets it)."""
        top_w = (1 << self.importance_bits) - 1
        if self.signed:
            return (self.heads * (1 << (self.attn_bits - 1)) * top_w - 1).bit_length() + 1
        return (self.heads * ((1 << self.attn_bits) - 1) * top_w).bit_length() or 1

    @property
    def product_bits(self) -> int:
        """Width of one lane's product (signed when :attr:`signed`)."""
        return self.attn_bits + self.importance_bits

    @property
    def words(self) -> int:
        """Words of the accumulator memory: ``ceil(n_max / lanes)``, ``lanes`` sums each."""
        return -(-self.n_max // self.lanes)

    @property
    def shift(self) -> int:
        """Right shift from the sums' to the score's fractional bits (negative: a left shift)."""
        return self.attn_frac + self.importance_frac - self.score.frac


def command_layout(params: CombinerParams | None = None) -> data.StructLayout:
    """``n_tokens``, ``heads``, and ``per_token`` when ``params.per_token_weights``."""
    fields = {"n_tokens": FIELD_BITS, "heads": HEAD_FIELD_BITS}
    if params is not None and _check_params(params).per_token_weights:
        fields["per_token"] = 1
    return data.StructLayout(fields)


def attn_layout(params: CombinerParams) -> data.ArrayLayout:
    p = _check_params(params)
    return data.ArrayLayout(signed(p.attn_bits) if p.signed else unsigned(p.attn_bits), p.lanes)


def weight_layout(params: CombinerParams):
    """One unsigned weight; ``lanes`` of them when the block is built with ``per_token_weights``."""
    p = _check_params(params)
    if p.per_token_weights:
        return data.ArrayLayout(unsigned(p.importance_bits), p.lanes)
    return unsigned(p.importance_bits)


def _check_params(params) -> CombinerParams:
    if not isinstance(params, CombinerParams):
        raise TypeError(f"params must be CombinerParams, not {type(params).__name__}")
    return params


def _check_mode(p: CombinerParams, per_token) -> bool:
    check_bool("per_token", per_token)
    if per_token and not p.per_token_weights:
        raise ValueError("per_token requested from a score combiner built without per_token_weights=True")
    return bool(per_token)


def check_runtime(params: CombinerParams, *, n_tokens: int, heads: int, per_token: bool = False) -> CombinerStatus:
    """The status the hardware reports for a command (values its fields cannot hold raise ValueError).

    >>> p = CombinerParams(n_max=8, heads=2)
    >>> [check_runtime(p, n_tokens=n, heads=h).name for n, h in [(8, 2), (9, 2), (0, 3), (3, 0), (3, 3)]]
    ['OK', 'N_TOO_LARGE', 'N_ZERO', 'HEADS_ZERO', 'HEADS_TOO_LARGE']
    """
    p = _check_params(params)
    n = check_int("n_tokens", n_tokens, low=0, high=(1 << FIELD_BITS) - 1)
    h = check_int("heads", heads, low=0, high=(1 << HEAD_FIELD_BITS) - 1)
    _check_mode(p, per_token)
    if n == 0:
        return CombinerStatus.N_ZERO
    if n > p.n_max:
        return CombinerStatus.N_TOO_LARGE
    if h == 0:
        return CombinerStatus.HEADS_ZERO
    if h > p.heads:
        return CombinerStatus.HEADS_TOO_LARGE
    return CombinerStatus.OK


def weight_beats(params: CombinerParams, *, n_tokens: int, heads: int, per_token: bool = False) -> int:
    """Beats a frame takes from ``i_weight``: H per head, H * ceil(N / lanes) per token.

    >>> p = CombinerParams(n_max=197, heads=6, lanes=16, per_token_weights=True)
    >>> weight_beats(p, n_tokens=197, heads=6), weight_beats(p, n_tokens=197, heads=6, per_token=True)
    (6, 78)
    """
    p = _check_params(params)
    check_runtime(p, n_tokens=n_tokens, heads=heads, per_token=per_token)
    return int(heads) * -(-int(n_tokens) // p.lanes) if per_token else int(heads)


def combiner_cycles(params: CombinerParams, *, n_tokens: int, heads: int, per_token: bool = False) -> int:
    """Clock cycles of one frame with no stalls: from the cycle its command is accepted to the cycle the
    next command can be (the frame period back to back; inputs always valid, the output always ready).

    With ``B = ceil(N / lanes)`` beats per row::

        per head, valid frame:   1 + 1 + H * B + 4 + 1 + N   command, first weight, rows, drain and first
                                                             read, word register, scores
        per token, valid frame:  1 + H * B + 4 + 1 + N       (each row beat comes with its weight beat)
        invalid frame, per head:   3 + H * B  (H * B > 0),  2 + H  (N = 0),  2  (H = 0)   inputs taken,
        invalid frame, per token:  2 + H * B                                              no output

    >>> p = CombinerParams(n_max=197, heads=6, lanes=1)
    >>> combiner_cycles(p, n_tokens=197, heads=6), combiner_cycles(p, n_tokens=198, heads=6)
    (1386, 1191)
    """
    p = _check_params(params)
    status = check_runtime(p, n_tokens=n_tokens, heads=heads, per_token=per_token)
    n, h = int(n_tokens), int(heads)
    b = -(-n // p.lanes)
    if status is CombinerStatus.OK:
        return h * b + n + (6 if per_token else 7)
    if per_token:
        return h * b + 2
    if h == 0:
        return 2
    if b == 0:
        return h + 2
    return h * b + 3


class ScoreCombiner(wiring.Component):
    """Streaming head-weighted score combiner (see the module docstring for streams and datapath).

    Parameters (keyword-only; validated by :class:`CombinerParams`)
    ---------------------------------------------------------------
    n_max, heads, lanes, attn_bits, attn_frac, importance_bits, importance_frac, score, per_token_weights
        As :class:`CombinerParams`.

    >>> dut = ScoreCombiner(n_max=197, heads=6, lanes=4)
    >>> len(dut.i_attn.payload.as_value()), len(dut.o_score.payload)
    (64, 16)
    """

    def __init__(self, **kwargs):
        self._params = p = CombinerParams(**kwargs)
        super().__init__({
            "i_cmd": In(stream.Signature(command_layout(p))),
            "i_weight": In(stream.Signature(weight_layout(p))),
            "i_attn": In(stream.Signature(attn_layout(p))),
            "o_score": Out(stream.Signature(unsigned(p.score.bits))),
            "status": Out(3),
            "overflows": Out(OVERFLOW_BITS),
        })

    @property
    def params(self) -> CombinerParams:
        return self._params

    def elaborate(self, platform):
        m = Module()
        p = self._params
        lanes, acc_bits = p.lanes, p.acc_bits
        acc_layout = data.ArrayLayout(signed(acc_bits) if p.signed else unsigned(acc_bits), lanes)

        m.submodules.acc = acc_mem = Memory(shape=acc_layout, depth=p.words, init=[])
        m.submodules.weights = w_mem = Memory(shape=unsigned(p.importance_bits), depth=p.heads, init=[])
        acc_wr, acc_rd = acc_mem.write_port(), acc_mem.read_port()
        w_wr, w_rd = w_mem.write_port(), w_mem.read_port(domain="comb")

        # -- frame registers and counters -----------------------------------------------------------
        n = Signal(FIELD_BITS)
        h_total = Signal(HEAD_FIELD_BITS)
        per_token = Signal()  # the frame's weight mode (stays 0 in a block built without it)
        # zero tests as ~any(): Amaranth writes `x == 0` as `!x`, which Verilator's lint flags (WIDTHTRUNC)
        ok = ~self.status.any()  # CombinerStatus.OK is 0
        w_cnt = Signal(HEAD_FIELD_BITS)  # per-head weights taken
        head = Signal(HEAD_FIELD_BITS)  # row being taken
        # the load's flow control as registers (kept equal to the compares in the comments), so that the input
        # readies are one level of logic over registers; all clear outside LOAD
        rows_more = Signal()  # (head < h_total) & (n != 0)
        w_more = Signal()  # ~per_token & (w_cnt < h_total)
        ahead = Signal()  # w_cnt > head: the row's weight is in
        h_last = Signal(HEAD_FIELD_BITS)  # h_total - 1
        rest = Signal(FIELD_BITS)  # tokens of the row from the next beat on: its last beat has rest <= lanes
        word = Signal.like(acc_rd.addr)  # word of the next row beat (wraps harmlessly in an invalid frame)
        if p.per_token_weights:
            head_weight = self.i_weight.payload[0]
            beat_weights = [self.i_weight.payload[lane] for lane in range(lanes)]
        else:
            head_weight = self.i_weight.payload
            beat_weights = None
        m.d.comb += [w_wr.addr.eq(w_cnt), w_wr.data.eq(head_weight), w_rd.addr.eq(head)]

        # -- accumulation pipeline: s1 read (+ multiply), s2 the registered read word (+ forwarding), s3 add
        # and write, s4 and s5 the writes just done. The read word is registered before anything uses it (the
        # block RAM's clock-to-output is most of a cycle on ECP5), so three writes are in flight when a beat
        # picks its old sums: the one in s3 (written this cycle), s4's and s5's (written after its read). --
        s1_valid, s1_first = Signal(), Signal()
        s1_addr = Signal.like(acc_rd.addr)
        s1_probs = Signal(attn_layout(p))
        # one weight register per lane, so each can sit at its multiplier (one register fanning out to every
        # DSP costs more routing than the multiplier itself); lane l takes the weight while it holds a token
        # (l < rest), which also keeps synthesis from merging the copies back into one
        s1_w = [Signal(p.importance_bits, name=f"s1_w{lane}") for lane in range(lanes)]
        prod_layout = data.ArrayLayout(signed(p.product_bits) if p.signed else unsigned(p.product_bits), lanes)
        s2_valid, s2_first = Signal(), Signal()
        s2_addr = Signal.like(acc_rd.addr)
        s2_prod = Signal(prod_layout)
        s2_rd = Signal(acc_layout)  # the read word, registered
        # which old sums s2 takes, decided one cycle early from registered addresses: s3's, s4's or s5's
        # write (newest first), else the read word; a first-head beat takes zeros
        s2_fwd3, s2_fwd4, s2_fwd5 = Signal(), Signal(), Signal()
        s3_valid = Signal()
        s3_addr = Signal.like(acc_rd.addr)
        s3_prod = Signal(prod_layout)
        s3_old = Signal(acc_layout)
        s4_valid, s5_valid = Signal(), Signal()
        s4_addr, s5_addr = Signal.like(acc_rd.addr), Signal.like(acc_rd.addr)
        s4_data, s5_data = Signal(acc_layout), Signal(acc_layout)
        total = Signal(acc_layout)
        for lane in range(lanes):
            m.d.comb += total[lane].eq(s3_old[lane] + s3_prod[lane])
            if p.signed:  # a signed value times an unsigned weight: the weight as a non-negative signed operand
                weight = Cat(s1_w[lane], Const(0, 1)).as_signed()
            else:
                weight = s1_w[lane]
            m.d.sync += s2_prod[lane].eq(s1_probs[lane] * weight)  # one multiplier (DSP) per lane
        for lane in range(lanes):
            with m.If(rest > lane):
                if beat_weights is None:
                    m.d.sync += s1_w[lane].eq(w_rd.data)
                else:
                    m.d.sync += s1_w[lane].eq(Mux(per_token, beat_weights[lane], w_rd.data))
        old = Mux(s2_first, 0, Mux(s2_fwd3, total, Mux(s2_fwd4, s4_data, Mux(s2_fwd5, s5_data, s2_rd))))
        # s1 takes the beat on the row's handshake alone: its data registers load every cycle (no wide enable)
        m.d.sync += [
            s1_valid.eq(0), s1_first.eq(~head.any()), s1_addr.eq(word), s1_probs.eq(self.i_attn.payload),
            s2_valid.eq(s1_valid), s2_first.eq(s1_first), s2_addr.eq(s1_addr), s2_rd.eq(acc_rd.data),
            s2_fwd3.eq(s2_valid & (s2_addr == s1_addr)), s2_fwd4.eq(s3_valid & (s3_addr == s1_addr)),
            s2_fwd5.eq(s4_valid & (s4_addr == s1_addr)),
            s3_valid.eq(s2_valid), s3_addr.eq(s2_addr), s3_prod.eq(s2_prod), s3_old.eq(old),
            s4_valid.eq(s3_valid), s4_addr.eq(s3_addr), s4_data.eq(total),
            s5_valid.eq(s4_valid), s5_addr.eq(s4_addr), s5_data.eq(s4_data),
        ]
        m.d.comb += [acc_wr.en.eq(s3_valid), acc_wr.addr.eq(s3_addr), acc_wr.data.eq(total)]

        # -- output: the word register shifts one sum per score into the rounding and saturation unit,
        # whose result is registered, so no lane multiplexer and no counter follows the rounding adder --
        o_sums = Signal(acc_layout)  # the word being output, its next sum in lane 0
        o_loaded = Signal()  # o_sums holds the frame's first word
        o_lane = Signal(range(lanes))  # lane of o_sums[0] in its word
        o_left = Signal(FIELD_BITS)  # scores of the frame not yet in the output register
        o_over = Signal()  # the score in the output register saturated
        score, overflowed = hwfixed.fit(hwfixed.round_shift(o_sums[0], p.shift, p.score.rounding), p.score)
        if p.signed:  # order_key: the sign bit inverted, an unsigned key in the scores' order
            score = Value.cast(score)
            score = Cat(score[:-1], ~score[-1])
        next_word = acc_rd.data.as_value() if lanes == 1 else Mux(o_lane == lanes - 1, acc_rd.data.as_value(),
                                                                    o_sums.as_value() >> acc_bits)
        m.d.comb += [acc_rd.en.eq(1), acc_rd.addr.eq(word)]
        with m.If(self.o_score.ready):
            m.d.sync += self.o_score.valid.eq(0)
        hwfixed.count_overflows(m, self.overflows, self.o_score.valid & self.o_score.ready & o_over)

        # the readies outside the FSM: the flags that drive them are clear outside LOAD
        row_ready = rows_more & (per_token | ahead)
        if p.per_token_weights:
            m.d.comb += [self.i_weight.ready.eq(w_more | (per_token & row_ready & self.i_attn.valid)),
                         self.i_attn.ready.eq(row_ready & (~per_token | self.i_weight.valid))]
        else:
            m.d.comb += [self.i_weight.ready.eq(w_more), self.i_attn.ready.eq(row_ready)]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i_cmd.ready.eq(1)
                cmd = self.i_cmd.payload
                with m.If(self.i_cmd.valid):
                    status = Mux(~cmd.n_tokens.any(), int(CombinerStatus.N_ZERO),
                                 Mux(cmd.n_tokens > p.n_max, int(CombinerStatus.N_TOO_LARGE),
                                     Mux(~cmd.heads.any(), int(CombinerStatus.HEADS_ZERO),
                                         Mux(cmd.heads > p.heads, int(CombinerStatus.HEADS_TOO_LARGE),
                                             int(CombinerStatus.OK)))))
                    m.d.sync += [self.status.eq(status), n.eq(cmd.n_tokens), h_total.eq(cmd.heads),
                                 w_cnt.eq(0), head.eq(0), rest.eq(cmd.n_tokens), word.eq(0),
                                 h_last.eq(cmd.heads - 1), ahead.eq(0),
                                 rows_more.eq(cmd.heads.any() & cmd.n_tokens.any()),
                                 w_more.eq(cmd.heads.any() & (~cmd.per_token if p.per_token_weights else 1))]
                    if p.per_token_weights:
                        m.d.sync += per_token.eq(cmd.per_token)
                    m.next = "LOAD"

            with m.State("LOAD"):
                # per head: weights into the weight memory, a row once its weight is in; per token: a row
                # beat and its weight beat together
                w_take = self.i_weight.valid & w_more
                row_take = self.i_attn.valid & self.i_attn.ready
                m.d.comb += w_wr.en.eq(w_take & ok)
                row_done = row_take & (rest <= lanes)  # the row's last beat
                with m.If(w_take):
                    m.d.sync += [w_cnt.eq(w_cnt + 1), w_more.eq(w_cnt != h_last)]
                with m.If(w_take & ~row_done):
                    m.d.sync += ahead.eq(ahead | (w_cnt == head))
                with m.If(row_done & ~w_take):
                    m.d.sync += ahead.eq(ahead & (w_cnt != head + 1))
                with m.If(row_take):
                    m.d.sync += s1_valid.eq(ok)
                    with m.If(row_done):
                        m.d.sync += [rest.eq(n), word.eq(0), head.eq(head + 1), rows_more.eq(head != h_last)]
                    with m.Else():
                        m.d.sync += [rest.eq(rest - lanes), word.eq(word + 1)]
                with m.If(~w_more & ~rows_more):
                    m.next = "DRAIN"
                    with m.If(~ok):
                        m.next = "IDLE"

            with m.State("DRAIN"):  # the last writes land; then word 0 is read
                with m.If(~s1_valid & ~s2_valid & ~s3_valid):
                    m.d.sync += [o_loaded.eq(0), o_lane.eq(0), o_left.eq(n), word.eq(1)]
                    m.next = "OUT"

            with m.State("OUT"):
                m.d.comb += acc_rd.en.eq(0)
                with m.If(~o_loaded):
                    m.d.comb += acc_rd.en.eq(1)
                    m.d.sync += [o_sums.eq(acc_rd.data), o_loaded.eq(1), word.eq(word + 1)]
                with m.Elif(~self.o_score.valid | self.o_score.ready):
                    m.d.sync += [self.o_score.payload.eq(score), self.o_score.valid.eq(1), o_over.eq(overflowed),
                                 o_left.eq(o_left - 1), o_sums.eq(next_word), o_lane.eq(o_lane + 1)]
                    with m.If(o_lane == lanes - 1):
                        m.d.comb += acc_rd.en.eq(1)
                        m.d.sync += [o_lane.eq(0), word.eq(word + 1)]
                    with m.If(o_left == 1):
                        m.next = "IDLE"
        return m
