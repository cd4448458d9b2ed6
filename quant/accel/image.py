"""The memory image: one DRAM byte array with the header, the program, the weights, the constants, the input
and the logits.

Layout (every region starts at a multiple of :data:`~tokensift.quant.accel.registers.ALIGN` = 64 bytes, an
AXI burst boundary; addresses inside are byte offsets from the image's base, ``MEMORY_BASE``):

=============  ==============================================================================================
region         contents
=============  ==============================================================================================
header         256 bytes, below
``program``    the instructions (:mod:`tokensift.quant.accel.isa`), 16 bytes each, ending with END
``weights``    every GEMM-type op's layer as the GEMM engine's weight stream (:mod:`~tokensift.quant.accel.stream`:
               per column tile its int8 weights, then its channels' bias/multiplier/shift records, exactly the
               beats the engine takes, so one contiguous read feeds it), each 64-aligned; SPViT's nested
               predictor weights stay plain channel-major ``[m][k]`` int8 matrices
``constants``  the records (:mod:`tokensift.quant.accel.records`): int32 biases, multipliers and shifts,
               LayerNorm gamma/beta and constants, GELU, attention/softmax and sigmoid constants, the
               position embedding, the selection stages' constants; each 64-aligned
``input``      one image's int8 codes in patch order, ``patches x (in_chans patch_size**2)`` (the host
               writes it: :func:`quantize_input`, as :meth:`IntegerViT.embed` quantizes)
``logits``     ``classes`` int16 logits (the accelerator writes them)
=============  ==============================================================================================

Header (little-endian): ``magic`` (8 bytes, :data:`MAGIC`), ``version`` u32, ``header_bytes`` u32,
``total_bytes`` u32, ``checksum`` u32 (CRC-32 of the header with this field 0, the program, the weights and
the constants: everything but the input and the logits, which change per image), ``method`` u32 (the
compiled method, an index of :data:`~tokensift.quant.accel.registers.METHODS`), 4 bytes reserved,
``input_scale`` f64 (the real value of one input code), the envelope (:class:`Envelope`, 13 u32), the
five regions' ``offset`` and ``size`` u32 pairs in the order above, then the GEMM engine's shape the weight
streams are encoded for (:class:`~tokensift.quant.accel.stream.GemmShape`: ``cols``, ``stream_bytes``,
``acc_bits``, ``multiplier_bits``, ``shift_bits``; 5 u32); the rest of the 256 bytes is 0.
:func:`decode_image` checks all of it; :meth:`MemoryImage.to_bytes` of a decoded image gives the same bytes.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import astuple, dataclass, fields

import numpy as np

from tokensift.checks import check_int
from tokensift.quant.accel.isa import INSTRUCTION_BYTES, Instruction, decode_program, encode_program
from tokensift.quant.accel.registers import ALIGN, MAX_STAGES, METHODS
from tokensift.quant.accel.stream import GemmShape, StreamLayer, decode_stream

__all__ = ["MAGIC", "VERSION", "HEADER_BYTES", "REGIONS", "Envelope", "Region", "MemoryImage", "decode_image",
           "align", "quantize_input", "input_bytes"]

MAGIC = b"TSIFTACC"
#: 2: the weights region holds GEMM weight streams, the header the engine's shape (1: channel-major weights)
VERSION = 2
HEADER_BYTES = 256
REGIONS = ("program", "weights", "constants", "input", "logits")
_FIXED = struct.Struct("<8sIIIII4xd")
_CHECKSUM_AT = 20


def align(n: int, to: int = ALIGN) -> int:
    return (n + to - 1) // to * to


@dataclass(frozen=True)
class Envelope:
    """The model envelope the image (and the generated design) is built for."""

    max_tokens: int      #: rows of every token buffer (``1 + patches`` plus tokens a method may add)
    width: int           #: embedding width ``C``
    heads: int
    mlp_hidden: int
    depth: int
    classes: int
    patch_size: int
    in_chans: int
    patches: int         #: patch tokens of one image
    res_bits: int        #: the residual stream's width
    prob_frac: int       #: fractional bits of the attention probabilities (the class rows)
    stages: int          #: selection stages in the program
    head_dim: int

    def __post_init__(self):
        for f in fields(self):
            check_int(f.name, getattr(self, f.name), low=0 if f.name == "stages" else 1, high=(1 << 16) - 1)
        if self.stages > MAX_STAGES:
            raise ValueError(f"stages must be at most {MAX_STAGES}, not {self.stages}")
        if self.heads * self.head_dim != self.width:
            raise ValueError(f"heads x head_dim must be the width {self.width}, not {self.heads} x {self.head_dim}")
        if not 8 <= self.res_bits <= 16:
            raise ValueError(f"res_bits must be between 8 and 16, not {self.res_bits}")
        if self.max_tokens < self.patches + 1:
            raise ValueError(f"max_tokens must hold the class token and {self.patches} patches, not "
                             f"{self.max_tokens}")

    @property
    def patch_dim(self) -> int:
        return self.in_chans * self.patch_size**2

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_ENVELOPE = struct.Struct(f"<{len(fields(Envelope))}I")
_REGIONS = struct.Struct(f"<{2 * len(REGIONS)}I")
_GEMM = struct.Struct(f"<{len(GemmShape().as_tuple())}I")
_GEMM_AT = _FIXED.size + _ENVELOPE.size + _REGIONS.size


@dataclass(frozen=True)
class Region:
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass
class MemoryImage:
    """A decoded memory image: the header's fields, the regions, the program and the bytes."""

    envelope: Envelope
    method: str
    input_scale: float
    gemm: GemmShape
    regions: dict[str, Region]
    program: list[Instruction]
    data: bytes

    def to_bytes(self) -> bytes:
        """The image's bytes, rebuilt from the decoded header and program over the stored regions."""
        out = bytearray(self.data)
        out[:HEADER_BYTES] = header_bytes(self.envelope, self.method, self.input_scale, self.gemm, self.regions,
                                          len(out))
        prog = encode_program(self.program)
        if len(prog) != self.regions["program"].size:
            raise ValueError(f"the program is {len(prog)} bytes; its region holds {self.regions['program'].size}")
        out[self.regions["program"].offset:self.regions["program"].offset + len(prog)] = prog
        return finish_checksum(out)

    def weights(self, offset: int, m: int, k: int) -> np.ndarray:
        """The ``[m][k]`` int8 weights at ``offset`` (inside the weights region)."""
        r = self.regions["weights"]
        if offset % ALIGN or not r.offset <= offset <= offset + m * k <= r.end:
            raise ValueError(f"weights of {m} x {k} at offset {offset} are not 64-byte aligned inside the "
                             f"weights region [{r.offset}, {r.end})")
        return np.frombuffer(self.data, dtype=np.int8, count=m * k, offset=offset).reshape(m, k).astype(np.int64)

    def stream(self, offset: int, m: int, k: int) -> StreamLayer:
        """The ``m`` x ``k`` layer decoded from the weight stream at ``offset`` (inside the weights region): what
        the GEMM engine reads, ``gemm.stream_length(m, k)`` bytes."""
        r = self.regions["weights"]
        length = self.gemm.stream_length(m, k)
        if offset % ALIGN or not r.offset <= offset <= offset + length <= r.end:
            raise ValueError(f"the weight stream of {m} x {k} ({length} bytes) at offset {offset} is not 64-byte "
                             f"aligned inside the weights region [{r.offset}, {r.end})")
        try:
            return decode_stream(self.data[offset:offset + length], m=m, k=k, shape=self.gemm)
        except ValueError as exc:
            raise ValueError(f"the weight stream at offset {offset}: {exc}") from None

    def constants_at(self, offset: int) -> None:
        r = self.regions["constants"]
        if not r.offset <= offset < r.end:
            raise ValueError(f"constant record offset {offset} is outside the constants region [{r.offset}, {r.end})")

    @property
    def checksum(self) -> int:
        return struct.unpack_from("<I", self.data, _CHECKSUM_AT)[0]


