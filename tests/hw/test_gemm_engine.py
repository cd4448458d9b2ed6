"""The GEMM engine in the Amaranth simulator: bit-exact (0 LSB) against ``quant.gemm.IntLinear`` with random
stalls on every stream, the corners (N < rows, M not a multiple of cols, K = 1, -128 x -128 sums, saturating
accumulators and outputs), back-to-back jobs of different shapes and output widths (``out_bits``), directed
saturation edges, rejected sizes and widths; and the cycle model, with a rate-limited weight memory and with
an AXI read DMA's bursts and long gaps."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Mux, Signal, signed
from amaranth.lib import memory
from amaranth.sim import Simulator

from tokensift.hw.common.ecp5 import ECP5
from tokensift.hw.gemm import GemmConfig, GemmEngine
from tokensift.hw.gemm import core as gemm_core
from tokensift.hw.gemm.core import pieces
from tokensift.hw.gemm.cycles import WeightBursts, WeightMemory, cycles, schedule
from tokensift.hw.gemm.layout import decode_outputs, encode_job
from tokensift.quant.fixed import FixedFormat, Overflow, Rounding
from tokensift.sim.gemm_jobs import random_job


def _raw(payload):
    return payload.as_value() if hasattr(payload, "as_value") else payload


class _ForPlatform(Elaboratable):
    """The engine as elaborated for ``platform`` (the simulator elaborates with none)."""

    def __init__(self, dut, platform):
        self.dut, self.platform = dut, platform

    def elaborate(self, platform):
        return self.dut.elaborate(self.platform)


def _simulator(dut, platform):
    return Simulator(dut if platform is None else _ForPlatform(dut, platform))


def run_jobs(cfg, jobs, *, seed=0, idle=0.3, stall=0.3, bad_jobs=(), max_cycles=200_000, platform=None):
    """Feed ``jobs`` (and rejected ``bad_jobs`` (n, k, m, out_bits) before them) and return the per-job
    outputs, the overflow counters and the status (the engine elaborated for ``platform``)."""
    dut = GemmEngine(config=cfg)
    rng = random.Random(seed)
    sim = _simulator(dut, platform)
    sim.add_clock(1e-8)
    received = []
    expected_beats = sum(j.output_beats(cfg) for j in jobs)
    state = {"done": False}

    async def send(ctx, port, value):
        while rng.random() < idle:
            await ctx.tick()
        ctx.set(_raw(port.payload), value)
        ctx.set(port.valid, 1)
        await ctx.tick().until(port.ready)
        ctx.set(port.valid, 0)

    async def jobs_tb(ctx):
        for n, k, m, out_bits in bad_jobs:
            await send(ctx, dut.job, encode_job(n, k, m, out_bits))
        for job in jobs:
            for beat in job.act_beats(cfg):
                await send(ctx, dut.act, beat)
            await send(ctx, dut.job, job.job_beat())

    async def weights_tb(ctx):
        for job in jobs:
            for beat in job.weight_beats(cfg):
                await send(ctx, dut.weights, beat)

    async def sink_tb(ctx):
        cycles = 0
        while len(received) < expected_beats and cycles < max_cycles:
            ready = rng.random() >= stall
            ctx.set(dut.o_stream.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o_stream.valid, _raw(dut.o_stream.payload))
            cycles += 1
            if ready and valid:
                received.append(payload)
        ctx.set(dut.o_stream.ready, 0)
        for _ in range(12):
            await ctx.tick()
        state.update(done=True, acc=ctx.get(dut.acc_overflows), out=ctx.get(dut.out_overflows),
                     error=ctx.get(dut.status.error), rejected=ctx.get(dut.status.rejected),
                     busy=ctx.get(dut.status.busy), extra=ctx.get(dut.o_stream.valid))

    sim.add_testbench(jobs_tb, background=True)
    sim.add_testbench(weights_tb, background=True)
    sim.add_testbench(sink_tb)
    sim.run()
    assert len(received) == expected_beats, f"{len(received)} of {expected_beats} output beats arrived"
    outs, pos = [], 0
    for job in jobs:
        count = job.output_beats(cfg)
        y, lasts = decode_outputs(received[pos:pos + count], job.n, job.m, cfg)
        assert lasts == [0] * (count - 1) + [1]
        outs.append(y)
        pos += count
    return outs, state


def check(cfg, jobs, **kw):
    outs, state = run_jobs(cfg, jobs, **kw)
    for i, (job, y) in enumerate(zip(jobs, outs, strict=True)):
        diff = int(np.count_nonzero(y != job.expected))
        assert diff == 0, f"job {i} ({job.n}x{job.k}x{job.m}): {diff} outputs differ from IntLinear"
    top = (1 << cfg.counter_bits) - 1
    assert state["acc"] == min(top, sum(j.acc_overflows for j in jobs))
    assert state["out"] == min(top, sum(j.out_overflows for j in jobs))
    assert not state["busy"] and not state["extra"]
    return state


SMALL = GemmConfig(rows=4, cols=8, max_tokens=13, max_in=20, max_out=21, weight_bytes=4)


def test_random_sizes_with_stalls_bit_exact():
    rng = np.random.default_rng(1)
    jobs = [random_job(rng, SMALL, int(rng.integers(1, 14)), int(rng.integers(1, 21)), int(rng.integers(1, 22)))
            for _ in range(5)]
    check(SMALL, jobs, seed=1)


def test_corners_back_to_back():
    rng = np.random.default_rng(2)
    jobs = [random_job(rng, SMALL, 3, 1, 5),                       # N < rows, K = 1, M < cols
            random_job(rng, SMALL, 13, 20, 21, kind="extreme"),    # all -128 x -128, full sizes
            random_job(rng, SMALL, 5, 9, 17, kind="saturate"),     # accumulators and outputs saturate
            random_job(rng, SMALL, 8, 2, 8)]                       # exact multiples
    assert jobs[2].acc_overflows > 0 and jobs[2].out_overflows > 0
    check(SMALL, jobs, seed=2, idle=0.0, stall=0.0)
    check(SMALL, jobs, seed=3, idle=0.5, stall=0.5)


def test_rejected_sizes_flagged_and_next_job_exact():
    rng = np.random.default_rng(3)
    jobs = [random_job(rng, SMALL, 6, 7, 9)]
    bad = [(0, 4, 4, 8), (14, 4, 4, 8), (4, 21, 4, 8), (4, 4, 22, 8), (4, 0, 4, 8),
           (4, 4, 4, 0), (4, 4, 4, 1), (4, 4, 4, 9), (4, 4, 4, 255)]   # out_bits below 2 or above out.bits
    state = check(SMALL, jobs, seed=4, bad_jobs=bad)
    assert state["error"] == 1 and state["rejected"] == len(bad)


#: an engine whose widest format is the residual's int16: int8 and int16 jobs (and narrower) share it
WIDE = GemmConfig(rows=4, cols=8, max_tokens=13, max_in=20, max_out=21, weight_bytes=4,
                  out=FixedFormat(bits=16))


def test_output_width_per_job_back_to_back():
    rng = np.random.default_rng(7)
    jobs = [random_job(rng, WIDE, 13, 20, 21, out_bits=8),
            random_job(rng, WIDE, 7, 9, 13, out_bits=16),
            random_job(rng, WIDE, 5, 9, 17, kind="saturate", out_bits=8),
            random_job(rng, WIDE, 9, 4, 6, kind="saturate", out_bits=16),
            random_job(rng, WIDE, 3, 5, 8, out_bits=2),
            random_job(rng, WIDE, 13, 11, 21, out_bits=12)]
    # the int8 jobs' outputs would not fit int8 at the engine's own width: the run-time width matters
    assert all(j.out_overflows > 0 for j in jobs[2:5])
    check(WIDE, jobs, seed=7)


@pytest.mark.parametrize("out_bits", [8, 16])
def test_saturation_edges(out_bits):
    rng = np.random.default_rng(out_bits)
    # 13 tokens on every edge of out_bits and int16 (and one past it), at shifts 0, 1 and 2; an int8 job
    # before and after, so the width changes from job to job in the pipeline
    jobs = [random_job(rng, WIDE, 4, 3, 5, out_bits=8),
            random_job(rng, WIDE, 13, 3, 18, kind="edges", out_bits=out_bits),
            random_job(rng, WIDE, 13, 2, 18, kind="edges", out_bits=out_bits),
            random_job(rng, WIDE, 4, 3, 5, out_bits=8)]
    edge = jobs[1].expected
    narrow = WIDE.job_format(out_bits)
    assert edge.max() == narrow.max_int and edge.min() == narrow.min_int
    assert jobs[1].out_overflows > 0 and jobs[1].acc_overflows == 0
    check(WIDE, jobs, seed=out_bits, idle=0.2, stall=0.2)


@pytest.mark.parametrize("cfg", [
    GemmConfig(rows=1, cols=1, max_tokens=3, max_in=4, max_out=3, weight_bytes=1),
    GemmConfig(rows=2, cols=6, max_tokens=7, max_in=9, max_out=13, weight_bytes=3,
               out=FixedFormat(bits=12, rounding=Rounding.FLOOR)),
    GemmConfig(rows=8, cols=16, max_tokens=17, max_in=12, max_out=40, weight_bytes=16, multiplier_bits=20),
], ids=["1x1", "2x6-int12-floor", "8x16-w16"])
def test_other_shapes(cfg):
    rng = np.random.default_rng(4)
    jobs = [random_job(rng, cfg, cfg.max_tokens, cfg.max_in, cfg.max_out),
            random_job(rng, cfg, 1, 1, 1),
            random_job(rng, cfg, max(1, cfg.max_tokens // 2), max(1, cfg.max_in // 2), max(1, cfg.max_out - 1),
                       kind="saturate")]
    check(cfg, jobs, seed=5)


def test_banks_span_several_block_rams():
    # token banks of 4,400 words and weight banks of 2,200: three and two pieces, both halves used, so
    # reads and writes cross the pieces' boundaries (2,048 and 4,096)
    cfg = GemmConfig(rows=2, cols=4, max_tokens=4, max_in=1100, max_out=6, weight_bytes=4)
    assert len(pieces(cfg.token_depth)) == 3 and len(pieces(cfg.weight_depth)) == 2
    rng = np.random.default_rng(6)
    jobs = [random_job(rng, cfg, 4, 1100, 6), random_job(rng, cfg, 3, 1100, 5), random_job(rng, cfg, 4, 1030, 2)]
    check(cfg, jobs, seed=6, idle=0.1, stall=0.1)


def measure_cycles(cfg, jobs, *, rate=None, latency=None, bursts=None, platform=None):
    """Run ``jobs`` with no random stalls: each job's activations then its job beat (the next job's while the
    previous one computes), weights from a :class:`WeightMemory` of ``rate`` and ``latency`` (or from the
    DMA ``bursts``, a :class:`WeightBursts`) started when the first job is accepted, the output always
    ready. Returns the cycles each job beat was accepted, the cycles each job's last output beat was
    taken, and the output payloads."""
    dut = GemmEngine(config=cfg)
    sim = _simulator(dut, platform)
    sim.add_clock(1e-8)
    accepted, last, beats = [], [], []

    async def tb(ctx):
        acts = [job.act_beats(cfg) for job in jobs]
        weights = [b for job in jobs for b in job.weight_beats(cfg)]
        expected = [job.output_beats(cfg) for job in jobs]
        mem = None
        t, j, a_pos, w_pos, out_count = 0, 0, 0, 0, 0
        ctx.set(dut.o_stream.ready, 1)
        while len(last) < len(jobs):
            offer_act = j < len(jobs) and a_pos < len(acts[j])
            offer_job = j < len(jobs) and not offer_act
            offer_w = mem is not None and mem.valid and w_pos < len(weights)
            ctx.set(dut.act.valid, offer_act)
            ctx.set(dut.job.valid, offer_job)
            ctx.set(dut.weights.valid, offer_w)
            if offer_act:
                ctx.set(_raw(dut.act.payload), acts[j][a_pos])
            if offer_job:
                ctx.set(_raw(dut.job.payload), jobs[j].job_beat())
            if offer_w:
                ctx.set(dut.weights.payload, weights[w_pos])
            _, _, a_rdy, j_rdy, w_rdy, o_val, o_pay = await ctx.tick().sample(
                dut.act.ready, dut.job.ready, dut.weights.ready, dut.o_stream.valid, _raw(dut.o_stream.payload))
            if mem is not None:
                mem.step(offer_w and w_rdy)
                w_pos += bool(offer_w and w_rdy)
            if offer_act and a_rdy:
                a_pos += 1
            if offer_job and j_rdy:
                accepted.append(t)
                j, a_pos = j + 1, 0
                if mem is None:  # this cycle was the memory's first
                    mem = bursts or WeightMemory(beat_bytes=cfg.weight_bytes, bytes_per_cycle=rate,
                                                 latency=latency)
                    mem.step(False)
            if o_val:
                beats.append(o_pay)
                out_count += 1
                if out_count == expected[len(last)]:
                    last.append(t)
                    out_count = 0
            t += 1
            assert t < 400_000, "the engine hangs"

    sim.add_testbench(tb)
    sim.run()
    return accepted, last, beats


CYCLE_CASES = [
    (SMALL, [(13, 20, 21)], 4, 3),
    (SMALL, [(3, 1, 5)], 4, 0),
    (SMALL, [(13, 20, 21)], 1, 5),            # weight-bound: loads slower than compute
    (SMALL, [(5, 7, 9), (13, 20, 21), (2, 3, 17), (9, 20, 8)], 3, 7),   # back-to-back, different shapes
    (GemmConfig(rows=2, cols=6, max_tokens=7, max_in=9, max_out=13, weight_bytes=3), [(7, 9, 13), (1, 1, 1)], 5, 2),
    (GemmConfig(rows=4, cols=16, max_tokens=40, max_in=40, max_out=64, weight_bytes=8), [(40, 40, 64), (17, 40, 48)], 8, 20),
]


@pytest.mark.parametrize("case", range(len(CYCLE_CASES)))
def test_cycle_model_exact(case):
    cfg, sizes, rate, latency = CYCLE_CASES[case]
    _check_cycle_model(cfg, sizes, rate, latency, seed=case)


def _check_cycle_model(cfg, sizes, rate, latency, *, seed):
    """The engine's cycles equal :func:`schedule`'s (and :func:`cycles` for one job), its outputs IntLinear's."""
    rng = np.random.default_rng(seed)
    jobs = [random_job(rng, cfg, n, k, m) for n, k, m in sizes]
    accepted, last, beats = measure_cycles(cfg, jobs, rate=rate, latency=latency)
    model = schedule(cfg, [(*size, acc) for size, acc in zip(sizes, accepted, strict=True)],
                     weight_bytes_per_cycle=rate, weight_latency=latency)
    assert [t.last_out for t in model] == last
    if len(sizes) == 1:
        assert cycles(cfg, *sizes[0], weight_bytes_per_cycle=rate, weight_latency=latency) == last[0] - accepted[0]
    pos = 0
    for job in jobs:
        y, _ = decode_outputs(beats[pos:pos + job.output_beats(cfg)], job.n, job.m, cfg)
        assert np.array_equal(y, job.expected)
        pos += job.output_beats(cfg)


