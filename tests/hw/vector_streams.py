"""One cycle-by-cycle driver of a component's streams in the Amaranth simulator, for the vector units.

Every cycle each source offers its next payload (or idles with probability ``idle``) and each sink is
ready (or stalls with probability ``stall``), all from one seeded RNG; a transfer is what the clock edge
sees. It records the cycle of every transfer, so a test can compare measured cycles with a formula, and
a test can reset the unit between two calls (the unit wrapped in a ``ResetInserter``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from amaranth.hdl import ResetInserter, Signal
from amaranth.sim import Simulator


@dataclass
class Traffic:
    received: dict = field(default_factory=dict)  # sink name -> payloads
    accepted: dict = field(default_factory=dict)  # source name -> cycles of its transfers
    delivered: dict = field(default_factory=dict)  # sink name -> cycles of its transfers
    cycles: int = 0


async def drive(ctx, dut, *, sources: dict, sinks: dict, rng: random.Random, idle: float = 0.0,
                stall: float = 0.0, until=None, max_cycles: int = 200_000) -> Traffic:
    """Run until every source is empty and each sink got its count (or ``until(traffic)`` holds)."""
    queues = {name: list(items) for name, items in sources.items()}
    traffic = Traffic(received={n: [] for n in sinks}, accepted={n: [] for n in sources},
                      delivered={n: [] for n in sinks})
    for now in range(max_cycles):
        offered = {}
        for name, queue in queues.items():
            port = getattr(dut, name)
            offer = bool(queue) and rng.random() >= idle
            offered[name] = offer
            if offer:
                ctx.set(port.payload, queue[0])
            ctx.set(port.valid, offer)
        for name in sinks:
            ctx.set(getattr(dut, name).ready, rng.random() >= stall)
        watched = []
        for name in queues:
            watched.append(getattr(dut, name).ready)
        for name in sinks:
            port = getattr(dut, name)
            watched += [port.valid, port.ready, port.payload]
        _, _, *values = await ctx.tick().sample(*watched)
        for i, name in enumerate(queues):
            if offered[name] and values[i]:
                queues[name].pop(0)
                traffic.accepted[name].append(now)
        values = values[len(queues):]
        for i, name in enumerate(sinks):
            valid, ready, payload = values[3 * i: 3 * i + 3]
            if valid and ready:
                traffic.received[name].append(payload)
                traffic.delivered[name].append(now)
        traffic.cycles = now + 1
        done = until(traffic) if until is not None else (
            not any(queues.values()) and all(len(traffic.received[n]) >= c for n, c in sinks.items()))
        if done:
            for name in queues:
                ctx.set(getattr(dut, name).valid, 0)
            return traffic
    raise TimeoutError(f"the streams did not finish in {max_cycles} cycles")


def simulate(dut, body, *, resettable: bool = False):
    """Run ``body(ctx, dut, rst)`` as the only testbench; with ``resettable`` the unit is wrapped in a
    ``ResetInserter`` driven by ``rst``."""
    rst = Signal()
    top = ResetInserter(rst)(dut) if resettable else dut
    result = {}

    async def tb(ctx):
        result["value"] = await body(ctx, dut, rst)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return result["value"]
