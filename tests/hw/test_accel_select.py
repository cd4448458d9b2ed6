# amaranth: UnusedElaboratable=no
"""The SELECT engine on real token buffers: bit-exact with the reference sequencer's ``_Sequencer.select`` on
compiled DynamicViT, EViT, SaiT and AS-ViT models' own stages (every stage, several buffer shapes, seeded DRAM
latency and gaps), under other registers and records (keep all, keep 1, tied scores, more protected rows,
EViT without its fused token, SaiT's densities, AS-ViT's thresholds, its token and image rules, heads whose
outputs are all zero), its cycle formula exact at a fixed DRAM latency, and malformed ops and records (SPViT,
which it does not run, among them) faulted with nothing written."""

from __future__ import annotations

import dataclasses
import gc
import struct

import numpy as np
import pytest
from accel_models import config_for, steps
from amaranth.sim import Simulator

from tokensift.hw.accel.config import AccelConfig
from tokensift.hw.accel.op_select import _FIELD_AT, RECORD_BYTES, SelectEngine, cycles
from tokensift.hw.axi.config import AxiDmaConfig
from tokensift.quant.accel.executor import _Sequencer
from tokensift.quant.accel.image import Envelope, finish_checksum
from tokensift.quant.accel.isa import Buffer, Opcode, Rows
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
    """The reference sequencer's ``select`` from the state ``before``: ``(buffers, count, protected, ran,
    overflows)``."""
    seq = _Sequencer(bytearray(dram), regs)
    seq.buf = {b: v.copy() for b, v in before.buffers.items()}
    seq.count, seq.P = dict(before.count), before.protected
    seq.index = np.arange(before.count[Buffer.X])
    seq.select(ins, {})
    return seq.buf, seq.count, seq.P, len(seq.decisions) > 0, seq.counter.total


def op_of(ins, before, regs, **context):
    fields = {"start": 0, "n": before.count[ins.src], "n2": before.count[ins.src2], "protected": before.protected,
              "memory_base": regs.memory_base, **context}
    return op_fields(ins, **fields)


def check_run(result, seen, dram, regs, before, ins):
    """The run matches the reference from ``before``: X (every row: the rows past the kept ones stay), the
    new count, the protected count, whether the stage ran, the saturations, and no other buffer written.
    Returns the new count."""
    want, count, protected, ran, overflows = reference(dram, regs, before, ins)
    assert not result.fault
    assert seen == {"protected": protected, "ran": int(ran)}
    assert result.rows == count[Buffer.X] and result.overflows == overflows
    assert np.array_equal(result.buffers[Buffer.X], want[Buffer.X])
    for b in Buffer:
        if b is not Buffer.X:
            assert np.array_equal(result.buffers[b], before.buffers[b]), b.name
    return count[Buffer.X]


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
        # the harness's DRAM server is left suspended when the simulation ends; finalise it now, under this
        # module's warning filter, not in a later garbage collection (one inside ast.parse breaks CPython 3.11)
        gc.collect()
    return result, seen


# -- every method's own stages ------------------------------------------------------------------------------
@pytest.mark.parametrize("variant,stage,shape,seed", [
    ("dynamicvit", 0, {}, 1), ("evit", 1, {"banks": 1, "lanes": 16}, 4), ("sait", 0, {"banks": 4, "lanes": 4}, 5),
    pytest.param("dynamicvit", 1, {"banks": 4, "lanes": 4}, 2, marks=pytest.mark.slow),
    pytest.param("evit", 0, {}, 3, marks=pytest.mark.slow),
    pytest.param("sait", 1, {"axi": AxiDmaConfig(data_bytes=16)}, 6, marks=pytest.mark.slow),
    pytest.param("dynamicvit", 1, {"banks": 1, "lanes": 16}, 7, marks=pytest.mark.slow),
    pytest.param("evit", 0, {"banks": 8, "lanes": 2}, 8, marks=pytest.mark.slow),
    pytest.param("asvit", 0, {"banks": 4, "lanes": 4}, 9, marks=pytest.mark.slow)])
