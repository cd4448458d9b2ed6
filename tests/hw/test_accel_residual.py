"""The RESIDUAL_ADD engine on real token buffers: bit-exact with the reference sequencer on a compiled model's
own residual adds (the first, and later ones after pruning stages) under three buffer shapes, the cycle formula
exact; malformed ops faulted with nothing written."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from accel_models import config_for, first_step

from tokensift.hw.accel.op_residual import ResidualEngine, cycles
from tokensift.quant.accel.isa import Buffer, Opcode
from tokensift.sim.accel_ops import EngineBench, check_after, op_fields, run_op


def _run(variant, nth, **shape):
    cfg = config_for(variant, **shape)
    pc, ins, before, after, entry = first_step(variant, Opcode.RESIDUAL_ADD, nth)
    op = op_fields(ins, start=0, n=before.count[ins.src], n2=before.count[ins.src2])
    result = run_op(EngineBench(cfg, ResidualEngine(config=cfg)), b"", before.buffers, op)
    return cfg, ins, before, after, entry, result


@pytest.mark.parametrize("variant,nth,shape", [("dense", 0, {}), ("dynamicvit", 3, {"banks": 4, "lanes": 4}),
                                               ("evit", 5, {"banks": 1, "lanes": 16})])
def test_bit_exact_with_the_reference(variant, nth, shape):
    cfg, ins, before, after, entry, result = _run(variant, nth, **shape)
    assert not result.fault
    assert result.rows == entry["n"] == after.count[ins.dst]
    check_after(cfg, result, after, ins.dst, entry["n"])
    for b in Buffer:  # nothing else written
        if b is not ins.dst:
            assert np.array_equal(result.buffers[b][:before.count[b]], before.buffers[b][:before.count[b]])
    assert result.cycles == cycles(cfg, n=entry["n"], m=ins.m)


def test_faults_on_mismatched_rows_and_widths():
    cfg = config_for("dense")
    pc, ins, before, after, entry = first_step("dense", Opcode.RESIDUAL_ADD)
    n = before.count[ins.src]
    bench = lambda: EngineBench(cfg, ResidualEngine(config=cfg))  # noqa: E731
    for bad in (op_fields(ins, start=0, n=n, n2=n - 1), op_fields(ins, start=0, n=0, n2=0),
                op_fields(dataclasses.replace(ins, arg=8), start=0, n=n, n2=n),
                op_fields(dataclasses.replace(ins, m=cfg.envelope.width + 1), start=0, n=n, n2=n)):
        result = run_op(bench(), b"", before.buffers, bad)
        assert result.fault and result.cycles <= 3
        assert np.array_equal(result.buffers[ins.dst][:n], before.buffers[ins.dst][:n])


def test_row_writer_corners_back_to_back():
    """The row writer's last-word and last-row flags at their corners: rows of one and two words, one to three
    rows, ops back to back (each starts the cycle after the previous one's ``done``), each the exact saturating
    sum on its own rows and columns and nothing beyond them."""
    from tokensift.quant.fixed import FixedFormat
    from tokensift.quant.residual import residual_add

    cfg = config_for("dense", banks=2, lanes=4)
    pc, ins, before, after, entry = first_step("dense", Opcode.RESIDUAL_ADD)
    shapes = [(1, 3), (2, 6), (3, 4), (1, 8), (2, 1), (3, 5)]  # (rows, columns): 1, 2, 1, 2, 1, 2 words
    ops = [op_fields(dataclasses.replace(ins, m=m), start=0, n=n, n2=n) for n, m in shapes]
    result = run_op(EngineBench(cfg, ResidualEngine(config=cfg)), b"", before.buffers, ops[0], then=tuple(ops[1:]))
    want = {b: np.array(v, dtype=np.int64) for b, v in before.buffers.items()}
    res = FixedFormat(bits=cfg.envelope.res_bits)
    for n, m in shapes:
        want[ins.dst][:n, :m] = residual_add(want[ins.src][:n, :m], want[ins.src2][:n, :m], res)
    assert not result.fault and result.rows == shapes[-1][0]
    for b in Buffer:
        rows = before.count[b]
        assert np.array_equal(result.buffers[b][:rows, :want[b].shape[1]], want[b][:rows]), b.name
    assert len(result.done_at) == len(shapes)
