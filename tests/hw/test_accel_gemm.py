# amaranth: UnusedElaboratable=no
"""The GEMM / PATCH_EMBED engine on real token buffers: bit-exact with the reference sequencer on compiled
models' own linear layers (the patch embedding, QKV, projection, fc1, fc2, the head, a DynamicViT
predictor's layers; the first block and blocks after pruning stages), CANDIDATES sources starting at ``P``
(token tiles straddling two buffer tiles), several buffer shapes, DRAM latency and gaps, the overflow count
equal to the reference's, nothing written outside the destination's rows, malformed ops and records
faulted, and the cycle formula exact."""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest
from accel_models import config_for, rows_of, steps

from tokensift.hw.accel.op_gemm import GemmOpEngine, cycles, gemm_config, weight_stream_bytes
from tokensift.hw.axi.config import AxiDmaConfig
from tokensift.hw.gemm.layout import encode_weights
from tokensift.quant.accel import decode_image
from tokensift.quant.accel import records as rec
from tokensift.quant.accel.image import Envelope
from tokensift.quant.accel.isa import Buffer, Opcode, Rows
from tokensift.quant.accel.records import Tag
from tokensift.quant.fixed import OverflowCounter
from tokensift.quant.gemm import IntLinear
from tokensift.sim.accel_ops import EngineBench, check_after, op_fields, run_op

SMALL = {"banks": 1, "gemm_cols": 8}  # the cheapest engine to simulate (ops that fault early)


def decoded_layer(dram: bytes, regs, ins) -> IntLinear:
    """The instruction's layer as the reference sequencer decodes it from the image."""
    total = struct.unpack_from("<I", dram, regs.memory_base + 16)[0]
    mem = decode_image(bytes(dram[regs.memory_base:regs.memory_base + total]))
    scalars, arrays = rec.decode_record(mem.data, ins.addr_b, Tag.LINEAR)
    stream = mem.stream(ins.addr_a, scalars["m"], scalars["k"])
    return rec.linear_from(scalars, arrays, stream.weight)


