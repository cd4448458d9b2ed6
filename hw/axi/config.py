"""The configuration objects of the bus blocks: :class:`AxiDmaConfig` (the read and write DMAs) and
:class:`RegisterMap` (the AXI4-Lite register bank). Each builds the RTL, the cycle model, the resource model
and the manifest of its blocks, so they cannot drift apart.

>>> cfg = AxiDmaConfig(data_bytes=16, max_burst=64)
>>> cfg.data_bits, cfg.size_code, cfg.burst_bytes
(128, 4, 1024)
>>> regs = RegisterMap(registers=(Register(name="start", offset=0x0, access=Access.W1S, width=1),
...                               Register(name="keep", offset=0x8, low=1, high=196, reset=196)))
>>> regs.error_offset, regs.addr_width
(12, 4)
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from amaranth.utils import ceil_log2

from tokensift.checks import check_bool, check_int

__all__ = ["AxiDmaConfig", "Access", "Register", "RegisterMap", "ErrorCode", "BOUNDARY_BYTES", "example_regmap"]

#: an INCR burst must not cross a 4 KiB boundary (AXI4 A3.4.1)
BOUNDARY_BYTES = 4096


@dataclass(frozen=True)
class AxiDmaConfig:
    """One AXI4 master DMA (reader or writer); all keyword-only and validated.

    Attributes:
        data_bytes: bytes per bus word, 8 (64-bit) or 16 (128-bit) as on Zynq HP ports, or 4 or 32.
        addr_width: byte-address width (12..64).
        max_burst: beats per INCR burst at most (1..256); bursts are also cut at every 4 KiB boundary.
        max_outstanding: bursts in flight at most (1..16): addresses issued whose data (reader) or
            response (writer) has not completed.
        length_bits: width of a command's byte length (a command moves 1 .. 2**length_bits - 1 bytes).
        id_width: width of the ID signals (always driven 0: one ID, in order).
    """

    data_bytes: int = 8
    addr_width: int = 32
    max_burst: int = 16
    max_outstanding: int = 4
    length_bits: int = 24
    id_width: int = 1

    def __post_init__(self):
        check_int("data_bytes", self.data_bytes, low=4, high=32, numpy=False)
        if self.data_bytes & (self.data_bytes - 1):
            raise ValueError(f"data_bytes must be a power of two, not {self.data_bytes}")
        check_int("addr_width", self.addr_width, low=12, high=64, numpy=False)
        check_int("max_burst", self.max_burst, low=1, high=256, numpy=False)
        if self.max_burst * self.data_bytes > BOUNDARY_BYTES:
            raise ValueError(f"max_burst ({self.max_burst}) x data_bytes ({self.data_bytes}) must be at most "
                             f"{BOUNDARY_BYTES} bytes, the 4 KiB a burst may span")
        check_int("max_outstanding", self.max_outstanding, low=1, high=16, numpy=False)
        check_int("length_bits", self.length_bits, low=ceil_log2(self.data_bytes) + 1, high=self.addr_width,
                  numpy=False)
        check_int("id_width", self.id_width, low=1, high=16, numpy=False)

    @property
    def data_bits(self) -> int:
        return 8 * self.data_bytes

    @property
    def size_code(self) -> int:
        """``AxSIZE``: log2 of the bytes per beat (every beat is a full bus word)."""
        return ceil_log2(self.data_bytes)

    @property
    def burst_bytes(self) -> int:
        return self.max_burst * self.data_bytes

    @property
    def word_bits(self) -> int:
        """Width of a count of bus words of one command."""
        return self.length_bits - self.size_code + 1

    @property
    def max_length(self) -> int:
        return (1 << self.length_bits) - 1

    def as_dict(self) -> dict:
        return {"data_bytes": self.data_bytes, "addr_width": self.addr_width, "max_burst": self.max_burst,
                "max_outstanding": self.max_outstanding, "length_bits": self.length_bits,
                "id_width": self.id_width}


class Access(enum.Enum):
    """What the host may do with a register."""

    #: read/write; the fabric sees the value
    RW = "rw"
    #: read-only; the fabric drives the value (status, counters)
    RO = "ro"
    #: the fabric sets bits with one-cycle pulses; the host reads them and writes 1 to clear (done, interrupts)
    W1C = "w1c"
    #: the host writes 1 to send a one-cycle pulse to the fabric (start); reads return 0
    W1S = "w1s"


class ErrorCode(enum.IntEnum):
    """The code field of the error register: why the first rejected write since the last clear failed."""

    NONE = 0
    #: a value outside the register's valid range (not applied; the bus answered SLVERR)
    RANGE = 1
    #: a write to a read-only register (the bus answered SLVERR)
    READ_ONLY = 2
    #: a write to an unmapped address (the bus answered DECERR)
    UNMAPPED = 3


_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


@dataclass(frozen=True)
class Register:
    """One 32-bit-aligned register of the map.

    Attributes:
        name: a lower-case identifier; the fabric port of the register has this name.
        offset: byte offset (a multiple of 4).
        width: bits 1..32 (the rest of the word reads 0 and ignores writes).
        access: :class:`Access`.
        reset: value after reset (RW only; within the valid range).
        low, high: the valid range of an RW register's value (inclusive, unsigned); a write whose result
            falls outside it is not applied and is flagged in the error register.
        irq: a W1C register whose set bits raise ``irq``.
    """

    name: str
    offset: int
    width: int = 32
    access: Access = Access.RW
    reset: int = 0
    low: int | None = None
    high: int | None = None
    irq: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise TypeError(f"register name must be a string, not {type(self.name).__name__}")
        if not _NAME.match(self.name):
            raise ValueError(f"register name must be a lower-case identifier, not {self.name!r}")
        check_int(f"{self.name} offset", self.offset, low=0, numpy=False)
        if self.offset % 4:
            raise ValueError(f"{self.name} offset must be a multiple of 4, not {self.offset}")
        check_int(f"{self.name} width", self.width, low=1, high=32, numpy=False)
        if not isinstance(self.access, Access):
            raise TypeError(f"{self.name} access must be an Access, not {type(self.access).__name__}")
        check_bool(f"{self.name} irq", self.irq)
        if self.irq and self.access is not Access.W1C:
            raise ValueError(f"{self.name} raises irq, which only a W1C register can")
        top = (1 << self.width) - 1
        ranged = self.low is not None or self.high is not None
        if ranged and self.access is not Access.RW:
            raise ValueError(f"{self.name} has a valid range, which only an RW register can have")
        low = check_int(f"{self.name} low", 0 if self.low is None else self.low, low=0, high=top, numpy=False)
        high = check_int(f"{self.name} high", top if self.high is None else self.high, low=low, high=top,
                         numpy=False)
        check_int(f"{self.name} reset", self.reset, low=0, high=top, numpy=False)
        if self.reset and self.access is not Access.RW:
            raise ValueError(f"{self.name} has a reset value, which only an RW register can have")
        if not low <= self.reset <= high:
            raise ValueError(f"{self.name} reset {self.reset} must be within its range {low}..{high}")

    @property
    def valid_low(self) -> int:
        return 0 if self.low is None else self.low

    @property
    def valid_high(self) -> int:
        return (1 << self.width) - 1 if self.high is None else self.high

    @property
    def ranged(self) -> bool:
        """Whether some value of its width is out of range (a check is built)."""
        return self.valid_low > 0 or self.valid_high < (1 << self.width) - 1


@dataclass(frozen=True)
class RegisterMap:
    """The register bank's map: the registers and, after them (or at ``error_offset``), the error register.

    The error register (read; write 1 to bit 0 to clear it) holds: bit 0, a rejected write happened since
    the last clear; bits 7..4, the :class:`ErrorCode` of the first; bits 31..16, its word address
    (byte address / 4). With ``error_irq`` a pending error also raises ``irq``.
    """

    registers: tuple[Register, ...]
    error_offset: int | None = None
    error_irq: bool = True
    addr_width: int | None = None

    def __post_init__(self):
        if not isinstance(self.registers, tuple) or not all(isinstance(r, Register) for r in self.registers):
            raise TypeError("registers must be a tuple of Register")
        if not self.registers:
            raise ValueError("registers must hold at least one register")
        if len(self.registers) > 64:
            raise ValueError(f"registers must hold at most 64 registers, not {len(self.registers)}")
        names, offsets = set(), set()
        for r in self.registers:
            if r.name in names or r.name in ("error", "irq"):
                raise ValueError(f"register name {r.name!r} is used twice (error and irq are the bank's own)")
            if r.offset in offsets:
                raise ValueError(f"register offset {r.offset:#x} ({r.name}) is used twice")
            names.add(r.name)
            offsets.add(r.offset)
        if self.error_offset is None:
            object.__setattr__(self, "error_offset", max(offsets) + 4)
        check_int("error_offset", self.error_offset, low=0, numpy=False)
        if self.error_offset % 4 or self.error_offset in offsets:
            raise ValueError(f"error_offset must be a free multiple of 4, not {self.error_offset:#x}")
        check_bool("error_irq", self.error_irq)
        need = max(3, ceil_log2(max(self.error_offset, *offsets) + 4))
        if self.addr_width is None:
            object.__setattr__(self, "addr_width", need)
        # the error register keeps a 16-bit word address
        check_int("addr_width", self.addr_width, low=need, high=18, numpy=False)

    def by_name(self, name: str) -> Register:
        for r in self.registers:
            if r.name == name:
                return r
        raise KeyError(name)

    def as_dict(self) -> dict:
        return {"addr_width": self.addr_width, "error_offset": self.error_offset, "error_irq": self.error_irq,
                "registers": [{"name": r.name, "offset": r.offset, "width": r.width, "access": r.access.value,
                               "reset": r.reset, "low": r.low, "high": r.high, "irq": r.irq}
                              for r in self.registers]}

    @classmethod
    def from_dict(cls, d: dict) -> RegisterMap:
        regs = tuple(Register(name=r["name"], offset=r["offset"], width=r.get("width", 32),
                              access=Access(r.get("access", "rw")), reset=r.get("reset", 0), low=r.get("low"),
                              high=r.get("high"), irq=r.get("irq", False)) for r in d["registers"])
        return cls(registers=regs, error_offset=d.get("error_offset"), error_irq=d.get("error_irq", True),
                   addr_width=d.get("addr_width"))


def example_regmap() -> RegisterMap:
    """A control block in the shape the whole-model accelerator needs (the CLI's and the benchmarks' default):
    start (W1S), done (W1C, raises irq), the method and keep settings with valid ranges, SaiT's density, the
    program's DRAM address, a cycle counter and a status word (RO); gaps left unmapped."""
    return RegisterMap(registers=(
        Register(name="start", offset=0x00, width=1, access=Access.W1S),
        Register(name="done", offset=0x04, width=2, access=Access.W1C, irq=True),
        Register(name="method", offset=0x08, width=3, low=0, high=5),
        Register(name="keep", offset=0x0C, width=8, low=1, high=196, reset=196),
        Register(name="density", offset=0x10, width=17, low=100, high=65536, reset=65536),
        Register(name="cycles", offset=0x18, access=Access.RO),
        Register(name="status", offset=0x1C, width=5, access=Access.RO),
        Register(name="program", offset=0x40),
    ), addr_width=8)