#: the demo's engine shape (rows 2, cols 64, 8-byte weight beats), small maxima so it simulates quickly
DEMO_SHAPE = GemmConfig(rows=2, cols=64, max_tokens=5, max_in=12, max_out=70, weight_bytes=8,
                        out=FixedFormat(bits=16))


def test_weights_from_dma_bursts_with_long_gaps():
    # an AXI read DMA at 8 bytes a beat: 16-beat bursts, 20 to 100 cycles of DRAM latency before each; the
    # jobs' weights (two column tiles of 12 x 8 row beats and 64 record beats, then one of 5 x 8 + 64)
    # run dry for most of the time, and the loader waits for every burst
    rng = np.random.default_rng(11)
    gaps = [int(g) for g in rng.integers(20, 101, size=7)]
    sizes = [(5, 12, 70, 16), (3, 5, 9, 8)]
    jobs = [random_job(rng, DEMO_SHAPE, n, k, m, out_bits=ob) for n, k, m, ob in sizes]
    accepted, last, beats = measure_cycles(DEMO_SHAPE, jobs, bursts=WeightBursts(burst_beats=16, gaps=gaps))
    model = schedule(DEMO_SHAPE, [(n, k, m, a) for (n, k, m, _), a in zip(sizes, accepted, strict=True)],
                     bursts=WeightBursts(burst_beats=16, gaps=gaps))
    assert [t.last_out for t in model] == last
    # the gaps cost what the model says they cost: the same jobs from a memory that never runs dry are faster
    fed = schedule(DEMO_SHAPE, [(n, k, m, a) for (n, k, m, _), a in zip(sizes, accepted, strict=True)],
                   weight_bytes_per_cycle=8, weight_latency=20)
    assert fed[-1].last_out < last[-1] - 5 * 20
    pos = 0
    for job in jobs:
        y, _ = decode_outputs(beats[pos:pos + job.output_beats(DEMO_SHAPE)], job.n, job.m, DEMO_SHAPE)
        assert np.array_equal(y, job.expected)
        pos += job.output_beats(DEMO_SHAPE)


