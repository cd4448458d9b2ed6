"""cocotb testbench of :class:`tokensift.hw.vector.token_mean.TokenMean` against
:func:`tokensift.quant.stages.predictor.mean_rows`: frames of random and extreme sizes back to back, frames
out of range among them, stalls on every stream."""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from tokensift.hw.vector.token_mean import TokenMeanParams, burst_cycles, cycles
from tokensift.quant.stages.predictor import mean_rows
from tokensift.sim.runner import tb_params, tb_report
from tokensift.sim.streams import StreamSource, reset, start_clock
from tokensift.sim.vector_harness import TransferLog, decode, encode, unsigned_sink


def token_mean_params(p: dict) -> TokenMeanParams:
    return TokenMeanParams(lanes=p["lanes"], bits=p["bits"], n_max=p["n_max"], c_max=p["c_max"])


def in_range(p: TokenMeanParams, n: int, c: int) -> bool:
    return 1 <= n <= p.n_max and 1 <= c <= p.c_max


def make_frame(p: TokenMeanParams, rng, n: int, c: int, codes=None):
    """(command bits, input beats, expected output beats as (data, last, error)) of one frame."""
    lo, hi = -(1 << (p.bits - 1)), (1 << (p.bits - 1)) - 1
    chunks = -(-c // p.lanes)
    if codes is None:
        codes = rng.integers(lo, hi + 1, (n, c))
    padded = rng.integers(lo, hi + 1, (n, chunks * p.lanes))  # junk past C, which must be ignored
    padded[:, :c] = codes
    beats = [encode(p.in_layout, row) for row in padded.reshape(-1, p.lanes).tolist()] if n and c else []
    if not in_range(p, n, c):
        expected = [([0] * p.lanes, 1, 1)]
    else:
        means = np.zeros(chunks * p.lanes, dtype=np.int64)
        means[:c] = mean_rows(codes)
        expected = [(means[k * p.lanes:(k + 1) * p.lanes].tolist(), int(k == chunks - 1), 0) for k in range(chunks)]
    return encode(p.command_layout(), {"n_tokens": n, "channels": c}), beats, expected


def corner_frames(p: TokenMeanParams, rng) -> list:
    lo, hi = -(1 << (p.bits - 1)), (1 << (p.bits - 1)) - 1
    n, c = p.n_max, p.c_max
    return [
        make_frame(p, rng, n, c),  # the maxima
        make_frame(p, rng, 1, 1),  # N = 1, one channel
        make_frame(p, rng, 1, c),
        make_frame(p, rng, n, c, np.full((n, c), lo)),  # every code at an extreme: the sums' full width
        make_frame(p, rng, n, c, np.full((n, c), hi)),
        make_frame(p, rng, 2, c, np.resize([[lo, hi, 1, -1], [0, 0, 0, 0]], (2, c))),  # means at k + 1/2
        make_frame(p, rng, 0, c),  # out of range: flagged, no input
        make_frame(p, rng, n + 1, 1),  # out of range: flagged, its inputs consumed
        make_frame(p, rng, 2, c + 1),
        make_frame(p, rng, 3, 0),
        make_frame(p, rng, max(1, n // 2), max(1, c - 1)),
    ]


def send(frames, cmd_src, data_src) -> list:
    expected = []
    for command, beats, exp in frames:
        cmd_src.send([command])
        data_src.send(beats)
        expected += exp
    return expected


def received(p: TokenMeanParams, got) -> list:
    out = []
    for bits in got:
        view = decode(p.out_layout(), bits)
        out.append((list(view.data), int(view.last), int(view.error)))
    return out


@cocotb.test()
async def frames_with_stalls(dut):
    tp = tb_params()
    p = token_mean_params(tp)
    rng = np.random.default_rng(tp["seed"])
    start_clock(dut)
    await reset(dut)
    cmd_src = StreamSource(dut, "i_cmd", idle=tp["idle"], seed=tp["seed"])
    data_src = StreamSource(dut, "i_stream", idle=tp["idle"], seed=tp["seed"] + 1)
    sink = unsigned_sink(dut, "o_stream", stall=tp["stall"], seed=tp["seed"] + 2)
    frames = corner_frames(p, rng)
    frames += [make_frame(p, rng, int(rng.integers(1, p.n_max + 1)), int(rng.integers(1, p.c_max + 1)))
               for _ in range(tp["frames"])]
    expected = send(frames, cmd_src, data_src)
    got = received(p, await sink.wait_for(len(expected)))
    mismatches = sum(g != e for g, e in zip(got, expected, strict=True))

    # one unstalled frame of --tokens x --channels: its span against the formula; then frames back to back
    cmd_src.idle = data_src.idle = sink.stall = 0.0
    n, c = tp["tokens"], tp["channels"]
    log = TransferLog(dut, ["i_cmd", "i_stream", "o_stream"])
    timed = [make_frame(p, rng, n, c)]
    exp = send(timed, cmd_src, data_src)
    got = received(p, (await sink.wait_for(len(expected) + len(exp)))[len(expected):])
    mismatches += sum(g != e for g, e in zip(got, exp, strict=True))
    span = log.span("i_stream", "o_stream")
    log.stop()
    expected += exp
    await ClockCycles(dut.clk, 2)
    log = TransferLog(dut, ["i_stream"])
    burst = [make_frame(p, rng, n, c) for _ in range(3)]
    exp = send(burst, cmd_src, data_src)
    got = received(p, (await sink.wait_for(len(expected) + len(exp)))[len(expected):])
    mismatches += sum(g != e for g, e in zip(got, exp, strict=True))
    accepted = log.cycles["i_stream"]
    log.stop()
    tb_report(frames=len(frames) + 4, beats=len(expected) + len(exp), mismatches=mismatches,
              errors_flagged=sum(e[2] for e in expected), cycles=span, expected_cycles=cycles(p, n, c),
              back_to_back_cycles=accepted[-1] - accepted[0] + 1, back_to_back_beats=len(accepted),
              expected_back_to_back_cycles=burst_cycles(p, n, c, len(burst)))
    assert mismatches == 0, f"{mismatches} output beats differ from mean_rows"


@cocotb.test()
async def reset_mid_frame(dut):
    """A reset in the middle of a frame (the previous frame's means on their way out) drops both; the next
    frames are exact."""
    tp = tb_params()
    p = token_mean_params(tp)
    rng = np.random.default_rng(tp["seed"] + 5)
    start_clock(dut)
    await reset(dut)
    cmd_src = StreamSource(dut, "i_cmd", idle=0.1, seed=1)
    data_src = StreamSource(dut, "i_stream", idle=0.1, seed=2)
    sink = unsigned_sink(dut, "o_stream", stall=0.6, seed=3)
    first = [make_frame(p, rng, 2, p.c_max), make_frame(p, rng, p.n_max, p.c_max)]
    send(first, cmd_src, data_src)
    while data_src.sent < len(first[0][1]) + len(first[1][1]) // 2:
        await ClockCycles(dut.clk, 1)
    cmd_src.clear()
    data_src.clear()
    await reset(dut)
    assert int(dut.o_stream__valid.value) == 0
    sink.received.clear()
    after = [make_frame(p, rng, p.n_max, p.c_max), make_frame(p, rng, 1, 1), make_frame(p, rng, 3, p.c_max)]
    expected = send(after, cmd_src, data_src)
    got = received(p, await sink.wait_for(len(expected)))
    assert got == expected
