"""AXI4 and AXI4-Lite as :class:`amaranth.lib.wiring.Signature` s, with the port names cocotbext-axi finds.

Every channel signal is a flat member named as in the AXI specification (``araddr``, ``rvalid``, ...), so a
port ``m_axi`` of :func:`axi_read_signature` is emitted as ``m_axi__araddr`` and so on, and the testbench
binds it with ``AxiReadBus.from_prefix(dut, "m_axi", bus_separator="__")``. The signatures are seen from the
master: a slave port is ``In(signature)``.
"""

from __future__ import annotations

import enum

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tokensift.checks import check_int

__all__ = ["Resp", "Burst", "axi_read_signature", "axi_write_signature", "axi_lite_signature", "LITE_DATA_BITS"]

#: AXI4-Lite data width (the Zynq GP ports' register width)
LITE_DATA_BITS = 32


class Resp(enum.IntEnum):
    """``xRESP`` codes."""

    OKAY = 0
    EXOKAY = 1
    SLVERR = 2
    DECERR = 3


class Burst(enum.IntEnum):
    """``AxBURST`` codes (the DMAs issue INCR only)."""

    FIXED = 0
    INCR = 1
    WRAP = 2


def _check(addr_width: int, data_bytes: int, id_width: int) -> None:
    check_int("addr_width", addr_width, low=12, high=64, numpy=False)
    check_int("data_bytes", data_bytes, low=1, high=128, numpy=False)
    if data_bytes & (data_bytes - 1):
        raise ValueError(f"data_bytes must be a power of two, not {data_bytes}")
    check_int("id_width", id_width, low=1, high=16, numpy=False)


def axi_read_signature(*, addr_width: int, data_bytes: int, id_width: int = 1) -> wiring.Signature:
    """The AR and R channels of an AXI4 master."""
    _check(addr_width, data_bytes, id_width)
    return wiring.Signature({
        "arid": Out(id_width), "araddr": Out(addr_width), "arlen": Out(8), "arsize": Out(3), "arburst": Out(2),
        "arprot": Out(3), "arcache": Out(4), "arvalid": Out(1), "arready": In(1),
        "rid": In(id_width), "rdata": In(8 * data_bytes), "rresp": In(2), "rlast": In(1), "rvalid": In(1),
        "rready": Out(1),
    })


def axi_write_signature(*, addr_width: int, data_bytes: int, id_width: int = 1) -> wiring.Signature:
    """The AW, W and B channels of an AXI4 master."""
    _check(addr_width, data_bytes, id_width)
    return wiring.Signature({
        "awid": Out(id_width), "awaddr": Out(addr_width), "awlen": Out(8), "awsize": Out(3), "awburst": Out(2),
        "awprot": Out(3), "awcache": Out(4), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(8 * data_bytes), "wstrb": Out(data_bytes), "wlast": Out(1), "wvalid": Out(1), "wready": In(1),
        "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
    })


def axi_lite_signature(*, addr_width: int) -> wiring.Signature:
    """An AXI4-Lite master with 32-bit data (a register bank's port is ``In`` of it)."""
    check_int("addr_width", addr_width, low=3, high=64, numpy=False)
    return wiring.Signature({
        "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(LITE_DATA_BITS), "wstrb": Out(LITE_DATA_BITS // 8), "wvalid": Out(1), "wready": In(1),
        "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
        "rdata": In(LITE_DATA_BITS), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
    })
