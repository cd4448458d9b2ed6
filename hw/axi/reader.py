"""The AXI4 master read DMA: commands (byte address, byte length) in, the bytes out as bus words, in order.

``i_cmd``: ``addr`` (aligned to the bus word) and ``length`` (bytes, at least 1). ``o_data``: ``data`` (one bus
word, byte 0 in bits 7..0), ``keep`` (the byte lanes that belong to the command: all but on the last word of
a length that is not a whole number of words, whose other lanes read 0), ``last`` (the command's last
word), ``error`` (this word came with RRESP SLVERR or DECERR). ``m_axi``: AR and R of an AXI4 master.
``error_resp`` (sticky: some RRESP was not OKAY) and ``error_cmd`` (sticky: a command was rejected, see
:mod:`tokensift.hw.axi.burst`; it produces no data) hold until ``clear_errors``. ``busy``: a command or a
burst is in flight.

Bursts (:mod:`tokensift.hw.axi.burst`) go out on AR as INCR of full words with ID 0, at most
``max_outstanding`` of them awaiting data; their data returns in order. R is taken into the output register
whenever it is free (``rready = ~o_data.valid | o_data.ready``), so the reader never stalls R while its
consumer keeps up.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tokensift.hw.axi.burst import BurstPlanner, command_layout
from tokensift.hw.axi.bus import Burst, axi_read_signature
from tokensift.hw.axi.config import AxiDmaConfig
from tokensift.hw.axi.queue import SmallQueue

__all__ = ["AxiReader", "word_layout"]


def word_layout(cfg: AxiDmaConfig) -> data.StructLayout:
    return data.StructLayout({"data": cfg.data_bits, "keep": cfg.data_bytes, "last": 1, "error": 1})


class AxiReader(wiring.Component):
    """See the module docstring."""

    def __init__(self, *, config: AxiDmaConfig):
        if not isinstance(config, AxiDmaConfig):
            raise TypeError(f"config must be an AxiDmaConfig, not {type(config).__name__}")
        self._cfg = config
        super().__init__({
            "i_cmd": In(stream.Signature(command_layout(config))),
            "o_data": Out(stream.Signature(word_layout(config))),
            "m_axi": Out(axi_read_signature(addr_width=config.addr_width, data_bytes=config.data_bytes,
                                             id_width=config.id_width)),
            "error_resp": Out(1),
            "error_cmd": Out(1),
            "clear_errors": In(1),
            "busy": Out(1),
        })

    @property
    def config(self) -> AxiDmaConfig:
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        c = self._cfg
        axi = self.m_axi
        m.submodules.planner = planner = BurstPlanner(config=c)
        in_flight_layout = data.StructLayout({"last": 1, "keep": c.data_bytes})
        m.submodules.in_flight = in_flight = SmallQueue(layout=in_flight_layout, depth=c.max_outstanding)
        wiring.connect(m, wiring.flipped(self.i_cmd), planner.i_cmd)

        # AR: a registered channel, loaded from the planner when free and a slot in flight is open
        m.d.comb += [axi.arid.eq(0), axi.arsize.eq(c.size_code), axi.arburst.eq(Burst.INCR), axi.arprot.eq(0),
                     axi.arcache.eq(0b0011)]  # normal, non-cacheable, bufferable: what the Zynq HP ports expect
        ar_free = ~axi.arvalid | axi.arready
        take = planner.o_burst.valid & ar_free & in_flight.i_stream.ready
        m.d.comb += [planner.o_burst.ready.eq(take), in_flight.i_stream.valid.eq(take),
                     in_flight.i_stream.payload.last.eq(planner.o_burst.payload.last),
                     in_flight.i_stream.payload.keep.eq(planner.o_burst.payload.keep)]
        with m.If(take):
            m.d.sync += [axi.arvalid.eq(1), axi.araddr.eq(planner.o_burst.payload.addr),
                         axi.arlen.eq(planner.o_burst.payload.len)]
        with m.Elif(axi.arready):
            m.d.sync += axi.arvalid.eq(0)

        # R -> the output register
        out = self.o_data
        head = in_flight.o_stream
        m.d.comb += axi.rready.eq((~out.valid | out.ready) & head.valid)
        beat = axi.rvalid & axi.rready
        final = axi.rlast & head.payload.last
        keep = Signal(c.data_bytes)
        m.d.comb += keep.eq(Mux(final, head.payload.keep, (1 << c.data_bytes) - 1))
        mask = Signal(c.data_bits)
        for b in range(c.data_bytes):
            m.d.comb += mask[8 * b:8 * b + 8].eq(keep[b].replicate(8))
        bad = axi.rresp[1]  # SLVERR or DECERR
        with m.If(beat):
            m.d.sync += [out.valid.eq(1), out.payload.data.eq(axi.rdata & mask), out.payload.keep.eq(keep),
                         out.payload.last.eq(final), out.payload.error.eq(bad)]
        with m.Elif(out.ready):
            m.d.sync += out.valid.eq(0)
        m.d.comb += head.ready.eq(beat & axi.rlast)

        with m.If(self.clear_errors):
            m.d.sync += [self.error_resp.eq(0), self.error_cmd.eq(0)]
        with m.Else():
            with m.If(beat & bad):
                m.d.sync += self.error_resp.eq(1)
            with m.If(planner.rejected):
                m.d.sync += self.error_cmd.eq(1)
        m.d.comb += self.busy.eq(~planner.idle | head.valid | out.valid | axi.arvalid)
        return m

