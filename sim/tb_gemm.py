"""cocotb scoreboard of :class:`tokensift.hw.gemm.GemmEngine` against :class:`tokensift.quant.gemm.IntLinear`.

One driver coroutine runs the engine's streams cycle by cycle: each job's activations and then its job beat
(the next job's while the previous one computes), the weights from a :class:`~tokensift.hw.gemm.cycles.WeightMemory`
(rate and latency as parameters, started when the first job is accepted, optionally running dry at random)
or from an AXI read DMA's bursts (:class:`~tokensift.hw.gemm.cycles.WeightBursts`), and the output with
random stalls. The scoreboard places every output beat by its tile and channel and compares it with the
reference (``IntLinear`` at each job's own ``out_bits``); with a fixed latency (or fixed burst gaps) and no
random stalls the measured cycles must equal :func:`tokensift.hw.gemm.cycles.schedule` exactly.

Parameters (``tb_params``): the engine's ``config`` (:meth:`GemmConfig.as_dict`), ``seed``, ``jobs`` (a
list of ``[n, k, m, kind]`` or ``[n, k, m, kind, out_bits]``; ``out_bits`` defaults to the engine's
widest), ``rate``, ``latency``, ``idle``, ``dry``, ``stall``, ``bad_jobs`` (``[n, k, m, out_bits]``) and
``bursts`` (``{"burst_beats": B, "gaps": [...]}``: the ``dma_bursts`` test runs only when it is given).
"""

from __future__ import annotations

import random
import time

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from tokensift.hw.gemm.config import GemmConfig
from tokensift.hw.gemm.cycles import WeightBursts, WeightMemory, schedule
from tokensift.hw.gemm.layout import decode_outputs, encode_job
from tokensift.quant.fixed import FixedFormat, Overflow, Rounding
from tokensift.sim.gemm_jobs import random_job
from tokensift.sim.runner import tb_params, tb_report
from tokensift.sim.streams import reset, start_clock


def config_from(p: dict) -> GemmConfig:
    c = dict(p)
    out = FixedFormat(bits=c.pop("out_bits"), signed=c.pop("out_signed"), rounding=Rounding(c.pop("rounding")),
                      overflow=Overflow(c.pop("overflow")))
    return GemmConfig(out=out, **c)


class GemmDriver:
    """Drives ``job``/``act``/``weights`` and takes ``o_stream``, one decision per clock cycle."""

    def __init__(self, dut, cfg: GemmConfig, *, seed: int, rate: int, latency: int, idle: float = 0.0,
                 dry: float = 0.0, stall: float = 0.0, bursts: dict | None = None):
        self.dut, self.cfg = dut, cfg
        self.rng = random.Random(seed)
        self.rate, self.latency = rate, latency
        self.bursts = bursts
        self.idle, self.dry, self.stall = idle, dry, stall
        self.items: list[tuple[str, int]] = []   # ("act" | "job", beat) in order
        self.weights: list[int] = []
        self.accepted: list[int] = []
        self.received: list[tuple[int, int]] = []  # (cycle, payload)
        self.mem: WeightMemory | None = None
        self.t = 0
        self.paused = False
        self._item = self._w = 0
        self._set_idle()
        self._task = cocotb.start_soon(self._run())

    def add_job(self, job) -> None:
        self.items.extend(("act", b) for b in job.act_beats(self.cfg))
        self.items.append(("job", job.job_beat()))
        self.weights.extend(job.weight_beats(self.cfg))

    def add_bad_job(self, n: int, k: int, m: int, out_bits: int) -> None:
        self.items.append(("job", encode_job(n, k, m, out_bits)))

    def new_memory(self):
        """The weight source, started in the cycle the first job is accepted."""
        if self.bursts is not None:
            return WeightBursts(**self.bursts)
        return WeightMemory(beat_bytes=self.cfg.weight_bytes, bytes_per_cycle=self.rate, latency=self.latency)

    def clear(self) -> None:
        """Forget everything (the engine is being reset); the memory restarts with the next job."""
        self.items, self.weights, self.received, self.accepted = [], [], [], []
        self._item = self._w = 0
        self.mem = None

    @property
    def pending(self) -> bool:
        return self._item < len(self.items)

    def _set_idle(self) -> None:
        d = self.dut
        d.act__valid.value = 0
        d.job__valid.value = 0
        d.weights__valid.value = 0
        d.o_stream__ready.value = 0

    async def _run(self):
        d, rng = self.dut, self.rng
        while True:
            await FallingEdge(d.clk)
            if self.paused:
                self._set_idle()
                continue
            kind = None
            if self._item < len(self.items) and rng.random() >= self.idle:
                kind, beat = self.items[self._item]
                port = d.act__payload if kind == "act" else d.job__payload
                port.value = beat
            d.act__valid.value = kind == "act"
            d.job__valid.value = kind == "job"
            offer_w = (self.mem is not None and self.mem.valid and self._w < len(self.weights)
                       and rng.random() >= self.dry)
            if offer_w:
                d.weights__payload.value = self.weights[self._w]
            d.weights__valid.value = offer_w
            ready = rng.random() >= self.stall
            d.o_stream__ready.value = ready
            await ReadOnly()
            taken_w = offer_w and bool(d.weights__ready.value)
            if self.mem is not None:
                self.mem.step(taken_w)
            self._w += taken_w
            if kind == "act" and d.act__ready.value:
                self._item += 1
            elif kind == "job" and d.job__ready.value:
                self._item += 1
                self.accepted.append(self.t)
                if self.mem is None and self.weights:
                    self.mem = self.new_memory()
                    self.mem.step(False)
            if ready and d.o_stream__valid.value:
                self.received.append((self.t, d.o_stream__payload.value.to_unsigned()))
            self.t += 1

    async def wait_outputs(self, count: int, *, limit: int = 2_000_000) -> None:
        for _ in range(limit):
            if len(self.received) >= count:
                return
            await ClockCycles(self.dut.clk, 1)
        raise TimeoutError(f"only {len(self.received)} of {count} output beats arrived in {limit} cycles")


