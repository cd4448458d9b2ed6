"""ECP5 primitives the generators instantiate when they are elaborated for an ECP5 platform.

Yosys maps an Amaranth memory onto a DP16KD block RAM but never absorbs a register behind its read port into
the RAM's own output register (``REGMODE "OUTREG"``): the read data then leaves the slow block-RAM
clock-to-out into the fabric, a 5 to 6 ns path at speed 6 before any routing. A block that wants the output
register asks :func:`is_ecp5` and instantiates :func:`dp16kd_8bit` instead of a memory; any other platform
(the Python simulator, Verilator, the Xilinx resource counts) keeps the behavioural memory and its register.

A platform is an ECP5 build when its ``family`` is ``"ecp5"``, as Amaranth's ``LatticePlatform`` says;
:data:`ECP5` is the platform object for a bare netlist (:mod:`tokensift.hw.cost.pnr` elaborates with it).

>>> is_ecp5(ECP5), is_ecp5(None)
(True, False)
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, signed

__all__ = ["ECP5", "DP16KD_WORDS", "is_ecp5", "dp16kd_8bit"]

#: words of one DP16KD in its 9-bit mode (the 8-bit words use 8 of the 9 bits)
DP16KD_WORDS = 2048
#: the address pins of the 9-bit mode: ADx3..ADx13 (ADx0..2 select bits of wider words)
_ADDR_LSB = 3


class _Ecp5Target:
    """A platform object that only says which FPGA family the netlist is for."""

    family = "ecp5"

    def __repr__(self) -> str:
        return "ECP5"


#: the platform a bare ECP5 netlist is elaborated for
ECP5 = _Ecp5Target()


def is_ecp5(platform) -> bool:
    """Whether ``platform`` (``elaborate``'s argument) is an ECP5 build."""
    return getattr(platform, "family", None) == "ecp5"


def dp16kd_8bit(m: Module, name: str, *, depth: int, wr_en, wr_addr, wr_data, rd_addr) -> Signal:
    """A ``depth`` x int8 block RAM (``depth <= 2048``) as one DP16KD: port A writes ``wr_data`` at
    ``wr_addr`` when ``wr_en``, port B reads ``rd_addr`` into the output register, so the returned signal is
    the word two cycles after ``rd_addr`` (an Amaranth read port plus one register, with the register in the
    RAM). A read of the address written in the same cycle returns an undefined word: the caller guarantees
    that none happens."""
    if not 1 <= depth <= DP16KD_WORDS:
        raise ValueError(f"A DP16KD holds 1 to {DP16KD_WORDS} words of 9 bits, not {depth}")
    bits = max(1, (depth - 1).bit_length())
    q = Signal(signed(8), name=f"{name}_q")
    do = Signal(18, name=f"{name}_do")
    ports = {}
    for i in range(14):
        a = i - _ADDR_LSB
        ports[f"i_ADA{i}"] = wr_addr[a] if 0 <= a < bits else Const(0, 1)
        ports[f"i_ADB{i}"] = rd_addr[a] if 0 <= a < bits else Const(0, 1)
    for i in range(18):
        ports[f"i_DIA{i}"] = wr_data[i] if i < 8 else Const(0, 1)
        ports[f"i_DIB{i}"] = Const(0, 1)
        ports[f"o_DOB{i}"] = do[i]
    for i in range(3):
        ports[f"i_CSA{i}"] = Const(0, 1)
        ports[f"i_CSB{i}"] = Const(0, 1)
    m.submodules[name] = Instance(
        "DP16KD",
        p_DATA_WIDTH_A=9, p_DATA_WIDTH_B=9, p_REGMODE_A="NOREG", p_REGMODE_B="OUTREG",
        p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC", p_CSDECODE_A="0b000", p_CSDECODE_B="0b000",
        p_WRITEMODE_A="NORMAL", p_WRITEMODE_B="NORMAL", p_GSR="AUTO",
        i_CLKA=ClockSignal(), i_CEA=Const(1, 1), i_OCEA=Const(1, 1), i_WEA=wr_en, i_RSTA=Const(0, 1),
        i_CLKB=ClockSignal(), i_CEB=Const(1, 1), i_OCEB=Const(1, 1), i_WEB=Const(0, 1), i_RSTB=Const(0, 1),
        **ports,
    )
    m.d.comb += q.eq(do[:8])
    return q
