"""Run-time fixed-point scaling in gates: ``round_shift(x * multiplier, shift)`` with both from registers.

The attention core's per-layer constants arrive at run time (:mod:`tokensift.hw.attention.constants`), so its
two scalings are real multipliers and variable shifters, built to close timing by construction:

- :func:`scaled_product`: ``x * multiplier`` in :data:`PRODUCT_STAGES` registered stages. ``x`` (signed) is
  cut into its low 17 bits (an 18-bit signed operand once zero-extended) and the rest, so each partial
  product is one DSP (``multiplier`` has at most 17 bits: an 18-bit signed operand); the partial products
  are registered, then their sum. Both operands must be registers.
- :func:`round_shift_stages`: ``round_shift(value, shift)`` half up for ``shift = 0 .. shift_max`` in
  :data:`SHIFT_STAGES` registered stages: ``(2 value) >> (shift & ~7)``, then ``>> (shift & 7)``, then
  ``(x + 1) >> 1`` (``((2 v) >> s + 1) >> 1 = floor(v / 2**s + 1/2)``, ``s = 0`` included). No stage
  holds more than an 8-way multiplexer or one adder.

:func:`partial_products` lists the partial products' operand widths for the DSP rule
(:mod:`tokensift.hw.attention.resources`).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal, Value, signed

__all__ = ["LOW_BITS", "PRODUCT_STAGES", "SHIFT_STAGES", "partial_products", "scaled_product",
           "round_shift_stages"]

#: the low part of a split operand: unsigned 17 bits, an 18-bit signed DSP operand when zero-extended
LOW_BITS = 17
#: registered stages of :func:`scaled_product`: the partial products, their sum
PRODUCT_STAGES = 2
#: registered stages of :func:`round_shift_stages`: coarse shift, fine shift, rounding
SHIFT_STAGES = 3


def partial_products(x_bits: int, mult_bits: int) -> list[tuple[int, int]]:
    """Signed operand widths ``(a, b)`` of the partial products of a signed ``x_bits`` value times an
    unsigned ``mult_bits`` multiplier, as :func:`scaled_product` builds them."""
    b = mult_bits + 1
    if x_bits <= LOW_BITS + 1:
        return [(x_bits, b)]
    return [(LOW_BITS + 1, b), (x_bits - LOW_BITS, b)]


def scaled_product(m: Module, x: Value, multiplier: Value, *, name: str) -> Signal:
    """``x * multiplier`` (``x`` signed, ``multiplier`` unsigned), :data:`PRODUCT_STAGES` cycles later."""
    x, multiplier = Value.cast(x), Value.cast(multiplier)
    mult_s = Cat(multiplier, Const(0, 1)).as_signed()
    width = len(x) + len(multiplier) + 1
    out = Signal(signed(width), name=f"{name}_prod")
    if len(x) <= LOW_BITS + 1:
        one = Signal(signed(width), name=f"{name}_p")
        m.d.sync += [one.eq(x.as_signed() * mult_s), out.eq(one)]
        return out
    lo = Signal(signed(LOW_BITS + 1 + len(mult_s)), name=f"{name}_lo")
    hi = Signal(signed(len(x) - LOW_BITS + len(mult_s)), name=f"{name}_hi")
    m.d.sync += [lo.eq(Cat(x[:LOW_BITS], Const(0, 1)).as_signed() * mult_s),
                 hi.eq(x[LOW_BITS:].as_signed() * mult_s),
                 out.eq((hi << LOW_BITS) + lo)]
    return out


def round_shift_stages(m: Module, value: Value, shift: Value, *, name: str) -> Signal:
    """``round_shift(value, shift)`` half up, :data:`SHIFT_STAGES` cycles later; one bit wider than ``value``.
    ``shift`` (unsigned) is taken in the same cycle as ``value``."""
    value, shift = Value.cast(value), Value.cast(shift)
    width = len(value) + 2
    coarse = Signal(signed(width), name=f"{name}_coarse")
    fine = Signal(signed(width), name=f"{name}_fine")
    rounded = Signal(signed(len(value) + 1), name=f"{name}_round")
    fine_shift = Signal(min(3, len(shift)), name=f"{name}_fine_shift")
    high = shift[3:] if len(shift) > 3 else Const(0, 1)
    m.d.sync += [coarse.eq(Cat(Const(0, 1), value).as_signed() >> Cat(Const(0, 3), high)),
                 fine_shift.eq(shift[:3]),
                 fine.eq(coarse >> fine_shift),
                 rounded.eq((fine + 1) >> 1)]
    return rounded
