"""Several compiled memory images in one DRAM, each with its registers moved to where it sits: what a host does
to switch models (methods) on one generated design without reloading DRAM."""

from __future__ import annotations

from dataclasses import fields

from tokensift.quant.accel.image import Envelope, decode_image
from tokensift.quant.accel.registers import ALIGN

__all__ = ["place_images", "covering_envelope", "relocate"]


def relocate(registers, offset: int):
    """``registers`` with every base address moved by ``offset`` bytes (a multiple of 64)."""
    if offset % ALIGN:
        raise ValueError(f"offset must be a multiple of {ALIGN}, not {offset}")
    return registers.replace(memory_base=registers.memory_base + offset,
                             program_base=registers.program_base + offset,
                             input_base=registers.input_base + offset, logits_base=registers.logits_base + offset)


def place_images(images: list[bytes]) -> tuple[bytearray, list[int]]:
    """One DRAM holding every image at a 64-byte aligned offset; ``(dram, offsets)``."""
    dram = bytearray()
    offsets = []
    for image in images:
        dram += bytes(-len(dram) % ALIGN)
        offsets.append(len(dram))
        dram += image
    dram += bytes(-len(dram) % ALIGN)
    return dram, offsets


def covering_envelope(images: list[bytes]) -> Envelope:
    """The smallest envelope covering every image's (:data:`tokensift.hw.accel.sequencer.ENVELOPE_RULES`):
    the largest of each ``le`` field; ``eq`` fields must agree (ValueError otherwise)."""
    from tokensift.hw.accel.sequencer import ENVELOPE_RULES

    envs = [decode_image(image).envelope for image in images]
    values = {}
    for f in fields(Envelope):
        got = {getattr(e, f.name) for e in envs}
        rule = ENVELOPE_RULES[f.name]
        if rule == "eq" and len(got) > 1:
            raise ValueError(f"the images' {f.name} differ ({sorted(got)}): no one design runs them all")
        values[f.name] = max(got)
    return Envelope(**values)
