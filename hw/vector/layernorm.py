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

Every product is cut into DSP-sized pieces with operand registers of their own and registered partial sums
(:mod:`.products`), the values all lanes share reach each lane through its own register copy, every RAM read
lands in a register, the variable shifts are split over two stages and the last-beat flags are registers
(the measured Fmax: ``docs/vector.md``). A job's constants are loaded while the unit is idle (the
previous job drained); its tokens then stream at one beat per cycle: :func:`.layernorm_cost.cycles`.

>>> from tokensift.hw.vector.layernorm_cost import cycles
>>> unit = LayerNorm(c_max=384, lanes=16)
>>> cycles(unit.config, dim=384, n_tokens=197)
4870
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
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
from tokensift.hw.vector.products import Products, product_latency
from tokensift.quant.fixed import FixedFormat, Rounding

__all__ = ["LayerNorm", "LayerNormConfig", "out_stages", "out_fifo_depth", "FIFO_CYCLES", "acc_stages"]

def out_stages(config: LayerNormConfig) -> int:
    """Cycles from a beat's issue to its write into the output FIFO: the RAM read and its register, ``q C f``
    (split registered product), the difference, two shift stages, ``n gamma`` (registered product), the
    affine sum, ``acc multiplier`` (split registered product), the rounding, two shift stages, the output
    fit."""
    if not isinstance(config, LayerNormConfig):
        raise TypeError(f"config must be a LayerNormConfig, not {type(config).__name__}")
    lat_q, lat_g, lat_r = _lane_product_latencies(config)
    return 2 + lat_q + 3 + lat_g + 1 + lat_r + 4


def _lane_product_latencies(c: LayerNormConfig) -> tuple[int, int, int]:
    """Latencies of a lane's ``q C f``, ``n gamma`` and ``acc multiplier``."""
    return (product_latency(signed(c.in_bits), c.cf_shape), product_latency(c.n_shape, signed(c.gamma_bits)),
            product_latency(signed(c.acc_bits), unsigned(c.mult_bits)))


#: cycles the token FIFO (statistics -> normalise, with its token register) and the output FIFO add beyond
#: their registers
FIFO_CYCLES = 3


def acc_stages(lanes: int) -> int:
    """Registers from a token's last accepted beat to the statistics pipeline: the input register, the
    squares' products, the adder trees' levels, the sums handed over."""
    return 3 + ceil_log2(lanes)


