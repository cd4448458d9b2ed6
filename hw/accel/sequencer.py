"""The sequencer: checks the memory image's header and the registers, then walks the program from DRAM one
instruction at a time, handing each to its op engine with the run-time context (row ranges, row counts, the
protected count, base addresses), and keeps every buffer's run-time row count from the engines' answers.

Per image: ``go`` -> read the first :data:`HEADER_CHECK_BYTES` of the header at ``MEMORY_BASE`` and compare
its fixed fields with the generated design's (magic, version, the GEMM stream shape; an envelope the
design covers: :data:`ENVELOPE_RULES`); check the registers (64-byte
aligned bases, the method is the image's or dense, every stage's rule is one of the method's) -> per
instruction: read its 16 bytes at ``PROGRAM_BASE + 16 pc``, decode (a reserved bit, an unknown opcode, buffer
or row mode is a program fault), skip it when gated and ``METHOD`` is dense, otherwise start its engine and
wait for ``done`` -> ``END`` finishes the image. Any fault stops the image at once with its :class:`Fault`
code and pc; nothing waits on a bus that answered an error.

An engine of ``overlapping`` opcodes answers ``done`` before its op's last buffer writes (the attention core
computes a head while the next heads load): it holds ``drain`` high until they are written, and keeps the
buffer ports (``buffers_owner``) meanwhile. Its own next op starts at once; any other op, ``END`` and a fault
wait until ``drain`` falls (a fence), so every op still reads what the ops before it wrote.

Cycle cost per instruction (the cost model's): the fetch (one DRAM read of two bus words), decode and
dispatch (:data:`DISPATCH_CYCLES`), then the engine's own cycles.
"""

from __future__ import annotations

import struct

from amaranth.hdl import Array, Const, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tokensift.hw.accel.config import AccelConfig
from tokensift.hw.accel.ports import op_layout
from tokensift.hw.accel.regmap import Fault
from tokensift.hw.axi.burst import command_layout
from tokensift.hw.axi.reader import word_layout
from tokensift.quant.accel.image import _FIXED, _GEMM, _GEMM_AT, HEADER_BYTES, MAGIC, VERSION
from tokensift.quant.accel.isa import INSTRUCTION_BYTES, Buffer, Opcode, Rows
from tokensift.quant.accel.registers import MAX_STAGES, METHOD_RULES, METHODS, RULES
from tokensift.quant.accel.stream import GemmShape

__all__ = ["Sequencer", "registers_layout", "HEADER_CHECK_BYTES", "header_check", "ENVELOPE_RULES",
           "DISPATCH_CYCLES"]

#: the header bytes the sequencer reads and checks (magic, version, method, the envelope, the GEMM shape)
HEADER_CHECK_BYTES = 160
#: cycles from the last word of an instruction's fetch to its engine's ``start`` (decode, context, dispatch)
DISPATCH_CYCLES = 3


def registers_layout() -> data.StructLayout:
    return data.StructLayout({
        "method": 3, "density": 16, "memory_base": 32, "program_base": 32, "input_base": 32, "logits_base": 32,
        "keep": data.ArrayLayout(16, MAX_STAGES), "threshold": data.ArrayLayout(16, MAX_STAGES),
        "rule": data.ArrayLayout(2, MAX_STAGES),
    })


#: how each envelope field of an image must relate to the design's: ``eq`` (the datapath is built for exactly
#: that value) or ``le`` (buffers, units and register ranges sized for at most that many); ``depth`` is free
#: (the program's length is)
ENVELOPE_RULES = {"max_tokens": "le", "width": "le", "heads": "le", "mlp_hidden": "le", "depth": None,
                  "classes": "eq", "patch_size": "eq", "in_chans": "eq", "patches": "eq", "res_bits": "eq",
                  "prob_frac": "eq", "stages": "le", "head_dim": "eq"}


