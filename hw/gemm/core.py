"""The GEMM engine: an output-stationary ``rows x cols`` array of int8 MACs computing ``IntLinear``.

Dataflow (stream formats in :mod:`tokensift.hw.gemm.layout`):

- **Buffers.** Activations sit in a token buffer of ``rows`` banks (token ``t`` in bank ``t % rows``),
  two halves so the next job's activations load while the current job computes. Weights sit in a weight
  buffer of ``cols`` banks (channel ``c`` of the tile in bank ``c``), two halves: the loader fills one
  column tile (``k`` rows of ``cols`` weights, then the ``cols`` channel records) while the array computes
  on the other, and runs ahead into the next job; it refills a half once the last bank has read it
  (bank ``c`` reads ``c`` cycles behind the issue, so a tile of ``k < cols`` holds its half ``cols - k``
  cycles past its last issue). A bank is built of pieces of at most ``PIECE_DEPTH``
  words (one block RAM each); every piece's read data is registered (zero unless it was addressed) and
  the OR over the pieces is registered again, so no block-RAM output drives a multiplexer or a long wire
  into its first register. The act stream's write address (tile x ``max_in`` + k) is summed over two
  register stages.
- **Array.** A tile is ``rows`` tokens x ``cols`` channels; the reduction runs one ``k`` per cycle. Token
  ``r``'s value enters row ``r`` at column 0 and moves one column per cycle (a systolic row: every
  register drives one multiplier and the next register); weight bank ``c`` reads its address ``c`` cycles
  later, so PE ``(r, c)`` sees matching operands, and the control flags travel along the columns with
  them (one flag register per PE). Each PE registers its operands and its product (one DSP slice; on ECP5
  the MULT18X18D's own input and output registers, with a fabric copy of the activation for the next column) and
  accumulates exactly (``pe_acc_bits``). One cycle after its last product the sum moves to the PE's
  shadow register, so the next tile accumulates at once. With ``pack_pairs`` (xc7, xcup) the PEs of
  columns ``2j`` and ``2j + 1`` share one DSP: bank ``2j + 1`` reads with bank ``2j``, the pair multiplies
  ``a * (w_2j + w_2j+1 2**16)`` with column ``2j``'s registers, column ``2j`` accumulates the low 16 bits and
  column ``2j + 1`` the rest (plus the low half's sign bit) one cycle later, in step with its flags.
- **Drain and epilogue.** A one-hot select per row (a shift register started by the drain) walks the
  columns one per cycle behind the load wavefront; a registered OR tree brings the ``rows`` shadows of
  one channel to the epilogue, one register stage per step: the bias add, int32 saturation (counted in
  ``acc_overflows``), ``x * multiplier`` as two partial products (registered operands, registered
  products, a registered sum), the rounding shift in two steps, the rounding add, saturation into the
  widest format ``out``, then into the job's own ``out_bits`` (both counted once in ``out_overflows``).
  The job's width travels with the drain's control as a mask of the bits that must copy the sign
  (decoded once per job, at its range check), so the second saturation compares at most ``out.bits``
  bits with the sign under a registered mask: no run-time arithmetic. The channel records are read two
  cycles ahead and registered. The drain of one tile runs while the next tile computes; it starts only
  when the output FIFO has room for a whole tile (the FIFO is deep enough that this never delays a drain
  while the output is ready). The last ``k`` of a tile waits until the previous tile's drain has started
  (the shadows are then free).
- **Control.** Range checks of a job (its sizes and its ``out_bits``) are registered before it commits;
  the last column tile of a job is a compare of the channels left (kept per job slot) with ``cols``, not
  a sum; what the drain needs of a pending tile (beats, last column, lanes holding tokens) is registered
  while it waits.

Cycle-exact behaviour is modelled by :mod:`tokensift.hw.gemm.cycles`.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from tokensift.hw.common import fixed as hwfixed
from tokensift.hw.common.ecp5 import dp16kd_8bit, is_ecp5, mult18x18d_registered
from tokensift.hw.common.mac_array import mul_const
from tokensift.hw.gemm.config import OPERAND_BITS, SHIFT_BITS, GemmConfig
from tokensift.hw.gemm.layout import (
    OUT_BITS_FIELD,
    act_layout,
    job_layout,
    out_layout,
    status_layout,
    weight_shape,
)
from tokensift.quant.fixed import FixedFormat, Rounding

__all__ = ["GemmEngine", "ISSUE_TO_DRAIN", "JOB_TO_COMMIT", "PIECE_DEPTH", "FIFO_LATENCY", "drain_levels",
           "epilogue_latency", "output_fifo_depth", "pieces", "LOW_BITS"]

#: cycles from a tile's last issued ``k`` (the issue register) until the drain may sample column 0
ISSUE_TO_DRAIN = 7
#: cycles from a job beat's handshake until its job is committed (job register, range check, commit)
JOB_TO_COMMIT = 3
#: words of one piece of a token or weight bank: one block RAM at 8-bit words (an ECP5 DP16KD or a Xilinx
#: RAMB18 as 2048 x 9), so no bank is ever a cascade of block RAMs behind a multiplexer
PIECE_DEPTH = 2048
#: the epilogue after the OR tree: bias add, int32 fit, partial products, product sum, two shift steps,
#: rounding add, fit into the widest output format, fit into the job's ``out_bits``
_EPILOGUE_STAGES = 9
#: cycles from a beat's write into the output FIFO to the cycle it can leave (``SyncFIFOBuffered``)
FIFO_LATENCY = 2
#: the records are read two cycles before the epilogue needs them: the address is presented one cycle earlier,
#: and the read data passes two registers (the first beside the block RAM, so its slow clock-to-out meets no
#: routing across the array)
_RECORD_LEAD = 2
#: the low part of the epilogue's ``int32 x multiplier`` split: an unsigned 17-bit value is a signed 18-bit
#: operand, so each partial product fits one 18 x 18 DSP (ECP5) or one DSP48 and its sum is registered
LOW_BITS = 17


def drain_levels(cols: int) -> int:
    """Register levels of the drain's OR tree over ``cols`` columns (groups of four)."""
    levels, width = 1, -(-cols // 4)
    while width > 1:
        levels, width = levels + 1, -(-width // 4)
    return levels


def epilogue_latency(cols: int) -> int:
    """Cycles from the drain sampling a column to its beat entering the output FIFO."""
    return max(drain_levels(cols), _RECORD_LEAD) + _EPILOGUE_STAGES


def output_fifo_depth(cols: int) -> int:
    """Output FIFO beats: the ``cols`` of a starting drain plus what the earlier drains (started ``cols +
    1`` cycles apart at the fastest) still hold then when the output is always ready, so the FIFO's room
    never delays a drain unless the output stalls."""
    held = epilogue_latency(cols) + 1 + FIFO_LATENCY + cols  # a drain's beats leave its start + this - cols .. - 1
    return cols + sum(min(cols, held - j * (cols + 1)) for j in range(1, held // (cols + 1) + 1))


def pieces(depth: int) -> list[int]:
    """Depths of the pieces a bank of ``depth`` words is built of (:data:`PIECE_DEPTH` each, the last
    one what is left)."""
    return [min(PIECE_DEPTH, depth - start) for start in range(0, depth, PIECE_DEPTH)]


class GemmEngine(wiring.Component):
    """``o_stream`` = ``IntLinear`` of the committed jobs, bit for bit.

    Parameters (keyword-only)
    -------------------------
    config : GemmConfig
        The engine's shape and limits.

    Ports: ``job``, ``act``, ``weights`` (in), ``o_stream`` (out) streams; ``status`` (``busy``,
    ``error``, ``rejected``), ``acc_overflows`` and ``out_overflows`` (saturating counters of values that
    did not fit int32 after the bias, and the job's output width ``out_bits``).
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
        """Output FIFO beats (:func:`output_fifo_depth`)."""
        return output_fifo_depth(self._cfg.cols)

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        R, C = cfg.rows, cfg.cols
        log_r = ceil_log2(R)
        half_tok = cfg.token_tiles_max * cfg.max_in
        k_shape = range(cfg.max_in)            # k - 1 of a job, and the counters over k
        t_shape = range(cfg.token_tiles_max)   # token tiles - 1 of a job, and the counter over them

        # ---- job intake: job register, range check (registered), commit into the fill half ----------
        slot_valid = Signal(2)
        slot_n = Array(Signal(16, name=f"slot{h}_n") for h in range(2))
        slot_km1 = Array(Signal(k_shape, name=f"slot{h}_km1") for h in range(2))
        # k - 2 and "k is 1": the array's last-k flag is a register, set one cycle ahead from these
        slot_km2 = Array(Signal(k_shape, name=f"slot{h}_km2") for h in range(2))
        slot_k1 = Array(Signal(name=f"slot{h}_k1") for h in range(2))
        slot_tiles_m1 = Array(Signal(t_shape, name=f"slot{h}_tiles_m1") for h in range(2))
        # the channels of a job not yet behind the array's (the loader's) current column tile: m, less
        # cols per column tile, so "the last column tile" is a compare with a constant, not a sum
        slot_left_c = Array(Signal(16, name=f"slot{h}_left_c") for h in range(2))
        slot_left_l = Array(Signal(16, name=f"slot{h}_left_l") for h in range(2))
        # the job's output width as the bits of an out.bits-wide value that must copy its sign (bit i for
        # i >= out_bits - 1): the epilogue's last fit is then a masked compare with the sign bit
        mask_bits = cfg.out.bits - 1
        slot_sign_mask = Array(Signal(mask_bits, name=f"slot{h}_sign_mask") for h in range(2))
        # a column tile's weight half is refilled only after its last reads: bank c reads address k
        # c cycles after the array issued it, so when k < cols the loader waits cols - k cycles more
        # (kept as "no wait" and the wait less one, so the release is a compare with zero)
        hold_shape = range(max(C - 1, 1))
        slot_hold0 = Array(Signal(name=f"slot{h}_hold0") for h in range(2))
        slot_hold_m1 = Array(Signal(hold_shape, name=f"slot{h}_hold_m1") for h in range(2))
        fill = Signal()
        jv = Signal()
        jn, jk, jm = Signal(16), Signal(16), Signal(16)
        jo = Signal(OUT_BITS_FIELD)
        cv = Signal()
        c_ok = Signal()
        c_n, c_m = Signal(16), Signal(16)
        c_km1 = Signal(k_shape)
        c_km2 = Signal(k_shape)
        c_k1 = Signal()
        c_tiles_m1 = Signal(t_shape)
        c_sign_mask = Signal(mask_bits)
        c_hold0 = Signal()
        c_hold_m1 = Signal(hold_shape)
        m.d.comb += self.job.ready.eq(~jv & ~cv)  # one job in the intake at a time
        with m.If(self.job.valid & ~jv & ~cv):
            m.d.sync += [jv.eq(1), jn.eq(self.job.payload.n), jk.eq(self.job.payload.k),
                         jm.eq(self.job.payload.m), jo.eq(self.job.payload.out_bits)]
        with m.If(jv & ~cv):
            m.d.sync += [jv.eq(0), cv.eq(1), c_n.eq(jn), c_m.eq(jm), c_km1.eq(jk - 1), c_km2.eq(jk - 2), c_k1.eq(jk == 1),
                         c_tiles_m1.eq((jn - 1) >> log_r),
                         c_sign_mask.eq(Cat(jo <= i + 1 for i in range(mask_bits))),
                         c_hold0.eq(jk >= C), c_hold_m1.eq(C - 1 - jk),
                         c_ok.eq((jn != 0) & (jn <= cfg.max_tokens) & (jk != 0) & (jk <= cfg.max_in)
                                 & (jm != 0) & (jm <= cfg.max_out) & (jo >= 2) & (jo <= cfg.out.bits))]
        rejected_full = Signal()
        with m.If(cv & ~c_ok):
            m.d.sync += [cv.eq(0), self.status.error.eq(1)]
            with m.If(~rejected_full):
                m.d.sync += [self.status.rejected.eq(self.status.rejected + 1),
                             rejected_full.eq(self.status.rejected == (1 << cfg.counter_bits) - 2)]
        commit = cv & c_ok & ~slot_valid.bit_select(fill, 1)
        with m.Elif(commit):
            m.d.sync += [cv.eq(0), fill.eq(~fill), slot_valid.bit_select(fill, 1).eq(1),
                         slot_n[fill].eq(c_n), slot_km1[fill].eq(c_km1), slot_km2[fill].eq(c_km2),
                         slot_k1[fill].eq(c_k1), slot_tiles_m1[fill].eq(c_tiles_m1),
                         slot_left_c[fill].eq(c_m), slot_left_l[fill].eq(c_m),
                         slot_sign_mask[fill].eq(c_sign_mask),
                         slot_hold0[fill].eq(c_hold0), slot_hold_m1[fill].eq(c_hold_m1)]

        # ---- token buffer: rows banks, the act stream writes the fill half (three register stages:
        # the beat, the tile's row offset and the half's base plus k, their sum) ------------------------
        # act.ready is a register, "the fill half is free and no job is in the intake" taken from those flags'
        # next values (below): combinational, it ran from them through the producer's pop logic into its wide
        # register enables
        act_ready = Signal(init=1)
        m.d.comb += self.act.ready.eq(act_ready)
        a1_en = Signal()
        a1 = Signal(act_layout(cfg))
        a1_half = Signal()
        m.d.sync += [a1_en.eq(self.act.valid & act_ready), a1.eq(self.act.payload), a1_half.eq(fill)]
        a2_en = Signal()
        a2_row = Signal(range(cfg.token_depth))
        a2_base = Signal(range(cfg.token_depth))
        a2_data = Signal(data.ArrayLayout(signed(OPERAND_BITS), R))
        m.d.sync += [a2_en.eq(a1_en), a2_data.eq(a1.data), a2_row.eq(mul_const(a1.tile, cfg.max_in)),
                     a2_base.eq(Mux(a1_half, half_tok, 0) + a1.k)]
        a3_en = Signal()
        a3_addr = Signal(range(cfg.token_depth))
        a3_data = Signal.like(a2_data)
        m.d.sync += [a3_en.eq(a2_en), a3_data.eq(a2_data), a3_addr.eq(a2_row + a2_base)]

        # ---- weight loader: rows then channel records of each column tile into the free half ------
        wfull = Signal(2)
        cbusy = Signal(2)
        wl = Signal()
        h_l = Signal()
        trailer = Signal()
        k_l = Signal(k_shape)
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
        left_l = slot_left_l[h_l]
        # registered one cycle behind: a column tile is at least two beats, its first one after the commit
        last_col_l = Signal()
        m.d.sync += last_col_l.eq(left_l <= C)
        m.d.sync += [ww_en.eq(0), cw_en.eq(0), tile_loaded.eq(0)]
        # the write registers load every cycle (ww_en and cw_en say whether they hold a beat), so the beat's
        # enable reaches only the loader's few control bits, not the 100+ bits of a beat and its address
        m.d.sync += [ww_sel.eq(1 << j_l), ww_data.eq(self.weights.payload), ww_addr.eq(Mux(wl, cfg.max_in, 0) + k_l),
                     cw_addr.eq(Mux(wl, C, 0) + c_l)]
        if cfg.record_beats == 1:
            m.d.sync += record.eq(self.weights.payload)
        with m.If(w_beat):
            with m.If(~trailer):
                m.d.sync += ww_en.eq(1)
                with m.If(j_l == cfg.row_beats - 1):
                    m.d.sync += [j_l.eq(0), k_l.eq(k_l + 1)]
                    with m.If(k_l == slot_km1[h_l]):
                        m.d.sync += [k_l.eq(0), trailer.eq(1)]
                with m.Else():
                    m.d.sync += j_l.eq(j_l + 1)
            with m.Else():
                if cfg.record_beats > 1:
                    m.d.sync += record.eq(Cat(record[width:], self.weights.payload))
                m.d.sync += b_l.eq(b_l + 1)
                with m.If(b_l == cfg.record_beats - 1):
                    m.d.sync += [b_l.eq(0), cw_en.eq(1), c_l.eq(c_l + 1)]
                    with m.If(c_l == C - 1):
                        m.d.sync += [c_l.eq(0), trailer.eq(0), wl.eq(~wl), tile_loaded.eq(1),
                                     tile_loaded_half.eq(wl), left_l.eq(left_l - C)]
                        with m.If(last_col_l):
                            m.d.sync += h_l.eq(~h_l)

        # ---- compute scheduler: one k per cycle --------------------------------------------------
        h_c = Signal()
        wc = Signal()
        col0_c = Signal(16)
        i_c = Signal(t_shape)
        k_c = Signal(k_shape)
        tok_base = Signal(range(cfg.token_depth + 1))
        shadow_free = Signal(init=1)
        is_last_k = Signal()  # k_c == slot_km1[h_c] while slot h_c is valid, a register
        go = slot_valid.bit_select(h_c, 1) & wfull.bit_select(wc, 1) & (~is_last_k | shadow_free)
        iss = Signal(data.StructLayout({"valid": 1, "first": 1, "last": 1}))
        iss_tok = Signal(range(cfg.token_depth))
        iss_w = Signal(range(cfg.weight_depth))
        m.d.sync += [iss.valid.eq(go), iss.first.eq(k_c == 0), iss.last.eq(is_last_k),
                     iss_tok.eq(tok_base + k_c), iss_w.eq(Mux(wc, cfg.max_in, 0) + k_c)]

        # the pending drain: what the epilogue needs of the tile whose last k was just issued
        info = data.StructLayout({"tile": 16, "n": 16, "m_left": 16, "col0": 16, "chalf": 1,
                                  "free_consts": 1, "job_last": 1, "sign_mask": mask_bits})
        p_valid = Signal()
        p_info = Signal(info)
        p_wait = Signal(range(ISSUE_TO_DRAIN))
        cols_left = slot_left_c[h_c]
        # "the current tile is its column tile's last token tile / its job's last column tile", registered
        # one cycle behind the state they depend on: that state changes only at a tile's last k (and
        # commits, handled below), and two last k's are at least ISSUE_TO_DRAIN cycles apart (shadow_free)
        last_tile = Signal()
        last_col = Signal()
        m.d.sync += [last_tile.eq(i_c == slot_tiles_m1[h_c]), last_col.eq(cols_left <= C)]
        # the current slot's weight hold, registered the same way (read when a column tile's last k frees its half)
        hold0_c = Signal()
        hold_m1_c = Signal(hold_shape)
        m.d.sync += [hold0_c.eq(slot_hold0[h_c]), hold_m1_c.eq(slot_hold_m1[h_c])]
        clear_wfull = Signal()
        slot_done = go & is_last_k & last_tile & last_col  # slot h_c's last tile issues: the slot is free
        h_next = Mux(slot_done, ~h_c, h_c)  # the array's slot in the next cycle
        # the pending drain's record follows the array's state while no drain is pending (shadow_free is
        # ~p_valid) and freezes at the last k that sets p_valid: its 70-odd enables hang on one register, not on go
        with m.If(shadow_free):
            m.d.sync += [p_info.tile.eq(i_c), p_info.n.eq(slot_n[h_c]), p_info.m_left.eq(cols_left),
                         p_info.col0.eq(col0_c), p_info.chalf.eq(wc), p_info.free_consts.eq(last_tile),
                         p_info.job_last.eq(last_tile & last_col), p_info.sign_mask.eq(slot_sign_mask[h_c])]
        with m.If(go):
            m.d.sync += [k_c.eq(k_c + 1), is_last_k.eq(k_c == slot_km2[h_c])]
            with m.If(is_last_k):
                m.d.sync += is_last_k.eq(slot_k1[h_next])
                m.d.sync += [k_c.eq(0), i_c.eq(i_c + 1), tok_base.eq(tok_base + cfg.max_in), shadow_free.eq(0),
                             p_valid.eq(1), p_wait.eq(ISSUE_TO_DRAIN - 1)]
                with m.If(last_tile):
                    m.d.sync += [i_c.eq(0), tok_base.eq(Mux(h_c, half_tok, 0)), wc.eq(~wc), col0_c.eq(col0_c + C),
                                 cols_left.eq(cols_left - C)]
                    m.d.comb += clear_wfull.eq(1)
                    with m.If(last_col):
                        m.d.sync += [col0_c.eq(0), h_c.eq(~h_c), tok_base.eq(Mux(h_c, 0, half_tok)),
                                     slot_valid.bit_select(h_c, 1).eq(0)]
        jv_next = Mux(jv, cv, self.job.valid & ~cv)
        cv_next = Mux(cv, c_ok & slot_valid.bit_select(fill, 1), jv)
        fill_next = fill ^ commit
        valid_next = Cat((slot_valid[h] | commit & (fill == h)) & ~(slot_done & (h_c == h)) for h in range(2))
        m.d.sync += act_ready.eq(~(valid_next >> fill_next)[0] & ~jv_next & ~cv_next)
        with m.If(commit & (fill == h_next)):  # the array is waiting for this job (or turns to it now)
            m.d.sync += [is_last_k.eq(c_k1), last_tile.eq(c_tiles_m1 == 0), last_col.eq(c_m <= C),
                         hold0_c.eq(c_hold0), hold_m1_c.eq(c_hold_m1)]
        # both halves' flags in one place: the loader sets the half it finished, the array clears its own
        # (at once, or after the job's hold while the far banks still read it)
        # A held half's wait starts from a register one cycle after the array frees it (hold_start), so the
        # array's issue decision reaches only the flags, not the hold counters' enables: the first cycle of the
        # wait is then decided from the registered hold (zero: free now; else count down from hold - 1).
        hold_pending = Signal(2)
        hold_start = Signal(2)
        hold_left = Array(Signal(hold_shape, name=f"hold{h}_left") for h in range(2))
        held_m1_zero = Signal()
        held_m2 = Signal(hold_shape)
        m.d.sync += [held_m1_zero.eq(hold_m1_c == 0), held_m2.eq(hold_m1_c - 1)]
        # (the loader finishes only a half that is not full, the array frees only a full one: never the same half
        # in one cycle, so the two need no priority between them)
        for h in range(2):
            with m.If(tile_loaded & (tile_loaded_half == h)):
                m.d.sync += wfull[h].eq(1)
            m.d.sync += hold_start[h].eq(clear_wfull & (wc == h) & ~hold0_c)
            with m.If(clear_wfull & (wc == h) & hold0_c):
                m.d.sync += wfull[h].eq(0)
            with m.If(hold_start[h]):
                with m.If(held_m1_zero):
                    m.d.sync += wfull[h].eq(0)
                with m.Else():
                    m.d.sync += [hold_pending[h].eq(1), hold_left[h].eq(held_m2)]
            with m.Elif(hold_pending[h]):
                with m.If(hold_left[h] == 0):
                    m.d.sync += [wfull[h].eq(0), hold_pending[h].eq(0)]
                with m.Else():
                    m.d.sync += hold_left[h].eq(hold_left[h] - 1)

        # ---- memories: banks of one-block-RAM pieces, every read registered twice (the piece, the bank) ---
        # the token banks never see a read and a write of one address in one cycle: the act stream writes a
        # half only while no committed job uses it (its last write lands before the job commits: acts are
        # taken before the job beat, which commits three cycles later), and the array reads a half only while
        # its job is committed (its last read, one cycle after the issue that frees the half, lands three
        # cycles before the first write an act taken then can make)
        tok_q = []
        for r in range(R):
            q = Signal(signed(OPERAND_BITS), name=f"tok_q{r}")
            m.d.sync += q.eq(_pieced_bank(m, f"tok{r}", cfg.token_depth, wr_en=a3_en, wr_addr=a3_addr,
                                          wr_data=a3_data[r], rd_addr=iss_tok, collision_free=True,
                                          platform=platform))
            tok_q.append(q)
        w_addr = [iss_w]
        for c in range(1, C):
            wa = Signal.like(iss_w, name=f"w_addr{c}")
            m.d.sync += wa.eq(w_addr[-1])
            w_addr.append(wa)
        # on ECP5 the packed multiply is portable logic that Yosys tiles over two 18 x 18 blocks: correct, but
        # no DSP saved (resources.dsps counts it so)
        pack = cfg.pack_pairs
        w_q = []
        for c in range(C):
            lane = c % cfg.weight_bytes
            q = Signal(signed(OPERAND_BITS), name=f"w_q{c}")
            # a packed pair's second column reads with its first: the pair's one multiply sees both weights
            m.d.sync += q.eq(_pieced_bank(m, f"w{c}", cfg.weight_depth, wr_en=ww_en & ww_sel[c // cfg.weight_bytes],
                                          wr_addr=ww_addr, wr_data=ww_data[8 * lane:8 * lane + 8],
                                          rd_addr=w_addr[c - 1 if pack and c % 2 else c], platform=platform))
            w_q.append(q)
        const_mem = memory.Memory(shape=unsigned(cfg.record_bits), depth=2 * C, init=[])
        m.submodules.consts = const_mem
        cwp, crp = const_mem.write_port(), const_mem.read_port(transparent_for=())
        m.d.comb += [cwp.en.eq(cw_en), cwp.addr.eq(cw_addr), cwp.data.eq(record[:cfg.record_bits])]

        # ---- the array -------------------------------------------------------------------------------
        flags = data.StructLayout({"valid": 1, "first": 1, "last": 1})
        f_prev = iss
        for stage in range(4):  # issue -> RAM read -> piece register -> bank register -> operand register
            f_next = Signal(flags, name=f"iss_d{stage + 1}")
            m.d.sync += f_next.eq(f_prev)
            f_prev = f_next
        pe_bits = cfg.pe_acc_bits
        shadows = [[None] * C for _ in range(R)]
        a_left = tok_q
        f_left = [f_prev] * R  # each row's flags travel with its activations: one flag register per PE
        high = [None] * R  # pack_pairs: the pair's second product, one cycle behind its first (its flags are)
        for c in range(C):
            a_here, f_here = [], []
            for r in range(R):
                f_c = Signal(flags, name=f"flags{r}_{c}")
                done_c = Signal(name=f"done{r}_{c}")
                m.d.sync += [f_c.eq(f_left[r]), done_c.eq(f_c.valid & f_c.last)]
                f_here.append(f_c)
                a_reg = Signal(signed(OPERAND_BITS), name=f"a{r}_{c}")
                acc = Signal(signed(pe_bits), name=f"acc{r}_{c}")
                shadow = Signal(signed(pe_bits), name=f"sh{r}_{c}")
                m.d.sync += a_reg.eq(a_left[r])
                if pack and c % 2:
                    prod = high[r]
                elif pack:
                    # a * (w0 + w1 2**16) = a w0 + a w1 2**16: |a w0| <= 2**14 fits the low 16 bits signed,
                    # so they are a w0 and the rest, plus one where they are negative, is a w1 (exactly)
                    w_pair = Signal(signed(3 * OPERAND_BITS + 1), name=f"wp{r}_{c}")
                    p_pair = Signal(signed(4 * OPERAND_BITS + 1), name=f"pp{r}_{c}")
                    hi = Signal(signed(2 * OPERAND_BITS), name=f"ph{r}_{c}")
                    low = 2 * OPERAND_BITS
                    m.d.sync += [w_pair.eq((w_q[c + 1] << low) + w_q[c]), p_pair.eq(a_reg * w_pair),
                                 hi.eq(p_pair[low:].as_signed() + p_pair[low - 1])]
                    prod = p_pair[:low].as_signed()
                    high[r] = hi
                elif is_ecp5(platform):
                    # the operand and product registers are the DSP's own (a_reg only feeds the next column):
                    # the multiplier's delay stays inside the MULT18X18D, the same two cycles
                    prod = mult18x18d_registered(m, f"mul{r}_{c}", a_left[r], w_q[c])
                else:
                    w_reg = Signal(signed(OPERAND_BITS), name=f"w{r}_{c}")
                    prod = Signal(signed(2 * OPERAND_BITS), name=f"p{r}_{c}")
                    m.d.sync += [w_reg.eq(w_q[c]), prod.eq(a_reg * w_reg)]
                with m.If(f_c.valid):
                    m.d.sync += acc.eq(prod + Mux(f_c.first, 0, acc))
                with m.If(done_c):
                    m.d.sync += shadow.eq(acc)
                shadows[r][c] = shadow
                a_here.append(a_reg)
            a_left, f_left = a_here, f_here

        # ---- drain: pending tile -> one-hot column walk -> OR tree --------------------------------
        # what the drain needs of the pending tile beyond p_info is registered while it waits (at least
        # ISSUE_TO_DRAIN - 1 cycles): the beats it emits, its last column, the lanes holding tokens
        p_emit = Signal(range(C + 1))
        p_last_c = Signal(range(C))
        p_lanes = Signal(R)
        tok0 = Cat(Const(0, log_r), p_info.tile) if log_r else p_info.tile
        m.d.sync += [p_emit.eq(Mux(p_info.m_left < C, p_info.m_left, C)),
                     p_last_c.eq(Mux(p_info.m_left < C, p_info.m_left - 1, C - 1)),
                     p_lanes.eq(Cat(tok0 + r < p_info.n for r in range(R)))]
        out_cnt = Signal(range(self.fifo_depth + 1))
        d_active = Signal()
        d_c = Signal(range(C))
        d_info = Signal(info)
        d_emit = Signal.like(p_emit)
        d_last_c = Signal.like(p_last_c)
        d_lanes = Signal.like(p_lanes)
        with m.If(p_valid & (p_wait != 0)):
            m.d.sync += p_wait.eq(p_wait - 1)
        start = p_valid & (p_wait == 0) & ~d_active & (out_cnt <= self.fifo_depth - C)
        popped = self.o_stream.valid & self.o_stream.ready
        m.d.sync += out_cnt.eq(out_cnt + Mux(start, p_emit, 0) - popped)
        with m.If(start):
            m.d.sync += [d_active.eq(1), d_c.eq(0), d_info.eq(p_info), d_emit.eq(p_emit), d_last_c.eq(p_last_c),
                         d_lanes.eq(p_lanes), p_valid.eq(0), shadow_free.eq(1)]
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
                                  "lanes": R, "chalf": 1, "channel": 16, "sign_mask": mask_bits})
        ctl0 = Signal(dctl)
        m.d.comb += [ctl0.valid.eq(d_active), ctl0.emit.eq(d_c < d_emit), ctl0.c.eq(d_c),
                     ctl0.last.eq(d_info.job_last & (d_c == d_last_c)),
                     ctl0.tile.eq(d_info.tile), ctl0.chalf.eq(d_info.chalf), ctl0.channel.eq(d_info.col0 + d_c),
                     ctl0.lanes.eq(d_lanes), ctl0.sign_mask.eq(d_info.sign_mask)]
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
        # the epilogue starts when both the tree's output and the registered record are there
        lead = max(levels, _RECORD_LEAD)
        for i in range(lead - levels):
            tq = [Signal(signed(pe_bits), name=f"tree_d{i}_{r}") for r in range(R)]
            m.d.sync += [q.eq(v) for q, v in zip(tq, tree_out, strict=True)]
            tree_out = tq
        ctl = [ctl0]
        for _ in range(lead):
            nxt_ctl = Signal(dctl)
            m.d.sync += nxt_ctl.eq(ctl[-1])
            ctl.append(nxt_ctl)
        if lead > _RECORD_LEAD:
            ctl_r = ctl[lead - _RECORD_LEAD - 1]
            m.d.comb += crp.addr.eq(Mux(ctl_r.chalf, C, 0) + ctl_r.c)
        else:
            # the column the drain samples next: the pending tile's first while idle (a start may follow;
            # a read without one is unused), else the one after d_c (past the last no column follows)
            m.d.comb += crp.addr.eq(Mux(d_active, Mux(d_info.chalf, C, 0) + d_c + 1, Mux(p_info.chalf, C, 0)))
        rec_ram = Signal(cfg.record_bits)
        rec = Signal(cfg.record_bits)
        m.d.sync += [rec_ram.eq(crp.data), rec.eq(rec_ram)]
        bias = rec[:cfg.acc_bits].as_signed()
        mult = rec[cfg.acc_bits:cfg.acc_bits + cfg.multiplier_bits]
        shift = rec[cfg.acc_bits + cfg.multiplier_bits:]

        # ---- epilogue: one register stage per step, shared control, rows lanes -----------------------
        acc_fmt = FixedFormat(bits=cfg.acc_bits)
        ectl = [ctl[lead]]
        e_mult = [mult]
        e_shift = [shift]
        for i in range(_EPILOGUE_STAGES):
            c_next = Signal(dctl, name=f"e{i + 1}")
            mu = Signal(cfg.multiplier_bits, name=f"e{i + 1}_mult")
            sh = Signal(SHIFT_BITS, name=f"e{i + 1}_shift")
            m.d.sync += [c_next.eq(ectl[-1]), mu.eq(e_mult[-1]), sh.eq(e_shift[-1])]
            ectl.append(c_next)
            e_mult.append(mu)
            e_shift.append(sh)
        acc_ovf = Signal(R)
        out_ovf = Signal(R)
        y = Signal(data.ArrayLayout(cfg.out.shape, R))
        low = LOW_BITS if cfg.acc_bits > LOW_BITS + 1 else 0
        prod_bits = cfg.acc_bits + cfg.multiplier_bits + 1
        for r in range(R):
            # e1: + bias; e2: fit into int32 (counted)
            s1 = Signal(signed(max(pe_bits, cfg.acc_bits) + 1), name=f"biased{r}")
            m.d.sync += s1.eq(tree_out[r] + bias)
            x = Signal(signed(cfg.acc_bits), name=f"x{r}")
            fitted, ovf = hwfixed.fit(s1, acc_fmt)
            m.d.sync += [x.eq(fitted), acc_ovf[r].eq(ovf & ectl[1].valid & ectl[1].emit & ectl[1].lanes[r])]
            # e3: partial products of x * multiplier (registered operands: x and e2_mult), e4: their sum
            mult_s = Cat(e_mult[2], Const(0, 1)).as_signed()
            p = Signal(signed(prod_bits), name=f"rq_prod{r}")
            if low:
                p_lo = Signal(signed(LOW_BITS + 1 + len(mult_s)), name=f"rq_lo{r}")
                p_hi = Signal(signed(cfg.acc_bits - LOW_BITS + len(mult_s)), name=f"rq_hi{r}")
                m.d.sync += [p_lo.eq(Cat(x[:LOW_BITS], Const(0, 1)).as_signed() * mult_s),
                             p_hi.eq(x[LOW_BITS:].as_signed() * mult_s),
                             p.eq((p_hi << LOW_BITS) + p_lo)]
            else:
                p_one = Signal(signed(prod_bits), name=f"rq_one{r}")
                m.d.sync += [p_one.eq(x * mult_s), p.eq(p_one)]
            # e5, e6: ((2 p) >> s + 1) >> 1 is p * 2**-s rounded half up (s = 0 included): the shift in two
            # steps (coarse s & 56, fine s & 7), e7: the rounding add, e8: fit into the widest format out,
            # e9: fit into the job's out_bits (counted once: saturating twice is saturating into the narrower)
            coarse = Signal(signed(prod_bits + 1), name=f"rq_coarse{r}")
            m.d.sync += coarse.eq((p << 1) >> Cat(Const(0, 3), e_shift[4][3:]))
            fine = Signal.like(coarse, name=f"rq_fine{r}")
            m.d.sync += fine.eq(coarse >> e_shift[5][:3])
            rounded = Signal(signed(prod_bits + 1), name=f"rq_round{r}")
            m.d.sync += rounded.eq((fine + 1) >> 1 if cfg.out.rounding is Rounding.HALF_UP else fine >> 1)
            value, ovf = hwfixed.fit(rounded, cfg.out)
            wide = Signal(cfg.out.shape, name=f"rq_wide{r}")
            wide_ovf = Signal(name=f"rq_wide_ovf{r}")
            m.d.sync += [wide.eq(value), wide_ovf.eq(ovf)]
            # wide fits out_bits when every bit the mask names equals its sign; if not, the job's bound with
            # the value's sign: max (0 then ones below the mask) or min (its complement)
            e8 = ectl[8]
            sign = wide[-1]
            narrow_ovf = ((wide[:mask_bits] ^ sign.replicate(mask_bits)) & e8.sign_mask).any()
            bound = Cat(~e8.sign_mask, Const(0, 1)) ^ sign.replicate(cfg.out.bits)
            m.d.sync += [y[r].eq(Mux(e8.lanes[r], Mux(narrow_ovf, bound, wide), 0)),
                         out_ovf[r].eq((wide_ovf | narrow_ovf) & e8.valid & e8.emit & e8.lanes[r])]
        e_last = ectl[-1]

        # ---- output FIFO ---------------------------------------------------------------------------
        m.submodules.out_fifo = ofifo = fifo.SyncFIFOBuffered(width=out_layout(cfg).size, depth=self.fifo_depth)
        beat = Signal(out_layout(cfg))
        m.d.comb += [beat.data.eq(y), beat.tile.eq(e_last.tile), beat.channel.eq(e_last.channel),
                     beat.last.eq(e_last.last), ofifo.w_en.eq(e_last.valid & e_last.emit), ofifo.w_data.eq(beat),
                     self.o_stream.payload.eq(ofifo.r_data), self.o_stream.valid.eq(ofifo.r_rdy),
                     ofifo.r_en.eq(self.o_stream.ready)]

        _count(m, self.acc_overflows, acc_ovf, cfg.counter_bits)
        _count(m, self.out_overflows, out_ovf, cfg.counter_bits)
        m.d.comb += self.status.busy.eq(jv | cv | slot_valid.any() | p_valid | d_active | (out_cnt != 0)
                                        | Cat(c.valid for c in ctl[1:] + ectl[1:]).any())
        return m


def _pieced_bank(m: Module, name: str, depth: int, *, wr_en, wr_addr, wr_data, rd_addr, collision_free=False,
                 platform=None):
    """A bank of ``depth`` int8 words built of :func:`pieces` (one block RAM each): writes go to the piece
    the address's high bits name; a read returns, two cycles after ``rd_addr``, the OR of the pieces'
    registered outputs (all zero but the addressed one), for the caller to register.

    ``collision_free``: the caller guarantees that no read falls in the cycle of a write to the same address,
    so the memories carry Yosys's ``no_rw_check``: without it Yosys puts read-first bypass logic behind each
    block RAM (an ECP5 DP16KD or a Xilinx RAMB does not return the old word when its two ports collide), fed
    by registers of the write port that Yosys merges across the pieces, and that logic is pulled away from
    the RAM, between its slow output and the piece register.

    On ECP5 (:func:`~tokensift.hw.common.ecp5.is_ecp5`) each piece is a DP16KD whose output register is the
    piece register (Yosys does not absorb it), and the ``hit`` select moves one register later, into the OR:
    the block RAM's slow clock-to-out then ends inside the RAM, the latency is the same. The instances have no
    read-first bypass, and need none: the token banks are ``collision_free``, and a weight half is written only
    after the far banks' last reads of its tile, so no read the array uses meets a write of its address (an
    idle read address may point into the half being filled; its data is never used)."""
    sizes = pieces(depth)
    lo = ceil_log2(PIECE_DEPTH) if len(sizes) > 1 else len(rd_addr)
    outs = []
    if is_ecp5(platform):
        for j, size in enumerate(sizes):
            piece = f"{name}_{j}" if len(sizes) > 1 else name
            en = wr_en & (wr_addr[lo:] == j) if len(sizes) > 1 else wr_en
            q = dp16kd_8bit(m, piece, depth=size, wr_en=en, wr_addr=wr_addr[:lo], wr_data=wr_data,
                            rd_addr=rd_addr[:lo])
            if len(sizes) > 1:
                hit = Signal(name=f"{piece}_hit")
                hit2 = Signal(name=f"{piece}_hit2")
                m.d.sync += [hit.eq(rd_addr[lo:] == j), hit2.eq(hit)]
                q = Mux(hit2, q, 0)
            outs.append(q)
        return _or(outs)
    for j, size in enumerate(sizes):
        mem = memory.Memory(shape=signed(OPERAND_BITS), depth=size, init=[],
                            attrs={"no_rw_check": 1} if collision_free else None)
        piece = f"{name}_{j}" if len(sizes) > 1 else name
        m.submodules[piece] = mem
        wp, rp = mem.write_port(), mem.read_port(transparent_for=())
        q = Signal(signed(OPERAND_BITS), name=f"{piece}_q")
        m.d.comb += [wp.addr.eq(wr_addr[:lo]), wp.data.eq(wr_data), rp.addr.eq(rd_addr[:lo])]
        if len(sizes) > 1:
            hit = Signal(name=f"{piece}_hit")
            m.d.sync += hit.eq(rd_addr[lo:] == j)
            m.d.comb += wp.en.eq(wr_en & (wr_addr[lo:] == j))
            m.d.sync += q.eq(Mux(hit, rp.data, 0))
        else:
            m.d.comb += wp.en.eq(wr_en)
            m.d.sync += q.eq(rp.data)
        outs.append(q)
    return _or(outs)


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
    m.d.sync += counter.eq(Mux(total[bits], top, total[:bits]))  # the carry out is the overflow
