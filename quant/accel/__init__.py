"""The whole-model accelerator's software contract: program, memory image, run-time registers, compiler and
the reference sequencer (see docs/accelerator.md).

``compile_model(IntegerViT)`` lays out the memory image and default registers; ``run`` / ``run_images``
execute it from DRAM bytes bit-exactly against :class:`~tokensift.quant.integer_model.IntegerViT`.
"""

from tokensift.quant.accel.compiler import Compiled, compile_model
from tokensift.quant.accel.executor import Result, run, run_images
from tokensift.quant.accel.image import Envelope, MemoryImage, decode_image, quantize_input
from tokensift.quant.accel.isa import Buffer, Instruction, Opcode, Rows
from tokensift.quant.accel.registers import METHODS, RULES, Registers
from tokensift.quant.accel.stream import GemmShape, decode_stream, encode_stream

__all__ = ["compile_model", "Compiled", "run", "run_images", "Result", "decode_image", "MemoryImage", "Envelope",
           "quantize_input", "Instruction", "Opcode", "Buffer", "Rows", "Registers", "METHODS", "RULES", "GemmShape",
           "encode_stream", "decode_stream"]
