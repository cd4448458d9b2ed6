"""The WRITE_LOGITS engine on real token buffers: the bytes it writes through its write channel equal the
reference sequencer's logits bytes on compiled models (dense and pruned) over every AXI width and several
buffer shapes, with a seeded writer's latency and gaps (the harness's write channel,
:func:`tokensift.sim.accel_ops.run_op`); int16 limits back to back; the cycle formula exact; malformed ops
faulted with nothing written, a write error faulted."""

from __future__ import annotations

import numpy as np
import pytest
from accel_models import config_for, first_step, rows_of, steps

from tokensift.hw.accel.op_logits import LogitsEngine, cycles
from tokensift.hw.axi.config import AxiDmaConfig
from tokensift.quant.accel.executor import run
from tokensift.quant.accel.isa import Buffer, Opcode
from tokensift.sim.accel_ops import EngineBench, op_fields, run_op


def _write(cfg, dram, buffers, op, **run):
    """The op through the harness's DRAM write channel (:func:`~tokensift.sim.accel_ops.run_op`)."""
    result = run_op(EngineBench(cfg, LogitsEngine(config=cfg)), dram, buffers, op, **run)
    assert not result.offered_at_done  # nothing left behind on the write channel
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
    result = _write(cfg, dram, before.buffers, op, seed=len(shape), latency=(0, 8), gap=0.4)
    assert not result.fault and result.rows == 1
    assert result.dram_writes == [(regs.logits_base, 2 * ins.m)]
    memory = result.dram
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
    result = _write(cfg, dram, buffers, op, times=2, latency=(0, 0))
    assert not result.fault and result.dram_writes == [(regs.logits_base, 2 * ins.m)] * 2
    assert result.cycles == cycles(cfg, m=ins.m, done_latency=0)
    memory = result.dram
    assert memory[regs.logits_base:regs.logits_base + 2 * ins.m] == logits.astype("<i2").tobytes()
    assert memory[regs.logits_base + 2 * ins.m:] == dram[regs.logits_base + 2 * ins.m:]


@pytest.mark.parametrize("shape,latency", [({}, 3), ({"lanes": 2, "axi": AxiDmaConfig(data_bytes=4)}, 9),
                                           ({"lanes": 16, "axi": AxiDmaConfig(data_bytes=32)}, 0)])
def test_cycles_match_the_formula(shape, latency):
    cfg = config_for("dense", **shape)
    dram, regs, ins, before, op = _case("dense")
    result = _write(cfg, dram, before.buffers, op, latency=(latency, latency))
    assert result.cycles == cycles(cfg, m=ins.m, done_latency=latency)


def test_malformed_ops_fault_with_nothing_written():
    cfg = config_for("dense")
    dram, regs, ins, before, op = _case("dense")
    for bad in ({"m": ins.m - 1}, {"arg": 8}, {"n": 0},
                {"logits_base": regs.logits_base + 2},   # not aligned on the bus
                {"src": int(Buffer.S)}):                 # one column: the logits do not fit it
        result = _write(cfg, dram, before.buffers, {**op, **bad})
        assert result.fault and result.rows == 0 and result.cycles <= 4, bad
        assert result.dram_writes == [] and result.dram == dram


def test_a_write_error_is_a_fault():
    cfg = config_for("dense")
    dram, regs, ins, before, op = _case("dense")
    result = _write(cfg, dram, before.buffers, op, write_error=True)
    assert result.fault and result.dram_writes == [(regs.logits_base, 2 * ins.m)]
