"""The whole accelerator in Verilator, driven as a host drives it (AXI4-Lite registers, DRAM over AXI4):
its checks of the memory image, the registers and the program stop an image with the right fault code and
pc, raise the interrupt, and never hang the bus; a later image on the same design runs."""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "hw"))
from accel_models import built, config_for  # noqa: E402

from tokensift.hw.accel.regmap import Fault  # noqa: E402
from tokensift.quant.accel.image import decode_image  # noqa: E402
from tokensift.quant.accel.isa import Opcode  # noqa: E402

pytestmark = pytest.mark.sim


def _dram_and_registers(variant="dense"):
    _, compiled = built(variant)
    regs = compiled.registers
    image = compiled.image
    dram = bytearray(max(regs.memory_base + len(image), regs.logits_base + 64))
    dram[regs.memory_base:regs.memory_base + len(image)] = image
    return dram, regs


def test_faults_stop_the_image_with_their_code_and_pc():
    from tokensift.sim.accel_runs import run_accelerator

    cfg = config_for("dense")
    dram, regs = _dram_and_registers()
    words = regs.encode()
    mem = decode_image(bytes(dram[regs.memory_base:]))
    prog = regs.program_base
    first_unsupported = next(pc for pc, ins in enumerate(mem.program) if ins.opcode is not Opcode.RESIDUAL_ADD)
    # a second copy of the image with a reserved bit set in instruction 0, and one with a bad magic
    bad_prog = bytearray(dram)
    bad_prog[prog + 2] |= 0x80
    bad_magic = bytearray(dram)
    bad_magic[regs.memory_base] ^= 0xFF
    off = len(dram) + (-len(dram) % 64)
    dram2 = bytearray(dram) + bytes(off - len(dram)) + bad_prog + bytes(-len(bad_prog) % 64) + bad_magic
    off2 = off + len(bad_prog) + (-len(bad_prog) % 64)
    runs = [
        {"registers": words},  # this design has only the residual engine: the first other op is unsupported
        {"registers": {**words, 0x18: words[0x18] + 4}},  # a misaligned MEMORY_BASE
        {"registers": {**words, 0x10: 2}},  # a method the image was not compiled for
        {"registers": {**words, 0x18: off + regs.memory_base, 0x1C: off + prog}},
        {"registers": {**words, 0x18: off2 + regs.memory_base, 0x1C: off2 + prog}},
        {"registers": words},
    ]
    report = run_accelerator(cfg, dram2, runs, latency=6, pause=0.2)
    got = [(r["done"], r["fault"], r["fault_pc"]) for r in report["runs"]]
    assert got == [(3, Fault.UNSUPPORTED, first_unsupported), (3, Fault.REGISTERS, 0), (3, Fault.REGISTERS, 0),
                   (3, Fault.PROGRAM, 0), (3, Fault.IMAGE, 0), (3, Fault.UNSUPPORTED, first_unsupported)]
    assert [r["register_error"] for r in report["runs"]] == [0] * len(runs)
    assert all(r["irq_cleared"] for r in report["runs"])
    assert all(r["cycles"] > 0 for r in report["runs"])
