"""Simulation-only wrapper of :class:`tokensift.hw.attention.core.Attention` for cocotb/Verilator.

Two modes on one build (so a configuration is compiled once):

- **pass-through** (``bulk = 0``): ``k_stream``, ``i_stream``, ``o_stream`` and ``s_stream`` reach the
  core's through two-entry FIFOs, for per-cycle drivers with random stalls (:mod:`tokensift.sim.streams`).
- **bulk** (``bulk = 1``): the testbench writes whole frames into ``in_mem`` and one constants beat per
  frame into ``k_mem`` through VPI (zero simulated time), pulses ``start`` and awaits ``done`` (the
  controls take effect one cycle later: they are registered); the harness feeds the core from ``in_mem``
  and ``k_mem`` every cycle (always valid) and writes every output beat into ``o_mem`` / ``s_mem`` (always
  ready). No Python runs per cycle, so Verilator runs at full speed.

In both modes ``cycles`` is the number of cycles from the first input transfer after ``start`` to the
latest output transfer, and ``elapsed`` counts cycles since ``start``.

Clock: the design runs on ``clk`` (driven by cocotb) or, with ``internal_clock=True`` and ``clk_sel =
1``, on a free-running clock from a small Verilog module (:data:`CLKGEN_VERILOG`, built with
Verilator's ``--timing``): in bulk mode then not even the clock crosses the VPI, only ``done`` does.
``gen_clk`` shows that clock so a testbench can count its edges.
"""

from __future__ import annotations

import math

from amaranth.hdl import ClockDomain, DomainRenamer, Instance, MemoryData, Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from tokensift.checks import check_count
from tokensift.hw.attention.constants import ConstantRanges, const_layout
from tokensift.hw.attention.core import Attention
from tokensift.hw.attention.layout import input_layout, output_layout, score_layout, status_layout
from tokensift.quant.attention import AttentionParams, scale_for
from tokensift.quant.qparams import quantize_multiplier

__all__ = ["AttentionHarness", "CLKGEN_VERILOG", "DEFAULT_FRAMES", "TOPLEVEL", "harness_for", "random_layer",
           "run_attention", "verilator_options"]

#: the free-running clock of bulk runs (simulation only: needs Verilator's ``--timing``)
CLKGEN_VERILOG = """`timescale 1ns/1ps
module tokensift_clkgen(output reg clk);
  initial clk = 1'b0;
  always #5 clk = ~clk;
endmodule
"""