@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(bursts=[16]), TypeError, r"^bursts must be a WeightBursts, not list$"),
    (dict(bursts=WeightBursts(burst_beats=4, gaps=[3]), weight_latency=2), ValueError,
     r"^give either weight_bytes_per_cycle and weight_latency, or bursts, not both$"),
    (dict(weight_latency=2), TypeError, r"^weight_bytes_per_cycle must be an integer, not NoneType$"),
])
def test_schedule_rejects(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        schedule(SMALL, [(1, 1, 1, 0)], **kwargs)


@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(burst_beats=0, gaps=[3]), ValueError, r"^burst_beats must be at least 1, not 0$"),
    (dict(burst_beats=4, gaps=[]), ValueError, r"^gaps must hold at least one gap$"),
    (dict(burst_beats=4, gaps=[3, 0]), ValueError, r"^gap must be at least 1, not 0$"),
    (dict(burst_beats=4, gaps=3), TypeError, r"^gaps must be a sequence of integers, not int$"),
])
def test_weight_bursts_rejects(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        WeightBursts(**kwargs)


@pytest.mark.parametrize("module", ["config", "layout", "cycles", "resources"])
def test_doctests(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"tokensift.hw.gemm.{module}"))
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(rows=3), ValueError, r"^rows must be a power of two, not 3$"),
    (dict(cols=10, weight_bytes=4), ValueError, r"^cols \(10\) must be a multiple of weight_bytes \(4\)$"),
    (dict(max_in=0), ValueError, r"^max_in must be between 1 and 65536, not 0$"),
    (dict(out="int8"), TypeError, r"^out must be a FixedFormat, not str$"),
    (dict(out=FixedFormat(bits=8, rounding=Rounding.HALF_EVEN)), ValueError,
     r"^out\.rounding must be half_up or floor, not half_even$"),
    (dict(rows=2.0), TypeError, r"^rows must be an integer, not float$"),
    (dict(out=FixedFormat(bits=8, signed=False)), ValueError,
     r"^out must be a signed format: a job's out_bits is a signed width$"),
    (dict(out=FixedFormat(bits=8, overflow=Overflow.WRAP)), ValueError, r"^out\.overflow must be saturate, not wrap$"),
])
def test_config_rejects(kwargs, exc, message):
    base = dict(rows=4, cols=8, max_tokens=8, max_in=8, max_out=8, weight_bytes=4)
    with pytest.raises(exc, match=message):
        GemmConfig(**{**base, **kwargs})


