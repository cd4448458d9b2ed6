"""cocotb drivers for ``amaranth.lib.stream`` ports: a source and a sink with seeded random stalls.

Ports are found by Amaranth's naming (``<name>__payload``, ``<name>__valid``, ``<name>__ready``).
Both sides change what they drive on the falling clock edge and look at the handshake once the
signals have settled (``ReadOnly``), so a transfer is counted exactly when the rising edge that
follows sees ``valid & ready``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

__all__ = ["StreamSource", "StreamSink", "start_clock", "reset"]


def start_clock(dut, period_ns: int = 10):
    return cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())


async def reset(dut, cycles: int = 2) -> None:
    """Hold ``rst`` for ``cycles`` rising edges, releasing it on a falling edge."""
    await FallingEdge(dut.clk)
    dut.rst.value = 1
    await ClockCycles(dut.clk, cycles)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


def _signed_or_unsigned(value, signed: bool) -> int:
    if not hasattr(value, "to_unsigned"):  # a 1-bit port reads as a Logic
        return int(value)
    return value.to_signed() if signed else value.to_unsigned()


class StreamSource:
    """Feeds integers (or raw bit patterns) into ``<name>__payload`` with ``valid`` idles.

    ``idle`` is the probability of holding ``valid`` low in a cycle while data is waiting.
    """

    def __init__(self, dut, name: str, *, idle: float = 0.0, seed: int = 0):
        self._clk = dut.clk
        self._payload = getattr(dut, f"{name}__payload")
        self._valid = getattr(dut, f"{name}__valid")
        self._ready = getattr(dut, f"{name}__ready")
        self._width = len(self._payload)
        self._queue: deque[int] = deque()
        self._rng = random.Random(seed)
        self.idle = idle
        self.sent = 0
        self._valid.value = 0
        self._task = cocotb.start_soon(self._run())

    def send(self, values: Iterable[int]) -> None:
        self._queue.extend(int(v) for v in values)

    def clear(self) -> None:
        """Drop everything not yet accepted (e.g. when the DUT is reset mid-frame)."""
        self._queue.clear()

    @property
    def idle_now(self) -> bool:
        return not self._queue

    async def _run(self):
        mask = (1 << self._width) - 1
        pending = False
        while True:
            await FallingEdge(self._clk)
            if pending and self._queue:
                self._queue.popleft()
                self.sent += 1
            if self._queue and self._rng.random() >= self.idle:
                self._payload.value = self._queue[0] & mask
                self._valid.value = 1
                await ReadOnly()
                pending = bool(self._ready.value)
            else:
                self._valid.value = 0
                pending = False


class StreamSink:
    """Collects payloads from ``<name>__payload``, dropping ``ready`` with probability ``stall``."""

    def __init__(self, dut, name: str, *, stall: float = 0.0, seed: int = 1, signed: bool = True):
        self._clk = dut.clk
        self._payload = getattr(dut, f"{name}__payload")
        self._valid = getattr(dut, f"{name}__valid")
        self._ready = getattr(dut, f"{name}__ready")
        self._rng = random.Random(seed)
        self._signed = signed
        self.stall = stall
        self.received: list[int] = []
        self._ready.value = 0
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            await FallingEdge(self._clk)
            ready = self._rng.random() >= self.stall
            self._ready.value = int(ready)
            if ready:
                await ReadOnly()
                if self._valid.value:
                    self.received.append(_signed_or_unsigned(self._payload.value, self._signed))

    async def wait_for(self, count: int, *, timeout_cycles: int = 1_000_000) -> list[int]:
        """Wait until ``count`` payloads arrived in total; returns them."""
        for _ in range(timeout_cycles):
            if len(self.received) >= count:
                return self.received[:count]
            await RisingEdge(self._clk)
        raise TimeoutError(f"only {len(self.received)} of {count} payloads arrived in {timeout_cycles} cycles")
