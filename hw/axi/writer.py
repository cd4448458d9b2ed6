"""The AXI4 master write DMA: commands (byte address, byte length) and a stream of bus words in, INCR write
bursts out, one ``o_done`` per command after its last write response.

``i_cmd``: ``addr`` (aligned to the bus word) and ``length`` (bytes, at least 1). ``i_data``: ``data``, one bus
word (byte 0 in bits 7..0); a command takes ``ceil(length / data_bytes)`` words, and the last one's lanes past
the length are not written (WSTRB). ``o_done``: ``error``, some burst of the command got BRESP SLVERR or
DECERR. ``m_axi``: AW, W and B of an AXI4 master. ``error_resp`` / ``error_cmd`` (sticky until
``clear_errors``): a BRESP was not OKAY / a command was rejected (:mod:`tokensift.hw.axi.burst`: no data is
taken for it and no ``o_done`` comes). ``busy``: a command, a burst or a response is in flight.

AW is registered and loaded from the planner; W passes ``i_data`` through (``wvalid = i_data.valid``,
``i_data.ready = wready``, only while a burst announced on AW is open), so data is never buffered twice.
At most ``max_outstanding`` bursts await their response.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tokensift.hw.axi.burst import BurstPlanner, command_layout
from tokensift.hw.axi.bus import Burst, axi_write_signature
from tokensift.hw.axi.config import AxiDmaConfig
from tokensift.hw.axi.queue import SmallQueue

__all__ = ["AxiWriter", "data_layout", "done_layout"]


def data_layout(cfg: AxiDmaConfig) -> data.StructLayout:
    return data.StructLayout({"data": cfg.data_bits})


def done_layout() -> data.StructLayout:
    return data.StructLayout({"error": 1})


class AxiWriter(wiring.Component):
    """See the module docstring."""

    def __init__(self, *, config: AxiDmaConfig):
        if not isinstance(config, AxiDmaConfig):
            raise TypeError(f"config must be an AxiDmaConfig, not {type(config).__name__}")
        self._cfg = config
        super().__init__({
            "i_cmd": In(stream.Signature(command_layout(config))),
            "i_data": In(stream.Signature(data_layout(config))),
            "o_done": Out(stream.Signature(done_layout())),
            "m_axi": Out(axi_write_signature(addr_width=config.addr_width, data_bytes=config.data_bytes,
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
        # ``single``: the burst is one beat (its first beat is its last), decided as it is queued
        w_layout = data.StructLayout({"len": 8, "single": 1, "last": 1, "keep": c.data_bytes})
        m.submodules.w_open = w_open = SmallQueue(layout=w_layout, depth=c.max_outstanding)
        m.submodules.b_wait = b_wait = SmallQueue(layout=data.StructLayout({"last": 1}), depth=c.max_outstanding)
        wiring.connect(m, wiring.flipped(self.i_cmd), planner.i_cmd)

        # AW: registered, loaded when free and both the W and the B queue have room
        m.d.comb += [axi.awid.eq(0), axi.awsize.eq(c.size_code), axi.awburst.eq(Burst.INCR), axi.awprot.eq(0),
                     axi.awcache.eq(0b0011)]
        aw_free = ~axi.awvalid | axi.awready
        burst = planner.o_burst.payload
        take = planner.o_burst.valid & aw_free & w_open.i_stream.ready & b_wait.i_stream.ready
        m.d.comb += [planner.o_burst.ready.eq(take), w_open.i_stream.valid.eq(take), b_wait.i_stream.valid.eq(take),
                     w_open.i_stream.payload.len.eq(burst.len), w_open.i_stream.payload.single.eq(burst.len == 0),
                     w_open.i_stream.payload.last.eq(burst.last),
                     w_open.i_stream.payload.keep.eq(burst.keep), b_wait.i_stream.payload.last.eq(burst.last)]
        with m.If(take):
            m.d.sync += [axi.awvalid.eq(1), axi.awaddr.eq(burst.addr), axi.awlen.eq(burst.len)]
        with m.Elif(axi.awready):
            m.d.sync += axi.awvalid.eq(0)

        # W: i_data passed through while a burst is open
        head = w_open.o_stream
        # ``wlast`` is one multiplexer over registers, not a compare: it decides the queue's pop, and the
        # compare of the beat count with the burst length was the whole accelerator's worst path. ``first``:
        # the next beat is a burst's first; ``later_last``: the next beat, not a first, is the burst's last.
        count = Signal(8)
        first = Signal(init=1)
        later_last = Signal()
        wlast = Signal()
        m.d.comb += [wlast.eq(Mux(first, head.payload.single, later_last)),
                     axi.wvalid.eq(self.i_data.valid & head.valid),
                     self.i_data.ready.eq(axi.wready & head.valid),
                     axi.wdata.eq(self.i_data.payload.data), axi.wlast.eq(wlast),
                     axi.wstrb.eq(Mux(wlast & head.payload.last, head.payload.keep, (1 << c.data_bytes) - 1))]
        beat = axi.wvalid & axi.wready
        with m.If(beat):
            with m.If(wlast):
                m.d.sync += [count.eq(0), first.eq(1)]
            with m.Else():
                m.d.sync += [count.eq(count + 1), first.eq(0), later_last.eq(count + 1 == head.payload.len)]
        m.d.comb += head.ready.eq(beat & wlast)

        # B: one response per burst; the command's last one ends it
        pending = b_wait.o_stream
        err_acc = Signal()
        bad = Signal()
        m.d.comb += [bad.eq(axi.bresp[1]), axi.bready.eq(pending.valid & (~self.o_done.valid | self.o_done.ready))]
        response = axi.bvalid & axi.bready
        m.d.comb += pending.ready.eq(response)
        with m.If(self.o_done.ready):
            m.d.sync += self.o_done.valid.eq(0)
        with m.If(response):
            with m.If(pending.payload.last):
                m.d.sync += [self.o_done.valid.eq(1), self.o_done.payload.error.eq(err_acc | bad), err_acc.eq(0)]
            with m.Else():
                m.d.sync += err_acc.eq(err_acc | bad)

        with m.If(self.clear_errors):
            m.d.sync += [self.error_resp.eq(0), self.error_cmd.eq(0)]
        with m.Else():
            with m.If(response & bad):
                m.d.sync += self.error_resp.eq(1)
            with m.If(planner.rejected):
                m.d.sync += self.error_cmd.eq(1)
        m.d.comb += self.busy.eq(~planner.idle | head.valid | pending.valid | self.o_done.valid | axi.awvalid)
        return m
