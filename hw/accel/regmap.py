"""The accelerator's AXI4-Lite register map: the control block (``0x00``-``0x0C``, ``STATUS`` at ``0x28``) and the
run-time registers of :mod:`tokensift.quant.accel.registers` at the offsets and widths that module defines.

=================  ========  =====  ======  ===============================================================
register           offset    bits   access  meaning
=================  ========  =====  ======  ===============================================================
``start``          ``0x00``  0      W1S     write 1: run one image with the registers as they are now
``done``           ``0x04``  1:0    W1C     bit 0 the image finished, bit 1 it stopped on a fault; raises irq
``cycles``         ``0x08``  31:0   RO      cycles of the last image (start to done)
``overflows``      ``0x0C``  31:0   RO      values saturated during the last image (every unit's count)
``status``         ``0x28``  31:0   RO      bit 0 busy, bits 7:4 the :class:`Fault` code, bits 31:16 its pc
run-time           ``0x10``-``0x9C``        METHOD, DENSITY, bases, STAGE_KEEP/THRESHOLD/RULE (ranges checked
                                            on write: SLVERR and the error register, as every register bank)
``error``          ``0xA0``                 the register bank's error register
=================  ========  =====  ======  ===============================================================
"""

from __future__ import annotations

import enum

from tokensift.hw.axi.config import Access, Register, RegisterMap
from tokensift.quant.accel.registers import MASS_ONE, METHODS, REGISTER_MAP, RULES

__all__ = ["Fault", "accel_regmap", "STATUS_OFFSET"]

STATUS_OFFSET = 0x28


class Fault(enum.IntEnum):
    """Why an image stopped (``status`` bits 7:4); the pc in bits 31:16 is the instruction's."""

    NONE = 0
    #: the memory image's header is not one this design runs (magic, version, envelope, engine shape)
    IMAGE = 1
    #: a register value this image cannot run (method, a base address not 64-byte aligned, a stage rule)
    REGISTERS = 2
    #: an instruction that does not decode (reserved bit, opcode, buffer, row mode)
    PROGRAM = 3
    #: an engine found the instruction malformed (a record, a size, a width)
    OP = 4
    #: DRAM answered an error (RRESP / BRESP)
    BUS = 5
    #: an opcode this generated design has no engine for
    UNSUPPORTED = 6


def _runtime_register(name: str, offset: int, width: int) -> Register:
    base = name.split("[")[0].lower()
    suffix = name[len(base):].strip("[]")
    reg_name = f"{base}{suffix}" if suffix else base
    if base == "method":
        return Register(name=reg_name, offset=offset, width=width, low=0, high=len(METHODS) - 1)
    if base == "density":
        return Register(name=reg_name, offset=offset, width=width, low=1, high=MASS_ONE, reset=MASS_ONE)
    if base == "stage_rule":
        return Register(name=reg_name, offset=offset, width=width, low=0, high=len(RULES) - 1)
    return Register(name=reg_name, offset=offset, width=width)


def accel_regmap() -> RegisterMap:
    regs = [Register(name="start", offset=0x00, width=1, access=Access.W1S),
            Register(name="done", offset=0x04, width=2, access=Access.W1C, irq=True),
            Register(name="cycles", offset=0x08, access=Access.RO),
            Register(name="overflows", offset=0x0C, access=Access.RO),
            Register(name="status", offset=STATUS_OFFSET, access=Access.RO)]
    regs += [_runtime_register(name, offset, width) for name, (offset, width) in REGISTER_MAP.items()]
    return RegisterMap(registers=tuple(regs), error_offset=0xA0, addr_width=8)