@pytest.mark.parametrize("out_bits, exc, message", [
    (1, ValueError, r"^out_bits must be between 2 and 16, not 1$"),
    (17, ValueError, r"^out_bits must be between 2 and 16, not 17$"),
    (8.0, TypeError, r"^out_bits must be an integer, not float$"),
])
def test_job_format_rejects(out_bits, exc, message):
    with pytest.raises(exc, match=message):
        WIDE.job_format(out_bits)


def test_engine_takes_a_config():
    with pytest.raises(TypeError, match=r"^config must be a GemmConfig, not dict$"):
        GemmEngine(config={})


#: a short reduction over many token tiles and three or more column tiles, the weights one row per beat:
#: the loader waits for a half while the array still computes on it, so it refills the half the moment the
#: array's last issue frees it, while the far banks still read the tile's first rows
SHORT_K = GemmConfig(rows=4, cols=16, max_tokens=32, max_in=20, max_out=64, weight_bytes=16)


@pytest.mark.parametrize("k", [1, 2, 7, 15, 16])
def test_short_reduction_refill_waits_for_the_far_banks(k):
    rng = np.random.default_rng(20 + k)
    jobs = [random_job(rng, SHORT_K, 32, k, 64), random_job(rng, SHORT_K, 17, k, 50),
            random_job(rng, SHORT_K, 32, 20, 64)]
    check(SHORT_K, jobs, seed=k, idle=0.0, stall=0.0)
    check(SHORT_K, jobs, seed=k, idle=0.1, stall=0.1)


