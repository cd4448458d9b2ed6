"""The SELECT engine on real token buffers: bit-exact with the reference sequencer's ``_Sequencer.select`` on a
compiled model's own stages (every stage, two buffer shapes, seeded DRAM latency and gaps), under other keep
registers (keep all, keep 1, tied scores, more protected rows), its cycle formula exact at a fixed DRAM
latency, and malformed ops and records faulted with nothing written."""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest
from accel_models import config_for, steps
from amaranth.sim import Simulator

from tokensift.hw.accel.op_select import SelectEngine, cycles
from tokensift.hw.axi.config import AxiDmaConfig
from tokensift.quant.accel.executor import _Sequencer
from tokensift.quant.accel.isa import Buffer, Opcode
from tokensift.quant.accel.records import RECORD_HEADER
from tokensift.quant.accel.registers import MAX_STAGES, METHODS, RULES
from tokensift.sim import accel_ops
from tokensift.sim.accel_ops import EngineBench, check_after, op_fields, run_op

# the harness's background DRAM server is closed mid-wait when the simulation ends (harmless; reported)
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


class RegisterBench(EngineBench):
    """The engine on token buffers with the run-time registers ``regs`` on its ``regs`` port."""

    def __init__(self, cfg, regs):
        super().__init__(cfg, SelectEngine(config=cfg))
        self.regs = regs

    def elaborate(self, platform):
        m = super().elaborate(platform)
        r, port = self.regs, self.engine.regs
        pad = MAX_STAGES - r.stages
        m.d.comb += [port.method.eq(METHODS.index(r.method)), port.density.eq(r.density)]
        for s, (k, t, rule) in enumerate(zip(r.keep + (0,) * pad, r.threshold + (0,) * pad,
                                             tuple(RULES.index(x) for x in r.rule) + (0,) * pad, strict=True)):
            m.d.comb += [port.keep[s].eq(k), port.threshold[s].eq(t), port.rule[s].eq(rule)]
        return m


def selects(variant):
    dram, regs, walked = steps(variant)
    return dram, regs, [s for s in walked if s[1].opcode == Opcode.SELECT and not s[4].get("skipped")]


def reference(dram, regs, before, ins):
    """The reference sequencer's ``select`` from the state ``before``: ``(buffers, count, protected, ran)``."""
    seq = _Sequencer(bytearray(dram), regs)
    seq.buf = {b: v.copy() for b, v in before.buffers.items()}
    seq.count, seq.P = dict(before.count), before.protected
    seq.index = np.arange(before.count[Buffer.X])
    decisions = len(seq.decisions)
    seq.select(ins, {})
    return seq.buf, seq.count, seq.P, len(seq.decisions) > decisions


def op_of(ins, before, regs, **context):
    fields = {"start": 0, "n": before.count[ins.src], "n2": before.count[ins.src2], "protected": before.protected,
              "memory_base": regs.memory_base, **context}
    return op_fields(ins, **fields)


def check_run(cfg, result, dram, regs, before, ins):
    """The run matches the reference from ``before``: X (every row: the rows past the kept ones stay), the
    new count and protected count, and no other buffer written."""
    want, count, protected, ran = reference(dram, regs, before, ins)
    assert not result.fault
    assert result.rows == count[Buffer.X]
    assert np.array_equal(result.buffers[Buffer.X], want[Buffer.X])
    for b in Buffer:
        if b is not Buffer.X:
            assert np.array_equal(result.buffers[b], before.buffers[b]), b.name
    return count[Buffer.X], protected, ran


def run_select(cfg, regs, dram, state, op, **kw):
    """``run_op`` on a :class:`RegisterBench`, plus the engine's ``protected_out`` and ``stage_ran`` at
    ``done`` (read by a watcher added to the harness's simulator)."""
    bench = RegisterBench(cfg, regs)
    eng = bench.engine
    seen = {}

    class Watched(Simulator):
        def __init__(self, fragment):
            super().__init__(fragment)

            async def watch(ctx):
                async for _, _, done, protected, ran in ctx.tick().sample(eng.done, eng.protected_out, eng.stage_ran):
                    if done:
                        seen.update(protected=protected, ran=ran)

            self.add_testbench(watch, background=True)

    original = accel_ops.Simulator
    accel_ops.Simulator = Watched
    try:
        result = run_op(bench, dram, state.buffers, op, **kw)
    finally:
        accel_ops.Simulator = original
    return result, seen


