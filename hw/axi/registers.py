"""The AXI4-Lite register bank: the host's (Zynq/PYNQ) control and status window onto the accelerator.

``bus`` (``In(axi_lite_signature)``): 32-bit AXI4-Lite slave. ``fabric``: one port per register, named after
it: RW -> ``Out(width)`` (the value), RO -> ``In(width)`` (status, counters), W1C -> ``In(width)`` (one-cycle
set pulses from the fabric; the host reads the bits and writes 1 to clear them), W1S -> ``Out(width)``
(one-cycle pulses when the host writes 1, e.g. start). ``irq``: some irq-flagged W1C bit is set (or, with
``error_irq``, a rejected write is pending).

Responses (``docs/axi.md``): a mapped access answers OKAY; a write to an RW register whose resulting value
(after WSTRB) lies outside its valid range is not applied, answers SLVERR and is recorded in the error
register; a write to an RO register answers SLVERR (recorded); an unmapped address answers DECERR (a write
is recorded, a read returns 0). The low two address bits are ignored (word registers).

Every request gets exactly one response: AW and W are each held in a register until both are there (in any
order, or together), then the write is decoded (one cycle), applied and answered (the next); the next AW/W is
accepted once B is taken. Reads take AR, decode, then answer on R, held until taken. Decode and range checks
are registered before they steer anything, so no comparison meets the response mux in one cycle.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tokensift.hw.axi.bus import LITE_DATA_BITS, Resp, axi_lite_signature
from tokensift.hw.axi.config import Access, ErrorCode, RegisterMap

__all__ = ["AxiLiteRegisters", "fabric_signature", "WRITE_LATENCY", "READ_LATENCY"]

#: clock edges from the later of the AW and W handshakes to the one that raises B valid (decode, then apply)
WRITE_LATENCY = 2
#: clock edges from the AR handshake to the one that raises R valid (the address decode is registered first)
READ_LATENCY = 1


def fabric_signature(regmap: RegisterMap) -> wiring.Signature:
    """The register fields as seen from the bank (``Out``: to the fabric)."""
    members = {}
    for r in regmap.registers:
        members[r.name] = Out(r.width) if r.access in (Access.RW, Access.W1S) else In(r.width)
    return wiring.Signature(members)


class AxiLiteRegisters(wiring.Component):
    """See the module docstring."""

    def __init__(self, *, regmap: RegisterMap):
        if not isinstance(regmap, RegisterMap):
            raise TypeError(f"regmap must be a RegisterMap, not {type(regmap).__name__}")
        self._regmap = regmap
        super().__init__({
            "bus": In(axi_lite_signature(addr_width=regmap.addr_width)),
            "fabric": Out(fabric_signature(regmap)),
            "irq": Out(1),
        })

    @property
    def regmap(self) -> RegisterMap:
        return self._regmap

    def elaborate(self, platform):
        m = Module()
        rm = self._regmap
        bus = self.bus
        regs = rm.registers
        word_bits = rm.addr_width - 2

        def word(addr):
            return addr[2:rm.addr_width]

        # -- the registers themselves -------------------------------------------------------------
        values = {r.name: Signal(r.width, name=f"reg_{r.name}", init=r.reset) for r in regs
                  if r.access in (Access.RW, Access.W1C)}
        for r in regs:
            port = getattr(self.fabric, r.name)
            if r.access is Access.RW:
                m.d.comb += port.eq(values[r.name])
            elif r.access is Access.W1S:
                m.d.sync += port.eq(0)  # a pulse lasts one cycle
        err_flag = Signal()
        err_code = Signal(4)
        err_word = Signal(16)

        # -- write path: hold AW and W, decode, apply + answer ------------------------------------
        aw_held = Signal()
        aw_word = Signal(word_bits)
        w_held = Signal()
        w_data = Signal(LITE_DATA_BITS)
        w_strb = Signal(LITE_DATA_BITS // 8)
        decoded = Signal()  # hit/ok below are valid
        hit = {r.name: Signal(name=f"whit_{r.name}") for r in regs}
        hit_error = Signal()
        in_range = {r.name: Signal(name=f"wok_{r.name}") for r in regs if r.ranged}
        m.d.comb += [bus.awready.eq(~aw_held & ~bus.bvalid), bus.wready.eq(~w_held & ~bus.bvalid)]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [aw_held.eq(1), aw_word.eq(word(bus.awaddr))]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [w_held.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)

        mask = Signal(LITE_DATA_BITS)
        for byte in range(LITE_DATA_BITS // 8):
            m.d.comb += mask[8 * byte:8 * byte + 8].eq(w_strb[byte].replicate(8))
        merged = {}
        for r in regs:
            if r.access is Access.RW:
                merged[r.name] = Signal(r.width, name=f"merged_{r.name}")
                m.d.comb += merged[r.name].eq((values[r.name] & ~mask[:r.width]) | (w_data[:r.width] & mask[:r.width]))

        start_decode = aw_held & w_held & ~decoded
        with m.If(start_decode):
            m.d.sync += decoded.eq(1)
            m.d.sync += hit_error.eq(aw_word == (rm.error_offset >> 2))
            for r in regs:
                m.d.sync += hit[r.name].eq(aw_word == (r.offset >> 2))
                if r.ranged:
                    v = merged[r.name]
                    m.d.sync += in_range[r.name].eq((v >= r.valid_low) & (v <= r.valid_high))

        clear_w1c = {r.name: Signal(r.width, name=f"clear_{r.name}") for r in regs if r.access is Access.W1C}
        reject = Signal()
        reject_code = Signal(4)
        with m.If(decoded):
            # apply and answer; the holds free up, B is held until taken
            m.d.sync += [decoded.eq(0), aw_held.eq(0), w_held.eq(0), bus.bvalid.eq(1)]
            resp = Signal(2)
            m.d.comb += [resp.eq(Resp.DECERR), reject_code.eq(ErrorCode.UNMAPPED)]
            with m.If(hit_error):
                m.d.comb += [resp.eq(Resp.OKAY), reject_code.eq(ErrorCode.NONE)]
            for r in regs:
                with m.If(hit[r.name]):
                    m.d.comb += [resp.eq(Resp.OKAY), reject_code.eq(ErrorCode.NONE)]
                    if r.access is Access.RW:
                        ok = in_range[r.name] if r.ranged else Const(1)
                        with m.If(ok):
                            m.d.sync += values[r.name].eq(merged[r.name])
                        with m.Else():
                            m.d.comb += [resp.eq(Resp.SLVERR), reject_code.eq(ErrorCode.RANGE)]
                    elif r.access is Access.RO:
                        m.d.comb += [resp.eq(Resp.SLVERR), reject_code.eq(ErrorCode.READ_ONLY)]
                    elif r.access is Access.W1C:
                        m.d.comb += clear_w1c[r.name].eq(w_data[:r.width] & mask[:r.width])
                    else:  # W1S
                        m.d.sync += getattr(self.fabric, r.name).eq(w_data[:r.width] & mask[:r.width])
            m.d.sync += bus.bresp.eq(resp)
            m.d.comb += reject.eq(reject_code != ErrorCode.NONE)

        for r in regs:
            if r.access is Access.W1C:
                # a set in the same cycle as a clear wins: the event is not lost
                m.d.sync += values[r.name].eq((values[r.name] & ~clear_w1c[r.name]) | getattr(self.fabric, r.name))

        clear_error = Signal()
        m.d.comb += clear_error.eq(decoded & hit_error & w_strb[0] & w_data[0])
        with m.If(clear_error):
            m.d.sync += [err_flag.eq(0), err_code.eq(0), err_word.eq(0)]
        with m.Elif(reject & ~err_flag):  # keep the first error until cleared
            m.d.sync += [err_flag.eq(1), err_code.eq(reject_code), err_word.eq(aw_word)]

        # -- read path: hold AR, decode, answer ----------------------------------------------------
        ar_held = Signal()
        rhit = {r.name: Signal(name=f"rhit_{r.name}") for r in regs}
        rhit_error = Signal()
        m.d.comb += bus.arready.eq(~ar_held & ~bus.rvalid)
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += ar_held.eq(1)
            m.d.sync += rhit_error.eq(word(bus.araddr) == (rm.error_offset >> 2))
            for r in regs:
                m.d.sync += rhit[r.name].eq(word(bus.araddr) == (r.offset >> 2))
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        with m.If(ar_held):
            m.d.sync += [ar_held.eq(0), bus.rvalid.eq(1)]
            data = Signal(LITE_DATA_BITS)
            terms = [Const(0, LITE_DATA_BITS)]
            for r in regs:
                if r.access is Access.W1S:
                    continue  # reads 0
                source = values[r.name] if r.name in values else getattr(self.fabric, r.name)
                terms.append(rhit[r.name].replicate(r.width) & source)
            error_word = Signal(LITE_DATA_BITS)
            m.d.comb += error_word.eq(err_flag | (err_code << 4) | (err_word << 16))
            terms.append(rhit_error.replicate(LITE_DATA_BITS) & error_word)
            acc = terms[0]
            for t in terms[1:]:
                acc = acc | t
            m.d.comb += data.eq(acc)
            hits = [rhit_error] + [rhit[r.name] for r in regs]
            any_of = hits[0]
            for h in hits[1:]:
                any_of = any_of | h
            m.d.sync += [bus.rdata.eq(data), bus.rresp.eq(Resp.OKAY)]
            with m.If(~any_of):
                m.d.sync += bus.rresp.eq(Resp.DECERR)

        # -- interrupt ------------------------------------------------------------------------------
        irq_terms = [values[r.name].any() for r in regs if r.irq]
        if rm.error_irq:
            irq_terms.append(err_flag)
        irq = Const(0, 1)
        for t in irq_terms:
            irq = irq | t
        m.d.sync += self.irq.eq(irq)
        return m
