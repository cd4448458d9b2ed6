"""Multipliers cut into DSP-sized pieces with registers around each piece: timing by construction on ECP5.

A product wider than one ECP5 ``MULT18X18D`` (18 x 18 signed) is what Yosys's ``mul2dsp`` would tile into
several primitives with the adders of their partial products in the same cycle, and a multiplier whose
operand register also feeds other logic (or other multipliers across the chip) is placed far from it. Here
each operand is cut into chunks of at most 17 unsigned bits (a signed operand's top chunk signed, at most 18
bits), balanced so that no chunk is degenerate; every pair of chunks is one **piece**:

1. operand registers of its own (a copy per piece, so no register drives more than one multiplier; copies of
   one value get distinct initial values, so Yosys's ``opt_merge`` cannot fold them back into one, but it
   merges the copies bit by bit wherever their initial bits agree; an operand held for many cycles, a job's
   constant, is therefore ``steady``: its copies form a chain, each loaded from the one before, so no two have
   the same input and each drives its own multiplier);
2. the piece's product, registered;
3. the pieces summed pairwise, one registered adder level per stage (each sum leaves the low bits that the
   other term does not overlap out of its carry chain).

Elaborated for ECP5 (:func:`tokensift.hw.common.ecp5.is_ecp5`), a piece's operand and product registers are
its MULT18X18D's own input and output registers (Yosys does not pack fabric registers into the DSP, so the
multiplier's 4 ns would otherwise sit between two fabric registers placed around it), the same two cycles.

:func:`product_latency` is the number of stages from the operands to the product; :func:`pieces` lists the
pieces' ``(a_bits, b_bits, signed)`` as the emitted Verilog multiplies them, for the DSP rule
(:func:`tokensift.hw.common.resources.multiplier_dsps`).

>>> from amaranth.hdl import signed, unsigned
>>> chunks(39, False), chunks(25, True), chunks(18, True)
([(0, 13), (13, 13), (26, 13)], [(0, 13), (13, 12)], [(0, 18)])
>>> product_latency(unsigned(9), unsigned(39)), product_latency(signed(25), signed(25))
(4, 4)
>>> pieces(signed(16), unsigned(25))
[(16, 14, True), (16, 13, True)]
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Shape, Signal, Value
from amaranth.utils import ceil_log2

from tokensift.hw.common.ecp5 import is_ecp5, mult18x18d_registered

__all__ = ["CHUNK_BITS", "chunks", "pieces", "product_latency", "register_bits", "Products"]

#: widest unsigned chunk (zero-extended: an 18-bit signed DSP operand)
CHUNK_BITS = 17


def chunks(width: int, is_signed: bool) -> list[tuple[int, int]]:
    """``(offset, width)`` of an operand's chunks, lowest first: as few as fit (unsigned chunks of at most
    :data:`CHUNK_BITS`, a signed top chunk of at most ``CHUNK_BITS + 1``), widths balanced."""
    top = CHUNK_BITS + int(is_signed)
    n = 1 if width <= top else 1 + -(-(width - top) // CHUNK_BITS)
    base, extra = divmod(width, n)
    widths = [base + (1 if i < extra else 0) for i in range(n)]
    out, lo = [], 0
    for w in widths:
        out.append((lo, w))
        lo += w
    return out


def _shape(shape) -> Shape:
    return Shape.cast(shape)


def pieces(a_shape, b_shape) -> list[tuple[int, int, bool]]:
    """``(a_bits, b_bits, signed)`` of each piece as Yosys sees it: both chunks unsigned, an unsigned
    product; otherwise a signed one, an unsigned chunk one bit wider (zero-extended)."""
    a, b = _shape(a_shape), _shape(b_shape)
    ca, cb = chunks(a.width, a.signed), chunks(b.width, b.signed)
    out = []
    for i, (_, wa) in enumerate(ca):
        sa = a.signed and i == len(ca) - 1
        for j, (_, wb) in enumerate(cb):
            sb = b.signed and j == len(cb) - 1
            if sa or sb:
                out.append((wa + int(not sa), wb + int(not sb), True))
            else:
                out.append((wa, wb, False))
    return out


def product_latency(a_shape, b_shape) -> int:
    """Stages from the operands to their product: the operand copies, the pieces, the adder levels."""
    return 2 + ceil_log2(len(pieces(a_shape, b_shape)))


def register_bits(a_shape, b_shape) -> int:
    """Flip-flops of one split product before synthesis trims them: the operand copies, the pieces' products
    and the adder levels (a full-width register per sum)."""
    a, b = _shape(a_shape), _shape(b_shape)
    parts = pieces(a, b)
    return sum(2 * (wa + wb) for wa, wb, _ in parts) + (len(parts) - 1) * (a.width + b.width + 1)


class Products:
    """Builds split, registered multipliers into one module; counts the operand copies it makes, so copies of
    one value get distinct initial values."""

    def __init__(self, m: Module, name: str, *, platform=None):
        self._m = m
        self._name = name
        self._ecp5 = is_ecp5(platform)
        self._copies = 0
        self._count = 0
        self._chains: dict = {}

    @property
    def steady_depth(self) -> int:
        """The longest chain of ``steady`` copies: a steady value's change reaches all its copies this many
        cycles later (0 without steady copies; on ECP5 a product sees it one cycle later still, through its
        DSP's input register)."""
        return max((n for _, n, _ in self._chains.values()), default=0)

    def copy(self, value: Value, *, name: str, steady: bool = False) -> Signal:
        """A register of ``value`` (no reset: it is a datapath copy) that Yosys will not merge with another
        copy of the same value.

        ``steady``: ``value`` stays the same for at least :attr:`steady_depth` cycles before it is used (a job's
        constant); the copy is then loaded from the previous steady copy of ``value`` (the first from
        ``value``), so it has an input of its own: Yosys merges registers of one input bit by bit wherever their
        initial values agree, which distinct initial values cannot prevent for more than two copies."""
        return self._copy(value, name=name, chain=(value,) if steady else None)

    def _copy(self, value, *, name: str, chain: tuple | None) -> Signal:
        """:meth:`copy`; ``chain``: the objects that identify a steady copy's chain (kept referenced, so their
        ids are not reused while the module is built), or None."""
        if chain is not None:
            key = tuple(x if isinstance(x, int) else id(x) for x in chain)
            prev, depth, _ = self._chains.get(key, (value, 0, chain))
        value = Value.cast(value)
        shape = value.shape()
        modulus = 1 << shape.width
        init = self._copies % modulus
        if shape.signed and init >= modulus >> 1:
            init -= modulus
        self._copies += 1
        reg = Signal(shape, init=init, reset_less=True, name=name)
        if chain is None:
            self._m.d.sync += reg.eq(value)
        else:
            self._m.d.sync += reg.eq(prev)
            self._chains[key] = (reg, depth + 1, chain)
        return reg

    def multiply(self, a: Value, b: Value, *, name: str | None = None, steady_b: bool = False) -> Signal:
        """``a * b``, registered, :func:`product_latency` cycles after ``a`` and ``b`` (full width).

        ``steady_b``: ``b`` is a value held for many cycles (a job's constant), its copies are ``steady``
        (:meth:`copy`): this product sees a change of ``b`` up to :attr:`steady_depth` cycles late."""
        m = self._m
        b_source = b
        a, b = Value.cast(a), Value.cast(b)
        tag = name or f"{self._name}{self._count}"
        self._count += 1
        sa, sb = a.shape(), b.shape()
        ca, cb = chunks(sa.width, sa.signed), chunks(sb.width, sb.signed)
        terms = []
        for i, (oa, wa) in enumerate(ca):
            top_a = i == len(ca) - 1
            a_part = a[oa:oa + wa]
            a_part = a_part.as_signed() if (sa.signed and top_a) else a_part
            for j, (ob, wb) in enumerate(cb):
                top_b = j == len(cb) - 1
                b_part = b[ob:ob + wb]
                b_part = b_part.as_signed() if (sb.signed and top_b) else b_part
                if self._ecp5:
                    # the operand and product registers are the MULT18X18D's own (same two cycles); a steady
                    # operand still comes down its chain (its lateness does not matter, its fan-out does)
                    if steady_b:
                        b_part = self._copy(b_part, name=f"{tag}_b{i}{j}", chain=(b_source, ob, wb))
                    p = mult18x18d_registered(m, f"{tag}_m{i}{j}", a_part, b_part)
                else:
                    ra = self.copy(a_part, name=f"{tag}_a{i}{j}")
                    rb = self._copy(b_part, name=f"{tag}_b{i}{j}", chain=(b_source, ob, wb) if steady_b else None)
                    prod = ra * rb
                    p = Signal(prod.shape(), name=f"{tag}_p{i}{j}")
                    m.d.sync += p.eq(prod)
                terms.append((oa + ob, p))
        terms.sort(key=lambda t: t[0])
        level = 0
        while len(terms) > 1:
            nxt = []
            for k in range(0, len(terms), 2):
                if k + 1 == len(terms):
                    off, t = terms[k]
                    r = Signal(t.shape(), name=f"{tag}_s{level}_{k // 2}")
                    m.d.sync += r.eq(t)
                    nxt.append((off, r))
                    continue
                (o0, t0), (o1, t1) = terms[k], terms[k + 1]
                d = o1 - o0
                if d:
                    high = (t0 >> d) + t1
                    value = Cat(t0[:d], high)
                    value = value.as_signed() if high.shape().signed else value
                else:
                    value = t0 + t1
                r = Signal(value.shape(), name=f"{tag}_s{level}_{k // 2}")
                m.d.sync += r.eq(value)
                nxt.append((o0, r))
            terms = nxt
            level += 1
        off, total = terms[0]
        assert off == 0
        return total
