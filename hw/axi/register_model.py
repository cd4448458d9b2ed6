"""The reference model of :class:`~tokensift.hw.axi.registers.AxiLiteRegisters`: what every access answers
and does, transaction by transaction (the testbench drives both and compares).

>>> from tokensift.hw.axi.config import Access, Register, RegisterMap
>>> bank = RegisterBankModel(RegisterMap(registers=(Register(name="keep", offset=0, width=8, low=1, high=196,
...                                                          reset=196),)))
>>> bank.write(0x0, 200, 0xF), bank.read(0x0), bank.read(0x4)
(2, (196, 0), (17, 0))
"""

from __future__ import annotations

from tokensift.hw.axi.bus import Resp
from tokensift.hw.axi.config import Access, ErrorCode, RegisterMap

__all__ = ["RegisterBankModel"]


def _byte_mask(strb: int) -> int:
    return sum(0xFF << (8 * b) for b in range(4) if strb >> b & 1)


class RegisterBankModel:
    """Register values, the error register and the pulses a write sends, for one :class:`RegisterMap`."""

    def __init__(self, regmap: RegisterMap):
        if not isinstance(regmap, RegisterMap):
            raise TypeError(f"regmap must be a RegisterMap, not {type(regmap).__name__}")
        self.regmap = regmap
        self._by_word = {r.offset >> 2: r for r in regmap.registers}
        self.reset()

    def reset(self) -> None:
        self.values = {r.name: r.reset for r in self.regmap.registers if r.access in (Access.RW, Access.W1C)}
        self.error = (0, ErrorCode.NONE, 0)

    def _word(self, addr: int) -> int:
        return (addr % (1 << self.regmap.addr_width)) >> 2

    def _reject(self, code: ErrorCode, word: int) -> None:
        if not self.error[0]:
            self.error = (1, code, word & 0xFFFF)

    def write(self, addr: int, data: int, strb: int) -> int:
        """Apply a write; its BRESP. W1S pulses land in :attr:`pulses` (name -> bits of the last write)."""
        self.pulses = {}
        word = self._word(addr)
        mask = _byte_mask(strb)
        if word == self.regmap.error_offset >> 2:
            if strb & 1 and data & 1:
                self.error = (0, ErrorCode.NONE, 0)
            return int(Resp.OKAY)
        r = self._by_word.get(word)
        if r is None:
            self._reject(ErrorCode.UNMAPPED, word)
            return int(Resp.DECERR)
        top = (1 << r.width) - 1
        if r.access is Access.RO:
            self._reject(ErrorCode.READ_ONLY, word)
            return int(Resp.SLVERR)
        if r.access is Access.W1C:
            self.values[r.name] &= ~(data & mask) & top
            return int(Resp.OKAY)
        if r.access is Access.W1S:
            self.pulses[r.name] = data & mask & top
            return int(Resp.OKAY)
        merged = (self.values[r.name] & ~mask | data & mask) & top
        if not r.valid_low <= merged <= r.valid_high:
            self._reject(ErrorCode.RANGE, word)
            return int(Resp.SLVERR)
        self.values[r.name] = merged
        return int(Resp.OKAY)

    def read(self, addr: int, fabric: dict | None = None) -> tuple[int, int]:
        """(RDATA, RRESP) of a read; ``fabric`` holds the values the fabric drives on RO registers."""
        word = self._word(addr)
        if word == self.regmap.error_offset >> 2:
            flag, code, where = self.error
            return flag | int(code) << 4 | where << 16, int(Resp.OKAY)
        r = self._by_word.get(word)
        if r is None:
            return 0, int(Resp.DECERR)
        if r.access is Access.W1S:
            return 0, int(Resp.OKAY)
        if r.access is Access.RO:
            return (fabric or {}).get(r.name, 0) & ((1 << r.width) - 1), int(Resp.OKAY)
        return self.values[r.name], int(Resp.OKAY)

    def set_bits(self, name: str, bits: int) -> None:
        """The fabric sets bits of a W1C register."""
        r = self.regmap.by_name(name)
        if r.access is not Access.W1C:
            raise ValueError(f"{name} is not a W1C register")
        self.values[name] |= bits & ((1 << r.width) - 1)

    @property
    def irq(self) -> bool:
        pending = any(self.values[r.name] for r in self.regmap.registers if r.irq)
        return pending or bool(self.regmap.error_irq and self.error[0])