#: four row beats per weight row at half a beat per cycle: the next job's first column tiles load behind the
#: hold of a short-reduction job's last ones, so the hold shows in the next job's cycles
SHORT_K_NARROW = GemmConfig(rows=4, cols=16, max_tokens=32, max_in=20, max_out=64, weight_bytes=4)


@pytest.mark.parametrize("cfg, sizes, rate", [
    (SHORT_K, [(32, 1, 64), (9, 5, 48), (32, 15, 40)], 16),
    (SHORT_K_NARROW, [(32, 1, 40), (4, 10, 40)], 2),
    (SHORT_K_NARROW, [(32, 3, 40), (1, 16, 40), (8, 20, 33)], 2),
], ids=["one-row-beats", "hold-delays-next-job", "hold-mixed"])
def test_short_reduction_cycle_model_exact(cfg, sizes, rate):
    rng = np.random.default_rng(len(sizes) + rate)
    jobs = [random_job(rng, cfg, n, k, m) for n, k, m in sizes]
    accepted, last, beats = measure_cycles(cfg, jobs, rate=rate, latency=3)
    model = schedule(cfg, [(*size, acc) for size, acc in zip(sizes, accepted, strict=True)],
                     weight_bytes_per_cycle=rate, weight_latency=3)
    assert [t.last_out for t in model] == last
    pos = 0
    for job in jobs:
        y, _ = decode_outputs(beats[pos:pos + job.output_beats(cfg)], job.n, job.m, cfg)
        assert np.array_equal(y, job.expected)
        pos += job.output_beats(cfg)