def _check_jobs(cfg, jobs, received) -> tuple[list[int], list[int]]:
    """Per job: differing outputs and the cycle its last beat was taken."""
    mismatches, last, pos = [], [], 0
    for job in jobs:
        count = job.output_beats(cfg)
        chunk = received[pos:pos + count]
        y, lasts = decode_outputs([p for _, p in chunk], job.n, job.m, cfg)
        bad = int(np.count_nonzero(y != job.expected)) + (lasts != [0] * (count - 1) + [1])
        mismatches.append(bad)
        last.append(chunk[-1][0])
        pos += count
    return mismatches, last


def _make_jobs(cfg, p, rng):
    return [random_job(rng, cfg, n, k, m, kind, *out_bits) for n, k, m, kind, *out_bits in p["jobs"]]


def _counter(sig) -> int:
    return int(sig.value.to_unsigned())


def _status(dut) -> dict:
    """``status`` is one vector in the Verilog: busy (bit 0), error (bit 1), rejected (from bit 2)."""
    v = int(dut.status.value.to_unsigned())
    return {"busy": v & 1, "error": (v >> 1) & 1, "rejected": v >> 2}


@cocotb.test()
async def jobs_with_stalls(dut):
    """Random jobs back to back; random idles on act/job, a weight memory running dry, output stalls."""
    p = tb_params()
    cfg = config_from(p["config"])
    rng = np.random.default_rng(p["seed"])
    jobs = _make_jobs(cfg, p, rng)
    start_clock(dut)
    drv = GemmDriver(dut, cfg, seed=p["seed"], rate=p["rate"], latency=p["latency"], idle=p.get("idle", 0.3),
                     dry=p.get("dry", 0.3), stall=p.get("stall", 0.3))
    drv.paused = True
    await reset(dut)
    for n, k, m, out_bits in p.get("bad_jobs", []):
        drv.add_bad_job(n, k, m, out_bits)
    for job in jobs:
        drv.add_job(job)
    drv.paused = False
    await drv.wait_outputs(sum(j.output_beats(cfg) for j in jobs))
    await ClockCycles(dut.clk, 20)
    mismatches, _ = _check_jobs(cfg, jobs, drv.received)
    top = (1 << cfg.counter_bits) - 1
    report = {"mismatches": mismatches, "extra_beats": len(drv.received) - sum(j.output_beats(cfg) for j in jobs),
              "acc_overflows": [_counter(dut.acc_overflows), min(top, sum(j.acc_overflows for j in jobs))],
              "out_overflows": [_counter(dut.out_overflows), min(top, sum(j.out_overflows for j in jobs))],
              "status": _status(dut)}
    tb_report(stalls=report)
    assert sum(mismatches) == 0, f"outputs differ from IntLinear: {mismatches}"
    assert report["extra_beats"] == 0
    assert report["acc_overflows"][0] == report["acc_overflows"][1]
    assert report["out_overflows"][0] == report["out_overflows"][1]
    assert report["status"] == {"busy": 0, "error": 0, "rejected": 0}, report["status"]


