"""cocotb testbench of :class:`tokensift.hw.vector.layernorm.LayerNorm` against
:func:`tokensift.quant.layernorm.layernorm_int`.

Scoreboard: each job's expected output codes (and ``token_last``/``last`` flags, zero padding lanes) come from
the reference; output beats are compared in order, 0 LSB. ``tb_params()`` carries ``config``
(:meth:`LayerNormConfig.to_dict`), ``seed``, ``jobs`` (a list of ``[dim, n_tokens]``), ``idle``, ``stall``.

- ``random_jobs``: back-to-back jobs with random constants (from float gamma/beta at random scales), random
  codes and directed rows (all equal, extremes), a rejected header between jobs; random valid/ready stalls on
  all three streams; checks the saturation counters against the reference's ``OverflowCounter``.
- ``cycles_exact``: the same jobs with nothing stalled; each job's cycles (header transfer to last output
  transfer) must equal :func:`tokensift.hw.vector.layernorm_cost.cycles`; reports them.
- ``reset_mid_token``: a job cut off mid-token by a reset; the job after it is exact and the counters are clear.
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from tokensift.hw.vector.layernorm_cost import cycles as expected_cycles
from tokensift.hw.vector.layernorm_layout import (
    LayerNormConfig,
    decode_outputs,
    encode_header,
    encode_job,
    encode_tokens,
    status_layout,
)
from tokensift.quant.fixed import OverflowCounter
from tokensift.quant.layernorm import LayerNormParams, layernorm_int
from tokensift.sim.runner import tb_params, tb_report
from tokensift.sim.streams import StreamSink, StreamSource, reset, start_clock


def _setup():
    t = tb_params()
    return LayerNormConfig.from_dict(t["config"]), t


def make_job(rng, cfg: LayerNormConfig, dim: int, n_tokens: int):
    """Random constants for ``dim`` channels and ``n_tokens`` rows: random codes, with the directed rows
    (all equal: variance 0, extremes of both signs, alternating extremes) first."""
    g = rng.normal(1.0, 0.5, dim)
    b = rng.normal(0.0, 1.0, dim)
    mult_bits = min(cfg.mult_bits, 16)
    p = LayerNormParams.from_float(g, b, in_scale=float(rng.uniform(0.01, 0.3)), out_scale=float(rng.uniform(0.005, 0.05)),
                                   in_bits=cfg.in_bits, recip_bits=cfg.recip_bits, norm_bits=cfg.norm_bits,
                                   gamma_bits=cfg.gamma_bits, acc_bits=cfg.acc_bits, out=cfg.out,
                                   multiplier_bits=mult_bits)
    lo, hi = -(1 << (cfg.in_bits - 1)), (1 << (cfg.in_bits - 1)) - 1
    q = rng.integers(lo, hi + 1, size=(n_tokens, dim))
    directed = [np.full(dim, int(rng.integers(lo, hi + 1))), np.full(dim, lo), np.where(np.arange(dim) % 2, hi, lo)]
    for t, row in enumerate(directed[: max(0, n_tokens - 1)]):
        q[t] = row
    return p, q


class Scoreboard:
    def __init__(self, cfg: LayerNormConfig):
        self.cfg = cfg
        self.jobs = []
        self.counter = OverflowCounter()

    def add(self, p, q):
        self.jobs.append((p, q, layernorm_int(q, p, counter=self.counter)))

    @property
    def beats(self) -> int:
        return sum(len(q) * self.cfg.beats(p.dim) for p, q, _ in self.jobs)

    def check(self, words) -> int:
        """Mismatching codes over all jobs (flags and padding included as mismatches)."""
        bad, pos = 0, 0
        for p, q, expected in self.jobs:
            nb = self.cfg.beats(p.dim)
            chunk = words[pos:pos + len(q) * nb]
            pos += len(q) * nb
            codes, token_last, last = decode_outputs(chunk, p.dim, self.cfg)
            bad += int(np.count_nonzero(codes[:, : p.dim] != expected)) + int(np.count_nonzero(codes[:, p.dim:]))
            bad += sum(int(t) != ((b % nb) == nb - 1) for b, t in enumerate(token_last))
            bad += sum(int(x) != (b == len(chunk) - 1) for b, x in enumerate(last))
        return bad


class Transfers:
    """Cycle stamps of the transfers on a stream (``valid & ready`` seen before a rising edge)."""

    def __init__(self, dut, name: str):
        self._valid = getattr(dut, f"{name}__valid")
        self._ready = getattr(dut, f"{name}__ready")
        self._clk = dut.clk
        self.stamps: list[int] = []
        self.cycle = 0
        cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            await FallingEdge(self._clk)
            self.cycle += 1
            await ReadOnly()
            if self._valid.value and self._ready.value:
                self.stamps.append(self.cycle)


def _words(sink: StreamSink) -> list[int]:
    return [int(w) for w in sink.received]


async def _run_jobs(dut, cfg, t, *, idle: float, stall: float, rejected: bool):
    rng = np.random.default_rng(t["seed"])
    board = Scoreboard(cfg)
    k_beats, i_beats = [], []
    for index, (dim, n) in enumerate(t["jobs"]):
        p, q = make_job(rng, cfg, dim, n)
        board.add(p, q)
        k_beats += encode_job(p, n, cfg)
        i_beats += encode_tokens(q, cfg)
        if rejected and index == 0:  # a job whose C is above c_max: header, constants and tokens dropped
            k_beats += [encode_header(cfg, dim=cfg.c_max + 1, n_tokens=1, eps=1, multiplier=1, shift=0)]
            k_beats += [0] * (cfg.beats_max - 1) + [1 << (len(dut.k_stream__payload) - 1)]
            i_beats += encode_tokens(q[:1], cfg)
    start_clock(dut)
    k_src = StreamSource(dut, "k_stream", idle=idle, seed=t["seed"])
    i_src = StreamSource(dut, "i_stream", idle=idle, seed=t["seed"] + 1)
    sink = StreamSink(dut, "o_stream", stall=stall, seed=t["seed"] + 2, signed=False)
    k_mon, o_mon = Transfers(dut, "k_stream"), Transfers(dut, "o_stream")
    await reset(dut)
    k_src.send(k_beats)
    i_src.send(i_beats)
    await sink.wait_for(board.beats, timeout_cycles=50 * (len(k_beats) + len(i_beats)) + 10_000)
    await ClockCycles(dut.clk, 4)
    return board, _words(sink), k_mon, o_mon


def _status(dut, cfg: LayerNormConfig) -> dict:
    """The ``status`` port's fields (one flat signal in the Verilog)."""
    word = int(dut.status.value)
    return {name: (word >> field.offset) & ((1 << field.width) - 1) for name, field in status_layout(cfg)}


