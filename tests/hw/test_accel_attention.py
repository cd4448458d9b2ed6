# amaranth: UnusedElaboratable=no
"""The ATTENTION engine on real token buffers: bit-exact with the reference sequencer on compiled models' own
attention heads (the first block, a block after a pruning stage; heads 0 and 1) under two buffer shapes and
two bus widths, its cycle formula exact at a fixed DRAM latency, random DRAM latency and gaps, and malformed
ops and records faulted with nothing written.

The core is generated with the constants of the block under test, decoded from that instruction's own record:
a crutch for today's core, whose per-layer constants are generation parameters. The integrator removes it
(the ``constants=`` argument) once the core takes them at run time."""

from __future__ import annotations

import dataclasses
import gc
import struct

import numpy as np
import pytest
from accel_models import config_for, first_step, steps
from amaranth.hdl import Module
from amaranth.lib import wiring
from hypothesis import given, settings
from hypothesis import strategies as st

from tokensift.hw.accel.op_attention import (
    RECORD_BYTES,
    AttentionOpEngine,
    HeadSchedule,
    core_params,
    cycles,
    drain_cycles,
)
from tokensift.hw.accel.ports import engine_signature
from tokensift.hw.axi.config import AxiDmaConfig
from tokensift.quant.accel import records as rec
from tokensift.quant.accel.isa import Buffer, Opcode, Rows
from tokensift.quant.attention import attention_head
from tokensift.quant.fixed import OverflowCounter
from tokensift.sim.accel_ops import EngineBench, op_fields, run_op

# TINY models: 3 blocks of 2 heads, so the ATTENTION steps are block 0 heads 0, 1 (steps 0, 1) .. block 2 (4, 5);
# DynamicViT prunes before blocks 1 and 2 (50 -> 35 -> 25 tokens)

