"""The whole-model accelerator's top level: an AXI4-Lite slave for the host (:mod:`tokensift.hw.accel.regmap`),
one AXI4 master for DRAM (a read DMA shared by the sequencer's fetches and the engines, a write DMA for the
logits), the token buffers, the op engines and the :class:`~tokensift.hw.accel.sequencer.Sequencer`.

One instruction runs at a time: the sequencer hands the shared ports (buffer read/write, the read DMA) to the
engine of the current opcode, and takes the read DMA back to fetch the next instruction. The exception is the
attention engine, whose heads overlap: it keeps the buffer ports while its cores finish the heads already
loaded, and the sequencer fences any other op behind them. The host writes
the run-time registers, writes 1 to ``start``, and waits for ``done`` (or the interrupt); the design fetches
its header, program, constants, weights and input itself and writes the logits back.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tokensift.hw.accel.buffers import TokenBuffers
from tokensift.hw.accel.config import AccelConfig
from tokensift.hw.accel.op_residual import ResidualEngine
from tokensift.hw.accel.regmap import accel_regmap
from tokensift.hw.accel.sequencer import Sequencer
from tokensift.hw.axi.burst import command_layout
from tokensift.hw.axi.bus import axi_lite_signature, axi_read_signature, axi_write_signature
from tokensift.hw.axi.reader import AxiReader, word_layout
from tokensift.hw.axi.registers import AxiLiteRegisters
from tokensift.hw.axi.writer import AxiWriter
from tokensift.hw.common.skid import RegisterSlice, SkidBuffer
from tokensift.quant.accel.isa import Opcode
from tokensift.quant.accel.registers import MAX_STAGES

__all__ = ["Accelerator", "engine_table", "axi_signature"]


def engine_table(cfg: AccelConfig) -> list[tuple[str, tuple[Opcode, ...], object]]:
    """``(name, opcodes, engine)`` of every op engine the design is generated with."""
    from tokensift.hw.accel.op_attention import AttentionOpEngine
    from tokensift.hw.accel.op_gelu import GeluEngine
    from tokensift.hw.accel.op_gemm import GemmOpEngine
    from tokensift.hw.accel.op_layernorm import LayerNormEngine
    from tokensift.hw.accel.op_logits import LogitsEngine
    from tokensift.hw.accel.op_pos_embed import PosEmbedEngine
    from tokensift.hw.accel.op_select import SelectEngine
    from tokensift.hw.accel.op_token_mean import TokenMeanEngine

    return [("gemm", (Opcode.PATCH_EMBED, Opcode.GEMM), GemmOpEngine(config=cfg)),
            ("pos_embed", (Opcode.POS_EMBED,), PosEmbedEngine(config=cfg)),
            ("layernorm", (Opcode.LAYERNORM,), LayerNormEngine(config=cfg)),
            ("token_mean", (Opcode.TOKEN_MEAN,), TokenMeanEngine(config=cfg)),
            ("attention", (Opcode.ATTENTION,), AttentionOpEngine(config=cfg)),
            ("residual", (Opcode.RESIDUAL_ADD,), ResidualEngine(config=cfg)),
            ("gelu", (Opcode.GELU,), GeluEngine(config=cfg)),
            ("select", (Opcode.SELECT,), SelectEngine(config=cfg)),
            ("logits", (Opcode.WRITE_LOGITS,), LogitsEngine(config=cfg))]


def axi_signature(cfg: AccelConfig) -> wiring.Signature:
    """The AXI4 master: the read and the write channels under one prefix."""
    a = cfg.axi
    members = dict(axi_read_signature(addr_width=a.addr_width, data_bytes=a.data_bytes, id_width=a.id_width).members)
    members.update(axi_write_signature(addr_width=a.addr_width, data_bytes=a.data_bytes,
                                       id_width=a.id_width).members)
    return wiring.Signature(members)


class Accelerator(wiring.Component):
    """Ports: ``s_axil`` (AXI4-Lite slave), ``m_axi`` (AXI4 master), ``irq``."""

    def __init__(self, *, config: AccelConfig):
        if not isinstance(config, AccelConfig):
            raise TypeError(f"config must be an AccelConfig, not {type(config).__name__}")
        self._cfg = config
        self.regmap = accel_regmap()
        self.engines = engine_table(config)
        super().__init__({
            "s_axil": In(axi_lite_signature(addr_width=self.regmap.addr_width)),
            "m_axi": Out(axi_signature(config)),
            "irq": Out(1),
        })

    @property
    def config(self) -> AccelConfig:
        return self._cfg

    @property
    def opcodes(self) -> list[Opcode]:
        """The opcodes this design has engines for."""
        return [op for _, ops, _ in self.engines for op in ops]

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        m.submodules.regs = regs = AxiLiteRegisters(regmap=self.regmap)
        m.submodules.reader = reader = AxiReader(config=cfg.axi)
        m.submodules.writer = writer = AxiWriter(config=cfg.axi)
        m.submodules.buffers = bufs = TokenBuffers(config=cfg)
        table = {op: i for i, (_, ops, _) in enumerate(self.engines) for op in ops}
        # an engine with a ``busy`` port answers ``done`` before its last writes: its ops overlap each other
        overlapping = tuple(op for _, ops, eng in self.engines if "busy" in eng.signature.members for op in ops)
        m.submodules.sequencer = seq = Sequencer(config=cfg, engines=table, overlapping=overlapping)
        engines = [eng for _, _, eng in self.engines]
        for (name, _, eng) in self.engines:
            m.submodules[f"op_{name}"] = eng

        # -- the host's registers -------------------------------------------------------------------
        wiring.connect(m, wiring.flipped(self.s_axil), regs.bus)
        f = regs.fabric
        m.d.comb += [seq.go.eq(f.start), self.irq.eq(regs.irq),
                     seq.regs.method.eq(f.method), seq.regs.density.eq(f.density),
                     seq.regs.memory_base.eq(f.memory_base), seq.regs.program_base.eq(f.program_base),
                     seq.regs.input_base.eq(f.input_base), seq.regs.logits_base.eq(f.logits_base)]
        for s in range(MAX_STAGES):
            m.d.comb += [seq.regs.keep[s].eq(getattr(f, f"stage_keep{s}")),
                         seq.regs.threshold[s].eq(getattr(f, f"stage_threshold{s}")),
                         seq.regs.rule[s].eq(getattr(f, f"stage_rule{s}"))]
        cycles = Signal(32)
        with m.If(f.start & ~seq.busy):
            m.d.sync += cycles.eq(0)
        with m.Elif(seq.busy & (cycles != 0xFFFF_FFFF)):
            m.d.sync += cycles.eq(cycles + 1)
        # the engines' counts summed as a tree with a register after every level, each adder only as wide as its
        # sum can be, and the difference registered: two adders in series between registers were the whole
        # design's worst path. The few cycles' lag ends long before the host can read the count after ``done``
        # (the last counting op ends an instruction fetch and a dispatch before it)
        overflow_total = _pipelined_sum(m, [eng.overflows for eng in engines], width=32)
        overflow_at_start = Signal(32)
        with m.If(f.start & ~seq.busy):
            m.d.sync += overflow_at_start.eq(overflow_total)
        overflows = Signal(32)
        m.d.sync += overflows.eq(overflow_total - overflow_at_start)
        m.d.comb += [f.cycles.eq(cycles), f.overflows.eq(overflows),
                     f.status.eq(seq.busy | (seq.fault << 4) | (seq.fault_pc << 16)),
                     f.done.eq(Mux(seq.finished, 1 | ((seq.fault != 0) << 1), 0))]

        # -- DRAM -----------------------------------------------------------------------------------
        for name in axi_read_signature(addr_width=cfg.axi.addr_width, data_bytes=cfg.axi.data_bytes,
                                       id_width=cfg.axi.id_width).members:
            a, b = getattr(self.m_axi, name), getattr(reader.m_axi, name)
            m.d.comb += (a.eq(b) if name in reader.m_axi.signature.members and
                         reader.m_axi.signature.members[name].flow == Out else b.eq(a))
        for name in axi_write_signature(addr_width=cfg.axi.addr_width, data_bytes=cfg.axi.data_bytes,
                                        id_width=cfg.axi.id_width).members:
            a, b = getattr(self.m_axi, name), getattr(writer.m_axi, name)
            m.d.comb += a.eq(b) if writer.m_axi.signature.members[name].flow == Out else b.eq(a)
        m.d.comb += [seq.bus_error.eq(reader.error_resp | reader.error_cmd | writer.error_resp | writer.error_cmd),
                     reader.clear_errors.eq(f.start & ~seq.busy), writer.clear_errors.eq(f.start & ~seq.busy)]

        # -- the shared ports, handed to one engine at a time ------------------------------------------
        # one parallel case over the owner (a balanced multiplexer): a chain of Ifs would put every engine's
        # multiplexer level in series on the way to the buffers and the read DMA
        cmd = reader.i_cmd
        # the read DMA's words behind a skid buffer of their own: the owner multiplexer of the consumers' readies
        # (by ``seq.engine``) would otherwise run through ``rready`` into the reader's in-flight queue
        m.submodules.dram_skid = dram_skid = SkidBuffer(layout=word_layout(cfg.axi))
        wiring.connect(m, reader.o_data, dram_skid.i)
        words = dram_skid.o
        # each DRAM consumer's words and commands behind register slices of its own, one cycle each: the ready
        # the owner multiplexer hands the reader is a register, not the end of an engine's own ready logic; the
        # words' valid an engine's state reacts to is a register, not the owner's decode (the sequencer's engine
        # register fans out to every engine: that path was the whole design's worst); and an engine's command
        # valid, combinational from its state, no longer runs through the owner multiplexer into the read DMA's
        # command register (the worst path before)
        slices = {}
        commands = {}
        for key, consumer in [("sequencer", seq), *((name, eng) for name, _, eng in self.engines)]:
            if "dram_data" in consumer.signature.members:
                m.submodules[f"dram_words_{key}"] = slices[key] = RegisterSlice(layout=word_layout(cfg.axi))
                wiring.connect(m, slices[key].o, consumer.dram_data)
                m.d.comb += slices[key].i.payload.eq(words.payload)
            if "dram_cmd" in consumer.signature.members:
                m.submodules[f"dram_cmd_{key}"] = commands[key] = RegisterSlice(layout=command_layout(cfg.axi))
                wiring.connect(m, consumer.dram_cmd, commands[key].i)
        for i, eng in enumerate(engines):
            ports = eng.signature.members
            m.d.comb += [eng.op.eq(seq.op), eng.start.eq(seq.start[i]), eng.rd.data.eq(bufs.rd.data)]
            if "regs" in ports:  # the selection engine reads the stage registers
                m.d.comb += eng.regs.eq(seq.regs)
            if "rd2" in ports:
                m.d.comb += eng.rd2.data.eq(bufs.rd2.data)
            if "dram_wdone" in ports:
                m.d.comb += eng.dram_wdone.payload.eq(writer.o_done.payload)
        m.d.comb += seq.drain.eq(Cat(*(eng.busy for eng in engines if "busy" in eng.signature.members)).any())
        with m.Switch(seq.buffers_owner):
            for i, eng in enumerate(engines):
                with m.Case(i):
                    for name in ("en", "buffer", "tile", "word"):
                        m.d.comb += getattr(bufs.rd, name).eq(getattr(eng.rd, name))
                    for name in ("en", "buffer", "tile", "word", "data", "mask"):
                        m.d.comb += getattr(bufs.wr, name).eq(getattr(eng.wr, name))
                    if "rd2" in eng.signature.members:
                        for name in ("en", "buffer", "tile", "word"):
                            m.d.comb += getattr(bufs.rd2, name).eq(getattr(eng.rd2, name))
        # ``done`` and ``fault`` pulse only in the engine the sequencer started (``start`` goes to that one alone and
        # each op pulses once), so an OR of them all is the owner's: no multiplexer by ``seq.engine`` in front of
        # the sequencer's state, whose reaction to ``done`` was the whole design's worst path; SELECT alone
        # reports its stage
        m.d.comb += [seq.eng_done.eq(Cat(eng.done for eng in engines).any()),
                     seq.eng_fault.eq(Cat(eng.fault for eng in engines).any())]
        for eng in engines:
            if "protected_out" in eng.signature.members:
                m.d.comb += [seq.eng_protected.eq(eng.protected_out), seq.eng_stage_ran.eq(eng.stage_ran)]
        with m.Switch(seq.engine):
            with m.Case(seq.own_port):
                own = commands["sequencer"].o
                m.d.comb += [cmd.valid.eq(own.valid), cmd.payload.eq(own.payload),
                             own.ready.eq(cmd.ready), slices["sequencer"].i.valid.eq(words.valid),
                             words.ready.eq(slices["sequencer"].i.ready)]
            for i, (engine_name, _, eng) in enumerate(self.engines):
                ports = eng.signature.members
                with m.Case(i):
                    m.d.comb += seq.eng_rows.eq(eng.rows)
                    if "dram_cmd" in ports:
                        own = commands[engine_name].o
                        m.d.comb += [cmd.valid.eq(own.valid), cmd.payload.eq(own.payload),
                                     own.ready.eq(cmd.ready), slices[engine_name].i.valid.eq(words.valid),
                                     words.ready.eq(slices[engine_name].i.ready)]
        # the write DMA belongs to the one engine that writes (the logits'), wired without the owner's
        # multiplexer: its valids and readies are registers or one gate from them (they leave the engine idle
        # outside its op), and the W channel's pop logic would otherwise start at the sequencer's owner register
        writers = [eng for _, _, eng in self.engines if "dram_wcmd" in eng.signature.members]
        if len(writers) != 1:
            raise RuntimeError(f"the write DMA needs exactly one engine with a write channel, not {len(writers)}")
        eng = writers[0]
        m.d.comb += [writer.i_cmd.valid.eq(eng.dram_wcmd.valid), writer.i_cmd.payload.eq(eng.dram_wcmd.payload),
                     eng.dram_wcmd.ready.eq(writer.i_cmd.ready),
                     writer.i_data.valid.eq(eng.dram_wdata.valid), writer.i_data.payload.eq(eng.dram_wdata.payload),
                     eng.dram_wdata.ready.eq(writer.i_data.ready),
                     eng.dram_wdone.valid.eq(writer.o_done.valid), writer.o_done.ready.eq(eng.dram_wdone.ready)]
        return m


def _pipelined_sum(m, values, *, width: int):
    """The sum of ``values`` (``width`` bits at most, each a count that never wraps), added pairwise with a register
    after every level; each level's adders one bit wider than their operands, up to ``width``."""
    level = 0
    while len(values) > 1:
        level += 1
        pairs = []
        for i in range(0, len(values), 2):
            if i + 1 < len(values):
                bits = min(width, max(len(values[i]), len(values[i + 1])) + 1)
                pairs.append((values[i] + values[i + 1], bits))
            else:
                pairs.append((values[i], len(values[i])))
        regs = [Signal(bits, name=f"overflow_sum{level}_{i}") for i, (_, bits) in enumerate(pairs)]
        m.d.sync += [r.eq(v) for r, (v, _) in zip(regs, pairs, strict=True)]
        values = regs
    return values[0]
