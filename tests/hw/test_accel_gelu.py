"""The GELU engine on real token buffers: bit-exact with the reference sequencer on compiled models' own GELUs
(the first block, a later block, after pruning stages, a DynamicViT predictor's), its record fetched over DRAM
channels of every bus width with seeded latency and gaps, the Rows mode's offset, the cycle formula exact, and
malformed ops and records faulted with nothing written."""

from __future__ import annotations

import gc
import struct

import numpy as np
import pytest
from accel_models import config_for, first_step, rows_of, steps

from tokensift.hw.accel.op_gelu import RECORD_BYTES, GeluEngine, cycles
from tokensift.hw.axi.config import AxiDmaConfig
from tokensift.quant.accel import records as rec
from tokensift.quant.accel.isa import Buffer, Opcode
from tokensift.quant.accel.records import RECORD_HEADER, SCHEMAS, Tag
from tokensift.quant.gelu import gelu_int
from tokensift.sim.accel_ops import EngineBench, check_after, op_fields, run_op


def _case(variant, nth):
    dram, regs, _ = steps(variant)
    pc, ins, before, after, entry = first_step(variant, Opcode.GELU, nth)
    start, n = rows_of(before, ins)
    op = op_fields(ins, start=start, n=n, memory_base=regs.memory_base)
    return dram, regs, ins, before, after, entry, op


def _run(cfg, dram, before, op, **timing):
    result = run_op(EngineBench(cfg, GeluEngine(config=cfg)), dram, before.buffers, op, **timing)
    # run_op's DRAM server is left waiting in ``until`` when the simulation ends; its finalizer raises (amaranth
    # 0.5's aclose of a running generator). Collected here, not inside a later ``ast.parse`` (pytest's import
    # rewriting), where CPython 3.11.7 turns it into "SystemError: AST constructor recursion depth mismatch".
    gc.collect()
    return result


def _unchanged(result, before, *, but=None):
    for b in Buffer:
        if b is not but:
            assert np.array_equal(result.buffers[b], before.buffers[b]), b.name


@pytest.mark.parametrize("variant,nth,shape", [
    ("dense", 0, {}),                                                               # the first block's MLP
    ("dense", 2, {"banks": 4, "lanes": 4}),                                         # the last block's
    ("dynamicvit", 4, {"banks": 1, "lanes": 16, "axi": AxiDmaConfig(data_bytes=16)}),  # after a pruning stage
    ("dynamicvit", 5, {"axi": AxiDmaConfig(data_bytes=4)}),                         # the predictor's H -> H
    ("spvit", 1, {"axi": AxiDmaConfig(data_bytes=32)}),                             # two tokens left
])
def test_bit_exact_with_the_reference(variant, nth, shape):
    cfg = config_for(variant, **shape)
    dram, regs, ins, before, after, entry, op = _case(variant, nth)
    result = _run(cfg, dram, before, op, seed=nth, latency=(1, 9), gap=0.3)
    assert not result.fault
    assert result.rows == entry["n"] == after.count[ins.dst]
    check_after(cfg, result, after, ins.dst, entry["n"])
    assert np.array_equal(result.buffers[ins.dst], after.buffers[ins.dst])  # no other row or column written
    _unchanged(result, before, but=ins.dst)
    assert result.dram_commands == [(regs.memory_base + ins.addr_a, RECORD_BYTES)]


@pytest.mark.parametrize("variant,nth,shape,latency", [("dense", 1, {}, 3),
                                                       ("dynamicvit", 6, {"banks": 4, "lanes": 4,
                                                                          "axi": AxiDmaConfig(data_bytes=4)}, 11)])
def test_cycles_match_the_formula(variant, nth, shape, latency):
    cfg = config_for(variant, **shape)
    dram, regs, ins, before, after, entry, op = _case(variant, nth)
    result = _run(cfg, dram, before, op, latency=(latency, latency))
    assert result.cycles == cycles(cfg, n=op["n"], m=ins.m, dram_latency=latency)
    check_after(cfg, result, after, ins.dst, entry["n"])


def test_rows_after_the_protected_tokens():
    """A candidates-mode GELU reads rows ``start ..`` and writes rows ``0 ..`` in place; none left is no row."""
    cfg = config_for("dense")
    dram, regs, ins, before, after, entry, op = _case("dense", 0)
    params = rec.gelu_from(*rec.decode_record(dram[regs.memory_base:], ins.addr_a, Tag.GELU))
    n = before.count[ins.src] - 2
    result = _run(cfg, dram, before, {**op, "start": 2, "n": n})
    want = before.buffers[ins.dst].copy()
    want[:n, :ins.m] = gelu_int(before.buffers[ins.src][2:2 + n, :ins.m], params)
    assert not result.fault and result.rows == n
    assert np.array_equal(result.buffers[ins.dst], want)

    result = _run(cfg, dram, before, {**op, "start": 2, "n": 0}, latency=(4, 4))
    assert not result.fault and result.rows == 0
    assert result.cycles == cycles(cfg, n=0, m=ins.m, dram_latency=4)
    _unchanged(result, before)


def _patched(dram, at, value):
    out = bytearray(dram)
    struct.pack_into("<q", out, at, value)
    return bytes(out)


def test_malformed_ops_and_records_fault_with_nothing_written():
    cfg = config_for("dense")
    dram, regs, ins, before, after, entry, op = _case("dense", 0)
    layernorm = first_step("dense", Opcode.LAYERNORM)[1]
    record = regs.memory_base + ins.addr_a
    slot = {name: record + RECORD_HEADER + 8 * i for i, name in enumerate(SCHEMAS[Tag.GELU].scalars)}
    ops = [{"n": 0, "start": 0},                        # the source holds no rows
           {"m": cfg.geometry(Buffer.F).cols + 1},
           {"arg": 16},                                 # not the unit's output width
           {"src": int(Buffer.X)},                      # 16-bit values do not fit the unit's inputs
           {"dst": int(Buffer.CLS)},                    # an unsigned buffer
           {"addr_a": ins.addr_a + 4}]                  # not aligned on the bus
    for bad in ops:
        result = _run(cfg, dram, before, {**op, **bad})
        assert result.fault and result.rows == 0 and result.cycles <= 3, bad
        assert result.dram_commands == []
        _unchanged(result, before)
    records = [(dram, {"addr_a": layernorm.addr_a}),       # a LayerNorm record's tag
               (_patched(dram, record, Tag.GELU | (RECORD_BYTES + 8) << 32), {}),   # the wrong length
               (_patched(dram, slot["out_bits"], 16), {}),  # not the instruction's arg
               (_patched(dram, slot["in_bits"], 16), {}),   # not the unit's inputs
               (_patched(dram, slot["clip"], -1), {})]             # does not fit the unit's clip
    for image, bad in records:
        result = _run(cfg, image, before, {**op, **bad}, latency=(2, 2))
        assert result.fault and result.rows == 0, bad
        assert len(result.dram_commands) == 1
        _unchanged(result, before)

