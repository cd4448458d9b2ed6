"""The token mean: per channel, the mean of a frame of ``N`` tokens' codes, bit-exact with
:func:`tokensift.quant.stages.predictor.mean_rows` (``floor(2 sum / N)`` rounded half up by one bit, i.e.
``floor(sum / N + 1/2)``): what DynamicViT's predictor computes for its global half over the kept tokens.

Streams
-------
``i_cmd`` (one beat per frame, :meth:`TokenMeanParams.command_layout`): ``n_tokens`` (N) and ``channels``
(C), each up to the unit's maxima.
``i_stream`` (``N * ceil(C / lanes)`` beats): the tokens one after another, ``lanes`` signed ``bits`` codes
per beat (lanes past C in a token's last beat are ignored).
``o_stream`` (:meth:`TokenMeanParams.out_layout`, ``ceil(C / lanes)`` beats per frame): the means, lanes past
C zero, ``last`` on the frame's final beat. A frame whose N or C is 0 or above the maxima consumes its
``N * ceil(C / lanes)`` input beats and sends one beat with ``error`` set (and zero data) instead.

Arithmetic
----------
Codes enter offset by ``2**(bits-1)``, so the per-channel sums ``U = sum + 2**(bits-1) N`` are unsigned and
``floor(2 sum / N) = floor(2 U / N) - 2**bits``: a restoring divider of ``bits + 1`` quotient bits (the mean
of ``bits``-bit codes is a ``bits``-bit code), one registered compare-and-subtract per bit, ``lanes``
dividers side by side; then ``floor((q + 1) / 2) - 2**(bits-1)``.

Structure (timing by construction)
----------------------------------
The sums live in two block-RAM banks of ``ceil(c_max / lanes)`` words: a frame accumulates into one while
the other is read out through the dividers, so back-to-back frames keep the input at one beat per cycle
whenever ``(N - 1) * ceil(C / lanes) >= READOUT_GAP`` (a bank is free again ``ceil(C / lanes) +``
:data:`READOUT_GAP` cycles after its frame's last beat); shorter frames (``N = 1``) wait for it
(:func:`burst_cycles`). Accumulating is a read-modify-write: the RAM read goes straight into a register,
the add has its own stage, and the sums of the three beats still on their way into the RAM are forwarded
(chosen by address compares made one stage earlier), so no beat waits. The readout and the dividers are
one pipeline frozen by a stalled output (the RAM's read enable included).

:func:`cycles` is the exact cycle count of one frame without stalls.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from tokensift.checks import check_int

__all__ = ["TokenMeanParams", "TokenMean", "cycles", "burst_cycles", "readout_latency", "FIELD_BITS", "ACC_LATENCY",
           "READOUT_GAP"]

#: width of ``n_tokens`` and ``channels`` in a command (values above the maxima are flagged)
FIELD_BITS = 16
#: cycles from a frame's last accepted beat to its first readout issue (RAM read, register, add, write,
#: bank hand-over)
ACC_LATENCY = 4
#: cycles past its ``ceil(C / lanes)`` reads from a frame's last beat to the next frame of its bank being
#: able to start (the accumulation's write, the hand-over, the last read's register, the release)
READOUT_GAP = 5


@dataclass(frozen=True)
class TokenMeanParams:
    """One token-mean unit: ``lanes`` (a power of two, 1..64) signed ``bits``-bit (2..16) codes per beat,
    frames of up to ``n_max`` tokens (1..2**16 - 1) of up to ``c_max`` channels (1..2**16 - 1)."""

    lanes: int = 16
    bits: int = 8
    n_max: int = 197
    c_max: int = 192

    def __post_init__(self):
        check_int("lanes", self.lanes, low=1, high=64, numpy=False)
        if self.lanes & (self.lanes - 1):
            raise ValueError(f"lanes must be a power of two, not {self.lanes}")
        check_int("bits", self.bits, low=2, high=16, numpy=False)
        check_int("n_max", self.n_max, low=1, high=(1 << FIELD_BITS) - 1, numpy=False)
        check_int("c_max", self.c_max, low=1, high=(1 << FIELD_BITS) - 1, numpy=False)

    @property
    def chunks_max(self) -> int:
        """Beats of one token at ``c_max`` channels (words of one sum bank)."""
        return -(-self.c_max // self.lanes)

    @property
    def sum_bits(self) -> int:
        """Width of one offset sum, ``(2**bits - 1) * n_max`` at most."""
        return (((1 << self.bits) - 1) * self.n_max).bit_length()

    def command_layout(self) -> data.StructLayout:
        return data.StructLayout({"n_tokens": FIELD_BITS, "channels": FIELD_BITS})

    @property
    def in_layout(self) -> data.ArrayLayout:
        return data.ArrayLayout(signed(self.bits), self.lanes)

    def out_layout(self) -> data.StructLayout:
        return data.StructLayout({"data": self.in_layout, "last": 1, "error": 1})


def readout_latency(params: TokenMeanParams) -> int:
    """Cycles from a bank read's issue to its means in the output register: the RAM, its register, the
    ``bits + 1`` divider stages, the output register."""
    if not isinstance(params, TokenMeanParams):
        raise TypeError(f"params must be TokenMeanParams, not {type(params).__name__}")
    return 3 + params.bits + 1


def cycles(params: TokenMeanParams, n_tokens: int, channels: int) -> int:
    """Cycles from a frame's first accepted input beat to its last output beat, both included, without
    stalls (the command accepted before).

    >>> cycles(TokenMeanParams(lanes=16, n_max=197, c_max=192), 138, 192)
    1683
    """
    if not isinstance(params, TokenMeanParams):
        raise TypeError(f"params must be TokenMeanParams, not {type(params).__name__}")
    n = check_int("n_tokens", n_tokens, low=1, high=params.n_max)
    c = check_int("channels", channels, low=1, high=params.c_max)
    chunks = -(-c // params.lanes)
    return n * chunks + ACC_LATENCY + chunks + readout_latency(params) - 1


def burst_cycles(params: TokenMeanParams, n_tokens: int, channels: int, frames: int) -> int:
    """Cycles from the first to the last input beat (both included) of ``frames`` identical frames sent
    back to back without stalls into an idle unit: ``frames * N * ceil(C / lanes)`` when
    ``(N - 1) * ceil(C / lanes) >= READOUT_GAP``, more for shorter frames (each waits for the bank of the
    frame two before it).

    >>> p = TokenMeanParams(lanes=16, n_max=197, c_max=192)
    >>> burst_cycles(p, 138, 192, 3), burst_cycles(p, 1, 192, 3)
    (4968, 41)
    """
    cycles(params, n_tokens, channels)  # checks the arguments
    frames = check_int("frames", frames, low=1)
    chunks = -(-channels // params.lanes)
    beats = n_tokens * chunks
    starts = [0]
    for k in range(1, frames):
        earliest = starts[k - 1] + beats
        if k >= 2:
            earliest = max(earliest, starts[k - 2] + beats + chunks + READOUT_GAP)
        starts.append(earliest)
    return starts[-1] + beats


class TokenMean(wiring.Component):
    """Per-channel means of frames of tokens; see the module docstring."""

    def __init__(self, *, params: TokenMeanParams):
        if not isinstance(params, TokenMeanParams):
            raise TypeError(f"params must be TokenMeanParams, not {type(params).__name__}")
        self._params = params
        super().__init__({
            "i_cmd": In(stream.Signature(params.command_layout())),
            "i_stream": In(stream.Signature(params.in_layout)),
            "o_stream": Out(stream.Signature(params.out_layout())),
        })

    @property
    def params(self) -> TokenMeanParams:
        return self._params

    def elaborate(self, platform):
        m = Module()
        p = self._params
        lanes, log_lanes = p.lanes, p.lanes.bit_length() - 1
        chunk_shape = range(max(2, p.chunks_max))
        sum_layout = data.ArrayLayout(unsigned(p.sum_bits), lanes)
        offset = 1 << (p.bits - 1)

        banks = []
        for b in range(2):
            mem = Memory(shape=sum_layout, depth=p.chunks_max, init=[])
            m.submodules[f"bank{b}"] = mem
            banks.append((mem.read_port(), mem.write_port()))

        # -- command decode: one frame's decoded command waits in `nxt` ------------------------------
        nxt_full = Signal()
        nxt_n = Signal(FIELD_BITS)
        chunk_shape_full = unsigned(FIELD_BITS - log_lanes + 1)
        nxt_last = Signal(chunk_shape_full)  # ceil(C / lanes) - 1: the frame's last chunk
        nxt_one_chunk, nxt_one_token, nxt_empty = Signal(), Signal(), Signal()
        nxt_rem_mask = Signal(lanes)
        nxt_error = Signal()
        cmd = self.i_cmd.payload
        m.d.comb += self.i_cmd.ready.eq(~nxt_full)
        with m.If(self.i_cmd.valid & ~nxt_full):
            rem = (cmd.channels - 1)[:log_lanes] if log_lanes else Const(0, 1)
            m.d.sync += [
                nxt_full.eq(1),
                nxt_n.eq(cmd.n_tokens),
                nxt_last.eq((cmd.channels - 1) >> log_lanes),
                nxt_one_chunk.eq(cmd.channels <= lanes),
                nxt_one_token.eq(cmd.n_tokens == 1),
                nxt_empty.eq((cmd.n_tokens == 0) | (cmd.channels == 0)),
                nxt_rem_mask.eq(Cat(*(rem >= lane for lane in range(lanes)))),
                nxt_error.eq((cmd.n_tokens == 0) | (cmd.n_tokens > p.n_max) | (cmd.channels == 0)
                             | (cmd.channels > p.c_max)),
            ]

        # -- per-bank frame descriptors and hand-over flags -------------------------------------------
        full = Signal(2)  # the bank holds a finished frame (or an error frame) not yet read out
        bank_n = Array(Signal(FIELD_BITS, name=f"bank{b}_n") for b in range(2))
        bank_last = Array(Signal(chunk_shape_full, name=f"bank{b}_last") for b in range(2))
        bank_error = Array(Signal(name=f"bank{b}_error") for b in range(2))
        set_full = Signal(2)
        clear_full = Signal(2)
        m.d.sync += full.eq((full | set_full) & ~clear_full)
        used = Signal(2)  # the bank belongs to a frame from its start until its readout frees it
        set_used = Signal(2)
        m.d.sync += used.eq((used | set_used) & ~clear_full)

        # -- accumulation side -------------------------------------------------------------------------
        active = Signal()
        acc_bank = Signal()
        next_bank = Signal()  # the bank the next frame takes (frames alternate)
        n_left = Signal(FIELD_BITS)  # tokens after the current one
        chunk = Signal(chunk_shape_full)
        chunk_before_last = Signal(chunk_shape_full)  # the frame's last chunk - 1
        one_chunk = Signal()
        # registered: whether the current beat is its token's last, and the current token the frame's last
        last_chunk, last_token = Signal(), Signal()
        rem_mask = Signal(lanes)
        error = Signal()

        take = Signal()
        m.d.comb += [self.i_stream.ready.eq(active), take.eq(self.i_stream.valid & active)]
        frame_done = take & last_chunk & last_token
        first_token = Signal()  # the current token is the frame's first (its sums start from zero)

        with m.If(take):
            with m.If(last_chunk):
                m.d.sync += [chunk.eq(0), last_chunk.eq(one_chunk), n_left.eq(n_left - 1),
                             last_token.eq(n_left == 1), first_token.eq(0)]
            with m.Else():
                m.d.sync += [chunk.eq(chunk + 1), last_chunk.eq(chunk == chunk_before_last)]
        with m.If(frame_done):
            m.d.sync += active.eq(0)
            with m.If(error):
                m.d.comb += set_full.bit_select(acc_bank, 1).eq(1)

        # a decoded command starts when no frame is accumulating (or this cycle ends one) and its bank is free
        can_start = nxt_full & (~active | frame_done) & ~used.bit_select(next_bank, 1)
        with m.If(can_start):
            m.d.sync += [nxt_full.eq(0), acc_bank.eq(next_bank), next_bank.eq(~next_bank),
                         chunk.eq(0), chunk_before_last.eq(nxt_last - 1), one_chunk.eq(nxt_one_chunk),
                         last_chunk.eq(nxt_one_chunk), n_left.eq(nxt_n - 1), last_token.eq(nxt_one_token),
                         rem_mask.eq(nxt_rem_mask), error.eq(nxt_error), first_token.eq(1),
                         bank_n[next_bank].eq(nxt_n), bank_last[next_bank].eq(nxt_last),
                         bank_error[next_bank].eq(nxt_error)]
            m.d.comb += set_used.bit_select(next_bank, 1).eq(1)
            with m.If(nxt_empty):
                m.d.comb += set_full.bit_select(next_bank, 1).eq(1)
            with m.Else():
                m.d.sync += active.eq(1)

        # stage 0 -> 1: the beat, masked and offset, with its address; the bank's read is issued now
        s1_valid, s1_bank, s1_addr, s1_first, s1_end = Signal(), Signal(), Signal(chunk_shape), Signal(), Signal()
        s1_data = Signal(sum_layout)
        write_beat = take & ~error
        m.d.sync += [s1_valid.eq(write_beat), s1_bank.eq(acc_bank), s1_addr.eq(chunk), s1_first.eq(first_token),
                     s1_end.eq(frame_done)]
        for lane in range(lanes):
            keep = ~last_chunk | rem_mask[lane]
            code = self.i_stream.payload[lane]
            m.d.sync += s1_data[lane].eq(Mux(keep, (code + offset).as_unsigned()[:p.bits], offset))
        # stage 1 -> 2: the RAM's output into a register; forwarding choices from the younger stages
        s2_valid, s2_bank, s2_addr, s2_first, s2_end = Signal(), Signal(), Signal(chunk_shape), Signal(), Signal()
        s2_data, s2_read = Signal(sum_layout), Signal(sum_layout)
        s2_from = Signal(3)  # one-hot: forward from stage 3, 4 or 5 (the youngest matching first)
        m.d.sync += [s2_valid.eq(s1_valid), s2_bank.eq(s1_bank), s2_addr.eq(s1_addr), s2_first.eq(s1_first),
                     s2_end.eq(s1_end), s2_data.eq(s1_data), s2_read.eq(Mux(s1_bank, banks[1][0].data,
                                                                              banks[0][0].data))]
        # stage 2 -> 3: the sum, written to the RAM from stage 3; stages 4 and 5 remember the last two written
        s3_valid, s3_bank, s3_addr = Signal(), Signal(), Signal(chunk_shape)
        s4_valid, s4_bank, s4_addr = Signal(), Signal(), Signal(chunk_shape)
        s5_valid = Signal()
        s3_sum, s4_sum, s5_sum = Signal(sum_layout), Signal(sum_layout), Signal(sum_layout)
        s3_end = Signal()

        def same(valid, bank, addr):
            return valid & (bank == s1_bank) & (addr == s1_addr)

        # stage 1's beat meets, one cycle later in stage 2, the beats now in stages 2, 3 and 4 in stages 3, 4, 5
        hit3, hit4, hit5 = same(s2_valid, s2_bank, s2_addr), same(s3_valid, s3_bank, s3_addr), \
            same(s4_valid, s4_bank, s4_addr)
        m.d.sync += s2_from.eq(Mux(hit3, 0b001, Mux(hit4, 0b010, Mux(hit5, 0b100, 0))))
        for lane in range(lanes):
            base = Mux(s2_from[0], s3_sum[lane], Mux(s2_from[1], s4_sum[lane],
                                                     Mux(s2_from[2], s5_sum[lane], s2_read[lane])))
            m.d.sync += s3_sum[lane].eq(Mux(s2_first, 0, base) + s2_data[lane])
        m.d.sync += [s3_valid.eq(s2_valid), s3_bank.eq(s2_bank), s3_addr.eq(s2_addr), s3_end.eq(s2_end & s2_valid),
                     s4_valid.eq(s3_valid), s4_bank.eq(s3_bank), s4_addr.eq(s3_addr), s4_sum.eq(s3_sum),
                     s5_valid.eq(s4_valid), s5_sum.eq(s4_sum)]
        for b, (_, write) in enumerate(banks):
            m.d.comb += [write.en.eq(s3_valid & (s3_bank == b)), write.addr.eq(s3_addr), write.data.eq(s3_sum)]
        with m.If(s3_end):
            m.d.comb += set_full.bit_select(s3_bank, 1).eq(1)

        # -- readout side ------------------------------------------------------------------------------
        advance = ~self.o_stream.valid | self.o_stream.ready
        rd_bank = Signal()  # the bank read out next (frames alternate)
        rd_chunk = Signal(chunk_shape_full)
        issue = full.bit_select(rd_bank, 1) & advance
        issue_error = bank_error[rd_bank]
        issue_last = issue_error | (rd_chunk == bank_last[rd_bank])
        with m.If(issue):
            m.d.sync += rd_chunk.eq(Mux(issue_last, 0, rd_chunk + 1))
            with m.If(issue_last):
                m.d.sync += rd_bank.eq(~rd_bank)
        for b, (read, _) in enumerate(banks):
            reading = full[b]
            m.d.comb += [read.addr.eq(Mux(reading, rd_chunk, chunk)),
                         read.en.eq(Mux(reading, advance, 1))]
        # r1: the bank's output; r2: its register; the divider; the output
        r1_valid, r1_bank, r1_last, r1_error = Signal(), Signal(), Signal(), Signal()
        r1_n = Signal(FIELD_BITS)
        r2_valid, r2_last, r2_error = Signal(), Signal(), Signal()
        r2_n = Signal(FIELD_BITS)
        r2_sum = Signal(sum_layout)
        with m.If(advance):
            m.d.sync += [r1_valid.eq(issue), r1_bank.eq(rd_bank), r1_last.eq(issue_last), r1_error.eq(issue_error),
                         r1_n.eq(bank_n[rd_bank]),
                         r2_valid.eq(r1_valid), r2_last.eq(r1_last), r2_error.eq(r1_error), r2_n.eq(r1_n),
                         r2_sum.eq(Mux(r1_bank, banks[1][0].data, banks[0][0].data))]
            # the bank is free once its last word sits in r2 (its read port then serves the next frame)
            with m.If(r1_valid & r1_last):
                m.d.comb += clear_full.bit_select(r1_bank, 1).eq(1)

        # restoring division of D = 2 U by n: quotient bits `bits` down to 0, one stage each
        quotient_bits = p.bits + 1
        rem_bits = p.sum_bits + 1
        stage_valid, stage_last, stage_error, stage_n = r2_valid, r2_last, r2_error, r2_n
        stage_rem = [(r2_sum[lane] << 1) for lane in range(lanes)]
        stage_q = [Const(0, quotient_bits) for _ in range(lanes)]
        for k in reversed(range(quotient_bits)):
            v, last, err, n = Signal(name=f"d{k}_valid"), Signal(name=f"d{k}_last"), Signal(name=f"d{k}_error"), \
                Signal(FIELD_BITS, name=f"d{k}_n")
            rems = [Signal(rem_bits, name=f"d{k}_rem{lane}") for lane in range(lanes)]
            qs = [Signal(quotient_bits, name=f"d{k}_q{lane}") for lane in range(lanes)]
            with m.If(advance):
                m.d.sync += [v.eq(stage_valid), last.eq(stage_last), err.eq(stage_error), n.eq(stage_n)]
                for lane in range(lanes):
                    trial = stage_rem[lane] - (stage_n << k)
                    fits = ~trial[-1]
                    m.d.sync += [rems[lane].eq(Mux(fits, trial, stage_rem[lane])),
                                 qs[lane].eq(stage_q[lane] | (fits << k))]
            stage_valid, stage_last, stage_error, stage_n, stage_rem, stage_q = v, last, err, n, rems, qs

        with m.If(advance):
            m.d.sync += [self.o_stream.valid.eq(stage_valid), self.o_stream.payload.last.eq(stage_last),
                         self.o_stream.payload.error.eq(stage_error)]
            for lane in range(lanes):
                mean = ((stage_q[lane] + 1) >> 1) - offset
                m.d.sync += self.o_stream.payload.data[lane].eq(Mux(stage_error, 0, mean))
        return m
