"""The accelerator's instruction encoding, constant records and run-time registers: round trips and rejections."""

from __future__ import annotations

import re
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokensift.quant.accel.isa import (
    INSTRUCTION_BYTES,
    Buffer,
    Instruction,
    Opcode,
    Rows,
    decode_program,
    encode_program,
)
from tokensift.quant.accel.records import Tag, decode_record, encode_record, gelu_from, gelu_record
from tokensift.quant.accel.registers import MAX_STAGES, METHOD_RULES, METHODS, REGISTER_MAP, RULES, Registers
from tokensift.quant.gelu import GeluParams

u32 = st.integers(0, (1 << 32) - 1)
u16 = st.integers(0, (1 << 16) - 1)
instructions = st.builds(Instruction, opcode=st.sampled_from(list(Opcode)), dst=st.sampled_from(list(Buffer)),
                         src=st.sampled_from(list(Buffer)), src2=st.sampled_from(list(Buffer)),
                         rows=st.sampled_from(list(Rows)), gated=st.booleans(), arg=st.integers(0, 255),
                         addr_a=u32, addr_b=u32, k=u16, m=u16)


@settings(max_examples=200, deadline=None)
@given(instructions)
def test_instruction_round_trips(ins):
    data = ins.encode()
    assert len(data) == INSTRUCTION_BYTES
    assert Instruction.decode(data) == ins
    assert Instruction.from_words(struct.unpack("<4I", data)) == ins


def test_instruction_fields_sit_where_the_docs_say():
    ins = Instruction(Opcode.GEMM, dst=Buffer.F, src=Buffer.H, src2=Buffer.T, rows=Rows.CANDIDATES, gated=True,
                      arg=16, addr_a=0x1234, addr_b=0xABCD0040, k=64, m=128)
    w0, w1, w2, w3 = ins.words()
    assert w0 == 0x04 | (5 << 8) | (1 << 12) | (4 << 16) | (2 << 20) | (1 << 22) | (16 << 24)
    assert (w1, w2, w3) == (0x1234, 0xABCD0040, 64 | (128 << 16))


@settings(max_examples=50, deadline=None)
@given(st.lists(instructions.filter(lambda i: i.opcode is not Opcode.END), max_size=20))
def test_program_round_trips(body):
    program = [*body, Instruction(Opcode.END)]
    assert decode_program(encode_program(program)) == program


