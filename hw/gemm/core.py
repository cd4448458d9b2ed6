"""The GEMM engine: an output-stationary ``rows x cols`` array of int8 MACs computing ``IntLinear``.

Dataflow (stream formats in :mod:`tokensift.hw.gemm.layout`):

- **Buffers.** Activations sit in a token buffer of ``rows`` banks (token ``t`` in bank ``t % rows``),
  two halves so the next job's activations load while the current job computes. Weights sit in a weight
  buffer of ``cols`` banks (channel ``c`` of the tile in bank ``c``), two halves: the loader fills one
  column tile (``k`` rows of ``cols`` weights, then the ``cols`` channel records) while the array computes
  on the other, and runs ahead into the next job. Every block-RAM read has its output registered.
- **Array.** A tile is ``rows`` tokens x ``cols`` channels; the reduction runs one ``k`` per cycle. Token
  ``r``'s value enters row ``r`` at column 0 and moves one column per cycle (a systolic row: every
  register drives one multiplier and the next register); weight bank ``c`` reads its address ``c`` cycles
  later, so PE ``(r, c)`` sees matching operands, and the control flags travel along the columns with
  them (one flag register per PE). Each PE registers its operands and its product (one DSP slice) and
  accumulates exactly
  (``pe_acc_bits``). One cycle after its last product the sum moves to the PE's shadow register, so the
  next tile accumulates at once.
- **Drain and epilogue.** A one-hot select per row (a shift register started by the drain) walks the
  columns one per cycle behind the load
  wavefront; a registered OR tree brings the ``rows`` shadows of one channel to the epilogue: bias, int32
  saturation (counted in ``acc_overflows``), ``x * multiplier`` (registered operands and product),
  the rounding shift in two registered steps, saturation into ``out`` (counted in ``out_overflows``).
  The drain of one tile runs while the next tile computes; it starts only when the output FIFO has room
  for a whole tile, so the drain never stalls. The last ``k`` of a tile waits until the previous tile's
  drain has started (the shadows are then free).

Cycle-exact behaviour is modelled by :mod:`tokensift.hw.gemm.cycles`.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from tokensift.hw.common import fixed as hwfixed
from tokensift.hw.common.mac_array import mul_const
from tokensift.hw.gemm.config import OPERAND_BITS, SHIFT_BITS, GemmConfig
from tokensift.hw.gemm.layout import act_layout, job_layout, out_layout, status_layout, weight_shape
from tokensift.quant.fixed import FixedFormat, Rounding

__all__ = ["GemmEngine", "ISSUE_TO_DRAIN", "drain_levels", "epilogue_latency"]

#: cycles from a tile's last issued ``k`` (the issue register) until the drain may sample column 0
ISSUE_TO_DRAIN = 6
#: the drain's epilogue after the OR tree: bias/int32 fit, product, two shift steps, rounding/fit
_EPILOGUE_STAGES = 5


def drain_levels(cols: int) -> int:
    """Register levels of the drain's OR tree over ``cols`` columns (groups of four)."""
    levels, width = 1, -(-cols // 4)
    while width > 1:
        levels, width = levels + 1, -(-width // 4)
    return levels


def epilogue_latency(cols: int) -> int:
    """Cycles from the drain sampling a column to its beat entering the output FIFO."""
    return drain_levels(cols) + _EPILOGUE_STAGES


class GemmEngine(wiring.Component):
    """``o_stream`` = ``IntLinear`` of the committed jobs, bit for bit.

    Parameters (keyword-only)
    -------------------------
    config : GemmConfig
        The engine's shape and limits.

    Ports: ``job``, ``act``, ``weights`` (in), ``o_stream`` (out) streams; ``status`` (``busy``,
    ``error``, ``rejected``), ``acc_overflows`` and ``out_overflows`` (saturating counters of values that
    did not fit int32 after the bias, and the output format).
    """

    def __init__(self, *, config: GemmConfig):
        if not isinstance(config, GemmConfig):
            raise TypeError(f"config must be a GemmConfig, not {type(config).__name__}")
        self._cfg = config
        super().__init__({
            "job": In(stream.Signature(job_layout(config))),
            "act": In(stream.Signature(act_layout(config))),
            "weights": In(stream.Signature(weight_shape(config))),
            "o_stream": Out(stream.Signature(out_layout(config))),
            "status": Out(status_layout(config)),
            "acc_overflows": Out(config.counter_bits),
            "out_overflows": Out(config.counter_bits),
        })

    @property
    def config(self) -> GemmConfig:
        return self._cfg

    @property
    def fifo_depth(self) -> int:
        """Output FIFO beats: two tiles, so a drain can start while the previous one is still queued."""
        return 2 * self._cfg.cols

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        R, C = cfg.rows, cfg.cols
        log_r = ceil_log2(R)
        half_tok = cfg.token_tiles_max * cfg.max_in

        # ---- job intake: one register stage, range check, commit into the fill half ---------------
        slot_valid = Signal(2)
        slot_n = Array(Signal(16, name=f"slot{h}_n") for h in range(2))
        slot_km1 = Array(Signal(16, name=f"slot{h}_km1") for h in range(2))
        slot_m = Array(Signal(16, name=f"slot{h}_m") for h in range(2))
        slot_tiles_m1 = Array(Signal(16, name=f"slot{h}_tiles_m1") for h in range(2))
        fill = Signal()
        jv = Signal()
        jn, jk, jm = Signal(16), Signal(16), Signal(16)
        m.d.comb += self.job.ready.eq(~jv)
        with m.If(self.job.valid & ~jv):
            m.d.sync += [jv.eq(1), jn.eq(self.job.payload.n), jk.eq(self.job.payload.k),
                         jm.eq(self.job.payload.m)]
        job_ok = ((jn != 0) & (jn <= cfg.max_tokens) & (jk != 0) & (jk <= cfg.max_in)
                  & (jm != 0) & (jm <= cfg.max_out))
        rejected_full = Signal()
        with m.If(jv & ~job_ok):
            m.d.sync += [jv.eq(0), self.status.error.eq(1)]
            with m.If(~rejected_full):
                m.d.sync += [self.status.rejected.eq(self.status.rejected + 1),
                             rejected_full.eq(self.status.rejected == (1 << cfg.counter_bits) - 2)]
        with m.Elif(jv & ~slot_valid.bit_select(fill, 1)):
            m.d.sync += [jv.eq(0), fill.eq(~fill), slot_valid.bit_select(fill, 1).eq(1),
                         slot_n[fill].eq(jn), slot_km1[fill].eq(jk - 1), slot_m[fill].eq(jm),
                         slot_tiles_m1[fill].eq(((jn + (R - 1)) >> log_r) - 1)]

        # ---- token buffer: rows banks, the act stream writes the fill half (two register stages) ----
        act_ready = ~slot_valid.bit_select(fill, 1) & ~jv
        m.d.comb += self.act.ready.eq(act_ready)
        a1_en = Signal()
        a1 = Signal(act_layout(cfg))
        a1_half = Signal()
        m.d.sync += [a1_en.eq(self.act.valid & act_ready), a1.eq(self.act.payload), a1_half.eq(fill)]
        a2_en = Signal()
        a2_addr = Signal(range(cfg.token_depth))
        a2_data = Signal(data.ArrayLayout(signed(OPERAND_BITS), R))
        m.d.sync += [a2_en.eq(a1_en), a2_data.eq(a1.data),
                     a2_addr.eq(Mux(a1_half, half_tok, 0) + mul_const(a1.tile, cfg.max_in) + a1.k)]

        # ---- weight loader: rows then channel records of each column tile into the free half ------
        wfull = Signal(2)
        cbusy = Signal(2)
        wl = Signal()
        h_l = Signal()
        col0_l = Signal(16)
        trailer = Signal()
        k_l = Signal(16)
        j_l = Signal(range(cfg.row_beats))
        c_l = Signal(range(C))
        b_l = Signal(range(cfg.record_beats))
        width = 8 * cfg.weight_bytes
        rec_width = cfg.record_beats * width
        record = Signal(rec_width)
        w_can = slot_valid.bit_select(h_l, 1) & Mux(trailer, ~cbusy.bit_select(wl, 1), ~wfull.bit_select(wl, 1))
        m.d.comb += self.weights.ready.eq(w_can)
        w_beat = self.weights.valid & w_can
        # registered writes into the weight banks and the record memory
        ww_en = Signal()
        ww_sel = Signal(cfg.row_beats)
        ww_addr = Signal(range(cfg.weight_depth))
        ww_data = Signal(width)
        cw_en = Signal()
        cw_addr = Signal(range(2 * C))
        tile_loaded = Signal()
        tile_loaded_half = Signal()
        m.d.sync += [ww_en.eq(0), cw_en.eq(0), tile_loaded.eq(0)]
        with m.If(w_beat):
            with m.If(~trailer):
                m.d.sync += [ww_en.eq(1), ww_sel.eq(1 << j_l), ww_data.eq(self.weights.payload),
                             ww_addr.eq(Mux(wl, cfg.max_in, 0) + k_l)]
                with m.If(j_l == cfg.row_beats - 1):
                    m.d.sync += [j_l.eq(0), k_l.eq(k_l + 1)]
                    with m.If(k_l == slot_km1[h_l]):
                        m.d.sync += [k_l.eq(0), trailer.eq(1)]
                with m.Else():
                    m.d.sync += j_l.eq(j_l + 1)
            with m.Else():
                if cfg.record_beats > 1:
                    m.d.sync += record.eq(Cat(record[width:], self.weights.payload))
                else:
                    m.d.sync += record.eq(self.weights.payload)
                m.d.sync += b_l.eq(b_l + 1)
                with m.If(b_l == cfg.record_beats - 1):
                    m.d.sync += [b_l.eq(0), cw_en.eq(1), cw_addr.eq(Mux(wl, C, 0) + c_l), c_l.eq(c_l + 1)]
                    with m.If(c_l == C - 1):
                        m.d.sync += [c_l.eq(0), trailer.eq(0), wl.eq(~wl), tile_loaded.eq(1),
                                     tile_loaded_half.eq(wl), col0_l.eq(col0_l + C)]
                        with m.If(col0_l + C >= slot_m[h_l]):
                            m.d.sync += [col0_l.eq(0), h_l.eq(~h_l)]

        # ---- compute scheduler: one k per cycle --------------------------------------------------
        h_c = Signal()
        wc = Signal()
        col0_c = Signal(16)
        i_c = Signal(16)
        k_c = Signal(16)
        tok_base = Signal(range(cfg.token_depth + 1))
        shadow_free = Signal(init=1)
        is_last_k = k_c == slot_km1[h_c]
        go = slot_valid.bit_select(h_c, 1) & wfull.bit_select(wc, 1) & (~is_last_k | shadow_free)
        iss = Signal(data.StructLayout({"valid": 1, "first": 1, "last": 1}))
        iss_tok = Signal(range(cfg.token_depth))
        iss_w = Signal(range(cfg.weight_depth))
        m.d.sync += [iss.valid.eq(go), iss.first.eq(k_c == 0), iss.last.eq(is_last_k),
                     iss_tok.eq(tok_base + k_c), iss_w.eq(Mux(wc, cfg.max_in, 0) + k_c)]

        # the pending drain: what the epilogue needs of the tile whose last k was just issued
        info = data.StructLayout({"tile": 16, "n": 16, "m_left": 16, "col0": 16, "chalf": 1,
                                  "free_consts": 1, "job_last": 1})
        p_valid = Signal()
        p_info = Signal(info)
        p_wait = Signal(range(ISSUE_TO_DRAIN))
        cols_left = slot_m[h_c] - col0_c
        last_tile = i_c == slot_tiles_m1[h_c]
        last_col = col0_c + C >= slot_m[h_c]
        clear_wfull = Signal()
        with m.If(go):
            m.d.sync += k_c.eq(k_c + 1)
            with m.If(is_last_k):
                m.d.sync += [k_c.eq(0), i_c.eq(i_c + 1), tok_base.eq(tok_base + cfg.max_in), shadow_free.eq(0),
                             p_valid.eq(1), p_wait.eq(ISSUE_TO_DRAIN - 1),
                             p_info.tile.eq(i_c), p_info.n.eq(slot_n[h_c]), p_info.m_left.eq(cols_left),
                             p_info.col0.eq(col0_c), p_info.chalf.eq(wc), p_info.free_consts.eq(last_tile),
                             p_info.job_last.eq(last_tile & last_col)]
                with m.If(last_tile):
                    m.d.sync += [i_c.eq(0), tok_base.eq(Mux(h_c, half_tok, 0)), wc.eq(~wc), col0_c.eq(col0_c + C)]
                    m.d.comb += clear_wfull.eq(1)
                    with m.If(last_col):
                        m.d.sync += [col0_c.eq(0), h_c.eq(~h_c), tok_base.eq(Mux(h_c, 0, half_tok)),
                                     slot_valid.bit_select(h_c, 1).eq(0)]
        # both halves' flags in one place: the loader sets the half it finished, the array clears its own
        for h in range(2):
            with m.If(tile_loaded & (tile_loaded_half == h)):
                m.d.sync += wfull[h].eq(1)
            with m.Elif(clear_wfull & (wc == h)):
                m.d.sync += wfull[h].eq(0)

        # ---- memories ------------------------------------------------------------------------------
        tok_q = []
        for r in range(R):
            mem = memory.Memory(shape=signed(OPERAND_BITS), depth=cfg.token_depth, init=[])
            m.submodules[f"tok{r}"] = mem
            wp, rp = mem.write_port(), mem.read_port(transparent_for=())
            q = Signal(signed(OPERAND_BITS), name=f"tok_q{r}")
            m.d.comb += [wp.en.eq(a2_en), wp.addr.eq(a2_addr), wp.data.eq(a2_data[r]), rp.addr.eq(iss_tok)]
            m.d.sync += q.eq(rp.data)
            tok_q.append(q)
        w_addr = [iss_w]
        for c in range(1, C):
            wa = Signal.like(iss_w, name=f"w_addr{c}")
            m.d.sync += wa.eq(w_addr[-1])
            w_addr.append(wa)
        w_q = []
        for c in range(C):
            mem = memory.Memory(shape=signed(OPERAND_BITS), depth=cfg.weight_depth, init=[])
            m.submodules[f"w{c}"] = mem
            wp, rp = mem.write_port(), mem.read_port(transparent_for=())
            lane = c % cfg.weight_bytes
            q = Signal(signed(OPERAND_BITS), name=f"w_q{c}")
            m.d.comb += [wp.en.eq(ww_en & ww_sel[c // cfg.weight_bytes]), wp.addr.eq(ww_addr),
                         wp.data.eq(ww_data[8 * lane:8 * lane + 8]), rp.addr.eq(w_addr[c])]
            m.d.sync += q.eq(rp.data)
            w_q.append(q)
        const_mem = memory.Memory(shape=unsigned(cfg.record_bits), depth=2 * C, init=[])
        m.submodules.consts = const_mem
        cwp, crp = const_mem.write_port(), const_mem.read_port(transparent_for=())
        m.d.comb += [cwp.en.eq(cw_en), cwp.addr.eq(cw_addr), cwp.data.eq(record[:cfg.record_bits])]

        # ---- the array -------------------------------------------------------------------------------
        flags = data.StructLayout({"valid": 1, "first": 1, "last": 1})
        f_prev = iss
        for stage in range(3):  # issue -> RAM read -> RAM output register -> operand register
            f_next = Signal(flags, name=f"iss_d{stage + 1}")
            m.d.sync += f_next.eq(f_prev)
            f_prev = f_next
        pe_bits = cfg.pe_acc_bits
        shadows = [[None] * C for _ in range(R)]
        a_left = tok_q
        f_left = [f_prev] * R  # each row's flags travel with its activations: one flag register per PE
        for c in range(C):
            a_here, f_here = [], []
            for r in range(R):
                f_c = Signal(flags, name=f"flags{r}_{c}")
                done_c = Signal(name=f"done{r}_{c}")
                m.d.sync += [f_c.eq(f_left[r]), done_c.eq(f_c.valid & f_c.last)]
                f_here.append(f_c)
                a_reg = Signal(signed(OPERAND_BITS), name=f"a{r}_{c}")
                w_reg = Signal(signed(OPERAND_BITS), name=f"w{r}_{c}")
                prod = Signal(signed(2 * OPERAND_BITS), name=f"p{r}_{c}")
                acc = Signal(signed(pe_bits), name=f"acc{r}_{c}")
                shadow = Signal(signed(pe_bits), name=f"sh{r}_{c}")
                m.d.sync += [a_reg.eq(a_left[r]), w_reg.eq(w_q[c]), prod.eq(a_reg * w_reg)]
                with m.If(f_c.valid):
                    m.d.sync += acc.eq(prod + Mux(f_c.first, 0, acc))
                with m.If(done_c):
                    m.d.sync += shadow.eq(acc)
                shadows[r][c] = shadow
                a_here.append(a_reg)
            a_left, f_left = a_here, f_here

        # ---- drain: pending tile -> one-hot column walk -> OR tree --------------------------------
        out_cnt = Signal(range(self.fifo_depth + 1))
        d_active = Signal()
        d_c = Signal(range(C))
        d_info = Signal(info)
        with m.If(p_valid & (p_wait != 0)):
            m.d.sync += p_wait.eq(p_wait - 1)
        emit_now = Mux(p_info.m_left < C, p_info.m_left, C)
        start = p_valid & (p_wait == 0) & ~d_active & (out_cnt <= self.fifo_depth - C)
        popped = self.o_stream.valid & self.o_stream.ready
        m.d.sync += out_cnt.eq(out_cnt + Mux(start, emit_now, 0) - popped)
        with m.If(start):
            m.d.sync += [d_active.eq(1), d_c.eq(0), d_info.eq(p_info), p_valid.eq(0), shadow_free.eq(1)]
        with m.If(d_active):
            m.d.sync += d_c.eq(d_c + 1)
            with m.If(d_c == C - 1):
                m.d.sync += d_active.eq(0)
                with m.If(d_info.free_consts):
                    m.d.sync += cbusy.bit_select(d_info.chalf, 1).eq(0)
        for h in range(2):
            with m.If(tile_loaded & (tile_loaded_half == h)):
                m.d.sync += cbusy[h].eq(1)

        dctl = data.StructLayout({"valid": 1, "emit": 1, "last": 1, "c": range(C), "tile": 16,
                                  "lanes": R, "chalf": 1, "col0": 16})
        ctl0 = Signal(dctl)
        tok0 = Cat(Const(0, log_r), d_info.tile) if log_r else d_info.tile
        m.d.comb += [ctl0.valid.eq(d_active), ctl0.emit.eq(d_c < d_info.m_left), ctl0.c.eq(d_c),
                     ctl0.last.eq(d_info.job_last & (d_c == Mux(d_info.m_left < C, d_info.m_left, C) - 1)),
                     ctl0.tile.eq(d_info.tile), ctl0.chalf.eq(d_info.chalf), ctl0.col0.eq(d_info.col0),
                     ctl0.lanes.eq(Cat(tok0 + r < d_info.n for r in range(R)))]
        # per row a one-hot select register per column: it starts at column 0 with the drain
        level = []
        for r in range(R):
            sel = Signal(C, name=f"sel{r}")
            m.d.sync += sel.eq(Cat(start, sel[:-1]) if C > 1 else start)
            groups = []
            for g in range(0, C, 4):
                s = Signal(signed(pe_bits), name=f"or0_{r}_{g // 4}")
                terms = [shadows[r][c] & sel[c].replicate(pe_bits) for c in range(g, min(g + 4, C))]
                m.d.sync += s.eq(_or(terms))
                groups.append(s)
            level.append(groups)
        ctl = [ctl0]
        depth = 0
        while len(level[0]) > 1:
            depth += 1
            nxt = []
            for r in range(R):
                groups = []
                for g in range(0, len(level[r]), 4):
                    s = Signal(signed(pe_bits), name=f"or{depth}_{r}_{g // 4}")
                    m.d.sync += s.eq(_or(level[r][g:g + 4]))
                    groups.append(s)
                nxt.append(groups)
            level = nxt
        tree_out = [groups[0] for groups in level]
        levels = drain_levels(C)
        for _ in range(levels):
            nxt_ctl = Signal(dctl)
            m.d.sync += nxt_ctl.eq(ctl[-1])
            ctl.append(nxt_ctl)
        # the record is read one cycle before the tree output
        m.d.comb += crp.addr.eq(Mux(ctl[levels - 1].chalf, C, 0) + ctl[levels - 1].c)
        rec = crp.data
        bias = rec[:cfg.acc_bits].as_signed()
        mult = rec[cfg.acc_bits:cfg.acc_bits + cfg.multiplier_bits]
        shift = rec[cfg.acc_bits + cfg.multiplier_bits:]

        # ---- epilogue --------------------------------------------------------------------------------
        ctl_a = ctl[levels]
        acc_fmt = FixedFormat(bits=cfg.acc_bits)
        e1 = Signal(dctl)
        e1_mult = Signal(cfg.multiplier_bits)
        e1_shift = Signal(SHIFT_BITS)
        m.d.sync += [e1.eq(ctl_a), e1_mult.eq(mult), e1_shift.eq(shift)]
        acc_ovf = Signal(R)
        x = []
        for r in range(R):
            xr = Signal(signed(cfg.acc_bits), name=f"x{r}")
            fitted, ovf = hwfixed.fit(tree_out[r] + bias, acc_fmt)
            m.d.sync += [xr.eq(fitted), acc_ovf[r].eq(ovf & ctl_a.valid & ctl_a.emit & ctl_a.lanes[r])]
            x.append(xr)
        e2 = Signal(dctl)
        e2_shift = Signal(SHIFT_BITS)
        m.d.sync += [e2.eq(e1), e2_shift.eq(e1_shift)]
        prods = []
        for r in range(R):
            p = Signal(signed(cfg.acc_bits + cfg.multiplier_bits + 1), name=f"rq_prod{r}")
            m.d.sync += p.eq(x[r] * e1_mult)
            prods.append(p)
        e3 = Signal(dctl)
        e3_shift = Signal(3)
        m.d.sync += [e3.eq(e2), e3_shift.eq(e2_shift[:3])]
        coarse = []
        for r in range(R):
            # ((2 p) >> s + 1) >> 1 is p * 2**-s rounded half up (s = 0 included); the shift in two steps
            t = Signal(signed(len(prods[r]) + 1), name=f"rq_coarse{r}")
            m.d.sync += t.eq((prods[r] << 1) >> Cat(Const(0, 3), e2_shift[3:]))
            coarse.append(t)
        e4 = Signal(dctl)
        m.d.sync += e4.eq(e3)
        fine = []
        for r in range(R):
            t = Signal.like(coarse[r], name=f"rq_fine{r}")
            m.d.sync += t.eq(coarse[r] >> e3_shift)
            fine.append(t)
        e5 = Signal(dctl)
        m.d.sync += e5.eq(e4)
        out_ovf = Signal(R)
        y = Signal(data.ArrayLayout(cfg.out.shape, R))
        for r in range(R):
            rounded = (fine[r] + 1) >> 1 if cfg.out.rounding is Rounding.HALF_UP else fine[r] >> 1
            value, ovf = hwfixed.fit(rounded, cfg.out)
            m.d.sync += [y[r].eq(Mux(e4.lanes[r], value, 0)), out_ovf[r].eq(ovf & e4.valid & e4.emit & e4.lanes[r])]

        # ---- output FIFO ---------------------------------------------------------------------------
        m.submodules.out_fifo = ofifo = fifo.SyncFIFOBuffered(width=out_layout(cfg).size, depth=self.fifo_depth)
        beat = Signal(out_layout(cfg))
        m.d.comb += [beat.data.eq(y), beat.tile.eq(e5.tile), beat.channel.eq(e5.col0 + e5.c), beat.last.eq(e5.last),
                     ofifo.w_en.eq(e5.valid & e5.emit), ofifo.w_data.eq(beat),
                     self.o_stream.payload.eq(ofifo.r_data), self.o_stream.valid.eq(ofifo.r_rdy),
                     ofifo.r_en.eq(self.o_stream.ready)]

        _count(m, self.acc_overflows, acc_ovf, cfg.counter_bits)
        _count(m, self.out_overflows, out_ovf, cfg.counter_bits)
        m.d.comb += self.status.busy.eq(jv | slot_valid.any() | p_valid | d_active | (out_cnt != 0)
                                        | e5.valid | e1.valid)
        return m


def _or(terms):
    out = terms[0]
    for t in terms[1:]:
        out = out | t
    return out


def _count(m: Module, counter: Signal, flags: Signal, bits: int) -> None:
    """Add the number of raised ``flags`` (already registered) to a counter that stops at its maximum;
    the count is registered before the adder, so no flag logic reaches the counter's carry chain."""
    n = Signal(range(len(flags) + 1), name=f"{counter.name}_n")
    m.d.sync += n.eq(sum(flags[i] for i in range(len(flags))))
    top = (1 << bits) - 1
    total = Signal(bits + 1, name=f"{counter.name}_sum")
    m.d.comb += total.eq(counter + n)
    m.d.sync += counter.eq(Mux(total > top, top, total))
