"""The POS_EMBED engine on real token buffers: bit-exact with the reference sequencer on compiled models' own
position embeddings (after their patch embeddings) over every AXI width and several buffer shapes, with seeded
DRAM latency and gaps; saturating sums at the residual format's limits; the cycle formula exact; malformed ops
and records faulted with nothing written."""

from __future__ import annotations

import gc
import struct

import numpy as np
import pytest
from accel_models import config_for, first_step, steps

from tokensift.hw.accel.op_pos_embed import PosEmbedEngine, cycles, record_bytes
from tokensift.hw.accel.rows import words_of
from tokensift.hw.axi.config import AxiDmaConfig
from tokensift.quant.accel import records as rec
from tokensift.quant.accel.isa import Buffer, Opcode
from tokensift.quant.accel.records import RECORD_HEADER, SCHEMAS, Tag
from tokensift.quant.fixed import FixedFormat
from tokensift.quant.residual import residual_add
from tokensift.sim.accel_ops import EngineBench, check_after, op_fields, run_op


def _case(variant, image=0):
    dram, regs, _ = steps(variant, image)
    pc, ins, before, after, entry = first_step(variant, Opcode.POS_EMBED, image=image)
    op = op_fields(ins, start=0, n=before.count[ins.dst], memory_base=regs.memory_base)
    return dram, regs, ins, before, after, entry, op


def _run(cfg, dram, buffers, op, **timing):
    result = run_op(EngineBench(cfg, PosEmbedEngine(config=cfg)), dram, buffers, op, **timing)
    gc.collect()  # run_op's DRAM server, finalized here (see test_accel_gelu._run)
    return result


def _unchanged(result, buffers):
    for b in Buffer:
        assert np.array_equal(result.buffers[b], buffers[b]), b.name


@pytest.mark.parametrize("variant,image,shape", [
    ("dense", 0, {}),
    ("dynamicvit", 1, {"banks": 4, "lanes": 4, "axi": AxiDmaConfig(data_bytes=4)}),
    ("spvit", 0, {"banks": 1, "lanes": 16, "axi": AxiDmaConfig(data_bytes=16)}),
    ("evit", 0, {"lanes": 2, "axi": AxiDmaConfig(data_bytes=32)}),
])
def test_bit_exact_with_the_reference(variant, image, shape):
    cfg = config_for(variant, **shape)
    dram, regs, ins, before, after, entry, op = _case(variant, image)
    result = _run(cfg, dram, before.buffers, op, seed=image + 3, latency=(1, 9), gap=0.3)
    assert not result.fault
    assert result.rows == entry["n"] == ins.k + 1
    check_after(cfg, result, after, ins.dst, entry["n"])
    for b in Buffer:  # every other row, column and buffer as it was
        assert np.array_equal(result.buffers[b], after.buffers[b] if b is ins.dst else before.buffers[b]), b.name
    assert result.dram_commands == [(regs.memory_base + ins.addr_a, record_bytes(ins.k, ins.m))]


def test_sums_saturate_at_the_residual_limits():
    cfg = config_for("dense", lanes=4)
    dram, regs, ins, before, after, entry, op = _case("dense")
    scalars, arrays = rec.decode_record(dram[regs.memory_base:], ins.addr_a, Tag.POSITION)
    pos = arrays["pos"].reshape(ins.k, ins.m)
    res = FixedFormat(bits=ins.arg)
    buffers = {b: v.copy() for b, v in before.buffers.items()}
    x = buffers[ins.dst]
    x[1:ins.k + 1, :ins.m] = np.where(pos > 0, res.max_int, res.min_int)   # every sum leaves the format
    x[1:4, :ins.m] = -pos[:3]                                              # and a few land on 0
    result = _run(cfg, dram, buffers, op)
    want = x.copy()
    want[1:ins.k + 1, :ins.m] = residual_add(x[1:ins.k + 1, :ins.m], pos, res)
    want[0, :ins.m] = arrays["cls"]
    assert not result.fault and np.array_equal(result.buffers[ins.dst], want)
    assert result.overflows == min(int(np.count_nonzero(pos[3:])), 0xFFFF)


