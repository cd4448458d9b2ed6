"""The LAYERNORM engine on real token buffers: bit-exact with the reference sequencer on compiled models' own
LayerNorms (a first block, a predictor's candidate rows after a pruning stage, a block after a pruning stage,
the final class-token norm) under several buffer shapes and bus widths with a stalling DRAM; bit-exact with
``layernorm_int`` on synthetic records of odd widths; the cycle formula exact; malformed ops and records
faulted with nothing written."""

from __future__ import annotations

import dataclasses
import gc
import struct

import numpy as np
import pytest
from accel_models import config_for, first_step, rows_of, steps

from tokensift.hw.accel.config import AccelConfig
from tokensift.hw.accel.op_layernorm import LayerNormEngine, cycles, layernorm_config, record_bytes
from tokensift.hw.axi.config import AxiDmaConfig
from tokensift.quant.accel import records as rec
from tokensift.quant.accel.isa import Buffer, Instruction, Opcode, Rows
from tokensift.quant.fixed import OverflowCounter
from tokensift.quant.layernorm import LayerNormParams, layernorm_int
from tokensift.sim.accel_ops import EngineBench, op_fields
from tokensift.sim.accel_ops import run_op as _run_op

WIDE_BUS = AxiDmaConfig(data_bytes=32, max_burst=16)
NARROW_BUS = AxiDmaConfig(data_bytes=4)


def run_op(*args, **kwargs):
    """The harness's ``run_op``, then the simulation's garbage collected at once: its never-ending DRAM server
    coroutine is otherwise finalized wherever the collector next runs, and inside ``ast.parse`` (pytest
    rewriting a later module) CPython 3.11 then fails with "AST constructor recursion depth mismatch"."""
    result = _run_op(*args, **kwargs)
    gc.collect()
    return result


def _real(variant, nth):
    dram, regs, _ = steps(variant)
    pc, ins, before, after, entry = first_step(variant, Opcode.LAYERNORM, nth)
    start, n = rows_of(before, ins)
    op = op_fields(ins, start=start, n=n, protected=before.protected, memory_base=regs.memory_base)
    return dram, ins, before, after, entry, op


def _assert_untouched(result, before, *, but=None):
    for b in Buffer:
        if b is not but:
            assert np.array_equal(result.buffers[b], before.buffers[b]), b.name


@pytest.mark.parametrize("variant,nth,shape,seed", [
    ("dense", 0, {}, 1),                                            # the first block's norm1
    ("dynamicvit", 5, {"banks": 4, "lanes": 4}, 2),                 # the predictor's candidates, after a stage
    ("evit", 3, {"banks": 1, "lanes": 16, "axi": NARROW_BUS}, 3),   # a block after a pruning stage
    ("dense", 6, {"lanes": 2, "axi": WIDE_BUS}, 4),                 # the final norm of the class token
])
def test_bit_exact_with_the_reference(variant, nth, shape, seed):
    cfg = config_for(variant, **shape)
    dram, ins, before, after, entry, op = _real(variant, nth)
    result = run_op(EngineBench(cfg, LayerNormEngine(config=cfg)), dram, before.buffers, op, seed=seed,
                    latency=(1, 12), gap=0.3)
    assert not result.fault
    assert result.rows == entry["n"] == after.count[ins.dst]
    for b in Buffer:  # the destination as the reference leaves it (other rows and columns kept), the rest untouched
        assert np.array_equal(result.buffers[b], after.buffers[b]), b.name
    assert result.dram_commands == [(op["memory_base"] + ins.addr_a, record_bytes(ins.m))]


def _synthetic(cfg, dim, n, *, seed, in_bits=None, start=0, patch=None):
    """A DRAM holding one LNRM record of ``dim`` channels (random constants) at 64, a source of random codes."""
    rng = np.random.default_rng(seed)
    env = cfg.envelope
    in_bits = in_bits or env.res_bits
    lim = 1 << (in_bits - 1)
    # affine constants near 1 and 0 and an output range of +-2.5: most outputs in range, some saturated
    params = LayerNormParams.from_float(rng.normal(1, 0.5, dim), rng.normal(0, 0.5, dim), in_scale=0.01,
                                        out_scale=2.5 / 127, eps=1e-5, in_bits=in_bits)
    record = bytearray(rec.encode_record(rec.Tag.LAYERNORM, *rec.layernorm_record(params, "synthetic")))
    for offset, fmt, value in (patch or []):
        struct.pack_into(fmt, record, offset, value)
    dram = bytearray(64) + record + bytearray(64)
    x = np.zeros((env.max_tokens, env.width), dtype=np.int64)
    x[:start + n, :dim] = rng.integers(-lim, lim, (start + n, dim))
    ins = Instruction(Opcode.LAYERNORM, dst=Buffer.H, src=Buffer.X, rows=Rows.ALL, arg=8, addr_a=64, m=dim)
    before = {Buffer.X: x, Buffer.H: rng.integers(-128, 128, (env.max_tokens, cfg.geometry(Buffer.H).cols))}
    return bytes(dram), params, ins, before, op_fields(ins, start=start, n=n)


