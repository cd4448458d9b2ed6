"""The accelerator's program: fixed-width instructions the sequencer walks from DRAM, layer by layer.

Every instruction is **four little-endian 32-bit words** (16 bytes, so four fit one 64-byte AXI beat group):

======  =======  ==========================================================================================
word    bits     field
======  =======  ==========================================================================================
0       7:0      ``opcode`` (:class:`Opcode`)
0       11:8     ``dst``: destination token buffer (:class:`Buffer`)
0       15:12    ``src``: first source buffer
0       19:16    ``src2``: second source buffer (residual add's other operand, attention's class rows, the
                 selection step's class rows)
0       21:20    ``rows``: which run-time rows of ``src`` the op reads (:class:`Rows`)
0       22       ``gated``: skipped when the method register says ``dense`` (a pruning stage's own ops)
0       23       reserved, 0
0       31:24    ``arg``: output width in bits (GEMM, LayerNorm, GELU, residual add, logits), head index
                 (attention) or selection-stage index (select)
1       31:0     ``addr_a``: byte offset from the memory base of the op's weights (GEMM) or its constant
                 record (LayerNorm, GELU, attention, position embedding, select)
2       31:0     ``addr_b``: byte offset of a GEMM's bias / multiplier / shift record (0 otherwise)
3       15:0     ``k``: inner dimension (GEMM), head dimension (attention), first averaged column (token
                 mean), patches (position embedding)
3       31:16    ``m``: output channels / row width
======  =======  ==========================================================================================

The **token count is in no instruction**: it is the sequencer's run-time count of rows in each buffer,
set by the op that last wrote it (the patch embedding sets ``1 + patches``; a selection step shrinks the
residual buffer), so every op after a pruning stage runs over fewer rows. ``rows`` picks a run-time
sub-range of the source: every row, the class token only (the head), the candidates after the protected
tokens (DynamicViT's predictor) or every patch token (SPViT's predictors).

The on-chip token buffers (:data:`BUFFERS`) are sized from the model envelope
(:class:`tokensift.quant.accel.image.Envelope`): ``max_tokens`` rows of the widths in :func:`buffer_shapes`.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from tokensift.checks import check_int

__all__ = ["Opcode", "Buffer", "Rows", "Instruction", "INSTRUCTION_BYTES", "WORDS", "BUFFERS", "buffer_shapes",
           "encode_program", "decode_program"]

WORDS = 4
INSTRUCTION_BYTES = 4 * WORDS


class Opcode(enum.IntEnum):
    """What one instruction does (the sequencer's dispatch)."""

    PATCH_EMBED = 0x01    #: GEMM of the input region's int8 patches into ``dst`` rows 1.. (residual format)
    POS_EMBED = 0x02      #: ``dst[1:] += pos`` (saturating), ``dst[0] = cls + pos[0]``; starts the token count
    LAYERNORM = 0x03      #: integer LayerNorm of ``src`` rows into ``dst``
    GEMM = 0x04           #: ``dst = requantize(src @ W.T + bias)``, per-channel multipliers and shifts
    ATTENTION = 0x05      #: one head: Q, K, V column slices of ``src`` -> ``dst`` columns, class row -> ``src2``
    RESIDUAL_ADD = 0x06   #: ``dst = fit(src + src2)`` in the residual format
    GELU = 0x07           #: integer GELU of ``src`` into ``dst``
    TOKEN_MEAN = 0x08     #: columns ``k..m-1`` of ``src`` replaced by their mean over the rows (in place)
    SELECT = 0x09         #: a selection stage: score, keep, compact the residual buffer ``dst``
    WRITE_LOGITS = 0x0A   #: row 0 of ``src`` (``m`` int16 logits) to the logits region
    END = 0x0F            #: the image is done


class Buffer(enum.IntEnum):
    """The on-chip token buffers (``max_tokens`` rows each unless said otherwise)."""

    X = 0        #: residual stream, ``width`` columns, ``res_bits``
    H = 1        #: LayerNorm outputs, ``width`` int8
    QKV = 2      #: ``3 width`` int8
    A = 3        #: attention outputs (the heads' outputs side by side), ``width`` int8
    T = 4        #: linear layers into the residual format (proj, fc2), ``width`` columns, ``res_bits``
    F = 5        #: MLP hidden and predictor scratch, ``max(mlp_hidden, width)`` int8
    S = 6        #: predictor scores (signed 16-bit logit differences), 1 column
    CLS = 7      #: the class token's attention rows: ``heads`` rows of ``max_tokens`` unsigned probabilities
    LOGITS = 8   #: one row of ``classes`` int16 logits


#: every buffer's role (the docs and the manifest list them)
BUFFERS = {b.name: b.__doc__ or "" for b in Buffer}


class Rows(enum.IntEnum):
    """The rows of ``src`` an op reads, relative to the run-time token count ``n`` and protected count ``P``."""

    ALL = 0          #: ``0 .. n-1``
    CLASS = 1        #: ``0`` (the class token: final norm and head)
    CANDIDATES = 2   #: ``P .. n-1`` (the tokens a stage may drop)
    PATCHES = 3      #: ``1 .. n-1`` (every token but the class token)


def buffer_shapes(*, max_tokens: int, width: int, heads: int, mlp_hidden: int, classes: int, res_bits: int,
                  prob_frac: int) -> dict[str, tuple[int, int, int]]:
    """``name -> (rows, columns, bits per element)`` of each buffer for a model envelope."""
    return {
        "X": (max_tokens, width, res_bits),
        "H": (max_tokens, width, 8),
        "QKV": (max_tokens, 3 * width, 8),
        "A": (max_tokens, width, 8),
        "T": (max_tokens, width, res_bits),
        "F": (max_tokens, max(mlp_hidden, width), 8),
        "S": (max_tokens, 1, 16),
        "CLS": (heads, max_tokens, prob_frac + 1),
        "LOGITS": (1, classes, 16),
    }


_FIELDS = (("opcode", 0, 8), ("dst", 8, 4), ("src", 12, 4), ("src2", 16, 4), ("rows", 20, 2), ("gated", 22, 1),
           ("arg", 24, 8))


@dataclass(frozen=True)
class Instruction:
    """One decoded instruction (see the module docstring for the encoding); validated on construction."""

    opcode: Opcode
    dst: Buffer = Buffer.X
    src: Buffer = Buffer.X
    src2: Buffer = Buffer.X
    rows: Rows = Rows.ALL
    gated: bool = False
    arg: int = 0
    addr_a: int = 0
    addr_b: int = 0
    k: int = 0
    m: int = 0

    def __post_init__(self):
        for name, enum_type in (("opcode", Opcode), ("dst", Buffer), ("src", Buffer), ("src2", Buffer),
                                ("rows", Rows)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer ({enum_type.__name__}), not {type(value).__name__}")
            try:
                object.__setattr__(self, name, enum_type(value))
            except ValueError:
                raise ValueError(f"{name} {value} is not a known {enum_type.__name__}") from None
        if not isinstance(self.gated, bool):
            raise TypeError(f"gated must be a bool, not {type(self.gated).__name__}")
        check_int("arg", self.arg, low=0, high=255)
        check_int("addr_a", self.addr_a, low=0, high=(1 << 32) - 1)
        check_int("addr_b", self.addr_b, low=0, high=(1 << 32) - 1)
        check_int("k", self.k, low=0, high=(1 << 16) - 1)
        check_int("m", self.m, low=0, high=(1 << 16) - 1)

    def words(self) -> tuple[int, int, int, int]:
        """The four 32-bit words."""
        w0 = 0
        for name, lo, _ in _FIELDS:
            w0 |= int(getattr(self, name)) << lo
        return w0, self.addr_a, self.addr_b, self.k | (self.m << 16)

    def encode(self) -> bytes:
        return struct.pack("<4I", *self.words())

    def __str__(self) -> str:
        """One line of assembly, e.g. ``GEMM H->QKV rows=ALL arg=8 a=0x680 b=0x30d00 k=64 m=192``."""
        if self.opcode is Opcode.END:
            return "END"
        gated = " gated" if self.gated else ""
        two = self.opcode in (Opcode.RESIDUAL_ADD, Opcode.ATTENTION, Opcode.SELECT)
        srcs = f"{self.src.name},{self.src2.name}" if two else self.src.name
        return (f"{self.opcode.name} {srcs}->{self.dst.name} rows={self.rows.name}{gated} arg={self.arg} "
                f"a={self.addr_a:#x} b={self.addr_b:#x} k={self.k} m={self.m}")

    @classmethod
    def from_words(cls, words) -> Instruction:
        """Decode four words; a reserved bit set or an unknown opcode/buffer/row mode raises ValueError."""
        w = tuple(words)
        if len(w) != WORDS:
            raise ValueError(f"an instruction has {WORDS} words, not {len(w)}")
        for word in w:
            check_int("instruction word", word, low=0, high=(1 << 32) - 1)
        if w[0] & (1 << 23):
            raise ValueError(f"instruction word 0 {w[0]:#010x} has reserved bit 23 set")
        fields = {name: (w[0] >> lo) & ((1 << width) - 1) for name, lo, width in _FIELDS}
        fields["gated"] = bool(fields["gated"])
        return cls(**fields, addr_a=w[1], addr_b=w[2], k=w[3] & 0xFFFF, m=w[3] >> 16)

    @classmethod
    def decode(cls, data: bytes) -> Instruction:
        if len(data) != INSTRUCTION_BYTES:
            raise ValueError(f"an instruction is {INSTRUCTION_BYTES} bytes, not {len(data)}")
        return cls.from_words(struct.unpack("<4I", data))


def encode_program(program: list[Instruction]) -> bytes:
    """The program's bytes; it must end with exactly one END, as its last instruction."""
    check_program(program)
    return b"".join(ins.encode() for ins in program)


def check_program(program: list[Instruction]) -> None:
    """ValueError unless ``program`` is a non-empty list of Instructions whose only END is the last."""
    if not isinstance(program, list) or not all(isinstance(i, Instruction) for i in program):
        raise TypeError("program must be a list of Instructions")
    ends = [pc for pc, ins in enumerate(program) if ins.opcode is Opcode.END]
    if ends != [len(program) - 1]:
        raise ValueError(f"a program must end with one END instruction, and only there (END at {ends} of "
                         f"{len(program)} instructions)")


def decode_program(data: bytes) -> list[Instruction]:
    """The instructions in ``data`` (a multiple of 16 bytes) up to and including the first END."""
    if len(data) % INSTRUCTION_BYTES:
        raise ValueError(f"a program is a multiple of {INSTRUCTION_BYTES} bytes, not {len(data)}")
    program = []
    for pc in range(len(data) // INSTRUCTION_BYTES):
        try:
            ins = Instruction.decode(bytes(data[pc * INSTRUCTION_BYTES:(pc + 1) * INSTRUCTION_BYTES]))
        except ValueError as exc:
            raise ValueError(f"instruction {pc}: {exc}") from None
        program.append(ins)
        if ins.opcode is Opcode.END:
            return program
    raise ValueError("the program has no END instruction")