@pytest.mark.parametrize("words, message", [
    ((0x00, 0, 0, 0), r"opcode 0 is not a known Opcode"),
    ((0x0B, 0, 0, 0), r"opcode 11 is not a known Opcode"),
    ((0x04 | (9 << 8), 0, 0, 0), r"dst 9 is not a known Buffer"),
    ((0x04 | (15 << 12), 0, 0, 0), r"src 15 is not a known Buffer"),
    ((0x04 | (1 << 23), 0, 0, 0), r"instruction word 0 0x00800004 has reserved bit 23 set"),
    ((0x04, 0, 0), r"an instruction has 4 words, not 3"),
])
def test_malformed_instructions_are_rejected(words, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        Instruction.from_words(words)


def test_malformed_programs_are_rejected():
    gemm = Instruction(Opcode.GEMM)
    with pytest.raises(ValueError, match=r"^the program has no END instruction$"):
        decode_program(gemm.encode() * 3)
    with pytest.raises(ValueError, match=r"^a program is a multiple of 16 bytes, not 20$"):
        decode_program(bytes(20))
    with pytest.raises(ValueError, match=r"^instruction 1: opcode 0 is not a known Opcode$"):
        decode_program(gemm.encode() + bytes(16))
    with pytest.raises(ValueError, match=r"^a program must end with one END instruction, and only there "
                                         r"\(END at \[0, 2\] of 3 instructions\)$"):
        encode_program([Instruction(Opcode.END), gemm, Instruction(Opcode.END)])
    with pytest.raises(TypeError, match=r"^program must be a list of Instructions$"):
        encode_program([gemm.encode()])


@pytest.mark.parametrize("fields, exc, message", [
    ({"arg": 256}, ValueError, r"arg must be between 0 and 255, not 256"),
    ({"k": 1 << 16}, ValueError, r"k must be between 0 and 65535, not 65536"),
    ({"addr_a": -1}, ValueError, r"addr_a must be between 0 and 4294967295, not -1"),
    ({"gated": 1}, TypeError, r"gated must be a bool, not int"),
    ({"dst": 2.0}, TypeError, r"dst must be an integer \(Buffer\), not float"),
])
def test_instruction_fields_are_validated(fields, exc, message):
    with pytest.raises(exc, match=f"^{message}$"):
        Instruction(Opcode.GEMM, **fields)


# -- records -------------------------------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(m=st.integers(0, 40), seed=st.integers(0, 2**31))
def test_linear_record_round_trips(m, seed):
    rng = np.random.default_rng(seed)
    scalars = {"m": m, "k": 7, "in_bits": 8, "w_bits": 8, "acc_bits": 32, "out_bits": 16}
    arrays = {"bias": rng.integers(-2**31, 2**31, m), "multipliers": rng.integers(1, 2**31, m),
              "shifts": rng.integers(0, 63, m)}
    data = bytes(8) + encode_record(Tag.LINEAR, scalars, arrays)
    got_s, got_a = decode_record(data, 8, Tag.LINEAR)
    assert got_s == scalars
    assert all(np.array_equal(got_a[k], v) for k, v in arrays.items())


def test_gelu_params_round_trip_through_a_record():
    p = GeluParams.from_scales(0.05, 0.02)
    scalars, arrays = gelu_record(p, "gelu")
    got = gelu_from(*decode_record(encode_record(Tag.GELU, scalars, arrays), 0, Tag.GELU))
    assert (got.in_bits, got.pre_shift, got.clip, got.one, got.multiplier, got.shift, got.out) == \
        (p.in_bits, p.pre_shift, p.clip, p.one, p.multiplier, p.shift, p.out)


def test_malformed_records_are_rejected():
    scalars = {"in_bits": 8, "pre_shift": 1, "clip": 3, "one": 9, "multiplier": 5, "shift": 7, "out_bits": 8}
    data = bytearray(encode_record(Tag.GELU, scalars))
    with pytest.raises(ValueError, match=r"^offset 0 holds a GELU record, not a LIN record$"):
        decode_record(data, 0, Tag.LINEAR)
    bad = bytearray(data)
    struct.pack_into("<I", bad, 4, len(data) + 8)
    with pytest.raises(ValueError, match=r"^the GELU record at offset 0 says it is 80 bytes; its fields make it 72, "
                                         r"past the end of the image$"):
        decode_record(bad, 0, Tag.GELU)
    with pytest.raises(ValueError, match=r"outside the image or not 8-byte aligned$"):
        decode_record(data, 4, Tag.GELU)
    with pytest.raises(ValueError, match=r"^LIN record: array shifts does not fit uint8$"):
        encode_record(Tag.LINEAR, {"m": 1, "k": 1, "in_bits": 8, "w_bits": 8, "acc_bits": 32, "out_bits": 8},
                      {"bias": [0], "multipliers": [1], "shifts": [300]})


# -- registers -----------------------------------------------------------------------------------------------
@st.composite
def registers(draw):
    method = draw(st.sampled_from(METHODS))
    n = draw(st.integers(0, MAX_STAGES))
    rules = tuple(draw(st.sampled_from(METHOD_RULES[method])) for _ in range(n))
    keep = tuple(draw(st.integers(1, (1 << 16) - 1)) for _ in range(n))
    thr = tuple(draw(u16) for _ in range(n))
    addr = st.integers(0, (1 << 26) - 1).map(lambda a: a * 64)
    return Registers(method=method, keep=keep, threshold=thr, rule=rules, density=draw(st.integers(1, 1 << 15)),
                     memory_base=draw(addr), program_base=draw(addr), input_base=draw(addr), logits_base=draw(addr))


@settings(max_examples=200, deadline=None)
@given(registers())
def test_registers_round_trip_through_the_register_map_and_json(regs):
    words = regs.encode()
    assert set(words) == {off for off, _ in REGISTER_MAP.values()}
    widths = dict(REGISTER_MAP.values())
    assert all(0 <= v < 1 << widths[off] for off, v in words.items())
    assert Registers.decode(words, regs.stages) == regs
    assert Registers.from_json(regs.to_json()) == regs


def test_register_map_has_no_overlaps():
    offsets = [off for off, _ in REGISTER_MAP.values()]
    assert len(set(offsets)) == len(offsets) and all(off % 4 == 0 for off in offsets)
    assert min(offsets) == 0x10  # 0x00-0x0C belong to the control block


@pytest.mark.parametrize("fields, message", [
    ({"method": "tome"}, r"method must be one of dense, evit, dynamicvit, spvit, asvit, sait, not 'tome'"),
    ({"density": 0}, r"density must be between 1 and 32768, not 0"),
    ({"density": 40000}, r"density must be between 1 and 32768, not 40000"),
    ({"method": "evit", "keep": (70000,), "threshold": (0,), "rule": ("topk",)},
     r"keep\[0\] must be between 0 and 65535, not 70000"),
    ({"method": "evit", "keep": (0,), "threshold": (0,), "rule": ("topk",)},
     r"keep\[0\] must be at least 1 for a top-k stage, not 0"),
    ({"method": "asvit", "keep": (0,), "threshold": (1 << 16,), "rule": ("threshold",)},
     r"threshold\[0\] must be between 0 and 65535, not 65536"),
    ({"method": "sait", "keep": (0,), "threshold": (0,), "rule": ("topk",)},
     r"rule\[0\] 'topk' is not a rule of sait \(its stages run mass\)"),
    ({"method": "evit", "keep": (1, 2), "threshold": (0,), "rule": ("topk",)},
     r"keep, threshold and rule need one entry per stage each, not 2, 1 and 1"),
    ({"keep": (1,) * 9, "threshold": (0,) * 9, "rule": ("topk",) * 9},
     r"at most 8 selection stages have registers, not 9"),
    ({"input_base": 100}, r"input_base must be a multiple of 64 \(an AXI burst boundary\), not 100"),
    ({"logits_base": 1 << 32}, r"logits_base must be between 0 and 4294967295, not 4294967296"),
])
def test_out_of_range_registers_raise(fields, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        Registers(**fields)


def test_register_words_out_of_range_raise():
    with pytest.raises(ValueError, match=r"^register 0x10 is 3 bits wide; 0x8 sets bits above them$"):
        Registers.decode({0x10: 8}, 0)
    with pytest.raises(ValueError, match=r"^METHOD 6 is not a method \(0..5\)$"):
        Registers.decode({0x10: 6}, 0)
    with pytest.raises(ValueError, match=r"^STAGE_RULE\[0\] 3 is not a rule \(0..2\)$"):
        Registers.decode({0x10: 1, 0x80: 3}, 1)
    with pytest.raises(ValueError, match=r"^no run-time register at offset 0x4$"):
        Registers.decode({0x04: 1}, 0)
    with pytest.raises(ValueError, match=re.escape("unknown register settings: speed")):
        Registers.from_json({"speed": 2})
    assert RULES == ("topk", "threshold", "mass")