@pytest.mark.parametrize("dim,n,start,in_bits,shape", [(27, 5, 2, 12, {"lanes": 8}), (9, 3, 0, None, {"lanes": 4}),
                                                       (32, 2, 1, 9, {"lanes": 16, "banks": 4}),
                                                       # one or two channels: the source's first word, not the
                                                       # record, is last to reach the unit (m = 1)
                                                       (1, 2, 0, None, {"lanes": 8}), (2, 1, 0, None, {"lanes": 2}),
                                                       (1, 3, 1, 10, {"lanes": 4, "banks": 4})])
def test_synthetic_widths_bit_exact_and_cycles_exact(dim, n, start, in_bits, shape):
    """Odd widths and widths that are not whole words, narrower declared inputs, a row range not at row 0;
    the cycle count at a fixed DRAM latency is :func:`cycles`."""
    cfg = config_for("dense", **shape)
    dram, params, ins, before, op = _synthetic(cfg, dim, n, seed=dim, in_bits=in_bits, start=start)
    result = run_op(EngineBench(cfg, LayerNormEngine(config=cfg)), dram, before, op, latency=(5, 5))
    assert not result.fault and result.rows == n
    want = before[Buffer.H].copy()
    counter = OverflowCounter()
    want[:n, :dim] = layernorm_int(before[Buffer.X][start:start + n, :dim], params, counter=counter)
    assert np.array_equal(result.buffers[Buffer.H], want)
    assert result.overflows == min(counter.total, (1 << 16) - 1)  # the affine and output saturations
    assert np.array_equal(result.buffers[Buffer.X], before[Buffer.X])
    assert result.cycles == cycles(cfg, m=dim, n=n, dram_latency=5)


@pytest.mark.parametrize("variant,nth,shape,latency", [
    ("evit", 6, {"banks": 1, "lanes": 1, "axi": WIDE_BUS}, 1),
    pytest.param("dense", 0, {}, 2, marks=pytest.mark.slow),
    pytest.param("dynamicvit", 2, {"banks": 4, "lanes": 4, "axi": NARROW_BUS}, 7, marks=pytest.mark.slow),
])
def test_cycle_formula_is_exact(variant, nth, shape, latency):
    cfg = config_for(variant, **shape)
    dram, ins, before, after, entry, op = _real(variant, nth)
    result = run_op(EngineBench(cfg, LayerNormEngine(config=cfg)), dram, before.buffers, op, latency=(latency, latency))
    assert not result.fault
    assert result.cycles == cycles(cfg, m=ins.m, n=op["n"], dram_latency=latency)


def test_unit_is_built_for_the_envelope():
    cfg = config_for("dense", lanes=4)
    unit = layernorm_config(cfg)
    defaults = {f.name: f.default for f in dataclasses.fields(LayerNormParams)}
    assert (unit.c_max, unit.lanes, unit.in_bits, unit.out.bits) == (cfg.envelope.width, 4, cfg.envelope.res_bits, 8)
    assert all(getattr(unit, k) == defaults[k] for k in ("recip_bits", "norm_bits", "gamma_bits", "acc_bits"))
    # the widest epsilon the 62-bit variance leaves room for
    assert unit.v_max + (1 << unit.eps_bits) - 1 < 1 << 62
    assert unit.eps_bits == 61 or unit.v_max + (1 << (unit.eps_bits + 1)) - 1 >= 1 << 62


def test_configuration_errors():
    env = dataclasses.replace(config_for("dense").envelope, width=24, heads=2, head_dim=12)
    with pytest.raises(ValueError, match=r"^lanes must be a power of two, not 3$"):  # the configuration refuses
        LayerNormEngine(config=AccelConfig(envelope=env, lanes=3))
    with pytest.raises(TypeError, match=r"^config must be an AccelConfig, not dict$"):
        LayerNormEngine(config={})