class AttentionHarness(wiring.Component):
    """``Attention(params, ranges)`` with input/output memories of ``in_depth``, ``o_depth``, ``s_depth``
    beats and a constants memory of ``k_depth`` beats; ``internal_clock`` adds the Verilog clock generator
    (not for the Python simulator)."""

    def __init__(self, params: AttentionParams, *, in_depth: int, o_depth: int, s_depth: int, k_depth: int = 1,
                 ranges: ConstantRanges | None = None, internal_clock: bool = False):
        if not isinstance(params, AttentionParams):
            raise TypeError(f"params must be an AttentionParams, not {type(params).__name__}")
        for name, value in (("in_depth", in_depth), ("o_depth", o_depth), ("s_depth", s_depth),
                            ("k_depth", k_depth)):
            check_count(name, value, numpy=False)
        self._p = params
        self._depths = (in_depth, o_depth, s_depth)
        self._internal_clock = bool(internal_clock)
        self._dut = Attention(params=params, ranges=ranges)
        #: memory contents (``amaranth.hdl.MemoryData``), for the Python simulator's tests
        self.k_data = MemoryData(shape=const_layout().size, depth=k_depth, init=[])
        self.in_data = MemoryData(shape=input_layout(params).size, depth=in_depth, init=[])
        self.o_data = MemoryData(shape=output_layout(params).size, depth=o_depth, init=[])
        self.s_data = MemoryData(shape=score_layout(params).size, depth=s_depth, init=[])
        super().__init__({
            "clk": In(1),
            "rst": In(1),
            "clk_sel": In(1),
            "gen_clk": Out(1),
            "k_stream": In(stream.Signature(const_layout())),
            "i_stream": In(stream.Signature(input_layout(params))),
            "o_stream": Out(stream.Signature(output_layout(params))),
            "s_stream": Out(stream.Signature(score_layout(params))),
            "status": Out(status_layout()),
            "bulk": In(1),
            "start": In(1),
            "k_beats": In(32),
            "in_beats": In(32),
            "o_expected": In(32),
            "s_expected": In(32),
            "done": Out(1),
            "o_count": Out(32),
            "s_count": Out(32),
            "cycles": Out(32),
            "elapsed": Out(32),
        })

    @property
    def dut(self) -> Attention:
        return self._dut

    def elaborate(self, platform):
        m = Module()
        m.domains.run = cd = ClockDomain("run")
        if self._internal_clock:
            m.submodules.clkgen = Instance("tokensift_clkgen", o_clk=self.gen_clk)
            m.d.comb += cd.clk.eq(Mux(self.clk_sel, self.gen_clk, self.clk))
        else:
            m.d.comb += cd.clk.eq(self.clk)
        m.d.comb += cd.rst.eq(self.rst)
        m.submodules.dut = dut = DomainRenamer("run")(self._dut)
        m.submodules.k_mem = k_mem = memory.Memory(data=self.k_data)
        m.submodules.in_mem = in_mem = memory.Memory(data=self.in_data)
        m.submodules.o_mem = o_mem = memory.Memory(data=self.o_data)
        m.submodules.s_mem = s_mem = memory.Memory(data=self.s_data)
        rd = in_mem.read_port(domain="run")
        krd = k_mem.read_port(domain="run")
        ow = o_mem.write_port(domain="run")
        sw = s_mem.write_port(domain="run")
        m.d.comb += self.status.eq(dut.status)

        # the testbench's controls are registered, and the pass-through streams go through small FIFOs,
        # so no logic of the core depends combinationally on a top-level input: Verilator re-evaluates
        # such logic whenever it evaluates the model
        bulk, start = Signal(), Signal()
        in_beats, o_expected, s_expected, k_beats = Signal(32), Signal(32), Signal(32), Signal(32)
        m.d.run += [bulk.eq(self.bulk), start.eq(self.start), in_beats.eq(self.in_beats),
                    o_expected.eq(self.o_expected), s_expected.eq(self.s_expected), k_beats.eq(self.k_beats)]

        running = Signal()
        cur = Signal(32)
        bulk_valid = running & ~start & (cur < in_beats)
        i_taken = dut.i_stream.valid & dut.i_stream.ready
        m.d.comb += rd.addr.eq(Mux(start, 0, cur + (i_taken & bulk)))
        with m.If(start):
            m.d.run += [running.eq(1), cur.eq(0)]
        with m.Elif(i_taken & bulk):
            m.d.run += cur.eq(cur + 1)
        k_cur = Signal(32)
        bulk_k_valid = running & ~start & (k_cur < k_beats)
        k_taken = dut.k_stream.valid & dut.k_stream.ready
        m.d.comb += krd.addr.eq(Mux(start, 0, k_cur + (k_taken & bulk)))
        with m.If(start):
            m.d.run += k_cur.eq(0)
        with m.Elif(k_taken & bulk):
            m.d.run += k_cur.eq(k_cur + 1)
        k_fifo = SyncFIFOBuffered(width=const_layout().size, depth=2)
        m.submodules.k_fifo = DomainRenamer("run")(k_fifo)
        m.d.comb += [
            k_fifo.w_data.eq(self.k_stream.payload.as_value()), k_fifo.w_en.eq(self.k_stream.valid),
            self.k_stream.ready.eq(k_fifo.w_rdy),
            dut.k_stream.payload.eq(Mux(bulk, krd.data, k_fifo.r_data)),
            dut.k_stream.valid.eq(Mux(bulk, bulk_k_valid, k_fifo.r_rdy)),
            k_fifo.r_en.eq(~bulk & dut.k_stream.ready),
        ]

        i_fifo = SyncFIFOBuffered(width=input_layout(self._p).size, depth=2)
        m.submodules.i_fifo = DomainRenamer("run")(i_fifo)
        m.d.comb += [
            i_fifo.w_data.eq(self.i_stream.payload.as_value()), i_fifo.w_en.eq(self.i_stream.valid),
            self.i_stream.ready.eq(i_fifo.w_rdy),
            dut.i_stream.payload.eq(Mux(bulk, rd.data, i_fifo.r_data)),
            dut.i_stream.valid.eq(Mux(bulk, bulk_valid, i_fifo.r_rdy)),
            i_fifo.r_en.eq(~bulk & dut.i_stream.ready),
        ]
        for name, mem_w, count in (("o_stream", ow, self.o_count), ("s_stream", sw, self.s_count)):
            src, ext = getattr(dut, name), getattr(self, name)
            fifo = SyncFIFOBuffered(width=len(src.payload.as_value()), depth=2)
            m.submodules[f"{name}_fifo"] = DomainRenamer("run")(fifo)
            m.d.comb += [fifo.w_data.eq(src.payload), fifo.w_en.eq(~bulk & src.valid),
                         src.ready.eq(Mux(bulk, 1, fifo.w_rdy)),
                         ext.payload.eq(fifo.r_data), ext.valid.eq(fifo.r_rdy), fifo.r_en.eq(ext.ready),
                         mem_w.en.eq(bulk & src.valid), mem_w.addr.eq(count), mem_w.data.eq(src.payload)]
            with m.If(start):
                m.d.run += count.eq(0)
            with m.Elif(src.valid & src.ready):
                m.d.run += count.eq(count + 1)

        # cycle counters
        seen_input = Signal()
        first_in = Signal(32)
        out_now = (dut.o_stream.valid & dut.o_stream.ready) | (dut.s_stream.valid & dut.s_stream.ready)
        with m.If(start):
            m.d.run += [self.elapsed.eq(0), seen_input.eq(0), self.cycles.eq(0)]
        with m.Else():
            m.d.run += self.elapsed.eq(self.elapsed + 1)
            with m.If(i_taken & ~seen_input):
                m.d.run += [seen_input.eq(1), first_in.eq(self.elapsed)]
            with m.If(out_now):
                m.d.run += self.cycles.eq(self.elapsed - Mux(seen_input, first_in, self.elapsed))
        m.d.comb += self.done.eq(running & ~start & ~self.start & (cur >= in_beats) & (k_cur >= k_beats) & (self.o_count >= o_expected)
                                 & (self.s_count >= s_expected) & ~dut.status.busy)
        return m


