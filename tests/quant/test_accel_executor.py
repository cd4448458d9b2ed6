"""The compiled memory image run by the reference sequencer: bit-exact against IntegerViT for every method, one
image under several register settings, the trace, and malformed images, programs and registers rejected."""

from __future__ import annotations

import copy
import dataclasses
import functools
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stage_models import TINY, calib_batches, images_labels

from tokensift.quant.accel import compile_model, decode_image, run_images
from tokensift.quant.accel.compiler import reference_model
from tokensift.quant.accel.executor import run
from tokensift.quant.accel.image import finish_checksum
from tokensift.quant.accel.isa import Buffer, Instruction, Opcode, Rows
from tokensift.quant.accel.records import Tag, decode_record, linear_from
from tokensift.quant.accel.stream import GemmShape, encode_stream
from tokensift.quant.integer_model import IntegerViT
from tokensift.quant.stages.sait import mass_code

#: (method, keep ratio, float selector attributes): every method, and the variants of their options
VARIANTS = {
    "dense": ("none", None, {}),
    "evit": ("evit", 0.7, {}),
    "evit-nofuse": ("evit", 0.6, {"fuse_token": False}),
    "dynamicvit": ("dynamicvit", 0.7, {}),
    "spvit": ("spvit", 0.7, {}),
    "spvit-topk-mean": ("spvit", 0.7, {"decision": "topk", "package": "mean"}),
    "asvit": ("asvit", 0.7, {}),
    "asvit-image": ("asvit", 0.7, {"head_importance": "image"}),
    "sait": ("sait", 0.5, {}),
}


@functools.cache
def mnist():
    from tokensift.sw.data import load_mnist

    return load_mnist()


@functools.cache
def images(count: int = 5) -> torch.Tensor:
    return images_labels(mnist()[1], count, start=100)[0]


@functools.cache
def built(variant: str):
    """A random TINY model of the variant, its integer model and the compiled image (once per process)."""
    from tokensift.sw import create_model

    method, keep, attrs = VARIANTS[variant]
    torch.manual_seed(0)
    model = create_model("vit_mnist_patch4_28", method=method, keep_ratio=keep, **TINY).eval()
    for _, sel in model.stage_selectors():
        for name, value in attrs.items():
            setattr(sel, name, value)
    int_model = IntegerViT.from_float(model, calib_batches(mnist()[0], 1, 50), num_batches=1)
    return int_model, compile_model(int_model)


