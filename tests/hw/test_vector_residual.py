"""Residual adder: parameters, and bit-exactness with quant.residual.residual_add in the Amaranth simulator."""

import random

import numpy as np
import pytest
from vector_streams import drive, simulate

from tokensift.hw.vector.residual import LATENCY, ResidualAdd, ResidualParams, cycles
from tokensift.quant.fixed import FixedFormat, Overflow, OverflowCounter
from tokensift.quant.residual import residual_add


class TestResidualParams:
    def test_init(self):
        dut = ResidualAdd(params=ResidualParams(lanes=4, res=FixedFormat(bits=12)))
        assert dut.params.lanes == 4 and len(dut.overflows) == 32

    def test_wrong_lanes(self):
        with pytest.raises(ValueError, match=r"^lanes must be between 1 and 64, not 0$"):
            ResidualParams(lanes=0)

    def test_wrong_res_type(self):
        with pytest.raises(TypeError, match=r"^res must be a FixedFormat, not int$"):
            ResidualParams(res=16)

    def test_unsigned_res(self):
        with pytest.raises(ValueError, match=r"^res must be a signed format, as the residual stream is$"):
            ResidualParams(res=FixedFormat(bits=16, signed=False))

    def test_wrong_params_type(self):
        with pytest.raises(TypeError, match=r"^params must be ResidualParams, not dict$"):
            ResidualAdd(params={})

    def test_positional_refused(self):
        with pytest.raises(TypeError):
            ResidualAdd(ResidualParams())

    def test_cycles_checks(self):
        with pytest.raises(ValueError, match=r"^beats must be at least 1, not 0$"):
            cycles(ResidualParams(), 0)


def operands(rng, fmt, lanes, beats):
    lo, hi = fmt.min_int, fmt.max_int
    x = rng.integers(lo, hi + 1, size=(beats, lanes))
    y = rng.integers(lo, hi + 1, size=(beats, lanes))
    # directed corners: both extremes, sums one past each bound, exactly at each bound
    corners = [(hi, hi), (lo, lo), (hi, 1), (lo, -1), (hi, 0), (lo, 0), (hi - 5, 5), (lo + 5, -5), (-1, 1), (0, 0)]
    for i, (a, b) in enumerate(corners):
        x[i % beats, (i // beats) % lanes], y[i % beats, (i // beats) % lanes] = a, b
    return x, y


def run(params, x, y, *, idle, stall, seed):
    dut = ResidualAdd(params=params)

    async def body(ctx, dut, rst):
        t = await drive(ctx, dut, sources={"i_x": x.tolist(), "i_y": y.tolist()}, sinks={"o_stream": len(x)},
                        rng=random.Random(seed), idle=idle, stall=stall)
        for _ in range(6):  # the overflow count lands a few cycles after the last value
            await ctx.tick()
        return t, ctx.get(dut.overflows)

    traffic, overflows = simulate(dut, body)
    return np.array([list(v.data) for v in traffic.received["o_stream"]]), overflows, traffic


@pytest.mark.parametrize("res, lanes", [(FixedFormat(bits=16), 4), (FixedFormat(bits=8, overflow=Overflow.WRAP), 3),
                                        (FixedFormat(bits=20), 1)])
def test_bit_exact_with_stalls(res, lanes):
    rng = np.random.default_rng(3)
    x, y = operands(rng, res, lanes, 120)
    got, overflows, _ = run(ResidualParams(lanes=lanes, res=res), x, y, idle=0.3, stall=0.3, seed=4)
    counter = OverflowCounter()
    np.testing.assert_array_equal(got, residual_add(x, y, res, counter=counter))
    assert overflows == counter.total > 0


def test_cycles_and_throughput_without_stalls():
    params = ResidualParams(lanes=2, res=FixedFormat(bits=10))
    x, y = operands(np.random.default_rng(5), params.res, 2, 40)
    _, _, traffic = run(params, x, y, idle=0.0, stall=0.0, seed=0)
    accepted, delivered = traffic.accepted["i_x"], traffic.delivered["o_stream"]
    assert accepted == list(range(accepted[0], accepted[0] + 40))  # one beat per cycle
    assert delivered[-1] - accepted[0] + 1 == cycles(params, 40) == 40 + LATENCY


def test_operands_wait_for_each_other():
    """A beat of x alone is not consumed; it is joined with y's when that arrives."""
    params = ResidualParams(lanes=1, res=FixedFormat(bits=8))

    async def body(ctx, dut, rst):
        ctx.set(dut.o_stream.ready, 1)
        ctx.set(dut.i_x.payload, [100])
        ctx.set(dut.i_x.valid, 1)
        for _ in range(5):
            _, _, ready, valid = await ctx.tick().sample(dut.i_x.ready, dut.o_stream.valid)
            assert not ready and not valid
        ctx.set(dut.i_y.payload, [100])
        ctx.set(dut.i_y.valid, 1)
        _, _, ready = await ctx.tick().sample(dut.i_x.ready)
        assert ready
        ctx.set(dut.i_x.valid, 0)
        ctx.set(dut.i_y.valid, 0)
        await ctx.tick().until(dut.o_stream.valid)
        return list(ctx.get(dut.o_stream.payload).data)

    assert simulate(ResidualAdd(params=params), body) == [127]


def test_reset_clears_pipeline_and_count():
    params = ResidualParams(lanes=2, res=FixedFormat(bits=8))
    x = np.full((30, 2), 127)

    async def body(ctx, dut, rst):
        rng = random.Random(1)
        await drive(ctx, dut, sources={"i_x": x.tolist(), "i_y": x.tolist()}, sinks={"o_stream": 30}, rng=rng,
                    until=lambda t: len(t.received["o_stream"]) >= 10)
        for _ in range(4):
            await ctx.tick()
        assert ctx.get(dut.overflows) > 0
        ctx.set(rst, 1)
        await ctx.tick()
        ctx.set(rst, 0)
        assert ctx.get(dut.overflows) == 0 and not ctx.get(dut.o_stream.valid)
        t = await drive(ctx, dut, sources={"i_x": [[1, -2]], "i_y": [[3, -4]]}, sinks={"o_stream": 1}, rng=rng)
        return [list(v.data) for v in t.received["o_stream"]]

    assert simulate(ResidualAdd(params=params), body, resettable=True) == [[4, -6]]
