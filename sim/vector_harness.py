"""What the vector units' cocotb testbenches share: payloads packed by the units' own Amaranth layouts, and
a monitor that time-stamps the transfers of chosen streams (so measured cycles meet the formulas)."""

from __future__ import annotations

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly

from tokensift.sim.streams import StreamSink

__all__ = ["encode", "decode", "TransferLog", "unsigned_sink"]


def encode(layout, value) -> int:
    """The bits of ``value`` (a list for an array layout, a dict for a struct) in ``layout``."""
    return layout.const(value).as_bits()


def decode(layout, bits: int):
    """A view of ``bits`` in ``layout``: ``list(...)`` of an array, attributes of a struct."""
    return layout.from_bits(int(bits))


def unsigned_sink(dut, name: str, *, stall: float, seed: int) -> StreamSink:
    """A sink that keeps raw payload bits (decoded with :func:`decode`)."""
    return StreamSink(dut, name, stall=stall, seed=seed, signed=False)


class TransferLog:
    """The clock cycles (counted from its start) at which each of ``names`` transferred a beat."""

    def __init__(self, dut, names):
        self._dut = dut
        self.cycles = {name: [] for name in names}
        self._ports = {name: (getattr(dut, f"{name}__valid"), getattr(dut, f"{name}__ready")) for name in names}
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        cycle = 0
        while True:
            await FallingEdge(self._dut.clk)
            await ReadOnly()
            for name, (valid, ready) in self._ports.items():
                if valid.value and ready.value:
                    self.cycles[name].append(cycle)
            cycle += 1

    def stop(self) -> None:
        self._task.cancel()

    def span(self, first: str, last: str) -> int:
        """Cycles from ``first``'s first transfer to ``last``'s last one, both included."""
        return self.cycles[last][-1] - self.cycles[first][0] + 1
