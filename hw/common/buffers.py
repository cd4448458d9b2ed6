"""Row buffers for Q, K and V: lane vectors in block RAM, one write port and one registered read port.

Row ``r``, chunk ``c`` (``lanes`` channels ``c * lanes ..``) lives at address ``r * chunks + c``. The read
port is synchronous (data the cycle after the address) and never transparent, the shape synthesis maps
onto block RAM (no asynchronous read, which would force distributed RAM).
"""

from __future__ import annotations

from amaranth.hdl import Module, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from tokensift.checks import check_int

__all__ = ["RowBuffer"]


class RowBuffer(wiring.Component):
    """``depth`` lane vectors of ``lanes`` signed ``data_bits`` values.

    Parameters (keyword-only)
    -------------------------
    depth : int
        Number of lane vectors (rows x chunks), at least 1.
    lanes, data_bits : int
        Vector shape.
    """

    def __init__(self, *, depth: int, lanes: int, data_bits: int):
        for name, value in (("depth", depth), ("lanes", lanes), ("data_bits", data_bits)):
            check_int(name, value, low=1, numpy=False)
        self._depth = depth
        vec = data.ArrayLayout(signed(data_bits), lanes)
        super().__init__({
            "w_en": In(1),
            "w_addr": In(range(depth)),
            "w_data": In(vec),
            "r_addr": In(range(depth)),
            "r_data": Out(vec),
        })

    @property
    def depth(self) -> int:
        return self._depth

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=self.w_data.shape(), depth=self._depth, init=[])
        w = mem.write_port()
        r = mem.read_port()
        m.d.comb += [w.en.eq(self.w_en), w.addr.eq(self.w_addr), w.data.eq(self.w_data),
                     r.addr.eq(self.r_addr), self.r_data.eq(r.data)]
        return m
