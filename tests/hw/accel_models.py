"""Compiled models for the accelerator's RTL tests: a random TINY model of each method (calibrated on spread
MNIST images), its memory image in a DRAM, and the reference sequencer's state around every instruction."""

from __future__ import annotations

import functools
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "quant"))  # the quant tests' models
from stage_models import TINY, calib_batches, images_labels  # noqa: E402

from tokensift.hw.accel.config import AccelConfig  # noqa: E402
from tokensift.quant.accel import compile_model, decode_image  # noqa: E402
from tokensift.quant.accel.executor import walk  # noqa: E402
from tokensift.quant.accel.image import input_bytes, quantize_input  # noqa: E402
from tokensift.quant.integer_model import IntegerViT  # noqa: E402

__all__ = ["VARIANTS", "built", "config_for", "steps", "first_step"]

#: (method, keep ratio, float selector attributes)
VARIANTS = {
    "dense": ("none", None, {}),
    "dynamicvit": ("dynamicvit", 0.7, {}),
    "evit": ("evit", 0.7, {}),
    "asvit": ("asvit", 0.7, {}),
    "sait": ("sait", 0.5, {}),
    "spvit": ("spvit", 0.7, {}),
}


@functools.cache
def _mnist():
    from tokensift.sw.data import load_mnist

    return load_mnist()


@functools.cache
def _int_model(variant: str):
    from tokensift.sw import create_model

    method, keep, attrs = VARIANTS[variant]
    torch.manual_seed(0)
    model = create_model("vit_mnist_patch4_28", method=method, keep_ratio=keep, **TINY).eval()
    for _, sel in model.stage_selectors():
        for name, value in attrs.items():
            setattr(sel, name, value)
    return IntegerViT.from_float(model, calib_batches(_mnist()[0], 1, 50), num_batches=1)


@functools.cache
def built(variant: str, gemm_cols: int = 64):
    """``(int_model, compiled)`` of a random TINY model of the variant (once per process), its weight streams
    laid out for a GEMM engine of ``gemm_cols`` columns."""
    int_model = _int_model(variant)
    return int_model, compile_model(int_model, gemm_cols=gemm_cols)


def config_for(variant: str, **shape) -> AccelConfig:
    """An accelerator for the variant's envelope (``shape``: banks, lanes, gemm_cols)."""
    return AccelConfig(envelope=decode_image(built(variant)[1].image).envelope, **shape)


@functools.cache
def steps(variant: str, image: int = 0, gemm_cols: int = 64):
    """``(dram, registers, [(pc, ins, before, after, entry), ...])`` of one test image through the variant."""
    _, compiled = built(variant, gemm_cols)
    regs = compiled.registers
    mem = decode_image(compiled.image)
    x = images_labels(_mnist()[1], image + 1, start=100)[0][image:image + 1]
    codes = next(iter(quantize_input(mem, x)))
    data = input_bytes(codes)
    size = max(regs.memory_base + len(compiled.image), regs.input_base + len(data), regs.logits_base + 64)
    dram = bytearray(size)
    dram[regs.memory_base:regs.memory_base + len(compiled.image)] = compiled.image
    dram[regs.input_base:regs.input_base + len(data)] = data
    return bytes(dram), regs, list(walk(bytearray(dram), regs))


def first_step(variant: str, opcode, nth: int = 0, image: int = 0):
    """The ``nth`` executed (not skipped) step of ``opcode``."""
    found = [s for s in steps(variant, image)[2] if s[1].opcode == opcode and not s[4].get("skipped")]
    return found[nth]


def rows_of(before, ins) -> tuple[int, int]:
    """The run-time ``(start, n)`` of ``ins``'s source rows, as the sequencer computes them."""
    from tokensift.quant.accel.isa import Rows

    n = before.count[ins.src]
    start = {Rows.ALL: 0, Rows.CLASS: 0, Rows.PATCHES: 1, Rows.CANDIDATES: before.protected}[ins.rows]
    stop = min(n, 1) if ins.rows == Rows.CLASS else n
    return start, stop - start