def _dp16kd_model(m, name, *, depth, wr_en, wr_addr, wr_data, rd_addr):
    """``dp16kd_8bit`` in the simulator: a memory and the output register; a read that collides with a write
    of its address returns the word inverted (the DP16KD's is undefined), so an output that used one differs."""
    mem = memory.Memory(shape=signed(8), depth=depth, init=[])
    m.submodules[name] = mem
    wp, rp = mem.write_port(), mem.read_port(transparent_for=())
    collided = Signal(name=f"{name}_collided")
    q = Signal(signed(8), name=f"{name}_q")
    m.d.comb += [wp.en.eq(wr_en), wp.addr.eq(wr_addr), wp.data.eq(wr_data), rp.addr.eq(rd_addr)]
    m.d.sync += [collided.eq(wr_en & (wr_addr == rd_addr)), q.eq(Mux(collided, ~rp.data, rp.data))]
    return q


def _mult18_model(m, name, a, b):
    """``mult18x18d_registered`` in the simulator: operand registers, a product register."""
    ra = Signal(a.shape(), name=f"{name}_ra")
    rb = Signal(b.shape(), name=f"{name}_rb")
    p = Signal(signed(len(a) + len(b)), name=f"{name}_p")
    m.d.sync += [ra.eq(a), rb.eq(b), p.eq(ra * rb)]
    return p