def header_check(cfg: AccelConfig) -> list[tuple[int, str, int]]:
    """``(byte offset, rule, value)`` of every 32-bit header field the sequencer checks: the magic and the
    version equal the design's; each envelope field fits the design's envelope (:data:`ENVELOPE_RULES`: one
    design runs every model whose envelope it covers, e.g. one backbone under every method); the weight
    streams are laid out for its GEMM engine (columns, beat bytes, accumulator, multiplier, shift widths)."""
    fields = []
    fixed = _FIXED.pack(MAGIC, VERSION, HEADER_BYTES, 0, 0, 0, 0.0)
    for at in (0, 4, 8):
        fields.append((at, "eq", int.from_bytes(fixed[at:at + 4], "little")))
    env = cfg.envelope.to_dict()
    if list(env) != list(ENVELOPE_RULES):
        raise ValueError("the envelope's fields changed: the sequencer's rules must follow them")
    for i, (name, value) in enumerate(env.items()):
        if ENVELOPE_RULES[name] is not None:
            fields.append((_FIXED.size + 4 * i, ENVELOPE_RULES[name], value))
    gemm = GemmShape(cols=cfg.gemm_cols, stream_bytes=cfg.axi.data_bytes,
                     multiplier_bits=cfg.gemm_config().multiplier_bits).as_tuple()
    for i, value in enumerate(gemm):
        fields.append((_GEMM_AT + 4 * i, "eq", value))
    if _GEMM.size != 4 * len(gemm) or max(at for at, _, _ in fields) + 4 > HEADER_CHECK_BYTES:
        raise ValueError("the header layout changed: the sequencer's checks must follow it")
    return fields


#: the method field of the header: byte offset
_METHOD_AT = struct.calcsize("<8sIIII")
#: the envelope's stage count: byte offset
_STAGES_AT = _FIXED.size + 4 * list(ENVELOPE_RULES).index("stages")