def _same_decisions(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (g.stage, g.block, g.num_protected) == (w.stage, w.block, w.num_protected)
        for name in ("index", "keep", "scores"):
            assert np.array_equal(getattr(g, name), getattr(w, name)), name


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bit_exact_logits_and_decisions(variant):
    int_model, compiled = built(variant)
    x = images()
    got, results = run_images(compiled.image, compiled.registers, x)
    assert got.dtype == np.int64 and got.shape == (len(x), 10)
    assert np.array_equal(got, int_model.logits(x))
    tokens = int_model.forward_tokens(x)
    for b, result in enumerate(results):
        _same_decisions(result.decisions, int_model.decisions[b])
        assert result.trace[-1]["tokens"] == tokens[b].shape[0]
    if variant != "dense":
        assert any(len(d) for d in int_model.decisions), "the variant pruned nothing: a weak test"


@pytest.mark.parametrize("variant", ["dynamicvit", "evit"])
def test_the_trace_counts_run_time_rows(variant):
    int_model, compiled = built(variant)
    _, (result,) = run_images(compiled.image, compiled.registers, images()[:1])
    trace = result.trace
    assert [e["op"] for e in trace][:2] == ["PATCH_EMBED", "POS_EMBED"] and trace[-1]["op"] == "END"
    assert sum(e["op"] == "ATTENTION" for e in trace) == int_model.blocks[0].num_heads * len(int_model.blocks)
    alive = [e["tokens"] for e in trace]
    assert alive[1] == 50 and alive[-1] < 50 and alive == sorted(alive, reverse=True)
    selects = [e for e in trace if e["op"] == "SELECT"]
    assert len(selects) == 2 and all(e["kept"] < e["n"] for e in selects)
    backbone = [(prev, e) for prev, e in zip(trace[:-1], trace[1:], strict=True)
                if e["op"] in ("ATTENTION", "RESIDUAL_ADD") or (e["op"] == "GEMM" and e["m"] == 64)]  # 64: fc1
    assert len(backbone) == 3 * (2 + 2 + 1)
    assert all(e["n"] == prev["tokens"] for prev, e in backbone)  # the tokens alive when it starts
    head = trace[-3]
    assert (head["op"], head["n"], head["k"], head["m"]) == ("GEMM", 1, 32, 10)
    if variant == "dynamicvit":  # the predictor runs over the candidates, one score each
        pred = [e for e in trace if e["op"] == "GEMM" and e["m"] == 1]
        assert [e["n"] for e in pred] == [s["n"] - 1 for s in selects]


def test_sait_density_from_the_registers_only():
    int_model, compiled = built("sait")
    x = images()
    counts = {}
    for ratio in (1.0, 0.5, 0.3):
        regs = compiled.registers.replace(density=mass_code(ratio))
        got, results = run_images(compiled.image, regs, x)
        int_model.set_keep_ratio(ratio)
        assert np.array_equal(got, int_model.logits(x)), ratio
        counts[ratio] = [r.trace[-1]["tokens"] for r in results]
    int_model.set_keep_ratio(0.5)
    assert counts[1.0] == [50] * len(x)
    assert all(a > b for a, b in zip(counts[0.5], counts[0.3], strict=True))


@pytest.mark.parametrize("variant, changes", [
    ("evit", {"keep": (20, 9)}),
    ("evit", {"keep": (48, 40)}),
    ("evit-nofuse", {"keep": (5, 1)}),
    ("dynamicvit", {"keep": (40, 30)}),
    ("dynamicvit", {"keep": (10, 60)}),  # more than the candidates: all of them
    ("asvit", {"threshold": (200, 900)}),
    ("spvit", {"rule": ("topk", "topk"), "keep": (25, 12)}),
    ("spvit-topk-mean", {"rule": ("threshold", "topk"), "keep": (1, 7)}),
    ("dynamicvit", {"method": "dense"}),
    ("spvit", {"method": "dense"}),
])
def test_one_image_under_other_registers(variant, changes):
    int_model, compiled = built(variant)
    regs = compiled.registers.replace(**changes)
    x = images()
    got, results = run_images(compiled.image, regs, x)
    ref = reference_model(int_model, regs)
    assert np.array_equal(got, ref.logits(x))
    for b, result in enumerate(results):
        _same_decisions(result.decisions, ref.decisions[b])
    default, _ = run_images(compiled.image, compiled.registers, x)
    assert not np.array_equal(got, default)  # the registers changed what ran
    if changes.get("method") == "dense":
        assert all(e.get("skipped") for e in results[0].trace if e["op"] == "SELECT")
        assert results[0].trace[-1]["tokens"] == 50


def test_the_memory_image_can_sit_anywhere_in_dram():
    int_model, compiled = built("dynamicvit")
    shift = 1 << 16
    r = compiled.registers
    regs = r.replace(memory_base=shift, program_base=r.program_base + shift, input_base=r.input_base + shift,
                     logits_base=r.logits_base + shift)
    got, results = run_images(compiled.image, regs, images()[:2], dram_bytes=shift + len(compiled.image) + 4096)
    assert np.array_equal(got, int_model.logits(images()[:2]))
    logits = np.frombuffer(bytes(results[1].dram[regs.logits_base:regs.logits_base + 20]), dtype="<i2")
    assert np.array_equal(logits, got[1])
    # input and logits outside the image: the host may keep them anywhere
    regs = r.replace(input_base=len(compiled.image) + 64 * 3, logits_base=len(compiled.image) + 64 * 20)
    got, _ = run_images(compiled.image, regs, images()[:2])
    assert np.array_equal(got, int_model.logits(images()[:2]))


def test_the_image_decodes_to_the_model_it_was_compiled_from():
    int_model, compiled = built("spvit")
    mem = decode_image(compiled.image)
    assert mem.to_bytes() == compiled.image
    assert mem.method == "spvit" and mem.input_scale == int_model.input_scale
    env = mem.envelope
    assert (env.width, env.heads, env.depth, env.patches, env.classes, env.stages) == (32, 2, 3, 49, 10, 2)
    assert env.max_tokens == 50 + 2  # SPViT's package tokens
    starts = [r.offset for r in mem.regions.values()]
    assert all(s % 64 == 0 for s in starts) and starts == sorted(starts)
    gemms = [i for i in mem.program if i.opcode is Opcode.GEMM and not i.gated]
    qkv = gemms[0]
    stream = mem.stream(qkv.addr_a, qkv.m, qkv.k)
    record = linear_from(*decode_record(mem.data, qkv.addr_b, Tag.LINEAR), stream.weight)
    want = int_model.blocks[0].qkv
    assert qkv.addr_a % 64 == 0 and (qkv.k, qkv.m) == (32, 96)
    assert mem.gemm == GemmShape(cols=64, stream_bytes=8)  # the defaults: the demo's engine, a 64-bit bus
    for name in ("weight", "bias", "multipliers", "shifts"):
        assert np.array_equal(getattr(stream, name), getattr(want, name)), name
        assert np.array_equal(getattr(record, name), getattr(want, name)), name
    assert record.out == want.out
    # every GEMM-type op's stream, back to back in the weights region, of the documented length
    ops = [i for i in mem.program if i.opcode in (Opcode.PATCH_EMBED, Opcode.GEMM)]
    layers = [int_model.patch, *(getattr(blk, n) for blk in int_model.blocks for n in ("qkv", "proj", "fc1", "fc2")),
              int_model.head]
    assert len(ops) == len(layers)
    weights = mem.regions["weights"]
    for ins, layer in zip(ops, layers, strict=True):
        length = mem.gemm.stream_length(ins.m, ins.k)
        assert ins.addr_a % 64 == 0 and weights.offset <= ins.addr_a < ins.addr_a + length <= weights.end
        assert mem.data[ins.addr_a:ins.addr_a + length] == encode_stream(
            layer.weight, layer.bias, layer.multipliers, layer.shifts, mem.gemm)
    m = compiled.manifest
    assert m["ops"] == len(mem.program) and m["bytes"] == len(compiled.image)
    assert m["op_counts"]["SELECT"] == 2 and m["op_counts"]["ATTENTION"] == 6
    assert m["buffers"]["QKV"] == {"rows": 52, "columns": 96, "bits": 8, "bytes": 52 * 96}


def _patched(image: bytes, pc: int, **changes) -> bytes:
    mem = decode_image(image)
    mem.program = [dataclasses.replace(ins, **changes) if i == pc else ins for i, ins in enumerate(mem.program)]
    return mem.to_bytes()


def _pc(image: bytes, opcode: Opcode, nth: int = 0) -> int:
    return [i for i, ins in enumerate(decode_image(image).program) if ins.opcode is opcode][nth]


def test_malformed_programs_are_reported_with_the_instruction():
    _, compiled = built("sait")
    image, regs = compiled.image, compiled.registers
    prog = decode_image(image).program
    gemm, ln = _pc(image, Opcode.GEMM), _pc(image, Opcode.LAYERNORM)
    cases = [
        (_patched(image, gemm, addr_b=prog[ln].addr_a),
         rf"^instruction {gemm} \(GEMM\): offset {prog[ln].addr_a} holds a LNRM record, not a LIN record$"),
        (_patched(image, gemm, m=4000),
         rf"^instruction {gemm} \(GEMM\): its LIN record is 96 x 32, the instruction says 4000 x 32$"),
        (_patched(image, gemm, addr_a=prog[gemm].addr_a + 1),
         rf"^instruction {gemm} \(GEMM\): the weight stream of 96 x 32 \(5120 bytes\) at offset "
         rf"{prog[gemm].addr_a + 1} is not 64-byte aligned inside the weights region \[\d+, \d+\)$"),
        (_patched(image, ln, addr_a=4), rf"^instruction {ln} \(LAYERNORM\): constant record offset 4 is outside the "
                                        r"constants region \[\d+, \d+\)$"),
        (_patched(image, ln, dst=Buffer.LOGITS),
         rf"^instruction {ln} \(LAYERNORM\): 32 columns do not fit buffer LOGITS \(10 columns\)$"),
        (_patched(image, ln, src=Buffer.S), rf"^instruction {ln} \(LAYERNORM\): it reads S, which holds no rows$"),
        (_patched(image, ln, opcode=Opcode.SELECT, dst=Buffer.X, src=Buffer.A, src2=Buffer.CLS, arg=0,
                  addr_a=prog[_pc(image, Opcode.SELECT)].addr_a),
         rf"^instruction {ln} \(SELECT\): the sait stage scores the attention of the tokens it selects from, and "
         r"none ran over them$"),
        (_patched(image, _pc(image, Opcode.SELECT), arg=5),
         rf"^instruction {_pc(image, Opcode.SELECT)} \(SELECT\): stage 5 has no registers \(2 stages\)$"),
    ]
    for data, message in cases:
        dram = bytearray(data) + bytearray(64)
        with pytest.raises(ValueError, match=message):
            run(dram, regs)


def test_malformed_images_are_rejected():
    _, compiled = built("evit")
    image = compiled.image
    weights = decode_image(image).regions["weights"]
    flipped = bytearray(image)
    flipped[weights.offset + 5] ^= 1
    misaligned = bytearray(image)
    struct.pack_into("<I", misaligned, 92 + 8, weights.offset + 8)  # the weights region's offset
    cases = [
        (b"NOTANIMG" + image[8:], r"^not a tokensift memory image \(magic b'NOTANIMG', expected b'TSIFTACC'\)$"),
        (image[:8] + struct.pack("<I", 7) + image[12:], r"^memory image version 7 is not supported \(this reader "
                                                        r"knows 2\)$"),
        (bytes(flipped), r"^checksum mismatch: the header says 0x[0-9a-f]{8}, the image's static regions give "
                         r"0x[0-9a-f]{8} \(a corrupted or edited image\)$"),
        (image[:-64], rf"^the header says 256 header bytes and {len(image)} in all; the image has 256 and "
                      rf"{len(image) - 64}$"),
        (image[:100], r"^a memory image has a 256-byte header; this one is 100 bytes$"),
        (finish_checksum(misaligned), rf"^the weights region \[{weights.offset + 8}, {weights.end + 8}\) is not "
                                      r"64-byte aligned, overlaps the one before it or runs past the image's \d+ "
                                      r"bytes$"),
    ]
    for data, message in cases:
        with pytest.raises(ValueError, match=message):
            decode_image(data)
    with pytest.raises(TypeError, match=r"^a memory image is bytes, not str$"):
        decode_image("image.bin")


def test_registers_the_image_cannot_run_are_rejected():
    _, compiled = built("sait")
    image, regs = compiled.image, compiled.registers
    cases = [
        (regs.replace(method="evit", rule=("topk", "topk"), keep=(3, 3)),
         r"^the image was compiled for sait; its registers may say sait or dense, not evit$"),
        (regs.replace(keep=(0,), threshold=(0,), rule=("mass",)),
         r"^the image has 2 selection stages; the registers set 1$"),
        (regs.replace(logits_base=regs.program_base), r"^LOGITS_BASE 256 would overwrite the image's program, "
                                                      r"weights or constants$"),
        (regs.replace(input_base=len(image) + 1024), rf"^INPUT_BASE {len(image) + 1024} \+ 784 bytes is past the "
                                                     rf"end of the {len(image)}-byte DRAM$"),
        (regs.replace(program_base=len(image) + 64), rf"^PROGRAM_BASE {len(image) + 64} is past the end of the "
                                                     rf"{len(image)}-byte DRAM$"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            run(bytearray(image), bad)
    with pytest.raises(TypeError, match=r"^dram must be a bytearray \(the accelerator writes its logits into it\), "
                                        r"not bytes$"):
        run(image, regs)
    with pytest.raises(TypeError, match=r"^registers must be a Registers, not dict$"):
        run(bytearray(image), {})


def test_compile_and_reference_reject():
    with pytest.raises(TypeError, match=r"^model must be an IntegerViT, not str$"):
        compile_model("model")
    int_model, compiled = built("spvit")
    with pytest.raises(ValueError, match=r"^the integer SPViT stage keeps scores above 0 only; it has no other "
                                         r"threshold$"):
        reference_model(int_model, compiled.registers.replace(threshold=(10, 10)))
    # the sequencer runs it all the same: a register the integer model has no knob for
    got, _ = run_images(compiled.image, compiled.registers.replace(threshold=(10, 10)), images()[:1])
    assert got.shape == (1, 10)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_corrupted_program_is_a_value_error_or_a_run(data):
    """Any instruction replaced by another (real record and weight offsets, or arbitrary ones): the sequencer
    either runs to END or stops with a ValueError, never another exception (the hardware's status flag)."""
    _, compiled = built("dynamicvit")
    program = decode_image(compiled.image).program
    addrs = sorted({i.addr_a for i in program} | {i.addr_b for i in program})
    pc = data.draw(st.integers(0, len(program) - 2))
    addr = st.one_of(st.sampled_from(addrs), st.integers(0, len(compiled.image) + 64))
    ins = Instruction(opcode=data.draw(st.sampled_from([o for o in Opcode if o is not Opcode.END])),
                      dst=data.draw(st.sampled_from(list(Buffer))), src=data.draw(st.sampled_from(list(Buffer))),
                      src2=data.draw(st.sampled_from(list(Buffer))), rows=data.draw(st.sampled_from(list(Rows))),
                      gated=data.draw(st.booleans()), arg=data.draw(st.sampled_from([0, 1, 8, 16, 255])),
                      addr_a=data.draw(addr), addr_b=data.draw(addr), k=data.draw(st.sampled_from([0, 1, 16, 32, 64])),
                      m=data.draw(st.sampled_from([0, 1, 16, 32, 64, 96])))
    mem = decode_image(compiled.image)
    mem.program = [ins if i == pc else old for i, old in enumerate(program)]
    dram = bytearray(mem.to_bytes())
    dram[compiled.registers.input_base:compiled.registers.input_base + 784] = bytes(range(256)) * 3 + bytes(16)
    try:
        result = run(dram, compiled.registers)
    except ValueError:
        return
    assert result.trace[-1]["op"] == "END"


# -- the weights region as the GEMM engine's weight streams --------------------------------------------------------
@pytest.mark.parametrize("gemm_cols, stream_bytes", [(32, 16), (16, 1), (128, 8)])
def test_other_engine_shapes_stay_bit_exact(gemm_cols, stream_bytes):
    """The co-optimizer's engine (4 x 32 at 16-byte beats), a narrow one on a byte-wide bus, one wider than every
    layer but fc1: the same program, other streams, the same logits."""
    int_model, default = built("dynamicvit")
    compiled = compile_model(int_model, gemm_cols=gemm_cols, stream_bytes=stream_bytes)
    mem = decode_image(compiled.image)
    assert mem.gemm == GemmShape(cols=gemm_cols, stream_bytes=stream_bytes)
    assert compiled.manifest["gemm"] == {"cols": gemm_cols, "stream_bytes": stream_bytes, "acc_bits": 32,
                                         "multiplier_bits": 16, "shift_bits": 6,
                                         "record_bytes": {1: 7, 8: 8, 16: 16}[stream_bytes]}
    ops = [i for i in mem.program if i.opcode in (Opcode.PATCH_EMBED, Opcode.GEMM)]
    assert compiled.manifest["weight_streams"] == {
        "count": len(ops), "bytes": sum(mem.gemm.stream_length(i.m, i.k) for i in ops)}
    assert [(i.opcode, i.k, i.m) for i in ops] == [(i.opcode, i.k, i.m) for i in decode_image(default.image).program
                                                   if i.opcode in (Opcode.PATCH_EMBED, Opcode.GEMM)]
    assert compiled.image != default.image
    got, _ = run_images(compiled.image, compiled.registers, images()[:3])
    assert np.array_equal(got, int_model.logits(images()[:3]))


def test_layers_the_engine_cannot_hold_are_named_at_compile_time():
    int_model, _ = built("dynamicvit")
    # the integer model's multipliers are normalised to 16 bits: a 12-bit engine cannot take them
    with pytest.raises(ValueError, match=r"^patch embedding: multiplier \d+ of output channel 0 does not fit the "
                                         r"engine's 12-bit multiplier \(1\.\.4095\)$"):
        compile_model(int_model, multiplier_bits=12)
    model = copy.deepcopy(int_model)
    fc1 = model.blocks[1].fc1
    model.blocks[1] = dataclasses.replace(model.blocks[1], fc1=dataclasses.replace(
        fc1, multipliers=np.where(np.arange(fc1.out_features) == 3, 1 << 16, fc1.multipliers)))
    with pytest.raises(ValueError, match=r"^block 1 fc1: multiplier 65536 of output channel 3 does not fit the "
                                         r"engine's 16-bit multiplier \(1\.\.65535\)$"):
        compile_model(model)
    model = copy.deepcopy(int_model)
    stage = model.blocks[1].selector
    stage.predictor = dataclasses.replace(stage.predictor, fc2=dataclasses.replace(stage.predictor.fc2, acc_bits=24))
    with pytest.raises(ValueError, match=r"^stage 0 predictor fc2: its accumulator is 24 bits, the GEMM engine's "
                                         r"32$"):
        compile_model(model)
    for kwargs, message in (({"gemm_cols": 12}, r"cols \(12\) must be a multiple of stream_bytes \(8\): a weight row "
                                                r"is whole beats"),
                            ({"stream_bytes": 3}, r"stream_bytes must be a power of two \(an AXI data width\), not 3")):
        with pytest.raises(ValueError, match=f"^{message}$"):
            compile_model(int_model, **kwargs)


def _stream_op(image: bytes, nth: int = 0) -> Instruction:
    return [i for i in decode_image(image).program if i.opcode is Opcode.GEMM][nth]


def test_the_sequencer_reads_the_weights_from_the_stream():
    """Weights edited in the stream (the checksum redone) change the logits: they are what the GEMM reads."""
    int_model, compiled = built("evit")
    qkv = _stream_op(compiled.image)
    edited = bytearray(compiled.image)
    edited[qkv.addr_a:qkv.addr_a + qkv.k * 64] = bytes(qkv.k * 64)  # the first column tile's weights: 0
    want = int_model.logits(images()[:2])
    got, _ = run_images(finish_checksum(edited), compiled.registers, images()[:2])
    assert not np.array_equal(got, want)
    model = copy.deepcopy(int_model)
    qkv_layer = model.blocks[0].qkv
    model.blocks[0] = dataclasses.replace(model.blocks[0], qkv=dataclasses.replace(
        qkv_layer, weight=np.where(np.arange(qkv_layer.out_features)[:, None] < 64, 0, qkv_layer.weight)))
    assert np.array_equal(got, model.logits(images()[:2]))  # exactly the layer with those weights


def test_a_corrupted_stream_is_a_malformed_image():
    _, compiled = built("sait")
    image, regs = compiled.image, compiled.registers
    mem = decode_image(image)
    pc = _pc(image, Opcode.GEMM, 1)  # proj: 32 x 32, one column tile of 32 channels and 32 padding
    ins = mem.program[pc]
    records = ins.addr_a + ins.k * 64
    record = linear_from(*decode_record(mem.data, ins.addr_b, Tag.LINEAR), np.zeros((ins.m, ins.k), dtype=np.int64))

    def corrupt(at: int, value: int) -> bytearray:
        data = bytearray(image)
        data[at] = value
        return data

    flipped = corrupt(records + 8 * 5, image[records + 8 * 5] ^ 1)  # channel 5's bias, low bit
    with pytest.raises(ValueError, match=r"^checksum mismatch: .*"):  # as the host finds it
        run(flipped, regs)
    cases = [
        (flipped, rf"^instruction {pc} \(GEMM\): its weight stream's bias differ from its LIN record's \(channel 5: "
                  rf"{int(record.bias[5]) ^ 1} and {int(record.bias[5])}\)$"),
        (corrupt(records + 8 * 7 + 6, image[records + 8 * 7 + 6] + 1),
         rf"^instruction {pc} \(GEMM\): its weight stream's shifts differ from its LIN record's \(channel 7: "
         rf"{int(record.shifts[7]) + 1} and {int(record.shifts[7])}\)$"),
        (corrupt(records + 8 * 40 + 4, 0),
         rf"^instruction {pc} \(GEMM\): the weight stream at offset {ins.addr_a}: the padding channels 32\.\.63 of the "
         r"last column tile are not zero weights with records \(0, 1, 0\)$"),
        (corrupt(records + 8 * 2 + 7, 0x40),
         rf"^instruction {pc} \(GEMM\): the weight stream at offset {ins.addr_a}: the record of channel 2 has bits "
         r"set above its 54 bits of fields$"),
    ]
    for data, message in cases:
        with pytest.raises(ValueError, match=message):
            run(bytearray(finish_checksum(data)), regs)
    # the header's engine shape is checked like every other header field
    bad = bytearray(image)
    struct.pack_into("<I", bad, 132, 12)  # cols 12 with 8-byte beats
    with pytest.raises(ValueError, match=r"^the header's GEMM engine shape is invalid: cols \(12\) must be a multiple "
                                         r"of stream_bytes \(8\): a weight row is whole beats$"):
        decode_image(finish_checksum(bad))