@pytest.fixture
def ecp5_rams(monkeypatch):
    """Elaborate for ECP5 with the DP16KD and MULT18X18D instances replaced by :func:`_dp16kd_model` and
    :func:`_mult18_model`."""
    monkeypatch.setattr(gemm_core, "dp16kd_8bit", _dp16kd_model)
    monkeypatch.setattr(gemm_core, "mult18x18d_registered", _mult18_model)
    return ECP5


def test_ecp5_block_rams_bit_exact(ecp5_rams):
    # three token pieces and two weight pieces, so the delayed piece selects cross the RAMs' boundaries
    cfg = GemmConfig(rows=2, cols=4, max_tokens=4, max_in=1100, max_out=6, weight_bytes=4)
    rng = np.random.default_rng(6)
    jobs = [random_job(rng, cfg, 4, 1100, 6), random_job(rng, cfg, 3, 1100, 5), random_job(rng, cfg, 4, 1030, 2)]
    outs, _ = run_jobs(cfg, jobs, seed=6, idle=0.1, stall=0.1, platform=ecp5_rams)
    for job, y in zip(jobs, outs, strict=True):
        assert np.array_equal(y, job.expected)
    rng = np.random.default_rng(1)
    jobs = [random_job(rng, SMALL, int(rng.integers(1, 14)), int(rng.integers(1, 21)), int(rng.integers(1, 22)))
            for _ in range(4)]
    outs, _ = run_jobs(SMALL, jobs, seed=1, platform=ecp5_rams)
    for job, y in zip(jobs, outs, strict=True):
        assert np.array_equal(y, job.expected)


@pytest.mark.parametrize("case", [3, 4])
def test_ecp5_block_rams_cycle_model_exact(ecp5_rams, case):
    # the RAM's output register replaces the piece register: the same cycles as the behavioural banks
    cfg, sizes, rate, latency = CYCLE_CASES[case]
    rng = np.random.default_rng(case)
    jobs = [random_job(rng, cfg, n, k, m) for n, k, m in sizes]
    accepted, last, _ = measure_cycles(cfg, jobs, rate=rate, latency=latency, platform=ecp5_rams)
    model = schedule(cfg, [(*size, acc) for size, acc in zip(sizes, accepted, strict=True)],
                     weight_bytes_per_cycle=rate, weight_latency=latency)
    assert [t.last_out for t in model] == last


def test_ecp5_netlist_uses_the_block_ram_output_register():
    from amaranth.back import verilog

    cfg = GemmConfig(rows=2, cols=4, max_tokens=4, max_in=1100, max_out=6, weight_bytes=4)
    text = verilog.convert(GemmEngine(config=cfg), name="top", platform=ECP5)
    rams = 2 * len(pieces(cfg.token_depth)) + 4 * len(pieces(cfg.weight_depth))
    assert text.count("DP16KD #(") == rams
    assert text.count('.REGMODE_B("OUTREG")') == rams
    assert text.count("MULT18X18D #(") == cfg.macs
    assert text.count('.REG_OUTPUT_CLK("CLK0")') == cfg.macs
    plain = verilog.convert(GemmEngine(config=cfg), name="top")
    assert "DP16KD" not in plain and "MULT18X18D" not in plain


@pytest.mark.parametrize("k", [1, 7, 15])
def test_ecp5_block_rams_short_reduction_no_collision_used(ecp5_rams, k):
    # the loader refills a half right after the far banks' last reads: no read it uses meets a write
    rng = np.random.default_rng(20 + k)
    jobs = [random_job(rng, SHORT_K, 32, k, 64), random_job(rng, SHORT_K, 17, k, 50),
            random_job(rng, SHORT_K, 32, 20, 64)]
    outs, _ = run_jobs(SHORT_K, jobs, seed=k, idle=0.0, stall=0.0, platform=ecp5_rams)
    for job, y in zip(jobs, outs, strict=True):
        assert np.array_equal(y, job.expected)


