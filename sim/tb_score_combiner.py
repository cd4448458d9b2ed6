"""cocotb testbench of :class:`tokensift.hw.score_combiner.core.ScoreCombiner` against
:func:`tokensift.quant.select.head_weighted_scores` (and :func:`~tokensift.quant.select.order_key` of it with a
signed score: the scoreboard compares what ``o_score`` carries)."""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from tokensift.hw.score_combiner.core import (
    HEAD_FIELD_BITS,
    CombinerParams,
    CombinerStatus,
    check_runtime,
    combiner_cycles,
)
from tokensift.quant.fixed import FixedFormat, OverflowCounter, Rounding
from tokensift.quant.select import FIELD_BITS, head_weighted_scores, order_key
from tokensift.sim.runner import tb_params, tb_report
from tokensift.sim.streams import StreamSink, StreamSource, reset, start_clock


def combiner_params(p: dict) -> CombinerParams:
    score = FixedFormat(bits=p["score_bits"], frac=p["score_frac"], signed=p.get("signed", False),
                        rounding=Rounding(p["rounding"]))
    return CombinerParams(n_max=p["n_max"], heads=p["heads"], lanes=p["lanes"], attn_bits=p["attn_bits"],
                          attn_frac=p["attn_frac"], importance_bits=p["importance_bits"],
                          importance_frac=p["importance_frac"], score=score,
                          per_token_weights=p.get("per_token_weights", False))


def _pack(values, bits: int) -> int:
    """Lane 0 in the low bits, each value in two's complement."""
    mask = (1 << bits) - 1
    return sum((int(v) & mask) << (k * bits) for k, v in enumerate(values))


