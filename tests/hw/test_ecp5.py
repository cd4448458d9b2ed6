"""The ECP5 primitives: the platform test and the DP16KD instance's ports (9-bit mode, output register)."""

from __future__ import annotations

import doctest

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tokensift.hw.common import ecp5


class _Ram(wiring.Component):
    def __init__(self):
        super().__init__({"wr_en": In(1), "wr_addr": In(7), "wr_data": In(signed(8)), "rd_addr": In(7),
                          "q": Out(signed(8))})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.q.eq(ecp5.dp16kd_8bit(m, "ram", depth=100, wr_en=self.wr_en, wr_addr=self.wr_addr,
                                               wr_data=self.wr_data, rd_addr=self.rd_addr))
        return m


def test_doctests():
    assert doctest.testmod(ecp5).failed == 0


def test_is_ecp5_follows_the_platform_family():
    class Lattice:
        family = "ecp5"

    class Other:
        family = "machxo2"

    assert ecp5.is_ecp5(Lattice()) and not ecp5.is_ecp5(Other()) and not ecp5.is_ecp5(object())


def test_dp16kd_ports_in_9_bit_mode():
    text = verilog.convert(_Ram(), name="top")
    assert text.count("DP16KD #(") == 1 and '.REGMODE_B("OUTREG")' in text and '.REGMODE_A("NOREG")' in text
    # a 9-bit word's address sits on AD3..AD13: 7 address bits, the rest tied low
    for i in range(3):
        assert f".ADA{i}(1'h0)" in text and f".ADB{i}(1'h0)" in text
    for i in range(7):
        assert f".ADA{i + 3}(wr_addr[{i}])" in text and f".ADB{i + 3}(rd_addr[{i}])" in text
    for i in range(10, 14):
        assert f".ADA{i}(1'h0)" in text and f".ADB{i}(1'h0)" in text
    assert ".WEA(wr_en)" in text and ".WEB(1'h0)" in text and ".DIA8(1'h0)" in text


@pytest.mark.parametrize("depth", [0, 2049])
def test_dp16kd_rejects_depth(depth):
    with pytest.raises(ValueError, match=rf"^A DP16KD holds 1 to 2048 words of 9 bits, not {depth}$"):
        ecp5.dp16kd_8bit(Module(), "ram", depth=depth, wr_en=Signal(), wr_addr=Signal(11), wr_data=Signal(8),
                         rd_addr=Signal(11))


class _Mul(wiring.Component):
    def __init__(self):
        super().__init__({"a": In(signed(8)), "b": In(17), "p": Out(signed(25))})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.p.eq(ecp5.mult18x18d_registered(m, "mul", self.a, self.b))
        return m


def test_mult18x18d_registered_ports():
    text = verilog.convert(_Mul(), name="top")
    assert text.count("MULT18X18D #(") == 1
    for reg in ("INPUTA", "INPUTB", "OUTPUT"):
        assert f'.REG_{reg}_CLK("CLK0")' in text
    assert '.REG_PIPELINE_CLK("NONE")' in text
    assert ".SIGNEDA(1'h1)" in text and ".SIGNEDB(1'h1)" in text and ".CE0(1'h1)" in text


@pytest.mark.parametrize("a, b, message", [
    (signed(19), signed(8), r"^Operand a of a MULT18X18D must fit 18 signed bits, not signed\(19\)$"),
    (signed(8), 18, r"^Operand b of a MULT18X18D must fit 18 signed bits, not unsigned\(18\)$"),
])
def test_mult18x18d_rejects_wide_operands(a, b, message):
    with pytest.raises(ValueError, match=message):
        ecp5.mult18x18d_registered(Module(), "mul", Signal(a), Signal(b))