# the harness's DRAM server is left suspended in ``ctx.tick().until(...)`` when a run ends, and closing it raises
# "aclose(): asynchronous generator is already running"; collected inside a later ``ast.parse`` (pytest rewriting
# a late import), that turns into a SystemError, so each test collects it at once
pytestmark = pytest.mark.filterwarnings("ignore:Exception ignored in. <coroutine object (run_op|TickTrigger):"
                                        "pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(autouse=True)
def _collect_dram_servers():
    yield
    gc.collect()


def _field(name: str) -> int:
    return rec.RECORD_HEADER + 8 * rec.SCHEMAS[rec.Tag.ATTENTION].scalars.index(name)


def _record(dram, address):
    return rec.attention_from(*rec.decode_record(dram, address, rec.Tag.ATTENTION))


@dataclasses.dataclass
class Case:
    cfg: object
    ins: object
    before: object
    after: object
    entry: dict
    dram: bytes
    base: int

    @property
    def address(self) -> int:
        return self.base + self.ins.addr_a

    def op(self, **changes):
        ins = dataclasses.replace(self.ins, **{k: v for k, v in changes.items() if k not in ("n", "n2")})
        n = changes.get("n", self.before.count[self.ins.src])
        return op_fields(ins, start=0, n=n, n2=changes.get("n2", self.before.count[Buffer.CLS]),
                         memory_base=self.base)

    def run(self, op=None, *, dram=None, constants=None, cores: int = 1, **timing):
        cfg = dataclasses.replace(self.cfg, attention_cores=cores)
        engine = AttentionOpEngine(config=cfg, constants=constants or _record(self.dram, self.address))
        return run_op(EngineBench(self.cfg, engine), self.dram if dram is None else dram, self.before.buffers,
                      op or self.op(), **timing)


def _case(variant: str, nth: int, *, shift: int = 0, **shape) -> Case:
    """The ``nth`` ATTENTION step of the variant's test image; ``shift`` moves the memory image up by that
    many bytes (a record that starts inside a bus word)."""
    dram, regs, _ = steps(variant)
    pc, ins, before, after, entry = first_step(variant, Opcode.ATTENTION, nth)
    return Case(config_for(variant, **shape), ins, before, after, entry, bytes(shift) + dram,
                regs.memory_base + shift)


def _check_bit_exact(case: Case, result) -> None:
    assert not result.fault
    n, h, hd, c = case.entry["n"], case.ins.arg, case.ins.k, case.ins.m
    assert result.rows == n == case.after.count[case.ins.dst]
    qkv, counter = case.before.buffers[case.ins.src][:n], OverflowCounter()
    attention_head(*(qkv[:, i * c + h * hd:i * c + (h + 1) * hd] for i in range(3)), _record(case.dram, case.address),
                   counter=counter)
    assert result.overflows == min(counter.total, 0xFFFF)
    for b in Buffer:  # the head's columns and class row as the reference wrote them, nothing else touched
        got, want = result.buffers[b], case.after.buffers[b]
        if not np.array_equal(got, want):
            r, c = np.argwhere(got != want)[0]
            raise AssertionError(f"{b.name} differs first at row {r} column {c}: {got[r, c]} != {want[r, c]}")


def _check_untouched(case: Case, result) -> None:
    assert result.fault and result.rows == 0
    for b in Buffer:
        assert np.array_equal(result.buffers[b], case.before.buffers[b]), b.name


def test_first_block_bit_exact_with_exact_cycles():
    case = _case("dense", 0, lanes=16)  # block 0, head 0
    result = case.run(latency=(3, 3))
    _check_bit_exact(case, result)
    assert result.dram_commands == [(case.address, RECORD_BYTES)]
    timing = {"n_tokens": case.entry["n"], "dram_latency": 3, "constants": _record(case.dram, case.address),
              "record_address": case.address}
    # ``done`` once the frame is loaded (3 N C beats), the outputs written while ``busy``
    assert result.cycles == cycles(case.cfg, **timing) < result.drained == drain_cycles(case.cfg, **timing)
    assert result.cycles > 3 * case.entry["n"] * case.cfg.envelope.head_dim // case.cfg.lanes


def test_random_dram_latency_and_gaps():
    case = _case("dynamicvit", 4, banks=1, lanes=16)  # block 2, head 0
    result = case.run(latency=(1, 25), gap=0.4, seed=7)
    _check_bit_exact(case, result)
    assert result.cycles > cycles(case.cfg, n_tokens=case.entry["n"], dram_latency=1,
                                  constants=_record(case.dram, case.address), record_address=case.address)


def _pair():
    """Heads 0 and 1 of a pruned block (4 banks, 8 lanes, a 16-byte bus), the memory image 8 bytes up: each
    record starts in the middle of a bus word."""
    shape = {"banks": 4, "lanes": 8, "axi": AxiDmaConfig(data_bytes=16)}
    first, second = (_case("dynamicvit", nth, shift=8, **shape) for nth in (4, 5))
    assert second.entry["n"] < 50 and second.entry["head"] == 1
    assert second.before.count == first.after.count
    assert _record(first.dram, first.address) == _record(second.dram, second.address)
    second_op = second.op()  # with the class rows' count head 0 leaves
    second.before = first.before  # the pair's buffers before and after
    return first, second, second_op


def _model(cfg, cases, restart: int, latency: int = 3) -> tuple[list[int], int]:
    """:class:`HeadSchedule`'s ``done`` of each case's op (the next started ``restart`` cycles after the
    previous ``done``) and the drain."""
    sched = HeadSchedule(cfg, _record(cases[0].dram, cases[0].address))
    now, done = 0, []
    for c in cases:
        done.append(sched.run(now, n_tokens=c.entry["n"], dram_latency=latency, record_address=c.address))
        now = done[-1] + restart - 1
    return done, sched.drained


@pytest.mark.parametrize("cores,restart", [(1, 1), (2, 1), (2, 23)])
def test_heads_back_to_back(cores, restart):
    """Heads 0 and 1 on one engine, the second started ``restart`` cycles after the first's ``done`` (as the
    sequencer issues one head after another): on one core copy the second waits for the first's frame; on two
    it loads while the first computes. Bit-exact once ``busy`` falls, every ``done`` and the drain exactly
    :class:`HeadSchedule`'s."""
    first, second, second_op = _pair()
    result = first.run(latency=(3, 3), cores=cores, then=[second_op], restart=restart)
    _check_bit_exact(second, result)
    word = first.cfg.axi.data_bytes
    assert result.dram_commands == [(c.address // word * word, RECORD_BYTES + c.address % word)
                                    for c in (first, second)]
    cfg = dataclasses.replace(first.cfg, attention_cores=cores)
    assert (result.done_at, result.drained) == _model(cfg, [first, second], restart)
    alone = drain_cycles(cfg, n_tokens=first.entry["n"], dram_latency=3, constants=_record(first.dram, first.address),
                         record_address=first.address)
    if cores == 1:  # the second head's frame waits for the first's last step
        assert result.done_at[1] > alone - 100
    else:           # it loads while the first computes
        assert result.done_at[1] < alone // 2 and result.drained < 2 * alone - 1000


@pytest.mark.parametrize("cores", [2, 3])
def test_more_heads_than_copies(cores):
    """Five heads (0, 1, 0, 1, 0) on ``cores`` copies, round robin: a copy takes its next frame while its
    previous frame's last rows drain, each output still lands in its own head's columns and class row."""
    first, second, second_op = _pair()
    result = first.run(latency=(3, 3), cores=cores, then=[second_op, first.op(), second_op, first.op()],
                       restart=17)
    cfg = dataclasses.replace(first.cfg, attention_cores=cores)
    assert (result.done_at, result.drained) == _model(cfg, [first, second] * 2 + [first], 17)
    _check_bit_exact(second, result)


def test_malformed_ops_fault_before_fetching():
    case = _case("dense", 1)  # block 0, head 1: the class rows hold head 0's n
    n, env = case.before.count[Buffer.QKV], case.cfg.envelope
    bad = [case.op(rows=Rows.PATCHES), case.op(arg=env.heads), case.op(k=env.head_dim // 2),
           case.op(arg=0, m=env.head_dim + case.cfg.lanes // 2), case.op(m=env.head_dim), case.op(src2=Buffer.A),
           case.op(n=0), case.op(n2=n - 1), case.op(addr_a=case.ins.addr_a + 4), case.op(dst=Buffer.CLS),
           case.op(src=Buffer.X), case.op(dst=Buffer.S),
           {**case.op(), "memory_base": (1 << case.cfg.axi.addr_width) - case.ins.addr_a - RECORD_BYTES + 8}]
    for op in bad:
        result = case.run(op)
        _check_untouched(case, result)
        assert result.cycles == 4 and result.dram_commands == []


def _patched(case: Case, offset: int, value: int, fmt: str = "<q") -> bytes:
    dram = bytearray(case.dram)
    struct.pack_into(fmt, dram, case.address + offset, value)
    return bytes(dram)


def test_malformed_records_fault():
    case = _case("dense", 0, lanes=16)
    env = case.cfg.envelope
    for offset, value, fmt in [(0, rec.Tag.LAYERNORM, "<I"),           # another record's tag
                               (4, RECORD_BYTES + 8, "<I"),            # a length its fields do not make
                               (_field("n_max"), env.max_tokens + 1, "<q"),
                               (_field("head_dim"), env.head_dim + (1 << 32), "<q"),
                               (_field("lanes"), 3, "<q"),             # does not divide the head dimension
                               (_field("prob_frac"), env.prob_frac - 1, "<q"),
                               (_field("scale_shift"), 49, "<q"),
                               (_field("heads_parallel"), 0, "<q")]:
        result = case.run(dram=_patched(case, offset, value, fmt), latency=(2, 2))
        _check_untouched(case, result)
        assert len(result.dram_commands) == 1


class _SlaveError(wiring.Component):
    """The engine behind a bus whose read responses all come back with an error (RRESP SLVERR)."""

    def __init__(self, engine: AttentionOpEngine):
        self._engine = engine
        super().__init__(engine_signature(engine.config))

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = eng = self._engine
        for port in ("rd", "wr", "dram_cmd"):
            wiring.connect(m, getattr(eng, port), wiring.flipped(getattr(self, port)))
        m.d.comb += [eng.dram_data.valid.eq(self.dram_data.valid), self.dram_data.ready.eq(eng.dram_data.ready),
                     eng.dram_data.payload.eq(self.dram_data.payload), eng.dram_data.payload.error.eq(1)]
        for name in ("start", "op"):
            m.d.comb += getattr(eng, name).eq(getattr(self, name))
        for name in ("done", "rows", "fault", "overflows"):
            m.d.comb += getattr(self, name).eq(getattr(eng, name))
        return m


def test_a_bus_error_faults():
    case = _case("dense", 0, lanes=16)
    engine = _SlaveError(AttentionOpEngine(config=case.cfg, constants=_record(case.dram, case.address)))
    result = run_op(EngineBench(case.cfg, engine), case.dram, case.before.buffers, case.op())
    _check_untouched(case, result)
    assert len(result.dram_commands) == 1


def test_one_engine_serves_every_layer():
    """The core takes each layer's constants at run time: an engine generated with block 0's runs block 2's
    head bit-exact with block 2's own constants (read from its record)."""
    case = _case("dense", 4, lanes=16)  # block 2
    block0 = _case("dense", 0, lanes=16)
    other = _record(block0.dram, block0.address)
    assert other != _record(case.dram, case.address)
    _check_bit_exact(case, case.run(constants=other))


def test_hint_fields_accept_any_valid_value():
    """``lanes`` and ``heads_parallel`` in the record are the reference model's hardware hints: any valid
    value runs (the result does not depend on them)."""
    case = _case("dynamicvit", 5, lanes=16)
    dram = _patched(case, _field("lanes"), 4)
    dram = bytearray(dram)
    struct.pack_into("<q", dram, case.address + _field("heads_parallel"), 3)
    _check_bit_exact(case, case.run(dram=bytes(dram), constants=_record(case.dram, case.address)))


def test_parameter_errors():
    cfg = config_for("dense")
    with pytest.raises(TypeError, match=r"^config must be an AccelConfig, not dict$"):
        AttentionOpEngine(config={})
    with pytest.raises(TypeError, match=r"^constants must be an AttentionParams, not int$"):
        AttentionOpEngine(config=cfg, constants=3)
    p = core_params(cfg)
    wrong = dataclasses.replace(p, softmax=dataclasses.replace(p.softmax, prob_frac=p.softmax.prob_frac - 1))
    with pytest.raises(ValueError, match=r"^the constants' probabilities have \d+ fractional bits, the "
                                         r"envelope's class rows \d+$"):
        AttentionOpEngine(config=cfg, constants=wrong)
    narrow = dataclasses.replace(cfg, axi=AxiDmaConfig(data_bytes=4), gemm_cols=64)
    with pytest.raises(ValueError, match=r"^the attention engine reads its record's int64 fields whole from "
                                         r"each AXI word: the word must be at least 8 bytes, not 4$"):
        AttentionOpEngine(config=narrow)
    with pytest.raises(ValueError, match=r"^record_address must be 8-byte aligned, not 4$"):
        cycles(cfg, n_tokens=10, dram_latency=0, record_address=4)
    with pytest.raises(ValueError, match=r"^dram_latency must be"):
        cycles(cfg, n_tokens=10, dram_latency=-1)


@pytest.mark.sim
@pytest.mark.parametrize("shape", [{"lanes": 16}, {"banks": 4, "lanes": 8, "axi": AxiDmaConfig(data_bytes=16)}])
def test_generated_verilog_lints_clean(shape, tmp_path):
    from amaranth.back import verilog
    from test_verilog_lint import findings

    top = "attention_op"
    found = findings(verilog.convert(AttentionOpEngine(config=config_for("dense", **shape)), name=top,
                                     emit_src=False), top, tmp_path)
    assert not found, "\n".join(found)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [{"banks": 2, "lanes": 8}, {"banks": 1, "lanes": 16}])
@pytest.mark.parametrize("variant,nth", [("dense", 1), ("dense", 5), ("dynamicvit", 0), ("dynamicvit", 3),
                                         ("evit", 2), ("evit", 5)])
def test_every_shape_and_head_with_exact_cycles(variant, nth, shape):
    case = _case(variant, nth, **shape)
    result = case.run(latency=(6, 6))
    _check_bit_exact(case, result)
    timing = {"n_tokens": case.entry["n"], "dram_latency": 6, "constants": _record(case.dram, case.address),
              "record_address": case.address}
    assert (result.cycles, result.drained) == (cycles(case.cfg, **timing), drain_cycles(case.cfg, **timing))


@given(counts=st.lists(st.integers(1, 50), min_size=1, max_size=8), gap=st.integers(1, 400),
       cores=st.integers(1, 4))
@settings(max_examples=60, deadline=None)
def test_head_schedule_properties(counts, gap, cores):
    """The overlapped heads' model: every ``done`` comes after its start and its load, the drain after every
    ``done``; one more core copy never makes a head or the drain later; on as many copies as heads each head
    waits for no copy (its ``done`` is its own :func:`cycles` after its start)."""
    cfg = config_for("dense", lanes=8)

    def schedule(copies):
        sched = HeadSchedule(dataclasses.replace(cfg, attention_cores=copies))
        now, done = 0, []
        for n in counts:
            done.append(sched.run(now, n_tokens=n, dram_latency=3))
            assert done[-1] > now + 3 * n * (cfg.envelope.head_dim // cfg.lanes)
            now = done[-1] + gap
        return done, sched.drained

    done, drained = schedule(cores)
    more, more_drained = schedule(cores + 1)
    assert drained > max(done) and all(b <= a for a, b in zip(done, more, strict=True)) and more_drained <= drained
    wide, _ = schedule(len(counts))
    starts = [0] + [d + gap for d in wide[:-1]]
    assert [d - s for d, s in zip(wide, starts, strict=True)] == [cycles(cfg, n_tokens=n, dram_latency=3)
                                                                   for n in counts]
