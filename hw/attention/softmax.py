"""The integer softmax of :mod:`tokensift.quant.softmax` in gates, row by row.

- :class:`Exp2Unit`: pipeline ``diff = s - max -> t = round_shift(diff * M, sh) -> e = round_shift(
  table[t mod 2**F], min(-(t >> F), E + 2))``; the table is a block-RAM ROM (``exp2_lut``) or the
  integer quadratic on two multipliers (``exp2_poly``). One value per cycle.
- :class:`Reciprocal`: ``r = round_shift(floor(2**(K+1) / S), 1)`` by a restoring divider, one quotient
  bit per cycle (``prob_frac + 3`` cycles), plus the rounding.
- :class:`ProbNormalizer`: ``p = fit(round_shift(e * r, E + 1))``, three stages, one value per cycle.
- :class:`SoftmaxUnit`: owns the two-bank score and exponential buffers (block RAM); after
  ``start`` it reads one row of scores, writes the exponentials, sums them and runs the divider;
  ``done`` pulses with the row's reciprocal. The engine applies :class:`ProbNormalizer` on the fly when
  it reads the exponentials for ``P V``, so no pass over the row is spent on normalisation.

Every stage is built to close timing by construction: each multiplier has its operands and its product
in registers (so nothing but the multiplier sits between two registers), every block-RAM read (scores,
the ``exp2`` table) lands in a register before any logic uses it, and the readers of the exponential
buffer (:class:`ProbNormalizer`) register its data first.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from tokensift.checks import check_int
from tokensift.hw.attention.scaling import PRODUCT_STAGES, SHIFT_STAGES, round_shift_stages, scaled_product
from tokensift.hw.common import fixed as hwfixed
from tokensift.quant.softmax import SoftmaxParams, SoftmaxVariant, exp2_table

__all__ = ["Exp2Unit", "Reciprocal", "ProbNormalizer", "SoftmaxUnit"]


def _softmax_params(params) -> SoftmaxParams:
    if not isinstance(params, SoftmaxParams):
        raise TypeError(f"params must be a SoftmaxParams, not {type(params).__name__}")
    return params


class Exp2Unit(wiring.Component):
    """``e = exp2_neg(log2_argument(diff, multiplier, shift))``, :attr:`latency` cycles, one per cycle.

    ``diff`` must be ``<= 0`` (a score minus its row maximum); it is registered on entry, so the caller may
    compute it with logic. ``multiplier`` (``1 .. 2**mult_bits - 1``) and ``shift`` (``0 .. shift_max``) are
    the run-time scale: registers of the caller that hold while values are in the pipeline. ``tag`` travels
    with each value.
    """

    def __init__(self, *, params: SoftmaxParams, diff_bits: int, mult_bits: int = 17, shift_max: int = 48,
                 tag_bits: int = 1):
        self._p = _softmax_params(params)
        check_int("mult_bits", mult_bits, low=1, high=17, numpy=False)
        check_int("shift_max", shift_max, low=0, high=48, numpy=False)
        super().__init__({
            "i_valid": In(1),
            "i_diff": In(signed(diff_bits)),
            "i_tag": In(tag_bits),
            "multiplier": In(unsigned(mult_bits)),
            "shift": In(range(shift_max + 1)),
            "o_valid": Out(1),
            "o_e": Out(unsigned(self._p.exp_frac + 1)),
            "o_tag": Out(tag_bits),
        })

    @property
    def latency(self) -> int:
        """operand, product (partial products, their sum), the rounding shift (coarse, fine, rounding), split,
        table (ROM read and its register, or four polynomial stages), shift."""
        return (1 + PRODUCT_STAGES + SHIFT_STAGES + 1 + (1 if self._p.variant is SoftmaxVariant.EXP2_LUT else 4)
                + 1)

    def elaborate(self, platform):
        m = Module()
        p = self._p
        f, e_frac = p.log2_frac, p.exp_frac

        def delay(sig_valid, sig_tag, name):
            v, t = Signal(name=f"{name}_valid"), Signal(len(self.i_tag), name=f"{name}_tag")
            m.d.sync += [v.eq(sig_valid), t.eq(sig_tag)]
            return v, t

        # the multiplier's operand register, then diff * M (registered partial products and sum)
        diff = Signal.like(self.i_diff, name="diff")
        m.d.sync += diff.eq(self.i_diff)
        v_, t_ = delay(self.i_valid, self.i_tag, "s0")
        prod = scaled_product(m, diff, self.multiplier, name="scale")
        for s in range(PRODUCT_STAGES):
            v_, t_ = delay(v_, t_, f"p{s}")
        # t = round_shift(prod, sh) <= 0, in three stages
        t = round_shift_stages(m, prod, self.shift, name="t")
        for s in range(SHIFT_STAGES):
            v_, t_ = delay(v_, t_, f"r{s}")
        v2, t2 = v_, t_
        # split: fraction fr = t mod 2**F, right shift min(-(t >> F), E + 2); one compare with a constant
        # on the wide integer part and a negation of only the bits a shift of at most E + 2 needs
        fr = t.as_unsigned()[:f]
        int_part = t >> f
        shift_bits = ceil_log2(p.max_shift + 1)
        saturate = int_part < -p.max_shift
        shift_now = Mux(saturate, p.max_shift, (-int_part[: shift_bits + 1].as_signed())[:shift_bits])
        sa = Signal(range(p.max_shift + 1))
        m.d.sync += sa.eq(shift_now)
        v3, t3 = delay(v2, t2, "s3")
        table_bits = e_frac + 2
        if p.variant is SoftmaxVariant.EXP2_LUT:
            m.submodules.rom = rom = memory.Memory(shape=unsigned(table_bits), depth=1 << f,
                                                   init=[int(x) for x in exp2_table(p)])
            rd = rom.read_port()
            m.d.comb += rd.addr.eq(fr)
            # 4: the ROM's output register
            val, sa4 = Signal(unsigned(table_bits)), Signal.like(sa)
            m.d.sync += [val.eq(rd.data), sa4.eq(sa)]
            v4, t4 = delay(v3, t3, "s4")
            value, shift_amt, v_last, t_last = val, sa4, v4, t4
        else:
            a, b = p.poly_coefficients
            fr3 = Signal(f)
            m.d.sync += fr3.eq(fr)
            # 4: B * fr
            bf = Signal(unsigned(b.bit_length() + f))
            fr4, sa4 = Signal(f), Signal.like(sa)
            m.d.sync += [bf.eq(fr3 * b), fr4.eq(fr3), sa4.eq(sa)]
            v4, t4 = delay(v3, t3, "s4")
            # 5: A + round_shift(B fr, F), the second multiplier's operand
            coef_next = a + hwfixed.round_shift(bf, f)
            coef, fr5, sa5 = Signal(unsigned(len(coef_next))), Signal(f), Signal.like(sa)
            m.d.sync += [coef.eq(coef_next), fr5.eq(fr4), sa5.eq(sa4)]
            v5, t5 = delay(v4, t4, "s5")
            # 6: fr * (A + round_shift(B fr, F))
            x = Signal(unsigned(f + e_frac + 2))
            sa6 = Signal.like(sa)
            m.d.sync += [x.eq(fr5 * coef), sa6.eq(sa5)]
            v6, t6 = delay(v5, t5, "s6")
            # 7: 2**E + round_shift(x, F)
            val = Signal(unsigned(table_bits))
            sa7 = Signal.like(sa)
            m.d.sync += [val.eq((1 << e_frac) + hwfixed.round_shift(x, f)), sa7.eq(sa6)]
            v7, t7 = delay(v6, t6, "s7")
            value, shift_amt, v_last, t_last = val, sa7, v7, t7

        # last: e = round_shift(value, shift_amt), half up, for each possible shift
        e_next = Signal(unsigned(e_frac + 1))
        with m.Switch(shift_amt):
            for s in range(p.max_shift + 1):
                with m.Case(s):
                    m.d.comb += e_next.eq(hwfixed.round_shift(value, s))
        m.d.sync += [self.o_e.eq(e_next), self.o_valid.eq(v_last), self.o_tag.eq(t_last)]
        return m


class Reciprocal(wiring.Component):
    """``recip = round_shift(floor(2**(K+1) / total), 1)`` for ``total >= 2**E``.

    ``start`` (one cycle, with ``total``) begins; ``done`` pulses :attr:`latency` cycles later with
    ``recip``, which then holds until the next ``start``.
    """

    def __init__(self, *, params: SoftmaxParams, total_bits: int):
        self._p = _softmax_params(params)
        self._steps = self._p.prob_frac + 3
        super().__init__({
            "start": In(1),
            "total": In(unsigned(total_bits)),
            "busy": Out(1),
            "done": Out(1),
            "recip": Out(unsigned(self._p.prob_frac + 2)),
        })

    @property
    def latency(self) -> int:
        """Cycles from ``start`` to ``done``: loading, one per quotient bit, the rounding."""
        return self._steps + 2

    def elaborate(self, platform):
        m = Module()
        width = len(self.total) + 1
        divisor = Signal(len(self.total))
        rem = Signal(width)
        quo = Signal(self._steps)
        count = Signal(range(self._steps + 1))
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            # the top bits of 2**(K+1) leave 2**(E-1) < S: the quotient's leading bits are all zero
            m.d.sync += [divisor.eq(self.total), rem.eq(1 << (self._p.exp_frac - 1)), quo.eq(0),
                         count.eq(self._steps), self.busy.eq(1)]
        with m.Elif(count != 0):
            twice = Signal(width + 1)
            m.d.comb += twice.eq(rem << 1)
            take = twice >= divisor
            m.d.sync += [rem.eq(Mux(take, twice - divisor, twice)), quo.eq((quo << 1) | take),
                         count.eq(count - 1)]
        with m.Elif(self.busy):
            m.d.sync += [self.recip.eq(hwfixed.round_shift(quo, 1)), self.done.eq(1), self.busy.eq(0)]
        return m


class ProbNormalizer(wiring.Component):
    """``p = fit(round_shift(e * recip, E + 1))`` into the unsigned probability format; 3 cycles: the
    operands (``e`` straight from a block-RAM read port), the product, the rounding."""

    latency = 3

    def __init__(self, *, params: SoftmaxParams):
        self._p = _softmax_params(params)
        super().__init__({
            "e": In(unsigned(self._p.exp_frac + 1)),
            "recip": In(unsigned(self._p.prob_frac + 2)),
            "p": Out(unsigned(self._p.prob_frac + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        e, recip = Signal.like(self.e, name="e_op"), Signal.like(self.recip, name="recip_op")
        prod = Signal(unsigned(len(self.e) + len(self.recip)))
        m.d.sync += [e.eq(self.e), recip.eq(self.recip), prod.eq(e * recip)]
        value, _ = hwfixed.fit(hwfixed.round_shift(prod, self._p.exp_frac + 1), self._p.prob_format)
        m.d.sync += self.p.eq(value)
        return m


class SoftmaxUnit(wiring.Component):
    """One row at a time: read scores, exponentials into a buffer, their sum, the divider.

    Ports
    -----
    score_w_en, score_w_bank, score_w_addr, score_w_data : in
        Write port of the two-bank score buffer (the MAC array's dot products).
    start, start_bank, start_max, start_n : in
        Begin the row in ``start_bank`` with ``start_n`` tokens (``ready`` must be high). ``start_max``,
        the row's maximum, is sampled the cycle after ``start``: the engine's running max is registered
        once more after the last score, and the unit's first use of it is three cycles after ``start``.
    scale_multiplier, scale_shift : in
        The frame's run-time scale into the log2 domain: registers that hold while a row is processed.
    ready : out
        The unit is idle.
    done, done_bank, recip : out
        ``done`` pulses once the exponentials of the row are in ``done_bank`` of the exponential
        buffer and ``recip`` is its reciprocal (held until the next row).
    e_r_bank, e_r_addr : in; e_r_data : out
        Read port of the exponential buffer, data one cycle after the address, straight from the block
        RAM: the reader registers it before any logic (:class:`ProbNormalizer` does).
    """

    def __init__(self, *, params: SoftmaxParams, n_max: int, score_bits: int, mult_bits: int = 17,
                 shift_max: int = 48):
        self._p = _softmax_params(params)
        self._n_max, self._score_bits = n_max, score_bits
        self._total_bits = self._p.exp_frac + 1 + ceil_log2(n_max + 1)
        self._exp = Exp2Unit(params=self._p, diff_bits=score_bits + 1, mult_bits=mult_bits, shift_max=shift_max,
                             tag_bits=ceil_log2(n_max + 1) + 1)
        self._recip = Reciprocal(params=self._p, total_bits=self._total_bits)
        n_bits = range(n_max + 1)
        addr = range(n_max)
        super().__init__({
            "score_w_en": In(1),
            "score_w_bank": In(1),
            "score_w_addr": In(addr),
            "score_w_data": In(signed(score_bits)),
            "start": In(1),
            "start_bank": In(1),
            "start_max": In(signed(score_bits)),
            "start_n": In(n_bits),
            "scale_multiplier": In(unsigned(mult_bits)),
            "scale_shift": In(range(shift_max + 1)),
            "ready": Out(1),
            "done": Out(1),
            "done_bank": Out(1),
            "recip": Out(unsigned(self._p.prob_frac + 2)),
            "e_r_bank": In(1),
            "e_r_addr": In(addr),
            "e_r_data": Out(unsigned(self._p.exp_frac + 1)),
        })

    @property
    def exp_latency(self) -> int:
        return self._exp.latency

    def row_cycles(self, n_tokens: int) -> int:
        """Cycles from ``start`` to ``done`` for a row of ``n_tokens``: reads (and their register),
        exponent pipeline, sum, divider."""
        return n_tokens + 2 + self._exp.latency + self._recip.latency

    def elaborate(self, platform):
        m = Module()
        m.submodules.exp = exp = self._exp
        m.submodules.recip = recip = self._recip
        n_max = self._n_max
        m.d.comb += [exp.multiplier.eq(self.scale_multiplier), exp.shift.eq(self.scale_shift)]

        m.submodules.scores = scores = memory.Memory(shape=signed(self._score_bits), depth=2 * n_max, init=[])
        sw = scores.write_port()
        sr = scores.read_port()
        m.submodules.exps = exps = memory.Memory(shape=unsigned(self._p.exp_frac + 1), depth=2 * n_max, init=[])
        ew = exps.write_port()
        er = exps.read_port()
        m.d.comb += [sw.en.eq(self.score_w_en), sw.addr.eq(self.score_w_bank * n_max + self.score_w_addr),
                     sw.data.eq(self.score_w_data),
                     er.addr.eq(self.e_r_bank * n_max + self.e_r_addr), self.e_r_data.eq(er.data)]

        bank = Signal()
        row_max = Signal(signed(self._score_bits))
        n_last = Signal(range(n_max))  # the row's last index, so its end is an equality with a register
        j = Signal(range(n_max + 1))
        reading = Signal()
        summing = Signal()
        total = Signal(self._total_bits)

        m.d.comb += self.ready.eq(~reading & ~summing & ~recip.busy & ~recip.start)
        take_max = Signal()
        m.d.sync += take_max.eq(self.start)
        with m.If(take_max):
            m.d.sync += row_max.eq(self.start_max)
        with m.If(self.start):
            m.d.sync += [bank.eq(self.start_bank), n_last.eq(self.start_n - 1), j.eq(0),
                         reading.eq(1), summing.eq(1), total.eq(0)]
        # read one score per cycle into a register; the exponent pipeline gets ``s - max`` the cycle after
        m.d.comb += sr.addr.eq(bank * n_max + j)
        rd_valid, rd_last, rd_j = Signal(), Signal(), Signal(range(n_max + 1))
        m.d.sync += [rd_valid.eq(reading), rd_last.eq(reading & (j == n_last)), rd_j.eq(j)]
        score, sc_valid, sc_last, sc_j = Signal.like(sr.data, name="score"), Signal(), Signal(), Signal.like(rd_j)
        m.d.sync += [score.eq(sr.data), sc_valid.eq(rd_valid), sc_last.eq(rd_last), sc_j.eq(rd_j)]
        with m.If(reading):
            m.d.sync += j.eq(j + 1)
            with m.If(j == n_last):
                m.d.sync += reading.eq(0)
        m.d.comb += [exp.i_valid.eq(sc_valid), exp.i_diff.eq(score - row_max), exp.i_tag.eq(Mux(sc_last, 1, 0)
                     | (sc_j << 1))]
        # exponentials into the buffer and the sum; the last one starts the divider
        out_last = exp.o_tag[0]
        out_j = exp.o_tag[1:]
        m.d.comb += [ew.en.eq(exp.o_valid), ew.addr.eq(bank * n_max + out_j), ew.data.eq(exp.o_e)]
        with m.If(exp.o_valid):
            m.d.sync += total.eq(total + exp.o_e)
        m.d.comb += [recip.start.eq(exp.o_valid & out_last), recip.total.eq(total + exp.o_e)]
        with m.If(recip.start):
            m.d.sync += summing.eq(0)
        m.d.comb += [self.done.eq(recip.done), self.recip.eq(recip.recip), self.done_bank.eq(bank)]
        return m

