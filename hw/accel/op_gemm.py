"""The ``GEMM`` and ``PATCH_EMBED`` engine: ``dst = IntLinear(src rows)`` on the GEMM engine
(:class:`tokensift.hw.gemm.core.GemmEngine`), its activations streamed from a token buffer (``GEMM``) or
from the input region in DRAM (``PATCH_EMBED``), its weights streamed from DRAM, its outputs written back.

The op runs in four overlapping parts:

- **The record.** The LIN record at ``memory_base + addr_b`` is fetched (its header and six scalars, 64
  bytes) and checked: the tag and the length its ``m`` implies, ``m`` and ``k`` equal to the instruction's,
  int8 inputs and weights, the engine's int32 accumulator, an output width of 2 bits up to the destination
  buffer's (and equal to ``arg`` for ``GEMM``). The weight stream's length (``ceil(m / cols)`` column tiles
  of ``tile_beats(k)`` beats) is summed one column tile per cycle meanwhile.
- **The activations** (started at once, while the record is in flight). ``GEMM`` reads ``src`` rows
  ``start .. start + n - 1``: one buffer read (a tile of ``banks`` rows x ``lanes`` columns) is ``lanes``
  act beats. When ``start`` is not a multiple of ``banks`` (the CANDIDATES rows start at ``P``) a token
  tile straddles two buffer tiles: each read is rotated by ``start % banks`` (one registered 2:1 stage per
  bit) and combined lane by lane with the previous read of the same word, so a word costs one read more.
  ``PATCH_EMBED`` streams the input region (``patches x patch_dim`` int8, row major) into a double-buffered
  transposer of ``banks`` rows, one block per token tile, and reads it back ``data_bytes`` features at a
  time. Its token ``t`` is patch ``t - 1`` and token 0 is the class slot, computed from zero activations
  and written as zeros (the reference's row 0), so the outputs land on rows ``1 .. patches`` without
  moving. Either way a shift register hands the engine one act beat per cycle.
- **The weights.** Once the record is good the weight stream at ``memory_base + addr_a`` (the GEMM
  engine's own beats, :func:`tokensift.hw.gemm.layout.encode_weights`) is read with one DRAM command and
  passed straight to the engine's weights port; the job beat follows the last act beat.
- **The outputs.** Each output beat (one channel of a token tile) is saturated to the record's output width
  (see :data:`OUT_BITS`) and written to column ``channel`` of ``dst``, every bank, masked to the op's rows:
  one write per beat. ``done`` follows the job's last beat with ``rows`` = ``n`` (``patches + 1``).

A fault (``done`` with ``fault``, nothing written): an opcode other than these two, ``n`` of 0 or rows
beyond a buffer, ``k`` or ``m`` of 0 or beyond the engine's or the buffers' widths, a source that is not an
int8 buffer, a ``PATCH_EMBED`` whose ``k`` is not the patch size, an address that is not a whole AXI word
(these three cycles after ``start``); a record that fails its checks or a weight stream too long for one
DRAM command (once the record is in and the activations are loaded, so the DRAM channel is idle again).

:func:`cycles` is the engine's cycle count at a fixed DRAM latency, exact against the RTL.

Throughput (``bench/bench_accel_gemm.py``): the act stream runs at one beat per cycle and the weights at the
DRAM's rate, so an op costs the GEMM engine's own cycles for the job plus the activation load
(``ceil(n / banks) x k`` cycles) and a few cycles of pipeline: the GEMM engine takes a job beat only after
all of its activations (its contract), so that load is not hidden; it is one column tile's compute, 8-33 %
of DeiT-S's layers.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory
from amaranth.utils import ceil_log2

from tokensift.checks import check_int
from tokensift.hw.accel.config import AccelConfig
from tokensift.hw.accel.ports import READ_LATENCY, OpEngine, check_config
from tokensift.hw.accel.rows import RecordFields
from tokensift.hw.common.mac_array import mul_const
from tokensift.hw.gemm import cycles as gemm_cycles
from tokensift.hw.gemm.config import GemmConfig
from tokensift.hw.gemm.core import GemmEngine
from tokensift.quant.accel.isa import Buffer, Opcode
from tokensift.quant.accel.records import RECORD_HEADER, SCHEMAS, Tag
from tokensift.quant.fixed import FixedFormat

__all__ = ["GemmOpEngine", "gemm_config", "weight_stream_bytes", "cycles", "RECORD_BYTES", "OUT_BITS"]

#: the part of a LIN record the engine reads: the 16-byte header and the six int64 scalars
RECORD_BYTES = 64
#: the GEMM engine's output format: the widest a GEMM writes (the head's int16 logits; the residual format is
#: at most 16 bits). Outputs are saturated again, into the record's width, in a local stage: saturating at 16
#: bits and then at ``b <= 16`` bits is saturating at ``b`` bits, so it is bit-exact for every width.
#: The job beat asks the engine for this width too (its ``out_bits``), so its epilogue is the same for every op.
OUT_BITS = 16
#: the GEMM engine's accumulator width (a record with another one is a fault)
ACC_BITS = 32
#: the record's slots the engine checks: its header (tag and length), then its scalars
_RECORD_FIELDS = {"header": 0, **{name: RECORD_HEADER + 8 * i for i, name in enumerate(SCHEMAS[Tag.LINEAR].scalars)}}


def gemm_config(cfg: AccelConfig) -> GemmConfig:
    """The GEMM engine of an accelerator: ``banks`` x ``gemm_cols`` MACs, AXI-word weight beats, sized for the
    envelope's tokens, widest input (the patch size, the MLP's hidden width) and widest output (QKV)."""
    env = check_config(cfg, "cfg").envelope
    return GemmConfig(rows=cfg.banks, cols=cfg.gemm_cols, max_tokens=env.max_tokens,
                      max_in=max(env.patch_dim, env.width, env.mlp_hidden),
                      max_out=max(3 * env.width, env.mlp_hidden, env.classes),
                      weight_bytes=cfg.axi.data_bytes, out=FixedFormat(bits=OUT_BITS), acc_bits=ACC_BITS,
                      pack_pairs=cfg.pack_pairs)


def weight_stream_bytes(cfg: AccelConfig, k: int, m: int) -> int:
    """Bytes of a layer's weight stream in DRAM (``k`` inputs, ``m`` outputs): whole column tiles of beats."""
    g = gemm_config(cfg)
    return -(-m // g.cols) * g.tile_beats(k) * g.weight_bytes


def _rotation_stages(cfg: AccelConfig) -> int:
    return ceil_log2(cfg.banks)


#: act-path entries in flight at most: the read latency, the rotation stages, the FIFO's own latency
def _depth(cfg: AccelConfig) -> int:
    return READ_LATENCY + _rotation_stages(cfg) + 3


class GemmOpEngine(OpEngine):
    """See the module docstring; ports as :func:`tokensift.hw.accel.ports.engine_signature` (one read
    port, the DRAM channel)."""

    def __init__(self, *, config: AccelConfig):
        super().__init__(config=config)
        # lanes is a power of two (AccelConfig's own check): an output channel's word and lane are its bits
        pd, w = config.envelope.patch_dim, config.axi.data_bytes
        if pd % w:
            raise ValueError(f"the patch size ({pd} bytes) must be a multiple of the AXI word ({w} bytes): the "
                             f"patch embedding reads whole words of one patch")
        self._gemm = gemm_config(config)

    @property
    def gemm(self) -> GemmConfig:
        return self._gemm

    def elaborate(self, platform):
        m = Module()
        cfg, g = self.config, self._gemm
        env = cfg.envelope
        R, L, W = cfg.banks, cfg.lanes, cfg.axi.data_bytes
        E = max(L, W)                     # elements per act-path entry: a buffer word or a DRAM word
        log_r, log_l, log_w = ceil_log2(R), ceil_log2(L), ceil_log2(W)
        pd = env.patch_dim
        pdw = pd // W                     # DRAM words per patch
        pe_tokens = env.patches + 1
        pe_tiles = -(-pe_tokens // R)
        input_words = env.patches * pdw
        rec_words = RECORD_BYTES // W
        depth = _depth(cfg)
        rb = cfg.row_bits
        m.submodules.gemm = gemm = GemmEngine(config=g)

        # ---- the op and its checks: lookups (s1), compares (s2), verdict (s3) --------------------------
        op = self.latch_op(m)
        s1, s2, s3 = Signal(), Signal(), Signal()
        m.d.sync += [s1.eq(self.start), s2.eq(s1), s3.eq(s2)]

        dst_rows, dst_cols = Signal(16), Signal(16)
        dst_bits = Signal(5)
        dst_ok = Signal()
        src_rows, src_cols = Signal(16), Signal(16)
        src_int8 = Signal()
        with m.Switch(op.dst):
            for b in Buffer:
                geo = cfg.geometry(b)
                with m.Case(b):
                    m.d.sync += [dst_rows.eq(geo.rows), dst_cols.eq(geo.cols), dst_bits.eq(geo.bits),
                                 dst_ok.eq(geo.signed)]
            with m.Default():
                m.d.sync += dst_ok.eq(0)
        with m.Switch(op.src):
            for b in Buffer:
                geo = cfg.geometry(b)
                with m.Case(b):
                    m.d.sync += [src_rows.eq(geo.rows), src_cols.eq(geo.cols),
                                 src_int8.eq(geo.signed and geo.bits == 8)]
            with m.Default():
                m.d.sync += src_int8.eq(0)
        is_pe, is_gemm = Signal(), Signal()
        n_g = Signal(rb + 1)              # the GEMM job's tokens
        start_g = Signal(rb)              # the first source row
        end_row = Signal(rb + 1)
        addr_w = Signal(cfg.axi.addr_width)
        addr_r = Signal(cfg.axi.addr_width)
        exp_len = Signal(20)              # the LIN record's length in bytes for the instruction's m
        kc = Signal(32)                   # k x cols: a column tile's weight bytes
        m.d.sync += [is_pe.eq(op.opcode == Opcode.PATCH_EMBED), is_gemm.eq(op.opcode == Opcode.GEMM),
                     n_g.eq(Mux(op.opcode == Opcode.PATCH_EMBED, pe_tokens, op.n)),
                     start_g.eq(Mux(op.opcode == Opcode.PATCH_EMBED, 0, op.start)),
                     end_row.eq(op.start + op.n),
                     addr_w.eq(op.memory_base + op.addr_a), addr_r.eq(op.memory_base + op.addr_b),
                     exp_len.eq(RECORD_BYTES + 8 * op.m + 8 * op.m[0] + (((op.m + 7) >> 3) << 3)),
                     kc.eq(mul_const(op.k, g.cols))]
        misaligned = Signal()
        if log_w:
            m.d.comb += misaligned.eq((addr_w[:log_w] != 0) | (addr_r[:log_w] != 0) |
                                      (is_pe & (op.input_base[:log_w] != 0)))
        op_fault = Signal()
        tiles = Signal(16)                # token tiles of the job
        t0 = Signal(rb)                   # the buffer tile of the first row, that of the last row
        t_last = Signal(rb)
        rot = Signal(max(1, log_r))       # start % banks
        straddle = Signal()               # rot != 0: a word takes one read more
        last_lanes = Signal(R)            # the lanes of the last token tile that hold tokens
        tile_bytes = Signal(32)
        words = Signal(16)
        m.d.sync += [
            op_fault.eq(~(is_pe | is_gemm) | (op.k == 0) | (op.k > g.max_in) | (op.m == 0) | (op.m > dst_cols)
                        | ~dst_ok | (n_g == 0) | (n_g > dst_rows) | misaligned
                        | (is_gemm & (~src_int8 | (op.k > src_cols) | (end_row > src_rows)))
                        | (is_pe & (op.k != pd))),
            tiles.eq((n_g + R - 1) >> log_r), t0.eq(start_g >> log_r), t_last.eq((start_g + n_g - 1) >> log_r),
            rot.eq(start_g[:log_r] if log_r else 0), straddle.eq(start_g[:log_r].any() if log_r else 0),
            last_lanes.eq(Cat(((n_g - 1) & (R - 1)) >= r for r in range(R))),
            tile_bytes.eq(kc + g.cols * g.record_beats * W),
            words.eq((op.k + L - 1) >> log_l),
        ]

        last_tile = Signal(16)
        m.d.sync += last_tile.eq(tiles - 1)
        busy = Signal()
        go = s3 & ~op_fault
        with m.If(s3 & op_fault):
            self.finish(m, fault=True)
        with m.If(go):
            m.d.sync += busy.eq(1)

        # ---- the weight stream's length: one column tile per cycle ----------------------------------
        wl_rem = Signal(signed(18))
        wl_len = Signal(cfg.axi.length_bits + 18)
        wl_done = Signal()
        with m.If(go):
            m.d.sync += [wl_rem.eq(op.m), wl_len.eq(0), wl_done.eq(0)]
        with m.Elif(busy & ~wl_done):
            with m.If(wl_rem > 0):
                m.d.sync += [wl_len.eq(wl_len + tile_bytes), wl_rem.eq(wl_rem - g.cols)]
            with m.Else():
                m.d.sync += wl_done.eq(1)

        # ---- DRAM commands: the record, the input (PATCH_EMBED), the weights once the record is good ---
        cmd = self.dram_cmd
        cmd_stage = Signal(2)             # 0 record, 1 input, 2 waiting for the verdict, 3 weights issued
        verdict_ok = Signal()
        verdict_bad = Signal()
        with m.If(go):
            m.d.sync += [cmd.valid.eq(1), cmd.payload.addr.eq(addr_r), cmd.payload.length.eq(RECORD_BYTES),
                         cmd_stage.eq(0)]
        with m.Elif(cmd.valid & cmd.ready):
            with m.If((cmd_stage == 0) & is_pe):
                m.d.sync += [cmd.payload.addr.eq(op.input_base), cmd.payload.length.eq(env.patches * pd),
                             cmd_stage.eq(1)]
            with m.Elif(cmd_stage != 3):
                m.d.sync += [cmd.valid.eq(0), cmd_stage.eq(2)]
            with m.Else():
                m.d.sync += cmd.valid.eq(0)
        with m.Elif(busy & (cmd_stage == 2) & verdict_ok):
            m.d.sync += [cmd.valid.eq(1), cmd.payload.addr.eq(addr_w), cmd.payload.length.eq(wl_len),
                         cmd_stage.eq(3)]

        # ---- DRAM data: the record's words, the input's, then the weights (in command order) ----------
        dd = self.dram_data
        rec_left = Signal(range(rec_words + 1))
        in_left = Signal(range(input_words + 1))
        # the phase as two registers that follow the counts (rec_left != 0; in_left != 0 after the record): the
        # DRAM word's routing to the record, the transposer or the weights starts at flip-flops
        in_record, in_input = Signal(), Signal()
        tr_free = Signal()                # the transposer's write half is free
        m.d.comb += [dd.ready.eq(in_record | (in_input & tr_free) | (~in_record & ~in_input & gemm.weights.ready)),
                     gemm.weights.valid.eq(dd.valid & ~in_record & ~in_input),
                     gemm.weights.payload.eq(dd.payload.data)]
        m.submodules.record = record = RecordFields(config=cfg, fields=_RECORD_FIELDS, length=RECORD_BYTES)
        m.d.comb += [record.start.eq(go), record.i_word.valid.eq(dd.valid & in_record),
                     record.i_word.payload.eq(dd.payload)]
        with m.If(go):
            m.d.sync += [rec_left.eq(rec_words), in_left.eq(Mux(is_pe, input_words, 0)), in_record.eq(rec_words != 0),
                         in_input.eq(0)]
        with m.Elif(dd.valid & in_record):
            m.d.sync += rec_left.eq(rec_left - 1)
            with m.If(rec_left == 1):
                m.d.sync += [in_record.eq(0), in_input.eq(in_left != 0)]
        rec, rec_in = record.fields, record.done   # rec_in: the record's last word arrived (a pulse)

        out_bits = Signal(5)
        rec_bad = Signal()
        rec_checked = Signal()
        # each check is registered with the record, their OR one cycle later: rec_bad is then ready in the
        # cycle rec_seen rises, with no compare feeding another compare's OR between two registers
        rec_checks = Signal(5)
        m.d.sync += [rec_checked.eq(rec_in), rec_bad.eq(rec_checks.any())]
        with m.If(rec_in):
            ob = rec.out_bits
            m.d.sync += [
                out_bits.eq(ob[:5]),
                rec_checks.eq(Cat(rec.header[:32] != Tag.LINEAR, rec.header[32:] != exp_len,
                                  (rec.m != op.m) | (rec.k != op.k),
                                  (rec.in_bits != 8) | (rec.w_bits != 8) | (rec.acc_bits != ACC_BITS),
                                  (ob < 2) | (ob > dst_bits) | (is_gemm & (ob != op.arg)))),
            ]
        rec_seen = Signal()
        with m.If(go):
            m.d.sync += [rec_seen.eq(0), verdict_ok.eq(0), verdict_bad.eq(0)]
        with m.Elif(rec_checked):
            m.d.sync += rec_seen.eq(1)
        with m.If(busy & rec_seen & wl_done & ~verdict_ok & ~verdict_bad):
            # the length sum ends within m / cols + 2 cycles of go, long before the record is in
            m.d.sync += [verdict_ok.eq(~rec_bad & (wl_len < 1 << cfg.axi.length_bits)),
                         verdict_bad.eq(rec_bad | (wl_len >= 1 << cfg.axi.length_bits))]
        hi = Signal(signed(OUT_BITS + 1))
        lo = Signal(signed(OUT_BITS + 1))
        with m.Switch(out_bits):
            for bits in range(2, OUT_BITS + 1):
                with m.Case(bits):
                    m.d.sync += [hi.eq((1 << (bits - 1)) - 1), lo.eq(-(1 << (bits - 1)))]

        # ---- PATCH_EMBED's transposer: banks rows x two halves of one token tile's patches ------------
        tr_full = Signal(2)
        tw_j = Signal(range(pdw))         # the write position: word in the patch, row, half
        tw_r = Signal(range(max(2, R)))
        tw_h = Signal()
        tr_q = []
        tr_rd_addr = Signal(range(2 * pdw))
        tr_wr_addr = Signal(range(2 * pdw))
        m.d.comb += [tr_free.eq(~tr_full.bit_select(tw_h, 1)), tr_wr_addr.eq(Mux(tw_h, pdw, 0) + tw_j)]
        tr_write = dd.valid & in_input & tr_free
        for r in range(R):
            mem = memory.Memory(shape=unsigned(8 * W), depth=2 * pdw, init=[])
            m.submodules[f"transposer{r}"] = mem
            wp, rp = mem.write_port(), mem.read_port(transparent_for=())
            m.d.comb += [wp.en.eq(tr_write & (tw_r == r)), wp.addr.eq(tr_wr_addr), wp.data.eq(dd.payload.data),
                         rp.addr.eq(tr_rd_addr)]
            # registered until the buffer read port's data of the same request arrives
            q = rp.data
            for d in range(READ_LATENCY - 1):
                q_next = Signal(unsigned(8 * W), name=f"tr_q{r}_{d}")
                m.d.sync += q_next.eq(q)
                q = q_next
            tr_q.append(q)
        tr_set = Signal(2)
        tr_clear = Signal(2)
        m.d.sync += tr_full.eq((tr_full | tr_set) & ~tr_clear)
        with m.If(go):
            # token 0 is the class slot: the patches start at row 1 (at tile 1 when a tile is one row)
            m.d.sync += [tw_j.eq(0), tw_r.eq(1 % R), tw_h.eq(int(R == 1)), tr_full.eq(int(R == 1))]
        with m.Elif(tr_write):
            m.d.sync += [tw_j.eq(tw_j + 1), in_left.eq(in_left - 1)]
            with m.If(in_left == 1):
                m.d.sync += in_input.eq(0)
            with m.If(tw_j == pdw - 1):
                m.d.sync += [tw_j.eq(0), tw_r.eq(tw_r + 1)]
                with m.If((tw_r == R - 1) | (in_left == 1)):
                    m.d.sync += [tw_r.eq(0), tw_h.eq(~tw_h)]
                    m.d.comb += tr_set.eq(Mux(tw_h, 2, 1))

        # ---- act path, producer: reads in the consumer's order, while fewer than ``depth`` are in flight
        outstanding = Signal(range(depth + 1))
        pr_active = Signal()
        pr_o = Signal(16)                 # outer: GEMM the word, PATCH_EMBED the token tile
        pr_i = Signal(16)                 # inner: GEMM the read within the word, PATCH_EMBED the word of a patch
        pr_t = Signal(rb)                 # GEMM: the buffer tile read
        pr_h = Signal()                   # PATCH_EMBED: the transposer half read
        outer_m1 = Signal(16)
        inner_m1 = Signal(16)
        m.d.sync += [outer_m1.eq(Mux(is_pe, pe_tiles - 1, words - 1)),
                     inner_m1.eq(Mux(is_pe, pdw - 1, tiles + straddle - 1))]
        issue = Signal()
        m.d.comb += issue.eq(pr_active & (outstanding < depth) & (~is_pe | tr_full.bit_select(pr_h, 1)))
        m.d.comb += [self.rd.en.eq(issue & ~is_pe), self.rd.buffer.eq(op.src), self.rd.tile.eq(pr_t),
                     self.rd.word.eq(pr_o), tr_rd_addr.eq(Mux(pr_h, pdw, 0) + pr_i)]
        with m.If(go):
            m.d.sync += [pr_active.eq(1), pr_o.eq(0), pr_i.eq(0), pr_t.eq(t0), pr_h.eq(0)]
        with m.Elif(issue):
            m.d.sync += pr_i.eq(pr_i + 1)
            with m.If(pr_t != t_last):   # a read past the last row's tile reads that tile again (don't-cares)
                m.d.sync += pr_t.eq(pr_t + 1)
            with m.If(pr_i == inner_m1):
                m.d.sync += [pr_i.eq(0), pr_t.eq(t0), pr_o.eq(pr_o + 1), pr_h.eq(pr_h ^ is_pe)]
                with m.If(is_pe):
                    m.d.comb += tr_clear.eq(Mux(pr_h, 2, 1))
                with m.If(pr_o == outer_m1):
                    m.d.sync += pr_active.eq(0)

        entry = data.ArrayLayout(data.ArrayLayout(signed(8), E), R)
        arrived = Signal(entry)
        arrived_valid = Signal()
        pipe = [Signal(2, name=f"rd_tag{d}") for d in range(READ_LATENCY)]  # (valid, from the transposer)
        m.d.sync += pipe[0].eq(Cat(issue, is_pe))
        for d in range(1, READ_LATENCY):
            m.d.sync += pipe[d].eq(pipe[d - 1])
        m.d.comb += arrived_valid.eq(pipe[-1][0])
        for r in range(R):
            for e in range(E):
                buf_v = self.rd.data[r][e][:8] if e < L else 0
                tr_v = tr_q[r][8 * e:8 * e + 8] if e < W else 0
                m.d.comb += arrived[r][e].eq(Mux(pipe[-1][1], tr_v, buf_v))
        # rotate by start % banks: lane r takes bank (r + rot) % banks, one 2:1 stage per bit of rot
        stage_v, stage_d = arrived_valid, arrived
        for bit in range(log_r):
            nv, nd = Signal(name=f"rot{bit}_valid"), Signal(entry, name=f"rot{bit}")
            m.d.sync += nv.eq(stage_v)
            for r in range(R):
                m.d.sync += nd[r].eq(Mux(rot[bit], stage_d[(r + (1 << bit)) % R], stage_d[r]))
            stage_v, stage_d = nv, nd
        m.submodules.act_fifo = q = fifo.SyncFIFOBuffered(width=entry.size, depth=depth)
        m.d.comb += [q.w_en.eq(stage_v), q.w_data.eq(stage_d)]
        head = entry(q.r_data)

        # ---- act path, consumer: combine, then a shift register hands out one act beat per cycle -------
        act = gemm.act
        prev = Signal(entry)
        from_cur = Signal(R)             # lane r of a token tile from the newer of two reads
        m.d.sync += from_cur.eq(Cat((r + rot >= R) | ~straddle for r in range(R)))
        c_o = Signal(16)
        c_i = Signal(16)
        kk_c = Signal(16)                 # the first feature of the next entry
        tile_c = Signal(rb)               # its token tile
        k_left = Signal(signed(18))       # GEMM: features from the current word on
        em = Signal(entry)
        em_left = Signal(range(E + 1))
        em_kk = Signal(16)
        em_tile = Signal(rb)
        consumed = Signal()
        fed = Signal()                    # every act beat taken
        c_zero = Signal()                 # ``c_i == 0``, kept as a register: ``pop`` enables every ``em`` bit
        first = ~is_pe & straddle & c_zero
        handshake = act.valid & act.ready
        em_free = (em_left == 0) | ((em_left == 1) & act.ready)
        pop = q.r_rdy & (first | em_free)
        m.d.comb += q.r_en.eq(pop)
        with m.If(issue & ~pop):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(~issue & pop):
            m.d.sync += outstanding.eq(outstanding - 1)
        m.d.comb += [act.valid.eq(em_left != 0), act.payload.tile.eq(em_tile), act.payload.k.eq(em_kk)]
        for r in range(R):
            m.d.comb += act.payload.data[r].eq(em[r][0])
        with m.If(handshake):
            m.d.sync += [em_left.eq(em_left - 1), em_kk.eq(em_kk + 1)]
            for r in range(R):
                for e in range(E - 1):
                    m.d.sync += em[r][e].eq(em[r][e + 1])
            with m.If(consumed & (em_left == 1)):
                m.d.sync += fed.eq(1)
        with m.If(go):
            m.d.sync += [c_o.eq(0), c_i.eq(0), c_zero.eq(1), kk_c.eq(0), tile_c.eq(0), k_left.eq(op.k),
                         consumed.eq(0), fed.eq(0), em_left.eq(0)]
        with m.Elif(pop):
            m.d.sync += [prev.eq(head), c_i.eq(c_i + 1), c_zero.eq(0)]
            with m.If(~first):
                zero_slot = is_pe & (tile_c == 0)  # PATCH_EMBED's token 0: zero activations
                for r in range(R):
                    sel = Mux(from_cur[r], head[r], prev[r])
                    m.d.sync += em[r].eq(Mux(zero_slot, 0, sel) if r == 0 else sel)
                m.d.sync += [em_left.eq(Mux(is_pe, W, Mux(k_left < L, k_left, L))), em_kk.eq(kk_c),
                             em_tile.eq(tile_c)]
                with m.If(is_pe):
                    m.d.sync += kk_c.eq(kk_c + W)
                with m.Else():
                    m.d.sync += tile_c.eq(tile_c + 1)
            with m.If(c_i == inner_m1):
                m.d.sync += [c_i.eq(0), c_zero.eq(1), c_o.eq(c_o + 1)]
                with m.If(is_pe):
                    m.d.sync += [kk_c.eq(0), tile_c.eq(tile_c + 1)]
                with m.Else():
                    m.d.sync += [tile_c.eq(0), kk_c.eq(kk_c + L), k_left.eq(k_left - L)]
                with m.If(c_o == outer_m1):
                    m.d.sync += consumed.eq(1)

        # ---- the job (after the last act beat, once the record is good) --------------------------------
        job = gemm.job
        job_sent = Signal()
        with m.If(go):
            m.d.sync += job_sent.eq(0)
        m.d.comb += [job.valid.eq(busy & fed & verdict_ok & ~job_sent), job.payload.n.eq(n_g),
                     job.payload.k.eq(op.k), job.payload.m.eq(op.m), job.payload.out_bits.eq(OUT_BITS)]
        # the engine fits into 16 bits; the local stage below fits into the op's own width (saturating twice is
        # saturating once, and it keeps the engine's epilogue the same for every op)
        with m.If(job.valid & job.ready):
            m.d.sync += job_sent.eq(1)
        with m.If(busy & fed & verdict_bad):
            m.d.sync += busy.eq(0)
            self.finish(m, fault=True)

        # ---- outputs: saturate (registered), write (one per beat) --------------------------------------
        m.d.comb += gemm.o_stream.ready.eq(1)
        # the engine's output beat registered first: it leaves its FIFO's block RAM (a 5-6 ns clock-to-out on
        # ECP5), and the clamps' comparisons follow
        o = SimpleNamespace(valid=Signal(name="o_valid"), payload=Signal(gemm.o_stream.payload.shape(), name="o_beat"))
        m.d.sync += [o.valid.eq(gemm.o_stream.valid), o.payload.eq(gemm.o_stream.payload)]
        q1 = Signal(data.StructLayout({"valid": 1, "last": 1, "tile": rb, "word": cfg.word_bits, "lane": L,
                                       "rows": R, "zero0": 1}))
        y = Signal(data.ArrayLayout(signed(OUT_BITS + 1), R))
        clipped = Signal(R)
        tile_o = o.payload.tile
        m.d.sync += [q1.valid.eq(o.valid), q1.last.eq(o.payload.last), q1.tile.eq(tile_o),
                     q1.word.eq(o.payload.channel >> log_l),
                     q1.lane.eq(1 << (o.payload.channel[:log_l] if log_l else 0)),
                     q1.rows.eq(Mux(tile_o == last_tile, last_lanes, (1 << R) - 1)),
                     q1.zero0.eq(is_pe & (tile_o == 0))]
        for r in range(R):
            v = o.payload.data[r]
            counted = o.valid & ~(is_pe & (tile_o == 0)) if r == 0 else o.valid  # not the class slot's zeros
            m.d.sync += [y[r].eq(Mux(v > hi, hi, Mux(v < lo, lo, v))), clipped[r].eq(counted & ((v > hi) | (v < lo)))]
        m.d.comb += [self.wr.en.eq(q1.valid), self.wr.buffer.eq(op.dst), self.wr.tile.eq(q1.tile),
                     self.wr.word.eq(q1.word)]
        for r in range(R):
            for i in range(L):
                m.d.comb += [self.wr.data[r][i].eq(Mux(q1.zero0, 0, y[r]) if r == 0 else y[r]),
                             self.wr.mask[r][i].eq(q1.rows[r] & q1.lane[i])]
        with m.If(q1.valid & q1.last):
            m.d.sync += busy.eq(0)
            self.finish(m, rows=n_g)

        # ---- overflows (cumulative, saturating): the engine's accumulator saturations, and the outputs that
        # did not fit the op's width: the local stage's clamps below 16 bits, the engine's own at 16 bits (its
        # counter's increments while such an op runs; below 16 bits they are clamped again and counted here)
        n_clip = Signal(range(R + 1))
        local = Signal(16)
        m.d.sync += n_clip.eq(sum(clipped[r] for r in range(R)))
        out_seen = Signal(16)
        out_step = Signal(16)
        m.d.sync += [out_seen.eq(gemm.out_overflows), out_step.eq(gemm.out_overflows - out_seen)]
        local_sum = Signal(18)
        m.d.comb += local_sum.eq(local + n_clip + Mux(out_bits == OUT_BITS, out_step, 0))
        m.d.sync += local.eq(Mux(local_sum[16:].any(), 0xFFFF, local_sum[:16]))
        total = Signal(17)
        m.d.sync += total.eq(gemm.acc_overflows + local)
        m.d.comb += self.overflows.eq(Mux(total[16], 0xFFFF, total[:16]))
        return m


def cycles(cfg: AccelConfig, opcode, k: int, m: int, *, n: int = 0, start: int = 0, dram_latency: int = 2) -> int:
    """Cycles of one well-formed op, from the cycle ``start`` is raised to the cycle ``done`` is (as
    :func:`tokensift.sim.accel_ops.run_op` counts them), with the DRAM of that harness at a fixed latency and
    no gaps: it takes a command (a valid/ready handshake) once the previous one's words are out, offers its
    first word ``dram_latency + 1`` cycles after the handshake's cycle (``dram_latency`` at least 1), then one
    word per cycle while the engine takes them.

    ``n`` and ``start`` are the source rows (``GEMM``; ``PATCH_EMBED`` always runs ``patches + 1`` tokens
    from the input region). The terms:

    - the activations: one beat per cycle from ``READ_LATENCY + 7 + log2(banks)`` on (a ``start`` off a tile
      boundary adds one read per word: one cycle, and one per word when ``lanes`` is 1), ``ceil(n / banks) x
      k`` beats,
      replayed entry by entry (:func:`_act_feed`); ``PATCH_EMBED``'s wait for the input region's words
      (**DRAM latency**: two commands before its first word);
    - the job beat after the last act beat, or after the record's verdict if that is later (**DRAM
      latency**: the record is in ``dram_latency + 64 / data_bytes + 5`` cycles after ``start``; the weight
      stream's length, summed one column tile per cycle, is ready ``ceil(m / cols) + 5`` cycles after it);
    - the GEMM engine on that job (:func:`tokensift.hw.gemm.cycles.schedule`), its weights from the DRAM
      at one word per cycle, arriving ``dram_latency`` cycles after their command (issued after the record's
      verdict, and after the input region for ``PATCH_EMBED``): **DRAM latency** only where the weights come
      later than the job;
    - three cycles from the engine's last output beat to ``done`` (the beat's, the saturation's and the write's
      registers).
    """
    check_config(cfg, "cfg")
    opcode = Opcode(opcode)
    if opcode not in (Opcode.GEMM, Opcode.PATCH_EMBED):
        raise ValueError(f"the GEMM op engine runs GEMM and PATCH_EMBED, not {opcode.name}")
    env = cfg.envelope
    g = gemm_config(cfg)
    lat = check_int("dram_latency", dram_latency, low=1, numpy=False)
    check_int("k", k, low=1, high=g.max_in, numpy=False)
    check_int("m", m, low=1, high=g.max_out, numpy=False)
    if opcode is Opcode.PATCH_EMBED:
        n, start = env.patches + 1, 0
    check_int("n", n, low=1, high=env.max_tokens, numpy=False)
    check_int("start", start, low=0, high=env.max_tokens - n, numpy=False)
    W = cfg.axi.data_bytes
    rec_words = RECORD_BYTES // W
    col_tiles = -(-m // g.cols)
    # the record's verdict: its last word, then the registered checks; the weight stream's length sum
    verdict = max(lat + rec_words + 7, col_tiles + 5) + 1
    act_last, input_last = _act_feed(cfg, opcode, k, n, start, first_input=2 * lat + rec_words + 6)
    job = max(act_last + 1, verdict)
    weights = max(verdict + 1, input_last + 1) + lat + 1
    (timing,) = gemm_cycles.schedule(g, [(n, k, m, job)], weight_bytes_per_cycle=W,
                                     weight_latency=max(0, weights - job))
    return timing.last_out + 3


def _act_feed(cfg: AccelConfig, opcode: Opcode, k: int, n: int, start: int, *, first_input: int):
    """``(last act beat, last input word)``: the act path replayed entry by entry (an entry is one buffer or
    transposer read: ``lanes`` or ``data_bytes`` beats, none for the read that only completes the first
    token tile of a word when ``start`` is off a tile boundary). Entry ``j`` is read once fewer than
    ``depth`` entries are in flight, reaches the FIFO's head ``READ_LATENCY + 2 + log2(banks)`` cycles later, is
    taken when the shift register frees and gives its first beat the cycle after. ``PATCH_EMBED``'s reads also wait for
    their token tile's rows in the transposer, whose words arrive one per cycle from ``first_input`` on
    while the tile two back has been read."""
    R, L, W = cfg.banks, cfg.lanes, cfg.axi.data_bytes
    log_r = ceil_log2(R)
    depth = _depth(cfg)
    tiles = -(-n // R)
    if opcode is Opcode.PATCH_EMBED:
        pdw = cfg.envelope.patch_dim // W
        rows = [min(R, n - t * R) - (t == 0) for t in range(tiles)]
        groups = [(t, [W] * pdw) for t in range(tiles)]
    else:
        straddle = start % R != 0
        words = -(-k // L)
        groups = [(None, ([0] if straddle else []) + [min(L, k - w * L)] * tiles) for w in range(words)]
    issue, pop = [], []
    last_issue = {}               # PATCH_EMBED: token tile -> its last read
    next_input = first_input      # the next input word's earliest cycle
    input_last = -1
    em_end = 0                    # the cycle after the shift register's last beat (it is free from em_end - 1)
    last_beat = 0
    for tile, beats in groups:
        ready = 4
        if tile is not None and rows[tile]:
            begin = max(next_input, last_issue[tile - 2] + 1 if tile >= 2 else 0)
            input_last = begin + rows[tile] * pdw - 1
            next_input = input_last + 1
            ready = input_last + 1
        for count in beats:
            j = len(issue)
            t = max(ready, issue[-1] + 1 if issue else 0, pop[j - depth] + 1 if j >= depth else 0)
            issue.append(t)
            head = t + READ_LATENCY + 2 + log_r
            if count == 0:        # completes the next token tile: taken as soon as it is at the head
                pop.append(max(head, pop[-1] + 1 if pop else 0))
                continue
            taken = max(head, pop[-1] + 1 if pop else 0, em_end - 1)
            pop.append(taken)
            em_end = taken + 1 + count
            last_beat = em_end - 1
        if tile is not None:
            last_issue[tile] = issue[-1]
    return last_beat, input_last