def out_fifo_depth(config: LayerNormConfig) -> int:
    """Beats of output buffering: every beat in flight in the datapath, so a ready consumer never waits."""
    return out_stages(config) + 4


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
        return out_fifo_depth(self._cfg)

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
        # the state's next value, so the input's ready can be a register holding what it will be
        state_next = Signal.like(state)
        m.d.comb += state_next.eq(state)
        m.d.sync += state.eq(state_next)
        hdr = self.k_stream.payload.data.header
        dim = Signal(range(c.c_max + 1))
        n_tokens = Signal(FIELD_BITS)
        eps = Signal(c.eps_bits)
        mult = Signal(c.mult_bits)
        rq_shift = Signal(6)
        raw = Signal(header_layout(c), name="raw_header")
        raw_last = Signal()
        nb_m1 = Signal(range(nb_max))            # beats per token, minus one
        in_last = Signal()                       # the next accepted beat is its token's last
        out_last = Signal()                      # the next issued beat is its token's last
        n_m1 = Signal(FIELD_BITS)                # tokens per job, minus one
        tail = Signal(range(lanes + 1))          # valid lanes of a token's final beat
        rq_half = Signal(c.acc_bits + c.mult_bits + 1)
        error = Signal()
        rejected = Signal(c.counter_bits)
        load_addr = Signal(range(nb_max))
        pending = Signal(range(depth + out_stages(c) + 2 * (c.stats_latency + acc_stages(lanes)) + 8))

        k_ok = self.k_stream.valid & self.k_stream.ready
        m.d.comb += self.k_stream.ready.eq((state == _HEADER) | (state == _LOAD) | (state == _DROP_K))
        with m.Switch(state):
            with m.Case(_HEADER):
                with m.If(k_ok):
                    m.d.sync += [raw.eq(hdr), raw_last.eq(self.k_stream.payload.last)]
                    m.d.comb += state_next.eq(_CHECK)
            with m.Case(_CHECK):
                ok = ((raw.dim != 0) & (raw.dim <= c.c_max) & (raw.n_tokens != 0) & (raw.eps != 0)
                      & (raw.multiplier != 0) & (raw.shift <= 62))
                with m.If(ok):
                    m.d.sync += [dim.eq(raw.dim), n_tokens.eq(raw.n_tokens), eps.eq(raw.eps), mult.eq(raw.multiplier),
                                 rq_shift.eq(raw.shift), error.eq(0), load_addr.eq(0),
                                 nb_m1.eq((raw.dim - 1) >> lane_bits), in_last.eq(((raw.dim - 1) >> lane_bits) == 0),
                                 out_last.eq(((raw.dim - 1) >> lane_bits) == 0), n_m1.eq(raw.n_tokens - 1),
                                 tail.eq((raw.dim - 1)[:lane_bits] + 1 if lanes > 1 else 1)]
                    m.d.comb += state_next.eq(_LOAD)
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
                    m.d.sync += error.eq(1)
                    m.d.comb += state_next.eq(Mux(raw_last, _DROP_I, _DROP_K))
                    with m.If(rejected != (1 << c.counter_bits) - 1):
                        m.d.sync += rejected.eq(rejected + 1)
            with m.Case(_LOAD):
                with m.If(k_ok):
                    m.d.sync += load_addr.eq(load_addr + 1)
                    with m.If(load_addr == nb_m1):
                        m.d.comb += state_next.eq(_RUN)
            with m.Case(_DROP_K):
                with m.If(k_ok & self.k_stream.payload.last):
                    m.d.comb += state_next.eq(_DROP_I)
            with m.Case(_DRAIN):
                with m.If(pending == 0):
                    m.d.comb += state_next.eq(_HEADER)
        m.d.comb += [kw.en.eq((state == _LOAD) & k_ok), kw.addr.eq(load_addr),
                     kw.data.eq(self.k_stream.payload.data.consts)]

        # -- accumulate: beats into the row buffer, S1 and S2 per token ---------------------------------------
        occupancy = Signal(range(depth + 1))
        in_j = Signal(range(nb_max))
        in_tok = Signal(FIELD_BITS)
        wr_ptr = Signal(range(depth))
        # the input's ready is a register (the producer's FIFO fans it out to its whole read side): it is set
        # from the next state and the next "row buffer full", a flag kept with the occupancy
        full = Signal()
        full_next = Signal()
        in_ready = Signal()
        m.d.comb += full_next.eq(full)
        m.d.sync += [full.eq(full_next),
                     in_ready.eq(((state_next == _RUN) & ~full_next) | (state_next == _DROP_I))]
        m.d.comb += self.i_stream.ready.eq(in_ready)
        i_ok = self.i_stream.valid & self.i_stream.ready
        accept = i_ok & (state == _RUN)
        with m.If(i_ok & (state == _DROP_I) & self.i_stream.payload.last):
            m.d.comb += state_next.eq(_HEADER)
        # the last-beat flag is a register, updated from the beat count one beat ahead
        in_last_beat = in_last
        with m.If(accept):
            m.d.sync += [in_j.eq(Mux(in_last_beat, 0, in_j + 1)), wr_ptr.eq(wr_ptr + 1),
                         in_last.eq(Mux(in_last_beat, nb_m1 == 0, in_j + 1 == nb_m1))]
            with m.If(in_last_beat):
                m.d.sync += in_tok.eq(in_tok + 1)
                with m.If(in_tok == n_m1):
                    m.d.sync += in_tok.eq(0)
                    m.d.comb += state_next.eq(_DRAIN)

        # each beat lands in two registers per lane: one for the row buffer and the adder tree, one that only
        # feeds the lane's square (a multiplier placed far from the row buffer gets its own operand register)
        products = Products(m, "ln", platform=platform)
        a_q = Signal(data.ArrayLayout(signed(c.in_bits), lanes))
        sq_op = []
        a_valid, a_last, a_addr = Signal(), Signal(), Signal(range(depth))
        for lane in range(lanes):
            live = ~in_last_beat | (lane < tail)
            code = Mux(live, self.i_stream.payload.data[lane], 0)
            m.d.sync += a_q[lane].eq(code)
            sq_op.append(products.copy(code, name=f"sq_op{lane}"))
        m.d.sync += [a_valid.eq(accept), a_last.eq(accept & in_last_beat), a_addr.eq(wr_ptr)]
        m.d.comb += [rows.w_en.eq(a_valid), rows.w_addr.eq(a_addr), rows.w_data.eq(a_q)]

        # squares: operand registers (a_q) and products; the codes wait alongside
        sq = [Signal(2 * c.in_bits, name=f"sq{lane}") for lane in range(lanes)]
        q1 = [Signal(signed(c.in_bits), name=f"q1_{lane}") for lane in range(lanes)]
        for lane in range(lanes):
            m.d.sync += [sq[lane].eq(sq_op[lane] * sq_op[lane]), q1[lane].eq(a_q[lane])]
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
        n_out = out_stages(c)
        lat_q, lat_g, lat_r = _lane_product_latencies(c)
        out_j = Signal(range(nb_max))
        out_tok = Signal(FIELD_BITS)
        rd_ptr = Signal(range(depth))
        # output room, counted down on issue and up when a beat leaves the output FIFO: the same as
        # "FIFO level + beats in flight < depth", without the adder and the compare in the issue path
        credits = Signal(range(self.out_fifo_depth + 1), init=self.out_fifo_depth)
        # the token whose beats are issued (tok) and the next one (nxt) in registers: the token FIFO is read
        # whenever nxt is free (a condition of two registers), never by the issue logic
        tok, tok_valid = Signal(tok_l), Signal()
        nxt, nxt_valid = Signal(tok_l), Signal()
        has_credit = Signal(init=1)     # credits != 0, kept with them: no compare before the issue's fan-out
        issue = tok_valid & has_credit
        out_last_beat = out_last
        retire = issue & out_last_beat
        tok_free = ~tok_valid | retire
        pop = tfifo.r_rdy & ~nxt_valid
        m.d.comb += [rows.r_addr.eq(rd_ptr), tfifo.r_en.eq(pop)]
        with m.If(pop):
            with m.If(tok_free):
                m.d.sync += [tok.eq(tfifo.r_data), tok_valid.eq(1)]
            with m.Else():
                m.d.sync += [nxt.eq(tfifo.r_data), nxt_valid.eq(1)]
        with m.Elif(nxt_valid & tok_free):
            m.d.sync += [tok.eq(nxt), tok_valid.eq(1), nxt_valid.eq(0)]
        with m.Elif(retire):
            m.d.sync += tok_valid.eq(0)
        o_read = self.o_stream.valid & self.o_stream.ready
        with m.If(issue):
            m.d.sync += [rd_ptr.eq(rd_ptr + 1), out_j.eq(Mux(out_last_beat, 0, out_j + 1)),
                         out_last.eq(Mux(out_last_beat, nb_m1 == 0, out_j + 1 == nb_m1))]
            with m.If(out_last_beat):
                m.d.sync += out_tok.eq(Mux(out_tok == n_m1, 0, out_tok + 1))
        with m.If(issue & ~o_read):
            m.d.sync += [credits.eq(credits - 1), has_credit.eq(credits != 1)]
        with m.Elif(~issue & o_read):
            m.d.sync += [credits.eq(credits + 1), has_credit.eq(1)]
        with m.If(accept & ~issue):
            m.d.sync += occupancy.eq(occupancy + 1)
            m.d.comb += full_next.eq(occupancy == depth - 1)
        with m.Elif(~accept & issue):
            m.d.sync += occupancy.eq(occupancy - 1)
            m.d.comb += full_next.eq(0)

        ctrl_l = data.StructLayout({"valid": 1, "j": range(nb_max), "tlast": 1, "last": 1})
        ctrl = [Signal(ctrl_l, name=f"ctrl{s}") for s in range(n_out + 1)]
        m.d.comb += [ctrl[0].valid.eq(issue), ctrl[0].j.eq(out_j), ctrl[0].tlast.eq(out_last_beat),
                     ctrl[0].last.eq(out_last_beat & (out_tok == n_m1))]
        for s in range(n_out):
            m.d.sync += ctrl[s + 1].eq(ctrl[s])
        s_p = 2 + lat_q          # q C f
        s_n = s_p + 3            # n, after the difference and the two shift stages
        s_g = s_n + lat_g        # n gamma
        s_a = s_g + 1            # the affine sum
        s_r = s_a + lat_r        # acc multiplier
        assert s_r + 4 == n_out
        toks = [tok]
        for s in range(1, s_p + 1):  # the token's constants travel with its beats; each lane copies them
            t = Signal(tok_l, name=f"tok{s}")
            m.d.sync += t.eq(toks[-1])
            toks.append(t)

        pre = c.left_pre_shift
        prod_shape = signed(c.in_bits + stats.o_cf.shape().width + 1)
        d_shape = signed(max(prod_shape.width + pre, stats.o_h.shape().width) + 1)
        n_shape = c.n_shape
        acc_fmt = FixedFormat(bits=c.acc_bits)
        rq_shape = signed(c.acc_bits + c.mult_bits + 2)
        outs, acc_ovf, out_ovf = [], [], []
        kram_gamma = Signal.like(kr.data.gamma, name="gamma")
        kram_beta = Signal.like(kr.data.beta, name="beta")
        # read at s_n - 2, data at s_n - 1, registered at s_n (next to n; the product copies it per lane)
        m.d.comb += kr.addr.eq(ctrl[s_n - 2].j)
        m.d.sync += [kram_gamma.eq(kr.data.gamma), kram_beta.eq(kr.data.beta)]
        mult_u = mult.as_unsigned()
        for lane in range(lanes):
            def reg(shape, value, stage, _lane=lane):
                r = Signal(shape, name=f"p{stage}_{_lane}")
                m.d.sync += r.eq(value)
                return r

            def delayed(value, n, stage, _lane=lane):
                for i in range(n):
                    value = reg(Value.cast(value).shape(), value, f"{stage}_{i}")
                return value

            q2 = reg(signed(c.in_bits), rows.r_data[lane], 2)                                # RAM output register
            p = products.multiply(q2, toks[2].cf, name=f"qcf{lane}")[:prod_shape.width].as_signed()  # q C f
            h = products.copy(toks[s_p - 1].h, name=f"h{lane}")                               # the lane's copy
            d = reg(d_shape, (p << pre) - h, s_p + 1)                                         # (C q - S1) f 2**L + half
            sh = products.copy(toks[s_p].shift, name=f"shift{lane}")
            e = reg(d_shape, d >> Cat(Const(0, 3), sh[3:]), s_p + 2)                          # >> s, high bits
            sh2 = reg(sh.shape(), sh, "sh")
            n = reg(n_shape, (e >> sh2[:3])[: n_shape.width], s_n)                            # >> s, low bits
            g = products.multiply(n, kram_gamma[lane], name=f"ng{lane}")                     # n gamma
            b = delayed(kram_beta[lane], lat_g, "beta")
            acc_value, acc_over = hwfixed.fit(g + b, acc_fmt)
            acc = reg(signed(c.acc_bits), acc_value, s_a)
            ovf_a = reg(1, acc_over, s_a)
            # the job's requantization constants reach the lanes through chains of copies (steady: each copy
            # has its own input, so Yosys cannot merge one register into a fan-out to every lane's DSP)
            r = products.multiply(acc, mult_u, name=f"rq{lane}", steady_b=True)[:rq_shape.width].as_signed()
            half = products.copy(rq_half, name=f"half{lane}", steady=True)
            rq_sh = products.copy(rq_shift, name=f"rqshift{lane}", steady=True)
            r1 = reg(signed(rq_shape.width + 1), r + half, s_r + 1)
            r2 = reg(signed(rq_shape.width + 1), r1 >> Cat(Const(0, 3), rq_sh[3:]), s_r + 2)
            rq_sh2 = reg(rq_sh.shape(), rq_sh, "rqsh")
            r3 = reg(signed(rq_shape.width + 1), r2 >> rq_sh2[:3], s_r + 3)
            out_value, out_over = hwfixed.fit(r3, c.out)
            live_o = ~ctrl[n_out - 1].tlast | (lane < tail)
            o = reg(c.out.shape, Mux(live_o, out_value, 0), n_out)
            ovf_o = reg(1, live_o & out_over, n_out)
            live_a = ~ctrl[s_a].tlast | (lane < tail)
            ovf_a2 = reg(1, live_a & ovf_a, s_a + 1)
            outs.append(o)
            acc_ovf.append(ovf_a2)
            out_ovf.append(ovf_o)

        # the constants are set at the job's check, and its first token needs them no sooner than its
        # statistics are out (stats_latency cycles after its last beat, which follows the check): by then the
        # chains have settled
        assert products.steady_depth + 1 <= c.stats_latency, (products.steady_depth, c.stats_latency)
        o_word = Signal(out_l)
        m.d.comb += [o_word.token_last.eq(ctrl[n_out].tlast), o_word.last.eq(ctrl[n_out].last),
                     ofifo.w_data.eq(o_word), ofifo.w_en.eq(ctrl[n_out].valid)]
        for lane in range(lanes):
            m.d.comb += o_word.data[lane].eq(outs[lane])
        m.d.comb += [self.o_stream.payload.eq(ofifo.r_data), self.o_stream.valid.eq(ofifo.r_rdy),
                     ofifo.r_en.eq(self.o_stream.ready)]
        with m.If(accept & ~ofifo.w_en):
            m.d.sync += pending.eq(pending + 1)
        with m.Elif(~accept & ofifo.w_en):
            m.d.sync += pending.eq(pending - 1)

        # -- saturation counts: the lanes' flags summed in a register, then a saturating add --------------------
        acc_count = self.status.acc_overflows
        out_count = self.status.out_overflows
        for what, flags, counter, valid_stage in (("acc", acc_ovf, acc_count, s_a + 1),
                                                  ("out", out_ovf, out_count, n_out)):
            add = Signal(range(lanes + 1), name=f"{what}_overflows_add")
            m.d.sync += add.eq(Mux(ctrl[valid_stage].valid, sum(flags[1:], flags[0]), 0))
            cb = c.counter_bits
            total = Signal(max(cb, len(add)) + 1, name=f"{what}_overflows_sum")
            m.d.comb += total.eq(counter + add)
            # saturated when a bit above the counter's is set (its carry out): no compare after the adder
            m.d.sync += counter.eq(Mux(total[cb:].any(), (1 << cb) - 1, total[:cb]))

        m.d.comb += [self.status.busy.eq((state != _HEADER) | ofifo.r_rdy), self.status.error.eq(error),
                     self.status.rejected.eq(rejected)]
        return m