def test_cycles_match_the_formula():
    latency = 10
    cfg = config_for("dense", banks=4, lanes=1, axi=AxiDmaConfig(data_bytes=4))
    dram, regs, ins, before, after, entry, op = _case("dense")
    result = _run(cfg, dram, before.buffers, op, latency=(latency, latency))
    assert result.cycles == cycles(cfg, patches=ins.k, dim=ins.m, dram_latency=latency)
    check_after(cfg, result, after, ins.dst, entry["n"])


def _patched(dram, at, value):
    out = bytearray(dram)
    struct.pack_into("<q", out, at, value)
    return bytes(out)


def test_malformed_ops_and_records_fault_with_nothing_written():
    cfg = config_for("dense")
    dram, regs, ins, before, after, entry, op = _case("dense")
    gelu = first_step("dense", Opcode.GELU)[1]
    record = regs.memory_base + ins.addr_a
    slot = {name: record + RECORD_HEADER + 8 * i for i, name in enumerate(SCHEMAS[Tag.POSITION].scalars)}
    n = op["n"]
    ops = [{"k": 0},
           {"m": ins.m - 1},                        # not whole words
           {"m": cfg.geometry(Buffer.X).cols + cfg.lanes},
           {"n": n - 1},                            # dst does not hold p + 1 rows
           {"arg": 8},                              # not the residual width
           {"dst": int(Buffer.H)},                  # not a residual buffer
           {"addr_a": ins.addr_a + 4}]              # not aligned on the bus
    for bad in ops:
        result = _run(cfg, dram, before.buffers, {**op, **bad})
        assert result.fault and result.rows == 0 and result.cycles <= 5, bad
        assert result.dram_commands == []
        _unchanged(result, before.buffers)
    records = [(dram, {"addr_a": gelu.addr_a}),                                   # a GELU record
               (_patched(dram, record, Tag.POSITION | (record_bytes(ins.k, ins.m) - 8) << 32), {}),  # its length
               (_patched(dram, slot["patches"], ins.k - 1), {}),
               (_patched(dram, slot["bits"], 12), {})]
    for image, bad in records:
        result = _run(cfg, image, before.buffers, {**op, **bad}, latency=(2, 2))
        assert result.fault and result.rows == 0, bad
        assert len(result.dram_commands) == 1
        # the whole read is drained before ``done``: the next op finds an idle channel
        assert result.cycles > record_bytes(ins.k, ins.m) // 8
        _unchanged(result, before.buffers)


@pytest.mark.parametrize("lanes", [3, 5, 6, 12, 24, 48, 8])
def test_words_of_is_exact_for_every_lanes(lanes):
    """The engines' ``ceil(m / lanes)`` (a constant reciprocal where ``lanes`` is no power of two)."""
    m = np.arange(1 << 17, dtype=np.int64)
    assert np.array_equal(words_of(m, lanes), -(-m // lanes))


@pytest.mark.parametrize("lanes,dim", [(2, 30), (1, 31)])
def test_widths_that_leave_padding_in_the_last_slots(lanes, dim):
    """``cls`` and ``pos`` that end inside a slot (the compiled models' do not): the padding after each is
    dropped, ``pos`` starts at the next slot."""
    cfg = config_for("dense", lanes=lanes)
    dram, regs, ins, before, after, entry, op = _case("dense")
    rng = np.random.default_rng(dim)
    res = FixedFormat(bits=ins.arg)
    cls = rng.integers(res.min_int, res.max_int + 1, dim)
    pos = rng.integers(res.min_int, res.max_int + 1, (ins.k, dim))
    record = rec.encode_record(Tag.POSITION, {"patches": ins.k, "dim": dim, "bits": ins.arg}, {"cls": cls, "pos": pos})
    assert len(record) == record_bytes(ins.k, dim) <= record_bytes(ins.k, ins.m)
    image = bytearray(dram)
    image[regs.memory_base + ins.addr_a:regs.memory_base + ins.addr_a + len(record)] = record
    result = _run(cfg, bytes(image), before.buffers, {**op, "m": dim}, latency=(3, 3))
    want = before.buffers[ins.dst].copy()
    want[1:ins.k + 1, :dim] = residual_add(want[1:ins.k + 1, :dim], pos, res)
    want[0, :dim] = cls
    assert not result.fault and result.rows == ins.k + 1
    assert np.array_equal(result.buffers[ins.dst], want)
    assert result.cycles == cycles(cfg, patches=ins.k, dim=dim, dram_latency=3)