@cocotb.test()
async def cycles_exact(dut):
    """Fixed latency, no random stalls: the measured cycles equal the model's, job by job."""
    p = tb_params()
    cfg = config_from(p["config"])
    rng = np.random.default_rng(p["seed"] + 1)
    jobs = _make_jobs(cfg, p, rng)
    start_clock(dut)
    drv = GemmDriver(dut, cfg, seed=p["seed"], rate=p["rate"], latency=p["latency"])
    drv.paused = True
    await reset(dut)
    for job in jobs:
        drv.add_job(job)
    wall = time.perf_counter()
    drv.paused = False
    await drv.wait_outputs(sum(j.output_beats(cfg) for j in jobs))
    wall = time.perf_counter() - wall
    mismatches, last = _check_jobs(cfg, jobs, drv.received)
    model = schedule(cfg, [(j.n, j.k, j.m, a) for j, a in zip(jobs, drv.accepted, strict=True)],
                     weight_bytes_per_cycle=p["rate"], weight_latency=p["latency"])
    report = {"mismatches": mismatches, "accepted": drv.accepted, "last_out": last,
              "expected_last_out": [t.last_out for t in model], "weight_beats": len(drv.weights),
              "wall_s": wall}
    tb_report(cycles=report)
    assert sum(mismatches) == 0, f"outputs differ from IntLinear: {mismatches}"
    assert last == report["expected_last_out"], f"cycles {last} != model {report['expected_last_out']}"


