"""cocotbext-axi's ``AxiRam`` as the accelerator's DRAM: a fixed extra latency, random back-pressure on every
channel, and address ranges that answer SLVERR.

``AxiRam`` has no latency setting: it answers as fast as its coroutines run, which measures
:data:`AXIRAM_LATENCY` cycles from an AR handshake to the first R handshake of an idle memory, and from the last
W handshake of a burst to its B handshake. :class:`DramModel` makes that ``latency`` (at least
:data:`AXIRAM_LATENCY`): every AR and AW is taken at once (a memory controller with a deep command queue), a
read burst's data starts ``latency - AXIRAM_LATENCY`` cycles later than ``AxiRam`` alone would start it, and a
write response goes out that much later too. ``AxiRam`` serves one burst at a time, one beat per cycle, so
the DMA sees a memory with a fixed pipeline latency and the bandwidth of one bus word per cycle: the rules
:mod:`tokensift.hw.axi.cycles` assumes. ``pause`` installs seeded random pause generators on
every channel (AR/AW/W back-pressure, R/B idles). Addresses in ``bad`` ranges answer SLVERR (reads return 0,
writes are dropped).
"""

from __future__ import annotations

import itertools
import random
from collections import deque

import cocotb
from cocotb.triggers import Event, FallingEdge, RisingEdge
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiReadBus, AxiWriteBus
from cocotbext.axi.axi_ram import AxiRamRead, AxiRamWrite
from cocotbext.axi.sparse_memory import SparseMemory

__all__ = ["DramModel", "CycleCounter", "pause_generator", "AXIRAM_LATENCY"]

#: cycles ``AxiRam`` takes on its own (AR handshake -> first R handshake, last W -> B), measured in Verilator
AXIRAM_LATENCY = 2


class CycleCounter:
    """The clock cycle a coroutine is in: simulated time over the clock period, so every coroutine woken by
    the same edge reads the same cycle, whatever order cocotb wakes them in."""

    def __init__(self, clk, period_ns: int = 10):
        self.clk = clk
        self.period_ns = period_ns

    @property
    def now(self) -> int:
        return int(get_sim_time(unit="ns")) // self.period_ns


def pause_generator(probability: float, seed: int):
    """An endless seeded stream of pause decisions, each ``True`` with ``probability``."""
    rng = random.Random(seed)
    return (rng.random() < probability for _ in itertools.count())


class _DelayedRecv:
    """Stands in for an AR or AW sink: takes each address at once, hands it on ``latency`` cycles later."""

    def __init__(self, sink, counter: CycleCounter, latency: int, *, mid_cycle: bool):
        self.sink = sink
        self._counter = counter
        self._latency = latency
        self._mid_cycle = mid_cycle
        self._queue: deque = deque()
        self._event = Event()
        cocotb.start_soon(self._drain())

    async def _drain(self):
        while True:
            item = await self.sink.recv()
            self._queue.append((self._counter.now + self._latency, item))
            self._event.set()

    async def recv(self):
        while not self._queue:
            self._event.clear()
            await self._event.wait()
        due, item = self._queue.popleft()
        while self._counter.now < due:
            await RisingEdge(self._counter.clk)
        if self._mid_cycle:
            # so what AxiRam sends next is queued before the R source looks at its queue on the next edge,
            # whether that source was streaming or idle (at the edge itself the order of coroutines decides)
            await FallingEdge(self._counter.clk)
        return item

    def clear(self):
        self.sink.clear()
        self._queue.clear()


class _DelayedSend:
    """Stands in for a B source: each response goes out ``latency`` cycles after the write completed."""

    def __init__(self, source, counter: CycleCounter, latency: int):
        self.source = source
        self._counter = counter
        self._latency = latency
        self._queue: deque = deque()
        self._event = Event()
        cocotb.start_soon(self._forward())

    def _transaction_obj(self):
        return self.source._transaction_obj()

    async def send(self, item):
        self._queue.append((self._counter.now + self._latency, item))
        self._event.set()

    async def _forward(self):
        while True:
            while not self._queue:
                self._event.clear()
                await self._event.wait()
            entry = self._queue[0]
            while self._counter.now < entry[0]:
                await RisingEdge(self._counter.clk)
            await FallingEdge(self._counter.clk)  # as in _DelayedRecv.recv
            if not self._queue or self._queue[0] is not entry:
                continue  # cleared by a reset meanwhile
            self._queue.popleft()
            await self.source.send(entry[1])

    def clear(self):
        self.source.clear()
        self._queue.clear()


class _Faulty:
    """Mixin: accesses that touch a ``bad`` range raise, which ``AxiSlave*`` answer with SLVERR."""

    bad: list[tuple[int, int]]

    def _hits_bad(self, address, length) -> bool:
        return any(address < hi and lo < address + length for lo, hi in self.bad)


class _Read(_Faulty, AxiRamRead):
    async def _read(self, address, length):
        if self._hits_bad(address, length):
            raise OSError("bad address")
        return await super()._read(address, length)


class _Write(_Faulty, AxiRamWrite):
    async def _write(self, address, data):
        if self._hits_bad(address, len(data)):
            raise OSError("bad address")
        await super()._write(address, data)


class DramModel:
    """``AxiRam`` halves on ``dut.<prefix>__*`` (read, write or both) over one memory of ``size`` bytes."""

    def __init__(self, dut, *, prefix: str = "m_axi", size: int = 1 << 20, latency: int = AXIRAM_LATENCY,
                 read: bool = True, write: bool = True, counter: CycleCounter | None = None):
        if latency < AXIRAM_LATENCY:
            raise ValueError(f"latency must be at least {AXIRAM_LATENCY} (AxiRam's own), not {latency}")
        extra = latency - AXIRAM_LATENCY
        self.counter = counter or CycleCounter(dut.clk)
        self.mem = SparseMemory(size)
        self.bad: list[tuple[int, int]] = []
        self.read_if = self.write_if = None
        if read:
            bus = AxiReadBus.from_prefix(dut, prefix, bus_separator="__")
            self.read_if = _Read(bus, dut.clk, dut.rst, mem=self.mem)
            self.read_if.bad = self.bad
            self._ar = self.read_if.ar_channel
            self.read_if.ar_channel = _DelayedRecv(self._ar, self.counter, extra, mid_cycle=True)
        if write:
            bus = AxiWriteBus.from_prefix(dut, prefix, bus_separator="__")
            self.write_if = _Write(bus, dut.clk, dut.rst, mem=self.mem)
            self.write_if.bad = self.bad
            self._aw = self.write_if.aw_channel
            self.write_if.aw_channel = _DelayedRecv(self._aw, self.counter, 0, mid_cycle=False)
            self._b = self.write_if.b_channel
            self.write_if.b_channel = _DelayedSend(self._b, self.counter, extra)

    def pause(self, probability: float, seed: int) -> None:
        """Random back-pressure (AR, AW, W) and idles (R, B) on every channel, each ``probability`` a cycle."""
        channels = []
        if self.read_if is not None:
            channels += [self._ar, self.read_if.r_channel]
        if self.write_if is not None:
            channels += [self._aw, self.write_if.w_channel, self._b]
        for i, channel in enumerate(channels):
            if probability > 0:
                channel.set_pause_generator(pause_generator(probability, seed + i))
            else:
                channel.clear_pause_generator()

    def write(self, address: int, data: bytes) -> None:
        self.mem[address:address + len(data)] = data

    def read(self, address: int, length: int) -> bytes:
        return bytes(self.mem[address:address + length])
