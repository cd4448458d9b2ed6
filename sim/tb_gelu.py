"""cocotb testbench of :class:`tokensift.hw.vector.gelu.GeluUnit` against :func:`tokensift.quant.gelu.gelu_int`:
several layers' constants loaded at run time into one unit, each layer's codes under stalls."""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge

from tokensift.hw.vector.gelu import GeluUnitParams, config_of, cycles
from tokensift.quant.fixed import FixedFormat, OverflowCounter
from tokensift.quant.gelu import GeluParams, gelu_int
from tokensift.sim.runner import tb_params, tb_report
from tokensift.sim.streams import StreamSource, reset, start_clock
from tokensift.sim.vector_harness import TransferLog, decode, encode, unsigned_sink


def gelu_unit_params(p: dict) -> GeluUnitParams:
    return GeluUnitParams(lanes=p["lanes"], in_bits=p["in_bits"], out=FixedFormat(bits=p["out_bits"]),
                          multiplier_bits=p["multiplier_bits"])


def layer_params(unit: GeluUnitParams, scales) -> list[GeluParams]:
    return [GeluParams.from_scales(s_in, s_out, in_bits=unit.in_bits, out=unit.out,
                                   multiplier_bits=unit.multiplier_bits) for s_in, s_out in scales]


def layer_codes(unit: GeluUnitParams, gelu: GeluParams, rng, count: int) -> np.ndarray:
    """Every code when there are few, else random ones; the clip point and the pre-shift's rounding edges
    and the extremes first; padded to whole beats."""
    lo, hi = -(1 << (unit.in_bits - 1)), (1 << (unit.in_bits - 1)) - 1
    point, half = gelu.clip << gelu.pre_shift, (1 << gelu.pre_shift) >> 1
    around = [point + d for d in (-2, -1, 0, 1, 2)] + [point - half + d for d in (-1, 0, 1)]
    edges = np.clip([lo, lo + 1, hi, hi - 1, 0, 1, -1, *around, *(-v for v in around)], lo, hi)
    body = np.arange(lo, hi + 1) if hi - lo + 1 <= count else rng.integers(lo, hi + 1, count)
    codes = np.concatenate([edges, body])
    return np.concatenate([codes, np.zeros(-len(codes) % unit.lanes, dtype=np.int64)])


async def _layer(dut, unit: GeluUnitParams, gelu: GeluParams, codes, cfg_src, data_src, sink, done: int):
    """Load ``gelu`` (after the previous layer's codes went in) and stream ``codes``; returns the outputs."""
    loaded = cfg_src.sent + 1
    cfg_src.send([encode(unit.config_layout(), config_of(unit, gelu))])
    while cfg_src.sent < loaded:
        await RisingEdge(dut.clk)
    beats = codes.reshape(-1, unit.lanes).tolist()
    data_src.send(encode(unit.in_layout, b) for b in beats)
    got = await sink.wait_for(done + len(beats))
    while not data_src.idle_now:
        await RisingEdge(dut.clk)
    return np.array([list(decode(unit.out_layout, v).data) for v in got[done:]]).reshape(-1)


@cocotb.test()
async def layers_with_stalls(dut):
    tp = tb_params()
    unit = gelu_unit_params(tp)
    rng = np.random.default_rng(tp["seed"])
    start_clock(dut)
    await reset(dut)
    cfg_src = StreamSource(dut, "i_cfg", idle=tp["idle"], seed=tp["seed"])
    data_src = StreamSource(dut, "i_stream", idle=tp["idle"], seed=tp["seed"] + 1)
    sink = unsigned_sink(dut, "o_stream", stall=tp["stall"], seed=tp["seed"] + 2)
    counter = OverflowCounter()
    mismatches, values, done = 0, 0, 0
    for gelu in layer_params(unit, tp["scales"]):
        codes = layer_codes(unit, gelu, rng, tp["count"])
        got = await _layer(dut, unit, gelu, codes, cfg_src, data_src, sink, done)
        done += len(codes) // unit.lanes
        mismatches += int(np.count_nonzero(got != gelu_int(codes, gelu, counter=counter)))
        values += len(codes)
    await ClockCycles(dut.clk, 6)
    overflows = int(dut.overflows.value.to_unsigned())

    # unstalled, the first layer again: one beat per cycle, the span against the formula
    cfg_src.idle = data_src.idle = sink.stall = 0.0
    gelu = layer_params(unit, tp["scales"][:1])[0]
    timed = np.resize(layer_codes(unit, gelu, rng, tp["count"]), tp["timed_beats"] * unit.lanes)
    log = TransferLog(dut, ["i_stream", "o_stream"])
    got = await _layer(dut, unit, gelu, timed, cfg_src, data_src, sink, done)
    log.stop()
    mismatches += int(np.count_nonzero(got != gelu_int(timed, gelu)))
    accepted = log.cycles["i_stream"]
    tb_report(values=values + len(timed), layers=len(tp["scales"]), mismatches=mismatches, overflows_hw=overflows,
              overflows_ref=counter.total, cycles=log.span("i_stream", "o_stream"),
              expected_cycles=cycles(unit, tp["timed_beats"]),
              full_throughput=accepted == list(range(accepted[0], accepted[0] + len(accepted))))
    assert mismatches == 0, f"{mismatches} outputs differ from gelu_int"
    assert overflows == min(counter.total, (1 << len(dut.overflows)) - 1)


@cocotb.test()
async def reset_mid_stream(dut):
    """A reset with codes in flight drops them, the count and the constants: codes wait for a new
    configuration, and then they are exact."""
    tp = tb_params()
    unit = gelu_unit_params(tp)
    rng = np.random.default_rng(tp["seed"] + 9)
    start_clock(dut)
    await reset(dut)
    cfg_src = StreamSource(dut, "i_cfg", idle=0.1, seed=1)
    data_src = StreamSource(dut, "i_stream", idle=0.1, seed=2)
    sink = unsigned_sink(dut, "o_stream", stall=0.5, seed=3)
    layers = layer_params(unit, tp["scales"])
    codes = layer_codes(unit, layers[0], rng, tp["count"])
    cfg_src.send([encode(unit.config_layout(), config_of(unit, layers[0]))])
    data_src.send(encode(unit.in_layout, b) for b in codes.reshape(-1, unit.lanes).tolist())
    await sink.wait_for(3)
    data_src.clear()
    await reset(dut)
    assert int(dut.o_stream__valid.value) == 0 and int(dut.overflows.value) == 0
    await ClockCycles(dut.clk, 2)
    assert int(dut.i_stream__ready.value) == 0, "codes accepted before a configuration"
    sink.received.clear()
    gelu = layers[-1]
    codes = layer_codes(unit, gelu, rng, 64)
    got = await _layer(dut, unit, gelu, codes, cfg_src, data_src, sink, 0)
    assert np.array_equal(got, gelu_int(codes, gelu))
