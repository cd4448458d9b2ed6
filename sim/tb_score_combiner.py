"""cocotb testbench of :class:`tokensift.hw.score_combiner.core.ScoreCombiner` against
:func:`tokensift.quant.select.head_weighted_scores`."""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from tokensift.hw.score_combiner.core import CombinerParams, CombinerStatus, check_runtime, combiner_cycles
from tokensift.quant.fixed import FixedFormat, OverflowCounter, Rounding
from tokensift.quant.select import FIELD_BITS, head_weighted_scores
from tokensift.sim.runner import tb_params, tb_report
from tokensift.sim.streams import StreamSink, StreamSource, reset, start_clock


def combiner_params(p: dict) -> CombinerParams:
    score = FixedFormat(bits=p["score_bits"], frac=p["score_frac"], signed=False, rounding=Rounding(p["rounding"]))
    return CombinerParams(n_max=p["n_max"], heads=p["heads"], lanes=p["lanes"], attn_bits=p["attn_bits"],
                          attn_frac=p["attn_frac"], importance_bits=p["importance_bits"],
                          importance_frac=p["importance_frac"], score=score)


def frame(p: CombinerParams, rng, n: int, h: int, counter: OverflowCounter):
    """(command word, weights, packed row beats, reference scores) of one frame."""
    rows = rng.integers(0, 1 << p.attn_bits, (h, n))
    weights = rng.integers(0, 1 << p.importance_bits, h)
    b = -(-n // p.lanes)
    beats = []
    for row in rows:
        padded = np.concatenate([row, np.zeros(b * p.lanes - n, np.int64)])
        for i in range(b):
            beats.append(sum(int(v) << (k * p.attn_bits) for k, v in enumerate(padded[i * p.lanes:(i + 1) * p.lanes])))
    ref = []
    if check_runtime(p, n_tokens=n, heads=h) is CombinerStatus.OK:
        ref = head_weighted_scores(rows, weights, attn_frac=p.attn_frac, importance_frac=p.importance_frac,
                                   score=p.score, counter=counter).tolist()
    return n | (h << FIELD_BITS), weights.tolist(), beats, ref


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
    for n, h in sizes:
        c, w, b, ref = frame(p, rng, n, h, counter)
        cmd.send([c])
        wgt.send(w)
        attn.send(b)
        expected += ref
    got = await sink.wait_for(len(expected))
    await ClockCycles(dut.clk, 4)
    mismatches = int(np.count_nonzero(np.asarray(got) != np.asarray(expected)))
    overflows = int(dut.overflows.value.to_unsigned())

    # two unstalled frames of --tokens / --frame-heads back to back: the period against the formula
    n, h = tp["tokens"], tp["frame_heads"]
    for src in (cmd, wgt, attn):
        src.idle = 0.0
    sink.stall = 0.0
    log = []
    cocotb.start_soon(_accepts(dut, log))
    extra = []
    for _ in range(3):
        c, w, b, ref = frame(p, rng, n, h, counter)
        cmd.send([c])
        wgt.send(w)
        attn.send(b)
        extra += ref
    got2 = await sink.wait_for(len(expected) + len(extra))
    mismatches += int(np.count_nonzero(np.asarray(got2[len(expected):]) != np.asarray(extra)))
    cycles = log[1] - log[0] if len(log) >= 2 else None
    status = CombinerStatus(int(dut.status.value))
    tb_report(scores=len(got2), mismatches=mismatches, overflows_hw=overflows, cycles=cycles,
              expected_cycles=combiner_cycles(p, n_tokens=n, heads=h), status=status.name, frames=len(sizes) + 3)
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
    c, w, b, _ = frame(p, rng, p.n_max, p.heads, OverflowCounter())
    cmd.send([c])
    wgt.send(w)
    attn.send(b[: max(1, len(b) // 2)])
    await ClockCycles(dut.clk, 3 * len(b) // 2 + 10)
    for src in (cmd, wgt, attn):
        src.clear()
    await reset(dut)
    assert int(dut.o_score__valid.value) == 0 and int(dut.overflows.value) == 0
    counter = OverflowCounter()
    c, w, b, ref = frame(p, rng, p.n_max, p.heads, counter)
    cmd.send([c])
    wgt.send(w)
    attn.send(b)
    got = await sink.wait_for(len(ref))
    assert got == ref
    await ClockCycles(dut.clk, 2)
    assert int(dut.overflows.value) == counter.total
