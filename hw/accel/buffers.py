"""The token buffers: one memory per buffer and bank, a read port for every buffer, a second read port for
the buffers a residual add reads as its second operand, one write port (see :mod:`tokensift.hw.accel.config`
for the addressing and :mod:`tokensift.hw.accel.ports` for the ports)."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In

from tokensift.hw.accel.config import AccelConfig
from tokensift.hw.accel.ports import read_port_signature, write_port_signature
from tokensift.hw.common.mac_array import mul_const
from tokensift.quant.accel.isa import Buffer

__all__ = ["TokenBuffers", "SECOND_READ"]

#: buffers the second read port reaches (the residual add's second operand); the others have one read port,
#: so each (buffer, bank) memory is one simple dual-port block RAM
SECOND_READ = (Buffer.T,)


class TokenBuffers(wiring.Component):
    """``rd``, ``rd2`` (only :data:`SECOND_READ` buffers) and ``wr`` ports over every buffer of ``config``."""

    def __init__(self, *, config: AccelConfig):
        if not isinstance(config, AccelConfig):
            raise TypeError(f"config must be an AccelConfig, not {type(config).__name__}")
        self._cfg = config
        #: ``(buffer, bank) -> Memory`` (testbenches preload and read them directly)
        self.memories = {(b, bank): memory.Memory(shape=config.geometry(b).bits * config.lanes,
                                                  depth=config.geometry(b).depth, init=[])
                         for b in Buffer for bank in range(config.banks)}
        super().__init__({
            "rd": In(read_port_signature(config)),
            "rd2": In(read_port_signature(config)),
            "wr": In(write_port_signature(config)),
        })

    @property
    def config(self) -> AccelConfig:
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        sel = {"rd": Signal(4, name="rd_sel"), "rd2": Signal(4, name="rd2_sel")}
        for name in sel:  # the buffer of the data arriving next cycle (the memories' read is registered)
            m.d.sync += sel[name].eq(getattr(self, name).buffer)
        for b in Buffer:
            g = cfg.geometry(b)
            ports = ["rd"] + (["rd2"] if b in SECOND_READ else [])
            for bank in range(cfg.banks):
                mem = self.memories[b, bank]
                m.submodules[f"{b.name.lower()}_bank{bank}"] = mem
                w = mem.write_port(granularity=g.bits)
                # the row's word address as shifts and adds: a product by a constant that is not a power of
                # two would take a DSP slice (or, merged by Yosys's `share` with another, an unpredictable one)
                addr = mul_const(self.wr.tile, g.words) + self.wr.word
                m.d.comb += [w.addr.eq(addr), w.data.eq(Cat(*(self.wr.data[bank][i][:g.bits] for i in range(cfg.lanes))))]
                for i in range(cfg.lanes):
                    m.d.comb += w.en[i].eq(self.wr.en & (self.wr.buffer == b) & self.wr.mask[bank][i])
                for name in ports:
                    port = getattr(self, name)
                    r = mem.read_port(transparent_for=())
                    m.d.comb += [r.addr.eq(mul_const(port.tile, g.words) + port.word), r.en.eq(port.en)]
                    for i in range(cfg.lanes):
                        raw = r.data[i * g.bits:(i + 1) * g.bits]
                        value = raw.as_signed() if g.signed else raw
                        with m.If(sel[name] == b):
                            m.d.sync += port.data[bank][i].eq(value)
        return m
