"""cocotb testbench of :class:`tokensift.hw.common.requant.Requantizer` against :func:`quant.fixed.requantize`."""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from tokensift.quant.fixed import FixedFormat, Overflow, OverflowCounter, Rounding, requantize
from tokensift.sim.runner import tb_params, tb_report
from tokensift.sim.streams import StreamSink, StreamSource, reset, start_clock


def _out_format(p: dict) -> FixedFormat:
    return FixedFormat(bits=p["out_bits"], frac=0, signed=p.get("out_signed", True),
                       rounding=Rounding(p.get("rounding", "half_up")),
                       overflow=Overflow(p.get("overflow", "saturate")))


@cocotb.test()
async def random_stream_with_stalls(dut):
    p = tb_params()
    rng = np.random.default_rng(p["seed"])
    acc_bits = p["acc_bits"]
    n = p["count"]
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    values = rng.integers(lo, hi + 1, size=n, dtype=np.int64)
    # half of the values where the output does not saturate, so rounding is exercised as much as overflow
    span = max(1, min(hi, (256 << p["shift"]) // p["multiplier"]))
    values[n // 2:] = rng.integers(-span, span + 1, size=n - n // 2)
    values[:6] = [lo, hi, 0, -1, 1, lo + 1]  # directed corners ahead of the random part
    out = _out_format(p)
    counter = OverflowCounter()
    expected = requantize(values, p["multiplier"], p["shift"], out, counter=counter)

    start_clock(dut)
    src = StreamSource(dut, "i_stream", idle=p.get("idle", 0.3), seed=p["seed"])
    sink = StreamSink(dut, "o_stream", stall=p.get("stall", 0.3), seed=p["seed"] + 1, signed=out.signed)
    await reset(dut)
    src.send(values.tolist())
    got = await sink.wait_for(n)
    await ClockCycles(dut.clk, 2)
    mismatches = int(np.count_nonzero(np.asarray(got) != expected))
    hw_overflows = int(dut.overflows.value.to_unsigned())
    tb_report(count=n, mismatches=mismatches, overflows_hw=hw_overflows, overflows_ref=counter.total)
    assert mismatches == 0, f"{mismatches} of {n} outputs differ from quant.requantize"
    assert hw_overflows == min(counter.total, (1 << len(dut.overflows)) - 1)


@cocotb.test()
async def reset_mid_stream(dut):
    """A reset in the middle of a stream drops what was in flight; what follows is exact again."""
    p = tb_params()
    out = _out_format(p)
    start_clock(dut)
    src = StreamSource(dut, "i_stream", idle=0.2, seed=p["seed"])
    sink = StreamSink(dut, "o_stream", stall=0.2, seed=p["seed"] + 1, signed=out.signed)
    await reset(dut)
    src.send(range(-50, 50))
    await sink.wait_for(20)
    src.clear()
    await reset(dut)
    assert int(dut.o_stream__valid.value) == 0, "output still valid after reset"
    assert int(dut.overflows.value) == 0, "overflow counter not cleared by reset"
    sink.received.clear()
    values = np.arange(-1000, 1000, 7)
    src.send(values.tolist())
    got = await sink.wait_for(len(values))
    expected = requantize(values, p["multiplier"], p["shift"], out)
    assert np.array_equal(got, expected)
