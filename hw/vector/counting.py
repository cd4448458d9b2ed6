"""A saturating count of per-lane events (values that did not fit), timed by construction.

:func:`tokensift.hw.common.fixed.count_overflows` counts one event per cycle; a unit that handles
``lanes`` values per cycle counts up to ``lanes`` per cycle, so the events are registered, their
population count is registered, and only then added to the counter, which stops at its maximum (the
count of an :class:`~tokensift.quant.fixed.OverflowCounter`, clipped to the counter's width).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, Value

__all__ = ["COUNT_LATENCY", "count_lane_events", "popcount"]

#: cycles from the events to the counter holding them
COUNT_LATENCY = 3


def popcount(bits: Value) -> Value:
    """The number of ones in ``bits``, as a balanced tree of adders."""
    terms = [bits[i] for i in range(len(bits))]
    if not terms:
        return Value.cast(0)
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


def count_lane_events(m: Module, counter: Signal, events: Value) -> None:
    """Add the number of ones of ``events`` (sampled every cycle) to ``counter``, saturating;
    :data:`COUNT_LATENCY` cycles later. ``counter`` is a ``sync`` register cleared by the domain's reset."""
    events = Value.cast(events)
    pending = Signal(len(events), name=f"{counter.name}_events")
    ones = Signal(range(len(events) + 1), name=f"{counter.name}_ones")
    m.d.sync += [pending.eq(events), ones.eq(popcount(pending))]
    total = Signal(len(counter) + 1, name=f"{counter.name}_next")
    m.d.comb += total.eq(counter + ones)
    m.d.sync += counter.eq(total[-1].replicate(len(counter)) | total[: len(counter)])