def header_bytes(env: Envelope, method: str, input_scale: float, gemm: GemmShape, regions: dict[str, Region],
                 total: int) -> bytes:
    head = _FIXED.pack(MAGIC, VERSION, HEADER_BYTES, total, 0, METHODS.index(method), float(input_scale))
    head += _ENVELOPE.pack(*astuple(env))
    head += _REGIONS.pack(*(v for name in REGIONS for v in (regions[name].offset, regions[name].size)))
    head += _GEMM.pack(*gemm.as_tuple())
    return head + bytes(HEADER_BYTES - len(head))


def _checksum(data) -> int:
    regions = _REGIONS.unpack_from(data, _FIXED.size + _ENVELOPE.size)
    static_end = regions[2 * REGIONS.index("constants")] + regions[2 * REGIONS.index("constants") + 1]
    head = bytearray(data[:HEADER_BYTES])
    head[_CHECKSUM_AT:_CHECKSUM_AT + 4] = bytes(4)
    return zlib.crc32(bytes(data[HEADER_BYTES:static_end]), zlib.crc32(bytes(head)))


def finish_checksum(data: bytearray) -> bytes:
    struct.pack_into("<I", data, _CHECKSUM_AT, _checksum(data))
    return bytes(data)


def decode_image(data) -> MemoryImage:
    """The :class:`MemoryImage` in ``data`` (bytes); a malformed image raises ValueError naming what is wrong."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"a memory image is bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER_BYTES:
        raise ValueError(f"a memory image has a {HEADER_BYTES}-byte header; this one is {len(data)} bytes")
    magic, version, head_bytes, total, checksum, method, input_scale = _FIXED.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"not a tokensift memory image (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise ValueError(f"memory image version {version} is not supported (this reader knows {VERSION})")
    if head_bytes != HEADER_BYTES or total != len(data):
        raise ValueError(f"the header says {head_bytes} header bytes and {total} in all; the image has "
                         f"{HEADER_BYTES} and {len(data)}")
    if method >= len(METHODS):
        raise ValueError(f"the header's method {method} is not a method (0..{len(METHODS) - 1})")
    if not (np.isfinite(input_scale) and input_scale > 0):
        raise ValueError(f"the header's input scale must be a positive finite number, not {input_scale}")
    env = Envelope(*_ENVELOPE.unpack_from(data, _FIXED.size))
    values = _REGIONS.unpack_from(data, _FIXED.size + _ENVELOPE.size)
    regions = {name: Region(values[2 * i], values[2 * i + 1]) for i, name in enumerate(REGIONS)}
    try:
        gemm = GemmShape(**dict(zip((f.name for f in fields(GemmShape)), _GEMM.unpack_from(data, _GEMM_AT), strict=True)))
    except ValueError as exc:
        raise ValueError(f"the header's GEMM engine shape is invalid: {exc}") from None
    if any(data[_GEMM_AT + _GEMM.size:HEADER_BYTES]):
        raise ValueError("the header's reserved bytes must be 0")
    previous = HEADER_BYTES
    for name in REGIONS:
        r = regions[name]
        if r.offset % ALIGN or r.offset < previous or r.end > len(data):
            raise ValueError(f"the {name} region [{r.offset}, {r.end}) is not 64-byte aligned, overlaps the one "
                             f"before it or runs past the image's {len(data)} bytes")
        previous = r.end
    if regions["input"].size != env.patches * env.patch_dim or regions["logits"].size != 2 * env.classes:
        raise ValueError(f"the input and logits regions must hold {env.patches} x {env.patch_dim} int8 codes "
                         f"and {env.classes} int16 logits, not {regions['input'].size} and {regions['logits'].size} "
                         "bytes")
    if regions["program"].size % INSTRUCTION_BYTES:
        raise ValueError(f"the program region is {regions['program'].size} bytes, not a multiple of "
                         f"{INSTRUCTION_BYTES}")
    if _checksum(data) != checksum:
        raise ValueError(f"checksum mismatch: the header says {checksum:#010x}, the image's static regions give "
                         f"{_checksum(data):#010x} (a corrupted or edited image)")
    p = regions["program"]
    program = decode_program(data[p.offset:p.end])
    if len(program) * INSTRUCTION_BYTES != p.size:
        raise ValueError(f"the program's END is instruction {len(program) - 1}, but the region holds "
                         f"{p.size // INSTRUCTION_BYTES}")
    return MemoryImage(envelope=env, method=METHODS[method], input_scale=float(input_scale), gemm=gemm,
                       regions=regions, program=program, data=data)


# -- the host side of the input --------------------------------------------------------------------------
def quantize_input(image: MemoryImage, images, *, counter=None) -> np.ndarray:
    """Float images (B, in_chans, H, W) -> (B, patches, patch_dim) int8 codes in patch order, exactly as
    :meth:`tokensift.quant.integer_model.IntegerViT.embed` quantizes them (at the header's input scale)."""
    from tokensift.quant.qparams import quantize_tensor

    x = images.detach().to("cpu").double().numpy() if hasattr(images, "detach") else np.asarray(images, float)
    env = image.envelope
    p = env.patch_size
    if x.ndim != 4 or x.shape[1] != env.in_chans or x.shape[2] % p or x.shape[3] % p \
            or (x.shape[2] // p) * (x.shape[3] // p) != env.patches:
        raise ValueError(f"images must have shape (batch, {env.in_chans}, height, width) with {env.patches} "
                         f"patches of {p}x{p}, not {x.shape}")
    codes = quantize_tensor(x, image.input_scale, counter=counter, site="input")
    B, C, Hh, W = x.shape
    return codes.reshape(B, C, Hh // p, p, W // p, p).transpose(0, 2, 4, 1, 3, 5).reshape(B, env.patches, -1)


def input_bytes(codes: np.ndarray) -> bytes:
    """One image's (patches, patch_dim) int8 codes as the input region's bytes."""
    c = np.asarray(codes)
    if c.ndim != 2 or not np.issubdtype(c.dtype, np.integer) or (c.size and (c.min() < -128 or c.max() > 127)):
        raise ValueError("input codes must be a (patches, patch_dim) array of int8 values")
    return c.astype(np.int8).tobytes()