# -- DynamicViT ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage,shape,seed", [(0, {}, 1), (1, {}, 2), (0, {"banks": 4, "lanes": 4}, 3),
                                              (1, {"banks": 1, "lanes": 16}, 4)])
def test_dynamicvit_bit_exact_with_the_reference(stage, shape, seed):
    dram, regs, stages = selects("dynamicvit")
    cfg = config_for("dynamicvit", **shape)
    pc, ins, before, after, entry = stages[stage]
    result, seen = run_select(cfg, regs, dram, before, op_of(ins, before, regs), seed=seed, latency=(1, 12),
                              gap=0.3)
    assert not result.fault
    assert seen == {"protected": after.protected, "ran": 1}
    assert result.rows == after.count[Buffer.X] == entry["kept"]
    check_after(cfg, result, after, Buffer.X, after.count[Buffer.X])
    assert np.array_equal(result.buffers[Buffer.X], after.buffers[Buffer.X])  # the rows past the kept stay
    for b in Buffer:
        if b is not Buffer.X:
            assert np.array_equal(result.buffers[b], before.buffers[b]), b.name
    assert result.dram_commands == [(regs.memory_base + ins.addr_a, 96)]


def _with(before, *, scores=None, candidates=None, protected=None):
    """``before`` with other scores in S, and / or another candidate or protected count."""
    bufs = {b: v.copy() for b, v in before.buffers.items()}
    count = dict(before.count)
    P = before.protected if protected is None else protected
    n = count[Buffer.S] if candidates is None else candidates
    if scores is not None:
        bufs[Buffer.S][:n, 0] = scores
    count[Buffer.S], count[Buffer.X] = n, n + P
    return dataclasses.replace(before, buffers=bufs, count=count, protected=P)


def _stage_regs(regs, stage, keep):
    return regs.replace(keep=tuple(keep if s == stage else k for s, k in enumerate(regs.keep)))


@pytest.mark.parametrize("case", ["keep_all", "keep_one", "ties", "all_equal", "protected", "extremes"])
def test_dynamicvit_other_settings(case):
    dram, regs, stages = selects("dynamicvit")
    cfg = config_for("dynamicvit", banks=2, lanes=8)
    pc, ins, before, after, entry = stages[0]
    rng = np.random.default_rng(7)
    n = before.count[Buffer.S]
    keep = {"keep_all": 0xFFFF, "keep_one": 1, "ties": 20, "all_equal": 11, "protected": 9, "extremes": 5}[case]
    state = before
    if case == "ties":  # three distinct values: the cut falls inside a run of equal scores
        state = _with(before, scores=rng.choice([-700, 3, 250], size=n))
    elif case == "all_equal":
        state = _with(before, scores=np.full(n, -5))
    elif case == "protected":  # three protected rows stay where they are; the candidates follow them
        state = _with(before, candidates=n - 2, protected=3)
    elif case == "extremes":
        state = _with(before, scores=rng.choice([-(1 << 15), (1 << 15) - 1, 0, -1], size=n))
    r = _stage_regs(regs, 0, keep)
    result, seen = run_select(cfg, r, dram, state, op_of(ins, state, r), seed=5, latency=(1, 6), gap=0.2)
    rows, protected, ran = check_run(cfg, result, dram, r, state, ins)
    assert ran and seen == {"protected": protected, "ran": 1} and protected == state.protected
    assert rows == state.protected + min(keep, state.count[Buffer.S])


@pytest.mark.parametrize("shape,candidates,keep,offset", [
    ({}, 49, 34, 0), ({}, 49, 1, 0), ({"banks": 4, "lanes": 4}, 49, 49, 0), ({}, 0, 3, 0),
    ({"axi": AxiDmaConfig(data_bytes=16)}, 20, 7, 8), ({"axi": AxiDmaConfig(data_bytes=4)}, 30, 30, 8)])
def test_cycle_formula_is_exact(shape, candidates, keep, offset):
    dram, regs, stages = selects("dynamicvit")
    cfg = config_for("dynamicvit", **shape)
    pc, ins, before, after, entry = stages[1]
    state = _with(before, candidates=candidates)
    r = _stage_regs(regs, 1, keep)
    # the record copied to an offset past the image (8 mod 16 bytes: not aligned to a wide bus word)
    where = len(dram) - regs.memory_base + 64 + offset
    image = bytearray(dram) + bytes(256)
    image[regs.memory_base + where:regs.memory_base + where + 96] = \
        dram[regs.memory_base + ins.addr_a:regs.memory_base + ins.addr_a + 96]
    moved = dataclasses.replace(ins, addr_a=where)
    latency = 6
    result = run_op(RegisterBench(cfg, r), bytes(image), state.buffers, op_of(moved, state, r),
                    latency=(latency, latency))
    rows, _, _ = check_run(cfg, result, dram, r, state, ins)
    assert result.cycles == cycles(cfg, candidates=candidates, kept=rows - state.protected, latency=latency,
                                   record_offset=regs.memory_base + where)


