"""One attention head core: buffers, the MAC array, the softmax unit, the output requantizer.

A frame (header with a valid ``N``, then ``N`` rows each of Q, K, V) is loaded into block RAM, then the
array runs the jobs ``QK(0), QK(1), PV(0), QK(2), PV(1), ..., QK(N-1), PV(N-2), PV(N-1)`` back to back
while the softmax unit works on row ``i`` between ``QK(i)`` and ``PV(i)``: the softmax of a row overlaps
``PV`` of the row before and ``QK`` of the row after, so the multipliers are busy except at the very
start and end of a frame.

- ``QK(i)``: for each token ``j``, the ``chunks = head_dim / lanes`` lane vectors of ``q_i`` and ``k_j``
  (dot mode), ``N * chunks`` cycles; the scores go to the softmax unit's buffer and their running max
  is kept per bank.
- ``PV(i)``: for each chunk, every token ``j`` (vec mode): ``p_ij = normalize(e_ij, r_i)`` broadcast
  to the lanes times ``v_j``'s chunk; ``chunks * max(N, lanes)`` cycles (a chunk is padded to ``lanes``
  cycles when ``N < lanes``, the time the serial output requantizer needs). For row 0 and chunk 0 the
  probabilities also go to the class-attention FIFO: the token scores, without an extra pass.
- Each finished chunk (``lanes`` accumulators) is requantized one value per cycle by
  :class:`tokensift.hw.common.requant.Requantizer` into one output beat. A ``PV`` chunk only starts when the
  output FIFO has room for its beat, so output backpressure stalls the array, never corrupts it.

Row parity selects the bank of the two-bank score and exponential buffers, so ``QK(i+1)`` can write
while row ``i`` is in the softmax unit.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from tokensift.hw.attention.constants import ConstantRanges, frame_const_layout
from tokensift.hw.attention.layout import input_layout, output_layout, score_layout
from tokensift.hw.attention.requant import RuntimeRequantizer
from tokensift.hw.attention.softmax import ProbNormalizer, SoftmaxUnit
from tokensift.hw.common.buffers import RowBuffer
from tokensift.hw.common.mac_array import MODE_DOT, MODE_VEC, MacArray, mul_const
from tokensift.quant.attention import AttentionParams

__all__ = ["AttentionEngine", "FRONT_STAGES"]

#: cycles from an operation's issue to the MAC array inputs: memory read, then the 3-stage normalizer
#: (operand registers, product, rounding); the Q and K/V words wait in registers alongside
FRONT_STAGES = 1 + ProbNormalizer.latency


class AttentionEngine(wiring.Component):
    """One head core. ``i_stream`` carries frames whose header ``N`` is already known to be valid
    (:class:`tokensift.hw.attention.core.Attention` checks it); ``o_stream``/``s_stream`` as documented in
    :mod:`tokensift.hw.attention.layout`, ``payload.head = head``. ``consts`` holds the frame's run-time
    constants (already checked against ``ranges``) while its header is on ``i_stream``; they are registered
    with the header (the output constants in one of two banks, so the previous frame's last chunks, still
    in the requantizer, keep theirs)."""

    def __init__(self, params: AttentionParams, *, ranges: ConstantRanges | None = None, head: int = 0):
        if not isinstance(params, AttentionParams):
            raise TypeError(f"params must be an AttentionParams, not {type(params).__name__}")
        if ranges is None:
            ranges = ConstantRanges.covering(params)
        elif not isinstance(ranges, ConstantRanges):
            raise TypeError(f"ranges must be a ConstantRanges, not {type(ranges).__name__}")
        self._p = params
        self._ranges = ranges
        self._head = head
        p = params
        self._mac = MacArray(lanes=p.lanes, a_bits=max(p.data_bits, p.softmax.prob_frac + 2), b_bits=p.data_bits,
                             dot_bits=2 * p.data_bits, acc_bits=p.acc_bits, tag_bits=self._tag_layout().size)
        self._softmax = SoftmaxUnit(params=p.softmax, n_max=p.n_max, score_bits=p.score_bits,
                                    mult_bits=ranges.scale_mult_bits, shift_max=ranges.scale_shift_max)
        super().__init__({
            "i_stream": In(stream.Signature(input_layout(p))),
            "consts": In(frame_const_layout(ranges)),
            "o_stream": Out(stream.Signature(output_layout(p))),
            "s_stream": Out(stream.Signature(score_layout(p))),
            "busy": Out(1),
            "overflows": Out(16),
        })

    def _tag_layout(self):
        return data.StructLayout({"j": range(self._p.n_max), "bank": 1, "lastj": 1, "cls": 1, "final": 1,
                                  "frame": 1})

    @property
    def mac(self) -> MacArray:
        return self._mac

    @property
    def softmax(self) -> SoftmaxUnit:
        return self._softmax

    @property
    def ranges(self) -> ConstantRanges:
        return self._ranges

    @property
    def out_fifo_depth(self) -> int:
        """Beats of output buffering: enough for every chunk in flight when nothing stalls."""
        p = self._p
        in_flight = FRONT_STAGES + self._mac.vec_latency + p.lanes + RuntimeRequantizer.latency + 3
        return 2 + -(-in_flight // p.lanes)

    def elaborate(self, platform):
        m = Module()
        p = self._p
        n_max, lanes, chunks = p.n_max, p.lanes, p.chunks
        m.submodules.mac = mac = self._mac
        m.submodules.softmax = sm = self._softmax
        m.submodules.qbuf = qbuf = RowBuffer(depth=n_max * chunks, lanes=lanes, data_bits=p.data_bits)
        m.submodules.kvbuf = kvbuf = RowBuffer(depth=2 * n_max * chunks, lanes=lanes, data_bits=p.data_bits)
        m.submodules.norm = norm = ProbNormalizer(params=p.softmax)
        r = self._ranges
        m.submodules.requant = rq = RuntimeRequantizer(value_bits=p.pv_bits, out=p.data_format,
                                                       mult_bits=r.out_mult_bits, shift_max=r.out_shift_max,
                                                       tag_bits=2)
        out_l, score_l = output_layout(p), score_layout(p)
        m.submodules.ofifo = ofifo = SyncFIFOBuffered(width=out_l.size, depth=self.out_fifo_depth)
        m.submodules.sfifo = sfifo = SyncFIFOBuffered(width=score_l.size, depth=n_max)
        v_base = n_max * chunks

        # -- frame registers and loading ---------------------------------------------------------------
        n = Signal(range(n_max + 1))
        # the last index of each count, registered with the header: the counters' ends are then equality
        # compares with registers, not a subtraction's carry chain in front of them
        n_last = Signal(range(n_max))  # N - 1
        load_last = Signal(range(n_max * chunks))  # N * chunks - 1
        chunk_last = Signal(range(max(n_max, lanes)))  # max(N, lanes) - 1
        region = Signal(range(3))  # 0: Q, 1: K, 2: V
        load_addr = Signal(range(n_max * chunks))
        computing = Signal()
        loading = Signal()

        # the frame's constants: the softmax scale in one register (the previous frame's softmax finished
        # before its last PV issued), the output scale in the bank of the frame's parity
        consts_l = frame_const_layout(r)
        scale = Signal(consts_l, name="scale")
        out_consts = [Signal(consts_l, name=f"out_consts{b}") for b in range(2)]
        frame = Signal()  # parity of the frame loaded last
        i_ok = self.i_stream.valid & self.i_stream.ready
        m.d.comb += self.i_stream.ready.eq(~computing)
        with m.If(i_ok & ~loading):  # header
            hdr_n = self.i_stream.payload.header.n_tokens[: len(n)]
            m.d.sync += [n.eq(hdr_n), n_last.eq(hdr_n - 1), load_last.eq(mul_const(hdr_n, chunks) - 1),
                         chunk_last.eq(Mux(hdr_n > lanes, hdr_n - 1, lanes - 1)), loading.eq(1), region.eq(0),
                         load_addr.eq(0), scale.eq(self.consts), frame.eq(~frame)]
            for b in range(2):
                with m.If(frame != b):
                    m.d.sync += out_consts[b].eq(self.consts)
        m.d.comb += [sm.scale_multiplier.eq(scale.scale_multiplier), sm.scale_shift.eq(scale.scale_shift)]
        row = self.i_stream.payload.row
        m.d.comb += [qbuf.w_data.eq(row), kvbuf.w_data.eq(row),
                     qbuf.w_addr.eq(load_addr), kvbuf.w_addr.eq(Mux(region == 2, v_base + load_addr, load_addr)),
                     qbuf.w_en.eq(i_ok & loading & (region == 0)), kvbuf.w_en.eq(i_ok & loading & (region != 0))]

        # -- sequencer state -------------------------------------------------------------------------
        k = Signal(range(n_max + 2))  # step: QK(k) then PV(k - 1)
        phase_pv = Signal()
        j = Signal(range(n_max))
        c = Signal(range(chunks))
        cc = Signal(range(max(n_max, lanes) + 1))
        q_base = Signal(range(n_max * chunks + chunks))
        kaddr = Signal(range(n_max * chunks + 1))
        vaddr = Signal(range(2 * n_max * chunks + 1))
        sm_done = Signal(2)      # softmax of the row in bank b finished (exponentials and reciprocal ready)
        recips = [Signal.like(sm.recip, name=f"recip{b}") for b in range(2)]
        inflight = Signal(range(self.out_fifo_depth + 1))

        def begin_step(k_new):
            m.d.sync += [k.eq(k_new), j.eq(0), c.eq(0), cc.eq(0), kaddr.eq(0), vaddr.eq(v_base)]
            m.d.sync += phase_pv.eq(k_new >= n)

        with m.If(i_ok & loading):
            with m.If(load_addr == load_last):
                m.d.sync += [load_addr.eq(0), region.eq(region + 1)]
                with m.If(region == 2):
                    m.d.sync += [loading.eq(0), computing.eq(1), q_base.eq(0)]
                    begin_step(0)
            with m.Else():
                m.d.sync += load_addr.eq(load_addr + 1)

        pv_row0 = k == 1
        pv_bank = ~k[0]
        qk_bank = k[0]
        chunk_start = cc == 0
        # the output FIFO's level plus the chunks in flight, kept as its own counter: the sum of the FIFO's level
        # (itself an adder behind its output register) and inflight was a carry chain in front of every issue
        used = Signal(range(self.out_fifo_depth + 2))
        credit_ok = used < self.out_fifo_depth
        # whether the class-score FIFO is empty, a register kept beside it: the FIFO's level is an adder over its
        # output register, and its compare with zero was a carry chain in front of every PV issue
        scores_left = Signal(range(n_max + 1))
        scores_empty = Signal(init=1)
        s_push = sfifo.w_en & sfifo.w_rdy
        s_pop = sfifo.r_en & sfifo.r_rdy
        with m.If(s_push & ~s_pop):
            m.d.sync += [scores_left.eq(scores_left + 1), scores_empty.eq(0)]
        with m.Elif(s_pop & ~s_push):
            m.d.sync += [scores_left.eq(scores_left - 1), scores_empty.eq(scores_left == 1)]
        class_ok = ~(pv_row0 & (c == 0)) | scores_empty
        go = Mux(sm_done.bit_select(pv_bank, 1), 1, 0) & credit_ok & class_ok
        pv_advance = computing & phase_pv & (~chunk_start | go)
        pv_op = pv_advance & (cc < n)
        qk_op = computing & ~phase_pv

        chunk_done = Signal()
        m.d.comb += chunk_done.eq(pv_advance & (cc == chunk_last))
        with m.If(qk_op):
            m.d.sync += kaddr.eq(kaddr + 1)
            with m.If(c == chunks - 1):
                m.d.sync += c.eq(0)
                with m.If(j == n_last):  # end of QK(k)
                    m.d.sync += [j.eq(0), q_base.eq(q_base + chunks)]
                    with m.If(k == 0):
                        begin_step(1)
                    with m.Else():
                        m.d.sync += [phase_pv.eq(1), cc.eq(0), vaddr.eq(v_base)]
                with m.Else():
                    m.d.sync += j.eq(j + 1)
            with m.Else():
                m.d.sync += c.eq(c + 1)
        with m.If(pv_advance):
            m.d.sync += [cc.eq(cc + 1), vaddr.eq(vaddr + chunks)]
            with m.If(chunk_done):
                m.d.sync += [cc.eq(0), vaddr.eq(v_base + c + 1), c.eq(c + 1)]
                with m.If(c == chunks - 1):  # end of PV(k - 1)
                    m.d.sync += sm_done.bit_select(pv_bank, 1).eq(0)
                    with m.If(k == n):
                        m.d.sync += computing.eq(0)
                    with m.Else():
                        begin_step(k + 1)

        # -- operation issue: memory reads (stage 1), normalizer (stages 2-4), MAC inputs (stage 4) -------
        tag_l = self._tag_layout()
        op_tag = Signal(tag_l)
        m.d.comb += [
            op_tag.j.eq(Mux(phase_pv, cc, j)),
            op_tag.bank.eq(Mux(phase_pv, pv_bank, qk_bank)),
            op_tag.lastj.eq(Mux(phase_pv, cc == n_last, j == n_last)),
            op_tag.cls.eq(phase_pv & pv_row0 & (c == 0)),
            op_tag.final.eq(phase_pv & (k == n) & (c == chunks - 1)),
            op_tag.frame.eq(frame),
        ]
        op_valid = qk_op | pv_op
        op_first = Mux(phase_pv, cc == 0, c == 0)
        op_last = Mux(phase_pv, cc == n_last, c == chunks - 1)
        m.d.comb += [qbuf.r_addr.eq(q_base + c), kvbuf.r_addr.eq(Mux(phase_pv, vaddr, kaddr)),
                     sm.e_r_bank.eq(pv_bank), sm.e_r_addr.eq(cc)]

        ctrl_l = data.StructLayout({"valid": 1, "mode": 1, "first": 1, "last": 1, "tag": tag_l})
        ctrl = [Signal(ctrl_l, name=f"ctrl{s}") for s in range(FRONT_STAGES + 1)]
        m.d.comb += [ctrl[0].valid.eq(op_valid), ctrl[0].mode.eq(Mux(phase_pv, MODE_VEC, MODE_DOT)),
                     ctrl[0].first.eq(op_first), ctrl[0].last.eq(op_last), ctrl[0].tag.eq(op_tag)]
        for s in range(FRONT_STAGES):
            m.d.sync += ctrl[s + 1].eq(ctrl[s])
        # the block-RAM words go straight into registers, which wait for the normalizer
        q_pipe, kv_pipe = [qbuf.r_data], [kvbuf.r_data]
        for s in range(2, FRONT_STAGES + 1):
            q_pipe.append(Signal.like(qbuf.r_data, name=f"q{s}"))
            kv_pipe.append(Signal.like(kvbuf.r_data, name=f"kv{s}"))
            m.d.sync += [q_pipe[-1].eq(q_pipe[-2]), kv_pipe[-1].eq(kv_pipe[-2])]
        m.d.comb += [norm.e.eq(sm.e_r_data), norm.recip.eq(Mux(ctrl[1].tag.bank, recips[1], recips[0]))]
        c_mac = ctrl[FRONT_STAGES]
        m.d.comb += [mac.valid.eq(c_mac.valid), mac.mode.eq(c_mac.mode), mac.first.eq(c_mac.first),
                     mac.last.eq(c_mac.last), mac.tag.eq(c_mac.tag)]
        for lane in range(lanes):
            m.d.comb += [mac.a[lane].eq(Mux(c_mac.mode == MODE_VEC, norm.p, q_pipe[-1][lane])),
                         mac.b[lane].eq(kv_pipe[-1][lane])]

        # class-token probabilities into their FIFO as PV(0) reads them
        s_word = Signal(score_l)
        m.d.comb += [s_word.prob.eq(norm.p), s_word.last.eq(c_mac.tag.lastj), s_word.head.eq(self._head),
                     sfifo.w_data.eq(s_word), sfifo.w_en.eq(c_mac.valid & (c_mac.mode == MODE_VEC) & c_mac.tag.cls)]
        m.d.comb += [self.s_stream.payload.eq(sfifo.r_data), self.s_stream.valid.eq(sfifo.r_rdy),
                     sfifo.r_en.eq(self.s_stream.ready)]

        # -- scores: into the softmax unit's buffer, running max per bank --------------------------------
        dot_tag = Signal(tag_l)
        m.d.comb += dot_tag.eq(mac.dot_tag)
        score = mac.dot[: p.score_bits].as_signed()
        m.d.comb += [sm.score_w_en.eq(mac.dot_valid), sm.score_w_bank.eq(dot_tag.bank),
                     sm.score_w_addr.eq(dot_tag.j), sm.score_w_data.eq(score)]
        # the running max compares a registered copy of the score: the MAC array's output also feeds the score
        # buffer, and its compare into the max register's enable was the core's worst path. The max is a cycle
        # late, which the softmax unit allows for: it samples ``start_max`` the cycle after ``start``.
        row_max = [Signal(signed(p.score_bits), name=f"row_max{b}") for b in range(2)]
        max_score = Signal(signed(p.score_bits))
        max_en = Signal(2)
        max_first = Signal()
        m.d.sync += [max_score.eq(score), max_first.eq(dot_tag.j == 0),
                     max_en.eq(Mux(mac.dot_valid, Mux(dot_tag.bank, 0b10, 0b01), 0))]
        scores_ready = Signal(2)
        for b in range(2):
            with m.If(max_en[b] & (max_first | (max_score > row_max[b]))):
                m.d.sync += row_max[b].eq(max_score)
            with m.If(mac.dot_valid & (dot_tag.bank == b) & dot_tag.lastj):
                m.d.sync += scores_ready[b].eq(1)

        # -- softmax rows in order, alternating banks ----------------------------------------------------
        sm_bank = Signal()
        started_bank = Signal()  # the bank of the row started last, whose max the softmax unit samples next
        start = Signal()
        m.d.comb += [start.eq(computing & sm.ready & scores_ready.bit_select(sm_bank, 1)),
                     sm.start.eq(start), sm.start_bank.eq(sm_bank),
                     sm.start_max.eq(Mux(started_bank, row_max[1], row_max[0])), sm.start_n.eq(n)]
        with m.If(start):
            m.d.sync += [scores_ready.bit_select(sm_bank, 1).eq(0), sm_bank.eq(~sm_bank), started_bank.eq(sm_bank)]
        with m.If(sm.done):
            m.d.sync += sm_done.bit_select(sm.done_bank, 1).eq(1)
            for b in range(2):
                with m.If(sm.done_bank == b):
                    m.d.sync += recips[b].eq(sm.recip)
        with m.If(i_ok & loading & (region == 2) & (load_addr == load_last)):  # a new frame computes
            m.d.sync += [sm_bank.eq(0), scores_ready.eq(0), sm_done.eq(0)]

        # -- finished chunks: serial requantization into output beats ----------------------------------
        # a chunk's values and its frame's output constants are loaded together into registers, which feed
        # the requantizer's multiplier directly
        hold = [Signal(signed(p.pv_bits), name=f"hold{lane}") for lane in range(lanes)]
        ser_count = Signal(range(lanes + 1))
        ser_final = Signal()
        ser_consts = Signal(consts_l, name="ser_consts")
        vec_tag = Signal(tag_l)
        m.d.comb += vec_tag.eq(mac.vec_tag)
        sending = ser_count != 0
        m.d.comb += [rq.i_valid.eq(sending), rq.i_value.eq(hold[0]), rq.i_tag.eq(Cat(ser_count == 1, ser_final)),
                     rq.multiplier.eq(ser_consts.out_multiplier), rq.shift.eq(ser_consts.out_shift)]
        with m.If(mac.vec_valid):
            m.d.sync += [ser_count.eq(lanes), ser_final.eq(vec_tag.final),
                         ser_consts.eq(Mux(vec_tag.frame, out_consts[1], out_consts[0]))]
        with m.Elif(sending):
            m.d.sync += ser_count.eq(ser_count - 1)
        # the values shift on every other cycle too (only hold[0] while sending is read): their load is then a
        # multiplexer by a register, not an enable net of every hold bit behind the count's logic
        # (the accumulators hold P V sums, which fit pv_bits exactly)
        for lane in range(lanes):
            shifted = hold[lane + 1] if lane + 1 < lanes else hold[lane]
            m.d.sync += hold[lane].eq(Mux(mac.vec_valid, mac.vec[lane][: p.pv_bits].as_signed(), shifted))
        # the requantizer is never stalled: a value leaves it RuntimeRequantizer.latency cycles later
        out_last_lane, out_final = rq.o_tag[0], rq.o_tag[1]
        pack = Signal(data.ArrayLayout(signed(p.data_bits), lanes))
        if lanes > 1:
            with m.If(rq.o_valid):
                m.d.sync += pack.eq(Mux(out_last_lane, 0, (pack.as_value() >> p.data_bits)
                                        | (rq.o_value.as_unsigned() << ((lanes - 1) * p.data_bits))))
        o_word = Signal(out_l)
        beat = (pack.as_value() >> p.data_bits) | (rq.o_value.as_unsigned() << ((lanes - 1) * p.data_bits))
        m.d.comb += [o_word.row.eq(beat), o_word.last.eq(out_final), o_word.head.eq(self._head),
                     ofifo.w_data.eq(o_word), ofifo.w_en.eq(rq.o_valid & out_last_lane)]
        m.d.comb += [self.o_stream.payload.eq(ofifo.r_data), self.o_stream.valid.eq(ofifo.r_rdy),
                     ofifo.r_en.eq(self.o_stream.ready)]
        chunk_issue = pv_advance & chunk_start
        with m.If(chunk_issue & ~ofifo.w_en):
            m.d.sync += inflight.eq(inflight + 1)
        with m.Elif(~chunk_issue & ofifo.w_en):
            m.d.sync += inflight.eq(inflight - 1)
        popped = ofifo.r_en & ofifo.r_rdy
        with m.If(chunk_issue & ~popped):
            m.d.sync += used.eq(used + 1)
        with m.Elif(~chunk_issue & popped):
            m.d.sync += used.eq(used - 1)

        m.d.comb += self.overflows.eq(rq.overflows)
        pipe_busy = 0
        for stage in ctrl[1:]:
            pipe_busy = pipe_busy | stage.valid
        m.d.comb += self.busy.eq(loading | computing | pipe_busy | (inflight != 0) | ofifo.r_rdy | sfifo.r_rdy
                                 | ~sm.ready | (ser_count != 0) | mac.dot_valid | mac.vec_valid)
        return m