def random_layer(rng, params: AttentionParams, ranges: ConstantRanges | None = None) -> AttentionParams:
    """``params`` with the constants of a random layer, as a calibration makes them: a score scale of
    ``2**-u / sqrt(head_dim)`` (``u`` uniform in 2..12) through :func:`scale_for`, an output scale of ``g``
    times V's (``g`` log-uniform in 1/8..4) through :func:`quantize_multiplier`, within ``ranges``."""
    r = ConstantRanges.covering(params) if ranges is None else ranges
    alpha = 2.0 ** -float(rng.uniform(2, 12)) / math.sqrt(params.head_dim)
    sm, ss = scale_for(alpha, log2_frac=params.softmax.log2_frac, bits=r.scale_mult_bits)
    gain = 2.0 ** float(rng.uniform(-3, 2)) * 2.0 ** -params.softmax.prob_frac
    om, osh = quantize_multiplier(gain, max(2, r.out_mult_bits))
    if om >= 1 << r.out_mult_bits:
        om, osh = 1, params.softmax.prob_frac
    return AttentionParams(**{**params.to_dict(), "softmax": params.softmax, "scale_multiplier": sm,
                              "scale_shift": min(ss, r.scale_shift_max), "out_multiplier": om,
                              "out_shift": min(osh, r.out_shift_max)})


#: Verilog top-level name of the harness builds
TOPLEVEL = "tokensift_attention_tb"

#: frames of ``n_max`` tokens the harness memories hold (tests, CLI and benchmark share the build)
DEFAULT_FRAMES = 4


def harness_for(params: AttentionParams, *, frames: int = DEFAULT_FRAMES, ranges: ConstantRanges | None = None,
                internal_clock: bool = True) -> AttentionHarness:
    """A harness whose memories hold ``frames`` frames of ``n_max`` tokens and their constants."""
    n, c = params.n_max, params.chunks
    return AttentionHarness(params, in_depth=frames * (1 + 3 * n * c), o_depth=frames * n * c,
                            s_depth=frames * n, k_depth=frames, ranges=ranges, internal_clock=internal_clock)


def run_attention(params: AttentionParams, *, settings: dict, testcase=None, seed: int = 1,
                  frames: int = DEFAULT_FRAMES, ranges: ConstantRanges | None = None, build_dir=None, waves=False):
    """Build (or reuse) the harness of ``params`` (and ``ranges``) with Verilator and run
    :mod:`tokensift.sim.tb_attention`.

    ``settings`` reach the testbench next to ``params``, the ranges and ``seed`` (``settings["layers"]``:
    other :meth:`AttentionParams.to_dict` s whose constants frames take in turn); returns the
    :class:`tokensift.sim.runner.SimResult` (its ``report`` holds what the tests reported).
    """
    from tokensift.sim.runner import run_cocotb

    harness = harness_for(params, frames=frames, ranges=ranges)
    build_args, sources = verilator_options()
    return run_cocotb(harness, toplevel=TOPLEVEL, test_module="tokensift.sim.tb_attention",
                      params={"params": params.to_dict(), "ranges": harness.dut.ranges.to_dict(), "seed": seed,
                              **settings}, testcase=testcase,
                      build_dir=build_dir, waves=waves, seed=seed, build_args=build_args, extra_sources=sources)


#: makes only the harness's own signals (ports, the three memories) visible to cocotb
_PUBLIC_VLT = """`verilator_config
public_flat_rw -module "{top}" -var "*"
"""


def verilator_options(toplevel: str = TOPLEVEL) -> tuple[list[str], list]:
    """``(build_args, extra_sources)`` for :func:`tokensift.sim.runner.run_cocotb` of the harness.

    cocotb's Verilator runner passes ``--public-flat-rw``, which keeps every signal of the design visible
    to VPI and makes the model about five times slower. The testbench only touches the harness's own
    ports and memories, so the build gets ``--no-public-flat-rw`` and a control file that makes just the
    harness module public, plus ``--timing`` and the clock generator :data:`CLKGEN_VERILOG` for bulk
    runs (both files are written under the build root).
    """
    from tokensift.sim.runner import default_build_root

    root = default_build_root()
    root.mkdir(parents=True, exist_ok=True)
    vlt, clkgen = root / f"{toplevel}.vlt", root / "tokensift_clkgen.v"
    for path, text in ((vlt, _PUBLIC_VLT.format(top=toplevel)), (clkgen, CLKGEN_VERILOG)):
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    args = ["--no-public-flat-rw", "--timing", "-CFLAGS", "-fcoroutines", "--timescale", "1ns/1ps"]
    return args, [vlt, clkgen]