@cocotb.test()
async def random_jobs(dut):
    cfg, t = _setup()
    board, words, _, _ = await _run_jobs(dut, cfg, t, idle=t.get("idle", 0.3), stall=t.get("stall", 0.3),
                                         rejected=True)
    mismatches = board.check(words)
    status = _status(dut, cfg)
    acc_ref = board.counter.by_site.get("layernorm.acc", 0)
    out_ref = board.counter.by_site.get("layernorm", 0)
    tb_report(mismatches=mismatches, beats=len(words), **status, acc_overflows_ref=acc_ref,
              out_overflows_ref=out_ref)  # the random, stalled run: the report's main figures
    assert mismatches == 0, f"{mismatches} output codes or flags differ from quant.layernorm_int"
    assert status["rejected"] == 1 and status["error"] == 0
    top = (1 << cfg.counter_bits) - 1
    assert (status["acc_overflows"], status["out_overflows"]) == (min(acc_ref, top), min(out_ref, top))


@cocotb.test()
async def cycles_exact(dut):
    cfg, t = _setup()
    board, words, k_mon, o_mon = await _run_jobs(dut, cfg, t, idle=0.0, stall=0.0, rejected=False)
    timed_mismatches = board.check(words)
    assert timed_mismatches == 0
    measured, expected = [], []
    k_pos = o_pos = 0
    for p, q, _ in board.jobs:
        nb = cfg.beats(p.dim)
        o_pos += len(q) * nb
        measured.append(o_mon.stamps[o_pos - 1] - k_mon.stamps[k_pos])
        expected.append(expected_cycles(cfg, p.dim, len(q)))
        k_pos += 1 + nb
    tb_report(cycles=measured, expected_cycles=expected, total_cycles=o_mon.stamps[-1] - k_mon.stamps[0],
              timed_mismatches=timed_mismatches, timed_beats=len(words))
    assert measured == expected, f"cycles {measured} differ from the formula's {expected}"


@cocotb.test()
async def reset_mid_token(dut):
    cfg, t = _setup()
    rng = np.random.default_rng(t["seed"] + 7)
    dim = cfg.c_max
    p, q = make_job(rng, cfg, dim, 4)
    start_clock(dut)
    k_src = StreamSource(dut, "k_stream", idle=0.1, seed=t["seed"])
    i_src = StreamSource(dut, "i_stream", idle=0.1, seed=t["seed"] + 1)
    sink = StreamSink(dut, "o_stream", stall=0.1, seed=t["seed"] + 2, signed=False)
    await reset(dut)
    k_src.send(encode_job(p, 4, cfg))
    tokens = encode_tokens(q, cfg)
    i_src.send(tokens[: 2 * cfg.beats(dim) + max(1, cfg.beats(dim) // 2)])  # two tokens and part of the third
    await sink.wait_for(1)
    await ClockCycles(dut.clk, 3)
    k_src.clear()
    i_src.clear()
    await reset(dut)
    assert int(dut.o_stream__valid.value) == 0, "output still valid after reset"
    assert _status(dut, cfg)["busy"] == 0, "busy after reset"
    sink.received.clear()
    board = Scoreboard(cfg)
    p2, q2 = make_job(rng, cfg, max(1, dim - 1), 3)
    board.add(p2, q2)
    k_src.send(encode_job(p2, 3, cfg))
    i_src.send(encode_tokens(q2, cfg))
    words = [int(w) for w in await sink.wait_for(board.beats)]
    mismatches = board.check(words)
    tb_report(reset_mismatches=mismatches)
    assert mismatches == 0