@cocotb.test()
async def reset_mid_job(dut):
    """A reset in the middle of a job drops it and clears the counters; the next job is exact."""
    p = tb_params()
    cfg = config_from(p["config"])
    rng = np.random.default_rng(p["seed"] + 2)
    first, second = (_make_jobs(cfg, p, rng) * 2)[:2]
    start_clock(dut)
    drv = GemmDriver(dut, cfg, seed=p["seed"], rate=p["rate"], latency=p["latency"], idle=0.2, stall=0.2)
    drv.paused = True
    await reset(dut)
    drv.add_job(first)
    drv.paused = False
    await drv.wait_outputs(max(1, first.output_beats(cfg) // 2))
    drv.paused = True
    await reset(dut)
    await ReadOnly()
    state = {"valid": int(dut.o_stream__valid.value), "busy": _status(dut)["busy"],
             "acc": _counter(dut.acc_overflows), "out": _counter(dut.out_overflows)}
    drv.clear()
    await FallingEdge(dut.clk)
    drv.add_job(second)
    drv.paused = False
    await drv.wait_outputs(second.output_beats(cfg))
    await ClockCycles(dut.clk, 10)
    mismatches, _ = _check_jobs(cfg, [second], drv.received)
    tb_report(reset=dict(state, mismatches=mismatches, extra_beats=len(drv.received) - second.output_beats(cfg)))
    assert state == {"valid": 0, "busy": 0, "acc": 0, "out": 0}, state
    assert mismatches == [0]
    assert len(drv.received) == second.output_beats(cfg)


@cocotb.test()
async def out_of_range_flagged(dut):
    """Jobs with n, k or m of 0 or above the maxima, or out_bits outside 2 .. out.bits, are dropped and
    counted; the next job is exact."""
    p = tb_params()
    cfg = config_from(p["config"])
    rng = np.random.default_rng(p["seed"] + 3)
    job = _make_jobs(cfg, p, rng)[0]
    w = cfg.out.bits
    bad = [(0, 1, 1, w), (cfg.max_tokens + 1, 1, 1, w), (1, 0, 1, w), (1, cfg.max_in + 1, 1, w), (1, 1, 0, w),
           (1, 1, cfg.max_out + 1, w), (0xFFFF, 0xFFFF, 0xFFFF, w), (1, 1, 1, 0), (1, 1, 1, 1), (1, 1, 1, w + 1),
           (1, 1, 1, 0xFF)]
    start_clock(dut)
    drv = GemmDriver(dut, cfg, seed=p["seed"], rate=p["rate"], latency=p["latency"], idle=0.2, stall=0.2)
    drv.paused = True
    await reset(dut)
    for n, k, m, out_bits in bad:
        drv.add_bad_job(n, k, m, out_bits)
    drv.add_job(job)
    drv.paused = False
    await drv.wait_outputs(job.output_beats(cfg))
    await ClockCycles(dut.clk, 10)
    mismatches, _ = _check_jobs(cfg, [job], drv.received)
    report = {**_status(dut),
              "expected_rejected": len(bad), "mismatches": mismatches}
    tb_report(range=report)
    assert report["error"] == 1 and report["rejected"] == len(bad), report
    assert mismatches == [0]


@cocotb.test(skip=tb_params().get("bursts") is None)
async def dma_bursts(dut):
    """The weights straight from an AXI read DMA: bursts of ``burst_beats`` with a fixed DRAM latency before
    each (``gaps``), the jobs back to back, no random stalls: bit-exact, cycles equal to the model's."""
    p = tb_params()
    cfg = config_from(p["config"])
    rng = np.random.default_rng(p["seed"] + 4)
    jobs = _make_jobs(cfg, p, rng)
    start_clock(dut)
    drv = GemmDriver(dut, cfg, seed=p["seed"], rate=p["rate"], latency=p["latency"], bursts=p["bursts"])
    drv.paused = True
    await reset(dut)
    for job in jobs:
        drv.add_job(job)
    drv.paused = False
    await drv.wait_outputs(sum(j.output_beats(cfg) for j in jobs))
    mismatches, last = _check_jobs(cfg, jobs, drv.received)
    model = schedule(cfg, [(j.n, j.k, j.m, a) for j, a in zip(jobs, drv.accepted, strict=True)],
                     bursts=WeightBursts(**p["bursts"]))
    report = {"mismatches": mismatches, "accepted": drv.accepted, "last_out": last,
              "expected_last_out": [t.last_out for t in model], "weight_beats": len(drv.weights)}
    tb_report(bursts=report)
    assert sum(mismatches) == 0, f"outputs differ from IntLinear: {mismatches}"
    assert last == report["expected_last_out"], f"cycles {last} != model {report['expected_last_out']}"


@cocotb.test(skip=tb_params().get("layers") is None)
async def layers(dut):
    """The bench: each layer ``[n, k, m]`` as two jobs back to back on an idle engine (the second job's
    activations and first weight tile load while the first computes), no random stalls. Reports the
    first job's cycles (pipeline fill and the first weight tile included) and the second's (the steady
    state of a stream of jobs), both checked bit for bit and against the model."""
    p = tb_params()
    cfg = config_from(p["config"])
    rng = np.random.default_rng(p["seed"])
    start_clock(dut)
    drv = GemmDriver(dut, cfg, seed=p["seed"], rate=p["rate"], latency=p["latency"])
    drv.paused = True
    await reset(dut)
    rows = []
    for n, k, m in p["layers"]:
        jobs = [random_job(rng, cfg, n, k, m) for _ in range(2)]
        drv.clear()
        base = drv.t
        for job in jobs:
            drv.add_job(job)
        wall = time.perf_counter()
        drv.paused = False
        await drv.wait_outputs(sum(j.output_beats(cfg) for j in jobs))
        wall = time.perf_counter() - wall
        drv.paused = True
        mismatches, last = _check_jobs(cfg, jobs, drv.received)
        model = schedule(cfg, [(n, k, m, a - base) for a in drv.accepted], weight_bytes_per_cycle=p["rate"],
                         weight_latency=p["latency"])
        rows.append({"n": n, "k": k, "m": m, "mismatches": mismatches, "accepted": [a - base for a in drv.accepted],
                     "last_out": [t - base for t in last], "expected_last_out": [t.last_out for t in model],
                     "weight_beats_per_job": len(drv.weights) // 2, "wall_s": wall})
        await ClockCycles(dut.clk, 4)
        assert sum(mismatches) == 0, f"layer {n}x{k}x{m}: outputs differ from IntLinear: {mismatches}"
        assert rows[-1]["last_out"] == rows[-1]["expected_last_out"], rows[-1]
    tb_report(layers=rows)