def with_weight_stream(cfg, dram: bytes, regs, ins, layer: IntLinear, *, relocate: bool = False):
    """``(dram, ins)``: the image already holds the layer's weight stream at ``addr_a`` (checked equal to
    ``encode_weights`` of ``layer`` for this engine, byte for byte); with ``relocate`` (a changed layer, or
    an engine shape the image was not compiled for) ``layer``'s stream is stored at a free 64-byte aligned
    address past the image and ``ins.addr_a`` points there."""
    beats = encode_weights(layer.weight, layer.bias, layer.multipliers, layer.shifts, gemm_config(cfg))
    stream = b"".join(int(b).to_bytes(cfg.axi.data_bytes, "little") for b in beats)
    assert len(stream) == weight_stream_bytes(cfg, layer.in_features, layer.out_features)
    at = regs.memory_base + ins.addr_a
    if not relocate and bytes(dram[at:at + len(stream)]) == stream:
        return dram, ins
    at = -(-len(dram) // 64) * 64
    out = bytearray(at + len(stream))
    out[:len(dram)] = dram
    out[at:] = stream
    return bytes(out), dataclasses.replace(ins, addr_a=at - regs.memory_base)


def step_at(variant: str, pc: int):
    (found,) = [s for s in steps(variant)[2] if s[0] == pc]
    assert found[1].opcode in (Opcode.GEMM, Opcode.PATCH_EMBED) and not found[4].get("skipped")
    return found


@dataclasses.dataclass
class Run:
    cfg: object
    ins: object
    op: dict
    loaded: dict       #: the buffers the engine started from
    after: object      #: the reference's state after the op
    want_rows: int
    want_overflows: int
    result: object


def run_step(variant, pc, *, seed=0, latency=(2, 2), gap=0.0, shift=0, scale=1, **shape) -> Run:
    """Run the step at ``pc``. ``shift`` > 0 moves the source rows to start at row ``shift`` (random values
    around them) and reads them as CANDIDATES from ``P = shift``. ``scale`` multiplies the layer's
    requantization multipliers (in the weight stream; the expectation is that layer's)."""
    cfg = config_for(variant, **shape)
    dram, regs, _ = steps(variant)
    pc, ins, before, after, entry = step_at(variant, pc)
    layer = decoded_layer(dram, regs, ins)
    if scale != 1:
        layer = dataclasses.replace(layer, multipliers=np.minimum(layer.multipliers * scale, (1 << 16) - 1))
    dram, ins = with_weight_stream(cfg, dram, regs, ins, layer, relocate=scale != 1)
    loaded = {b: np.array(v) for b, v in before.buffers.items()}
    counter = OverflowCounter()
    if ins.opcode is Opcode.PATCH_EMBED:
        start, n = 0, 0
        codes = np.frombuffer(dram[regs.input_base:regs.input_base + ins.k * cfg.envelope.patches],
                              dtype=np.int8).reshape(-1, ins.k).astype(np.int64)
        want = layer(codes, counter=counter)
        rows = len(codes) + 1
        want = np.concatenate([np.zeros((1, ins.m), dtype=np.int64), want])
    else:
        start, n = rows_of(before, ins)
        want = layer(before.buffers[ins.src][start:start + n, :ins.k], counter=counter)
        rows = n
        if shift:
            moved = np.random.default_rng(shift).integers(-128, 128, size=loaded[ins.src].shape)
            moved[shift:shift + n] = loaded[ins.src][start:start + n]
            loaded[ins.src] = moved
            ins = dataclasses.replace(ins, rows=Rows.CANDIDATES)
            start = shift
    if scale == 1:  # the reference's own outputs
        assert np.array_equal(after.buffers[ins.dst][:rows, :ins.m], want)
    else:
        after = dataclasses.replace(after, buffers=dict(after.buffers))
        after.buffers[ins.dst] = np.array(before.buffers[ins.dst])
        after.buffers[ins.dst][:rows, :ins.m] = want
    op = op_fields(ins, start=start, n=n, protected=max(shift, 1), memory_base=regs.memory_base,
                   input_base=regs.input_base, logits_base=regs.logits_base)
    result = run_op(EngineBench(cfg, GemmOpEngine(config=cfg)), dram, loaded, op, seed=seed, latency=latency,
                    gap=gap)
    return Run(cfg, ins, op, loaded, after, rows, counter.total, result)


def check_run(run: Run) -> None:
    """Bit-exact rows, the row count, the overflows; every other row and buffer untouched."""
    r = run.result
    assert not r.fault
    assert r.rows == run.want_rows
    check_after(run.cfg, r, run.after, run.ins.dst, run.want_rows)
    assert r.overflows == run.want_overflows
    for b in Buffer:
        skip = run.want_rows if b is run.ins.dst else 0
        assert np.array_equal(r.buffers[b][skip:], run.loaded[b][skip:]), b.name


def check_cycles(run: Run, latency: int) -> None:
    op = run.op
    assert run.result.cycles == cycles(run.cfg, run.ins.opcode, run.ins.k, run.ins.m, n=op["n"],
                                       start=op["start"], dram_latency=latency)


# (variant, pc, shape, shift): the patch embedding, the head, a DynamicViT predictor's layers reading
# CANDIDATES (start = P: 1, and 3 with four banks; one lane: a word per read, one read more per word), one
# bank (no rotation), its projection after two pruning stages
CASES = [
    ("dense", 0, {"gemm_cols": 8}, 0),
    ("dense", 36, {"gemm_cols": 8}, 0),
    ("dynamicvit", 35, {"banks": 4, "lanes": 4, "gemm_cols": 8}, 3),
    ("dynamicvit", 42, {"banks": 4, "lanes": 4, "gemm_cols": 8}, 1),
    ("dynamicvit", 42, {"banks": 2, "lanes": 1, "gemm_cols": 8}, 1),
    ("dynamicvit", 40, {"banks": 1, "lanes": 16, "gemm_cols": 8}, 0),
    ("dynamicvit", 48, {"banks": 4, "lanes": 4, "gemm_cols": 16}, 0),
]


@pytest.mark.parametrize("variant,pc,shape,shift", CASES)
def test_bit_exact_with_the_reference_and_cycles_exact(variant, pc, shape, shift):
    run = run_step(variant, pc, shift=shift, latency=(17, 17), **shape)
    check_run(run)
    check_cycles(run, 17)


@pytest.mark.parametrize("variant,pc,shape,shift,seed", [
    ("dense", 0, {"banks": 4, "lanes": 4, "gemm_cols": 8}, 0, 1),
    ("dynamicvit", 42, {"banks": 2, "lanes": 8, "gemm_cols": 8}, 1, 2),
    ("dynamicvit", 38, {"banks": 4, "lanes": 4, "gemm_cols": 8}, 2, 3),
])
def test_bit_exact_under_dram_latency_and_gaps(variant, pc, shape, shift, seed):
    check_run(run_step(variant, pc, shift=shift, seed=seed, latency=(1, 40), gap=0.3, **shape))


@pytest.mark.parametrize("variant,pc,scale", [("dense", 36, 1 << 9), ("dynamicvit", 40, 1 << 7)])
def test_saturation_and_overflow_count(variant, pc, scale):
    """Multipliers scaled up saturate the outputs: the head's int16 logits in the GEMM engine, the
    predictor's int8 outputs in the local stage; each counted once."""
    run = run_step(variant, pc, scale=scale, gemm_cols=8)
    assert run.want_overflows > 0
    check_run(run)


def _fault(op_change=None, ins_change=None, *, pc=36, variant="dense", shape=SMALL, dram_change=None):
    cfg = config_for(variant, **shape)
    dram, regs, _ = steps(variant)
    pc, ins, before, after, entry = step_at(variant, pc)
    dram, ins = with_weight_stream(cfg, dram, regs, ins, decoded_layer(dram, regs, ins))
    ins = dataclasses.replace(ins, **(ins_change or {}))
    start, n = rows_of(before, ins) if ins.opcode is Opcode.GEMM else (0, 0)
    op = op_fields(ins, start=start, n=n, memory_base=regs.memory_base, input_base=regs.input_base)
    op.update(op_change or {})
    result = run_op(EngineBench(cfg, GemmOpEngine(config=cfg)), dram_change(dram) if dram_change else dram,
                    before.buffers, op)
    assert result.fault and result.rows == 0
    for b in Buffer:
        assert np.array_equal(result.buffers[b], before.buffers[b]), b.name
    return result, regs


@pytest.mark.parametrize("op_change,ins_change", [
    (None, {"opcode": Opcode.LAYERNORM}),
    (None, {"k": 0}),
    (None, {"k": 65}),                                 # beyond the engine's inputs (and H's columns)
    (None, {"m": 11}),                                 # beyond LOGITS' columns
    (None, {"dst": Buffer.CLS}),                       # unsigned
    (None, {"src": Buffer.X, "dst": Buffer.F}),        # not an int8 buffer
    ({"n": 0}, None),
    ({"n": 2}, None),                                  # LOGITS holds one row
    ({"start": 50}, {"dst": Buffer.F}),                # past H's rows
    ({"memory_base": 4}, None),                        # not a whole AXI word
])
def test_malformed_ops_fault_at_once(op_change, ins_change):
    result, _ = _fault(op_change, ins_change)
    assert result.cycles <= 4 and result.dram_commands == []


def test_a_patch_embedding_of_the_wrong_size_faults():
    result, _ = _fault(None, {"k": 15}, pc=0)
    assert result.cycles <= 4


@pytest.mark.parametrize("ins_change", [
    {"addr_b": None},                                  # a LayerNorm record: the wrong tag
    {"addr_b": "fc1"},                                 # fc1's record: m is 64, not 10
    {"arg": 8},                                        # the record writes 16-bit outputs
])
def test_bad_records_fault_without_fetching_weights(ins_change):
    dram, regs, program = steps("dense")
    if "addr_b" in ins_change:
        want = Opcode.LAYERNORM if ins_change["addr_b"] is None else Opcode.GEMM
        ins = [s[1] for s in program if s[1].opcode is want and (want is Opcode.LAYERNORM or s[1].m == 64)][0]
        ins_change = {"addr_b": ins.addr_a if want is Opcode.LAYERNORM else ins.addr_b}
    result, regs = _fault(None, ins_change)
    assert len(result.dram_commands) == 1    # the record only


def test_a_corrupted_record_length_faults():
    pc, ins, *_ = step_at("dense", 36)
    base = steps("dense")[1].memory_base

    def corrupt(dram):
        out = bytearray(dram)
        out[base + ins.addr_b + 4] ^= 8
        return bytes(out)

    _fault(dram_change=corrupt)


def test_configuration_errors():
    with pytest.raises(TypeError, match=r"^config must be an AccelConfig, not dict$"):
        GemmOpEngine(config={})
    env = config_for("dense").envelope
    odd = dataclasses.replace(env, width=24, heads=2, head_dim=12)
    from tokensift.hw.accel.config import AccelConfig

    # the engine takes an output channel's word and lane from its bits; the configuration guarantees that
    with pytest.raises(ValueError, match=r"^lanes must be a power of two, not 6$"):
        GemmOpEngine(config=AccelConfig(envelope=odd, lanes=6))
    seven = Envelope(**{**env.to_dict(), "patch_size": 7, "patches": 16})
    with pytest.raises(ValueError, match=r"^the patch size \(49 bytes\) must be a multiple of the AXI word"):
        GemmOpEngine(config=AccelConfig(envelope=seven))
    cfg = config_for("dense")
    with pytest.raises(ValueError, match=r"^the GEMM op engine runs GEMM and PATCH_EMBED, not LAYERNORM$"):
        cycles(cfg, Opcode.LAYERNORM, 32, 32, n=1)
    with pytest.raises(ValueError, match=r"^k must be"):
        cycles(cfg, Opcode.GEMM, 0, 32, n=1)
    with pytest.raises(ValueError, match=r"^start must be"):
        cycles(cfg, Opcode.GEMM, 32, 32, n=50, start=1)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["dense", "dynamicvit"])
