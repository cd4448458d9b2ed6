"""FPGA resources and the per-family rules that turn RTL structure into primitives.

:class:`Resources` is the vocabulary every cost function returns (DSP, block RAM, LUT, FF). The rules
below map the structures our generators emit onto each family's primitives, the way the Yosys flows of
:mod:`tokensift.hw.cost.synth` map them, so that DSP and block-RAM counts are exact:

* :func:`multiplier_dsps` — a ``w1 x w2`` multiplier on DSP48E1 (25x18, ``xc7``), DSP48E2 (27x18,
  ``xcup``) or ECP5 ``MULT18X18D`` (18x18), tiled as Yosys's ``mul2dsp`` tiles it (signed-only 24x17 /
  26x17 / 18x18 partial products, products narrower than 9 bits or operands narrower than 2 bits stay in
  LUTs on Xilinx).
* :func:`map_memory` — a ``width x depth`` memory with one write port and one read port onto block RAM
  (RAMB18/RAMB36 by their aspect ratios 16Kx1 .. 512x36 / 32Kx1 .. 512x72; ECP5 18 Kb EBR, 16Kx1 ..
  512x36), LUT RAM or flip-flops, choosing like Yosys's ``memory_libmap``: every candidate's cost
  (blocks x block cost + address-decoding muxes + emulated features) is compared with the cost of soft
  logic (one per bit) and the cheapest wins.
* LUT and FF counts of control and datapath logic are linear functions of a block's structure whose
  coefficients are fitted from synthesis (:func:`lut_ff_coefficients`, written by
  ``bench/fit_cost_model.py`` into ``tokensift/data/lut_ff_fit.json``).

>>> multiplier_dsps(8, 8, family="xcup"), multiplier_dsps(32, 15, family="xc7")
(1, 2)
>>> m = map_memory(16, 197, family="xcup")
>>> m.kind, m.primitive, m.count
('block', 'RAMB18', 1)
>>> (Resources(dsp=2, lut=10) * 3 + Resources(bram18=1)).dsp
6
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from functools import cache, lru_cache
from importlib import resources as importlib_resources

from tokensift.checks import check_count
from tokensift.errors import TokensiftError

__all__ = [
    "MissingFitError",
    "FAMILIES",
    "Family",
    "Resources",
    "MemoryMap",
    "family_info",
    "check_family",
    "multiplier_dsps",
    "const_operand_bits",
    "map_memory",
    "memory_soft_features",
    "lut_ff_coefficients",
    "use_fit_table",
    "fitted",
]


@dataclass(frozen=True)
class Family:
    """What the rules need to know about a device family."""

    name: str
    vendor: str
    lut_inputs: int
    dsp_primitive: str
    dsp_a: int  # widest A operand of one DSP multiplier
    dsp_b: int
    dsp_a_partial: int  # A-slice width of the partial products of a split multiplier
    dsp_signed_only: bool
    dsp_y_min: int  # narrower products stay in LUTs
    bram_kinds: tuple[str, ...]


FAMILIES: dict[str, Family] = {
    "xcup": Family("xcup", "xilinx", 6, "DSP48E2", 27, 18, 18, True, 9, ("bram18", "bram36")),
    "xc7": Family("xc7", "xilinx", 6, "DSP48E1", 25, 18, 18, True, 9, ("bram18", "bram36")),
    "ecp5": Family("ecp5", "lattice", 4, "MULT18X18D", 18, 18, 18, False, 0, ("ebr",)),
}


def check_family(family) -> str:
    if not isinstance(family, str):
        raise TypeError(f"family must be a string, not {type(family).__name__}")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
    return family


def family_info(family: str) -> Family:
    return FAMILIES[check_family(family)]


# -- resources ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Resources:
    """DSP slices (ECP5: MULT18X18D), Xilinx RAMB18/RAMB36 and URAM, ECP5 EBR, LUTs and flip-flops.

    Adds with ``+`` and scales with ``* k`` (k copies). LUT and FF may be fractional estimates; the
    counts of hard blocks are integers.
    """

    dsp: int = 0
    bram18: int = 0
    bram36: int = 0
    uram: int = 0
    ebr: int = 0
    lut: float = 0.0
    ff: float = 0.0

    def __add__(self, other: Resources) -> Resources:
        if not isinstance(other, Resources):
            return NotImplemented
        return Resources(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __radd__(self, other):
        if other == 0:  # sum() starts from 0
            return self
        return NotImplemented

    def __mul__(self, k: int) -> Resources:
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise TypeError(f"resources scale by a non-negative integer (copies), not {k!r}")
        return Resources(**{f.name: getattr(self, f.name) * k for f in fields(self)})

    __rmul__ = __mul__

    @property
    def bram36_equiv(self) -> float:
        """Block RAM in RAMB36 units (a RAMB18 is half of one)."""
        return self.bram36 + self.bram18 / 2

    def as_dict(self, family: str | None = None) -> dict:
        """Rounded counts. ``bram36`` is in RAMB36 equivalents (what a device's BRAM capacity counts);
        ``bram36_blocks`` / ``bram18_blocks`` are the primitives themselves. With a family, only the keys
        that family has (ECP5: ``dsp``, ``ebr``, ``lut``, ``ff``)."""
        out = {"dsp": int(self.dsp), "bram36": self.bram36_equiv, "bram36_blocks": int(self.bram36),
               "bram18_blocks": int(self.bram18), "uram": int(self.uram), "ebr": int(self.ebr),
               "lut": int(round(self.lut)), "ff": int(round(self.ff))}
        if family is None:
            return out
        info = family_info(family)
        if info.vendor == "lattice":
            return {k: out[k] for k in ("dsp", "ebr", "lut", "ff")}
        return {k: out[k] for k in ("dsp", "bram36", "bram36_blocks", "bram18_blocks", "uram", "lut", "ff")}


# -- multipliers -------------------------------------------------------------------------------------
def _mul_dsps(info: Family, a: int, b: int, a_signed: bool, b_signed: bool, y: int, generic: bool) -> int:
    # one step of Yosys's techlibs/common/mul2dsp.v (generic: the cell is the original $mul)
    if generic and a < b:
        a, b, a_signed, b_signed = b, a, b_signed, a_signed
    if a < 2 or b < 2 or y < info.dsp_y_min:
        return 0  # soft multiplier
    if info.dsp_signed_only and generic and not a_signed and not b_signed:
        return _mul_dsps(info, a + 1, b + 1, True, True, y, generic)
    head = 1 if info.dsp_signed_only else 0
    if a > info.dsp_a:
        step = info.dsp_a_partial - head
        n = (a - info.dsp_a + info.dsp_a_partial - head - 1) // step
        part_y = min(y, b + info.dsp_a_partial)
        last_a = a - n * step
        return (n * _mul_dsps(info, info.dsp_a_partial, b, bool(head), b_signed, part_y, False)
                + _mul_dsps(info, last_a, b, a_signed, b_signed, b + last_a, False))
    if b > info.dsp_b:
        step = info.dsp_b - head  # DSP_B_MAXWIDTH_PARTIAL defaults to DSP_B_MAXWIDTH
        n = (b - info.dsp_b + info.dsp_b - head - 1) // step
        part_y = min(y, a + info.dsp_b)
        last_b = b - n * step
        return (n * _mul_dsps(info, a, info.dsp_b, a_signed, bool(head), part_y, False)
                + _mul_dsps(info, a, last_b, a_signed, b_signed, a + last_b, False))
    return 1


def const_operand_bits(value: int, *, signed: bool) -> int:
    """Width of a positive constant multiplier as Yosys multiplies by it: trailing zero bits become a
    shift of the product, the odd part takes ``bit_length`` bits, one more next to a signed operand."""
    check_count("a constant multiplier", value, numpy=False)
    odd = value >> ((value & -value).bit_length() - 1)
    return odd.bit_length() + int(signed)


def multiplier_dsps(a_bits: int, b_bits: int, *, family: str, signed: bool = True, y_bits: int | None = None) -> int:
    """DSP primitives of one ``a_bits x b_bits`` multiplier (both operands signed, or both unsigned).

    ``y_bits`` is the width of the product actually used (default: the full ``a_bits + b_bits``).
    Multiplying by a power of two costs no DSP; pass the operand widths Yosys sees after constant
    folding (:func:`const_operand_bits` for a constant).
    """
    info = family_info(family)
    for name, value in (("a_bits", a_bits), ("b_bits", b_bits)):
        check_count(name, value, numpy=False)
    y = a_bits + b_bits if y_bits is None else y_bits
    return _mul_dsps(info, a_bits, b_bits, signed, signed, y, True)


# -- memories ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Ram:
    """One candidate of a family's RAM library (a Yosys memlib entry, one option choice)."""

    name: str
    kind: str  # "distributed" or "block"
    abits: int
    widths: tuple[int, ...]
    cost: float
    widthscale: float
    byte: int
    port_max: int  # widest width the ports reach (index into widths)
    port_min: int  # narrowest width the write port accepts (index)
    primitive: str
    global_width: bool = False
    sync_only: bool = False  # block RAM: synchronous read ports only
    per_replica: dict | None = None  # resource counts per replica: {"bram18": 1} / {"lut": 8}
    cells: int = 1  # primitives per replica
    lut_per_bit: int = 0  # LUT RAM built of 1-bit cells: LUTs per used bit


def _lutram_xcup() -> list[_Ram]:
    r = []
    for name, options in (
        ("DP", ((5, 8, "RAM32M16", 8, 0), (6, 4, "RAM64X1D", 0, 2), (7, 2, "RAM128X1D", 0, 4),
                (8, 1, "RAM256X1D", 0, 8))),
        ("QP", ((5, 4, "RAM32M16", 8, 0), (6, 2, "RAM64M8", 8, 0))),
        ("OP", ((5, 2, "RAM32M16", 8, 0), (6, 1, "RAM64M8", 8, 0))),
        ("SDP", ((5, 14, "RAM32M16", 8, 0), (6, 7, "RAM64M8", 8, 0))),
    ):
        for abits, width, prim, luts, per_bit in options:
            r.append(_Ram(f"LUTRAM_{name}{abits}", "distributed", abits, (width,), 16, 16, 0, 0, 0, prim,
                          global_width=True, per_replica={"lut": luts}, lut_per_bit=per_bit))
    return r


def _lutram_xc7() -> list[_Ram]:
    r = []
    for name, cost, ws, options in (
        ("DP", 8, 8, ((5, 4, "RAM32M", 4, 0), (6, 2, "RAM64X1D", 0, 2), (7, 1, "RAM128X1D", 0, 4))),
        ("QP", 7, 7, ((5, 2, "RAM32M", 4, 0), (6, 1, "RAM64M", 4, 0))),
        ("SDP", 8, 7, ((5, 6, "RAM32M", 4, 0), (6, 3, "RAM64M", 4, 0))),
    ):
        for abits, width, prim, luts, per_bit in options:
            r.append(_Ram(f"LUTRAM_{name}{abits}", "distributed", abits, (width,), cost, ws, 0, 0, 0, prim,
                          global_width=True, per_replica={"lut": luts}, lut_per_bit=per_bit))
    return r


_XILINX_BRAM = [
    # true dual port: RAMB18 (HALF), RAMB36 (FULL), two cascaded RAMB36 (CASCADE)
    _Ram("TDP_HALF", "block", 14, (1, 2, 4, 9, 18), 129, 0, 9, 4, 0, "RAMB18", sync_only=True,
         per_replica={"bram18": 1}),
    _Ram("TDP_FULL", "block", 15, (1, 2, 4, 9, 18, 36), 257, 0, 9, 5, 0, "RAMB36", sync_only=True,
         per_replica={"bram36": 1}),
    _Ram("TDP_CASCADE", "block", 16, (1, 2, 4, 9), 513, 0, 9, 3, 0, "RAMB36", sync_only=True,
         per_replica={"bram36": 2}, cells=2),
    # simple dual port: the write and read ports are 36 (HALF) / 72 (FULL) wide
    _Ram("SDP_HALF", "block", 14, (1, 2, 4, 9, 18, 36), 129, 0, 9, 5, 5, "RAMB18", sync_only=True,
         per_replica={"bram18": 1}),
    _Ram("SDP_FULL", "block", 15, (1, 2, 4, 9, 18, 36, 72), 257, 0, 9, 6, 6, "RAMB36", sync_only=True,
         per_replica={"bram36": 1}),
]

_LIBRARIES: dict[str, list[_Ram]] = {
    "xcup": _lutram_xcup() + _XILINX_BRAM,
    "xc7": _lutram_xc7() + _XILINX_BRAM,
    "ecp5": [
        _Ram("DPR16X4", "distributed", 4, (4,), 4, 0, 0, 0, 0, "TRELLIS_DPR16X4", global_width=True,
             per_replica={"lut": 6}),
        _Ram("DP16KD", "block", 14, (1, 2, 4, 9, 18), 128, 0, 9, 4, 0, "DP16KD", sync_only=True,
             per_replica={"ebr": 1}),
        _Ram("PDPW16KD", "block", 14, (1, 2, 4, 9, 18, 36), 128, 0, 9, 5, 5, "PDPW16KD", sync_only=True,
             per_replica={"ebr": 1}),
    ],
}

#: emulation score of a one-write, one-read memory (the read port never shares the write port's address):
#: one point for the unshared read port; ECP5 block RAM also emulates its read-port reset/initial value
_EMU_SCORE = {("xcup", "distributed"): 1, ("xcup", "block"): 1, ("xc7", "distributed"): 1,
              ("xc7", "block"): 1, ("ecp5", "distributed"): 1, ("ecp5", "block"): 7}
_FACTOR_MUX, _FACTOR_DEMUX, _FACTOR_EMU = 0.5, 0.5, 2


@dataclass(frozen=True)
class MemoryMap:
    """How one memory maps.

    ``kind`` is "block", "distributed" or "logic"; ``primitive`` and ``count`` say which cells and how
    many; ``blocks`` are their resources (block RAMs, or the LUTs of LUT RAM, exact); ``ff`` the
    flip-flops around them (exact structure: the data register of a synchronous read from asynchronous
    LUT RAM, the registered select of the multiplexer over address ranges, the storage of a memory left
    in flip-flops, and on ECP5 the read-first emulation of block RAM: write data, write address and read
    data registers, because Yosys's EBR ports do not return the old data on a same-address collision);
    ``soft`` the structure of the soft logic around them (the multiplexer over address ranges and the
    write-enable decoder when a memory spans several primitive depths, the ECP5 read-first bypass, a
    memory or ROM left in logic), whose LUTs (:attr:`lut`) come from the fitted ``memory`` model.
    """

    width: int
    depth: int
    kind: str
    primitive: str
    count: int
    blocks: Resources
    mux_ways: int
    ff: int
    soft: dict = field(default_factory=dict, compare=False)
    #: a block RAM's port width in bits (one of the primitive's widths), 0 for the other kinds
    unit: int = field(default=0, compare=False)

    @property
    def lut(self) -> float:
        """LUTs of the soft logic (fitted per family from the memory probes' synthesis)."""
        if not any(self.soft.values()):
            return 0.0
        family = self.soft["family"]
        coefs = lut_ff_coefficients("memory", family)["lut"]
        return max(0.0, sum(coefs.get(k, 0.0) * v for k, v in self.soft.items() if k != "family"))

    @property
    def resources(self) -> Resources:
        return self.blocks + Resources(lut=self.lut, ff=self.ff)


def memory_soft_features(m: MemoryMap) -> dict[str, float]:
    """The soft-logic structure of a mapped memory (what the ``memory`` LUT fit is linear in)."""
    return {k: float(v) for k, v in m.soft.items() if k != "family"}


def _geometry(ram: _Ram, width: int, depth: int, rom: bool = False,
              granularity: int | None = None) -> tuple[float, int, int, int] | None:
    """(cost, replicas, address ranges, unit width) of the best base width, as memory_libmap picks it.

    With a write ``granularity`` (one enable per ``granularity`` bits) every enable group starts on a RAM
    byte lane (memory_libmap's swizzle pads each group to whole bytes of the primitive) and the write-enable
    demultiplexer decodes every group."""
    g = width if granularity is None or rom else min(granularity, width)
    groups = [g] * (width // g) + ([width % g] if width % g else [])
    best = None
    best_cost = 0
    for base in range(len(ram.widths)):
        unit_idx = min(base, ram.port_max)
        if unit_idx != base and best is not None:
            break
        if base < ram.port_min and base < _byte_index(ram):
            continue  # the write port cannot be this narrow
        unit = ram.widths[unit_idx]
        eb = 1 if rom else (ram.byte if 0 < ram.byte <= unit else unit)
        swizzle = sum(-(-n // eb) * eb for n in groups)
        addrs = 1 << (ram.abits - base)
        mult_a = (depth - 1) // addrs + 1
        repl = -(-(mult_a * swizzle) // unit)
        score_demux = mult_a * len(groups) if (mult_a != 1 and not rom) else 0
        score_mux = (mult_a - 1) * width
        cost = (ram.cost - ram.widthscale) * repl + ram.widthscale * mult_a * width / unit
        cost += score_mux * _FACTOR_MUX + score_demux * _FACTOR_DEMUX
        if best is None or cost < best_cost:
            best = (cost, repl, mult_a, unit)
            best_cost = int(cost)  # memory_libmap keeps the best cost in an int
        if ram.global_width:
            break
    return best


def _byte_index(ram: _Ram) -> int:
    if ram.byte == 0:
        return len(ram.widths) - 1
    return max(i for i, w in enumerate(ram.widths) if ram.byte >= w)


#: memory_libmap's cost of one bit of ROM left in soft logic (Xilinx flows pass 1/64: one LUT6 holds 64
#: bits; the default elsewhere is 1/16, one LUT4); one bit of RAM costs 1
_LOGIC_COST_ROM = {"xcup": 1 / 64, "xc7": 1 / 64, "ecp5": 1 / 16}


@lru_cache(maxsize=4096)
def map_memory(width: int, depth: int, *, family: str, sync_read: bool = True, rom: bool = False,
               granularity: int | None = None) -> MemoryMap:
    """Map a ``width x depth`` memory onto the family's primitives.

    The memory has one write port and one read port (synchronous by default, at an address independent
    of the write address, with or without a read enable; one write enable, or with ``granularity`` one per
    that many bits, as ``amaranth.lib.memory``'s ``write_port(granularity=...)``), or, with ``rom=True``,
    one synchronous read port and initial contents only.
    """
    check_family(family)
    for name, value in (("width", width), ("depth", depth)):
        check_count(f"memory {name}", value, numpy=False)
    if rom and not sync_read:
        raise ValueError("a ROM is read synchronously (sync_read=True)")
    if granularity is not None:
        check_count("write granularity", granularity, numpy=False)
        if rom:
            raise ValueError("a ROM has no write port to give a granularity")
    logic_cost = width * depth * (_LOGIC_COST_ROM[family] if rom else 1.0)
    candidates = []  # prune: cheapest per kind, the first on ties
    for ram in _LIBRARIES[family]:
        if (ram.sync_only and not sync_read) or (rom and ram.kind == "distributed"):
            continue  # LUT RAM libraries are pruned for ROMs
        geom = _geometry(ram, width, depth, rom=rom, granularity=granularity)
        if geom is None:
            continue
        emu = 1 if rom else _EMU_SCORE[(family, ram.kind)]  # a ROM has no write port to emulate against
        cost = geom[0] + emu * _FACTOR_EMU
        same = [i for i, c in enumerate(candidates) if c[1].kind == ram.kind]
        if same:
            if cost < candidates[same[0]][0]:
                candidates[same[0]] = (cost, ram, geom)
        else:
            candidates.append((cost, ram, geom))
    candidates.sort(key=lambda c: _LIBRARIES[family].index(c[1]))
    chosen = None
    best = int(logic_cost)
    for cost, ram, geom in candidates:
        if cost < best:
            chosen, best = (ram, geom), int(cost)
    read_reg = width if sync_read else 0
    soft = {"family": family, "range_mux_bits": 0, "ranges": 0, "emu_bits": 0, "emu_addr_bits": 0,
            "logic_bits": 0, "rom_lut_bits": 0}
    if chosen is None and rom:
        # a table of constants: every output bit is a function of the address (one LUT per LUT-sized
        # slice of the table, combined by the slice multiplexers), then the read register
        per_bit = -(-depth // (1 << family_info(family).lut_inputs))
        soft["rom_lut_bits"] = per_bit * width
        return MemoryMap(width, depth, "logic", "LUT", 0, Resources(), 1, read_reg, soft)
    if chosen is None:
        soft["logic_bits"] = width * depth
        return MemoryMap(width, depth, "logic", "FF", width * depth, Resources(), depth,
                         width * depth + read_reg, soft)
    ram, (_, repl, mult_a, unit) = chosen
    if ram.lut_per_bit:  # one 1-bit cell per used bit
        count = min(width * mult_a, repl * unit)
        blocks = Resources(lut=ram.lut_per_bit * count)
    else:
        per = ram.per_replica or {}
        count = repl * ram.cells
        blocks = Resources(**{k: v * repl for k, v in per.items()})
    if mult_a > 1:
        soft["range_mux_bits"] = (mult_a - 1) * width
        soft["ranges"] = 0 if rom else mult_a
    if ram.kind == "block":
        select = (mult_a - 1).bit_length() if mult_a > 1 else 0  # registered select of the range multiplexer
        if family == "ecp5" and not rom:
            abits = max(1, (depth - 1).bit_length())
            soft["emu_bits"], soft["emu_addr_bits"] = width, abits
            return MemoryMap(width, depth, "block", ram.primitive, count, blocks, mult_a,
                             2 * width + abits + 2 + select, soft, unit)
        return MemoryMap(width, depth, "block", ram.primitive, count, blocks, mult_a, select, soft, unit)
    # LUT RAM reads asynchronously: a synchronous read port gets its data register in flip-flops
    return MemoryMap(width, depth, "distributed", ram.primitive, count, blocks, mult_a, read_reg, soft)


# -- fitted LUT / FF coefficients ------------------------------------------------------------------------
class MissingFitError(TokensiftError, LookupError):
    """No fitted LUT/FF coefficients for a block and family (run ``bench/fit_cost_model.py``)."""


_FIT_OVERRIDE: dict | None = None


def use_fit_table(table: dict | None) -> None:
    """Use ``table`` instead of ``tokensift/data/lut_ff_fit.json`` (None: back to the file); for the fit
    script, which fits the memories before the blocks that contain them."""
    global _FIT_OVERRIDE
    _FIT_OVERRIDE = table


def _fit_table() -> dict:
    if _FIT_OVERRIDE is not None:
        return _FIT_OVERRIDE
    return _fit_file()


@cache
def _fit_file() -> dict:
    path = importlib_resources.files("tokensift") / "data" / "lut_ff_fit.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def lut_ff_coefficients(block: str, family: str) -> dict:
    """The fitted ``{"lut": {feature: coef}, "ff": {feature: coef}}`` of ``block`` on ``family``.

    Written by ``bench/fit_cost_model.py`` from the synthesis baselines; a missing entry is an error (an
    estimator must never return 0 silently).
    """
    check_family(family)
    table = _fit_table().get("blocks", {})
    try:
        return table[block][family]
    except KeyError:
        raise MissingFitError(f"no fitted LUT/FF coefficients for block {block!r} on {family}; "
                              f"run `python bench/fit_cost_model.py`") from None


def fitted(block: str, family: str, features: dict[str, float]) -> tuple[float, float]:
    """(LUT, FF) of the fitted linear model: ``sum(coef[k] * features[k])`` (``const`` is the intercept)."""
    coefs = lut_ff_coefficients(block, family)
    out = []
    for metric in ("lut", "ff"):
        total = 0.0
        for name, coef in coefs[metric].items():
            if name == "const":
                total += coef
            elif name not in features:
                raise KeyError(f"feature {name!r} of the {block} {metric} fit is not computed by its model")
            else:
                total += coef * features[name]
        out.append(max(total, 0.0))
    return out[0], out[1]
