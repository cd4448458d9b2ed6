"""The score combiner: per-head class-attention rows in, one head-weighted score per token out.

The hardware form of :func:`tokensift.quant.select.head_weighted_scores` (AS-ViT's importance-weighted
scores with one weight per head, ``head_importance="image"`` in :mod:`tokensift.sw.methods.asvit`; the
released AS-ViT weights the heads per token, which needs one weight per head and token; or EViT's mean
over heads with uniform weights), between the attention core (which produces
each head's softmax row 0, head after head) and the token selector (which consumes one score per
token: ``o_score`` connects to :attr:`tokensift.hw.selector.core.Selector.i_score`).

Streams (``amaranth.lib.stream``, valid/ready, every one stall-tolerant)
-----------------------------------------------------------------------
``i_cmd`` (one beat per frame, :func:`command_layout`)
    ``n_tokens`` (N) and ``heads`` (H) of the frame.
``i_weight`` (H beats)
    The unsigned head weights ``w_h`` (``importance_frac`` fractional bits), head 0 first. They are
    taken into a small weight memory as they come, independently of the rows: a producer may send all
    of them first, or interleave them with the rows.
``i_attn`` (H * ceil(N / lanes) beats, :func:`attn_layout`)
    Each head's class-attention row, ``lanes`` unsigned probabilities per beat (``attn_frac``
    fractional bits), tokens in order; the lanes past token N - 1 in a row's last beat are ignored.
    A row's beats are taken once that head's weight has arrived.
``o_score`` (N beats)
    ``fit(round_shift(sum_h a[h, i] * w_h, attn_frac + importance_frac - score.frac))`` in the unsigned
    ``score`` format, one token per beat, after the frame's last head.

Outputs ``status`` (:class:`CombinerStatus` of the latest command) and ``overflows`` (scores that
saturated since reset, the count an :class:`~tokensift.quant.fixed.OverflowCounter` holds after the
same frames; it stops at its maximum, and counts a score two cycles after it left on ``o_score``).

Run-time settings the block cannot serve (N = 0, N > n_max, H = 0, H > heads) are flagged in
``status``; the frame's H weights and H * ceil(N / lanes) row beats are still taken (so the streams stay
aligned) but nothing is accumulated and no score is output.

Datapath
--------
``lanes`` multipliers (``attn_bits x importance_bits``, one DSP each when wide enough) feed a
read-modify-write of an accumulator memory of ``ceil(n_max / lanes)`` words of ``lanes`` exact sums
(:attr:`CombinerParams.acc_bits` wide: the largest sum of ``heads`` products never overflows). Head 0
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
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from tokensift.checks import check_int
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
        lanes: probabilities per ``i_attn`` beat (= multipliers), 1..64 and at most ``n_max``.
        attn_bits, attn_frac: width and fractional bits of the unsigned probabilities (1..31, 0..30).
        importance_bits, importance_frac: the same for the unsigned head weights.
        score: the unsigned output format (rounding and overflow modes included).

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
        if self.score.signed:
            raise ValueError("score must be an unsigned FixedFormat, not a signed one")
        if self.lanes > self.n_max:
            raise ValueError(f"lanes must be at most n_max={self.n_max}, not {self.lanes}")

    @property
    def acc_bits(self) -> int:
        """Width of an exact sum of ``heads`` products of the largest probability and weight."""
        return (self.heads * ((1 << self.attn_bits) - 1) * ((1 << self.importance_bits) - 1)).bit_length() or 1

    @property
    def words(self) -> int:
        """Words of the accumulator memory: ``ceil(n_max / lanes)``, ``lanes`` sums each."""
        return -(-self.n_max // self.lanes)

    @property
    def shift(self) -> int:
        """Right shift from the sums' to the score's fractional bits (negative: a left shift)."""
        return self.attn_frac + self.importance_frac - self.score.frac


def command_layout() -> data.StructLayout:
    return data.StructLayout({"n_tokens": FIELD_BITS, "heads": HEAD_FIELD_BITS})


def attn_layout(params: CombinerParams) -> data.ArrayLayout:
    return data.ArrayLayout(unsigned(params.attn_bits), params.lanes)


def _check_params(params) -> CombinerParams:
    if not isinstance(params, CombinerParams):
        raise TypeError(f"params must be CombinerParams, not {type(params).__name__}")
    return params


def check_runtime(params: CombinerParams, *, n_tokens: int, heads: int) -> CombinerStatus:
    """The status the hardware reports for a command (values its fields cannot hold raise ValueError).

    >>> p = CombinerParams(n_max=8, heads=2)
    >>> [check_runtime(p, n_tokens=n, heads=h).name for n, h in [(8, 2), (9, 2), (0, 3), (3, 0), (3, 3)]]
    ['OK', 'N_TOO_LARGE', 'N_ZERO', 'HEADS_ZERO', 'HEADS_TOO_LARGE']
    """
    p = _check_params(params)
    n = check_int("n_tokens", n_tokens, low=0, high=(1 << FIELD_BITS) - 1)
    h = check_int("heads", heads, low=0, high=(1 << HEAD_FIELD_BITS) - 1)
    if n == 0:
        return CombinerStatus.N_ZERO
    if n > p.n_max:
        return CombinerStatus.N_TOO_LARGE
    if h == 0:
        return CombinerStatus.HEADS_ZERO
    if h > p.heads:
        return CombinerStatus.HEADS_TOO_LARGE
    return CombinerStatus.OK


def combiner_cycles(params: CombinerParams, *, n_tokens: int, heads: int) -> int:
    """Clock cycles of one frame with no stalls: from the cycle its command is accepted to the cycle the
    next command can be (the frame period back to back; inputs always valid, the output always ready).

    With ``B = ceil(N / lanes)`` beats per row::

        valid frame:    1 + 1 + H * B + 4 + 1 + N    command, first weight, rows, drain and first read,
                                                     word register, scores
        invalid frame:  3 + H * B  (H * B > 0),  2 + H  (N = 0),  2  (H = 0)   inputs taken, no output

    >>> p = CombinerParams(n_max=197, heads=6, lanes=1)
    >>> combiner_cycles(p, n_tokens=197, heads=6), combiner_cycles(p, n_tokens=198, heads=6)
    (1386, 1191)
    """
    p = _check_params(params)
    status = check_runtime(p, n_tokens=n_tokens, heads=heads)
    n, h = int(n_tokens), int(heads)
    b = -(-n // p.lanes)
    if status is CombinerStatus.OK:
        return h * b + n + 7
    if h == 0:
        return 2
    if b == 0:
        return h + 2
    return h * b + 3


class ScoreCombiner(wiring.Component):
    """Streaming head-weighted score combiner (see the module docstring for streams and datapath).

    Parameters (keyword-only; validated by :class:`CombinerParams`)
    ---------------------------------------------------------------
    n_max, heads, lanes, attn_bits, attn_frac, importance_bits, importance_frac, score
        As :class:`CombinerParams`.

    >>> dut = ScoreCombiner(n_max=197, heads=6, lanes=4)
    >>> len(dut.i_attn.payload.as_value()), len(dut.o_score.payload)
    (64, 16)
    """

    def __init__(self, **kwargs):
        self._params = p = CombinerParams(**kwargs)
        super().__init__({
            "i_cmd": In(stream.Signature(command_layout())),
            "i_weight": In(stream.Signature(unsigned(p.importance_bits))),
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
        acc_layout = data.ArrayLayout(unsigned(acc_bits), lanes)

        m.submodules.acc = acc_mem = Memory(shape=acc_layout, depth=p.words, init=[])
        m.submodules.weights = w_mem = Memory(shape=unsigned(p.importance_bits), depth=p.heads, init=[])
        acc_wr, acc_rd = acc_mem.write_port(), acc_mem.read_port()
        w_wr, w_rd = w_mem.write_port(), w_mem.read_port(domain="comb")

        # -- frame registers and counters -----------------------------------------------------------
        n = Signal(FIELD_BITS)
        h_total = Signal(HEAD_FIELD_BITS)
        # zero tests as ~any(): Amaranth writes `x == 0` as `!x`, which Verilator's lint flags (WIDTHTRUNC)
        ok = ~self.status.any()  # CombinerStatus.OK is 0
        w_cnt = Signal(HEAD_FIELD_BITS)  # weights taken
        head = Signal(HEAD_FIELD_BITS)  # row being taken
        rest = Signal(FIELD_BITS)  # tokens of the row from the next beat on: its last beat has rest <= lanes
        word = Signal.like(acc_rd.addr)  # word of the next row beat (wraps harmlessly in an invalid frame)
        m.d.comb += [w_wr.addr.eq(w_cnt), w_wr.data.eq(self.i_weight.payload), w_rd.addr.eq(head)]

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
        prod_layout = data.ArrayLayout(unsigned(p.attn_bits + p.importance_bits), lanes)
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
            m.d.sync += s2_prod[lane].eq(s1_probs[lane] * s1_w[lane])  # one multiplier (DSP) per lane
        for lane in range(lanes):
            with m.If(rest > lane):
                m.d.sync += s1_w[lane].eq(w_rd.data)
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
        next_word = acc_rd.data.as_value() if lanes == 1 else Mux(o_lane == lanes - 1, acc_rd.data.as_value(),
                                                                    o_sums.as_value() >> acc_bits)
        m.d.comb += [acc_rd.en.eq(1), acc_rd.addr.eq(word)]
        with m.If(self.o_score.ready):
            m.d.sync += self.o_score.valid.eq(0)
        hwfixed.count_overflows(m, self.overflows, self.o_score.valid & self.o_score.ready & o_over)

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
                                 w_cnt.eq(0), head.eq(0), rest.eq(cmd.n_tokens), word.eq(0)]
                    m.next = "LOAD"

            with m.State("LOAD"):
                w_more = w_cnt < h_total
                rows_more = (head < h_total) & (n != 0)
                row_ready = rows_more & (w_cnt > head)
                m.d.comb += [self.i_weight.ready.eq(w_more), self.i_attn.ready.eq(row_ready)]
                w_take = self.i_weight.valid & w_more
                row_take = self.i_attn.valid & row_ready
                m.d.comb += w_wr.en.eq(w_take & ok)
                with m.If(w_take):
                    m.d.sync += w_cnt.eq(w_cnt + 1)
                with m.If(row_take):
                    m.d.sync += s1_valid.eq(ok)
                    with m.If(rest <= lanes):  # the row's last beat
                        m.d.sync += [rest.eq(n), word.eq(0), head.eq(head + 1)]
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