def _row_beats(values, lanes: int, bits: int, junk) -> list[int]:
    b = -(-len(values) // lanes)
    padded = np.concatenate([np.asarray(values, np.int64), junk(b * lanes - len(values))])
    return [_pack(padded[i * lanes:(i + 1) * lanes], bits) for i in range(b)]


def frame(p: CombinerParams, rng, n: int, h: int, counter: OverflowCounter, per_token: bool = False):
    """(command word, weight beats, packed row beats, reference o_score payloads) of one frame."""
    low, high = (-(1 << (p.attn_bits - 1)), 1 << (p.attn_bits - 1)) if p.signed else (0, 1 << p.attn_bits)
    rows = rng.integers(low, high, (h, n))
    top_w = 1 << p.importance_bits
    weights = rng.integers(0, top_w, (h, n) if per_token else h)
    beats = [b for row in rows for b in _row_beats(row, p.lanes, p.attn_bits, lambda k: rng.integers(low, high, k))]
    if per_token:
        w_beats = [b for row in weights for b in _row_beats(row, p.lanes, p.importance_bits,
                                                              lambda k: rng.integers(0, top_w, k))]
    elif p.per_token_weights:  # the head weight in lane 0, junk in the others
        w_beats = [_pack([w, *rng.integers(0, top_w, p.lanes - 1)], p.importance_bits) for w in weights]
    else:
        w_beats = [int(w) for w in weights]
    ref = []
    if check_runtime(p, n_tokens=n, heads=h, per_token=per_token) is CombinerStatus.OK:
        scores = head_weighted_scores(rows, weights, attn_frac=p.attn_frac, importance_frac=p.importance_frac,
                                      score=p.score, counter=counter)
        ref = (order_key(scores, p.score.bits) if p.signed else scores).tolist()
    return n | (h << FIELD_BITS) | (int(per_token) << (FIELD_BITS + HEAD_FIELD_BITS)), w_beats, beats, ref


async def _accepts(dut, log):
    cycle = 0
    while True:
        await FallingEdge(dut.clk)
        await ReadOnly()
        if dut.i_cmd__valid.value and dut.i_cmd__ready.value:
            log.append(cycle)
        await RisingEdge(dut.clk)
        cycle += 1


@cocotb.test()
async def random_frames_with_stalls(dut):
    tp = tb_params()
    p = combiner_params(tp)
    rng = np.random.default_rng(tp["seed"])
    start_clock(dut)
    counter = OverflowCounter()
    idle, stall = tp.get("idle", 0.3), tp.get("stall", 0.3)
    cmd = StreamSource(dut, "i_cmd", idle=idle, seed=tp["seed"])
    wgt = StreamSource(dut, "i_weight", idle=idle, seed=tp["seed"] + 1)
    attn = StreamSource(dut, "i_attn", idle=idle, seed=tp["seed"] + 2)
    sink = StreamSink(dut, "o_score", stall=stall, seed=tp["seed"] + 3, signed=False)
    await reset(dut)
    sizes = [(int(rng.integers(1, p.n_max + 1)), int(rng.integers(1, p.heads + 1))) for _ in range(tp["frames"])]
    sizes.insert(1, (p.n_max + 1, p.heads))  # flagged, consumed, no output
    expected = []
    for i, (n, h) in enumerate(sizes):  # with both modes built, they alternate (a switch every frame)
        c, w, b, ref = frame(p, rng, n, h, counter, per_token=p.per_token_weights and i % 2 == 1)
        cmd.send([c])
        wgt.send(w)
        attn.send(b)
        expected += ref
    got = await sink.wait_for(len(expected))
    await ClockCycles(dut.clk, 4)
    mismatches = int(np.count_nonzero(np.asarray(got) != np.asarray(expected)))
    overflows = int(dut.overflows.value.to_unsigned())

    # two unstalled frames of --tokens / --frame-heads back to back: the period against the formula
    n, h, per_token = tp["tokens"], tp["frame_heads"], tp.get("per_token", False)
    for src in (cmd, wgt, attn):
        src.idle = 0.0
    sink.stall = 0.0
    log = []
    cocotb.start_soon(_accepts(dut, log))
    extra = []
    for _ in range(3):
        c, w, b, ref = frame(p, rng, n, h, counter, per_token)
        cmd.send([c])
        wgt.send(w)
        attn.send(b)
        extra += ref
    got2 = await sink.wait_for(len(expected) + len(extra))
    mismatches += int(np.count_nonzero(np.asarray(got2[len(expected):]) != np.asarray(extra)))
    cycles = log[1] - log[0] if len(log) >= 2 else None
    status = CombinerStatus(int(dut.status.value))
    tb_report(scores=len(got2), mismatches=mismatches, overflows_hw=overflows, cycles=cycles,
              expected_cycles=combiner_cycles(p, n_tokens=n, heads=h, per_token=per_token), status=status.name,
              frames=len(sizes) + 3)
    assert mismatches == 0, f"{mismatches} scores differ from head_weighted_scores"


@cocotb.test()
async def reset_mid_frame(dut):
    """A reset during the rows drops the frame; the next frame is exact again."""
    tp = tb_params()
    p = combiner_params(tp)
    rng = np.random.default_rng(tp["seed"] + 7)
    start_clock(dut)
    cmd = StreamSource(dut, "i_cmd", idle=0.2, seed=1)
    wgt = StreamSource(dut, "i_weight", idle=0.2, seed=2)
    attn = StreamSource(dut, "i_attn", idle=0.2, seed=3)
    sink = StreamSink(dut, "o_score", stall=0.2, seed=4, signed=False)
    await reset(dut)
    per_token = p.per_token_weights
    c, w, b, _ = frame(p, rng, p.n_max, p.heads, OverflowCounter(), per_token)
    cmd.send([c])
    wgt.send(w)
    attn.send(b[: max(1, len(b) // 2)])  # per token, the weight beats past them wait (joint handshake)
    await ClockCycles(dut.clk, 3 * len(b) // 2 + 10)
    for src in (cmd, wgt, attn):
        src.clear()
    await reset(dut)
    assert int(dut.o_score__valid.value) == 0 and int(dut.overflows.value) == 0
    counter = OverflowCounter()
    c, w, b, ref = frame(p, rng, p.n_max, p.heads, counter, per_token)
    cmd.send([c])
    wgt.send(w)
    attn.send(b)
    got = await sink.wait_for(len(ref))
    assert got == ref
    await ClockCycles(dut.clk, 2)
    assert int(dut.overflows.value) == counter.total