# -- faults ----------------------------------------------------------------------------------------------
def _patched(dram, regs, ins, field, value):
    """The DRAM with one int64 scalar (or the header's u32 ``tag`` / ``length``) of the record changed."""
    d = bytearray(dram)
    at = regs.memory_base + ins.addr_a
    if field in ("tag", "length"):
        struct.pack_into("<I", d, at + (0 if field == "tag" else 4), value)
    else:
        from tokensift.quant.accel.records import SCHEMAS, Tag

        struct.pack_into("<q", d, at + RECORD_HEADER + 8 * SCHEMAS[Tag.STAGE].scalars.index(field), value)
    return bytes(d)


def test_faults_with_nothing_written():
    dram, regs, stages = selects("dynamicvit")
    cfg = config_for("dynamicvit")
    pc, ins, before, after, entry = stages[0]
    lnrm = next(s[1] for s in steps("dynamicvit")[2] if s[1].opcode == Opcode.LAYERNORM)
    early = [  # found by the registered checks of the op
        (regs, op_of(dataclasses.replace(ins, dst=Buffer.T), before, regs)),
        (regs, op_of(dataclasses.replace(ins, arg=regs.stages), before, regs)),
        (regs.replace(method="spvit", rule=("topk",) * regs.stages), op_of(ins, before, regs)),  # not built
        (regs.replace(method="sait", rule=("mass",) * regs.stages), op_of(ins, before, regs)),
        (regs, op_of(dataclasses.replace(ins, addr_a=ins.addr_a + 4), before, regs)),
        (regs, op_of(ins, before, regs, protected=0)),
        (regs, op_of(ins, before, regs, n=cfg.envelope.max_tokens)),
    ]
    for r, op in early:
        result = run_op(RegisterBench(cfg, r), dram, before.buffers, op)
        assert result.fault and result.cycles <= 3 and not result.dram_commands
        assert np.array_equal(result.buffers[Buffer.X], before.buffers[Buffer.X])
    late = [  # found in the record or the scores
        (dram, op_of(dataclasses.replace(ins, addr_a=lnrm.addr_a), before, regs)),   # a LNRM record
        (_patched(dram, regs, ins, "tag", 0x45475453 ^ 1), op_of(ins, before, regs)),
        (_patched(dram, regs, ins, "length", 104), op_of(ins, before, regs)),
        (_patched(dram, regs, ins, "method", METHODS.index("evit")), op_of(ins, before, regs)),
        (_patched(dram, regs, ins, "method", METHODS.index("dynamicvit") + (1 << 40)), op_of(ins, before, regs)),
        (_patched(dram, regs, ins, "nrefs", 1), op_of(ins, before, regs)),        # the length says 0 refs
    ]
    for d, op in late:
        result = run_op(RegisterBench(cfg, regs), d, before.buffers, op)
        assert result.fault, op
        assert np.array_equal(result.buffers[Buffer.X], before.buffers[Buffer.X])
    # a score that does not fit 16 signed bits (the class rows' 1.0 as a candidate's score): the reference's
    # order_key refuses it; the selector's pass is drained and nothing is written
    state = _with(before)
    state.buffers[Buffer.CLS][:, :] = 0
    state.buffers[Buffer.CLS][0, 0] = 1 << 15
    state.count[Buffer.CLS] = 2
    state = dataclasses.replace(state, count={**state.count, Buffer.X: 2 + state.protected})
    bad = dataclasses.replace(ins, src=Buffer.CLS)
    with pytest.raises(ValueError):
        reference(dram, regs, state, bad)
    result = run_op(RegisterBench(cfg, regs), dram, state.buffers, op_of(bad, state, regs))
    assert result.fault
    assert np.array_equal(result.buffers[Buffer.X], before.buffers[Buffer.X])
    # a good op after the faults: the same engine design runs it (nothing latched from a fault)
    result = run_op(RegisterBench(cfg, regs), dram, before.buffers, op_of(ins, before, regs))
    assert not result.fault and result.rows == after.count[Buffer.X]