def test_bit_exact_with_the_reference(variant, stage, shape, seed):
    dram, regs, stages = selects(variant)
    cfg = config_for(variant, **shape)
    pc, ins, before, after, entry = stages[stage]
    result, seen = run_select(cfg, regs, dram, before, op_of(ins, before, regs), seed=seed, latency=(1, 12),
                              gap=0.3)
    rows = check_run(result, seen, dram, regs, before, ins)
    assert rows == after.count[Buffer.X] == entry["kept"] and seen["protected"] == after.protected
    check_after(cfg, result, after, Buffer.X, rows)
    assert np.array_equal(result.buffers[Buffer.X], after.buffers[Buffer.X])
    assert result.dram_commands == [(regs.memory_base + ins.addr_a, RECORD_BYTES)]


def _with(before, *, scores=None, candidates=None, protected=None):
    """A DynamicViT ``before`` with other scores in S, and / or another candidate or protected count."""
    bufs = {b: v.copy() for b, v in before.buffers.items()}
    count = dict(before.count)
    P = before.protected if protected is None else protected
    n = count[Buffer.S] if candidates is None else candidates
    if scores is not None:
        bufs[Buffer.S][:n, 0] = scores
    count[Buffer.S], count[Buffer.X] = n, n + P
    return dataclasses.replace(before, buffers=bufs, count=count, protected=P)


def _class_rows(before, rows):
    """An EViT or SaiT ``before`` with other class rows (heads x tokens)."""
    bufs = {b: v.copy() for b, v in before.buffers.items()}
    bufs[Buffer.CLS][:, :rows.shape[1]] = rows
    return dataclasses.replace(before, buffers=bufs)


def _stage_regs(regs, stage, keep):
    return regs.replace(keep=tuple(keep if s == stage else k for s, k in enumerate(regs.keep)))


def _option(dram, regs, ins, value):
    """The DRAM with the stage record's ``option`` (EViT: fuse) set to ``value`` (the image's checksum redone)."""
    d = bytearray(dram)
    at = regs.memory_base + ins.addr_a + _FIELD_AT["option"]
    struct.pack_into("<q", d, at, value)
    total = struct.unpack_from("<I", d, regs.memory_base + 16)[0]
    d[regs.memory_base:regs.memory_base + total] = finish_checksum(d[regs.memory_base:regs.memory_base + total])
    return bytes(d)


@pytest.mark.parametrize("case", ["ties", pytest.param("keep_all", marks=pytest.mark.slow),
                                  pytest.param("keep_one", marks=pytest.mark.slow),
                                  pytest.param("protected", marks=pytest.mark.slow),
                                  pytest.param("all_equal", marks=pytest.mark.slow),
                                  pytest.param("extremes", marks=pytest.mark.slow)])
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
    rows = check_run(result, seen, dram, r, state, ins)
    assert seen["ran"] and rows == state.protected + min(keep, state.count[Buffer.S])


@pytest.mark.parametrize("case", ["keep_all", "no_fuse", pytest.param("ties", marks=pytest.mark.slow),
                                  pytest.param("keep_one", marks=pytest.mark.slow)])
def test_evit_other_settings(case):
    dram, regs, stages = selects("evit")
    cfg = config_for("evit")
    pc, ins, before, after, entry = stages[1]
    n = before.count[Buffer.X]
    keep = {"keep_all": 0xFFFF, "keep_one": 1, "ties": 9, "no_fuse": 20}[case]
    state = before
    if case == "ties":  # two heads' rows summing to a few distinct means
        rng = np.random.default_rng(3)
        state = _class_rows(before, np.stack([rng.choice([0, 1 << 10, 1 << 12], size=n)] * cfg.envelope.heads))
    if case == "no_fuse":
        dram = _option(dram, regs, ins, 0)
    r = _stage_regs(regs, 1, keep)
    result, seen = run_select(cfg, r, dram, state, op_of(ins, state, r), seed=9, latency=(1, 6), gap=0.2)
    rows = check_run(result, seen, dram, r, state, ins)
    # keep all: nothing pruned, the fused token is all zeros
    assert rows == 1 + min(keep, n - 1) + (case != "no_fuse")


@pytest.mark.parametrize("density", [1 << 15, pytest.param(1, marks=pytest.mark.slow),
                                     pytest.param((1 << 15) - 1, marks=pytest.mark.slow)])
