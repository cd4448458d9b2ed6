"""Random-stall stream drivers for ``amaranth.lib.stream`` ports in the Amaranth simulator.

One :class:`StreamBench` per simulation: its sources and sinks draw their idle/stall cycles from one
seeded RNG, and :meth:`StreamBench.clock` counts cycles in :attr:`StreamBench.now` so that callbacks can
time-stamp transfers.
"""

from __future__ import annotations

import random


class StreamBench:
    def __init__(self, seed: int, *, idle: float, stall: float):
        self.rng = random.Random(seed)
        self.idle, self.stall = idle, stall
        self.now = 0

    async def clock(self, ctx):
        async for _ in ctx.tick():
            self.now += 1

    def source(self, port, items, on_accept=None):
        """A testbench that sends ``items`` on ``port``, idling a random number of cycles before each;
        ``on_accept(ctx)`` runs after each transfer."""
        async def tb(ctx):
            for item in items:
                while self.rng.random() < self.idle:
                    await ctx.tick()
                ctx.set(port.payload, item)
                ctx.set(port.valid, 1)
                await ctx.tick().until(port.ready)
                ctx.set(port.valid, 0)
                if on_accept is not None:
                    on_accept(ctx)
        return tb

    def ready_stream(self, ctx, port):
        """Set ``port.ready`` for the next cycle (low with probability ``stall``); return what was set."""
        ready = self.rng.random() >= self.stall
        ctx.set(port.ready, ready)
        return ready

    def sink(self, port, out: list, count: int):
        """A testbench that takes ``count`` payloads from ``port`` into ``out``, stalling at random."""
        async def tb(ctx):
            while len(out) < count:
                ready = self.ready_stream(ctx, port)
                _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
                if ready and valid:
                    out.append(payload)
        return tb


def run_to_completion(sim, *, max_cycles: int) -> bool:
    """Advance ``sim`` (clocked on ``sync``) while any critical testbench runs, for at most ``max_cycles``
    cycles; False when one still runs then. Running on to a fixed deadline after the testbenches are done
    only costs simulator time (most of the unit tests' time, before)."""
    cycles = 0

    async def count(ctx):
        nonlocal cycles
        async for _ in ctx.tick():
            cycles += 1

    sim.add_process(count)
    while sim.advance():
        if cycles >= max_cycles:
            return False
    return True