# -- two int8 products per DSP (pack_pairs) ---------------------------------------------------------------
PACKED = GemmConfig(rows=4, cols=8, max_tokens=13, max_in=20, max_out=21, weight_bytes=4, pack_pairs=True,
                    out=FixedFormat(bits=16))


def test_packed_pairs_bit_exact_with_stalls():
    # "exact" jobs output the accumulators themselves (multiplier 1, shift 0): a product off by one LSB in
    # either half of a pair shows; the others are the usual random, extreme (-128 x -128) and saturating jobs
    rng = np.random.default_rng(11)
    jobs = [random_job(rng, PACKED, 13, 1, 21, kind="exact"),
            random_job(rng, PACKED, 13, 2, 21, kind="exact"),
            random_job(rng, PACKED, 9, 20, 15, kind="exact"),
            random_job(rng, PACKED, 13, 20, 21, kind="extreme", out_bits=8),
            random_job(rng, PACKED, 5, 9, 17, kind="saturate", out_bits=8),
            random_job(rng, PACKED, 7, 13, 3, out_bits=16),
            random_job(rng, PACKED, 3, 1, 5, out_bits=8)]
    # every sign of a * w_low and a * w_high in the full-range jobs (the high half's correction is the low
    # half's sign)
    x, w = jobs[0].x, jobs[0].layer.weight
    prods = x[:, None, 0] * w[None, :, 0]
    assert (prods < 0).any() and (prods > 0).any()
    check(PACKED, jobs, seed=11, idle=0.0, stall=0.0)
    check(PACKED, jobs, seed=12, idle=0.5, stall=0.5)


@pytest.mark.parametrize("cfg", [
    GemmConfig(rows=1, cols=2, max_tokens=3, max_in=4, max_out=5, weight_bytes=1, pack_pairs=True,
               out=FixedFormat(bits=16)),
    GemmConfig(rows=8, cols=16, max_tokens=17, max_in=12, max_out=40, weight_bytes=16, pack_pairs=True,
               out=FixedFormat(bits=16)),
], ids=["1x2", "8x16-w16"])
def test_packed_pairs_other_shapes(cfg):
    rng = np.random.default_rng(13)
    jobs = [random_job(rng, cfg, cfg.max_tokens, 1, cfg.max_out, kind="exact"),
            random_job(rng, cfg, cfg.max_tokens, cfg.max_in, cfg.max_out - 1, kind="exact"),
            random_job(rng, cfg, max(1, cfg.max_tokens // 2), cfg.max_in, cfg.max_out, out_bits=8)]
    check(cfg, jobs, seed=13)


@pytest.mark.parametrize("case", [3, 5])
def test_packed_pairs_cycle_model_exact(case):
    # the pair's second product comes one cycle after its first, as its flags do: the same cycles
    base, sizes, rate, latency = CYCLE_CASES[case]
    _check_cycle_model(dataclasses.replace(base, pack_pairs=True), sizes, rate, latency, seed=case)


def test_packed_pairs_config_and_dsps():
    base = dict(rows=4, cols=6, max_tokens=8, max_in=8, max_out=8, weight_bytes=2)
    with pytest.raises(ValueError, match=r"^pack_pairs shares one multiplier between two columns: cols must be "
                                         r"even, not 3$"):
        GemmConfig(**{**base, "cols": 3, "weight_bytes": 1}, pack_pairs=True)
    with pytest.raises(TypeError, match=r"^pack_pairs must be a bool, not int$"):
        GemmConfig(**base, pack_pairs=1)
    from tokensift.hw.gemm.resources import dsps

    packed, plain = GemmConfig(**base, pack_pairs=True), GemmConfig(**base)
    assert packed.multipliers == 12 == plain.multipliers // 2
    # a DSP48 takes the 8 x 25 packed multiply whole; an ECP5 18 x 18 block does not: no DSP saved there
    epilogue = {f: dsps(plain, f) - plain.macs for f in ("xc7", "xcup", "ecp5")}
    assert {f: dsps(packed, f) - epilogue[f] for f in epilogue} == {"xc7": 12, "xcup": 12, "ecp5": 24}