def test_sait_densities(density):
    dram, regs, stages = selects("sait")
    cfg = config_for("sait")
    pc, ins, before, after, entry = stages[1]
    r = regs.replace(density=density)
    result, seen = run_select(cfg, r, dram, before, op_of(ins, before, r), seed=11, latency=(1, 6), gap=0.2)
    rows = check_run(result, seen, dram, r, before, ins)
    if density == 1 << 15:  # the dense model: nothing but the record read
        assert seen["ran"] == 0 and rows == before.count[Buffer.X]
    else:
        assert seen["ran"] == 1 and rows == (2 if density == 1 else before.count[Buffer.X])  # below 1.0: all


@pytest.mark.parametrize("rule,case,fixed", [
    ("token", "zero_heads", True), ("image", "threshold", False),
    pytest.param("token", "threshold", False, marks=pytest.mark.slow),
    pytest.param("image", "zero_heads", True, marks=pytest.mark.slow),
    pytest.param("image", "all_zero", True, marks=pytest.mark.slow)])
def test_asvit_rules(rule, case, fixed):
    """AS-ViT under a threshold that prunes, its token rule (the release's) and image rule, and tokens (or a
    whole frame) whose heads output only zeros (equal head weights)."""
    dram, regs, stages = selects("asvit")
    cfg = config_for("asvit", lanes=16 if fixed else 8)
    pc, ins, before, after, entry = stages[1]
    dram = _option(dram, regs, ins, ("token", "image").index(rule))
    r = regs.replace(threshold=(700,) * regs.stages)    # about half the tokens
    state = before
    if case != "threshold":
        bufs = {b: v.copy() for b, v in before.buffers.items()}
        bufs[Buffer.A][:before.count[Buffer.A] if case == "all_zero" else 7] = 0
        state = dataclasses.replace(before, buffers=bufs)
    latency = 5
    result, seen = run_select(cfg, r, dram, state, op_of(ins, state, r), seed=13,
                              **({"latency": (latency, latency)} if fixed else {"latency": (1, 9), "gap": 0.25}))
    rows = check_run(result, seen, dram, r, state, ins)
    assert 1 < rows < state.count[Buffer.X] or case == "all_zero"
    if fixed:
        assert result.cycles == cycles(cfg, method="asvit", candidates=state.count[Buffer.X] - 1, kept=rows - 1,
                                       latency=latency, record_offset=regs.memory_base + ins.addr_a,
                                       image=rule == "image")


@pytest.mark.parametrize("variant,shape,setting,offset", [
    ("dynamicvit", {"axi": AxiDmaConfig(data_bytes=16)}, 7, 8),
    ("evit", {"axi": AxiDmaConfig(data_bytes=32), "gemm_cols": 64}, 0xFFFF, 24), ("sait", {}, 1 << 15, 0),
    pytest.param("dynamicvit", {}, 34, 0, marks=pytest.mark.slow),
    pytest.param("dynamicvit", {"banks": 4, "lanes": 4}, 0, 0, marks=pytest.mark.slow),
    pytest.param("evit", {"lanes": 16}, 9, 0, marks=pytest.mark.slow),
    pytest.param("sait", {"banks": 4, "lanes": 4}, 9000, 0, marks=pytest.mark.slow),
    pytest.param("dynamicvit", {"axi": AxiDmaConfig(data_bytes=4)}, 30, 8, marks=pytest.mark.slow),
    pytest.param("evit", {"banks": 1}, 1, 0, marks=pytest.mark.slow)])
