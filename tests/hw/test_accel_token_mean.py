"""The TOKEN_MEAN engine on real token buffers: bit-exact with the reference sequencer on DynamicViT's own
predictor means (before and after a pruning stage) under three buffer shapes; bit-exact with ``mean_rows`` on
synthetic ops that copy (another destination, a row range not at row 0, columns that are not whole words, the
residual buffers); the cycle formula exact; malformed ops faulted with nothing written."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from accel_models import config_for, first_step, rows_of

from tokensift.hw.accel.config import AccelConfig
from tokensift.hw.accel.op_token_mean import TokenMeanEngine, cycles, token_mean_params
from tokensift.quant.accel.isa import Buffer, Instruction, Opcode, Rows
from tokensift.quant.stages.predictor import mean_rows
from tokensift.sim.accel_ops import EngineBench, op_fields, run_op


@pytest.mark.parametrize("nth,shape", [(0, {}), (1, {"banks": 4, "lanes": 4}), (1, {"banks": 1, "lanes": 16})])
def test_bit_exact_with_the_reference_and_cycles_exact(nth, shape):
    """DynamicViT's predictor: in place on F, before the first stage (nth 0) and after it (nth 1)."""
    cfg = config_for("dynamicvit", **shape)
    pc, ins, before, after, entry = first_step("dynamicvit", Opcode.TOKEN_MEAN, nth)
    start, n = rows_of(before, ins)
    result = run_op(EngineBench(cfg, TokenMeanEngine(config=cfg)), b"", before.buffers,
                    op_fields(ins, start=start, n=n, protected=before.protected))
    assert not result.fault
    assert result.rows == entry["n"] == after.count[ins.dst]
    for b in Buffer:  # the destination as the reference leaves it, everything else untouched
        assert np.array_equal(result.buffers[b], after.buffers[b]), b.name
    assert result.cycles == cycles(cfg, k=ins.k, m=ins.m, n=n, in_place=True)


def _synthetic(cfg, *, src, dst, k, m, n, start, seed):
    rng = np.random.default_rng(seed)
    before = {}
    for b in {src, dst}:
        g = cfg.geometry(b)
        lim = 1 << (g.bits - 1)
        before[b] = rng.integers(-lim, lim, (g.rows, g.cols))
    ins = Instruction(Opcode.TOKEN_MEAN, dst=dst, src=src, rows=Rows.ALL, k=k, m=m)
    want = before[dst].copy()
    x = before[src][start:start + n, :m].copy()
    x[:, k:] = mean_rows(x[:, k:])[None]
    want[:n, :m] = x
    return before, ins, want


@pytest.mark.parametrize("src,dst,k,m,n,start,shape", [
    (Buffer.F, Buffer.H, 5, 29, 7, 3, {"lanes": 8}),                 # a copy: columns < k from the source
    (Buffer.X, Buffer.X, 13, 30, 9, 2, {"lanes": 4, "banks": 4}),    # in the residual buffer, rows from 2
    (Buffer.F, Buffer.F, 3, 21, 6, 0, {"lanes": 16, "banks": 1}),    # in place, k and m inside one word
    (Buffer.H, Buffer.T, 0, 32, 1, 0, {"lanes": 2}),                 # every column, one row: a copy
])
def test_synthetic_ops_bit_exact_and_cycles_exact(src, dst, k, m, n, start, shape):
    cfg = config_for("dense", **shape)
    before, ins, want = _synthetic(cfg, src=src, dst=dst, k=k, m=m, n=n, start=start, seed=k + m)
    result = run_op(EngineBench(cfg, TokenMeanEngine(config=cfg)), b"", before, op_fields(ins, start=start, n=n))
    assert not result.fault and result.rows == n
    assert np.array_equal(result.buffers[dst], want)
    for b in Buffer:  # nothing else written (the buffers not preloaded stay zero)
        if b is not dst:
            assert np.array_equal(result.buffers[b], before.get(b, np.zeros_like(result.buffers[b]))), b.name
    assert result.cycles == cycles(cfg, k=k, m=m, n=n, in_place=src == dst and start == 0)


def test_malformed_ops_fault_at_once_with_nothing_written():
    cfg = config_for("dense")
    before, ins, want = _synthetic(cfg, src=Buffer.F, dst=Buffer.H, k=4, m=16, n=5, start=0, seed=1)
    good = op_fields(ins, start=0, n=5)
    for bad in ({"k": 16}, {"k": 20}, {"m": cfg.geometry(Buffer.H).cols + 1}, {"src": int(Buffer.CLS)},
                {"src": int(Buffer.X)},                                     # 16-bit codes into an int8 buffer
                {"dst": int(Buffer.LOGITS)}, {"dst": int(Buffer.CLS)}, {"m": 0, "k": 0}):
        result = run_op(EngineBench(cfg, TokenMeanEngine(config=cfg)), b"", before, {**good, **bad})
        assert result.fault and result.rows == 0 and result.cycles <= 3, bad
        for b, values in before.items():
            assert np.array_equal(result.buffers[b], values), (bad, b.name)


def test_empty_row_range_writes_nothing():
    cfg = config_for("dense")
    before, ins, want = _synthetic(cfg, src=Buffer.F, dst=Buffer.F, k=4, m=16, n=0, start=0, seed=2)
    result = run_op(EngineBench(cfg, TokenMeanEngine(config=cfg)), b"", before, op_fields(ins, start=0, n=0))
    assert not result.fault and result.rows == 0 and result.cycles <= 3
    assert np.array_equal(result.buffers[Buffer.F], before[Buffer.F])


def test_unit_is_built_for_every_signed_buffer():
    cfg = config_for("dense", lanes=4)
    p = token_mean_params(cfg)
    signed = [cfg.geometry(b) for b in Buffer if cfg.geometry(b).signed]
    assert (p.lanes, p.bits, p.n_max, p.c_max) == (4, max(g.bits for g in signed), cfg.envelope.max_tokens,
                                                  max(g.cols for g in signed))


def test_configuration_errors():
    env = dataclasses.replace(config_for("dense").envelope, width=24, heads=2, head_dim=12)
    with pytest.raises(ValueError, match=r"^lanes must be a power of two, not 3$"):  # the configuration refuses
        TokenMeanEngine(config=AccelConfig(envelope=env, lanes=3))
    with pytest.raises(TypeError, match=r"^config must be an AccelConfig, not NoneType$"):
        TokenMeanEngine(config=None)
