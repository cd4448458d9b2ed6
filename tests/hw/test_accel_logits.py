"""The WRITE_LOGITS engine on real token buffers: the bytes it writes through its write channel equal the
reference sequencer's logits bytes on compiled models (dense and pruned) over every AXI width and several
buffer shapes, with a seeded writer's latency and gaps; int16 limits; the cycle formula exact; malformed ops
faulted with nothing written, a write error faulted.

The harness (:mod:`tokensift.sim.accel_ops`) serves a DRAM read channel only; the write channel's server is
here: it takes a command, then its words, and answers ``o_done`` after a latency, as an AxiWriter does."""

from __future__ import annotations

import random

import numpy as np
import pytest
from accel_models import config_for, first_step, rows_of, steps
from amaranth.sim import Simulator

from tokensift.hw.accel.op_logits import LogitsEngine, cycles
from tokensift.hw.axi.config import AxiDmaConfig
from tokensift.quant.accel.executor import run
from tokensift.quant.accel.isa import Buffer, Opcode
from tokensift.sim.accel_ops import EngineBench, buffer_words, op_fields


def _write(cfg, memory: bytearray, buffers, op, *, times=1, serve=1, seed=0, latency=(2, 2), gap=0.0,
           error=False) -> dict:
    """Run an op ``times`` with a writer serving ``serve`` commands of the engine's write channel into
    ``memory``; returns the last op's ``rows``, ``fault`` and ``cycles`` (``start`` to ``done``), every
    ``commands`` (addr, length) and ``requested`` (a command's ``valid`` was seen)."""
    bench = EngineBench(cfg, LogitsEngine(config=cfg))
    eng = bench.engine
    rng = random.Random(seed)
    width = cfg.axi.data_bytes
    result = {"commands": [], "requested": False}

    async def writer(ctx):
        for _ in range(serve):
            ctx.set(eng.dram_wcmd.ready, 1)
            (cmd,) = await ctx.tick().sample(eng.dram_wcmd.payload).until(eng.dram_wcmd.valid)
            ctx.set(eng.dram_wcmd.ready, 0)
            addr, length = int(cmd.addr), int(cmd.length)
            result["commands"].append((addr, length))
            for i in range(-(-length // width)):
                while gap and rng.random() < gap:
                    await ctx.tick()
                ctx.set(eng.dram_wdata.ready, 1)
                (word,) = await ctx.tick().sample(eng.dram_wdata.payload.data).until(eng.dram_wdata.valid)
                ctx.set(eng.dram_wdata.ready, 0)
                count = min(width, length - i * width)
                memory[addr + i * width:addr + i * width + count] = int(word).to_bytes(width, "little")[:count]
            delay = rng.randint(*latency)
            if delay:
                await ctx.tick().repeat(delay)
            ctx.set(eng.dram_wdone.valid, 1)
            ctx.set(eng.dram_wdone.payload.error, int(error))
            await ctx.tick().until(eng.dram_wdone.ready)
            ctx.set(eng.dram_wdone.valid, 0)

    async def bench_proc(ctx):
        for b, values in buffers.items():
            for bank, words in buffer_words(cfg, b, values).items():
                for a, word in enumerate(words):
                    ctx.set(bench.buffers.memories[b, bank].data[a], word)
        for _ in range(times):  # back to back: the next op starts the cycle after ``done``
            ctx.set(eng.op, op)
            ctx.set(eng.start, 1)
            await ctx.tick()
            ctx.set(eng.start, 0)
            count = 1
            while not ctx.get(eng.done):
                await ctx.tick()
                count += 1
                result["requested"] |= bool(ctx.get(eng.dram_wcmd.valid))
                assert count < 10_000, "the engine did not finish"
            assert not ctx.get(eng.dram_wcmd.valid) and not ctx.get(eng.dram_wdata.valid)  # nothing left behind
            result.update(rows=ctx.get(eng.rows), fault=bool(ctx.get(eng.fault)), cycles=count)

    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(bench_proc)
    sim.add_testbench(writer)
    sim.run()
    return result


def _case(variant):
    dram, regs, _ = steps(variant)
    pc, ins, before, after, entry = first_step(variant, Opcode.WRITE_LOGITS)
    start, n = rows_of(before, ins)
    op = op_fields(ins, start=start, n=n, memory_base=regs.memory_base, logits_base=regs.logits_base)
    return dram, regs, ins, before, op


@pytest.mark.parametrize("variant,shape", [
    ("dense", {}),
    ("dynamicvit", {"banks": 4, "lanes": 4, "axi": AxiDmaConfig(data_bytes=4)}),
    ("spvit", {"banks": 1, "lanes": 16, "axi": AxiDmaConfig(data_bytes=16)}),
    ("asvit", {"lanes": 1, "axi": AxiDmaConfig(data_bytes=32)}),
])
def test_writes_the_reference_logits_bytes(variant, shape):
    cfg = config_for(variant, **shape)
    dram, regs, ins, before, op = _case(variant)
    reference = run(bytearray(dram), regs).dram
    memory = bytearray(dram)
    result = _write(cfg, memory, before.buffers, op, seed=len(shape), latency=(0, 8), gap=0.4)
    assert not result["fault"] and result["rows"] == 1
    assert result["commands"] == [(regs.logits_base, 2 * ins.m)]
    span = slice(regs.logits_base, regs.logits_base + 2 * ins.m)
    assert memory[span] == reference[span]
    memory[span] = dram[span]
    assert memory == dram  # no other byte written


@pytest.mark.parametrize("shape", [{"lanes": 4, "axi": AxiDmaConfig(data_bytes=16)},
                                   {"lanes": 16, "axi": AxiDmaConfig(data_bytes=4)}])   # a long tail past m
def test_int16_limits_back_to_back(shape):
    cfg = config_for("dense", **shape)
    dram, regs, ins, before, op = _case("dense")
    buffers = {b: v.copy() for b, v in before.buffers.items()}
    logits = np.array([-32768, 32767, -1, 0, 1, 255, -256, 12345, -12345, 7][:ins.m])
    buffers[Buffer.LOGITS][0, :ins.m] = logits
    memory = bytearray(dram)
    result = _write(cfg, memory, buffers, op, times=2, serve=2, latency=(0, 0))
    assert not result["fault"] and result["commands"] == [(regs.logits_base, 2 * ins.m)] * 2
    assert result["cycles"] == cycles(cfg, m=ins.m, done_latency=0)
    assert memory[regs.logits_base:regs.logits_base + 2 * ins.m] == logits.astype("<i2").tobytes()
    assert memory[regs.logits_base + 2 * ins.m:] == dram[regs.logits_base + 2 * ins.m:]


@pytest.mark.parametrize("shape,latency", [({}, 3), ({"lanes": 2, "axi": AxiDmaConfig(data_bytes=4)}, 9),
                                           ({"lanes": 16, "axi": AxiDmaConfig(data_bytes=32)}, 0)])
def test_cycles_match_the_formula(shape, latency):
    cfg = config_for("dense", **shape)
    dram, regs, ins, before, op = _case("dense")
    result = _write(cfg, bytearray(dram), before.buffers, op, latency=(latency, latency))
    assert result["cycles"] == cycles(cfg, m=ins.m, done_latency=latency)


def test_malformed_ops_fault_with_nothing_written():
    cfg = config_for("dense")
    dram, regs, ins, before, op = _case("dense")
    for bad in ({"m": ins.m - 1}, {"arg": 8}, {"n": 0},
                {"logits_base": regs.logits_base + 2},   # not aligned on the bus
                {"src": int(Buffer.S)}):                 # one column: the logits do not fit it
        result = _write(cfg, bytearray(dram), before.buffers, {**op, **bad}, serve=0)
        assert result["fault"] and result["rows"] == 0 and result["cycles"] <= 4, bad
        assert not result["requested"]


def test_a_write_error_is_a_fault():
    cfg = config_for("dense")
    dram, regs, ins, before, op = _case("dense")
    result = _write(cfg, bytearray(dram), before.buffers, op, error=True)
    assert result["fault"] and result["commands"] == [(regs.logits_base, 2 * ins.m)]