def test_cycle_formula_is_exact(variant, shape, setting, offset):
    dram, regs, stages = selects(variant)
    cfg = config_for(variant, **shape)
    pc, ins, before, after, entry = stages[1]
    state = before
    if variant == "sait":
        r = regs.replace(density=setting)
    elif variant == "dynamicvit" and setting == 0:  # no candidate
        r, state = regs, _with(before, candidates=0)
    else:
        r = _stage_regs(regs, 1, setting)
    # the record copied past the image, at 8 or 24 mod 32 bytes: not aligned to a wide bus word
    where = len(dram) - regs.memory_base + 64 + offset
    image = bytearray(dram) + bytes(256)
    image[regs.memory_base + where:regs.memory_base + where + RECORD_BYTES] = \
        dram[regs.memory_base + ins.addr_a:regs.memory_base + ins.addr_a + RECORD_BYTES]
    moved = dataclasses.replace(ins, addr_a=where)
    latency = 6
    result, seen = run_select(cfg, r, bytes(image), state, op_of(moved, state, r), latency=(latency, latency))
    rows = check_run(result, seen, dram, r, state, ins)
    fused = variant == "evit"
    first = state.protected if variant == "dynamicvit" else 1
    candidates = state.count[Buffer.X] - first
    assert result.cycles == cycles(cfg, method=variant, candidates=candidates, kept=rows - first - fused,
                                   latency=latency, record_offset=regs.memory_base + where, fused=fused,
                                   skipped=not seen["ran"])


# -- faults ----------------------------------------------------------------------------------------------
def _patched(dram, regs, ins, field, value):
    """The DRAM with one int64 scalar (or the header's u32 ``tag`` / ``length``) of the record changed."""
    d = bytearray(dram)
    at = regs.memory_base + ins.addr_a
    if field in ("tag", "length"):
        struct.pack_into("<I", d, at + (0 if field == "tag" else 4), value)
    else:
        struct.pack_into("<q", d, at + _FIELD_AT[field], value)
    return bytes(d)


def _faults(cfg, cases, before):
    for r, d, op in cases:
        result, seen = run_select(cfg, r, d, before, op)
        assert result.fault and result.rows == 0 and not seen["ran"], op
        assert np.array_equal(result.buffers[Buffer.X], before.buffers[Buffer.X])
        yield result


THOROUGH = pytest.mark.parametrize("thorough", [False, pytest.param(True, marks=pytest.mark.slow)])


@THOROUGH
def test_faults_on_malformed_ops(thorough):
    dram, regs, stages = selects("dynamicvit")
    cfg = config_for("dynamicvit")
    pc, ins, before, after, entry = stages[0]
    cases = [  # found by the registered checks of the op: nothing read
        (regs, dram, op_of(dataclasses.replace(ins, dst=Buffer.T), before, regs)),
        (regs.replace(method="spvit", rule=("topk",) * regs.stages), dram, op_of(ins, before, regs)),
        (regs, dram, op_of(dataclasses.replace(ins, addr_a=ins.addr_a + 4), before, regs)),
        (regs, dram, op_of(ins, before, regs, n=cfg.envelope.max_tokens)),
    ] + ([
        (regs, dram, op_of(dataclasses.replace(ins, arg=regs.stages), before, regs)),
        (regs.replace(method="asvit", rule=("threshold",) * regs.stages), dram, op_of(ins, before, regs)),  # src S
        (regs, dram, op_of(ins, before, regs, protected=0)),
        (regs, dram, op_of(dataclasses.replace(ins, rows=Rows.CANDIDATES), before, regs)),
    ] if thorough else [])
    for result in _faults(cfg, cases, before):
        assert result.cycles <= 3 and not result.dram_commands


@THOROUGH
def test_faults_on_malformed_records_and_scores(thorough):
    dram, regs, stages = selects("dynamicvit")
    cfg = config_for("dynamicvit")
    pc, ins, before, after, entry = stages[0]
    lnrm = next(s[1] for s in steps("dynamicvit")[2] if s[1].opcode == Opcode.LAYERNORM)
    op = op_of(ins, before, regs)
    cases = [
        (regs, dram, op_of(dataclasses.replace(ins, addr_a=lnrm.addr_a), before, regs)),   # a LNRM record
        (regs, _patched(dram, regs, ins, "length", RECORD_BYTES + 8), op),
        (regs, _patched(dram, regs, ins, "method", METHODS.index("evit")), op),
    ] + ([
        (regs, _patched(dram, regs, ins, "method", METHODS.index("dynamicvit") + (1 << 40)), op),
        (regs, _patched(dram, regs, ins, "nrefs", 1), op),        # its length says no references
    ] if thorough else [])
    for result in _faults(cfg, cases, before):
        assert len(result.dram_commands) == 1
    # a score that does not fit 16 signed bits (a class row's 1.0 as a candidate's score): the reference's
    # order_key refuses it; the selector is drained and nothing is written
    state = _with(before, candidates=2)
    state.buffers[Buffer.CLS][:, 0] = [1 << 15, 0]
    state.count[Buffer.CLS] = 2
    bad = dataclasses.replace(ins, src=Buffer.CLS)
    with pytest.raises(ValueError, match="scores must lie in"):
        reference(dram, regs, state, bad)
    list(_faults(cfg, [(regs, dram, op_of(bad, state, regs))], state))


