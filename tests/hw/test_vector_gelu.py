"""GELU unit: parameters, and bit-exactness with quant.gelu.gelu_int in the Amaranth simulator."""

import random

import numpy as np
import pytest
from vector_streams import drive, simulate

from tokensift.hw.vector.gelu import LATENCY, GeluUnit, GeluUnitParams, config_of, cycles
from tokensift.quant.fixed import FixedFormat, OverflowCounter, Rounding
from tokensift.quant.gelu import GeluParams, gelu_int


class TestGeluUnitParams:
    def test_init(self):
        dut = GeluUnit(params=GeluUnitParams(lanes=2, in_bits=10, multiplier_bits=20))
        assert dut.params.one_bits == 21 and len(dut.overflows) == 32

    @pytest.mark.parametrize("kwargs, message", [
        (dict(lanes=65), r"^lanes must be between 1 and 64, not 65$"),
        (dict(in_bits=17), r"^in_bits must be between 2 and 16, not 17$"),
        (dict(multiplier_bits=32), r"^multiplier_bits must be between 2 and 31, not 32$"),
        (dict(out=FixedFormat(bits=8, rounding=Rounding.HALF_EVEN)),
         r"^out must round half up \(the GELU unit's requantizer does\), not half_even$"),
    ])
    def test_wrong_values(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            GeluUnitParams(**kwargs)

    def test_wrong_types(self):
        with pytest.raises(TypeError, match=r"^out must be a FixedFormat, not int$"):
            GeluUnitParams(out=8)
        with pytest.raises(TypeError, match=r"^lanes must be an integer, not float$"):
            GeluUnitParams(lanes=2.0)
        with pytest.raises(TypeError, match=r"^params must be GeluUnitParams, not NoneType$"):
            GeluUnit(params=None)

    def test_config_of_refuses_what_does_not_fit(self):
        unit = GeluUnitParams(multiplier_bits=8)
        gelu = GeluParams.from_scales(0.05, 0.05)
        with pytest.raises(ValueError, match=rf"^the GELU's multiplier {gelu.multiplier} does not fit the unit's 8 bits$"):
            config_of(unit, gelu)
        with pytest.raises(ValueError, match=r"^the GELU's inputs have 12 bits, the unit's 8$"):
            config_of(GeluUnitParams(), GeluParams.from_scales(0.05, 0.05, in_bits=12))
        with pytest.raises(TypeError, match=r"^gelu must be GeluParams, not dict$"):
            config_of(GeluUnitParams(), {})


def run(params, jobs, *, idle, stall, seed):
    """``jobs``: (GeluParams, codes) pairs, each configuration loaded before its codes."""
    dut = GeluUnit(params=params)

    async def body(ctx, dut, rst):
        rng = random.Random(seed)
        outputs, traffics = [], []
        for gelu, codes in jobs:
            await drive(ctx, dut, sources={"i_cfg": [config_of(params, gelu)]}, sinks={}, rng=rng, idle=idle)
            beats = codes.reshape(-1, params.lanes).tolist()
            t = await drive(ctx, dut, sources={"i_stream": beats}, sinks={"o_stream": len(beats)}, rng=rng,
                            idle=idle, stall=stall)
            outputs.append(np.array([list(v.data) for v in t.received["o_stream"]]).reshape(-1))
            traffics.append(t)
        for _ in range(6):
            await ctx.tick()
        return outputs, traffics, ctx.get(dut.overflows)

    return simulate(dut, body)


def edges(gelu: GeluParams) -> np.ndarray:
    """Codes around the clip point (in input codes: clip * 2**pre_shift) and the pre-shift's rounding."""
    lo, hi = -(1 << (gelu.in_bits - 1)), (1 << (gelu.in_bits - 1)) - 1
    point = gelu.clip << gelu.pre_shift
    half = (1 << gelu.pre_shift) >> 1
    around = [point + d for d in (-2, -1, 0, 1, 2)] + [point - half + d for d in (-1, 0, 1)]
    values = [lo, lo + 1, hi, hi - 1, 0, 1, -1] + around + [-v for v in around]
    return np.clip(np.array(values), lo, hi)


def test_every_int8_code_with_stalls_and_reloads():
    """Three layers' constants on one unit: every int8 code each (the clip edges of each included), the
    last layer's output scale saturates."""
    params = GeluUnitParams(lanes=4)
    layers = [GeluParams.from_scales(0.05, 0.05), GeluParams.from_scales(0.2, 0.01),
              GeluParams.from_scales(0.004, 0.003)]
    codes = np.arange(-128, 128)
    outputs, _, overflows = run(params, [(g, codes) for g in layers], idle=0.25, stall=0.25, seed=2)
    counter = OverflowCounter()
    for gelu, got in zip(layers, outputs, strict=True):
        np.testing.assert_array_equal(got, gelu_int(codes, gelu, counter=counter))
    assert overflows == counter.total > 0


@pytest.mark.parametrize("in_bits, scale", [(12, 0.002), (16, 0.0004), (10, 1.5)])
def test_wide_inputs_random_and_clip_edges(in_bits, scale):
    """Pre-shifts above zero (fine scales: the constants would overflow otherwise) and a coarse scale."""
    gelu = GeluParams.from_scales(scale, scale * 8, in_bits=in_bits, multiplier_bits=24)
    params = GeluUnitParams(lanes=3, in_bits=in_bits, multiplier_bits=24)
    rng = np.random.default_rng(in_bits)
    lo, hi = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1
    codes = np.concatenate([edges(gelu), rng.integers(lo, hi + 1, 300)])
    codes = np.concatenate([codes, np.zeros(-len(codes) % 3, dtype=np.int64)])
    outputs, _, _ = run(params, [(gelu, codes)], idle=0.2, stall=0.3, seed=in_bits)
    np.testing.assert_array_equal(outputs[0], gelu_int(codes, gelu))
    if in_bits > 10:
        assert gelu.pre_shift > 0


def test_cycles_and_throughput_without_stalls():
    params = GeluUnitParams(lanes=2)
    gelu = GeluParams.from_scales(0.05, 0.05)
    codes = np.arange(-100, 100)
    outputs, traffics, _ = run(params, [(gelu, codes)], idle=0.0, stall=0.0, seed=0)
    accepted, delivered = traffics[0].accepted["i_stream"], traffics[0].delivered["o_stream"]
    assert accepted == list(range(accepted[0], accepted[0] + 100))
    assert delivered[-1] - accepted[0] + 1 == cycles(params, 100) == 100 + LATENCY
    np.testing.assert_array_equal(outputs[0], gelu_int(codes, gelu))


def test_codes_wait_for_the_first_configuration_and_reset_forgets_it():
    params = GeluUnitParams(lanes=1)
    gelu = GeluParams.from_scales(0.05, 0.05)

    async def body(ctx, dut, rst):
        ctx.set(dut.i_stream.valid, 1)
        ctx.set(dut.i_stream.payload, [20])
        for _ in range(4):
            _, _, ready = await ctx.tick().sample(dut.i_stream.ready)
            assert not ready
        ctx.set(dut.i_stream.valid, 0)
        rng = random.Random(0)
        await drive(ctx, dut, sources={"i_cfg": [config_of(params, gelu)]}, sinks={}, rng=rng)
        t = await drive(ctx, dut, sources={"i_stream": [[20], [60], [-60]]}, sinks={"o_stream": 1}, rng=rng,
                        until=lambda t: len(t.accepted["i_stream"]) == 3 and len(t.received["o_stream"]) == 1)
        ctx.set(rst, 1)  # mid-stream: two results still in flight
        await ctx.tick()
        ctx.set(rst, 0)
        _, _, ready, valid = await ctx.tick().sample(dut.i_stream.ready, dut.o_stream.valid)
        assert not ready and not valid
        return [v.data[0] for v in t.received["o_stream"]]

    assert simulate(GeluUnit(params=params), body, resettable=True) == gelu_int([20], gelu).tolist()
