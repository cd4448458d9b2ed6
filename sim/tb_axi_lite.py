"""cocotb testbench of :class:`~tokensift.hw.axi.registers.AxiLiteRegisters` with cocotbext-axi's
``AxiLiteMaster`` as the host, against :class:`~tokensift.hw.axi.register_model.RegisterBankModel`.

``random_access``: seeded random reads and writes (every register, unmapped words, random byte strobes,
values in and out of range) under random pauses on all five channels of the master, so AW and W arrive in
either order or together and B / R wait; the fabric drives random RO values and W1C set pulses meanwhile.
Every response, read value, RW port, W1S pulse and ``irq`` is compared with the model, and every access must
finish within a bound (the bank never hangs). ``write_orders`` reports how often AW came first, W came first
and both came together.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge, with_timeout
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from tokensift.hw.axi.config import Access, RegisterMap
from tokensift.hw.axi.register_model import RegisterBankModel
from tokensift.sim.axi_memory import pause_generator
from tokensift.sim.runner import tb_params, tb_report
from tokensift.sim.streams import reset, start_clock

#: an access that takes longer than this (in ns, 10 per cycle) hangs
TIMEOUT_NS = 20_000


class _Watch:
    """W1S pulses seen on the fabric ports and the order of AW / W handshakes."""

    def __init__(self, dut, regmap: RegisterMap):
        self.dut = dut
        self.pulses = {r.name: 0 for r in regmap.registers if r.access is Access.W1S}
        self.orders = {"aw_first": 0, "w_first": 0, "together": 0}
        self._aw_seen = self._w_seen = False
        cocotb.start_soon(self._run())

    async def _run(self):
        d = self.dut
        while True:
            await RisingEdge(d.clk)
            await ReadOnly()
            for name in self.pulses:
                self.pulses[name] |= int(getattr(d, f"fabric__{name}").value)
            aw = int(d.bus__awvalid.value) and int(d.bus__awready.value)
            w = int(d.bus__wvalid.value) and int(d.bus__wready.value)
            # the handshake signals were sampled after the edge: they are the ones of the coming edge
            if aw and w and not (self._aw_seen or self._w_seen):
                self.orders["together"] += 1
            elif aw and not self._aw_seen:
                if self._w_seen:
                    self.orders["w_first"] += 1
                    self._w_seen = False
                else:
                    self._aw_seen = True
            elif w and not self._w_seen:
                if self._aw_seen:
                    self.orders["aw_first"] += 1
                    self._aw_seen = False
                else:
                    self._w_seen = True


@cocotb.test()
async def random_access(dut):
    tp = tb_params()
    regmap = RegisterMap.from_dict(tp["regmap"])
    rng = random.Random(tp["seed"])
    start_clock(dut)
    ro = [r for r in regmap.registers if r.access is Access.RO]
    w1c = [r for r in regmap.registers if r.access is Access.W1C]
    for r in ro + w1c:
        getattr(dut, f"fabric__{r.name}").value = 0
    master = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "bus", bus_separator="__"), dut.clk, dut.rst)
    channels = [master.write_if.aw_channel, master.write_if.w_channel, master.write_if.b_channel,
                master.read_if.ar_channel, master.read_if.r_channel]
    for i, ch in enumerate(channels):
        ch.set_pause_generator(pause_generator(tp["pause"], tp["seed"] + 100 + i))
    await reset(dut)
    model = RegisterBankModel(regmap)
    watch = _Watch(dut, regmap)
    fabric = {r.name: 0 for r in ro}
    words = [r.offset for r in regmap.registers] + [regmap.error_offset]
    free = sorted(set(range(0, 1 << regmap.addr_width, 4)) - set(words))
    mismatches = []
    counts = {"writes": 0, "reads": 0, "slverr": 0, "decerr": 0, "range_rejected": 0}
    for step in range(tp["accesses"]):
        # the fabric: new RO values, W1C set pulses (one cycle, on a falling edge)
        await FallingEdge(dut.clk)
        for r in ro:
            fabric[r.name] = rng.randrange(1 << r.width)
            getattr(dut, f"fabric__{r.name}").value = fabric[r.name]
        pulsed = {}
        for r in w1c:
            if rng.random() < 0.3:
                pulsed[r.name] = rng.randrange(1 << r.width)
                getattr(dut, f"fabric__{r.name}").value = pulsed[r.name]
                model.set_bits(r.name, pulsed[r.name])
        await FallingEdge(dut.clk)
        for r in w1c:
            getattr(dut, f"fabric__{r.name}").value = 0
        addr = rng.choice(words) if rng.random() < 0.85 or not free else rng.choice(free)
        if rng.random() < 0.55:
            reg = next((r for r in regmap.registers if r.offset == addr), None)
            if reg is not None and reg.ranged and rng.random() < 0.5:
                value = rng.choice([reg.valid_low, reg.valid_high, rng.randint(reg.valid_low, reg.valid_high),
                                    reg.valid_high + 1, max(reg.valid_low - 1, 0), rng.randrange(1 << 32)])
            else:
                value = rng.randrange(1 << 32)
            first = rng.choice([0, 0, 0, 1, 2, 3])
            last = rng.choice([3, 3, 3, first, 2 if first <= 2 else 3])
            last = max(first, last)
            data = value.to_bytes(4, "little")[first:last + 1]
            strb = sum(1 << b for b in range(first, last + 1))
            watch.pulses = dict.fromkeys(watch.pulses, 0)
            got = await with_timeout(master.write(addr + first, data), TIMEOUT_NS, "ns")
            expected = model.write(addr, value, strb)
            counts["writes"] += 1
            counts["range_rejected"] += int(expected == 2 and reg is not None and reg.access is Access.RW)
            if int(got.resp) != expected:
                mismatches.append(f"write {addr:#x} strb {strb:#x} value {value:#x}: resp {int(got.resp)}, "
                                  f"model {expected}")
            await ClockCycles(dut.clk, 2)
            for name, bits in getattr(model, "pulses", {}).items():
                if watch.pulses[name] != bits:
                    mismatches.append(f"W1S {name}: pulsed {watch.pulses[name]:#x}, model {bits:#x}")
        else:
            got = await with_timeout(master.read(addr, 4), TIMEOUT_NS, "ns")
            value, expected = model.read(addr, fabric)
            counts["reads"] += 1
            if int(got.resp) != expected or int.from_bytes(got.data, "little") != value:
                mismatches.append(f"read {addr:#x}: {int.from_bytes(got.data, 'little'):#x} resp {int(got.resp)}, "
                                  f"model {value:#x} resp {expected}")
        counts["slverr"] += int(int(got.resp) == 2)
        counts["decerr"] += int(int(got.resp) == 3)
        await ReadOnly()
        for r in regmap.registers:
            if r.access is Access.RW and int(getattr(dut, f"fabric__{r.name}").value) != model.values[r.name]:
                mismatches.append(f"step {step}: port {r.name} {int(getattr(dut, f'fabric__{r.name}').value)}, "
                                  f"model {model.values[r.name]}")
        if bool(int(dut.irq.value)) != model.irq:
            mismatches.append(f"step {step}: irq {int(dut.irq.value)}, model {int(model.irq)}")
        if len(mismatches) > 20:
            break
    tb_report(mismatches=mismatches, write_orders=watch.orders, **counts)
    assert not mismatches, "\n".join(mismatches)
