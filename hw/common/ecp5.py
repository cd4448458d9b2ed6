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

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, Value, signed

__all__ = ["ECP5", "DP16KD_WORDS", "MULT18_BITS", "is_ecp5", "dp16kd_8bit", "mult18x18d_registered"]

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


#: widest operand of a MULT18X18D (signed)
MULT18_BITS = 18


def mult18x18d_registered(m: Module, name: str, a, b) -> Signal:
    """``a * b`` (signed or unsigned operands of at most 18 bits as signed, so an unsigned one of at most 17)
    on one MULT18X18D with its input registers and its output register (no pipeline register): the returned
    signal is the product two cycles after ``a`` and ``b`` (an Amaranth operand register and a product
    register, both in the DSP), in the shape Amaranth gives ``a * b``."""
    a, b = Value.cast(a), Value.cast(b)
    for what, v in (("a", a), ("b", b)):
        bits = len(v) + (0 if v.shape().signed else 1)
        if bits > MULT18_BITS:
            raise ValueError(f"Operand {what} of a MULT18X18D must fit 18 signed bits, not {v.shape()}")
    # both operands as 18-bit signed: an unsigned one is zero-extended, which keeps its value
    a18 = Signal(signed(MULT18_BITS), name=f"{name}_a")
    b18 = Signal(signed(MULT18_BITS), name=f"{name}_b")
    m.d.comb += [a18.eq(a), b18.eq(b)]
    p = Signal(36, name=f"{name}_p")
    # the cascade inputs (SRIA, SRIB) have only dedicated wires from the neighbouring DSP, and the unused
    # clocks, enables and resets are left open as Yosys's own mapping leaves them: a constant on them is a
    # net the router cannot complete
    ports = {}
    for i in range(MULT18_BITS):
        ports[f"i_A{i}"] = a18[i]
        ports[f"i_B{i}"] = b18[i]
        ports[f"i_C{i}"] = Const(0, 1)
    for i in range(36):
        ports[f"o_P{i}"] = p[i]
    ports.update(i_CLK0=ClockSignal(), i_CE0=Const(1, 1), i_RST0=Const(0, 1))
    m.submodules[name] = Instance(
        "MULT18X18D",
        p_REG_INPUTA_CLK="CLK0", p_REG_INPUTA_CE="CE0", p_REG_INPUTA_RST="RST0",
        p_REG_INPUTB_CLK="CLK0", p_REG_INPUTB_CE="CE0", p_REG_INPUTB_RST="RST0",
        p_REG_INPUTC_CLK="NONE", p_REG_PIPELINE_CLK="NONE",
        p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
        p_CLK0_DIV="ENABLED", p_CLK1_DIV="ENABLED", p_CLK2_DIV="ENABLED", p_CLK3_DIV="ENABLED",
        p_HIGHSPEED_CLK="NONE", p_GSR="DISABLED", p_CAS_MATCH_REG="FALSE", p_SOURCEB_MODE="B_SHIFT",
        p_MULT_BYPASS="DISABLED", p_RESETMODE="SYNC",
        i_SIGNEDA=Const(1, 1), i_SIGNEDB=Const(1, 1), i_SOURCEA=Const(0, 1), i_SOURCEB=Const(0, 1),
        **ports,
    )
    out = Signal((a * b).shape(), name=f"{name}_prod")
    m.d.comb += out.eq(p[:len(out)])
    return out