@pytest.mark.parametrize("nrefs,pairs,good", [(1, 1, True), (2, 1, True), (3, 2, True), (3, 1, False),
                                               (2, 2, False), (1, 0, False), (0, 1, False)])
def test_record_length_against_its_references(nrefs, pairs, good):
    """A record's length must be its scalars plus ``ceil(nrefs / 2)`` 8-byte words of 4-byte references (those
    of SPViT's stage; other methods ignore them): an even and an odd count whose length agrees runs as the
    reference on the image as compiled does (the patch breaks the image's checksum, which the reference checks),
    one word too few or too many faults."""
    dram, regs, stages = selects("dynamicvit")
    cfg = config_for("dynamicvit")
    pc, ins, before, after, entry = stages[0]
    patched = _patched(_patched(dram, regs, ins, "nrefs", nrefs), regs, ins, "length", RECORD_BYTES + 8 * pairs)
    if good:
        result, seen = run_select(cfg, regs, patched, before, op_of(ins, before, regs))
        check_run(result, seen, dram, regs, before, ins)
    else:
        for result in _faults(cfg, [(regs, patched, op_of(ins, before, regs))], before):
            assert len(result.dram_commands) == 1


@THOROUGH
def test_faults_of_evit_and_sait(thorough):
    dram, regs, stages = selects("evit")
    cfg = config_for("evit")
    pc, ins, before, after, entry = stages[0]
    n = before.count[Buffer.X]
    keep_all = _stage_regs(regs, 0, 0xFFFF)
    with pytest.raises(ValueError, match="more than the envelope"):  # 1 + 49 kept + the fused token
        reference(dram, keep_all, before, ins)
    cases = [
        (keep_all, dram, op_of(ins, before, keep_all)),
        (regs, dram, op_of(ins, before, regs, n2=n - 1)),                      # CLS is not over these tokens
    ] + ([
        (regs, dram, op_of(dataclasses.replace(ins, src=Buffer.S), before, regs)),
        (regs, dram, op_of(ins, before, regs, protected=2)),
        (regs.replace(method="sait", rule=("mass",) * regs.stages), dram, op_of(ins, before, regs)),
    ] if thorough else [])
    list(_faults(cfg, cases, before))
    dram, regs, stages = selects("sait")
    pc, ins, before, after, entry = stages[0]
    too_dense = op_of(ins, before, regs)
    bench_regs = dataclasses.replace(regs)
    object.__setattr__(bench_regs, "density", (1 << 15) + 1)   # beyond what Registers allows: the selector refuses
    list(_faults(config_for("sait"), [(bench_regs, dram, too_dense)], before))


def test_engine_parameters_are_checked():
    with pytest.raises(TypeError, match=r"^config must be an AccelConfig, not dict$"):
        SelectEngine(config={})
    env = Envelope(max_tokens=8, width=32, heads=2, mlp_hidden=64, depth=1, classes=10, patch_size=4, in_chans=1,
                   patches=4, res_bits=16, prob_frac=15, stages=1, head_dim=16)
    with pytest.raises(ValueError, match=r"^lanes \(16\) must not exceed the envelope's 8 tokens"):
        SelectEngine(config=AccelConfig(envelope=env, lanes=16))
    cfg = AccelConfig(envelope=env)
    with pytest.raises(ValueError, match=r"^method must be one of dynamicvit, evit, sait, asvit, not 'spvit'$"):
        cycles(cfg, method="spvit", candidates=3, kept=1, latency=2)
    with pytest.raises(ValueError, match=r"^kept must be"):
        cycles(cfg, method="evit", candidates=3, kept=4, latency=2)
