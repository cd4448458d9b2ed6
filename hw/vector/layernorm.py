"""A streaming integer LayerNorm, bit-exact with :func:`tokensift.quant.layernorm.layernorm_int`.

Tokens arrive as beats of ``lanes`` codes (formats and the job protocol: :mod:`.layernorm_layout`). Three
parts run concurrently:

- **accumulate**: each beat goes into the row buffer (block RAM, a ring of :attr:`LayerNormConfig.row_depth`
  beats) while ``S1 = sum q`` and ``S2 = sum q**2`` of its token are summed (registered squares, registered
  adder trees, one accumulator);
- **statistics** (:class:`.layernorm_stats.StatsPipe`): a token's ``(S1, S2)`` become its reciprocal
  square root and shift in a pipeline that accepts one token per cycle, so the square root and the division
  of one token overlap the accumulation of the following ones;
- **normalise**: once a token's statistics are out, its beats are read back (registered RAM output) and go
  through ``n = (q C f 2**L - H) >> s`` (the reference's ``round_shift((C q - S1) f, 31 + R - F - k)``),
  ``acc = fit(n gamma + beta)`` (gamma and beta from the job's constants RAM) and the run-time
  requantization ``fit(round_shift(acc multiplier, shift))``, one beat per cycle, into an output FIFO; a
  beat is issued only when the FIFO has room for it, so output backpressure stalls the unit, never corrupts it.

Every multiplier has its operands and its product in registers, every RAM read lands in a register, and the
variable shifts are split over two stages. That is not yet enough on ECP5: the measured Fmax (``docs/vector.md``,
91 MHz with 2 lanes, 64.6 MHz with 16) is set by the routing to the lanes' multipliers and by the statistics'
split products, whose fixes are described there. A job's constants are loaded while the unit is idle (the
previous job drained); its tokens then stream at one beat per cycle: :func:`.layernorm_cost.cycles`.

>>> from tokensift.hw.vector.layernorm_cost import cycles
>>> unit = LayerNorm(c_max=384, lanes=16)
>>> cycles(unit.config, dim=384, n_tokens=197)
4860
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from tokensift.hw.common import fixed as hwfixed
from tokensift.hw.common.buffers import RowBuffer
from tokensift.hw.vector.layernorm_layout import (
    FIELD_BITS,
    LayerNormConfig,
    const_layout,
    header_layout,
    input_layout,
    output_layout,
    status_layout,
)
from tokensift.hw.vector.layernorm_stats import StatsPipe
from tokensift.quant.fixed import FixedFormat, Rounding

__all__ = ["LayerNorm", "LayerNormConfig", "OUT_STAGES", "FIFO_CYCLES", "acc_stages"]

#: cycles from a beat's issue to its write into the output FIFO: RAM read, its register, product,
#: difference, two shift stages, the register beside gamma/beta, product, affine sum, product, rounding,
#: two shift stages, output fit
OUT_STAGES = 14


#: cycles the token FIFO (statistics -> normalise) and the output FIFO add beyond their registers
FIFO_CYCLES = 2


def acc_stages(lanes: int) -> int:
    """Registers from a token's last accepted beat to the statistics pipeline: the input register, the
    squares' products, the adder trees' levels, the sums handed over."""
    return 3 + ceil_log2(lanes)


_HEADER, _CHECK, _LOAD, _RUN, _DRAIN, _DROP_K, _DROP_I = range(7)


class LayerNorm(wiring.Component):
    """The streaming LayerNorm unit.

    Parameters (keyword-only)
    -------------------------
    config : LayerNormConfig, optional
        All parameters at once; otherwise the keywords of :class:`LayerNormConfig` (``c_max``, ``lanes``,
        ``in_bits``, ``recip_bits``, ``norm_bits``, ``gamma_bits``, ``acc_bits``, ``out``, ``mult_bits``,
        ``eps_bits``, ``counter_bits``), validated there.

    Ports
    -----
    k_stream : in, job headers and constants; i_stream : in, token beats; o_stream : out, output beats
    status : out, ``busy``, ``error``, ``rejected``, ``acc_overflows``, ``out_overflows``
    """

    def __init__(self, *, config: LayerNormConfig | None = None, **kwargs):
        if config is None:
            config = LayerNormConfig(**kwargs)
        elif kwargs:
            raise TypeError("give either config or parameter keywords, not both")
        elif not isinstance(config, LayerNormConfig):
            raise TypeError(f"config must be a LayerNormConfig, not {type(config).__name__}")
        self._cfg = config
        super().__init__({
            "k_stream": In(stream.Signature(const_layout(config))),
            "i_stream": In(stream.Signature(input_layout(config))),
            "o_stream": Out(stream.Signature(output_layout(config))),
            "status": Out(status_layout(config)),
        })

    @property
    def config(self) -> LayerNormConfig:
        return self._cfg

    @property
    def out_fifo_depth(self) -> int:
        """Beats of output buffering: every beat in flight in the datapath, so a ready consumer never waits."""
        return OUT_STAGES + 4

    def elaborate(self, platform):
        m = Module()
        c = self._cfg
        lanes, nb_max, depth = c.lanes, c.beats_max, c.row_depth
        lane_bits = ceil_log2(lanes)
        m.submodules.stats = stats = StatsPipe(c)
        m.submodules.rows = rows = RowBuffer(depth=depth, lanes=lanes, data_bits=c.in_bits)
        consts_l = const_layout(c).members["data"].members["consts"]
        m.submodules.consts = consts = Memory(shape=consts_l, depth=nb_max, init=[])
        kw, kr = consts.write_port(), consts.read_port()
        tok_l = data.StructLayout({"cf": stats.o_cf.shape(), "h": stats.o_h.shape(), "shift": stats.o_shift.shape()})
        m.submodules.tokens = tfifo = SyncFIFOBuffered(width=tok_l.size, depth=depth)
        out_l = output_layout(c)
        m.submodules.ofifo = ofifo = SyncFIFOBuffered(width=out_l.size, depth=self.out_fifo_depth)

        # -- the job: header, check, constants ------------------------------------------------------------
        state = Signal(range(7))
        hdr = self.k_stream.payload.data.header
        dim = Signal(range(c.c_max + 1))
        n_tokens = Signal(FIELD_BITS)
        eps = Signal(c.eps_bits)
        mult = Signal(c.mult_bits)
        rq_shift = Signal(6)
        raw = Signal(header_layout(c), name="raw_header")
        raw_last = Signal()
        nb = Signal(range(nb_max + 1))           # beats per token
        tail = Signal(range(lanes + 1))          # valid lanes of a token's final beat
        rq_half = Signal(c.acc_bits + c.mult_bits + 1)
        error = Signal()
        rejected = Signal(c.counter_bits)
        load_addr = Signal(range(nb_max))
        pending = Signal(range(depth + OUT_STAGES + 2 * (c.stats_latency + acc_stages(lanes)) + 8))

        k_ok = self.k_stream.valid & self.k_stream.ready
        m.d.comb += self.k_stream.ready.eq((state == _HEADER) | (state == _LOAD) | (state == _DROP_K))
        with m.Switch(state):
            with m.Case(_HEADER):
                with m.If(k_ok):
                    m.d.sync += [raw.eq(hdr), raw_last.eq(self.k_stream.payload.last), state.eq(_CHECK)]
            with m.Case(_CHECK):
                ok = ((raw.dim != 0) & (raw.dim <= c.c_max) & (raw.n_tokens != 0) & (raw.eps != 0)
                      & (raw.multiplier != 0) & (raw.shift <= 62))
                with m.If(ok):
                    m.d.sync += [dim.eq(raw.dim), n_tokens.eq(raw.n_tokens), eps.eq(raw.eps), mult.eq(raw.multiplier),
                                 rq_shift.eq(raw.shift), error.eq(0), load_addr.eq(0), state.eq(_LOAD),
                                 nb.eq((raw.dim + lanes - 1) >> lane_bits),
                                 tail.eq((raw.dim - 1)[:lane_bits] + 1 if lanes > 1 else 1)]
                    if c.out.rounding is Rounding.HALF_UP:
                        with m.Switch(raw.shift):
                            for s in range(1, 63):
                                with m.Case(s):
                                    m.d.sync += rq_half.eq(1 << (s - 1))
                            with m.Default():
                                m.d.sync += rq_half.eq(0)
                    else:
                        m.d.sync += rq_half.eq(0)
                with m.Else():
                    m.d.sync += [error.eq(1), state.eq(Mux(raw_last, _DROP_I, _DROP_K))]
                    with m.If(rejected != (1 << c.counter_bits) - 1):
                        m.d.sync += rejected.eq(rejected + 1)
            with m.Case(_LOAD):
                with m.If(k_ok):
                    m.d.sync += load_addr.eq(load_addr + 1)
                    with m.If(load_addr == nb - 1):
                        m.d.sync += state.eq(_RUN)
            with m.Case(_DROP_K):
                with m.If(k_ok & self.k_stream.payload.last):
                    m.d.sync += state.eq(_DROP_I)
            with m.Case(_DRAIN):
                with m.If(pending == 0):
                    m.d.sync += state.eq(_HEADER)
        m.d.comb += [kw.en.eq((state == _LOAD) & k_ok), kw.addr.eq(load_addr),
                     kw.data.eq(self.k_stream.payload.data.consts)]

        # -- accumulate: beats into the row buffer, S1 and S2 per token ---------------------------------------
        occupancy = Signal(range(depth + 1))
        in_j = Signal(range(nb_max))
        in_tok = Signal(FIELD_BITS)
        wr_ptr = Signal(range(depth))
        run_ok = (state == _RUN) & (occupancy != depth)
        m.d.comb += self.i_stream.ready.eq(run_ok | (state == _DROP_I))
        i_ok = self.i_stream.valid & self.i_stream.ready
        accept = i_ok & (state == _RUN)
        with m.If(i_ok & (state == _DROP_I) & self.i_stream.payload.last):
            m.d.sync += state.eq(_HEADER)
        in_last_beat = in_j == nb - 1
        with m.If(accept):
            m.d.sync += [in_j.eq(Mux(in_last_beat, 0, in_j + 1)), wr_ptr.eq(wr_ptr + 1)]
            with m.If(in_last_beat):
                m.d.sync += in_tok.eq(in_tok + 1)
                with m.If(in_tok == n_tokens - 1):
                    m.d.sync += [state.eq(_DRAIN), in_tok.eq(0)]

        a_q = Signal(data.ArrayLayout(signed(c.in_bits), lanes))
        a_valid, a_last, a_addr = Signal(), Signal(), Signal(range(depth))
        for lane in range(lanes):
            live = ~in_last_beat | (lane < tail)
            m.d.sync += a_q[lane].eq(Mux(live, self.i_stream.payload.data[lane], 0))
        m.d.sync += [a_valid.eq(accept), a_last.eq(accept & in_last_beat), a_addr.eq(wr_ptr)]
        m.d.comb += [rows.w_en.eq(a_valid), rows.w_addr.eq(a_addr), rows.w_data.eq(a_q)]

        # squares: operand registers (a_q) and products; the codes wait alongside
        sq = [Signal(2 * c.in_bits, name=f"sq{lane}") for lane in range(lanes)]
        q1 = [Signal(signed(c.in_bits), name=f"q1_{lane}") for lane in range(lanes)]
        for lane in range(lanes):
            m.d.sync += [sq[lane].eq(a_q[lane] * a_q[lane]), q1[lane].eq(a_q[lane])]
        b_valid, b_last = Signal(), Signal()
        m.d.sync += [b_valid.eq(a_valid), b_last.eq(a_last)]
        level1, level2, v, last = q1, sq, b_valid, b_last
        for depth_i in range(lane_bits):
            n1, n2 = [], []
            for i in range(0, len(level1), 2):
                s1 = Signal(signed(c.in_bits + depth_i + 1), name=f"sum{depth_i}_{i // 2}")
                s2 = Signal(2 * c.in_bits + depth_i, name=f"sqsum{depth_i}_{i // 2}")
                m.d.sync += [s1.eq(level1[i] + level1[i + 1]), s2.eq(level2[i] + level2[i + 1])]
                n1.append(s1)
                n2.append(s2)
            nv, nl = Signal(name=f"tree{depth_i}_valid"), Signal(name=f"tree{depth_i}_last")
            m.d.sync += [nv.eq(v), nl.eq(last)]
            level1, level2, v, last = n1, n2, nv, nl
        acc1 = Signal(c.s1_shape)
        acc2 = Signal(c.s2_shape)
        first = Signal(init=1)
        sum1 = Mux(first, 0, acc1) + level1[0]
        sum2 = Mux(first, 0, acc2) + level2[0]
        with m.If(v):
            m.d.sync += [acc1.eq(sum1), acc2.eq(sum2), first.eq(last)]
        t_valid, t_s1, t_s2 = Signal(), Signal(c.s1_shape), Signal(c.s2_shape)
        m.d.sync += [t_valid.eq(v & last), t_s1.eq(sum1), t_s2.eq(sum2)]
        m.d.comb += [stats.dim.eq(dim), stats.eps.eq(eps), stats.i_valid.eq(t_valid), stats.i_s1.eq(t_s1),
                     stats.i_s2.eq(t_s2)]
        tok_in = Signal(tok_l)
        m.d.comb += [tok_in.cf.eq(stats.o_cf), tok_in.h.eq(stats.o_h), tok_in.shift.eq(stats.o_shift),
                     tfifo.w_data.eq(tok_in), tfifo.w_en.eq(stats.o_valid)]

        # -- normalise: issue one beat per cycle when a token's statistics and output room are there -------------
        out_j = Signal(range(nb_max))
        out_tok = Signal(FIELD_BITS)
        rd_ptr = Signal(range(depth))
        inflight = Signal(range(self.out_fifo_depth + 1))
        tok = Signal(tok_l)
        m.d.comb += tok.eq(tfifo.r_data)
        room = (ofifo.level + inflight) < self.out_fifo_depth
        issue = tfifo.r_rdy & room
        out_last_beat = out_j == nb - 1
        m.d.comb += [rows.r_addr.eq(rd_ptr), tfifo.r_en.eq(issue & out_last_beat)]
        with m.If(issue):
            m.d.sync += [rd_ptr.eq(rd_ptr + 1), out_j.eq(Mux(out_last_beat, 0, out_j + 1))]
            with m.If(out_last_beat):
                m.d.sync += out_tok.eq(Mux(out_tok == n_tokens - 1, 0, out_tok + 1))
        with m.If(accept & ~issue):
            m.d.sync += occupancy.eq(occupancy + 1)
        with m.Elif(~accept & issue):
            m.d.sync += occupancy.eq(occupancy - 1)

        ctrl_l = data.StructLayout({"valid": 1, "j": range(nb_max), "tlast": 1, "last": 1})
        ctrl = [Signal(ctrl_l, name=f"ctrl{s}") for s in range(OUT_STAGES + 1)]
        m.d.comb += [ctrl[0].valid.eq(issue), ctrl[0].j.eq(out_j), ctrl[0].tlast.eq(out_last_beat),
                     ctrl[0].last.eq(out_last_beat & (out_tok == n_tokens - 1))]
        for s in range(OUT_STAGES):
            m.d.sync += ctrl[s + 1].eq(ctrl[s])
        toks = [tok]
        for s in range(1, 6):  # the token's constants travel with its beats until the last shift uses them
            t = Signal(tok_l, name=f"tok{s}")
            m.d.sync += t.eq(toks[-1])
            toks.append(t)

        pre = c.left_pre_shift
        prod_shape = signed(c.in_bits + stats.o_cf.shape().width + 1)
        d_shape = signed(max(prod_shape.width + pre, stats.o_h.shape().width) + 1)
        n_shape = c.n_shape
        g_shape = signed(n_shape.width + c.gamma_bits)
        acc_fmt = FixedFormat(bits=c.acc_bits)
        rq_shape = signed(c.acc_bits + c.mult_bits + 2)
        outs, acc_ovf, out_ovf = [], [], []
        kram_gamma = Signal.like(kr.data.gamma, name="gamma")
        kram_beta = Signal.like(kr.data.beta, name="beta")
        m.d.comb += kr.addr.eq(ctrl[5].j)  # read at stage 5, data at 6, register at 7 (next to n)
        m.d.sync += [kram_gamma.eq(kr.data.gamma), kram_beta.eq(kr.data.beta)]
        for lane in range(lanes):
            def reg(shape, value, stage, _lane=lane):
                r = Signal(shape, name=f"p{stage}_{_lane}")
                m.d.sync += r.eq(value)
                return r
            q2 = reg(signed(c.in_bits), rows.r_data[lane], 2)                       # RAM output register
            p3 = reg(prod_shape, q2 * toks[2].cf, 3)                                 # q C f
            d4 = reg(d_shape, (p3 << pre) - toks[3].h, 4)                            # (C q - S1) f 2**L + half
            e5 = reg(d_shape, d4 >> Cat(Const(0, 3), toks[4].shift[3:]), 5)          # >> s, high bits
            n6 = reg(n_shape, (e5 >> toks[5].shift[:3])[: n_shape.width], 6)         # >> s, low bits
            n7 = reg(n_shape, n6, 7)                                                 # beside gamma, beta
            g8 = reg(g_shape, n7 * kram_gamma[lane], 8)
            b8 = reg(signed(c.acc_bits), kram_beta[lane], 8)
            acc_value, acc_over = hwfixed.fit(g8 + b8, acc_fmt)
            acc9 = reg(signed(c.acc_bits), acc_value, 9)
            ovf9 = reg(1, acc_over, 9)
            r10 = reg(rq_shape, acc9 * mult, 10)
            r11 = reg(signed(rq_shape.width + 1), r10 + rq_half, 11)
            r12 = reg(signed(rq_shape.width + 1), r11 >> Cat(Const(0, 3), rq_shift[3:]), 12)
            r13 = reg(signed(rq_shape.width + 1), r12 >> rq_shift[:3], 13)
            out_value, out_over = hwfixed.fit(r13, c.out)
            live14 = ~ctrl[13].tlast | (lane < tail)
            o14 = reg(c.out.shape, Mux(live14, out_value, 0), 14)
            ovf14 = reg(1, live14 & out_over, 14)
            live9 = ~ctrl[9].tlast | (lane < tail)
            ovf10 = reg(1, live9 & ovf9, 10)
            outs.append(o14)
            acc_ovf.append(ovf10)
            out_ovf.append(ovf14)

        o_word = Signal(out_l)
        m.d.comb += [o_word.token_last.eq(ctrl[14].tlast), o_word.last.eq(ctrl[14].last),
                     ofifo.w_data.eq(o_word), ofifo.w_en.eq(ctrl[14].valid)]
        for lane in range(lanes):
            m.d.comb += o_word.data[lane].eq(outs[lane])
        m.d.comb += [self.o_stream.payload.eq(ofifo.r_data), self.o_stream.valid.eq(ofifo.r_rdy),
                     ofifo.r_en.eq(self.o_stream.ready)]
        with m.If(issue & ~ofifo.w_en):
            m.d.sync += inflight.eq(inflight + 1)
        with m.Elif(~issue & ofifo.w_en):
            m.d.sync += inflight.eq(inflight - 1)
        with m.If(accept & ~ofifo.w_en):
            m.d.sync += pending.eq(pending + 1)
        with m.Elif(~accept & ofifo.w_en):
            m.d.sync += pending.eq(pending - 1)

        # -- saturation counts: the lanes' flags summed in a register, then a saturating add --------------------
        acc_count = self.status.acc_overflows
        out_count = self.status.out_overflows
        for flags, counter, valid_stage in ((acc_ovf, acc_count, 10), (out_ovf, out_count, 14)):
            add = Signal(range(lanes + 1))
            m.d.sync += add.eq(Mux(ctrl[valid_stage].valid, sum(flags[1:], flags[0]), 0))
            total = counter + add
            top = (1 << c.counter_bits) - 1
            m.d.sync += counter.eq(Mux(total > top, top, total))

        m.d.comb += [self.status.busy.eq((state != _HEADER) | ofifo.r_rdy), self.status.error.eq(error),
                     self.status.rejected.eq(rejected)]
        return m
