"""Token mean: parameters, and bit-exactness with quant.stages.predictor.mean_rows in the Amaranth simulator."""

import random

import numpy as np
import pytest
from vector_streams import drive, simulate

from tokensift.hw.vector.token_mean import READOUT_GAP, TokenMean, TokenMeanParams, burst_cycles, cycles
from tokensift.quant.stages.predictor import mean_rows


class TestTokenMeanParams:
    def test_init(self):
        p = TokenMeanParams(lanes=4, bits=8, n_max=197, c_max=10)
        assert (p.chunks_max, p.sum_bits) == (3, 16)
        assert TokenMean(params=p).params is p

    @pytest.mark.parametrize("kwargs, message", [
        (dict(lanes=3), r"^lanes must be a power of two, not 3$"),
        (dict(lanes=128), r"^lanes must be between 1 and 64, not 128$"),
        (dict(bits=1), r"^bits must be between 2 and 16, not 1$"),
        (dict(n_max=0), r"^n_max must be between 1 and 65535, not 0$"),
        (dict(c_max=70000), r"^c_max must be between 1 and 65535, not 70000$"),
    ])
    def test_wrong_values(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            TokenMeanParams(**kwargs)

    def test_wrong_types(self):
        with pytest.raises(TypeError, match=r"^n_max must be an integer, not str$"):
            TokenMeanParams(n_max="197")
        with pytest.raises(TypeError, match=r"^params must be TokenMeanParams, not int$"):
            TokenMean(params=3)

    def test_cycles_checks_sizes(self):
        with pytest.raises(ValueError, match=r"^n_tokens must be between 1 and 10, not 11$"):
            cycles(TokenMeanParams(n_max=10), 11, 4)


def frame_beats(params, codes):
    """(n, c) codes -> the n * ceil(c / lanes) input beats (lanes past c padded with junk, which must be ignored)."""
    n, c = codes.shape
    chunks = -(-c // params.lanes)
    lo = -(1 << (params.bits - 1))
    padded = np.full((n, chunks * params.lanes), lo)  # the most negative code: it would show if summed
    padded[:, :c] = codes
    return padded.reshape(-1, params.lanes).tolist()


def expected_beats(params, n, c, codes):
    chunks = -(-c // params.lanes)
    if not (1 <= n <= params.n_max and 1 <= c <= params.c_max):
        return [{"data": [0] * params.lanes, "last": 1, "error": 1}]
    means = np.zeros(chunks * params.lanes, dtype=np.int64)
    means[:c] = mean_rows(codes)
    return [{"data": means[k * params.lanes:(k + 1) * params.lanes].tolist(), "last": int(k == chunks - 1),
             "error": 0} for k in range(chunks)]


def as_dict(payload):
    return {"data": list(payload.data), "last": payload.last, "error": payload.error}


def random_codes(rng, params, n, c):
    lo, hi = -(1 << (params.bits - 1)), (1 << (params.bits - 1)) - 1
    return rng.integers(lo, hi + 1, size=(max(n, 0), max(c, 0)))


def run_frames(params, frames, *, idle, stall, seed):
    """``frames``: (n, c, codes) triples sent back to back; returns (outputs, traffic)."""
    dut = TokenMean(params=params)
    commands = [{"n_tokens": n, "channels": c} for n, c, _ in frames]
    beats = [b for n, c, codes in frames for b in (frame_beats(params, codes) if n and c else [])]
    total = sum(len(expected_beats(params, n, c, codes)) for n, c, codes in frames)

    async def body(ctx, dut, rst):
        return await drive(ctx, dut, sources={"i_cmd": commands, "i_stream": beats}, sinks={"o_stream": total},
                           rng=random.Random(seed), idle=idle, stall=stall)

    traffic = simulate(dut, body)
    return [as_dict(p) for p in traffic.received["o_stream"]], traffic


def test_random_frames_with_stalls():
    """Back-to-back frames of random sizes, N = 1 and the maxima, C off the lane grid, and frames out of range
    (flagged, their inputs consumed) in between."""
    params = TokenMeanParams(lanes=4, bits=8, n_max=23, c_max=13)
    rng = np.random.default_rng(8)
    sizes = [(1, 1), (23, 13), (1, 13), (5, 3), (2, 4), (0, 4), (24, 3), (4, 14), (3, 0), (7, 7), (1, 5),
             (23, 1), (9, 12), (2, 2)]
    sizes += [(int(rng.integers(1, 24)), int(rng.integers(1, 14))) for _ in range(12)]
    frames = [(n, c, random_codes(rng, params, n, c)) for n, c in sizes]
    got, _ = run_frames(params, frames, idle=0.3, stall=0.3, seed=9)
    expected = [b for n, c, codes in frames for b in expected_beats(params, n, c, codes)]
    assert got == expected


@pytest.mark.parametrize("bits, lanes", [(8, 1), (8, 16), (12, 8), (2, 2)])
def test_extremes_and_rounding_ties(bits, lanes):
    """Every code at either extreme over the largest frame (the sums' full width), and sums at exactly
    half a code (floor(x + 1/2) rounds them up, towards plus infinity, on both sides of zero)."""
    params = TokenMeanParams(lanes=lanes, bits=bits, n_max=64, c_max=2 * lanes)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    c = 2 * lanes
    ties = np.zeros((2, c), dtype=np.int64)
    ties[0, :] = np.clip(np.resize([1, -1, -3, lo, hi, 0], c), lo, hi)  # odd pair sums: means of k + 1/2
    ties[1, :] = np.resize([0, 0, 0, 0, 0, 1], c)
    frames = [(64, c, np.full((64, c), lo)), (64, c, np.full((64, c), hi)), (2, c, ties),
              (3, c, np.resize([[lo, hi, 1], [hi, lo, 0], [0, 0, 0]], (3, c)))]
    got, _ = run_frames(params, frames, idle=0.1, stall=0.4, seed=bits)
    assert got == [b for n, c, codes in frames for b in expected_beats(params, n, c, codes)]


@pytest.mark.parametrize("n, c", [(1, 1), (1, 32), (12, 20), (40, 32), (7, 3)])
def test_cycles_of_one_frame(n, c):
    params = TokenMeanParams(lanes=8, bits=8, n_max=40, c_max=32)
    codes = random_codes(np.random.default_rng(n * c), params, n, c)
    got, traffic = run_frames(params, [(n, c, codes)], idle=0.0, stall=0.0, seed=0)
    assert got == expected_beats(params, n, c, codes)
    first = traffic.accepted["i_stream"][0]
    assert traffic.delivered["o_stream"][-1] - first + 1 == cycles(params, n, c)


def test_back_to_back_frames_never_stall_the_input():
    """With the commands queued, frames follow each other at one input beat per cycle."""
    params = TokenMeanParams(lanes=4, bits=8, n_max=8, c_max=12)
    rng = np.random.default_rng(4)
    frames = [(n, 12, random_codes(rng, params, n, 12)) for n in (4, 3, 8, 3, 5)]
    got, traffic = run_frames(params, frames, idle=0.0, stall=0.0, seed=0)
    assert got == [b for n, c, codes in frames for b in expected_beats(params, n, c, codes)]
    accepted = traffic.accepted["i_stream"]
    assert accepted == list(range(accepted[0], accepted[0] + len(accepted)))


@pytest.mark.parametrize("n, c", [(1, 12), (1, 1), (2, 8), (3, 12)])
def test_short_frames_back_to_back_match_the_burst_formula(n, c):
    """Frames too short to hide the readout (``(N - 1) * chunks < READOUT_GAP``) wait for their bank, as
    burst_cycles says; longer ones do not wait at all."""
    params = TokenMeanParams(lanes=4, bits=8, n_max=8, c_max=12)
    rng = np.random.default_rng(n + c)
    frames = [(n, c, random_codes(rng, params, n, c)) for _ in range(5)]
    got, traffic = run_frames(params, frames, idle=0.0, stall=0.0, seed=0)
    assert got == [b for n, c, codes in frames for b in expected_beats(params, n, c, codes)]
    accepted = traffic.accepted["i_stream"]
    assert accepted[-1] - accepted[0] + 1 == burst_cycles(params, n, c, 5)
    chunks = -(-c // 4)
    assert (burst_cycles(params, n, c, 5) == 5 * n * chunks) == ((n - 1) * chunks >= READOUT_GAP)


def test_reset_mid_frame():
    """A reset in the middle of a frame (and of a readout) drops it; the next frames are exact."""
    params = TokenMeanParams(lanes=4, bits=8, n_max=16, c_max=8)
    rng = np.random.default_rng(6)
    first = [(n, 8, random_codes(rng, params, n, 8)) for n in (3, 16)]
    after = [(n, c, random_codes(rng, params, n, c)) for n, c in ((16, 8), (1, 3), (2, 8))]

    async def body(ctx, dut, rst):
        prng = random.Random(3)
        cmds = [{"n_tokens": n, "channels": c} for n, c, _ in first]
        beats = [b for _, _, codes in first for b in frame_beats(params, codes)]
        # stop in the middle of the second frame, the first one's means on their way out
        await drive(ctx, dut, sources={"i_cmd": cmds, "i_stream": beats}, sinks={"o_stream": 10}, rng=prng,
                    idle=0.1, stall=0.5, until=lambda t: len(t.accepted["i_stream"]) >= 6 + 10)
        ctx.set(rst, 1)
        await ctx.tick()
        ctx.set(rst, 0)
        cmds = [{"n_tokens": n, "channels": c} for n, c, _ in after]
        beats = [b for _, _, codes in after for b in frame_beats(params, codes)]
        total = sum(len(expected_beats(params, n, c, codes)) for n, c, codes in after)
        t = await drive(ctx, dut, sources={"i_cmd": cmds, "i_stream": beats}, sinks={"o_stream": total}, rng=prng,
                        idle=0.2, stall=0.2)
        return [as_dict(p) for p in t.received["o_stream"]]

    got = simulate(TokenMean(params=params), body, resettable=True)
    assert got == [b for n, c, codes in after for b in expected_beats(params, n, c, codes)]
