"""cocotb testbench of :class:`tokensift.hw.vector.residual.ResidualAdd` against
:func:`tokensift.quant.residual.residual_add`."""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from tokensift.hw.vector.residual import ResidualParams, cycles
from tokensift.quant.fixed import FixedFormat, Overflow, OverflowCounter
from tokensift.quant.residual import residual_add
from tokensift.sim.runner import tb_params, tb_report
from tokensift.sim.streams import StreamSource, reset, start_clock
from tokensift.sim.vector_harness import TransferLog, decode, encode, unsigned_sink


def residual_params(p: dict) -> ResidualParams:
    return ResidualParams(lanes=p["lanes"], res=FixedFormat(bits=p["res_bits"], overflow=Overflow(p["overflow"])))


def operands(p: ResidualParams, rng, beats: int):
    lo, hi = p.res.min_int, p.res.max_int
    x = rng.integers(lo, hi + 1, (beats, p.lanes))
    y = rng.integers(lo, hi + 1, (beats, p.lanes))
    corners = [(hi, hi), (lo, lo), (hi, 1), (lo, -1), (hi, 0), (lo, 0), (hi - 3, 3), (lo + 3, -3), (-1, 1)]
    flat_x, flat_y = x.reshape(-1), y.reshape(-1)
    for i, (a, b) in enumerate(corners[: flat_x.size]):
        flat_x[i], flat_y[i] = a, b
    return x, y


async def _stream(dut, p: ResidualParams, x, y, *, idle: float, stall: float, seed: int):
    sx = StreamSource(dut, "i_x", idle=idle, seed=seed)
    sy = StreamSource(dut, "i_y", idle=idle, seed=seed + 1)
    sink = unsigned_sink(dut, "o_stream", stall=stall, seed=seed + 2)
    sx.send(encode(p.layout, row) for row in x.tolist())
    sy.send(encode(p.layout, row) for row in y.tolist())
    got = await sink.wait_for(len(x))
    return np.array([list(decode(p.out_layout, v).data) for v in got])


@cocotb.test()
async def random_stream_with_stalls(dut):
    tp = tb_params()
    p = residual_params(tp)
    rng = np.random.default_rng(tp["seed"])
    start_clock(dut)
    await reset(dut)
    x, y = operands(p, rng, tp["beats"])
    got = await _stream(dut, p, x, y, idle=tp["idle"], stall=tp["stall"], seed=tp["seed"])
    counter = OverflowCounter()
    expected = residual_add(x, y, p.res, counter=counter)
    await ClockCycles(dut.clk, 6)
    mismatches = int(np.count_nonzero(got != expected))
    overflows = int(dut.overflows.value.to_unsigned())

    # unstalled: one beat per cycle, and the span against the formula
    x2, y2 = operands(p, rng, tp["timed_beats"])
    log = TransferLog(dut, ["i_x", "o_stream"])
    got2 = await _stream(dut, p, x2, y2, idle=0.0, stall=0.0, seed=tp["seed"] + 5)
    log.stop()
    mismatches += int(np.count_nonzero(got2 != residual_add(x2, y2, p.res)))
    accepted = log.cycles["i_x"]
    tb_report(values=int(x.size + x2.size), mismatches=mismatches, overflows_hw=overflows,
              overflows_ref=counter.total, cycles=log.span("i_x", "o_stream"),
              expected_cycles=cycles(p, tp["timed_beats"]),
              full_throughput=accepted == list(range(accepted[0], accepted[0] + len(accepted))))
    assert mismatches == 0, f"{mismatches} sums differ from residual_add"
    assert overflows == min(counter.total, (1 << len(dut.overflows)) - 1)


@cocotb.test()
async def reset_mid_stream(dut):
    """A reset with sums in flight drops them and clears the count; what follows is exact again."""
    tp = tb_params()
    p = residual_params(tp)
    rng = np.random.default_rng(tp["seed"] + 3)
    start_clock(dut)
    await reset(dut)
    hi = p.res.max_int
    sx = StreamSource(dut, "i_x", idle=0.1, seed=1)
    sy = StreamSource(dut, "i_y", idle=0.1, seed=2)
    sink = unsigned_sink(dut, "o_stream", stall=0.5, seed=3)
    sx.send([encode(p.layout, [hi] * p.lanes)] * 40)
    sy.send([encode(p.layout, [hi] * p.lanes)] * 40)
    await sink.wait_for(10)
    sx.clear()
    sy.clear()
    await reset(dut)
    assert int(dut.o_stream__valid.value) == 0 and int(dut.overflows.value) == 0
    sink.received.clear()
    x, y = operands(p, rng, 30)
    sx.send(encode(p.layout, row) for row in x.tolist())
    sy.send(encode(p.layout, row) for row in y.tolist())
    got = await sink.wait_for(30)
    assert np.array_equal(np.array([list(decode(p.out_layout, v).data) for v in got]), residual_add(x, y, p.res))