_BAD_OPS = {  # name -> the op's fields changed, from the good op and the accelerator
    "arg": lambda op, cfg: {"arg": 7},                                 # outputs other than int8
    "m0": lambda op, cfg: {"m": 0},
    "unsigned-src": lambda op, cfg: {"src": int(Buffer.CLS)},
    "addr-off-8": lambda op, cfg: {"addr_a": op["addr_a"] + 4},
    "m-wide": lambda op, cfg: {"m": cfg.envelope.width + 1},
    "dst-S": lambda op, cfg: {"dst": int(Buffer.S)},                   # 16-bit, one column
    "dst-LOGITS": lambda op, cfg: {"dst": int(Buffer.LOGITS)},         # one row
    "base-off-word": lambda op, cfg: {"memory_base": op["memory_base"] + 4},
}
_DEFAULT_BAD_OPS = ("arg", "m0", "unsigned-src", "addr-off-8")


@pytest.mark.parametrize("names", [pytest.param(_DEFAULT_BAD_OPS, id="default"),
                                   pytest.param(tuple(set(_BAD_OPS) - set(_DEFAULT_BAD_OPS)), id="more",
                                                marks=pytest.mark.slow)])
def test_malformed_ops_fault_at_once(names):
    cfg = config_for("dense")
    dram, ins, before, after, entry, op = _real("dense", 0)
    for name in names:
        result = run_op(EngineBench(cfg, LayerNormEngine(config=cfg)), dram, before.buffers,
                        {**op, **_BAD_OPS[name](op, cfg)})
        assert result.fault and result.rows == 0 and result.cycles <= 3, name
        assert result.dram_commands == []
        _assert_untouched(result, before)


_SCALAR = {name: 16 + 8 * i for i, name in enumerate(rec.SCHEMAS[rec.Tag.LAYERNORM].scalars)}


_SLOW = pytest.mark.slow


@pytest.mark.parametrize("patch", [
    [(0, "<I", rec.Tag.GELU)],                                           # another record's tag
    pytest.param([(4, "<I", 999)], marks=_SLOW),                         # a wrong length
    [(_SCALAR["dim"], "<q", 26)],                                        # a record of another width
    [(_SCALAR["recip_bits"], "<q", 15)],                                 # a width the unit was not built for
    pytest.param([(_SCALAR["in_bits"], "<q", 17)], marks=_SLOW),         # inputs wider than the unit's
    pytest.param([(_SCALAR["out_bits"], "<q", 16)], marks=_SLOW),        # outputs the instruction does not write
    [(_SCALAR["multiplier"], "<q", 1 << 16)],                            # beyond the unit's multiplier
    pytest.param([(_SCALAR["shift"], "<q", 63)], marks=_SLOW),
    pytest.param([(_SCALAR["eps_int"], "<q", 0)], marks=_SLOW),
    pytest.param([(_SCALAR["eps_int"], "<q", 1 << 61)], marks=_SLOW),
    pytest.param([(_SCALAR["multiplier"] + 4, "<I", 1)], marks=_SLOW),   # a scalar's high half
    [(96 + 4 * 3, "<i", 1 << 15)],                   # a gamma beyond 16 bits: the job runs, nothing is written
])
def test_malformed_records_fault_with_nothing_written(patch):
    cfg = config_for("dense", lanes=4)
    dram, params, ins, before, op = _synthetic(cfg, 27, 4, seed=5, patch=patch)
    result = run_op(EngineBench(cfg, LayerNormEngine(config=cfg)), dram, before, op, latency=(3, 3), gap=0.2)
    assert result.fault and result.rows == 0
    assert len(result.dram_commands) == 1  # fetched once and read to its end (the channel is left clean)
    for b, values in before.items():
        assert np.array_equal(result.buffers[b][:values.shape[0], :values.shape[1]], values), b.name


def test_empty_row_range_writes_nothing():
    cfg = config_for("dense")
    dram, params, ins, before, op = _synthetic(cfg, 32, 1, seed=6)
    result = run_op(EngineBench(cfg, LayerNormEngine(config=cfg)), dram, before, {**op, "n": 0})
    assert not result.fault and result.rows == 0
    assert np.array_equal(result.buffers[Buffer.H], before[Buffer.H])