class Sequencer(wiring.Component):
    """See the module docstring. ``engines`` maps each opcode with an engine to that engine's index (the
    index the top level's port multiplexers use); the others are :attr:`Fault.UNSUPPORTED`."""

    def __init__(self, *, config: AccelConfig, engines: dict[Opcode, int], overlapping: tuple[Opcode, ...] = ()):
        if not isinstance(config, AccelConfig):
            raise TypeError(f"config must be an AccelConfig, not {type(config).__name__}")
        self._cfg = config
        self._engines = {Opcode(k): int(v) for k, v in engines.items()}
        unknown = [op for op in overlapping if Opcode(op) not in self._engines]
        if unknown:
            raise ValueError(f"overlapping opcodes must have engines, not {unknown}")
        self._overlapping = sorted({self._engines[Opcode(op)] for op in overlapping})
        count = max(self._engines.values(), default=0) + 1
        self._count = count
        super().__init__({
            "go": In(1),
            "regs": In(registers_layout()),
            "dram_cmd": Out(stream.Signature(command_layout(config.axi))),
            "dram_data": In(stream.Signature(word_layout(config.axi))),
            "bus_error": In(1),
            "op": Out(op_layout(config)),
            "engine": Out(range(count + 1)),   # the engine owning the read DMA and ``done``; ``count``: the sequencer
            "buffers_owner": Out(range(count + 1)),  # the engine owning the buffer ports
            "drain": In(1),
            "start": Out(count),  # one bit per engine, one cycle: the engine's start (one hot: no decoder behind it)
            "eng_done": In(1),
            "eng_rows": In(config.row_bits),
            "eng_fault": In(1),
            "eng_protected": In(config.row_bits),   # SELECT: the protected count after the stage
            "eng_stage_ran": In(1),                 # SELECT: the stage changed the tokens (else all stays)
            "busy": Out(1),
            "finished": Out(1),
            "fault": Out(4),
            "fault_pc": Out(16),
            "instructions": Out(16),
        })

    @property
    def own_port(self) -> int:
        """The ``engine`` value while the sequencer itself uses the DRAM channel."""
        return self._count

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        axi = cfg.axi
        regs = self.regs
        row_bits = cfg.row_bits
        count = Array(Signal(row_bits, name=f"count_{b.name.lower()}") for b in Buffer)
        protected = Signal(row_bits)
        pc = Signal(16)
        checks = header_check(cfg)
        word_i = Signal(range(HEADER_CHECK_BYTES // axi.data_bytes + 2))
        mismatch = Signal()
        image_method = Signal(8)
        image_stages = Signal(range(MAX_STAGES + 1))
        ins = Signal(2 * axi.data_bits)        # the instruction's 16 bytes (two 64-bit words, or one 128-bit)
        words_per_ins = max(1, INSTRUCTION_BYTES // axi.data_bytes)

        m.d.sync += [self.start.eq(0), self.finished.eq(0)]
        m.d.comb += self.dram_data.ready.eq(0)

        # the header's words are checked one cycle after they arrive, from a register: the rules' compares
        # start at flip-flops, not at the DRAM channel's skid buffer
        header_word = Signal(axi.data_bits)
        header_at = Signal.like(word_i)
        header_new = Signal()
        m.d.sync += header_new.eq(0)
        with m.If(header_new):
            with m.Switch(header_at):
                for w in range(HEADER_CHECK_BYTES // axi.data_bytes):
                    bad = 0
                    for at, rule, value in checks:
                        if at // axi.data_bytes == w:
                            field = header_word[8 * (at % axi.data_bytes):8 * (at % axi.data_bytes) + 32]
                            bad = bad | ((field != value) if rule == "eq" else (field > value))
                    with m.Case(w):
                        m.d.sync += mismatch.eq(mismatch | bad)
            for field_at, target in ((_METHOD_AT, image_method), (_STAGES_AT, image_stages)):
                with m.If(header_at == field_at // axi.data_bytes):
                    shift = 8 * (field_at % axi.data_bytes)
                    m.d.sync += target.eq(header_word[shift:shift + len(target)])

        def stop(code):
            m.d.sync += [self.fault.eq(code), self.fault_pc.eq(pc), self.engine.eq(self.own_port)]
            m.next = "DRAIN"

        w0 = ins[:32]
        opcode, dst, src, src2 = w0[:8], w0[8:12], w0[12:16], w0[16:20]
        rows_mode, gated, reserved, arg = w0[20:22], w0[22], w0[23], w0[24:32]
        known = Signal()
        m.d.comb += known.eq(0)
        for op in Opcode:
            with m.If(opcode == op):
                m.d.comb += known.eq(1)
        has_engine = Signal()
        engine_of = Signal(range(self._count + 1))
        m.d.comb += [has_engine.eq(0), engine_of.eq(self.own_port)]
        for op, idx in self._engines.items():
            with m.If(opcode == op):
                m.d.comb += [has_engine.eq(1), engine_of.eq(idx)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.go):
                    m.d.sync += [self.busy.eq(1), self.fault.eq(Fault.NONE), pc.eq(0), word_i.eq(0),
                                 mismatch.eq(0), self.engine.eq(self.own_port), self.instructions.eq(0)]
                    m.d.sync += [c.eq(0) for c in count] + [protected.eq(1)]
                    m.next = "HEADER_CMD"
            with m.State("HEADER_CMD"):
                misaligned = 0
                for base in ("memory_base", "program_base", "input_base", "logits_base"):
                    misaligned = misaligned | (getattr(regs, base)[:6] != 0)
                with m.If(misaligned):
                    stop(Fault.REGISTERS)
                with m.Else():
                    m.d.comb += [self.dram_cmd.valid.eq(1), self.dram_cmd.payload.addr.eq(regs.memory_base),
                                 self.dram_cmd.payload.length.eq(HEADER_CHECK_BYTES)]
                    with m.If(self.dram_cmd.ready):
                        m.next = "HEADER_DATA"
            with m.State("HEADER_DATA"):
                m.d.comb += self.dram_data.ready.eq(1)
                with m.If(self.dram_data.valid):
                    m.d.sync += [word_i.eq(word_i + 1), header_word.eq(self.dram_data.payload.data),
                                 header_at.eq(word_i), header_new.eq(1)]
                    with m.If(self.dram_data.payload.last):
                        m.next = "HEADER_LAST"
            with m.State("HEADER_LAST"):   # the last word's checks are registered in this cycle
                m.next = "CHECK"
            with m.State("CHECK"):
                bad_rule = 0
                for s in range(min(cfg.envelope.stages, MAX_STAGES)):  # the design's; the image may use fewer
                    for mi, method in enumerate(METHODS):
                        allowed = 0
                        for ri, rule in enumerate(RULES):
                            if rule in METHOD_RULES[method]:
                                allowed = allowed | (regs.rule[s] == ri)
                        used = (regs.method == mi) & (s < image_stages)  # the image's own stages only
                        bad_rule = bad_rule | (used & ~allowed)
                        if method not in ("dense",):
                            bad_rule = bad_rule | (used & (regs.rule[s] == RULES.index("topk")) &
                                                   (regs.keep[s] == 0))
                with m.If(self.bus_error):
                    stop(Fault.BUS)
                with m.Elif(mismatch):
                    stop(Fault.IMAGE)
                with m.Elif(((regs.method != 0) & (regs.method != image_method)) | bad_rule):
                    stop(Fault.REGISTERS)
                with m.Else():
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += [self.dram_cmd.valid.eq(1),
                             self.dram_cmd.payload.addr.eq(regs.program_base + (pc << 4)),
                             self.dram_cmd.payload.length.eq(INSTRUCTION_BYTES)]
                m.d.sync += word_i.eq(0)
                with m.If(self.bus_error):
                    stop(Fault.BUS)
                with m.Elif(self.dram_cmd.ready):
                    m.next = "FETCH_DATA"
            with m.State("FETCH_DATA"):
                m.d.comb += self.dram_data.ready.eq(1)
                with m.If(self.dram_data.valid):
                    for i in range(words_per_ins):
                        with m.If(word_i == i):
                            m.d.sync += ins[i * axi.data_bits:(i + 1) * axi.data_bits].eq(
                                self.dram_data.payload.data)
                    m.d.sync += word_i.eq(word_i + 1)
                    with m.If(self.dram_data.payload.last):
                        m.next = "DECODE"
            with m.State("DECODE"):
                bad = (reserved | ~known | (dst > max(Buffer)) | (src > max(Buffer)) | (src2 > max(Buffer)))
                with m.If(self.bus_error):
                    stop(Fault.BUS)
                with m.Elif(bad):
                    stop(Fault.PROGRAM)
                with m.Elif(opcode == Opcode.END):
                    m.d.sync += self.instructions.eq(pc + 1)
                    m.next = "DRAIN"
                with m.Elif(gated & (regs.method == 0)):
                    m.d.sync += pc.eq(pc + 1)
                    m.next = "FETCH"
                with m.Elif(~has_engine):
                    stop(Fault.UNSUPPORTED)
                with m.Else():
                    n = count[src]
                    op = self.op
                    m.d.sync += [op.opcode.eq(opcode), op.dst.eq(dst), op.src.eq(src), op.src2.eq(src2),
                                 op.rows.eq(rows_mode), op.arg.eq(arg), op.addr_a.eq(ins[32:64]),
                                 op.addr_b.eq(ins[64:96]), op.k.eq(ins[96:112]), op.m.eq(ins[112:128]),
                                 op.n2.eq(count[src2]), op.protected.eq(protected),
                                 op.memory_base.eq(regs.memory_base), op.input_base.eq(regs.input_base),
                                 op.logits_base.eq(regs.logits_base), self.engine.eq(engine_of)]
                    with m.Switch(rows_mode):
                        with m.Case(Rows.ALL):
                            m.d.sync += [op.start.eq(0), op.n.eq(n)]
                        with m.Case(Rows.CLASS):
                            m.d.sync += [op.start.eq(0), op.n.eq(n != 0)]
                        with m.Case(Rows.CANDIDATES):
                            m.d.sync += [op.start.eq(protected), op.n.eq(n - protected)]
                        with m.Case(Rows.PATCHES):
                            m.d.sync += [op.start.eq(1), op.n.eq(n - 1)]
                    m.next = "DISPATCH"
            with m.State("DISPATCH"):
                same = 0
                for idx in self._overlapping:
                    same = same | ((self.engine == idx) & (self.buffers_owner == idx))
                with m.If(~self.drain | same):  # the fence
                    m.d.sync += [self.start.eq(Const(1, len(self.start)) << self.engine),
                                 self.buffers_owner.eq(self.engine)]
                    m.next = "WAIT"
            with m.State("DRAIN"):  # the image ends once every buffer write has landed
                with m.If(~self.drain):
                    m.d.sync += [self.busy.eq(0), self.finished.eq(1)]
                    m.next = "IDLE"
            with m.State("WAIT"):
                with m.If(self.eng_done):
                    with m.If(self.eng_fault):
                        stop(Fault.OP)
                    with m.Elif(self.bus_error):
                        stop(Fault.BUS)
                    with m.Else():
                        op = self.op
                        with m.Switch(op.opcode):
                            with m.Case(Opcode.WRITE_LOGITS):
                                pass
                            with m.Case(Opcode.POS_EMBED):
                                m.d.sync += [count[op.dst].eq(self.eng_rows), protected.eq(1),
                                             count[Buffer.A].eq(0), count[Buffer.CLS].eq(0),
                                             count[Buffer.S].eq(0)]
                            with m.Case(Opcode.SELECT):
                                with m.If(self.eng_stage_ran):
                                    m.d.sync += [count[Buffer.X].eq(self.eng_rows), protected.eq(self.eng_protected),
                                                 count[Buffer.A].eq(0), count[Buffer.CLS].eq(0),
                                                 count[Buffer.S].eq(0)]
                            with m.Case(Opcode.ATTENTION):
                                m.d.sync += [count[op.dst].eq(self.eng_rows), count[Buffer.CLS].eq(self.eng_rows)]
                            with m.Default():
                                m.d.sync += count[op.dst].eq(self.eng_rows)
                        m.d.sync += [pc.eq(pc + 1), self.engine.eq(self.own_port)]
                        m.next = "FETCH"
        return m
