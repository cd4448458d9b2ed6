"""ECP5 primitives the generators instantiate when they are elaborated for an ECP5 platform.

Yosys maps an Amaranth memory onto a DP16KD block RAM but never absorbs a register behind its read port into
the RAM's own output register (``REGMODE "OUTREG"``): the read data then leaves the slow block-RAM
clock-to-out into the fabric, a 5 to 6 ns path at speed 6 before any routing. A block that wants the output
register asks :func:`is_ecp5` and instantiates :func:`dp16kd_8bit` (one int8 RAM) or :func:`dp16kd_memory` (any
width and depth, with per-group write enables, laid out as Yosys's ``memory_libmap`` lays it out) instead of a
memory; any other platform (the Python simulator, Verilator, the Xilinx resource counts, the Yosys baselines)
keeps the behavioural memory and its register.

A platform is an ECP5 build when its ``family`` is ``"ecp5"``, as Amaranth's ``LatticePlatform`` says;
:data:`ECP5` is the platform object for a bare netlist (:mod:`tokensift.hw.cost.pnr` elaborates with it).

>>> is_ecp5(ECP5), is_ecp5(None)
(True, False)
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Signal, Value, signed

__all__ = ["ECP5", "DP16KD_WORDS", "MULT18_BITS", "is_ecp5", "DP16KD_ADDR_PINS", "DP16KD_WIDTHS", "dp16kd_8bit",
           "dp16kd_ranges", "dp16kd_memory", "mult18x18d_registered"]

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


#: a DP16KD's address pins, and the port widths it has (each doubling of the width takes one address pin: the
#: address is left-justified, ``ADx[log2 position of the width:]``)
DP16KD_ADDR_PINS = 14
DP16KD_WIDTHS = {1: 0, 2: 1, 4: 2, 9: 3, 18: 4, 36: 5}
#: the bits one byte enable covers in the 18- and 36-bit modes (ADx0..3 are the byte enables there)
_BYTE = 9


def dp16kd_ranges(*, width: int, depth: int, granularity: int) -> tuple[int, int] | None:
    """``(address bits per range, ranges)`` of the memory :func:`dp16kd_memory` builds (the address's high bits
    above the first name its range), None when it builds none."""
    from tokensift.hw.common.resources import map_memory

    mapped = map_memory(width, depth, family="ecp5", granularity=granularity)
    if mapped.kind != "block" or mapped.unit not in DP16KD_WIDTHS:
        return None
    return DP16KD_ADDR_PINS - DP16KD_WIDTHS[mapped.unit], mapped.mux_ways


def dp16kd_memory(m: Module, name: str, *, width: int, depth: int, granularity: int, wr_en, wr_addr, wr_data,
                  rd_en, rd_addr) -> list[Value] | None:
    """A ``width`` x ``depth`` memory with one write enable per ``granularity`` bits (``wr_en``, one bit per
    group) and one read port, built of DP16KDs laid out as Yosys's ``memory_libmap`` lays the same memory out
    (the primitive, port width, address ranges and cell count of
    :func:`~tokensift.hw.common.resources.map_memory`: the block RAMs an ECP5 build has are the ones the
    resource model counts), with the read data in each RAM's output register.

    Returns one word per address range (``map_memory``'s ``mux_ways``): the word read from that range two
    cycles after ``rd_addr`` with ``rd_en`` (an Amaranth read port with its enable plus one register, the
    register in the RAM; without ``rd_en`` the word is held), for the caller to select by the range of the
    address it read. Returns None when the memory does not map onto block RAM (LUT RAM or flip-flops), or
    onto a port width this layout does not cover. A read of an address written in the same cycle returns an
    undefined word: the caller guarantees that none is used."""
    from tokensift.hw.common.resources import map_memory

    if dp16kd_ranges(width=width, depth=depth, granularity=granularity) is None:
        return None
    mapped = map_memory(width, depth, family="ecp5", granularity=granularity)
    unit, ranges = mapped.unit, mapped.mux_ways
    cell_abits = DP16KD_ADDR_PINS - DP16KD_WIDTHS[unit]
    # memory_libmap's swizzle: every enable group starts on a byte lane of the port and is padded to whole
    # bytes (9 bits from the 9-bit width up, the port's width below)
    byte = _BYTE if unit >= _BYTE else unit
    groups = [(g, min(granularity, width - g)) for g in range(0, width, granularity)]
    lanes = []  # per swizzled byte lane: (group, first data bit, bits)
    for gi, (start, bits) in enumerate(groups):
        for off in range(0, bits, byte):
            lanes.append((gi, start + off, min(byte, bits - off)))
    per_cell = unit // byte
    cells = -(-len(lanes) // per_cell)
    if cells * ranges != mapped.count:
        raise RuntimeError(f"{name}: {cells * ranges} DP16KDs laid out, memory_libmap's mapping has {mapped.count}")
    wr_en, wr_addr, rd_addr = Value.cast(wr_en), Value.cast(wr_addr), Value.cast(rd_addr)
    words = []
    for r in range(ranges):
        in_range = (wr_addr[cell_abits:] == r) if ranges > 1 else Const(1, 1)
        parts = [None] * width
        for c in range(cells):
            cell_lanes = lanes[c * per_cell:(c + 1) * per_cell]
            data = Signal(unit, name=f"{name}_r{r}c{c}_di")
            bes = Signal(max(1, unit // _BYTE), name=f"{name}_r{r}c{c}_be")
            for i, (gi, first, bits) in enumerate(cell_lanes):
                m.d.comb += data[i * byte:i * byte + bits].eq(Value.cast(wr_data)[first:first + bits])
                m.d.comb += bes[i if unit >= 18 else 0].eq(wr_en[gi] & in_range)
            out = Signal(unit, name=f"{name}_r{r}c{c}_do")
            _dp16kd_instance(m, f"{name}_r{r}c{c}", unit=unit, cell_abits=cell_abits, wr_bes=bes,
                             wr_addr=wr_addr[:cell_abits], wr_data=data, rd_en=rd_en, rd_addr=rd_addr[:cell_abits],
                             rd_data=out)
            for i, (_, first, bits) in enumerate(cell_lanes):
                for k in range(bits):
                    parts[first + k] = out[i * byte + k]
        words.append(Cat(*parts))
    return words


def _dp16kd_instance(m: Module, name: str, *, unit: int, cell_abits: int, wr_bes, wr_addr, wr_data, rd_en,
                     rd_addr, rd_data) -> None:
    """One DP16KD: port A writes ``wr_data`` (``unit`` bits) at ``wr_addr`` with byte enables ``wr_bes``
    (one enable below 18 bits), port B reads ``rd_addr`` into the output register (``REGMODE OUTREG``) when
    ``rd_en``; the 36-bit width is the pseudo-dual-port mode Yosys maps ``PDPW16KD`` onto (data on both ports'
    pins, ADA0..3 the byte enables, ``CEA`` the write enable)."""
    lsb = DP16KD_ADDR_PINS - cell_abits
    ports = {}
    for i in range(DP16KD_ADDR_PINS):
        a = i - lsb
        ports[f"i_ADB{i}"] = rd_addr[a] if 0 <= a < len(rd_addr) else Const(0, 1)
        if a >= 0:
            ports[f"i_ADA{i}"] = wr_addr[a] if a < len(wr_addr) else Const(0, 1)
        elif unit >= 18 and i < len(wr_bes):
            ports[f"i_ADA{i}"] = wr_bes[i]
        else:
            ports[f"i_ADA{i}"] = Const(0, 1)
    for i in range(18):
        ports[f"i_DIA{i}"] = wr_data[i] if i < unit else Const(0, 1)
        ports[f"i_DIB{i}"] = wr_data[18 + i] if unit == 36 else Const(0, 1)
    wide = unit == 36
    do_a, do_b = Signal(18, name=f"{name}_doa"), Signal(18, name=f"{name}_dob")
    for i in range(18):
        ports[f"o_DOA{i}"] = do_a[i]
        ports[f"o_DOB{i}"] = do_b[i]
    for i in range(3):
        ports[f"i_CSA{i}"] = Const(0, 1)
        ports[f"i_CSB{i}"] = Const(0, 1)
    any_be = Value.cast(wr_bes).any()
    _place_dp16kd(
        m, name,
        p_DATA_WIDTH_A=unit, p_DATA_WIDTH_B=unit, p_REGMODE_A="OUTREG" if wide else "NOREG", p_REGMODE_B="OUTREG",
        p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC", p_CSDECODE_A="0b000", p_CSDECODE_B="0b000",
        p_WRITEMODE_A="NORMAL", p_WRITEMODE_B="NORMAL", p_GSR="AUTO",
        i_CLKA=ClockSignal(), i_CEA=any_be if wide else Const(1, 1), i_OCEA=Const(1, 1),
        i_WEA=Const(1, 1) if wide else any_be, i_RSTA=Const(0, 1),
        i_CLKB=ClockSignal(), i_CEB=rd_en, i_OCEB=Const(1, 1), i_WEB=Const(0, 1), i_RSTB=Const(0, 1),
        **ports,
    )
    m.d.comb += rd_data.eq(Cat(do_a, do_b)[:unit] if wide else do_b[:unit])


def _place_dp16kd(m: Module, name: str, **pins_and_params) -> None:
    """The DP16KD instance (a testbench replaces this with a model of the primitive that reads the same pins
    and parameters)."""
    m.submodules[name] = Instance("DP16KD", **pins_and_params)


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
