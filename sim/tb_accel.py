"""cocotb testbench of the whole accelerator: ``AxiLiteMaster`` as the host, :class:`DramModel` (cocotbext-axi's
``AxiRam``, fixed latency, optional random back-pressure) as DRAM, one run per image.

Parameters (:func:`tokensift.sim.runner.tb_params`): ``image`` (path of the DRAM contents to load at 0),
``dram_bytes``, ``latency``, ``pause``, ``seed`` and ``runs``: per run ``registers`` (byte offset -> value),
``input`` (hex of the input bytes, written at the run's INPUT_BASE before it starts, or none),
``logits_base`` and ``classes`` (what to read back), ``max_cycles`` (the hang guard, default
:data:`MAX_CYCLES`), ``reset_after`` (assert reset that many cycles after
start and skip the run: the next run must be exact). The report: per run ``done``, ``status``, ``cycles``,
``overflows``, ``logits`` (int16 list), the measured ``wall_cycles`` (start write to done) and ``sim_seconds``
(the host's wall-clock seconds from the start write to the interrupt); with
``op_timing``, ``ops``: per dispatched instruction the cycles (from the run's start) its engine was started
and answered ``done``, read from the sequencer's own ports.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import cocotb
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from tokensift.hw.accel.regmap import STATUS_OFFSET
from tokensift.sim.axi_memory import CycleCounter, DramModel, pause_generator
from tokensift.sim.runner import tb_params, tb_report
from tokensift.sim.streams import reset, start_clock

#: a run that has not finished after this many cycles is a hang (the design must never hang)
MAX_CYCLES = 5_000_000


class OpTimes:
    """The cycles of the sequencer's ``start`` pulses and its engines' ``done`` answers."""

    def __init__(self, dut, counter: CycleCounter):
        self.seq = dut.sequencer
        self.counter = counter
        self.events: list[tuple[str, int]] = []
        cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            await RisingEdge(self.seq.clk)
            if int(self.seq.start.value):
                self.events.append(("start", self.counter.now))
            if int(self.seq.eng_done.value):
                self.events.append(("done", self.counter.now))

    def take(self, origin: int) -> list[list[int]]:
        starts = [c - origin for kind, c in self.events if kind == "start"]
        dones = [c - origin for kind, c in self.events if kind == "done"]
        self.events.clear()
        return [list(p) for p in zip(starts, dones, strict=False)]


@cocotb.test()
async def images(dut):
    tp = tb_params()
    start_clock(dut)
    counter = CycleCounter(dut.clk)
    dram = DramModel(dut, size=tp["dram_bytes"], latency=tp["latency"], counter=counter)
    if tp["pause"]:
        dram.pause(tp["pause"], tp["seed"])
    host = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil", bus_separator="__"), dut.clk, dut.rst)
    if tp["pause"]:
        channels = [host.write_if.aw_channel, host.write_if.w_channel, host.write_if.b_channel,
                    host.read_if.ar_channel, host.read_if.r_channel]
        for i, ch in enumerate(channels):
            ch.set_pause_generator(pause_generator(tp["pause"], tp["seed"] + 50 + i))
    await reset(dut)
    dram.write(0, Path(tp["image"]).read_bytes())
    timing = OpTimes(dut, counter) if tp.get("op_timing") else None
    results = []
    for run in tp["runs"]:
        regs = {int(k): v for k, v in run["registers"].items()}
        if run.get("input"):
            dram.write(regs[0x20], bytes.fromhex(run["input"]))
        for offset, value in sorted(regs.items()):
            await host.write_dword(offset, value)
        await host.write_dword(0x04, 0x3)  # clear a done left by an earlier run
        if timing:
            timing.events.clear()
        start = counter.now
        started = time.perf_counter()
        await host.write_dword(0x00, 1)
        if run.get("reset_after") is not None:
            await ClockCycles(dut.clk, run["reset_after"])
            status = await host.read_dword(STATUS_OFFSET)
            await reset(dut)
            results.append({"reset": True, "busy_before_reset": status & 1})
            continue
        if not int(dut.irq.value):
            # one trigger, not a Python wake-up per cycle: an image runs for 10^5..10^7 cycles
            limit = int(run.get("max_cycles") or MAX_CYCLES)
            await First(RisingEdge(dut.irq), Timer(limit * counter.period_ns, unit="ns"))
            if not int(dut.irq.value):
                raise TimeoutError(f"no interrupt within {limit} cycles")
        sim_seconds = time.perf_counter() - started
        wall = counter.now - start
        done = await host.read_dword(0x04)
        status = await host.read_dword(STATUS_OFFSET)
        cycles = await host.read_dword(0x08)
        overflows = await host.read_dword(0x0C)
        error = await host.read_dword(0xA0)
        await host.write_dword(0x04, done)
        await ClockCycles(dut.clk, 2)
        irq_cleared = not int(dut.irq.value)
        classes = run.get("classes", 0)
        raw = dram.read(run.get("logits_base", 0), 2 * classes)
        results.append({"done": done, "status": status, "fault": (status >> 4) & 0xF, "fault_pc": status >> 16,
                        "cycles": cycles, "overflows": overflows, "wall_cycles": wall, "sim_seconds": round(sim_seconds, 3), "irq_cleared": irq_cleared, "register_error": error,
                        "logits": list(struct.unpack(f"<{classes}h", raw)) if classes else [],
                        "ops": timing.take(start) if timing else None})
    tb_report(runs=results)
