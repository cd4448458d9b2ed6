"""The token buffers: one memory per buffer and bank, a read port for every buffer, a second read port for
the buffers a residual add reads as its second operand, one write port (see :mod:`tokensift.hw.accel.config`
for the addressing and :mod:`tokensift.hw.accel.ports` for the ports)."""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In

from tokensift.hw.accel.config import ELEMENT_BITS, AccelConfig
from tokensift.hw.accel.ports import read_port_signature, write_port_signature
from tokensift.hw.common.ecp5 import dp16kd_memory, dp16kd_ranges, is_ecp5
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
        # every request is registered on entry: the engines' ports reach the buffers through the top level's
        # engine multiplexer; a second stage registers each buffer's row address (its adder) and which buffer
        # is asked, so the address wires' fan-out to every bank's block RAM (or a small buffer's read
        # multiplexer) starts at flip-flops; a write is delayed as much as a read, so the order in which they
        # reach a memory is the engines'
        req = {}
        for name in ("rd", "rd2", "wr"):
            port = getattr(self, name)
            fields = ("en", "buffer", "tile", "word") + (("data", "mask") if name == "wr" else ())
            req[name] = SimpleNamespace(**{f: Signal.like(getattr(port, f), name=f"{name}_req_{f}") for f in fields})
            m.d.sync += [getattr(req[name], f).eq(getattr(port, f)) for f in fields]
        reaches = {"rd": tuple(Buffer), "rd2": SECOND_READ, "wr": tuple(Buffer)}
        en = {name: Signal(name=f"{name}_en") for name in reaches}
        hit = {name: {b: Signal(name=f"{name}_hit_{b.name.lower()}") for b in reaches[name]} for name in reaches}
        addr = {name: {} for name in reaches}
        for name, buffers in reaches.items():
            m.d.sync += en[name].eq(req[name].en)
            for b in buffers:
                g = cfg.geometry(b)
                addr[name][b] = Signal(range(max(2, g.depth)), name=f"{name}_addr_{b.name.lower()}")
                # the row's word address as shifts and adds: a product by a constant that is not a power of
                # two would take a DSP slice (or, merged by Yosys's `share` with another, an unpredictable one)
                m.d.sync += [addr[name][b].eq(mul_const(req[name].tile, g.words) + req[name].word),
                             hit[name][b].eq(req[name].buffer == b)]
        wr_data = Signal.like(req["wr"].data, name="wr_data")
        wr_mask = Signal.like(req["wr"].mask, name="wr_mask")
        m.d.sync += [wr_data.eq(req["wr"].data), wr_mask.eq(req["wr"].mask)]
        # on ECP5 a buffer that maps onto block RAM is built of DP16KDs with the read register inside
        # (:func:`~tokensift.hw.common.ecp5.dp16kd_memory`, the same cells memory_libmap picks): the RAM's slow
        # clock-to-out then ends in the RAM, and the address ranges' multiplexer joins the select below
        ranges = {b: dp16kd_ranges(width=cfg.geometry(b).bits * cfg.lanes, depth=cfg.geometry(b).depth,
                                   granularity=cfg.geometry(b).bits) if is_ecp5(platform) else None for b in Buffer}
        # the buffer (and on ECP5 the address range) of the data in the read registers, one hot, delayed with
        # the memories' read and their data register: the data is selected by an AND-OR tree, a few LUTs deep
        # at any buffer count
        sel = {name: {} for name in ("rd", "rd2")}
        for name in sel:
            for b in reaches[name]:
                read, hot = Signal(name=f"{name}_read_{b.name.lower()}"), Signal(name=f"{name}_sel_{b.name.lower()}")
                m.d.sync += read.eq(hit[name][b])
                if ranges[b] is None or ranges[b][1] == 1:
                    m.d.sync += hot.eq(read)
                    sel[name][b, 0] = hot
                    continue
                lsb, count = ranges[b]
                for j in range(count):
                    in_range = Signal(name=f"{name}_range{j}_{b.name.lower()}")
                    m.d.sync += in_range.eq(addr[name][b][lsb:] == j)
                    hot_j = Signal(name=f"{name}_sel_{b.name.lower()}_{j}")
                    m.d.sync += hot_j.eq(read & in_range)
                    sel[name][b, j] = hot_j
        raw = {name: {} for name in sel}
        for b in Buffer:
            g = cfg.geometry(b)
            ports = [name for name in ("rd", "rd2") if b in reaches[name]]
            for bank in range(cfg.banks):
                if ranges[b] is not None:
                    self.memories[b, bank]._MustUse__silence = True  # the testbenches' memory, not built here
                    data = Cat(*(wr_data[bank][i][:g.bits] for i in range(cfg.lanes)))
                    lane_en = Cat(*(en["wr"] & hit["wr"][b] & wr_mask[bank][i] for i in range(cfg.lanes)))
                    for name in ports:
                        words = dp16kd_memory(m, f"{b.name.lower()}_bank{bank}_{name}", width=g.bits * cfg.lanes,
                                              depth=g.depth, granularity=g.bits, wr_en=lane_en,
                                              wr_addr=addr["wr"][b], wr_data=data, rd_en=en[name],
                                              rd_addr=addr[name][b])
                        for j, word in enumerate(words):
                            for i in range(cfg.lanes):
                                value = word[i * g.bits:(i + 1) * g.bits]
                                raw[name][b, j, bank, i] = value.as_signed() if g.signed else value
                    continue
                mem = self.memories[b, bank]
                m.submodules[f"{b.name.lower()}_bank{bank}"] = mem
                w = mem.write_port(granularity=g.bits)
                m.d.comb += [w.addr.eq(addr["wr"][b]),
                             w.data.eq(Cat(*(wr_data[bank][i][:g.bits] for i in range(cfg.lanes))))]
                for i in range(cfg.lanes):
                    m.d.comb += w.en[i].eq(en["wr"] & hit["wr"][b] & wr_mask[bank][i])
                for name in ports:
                    r = mem.read_port(transparent_for=())
                    m.d.comb += [r.addr.eq(addr[name][b]), r.en.eq(en[name])]
                    # a register right behind the block RAM: its clock-to-out (5 to 6 ns on ECP5 at speed 6)
                    # leaves no room for the select after it
                    q = Signal(len(r.data), name=f"{b.name.lower()}_bank{bank}_{name}_q")
                    m.d.sync += q.eq(r.data)
                    for i in range(cfg.lanes):
                        value = q[i * g.bits:(i + 1) * g.bits]
                        raw[name][b, 0, bank, i] = value.as_signed() if g.signed else value
        for name in sel:
            port = getattr(self, name)
            for bank in range(cfg.banks):
                for i in range(cfg.lanes):
                    terms = [raw[name][b, j, bank, i] & hot.replicate(ELEMENT_BITS)
                             for (b, j), hot in sel[name].items()]
                    m.d.sync += port.data[bank][i].eq(_or_tree(terms))
        return m


def _or_tree(terms: list[Value]) -> Value:
    """The OR of ``terms``, as a balanced tree."""
    while len(terms) > 1:
        terms = [terms[i] | terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]