def test_every_linear_layer_of_a_model(variant):
    """Every executed GEMM and PATCH_EMBED of the program at the default shape: bit-exact, cycles exact."""
    pcs = [s[0] for s in steps(variant)[2] if s[1].opcode in (Opcode.GEMM, Opcode.PATCH_EMBED)
           and not s[4].get("skipped")]
    assert len(pcs) > 10
    for pc in pcs:
        run = run_step(variant, pc, latency=(30, 30))
        check_run(run)
        check_cycles(run, 30)


@pytest.mark.slow
@pytest.mark.parametrize("variant,pc,shape,latency", [
    ("dense", 0, {"banks": 1, "lanes": 16, "gemm_cols": 8}, 5),      # one-row tiles: token 0 needs no input
    ("dense", 0, {"banks": 16, "lanes": 4, "gemm_cols": 8}, 9),      # more rows than AXI bytes: DRAM-bound
    ("dynamicvit", 45, {"banks": 8, "lanes": 8, "gemm_cols": 8}, 1),  # QKV after two stages, 12 column tiles
    ("dense", 0, {"banks": 4, "lanes": 4, "gemm_cols": 16, "axi": AxiDmaConfig(data_bytes=16)}, 7),
    ("dynamicvit", 38, {"banks": 4, "lanes": 4, "gemm_cols": 16, "axi": AxiDmaConfig(data_bytes=16)}, 7),
    ("dense", 0, {"banks": 8, "lanes": 4, "gemm_cols": 8, "axi": AxiDmaConfig(data_bytes=4)}, 7),
])
def test_more_shapes(variant, pc, shape, latency):
    run = run_step(variant, pc, latency=(latency, latency), **shape)
    check_run(run)
    check_cycles(run, latency)
