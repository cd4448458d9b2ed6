"""The GEMM engine's weight stream: how the weights region holds a linear layer.

The GEMM engine (``hw/gemm``, docs/gemm.md) takes a linear layer as one stream of ``stream_bytes``-byte
beats, and the sequencer feeds it straight from DRAM with one contiguous AXI read per GEMM op, so the
compiler lays every linear layer out as exactly those bytes (the compiler targets the hardware's shape, as
Gemmini and VTA do). Per column tile (output channels ``col0 .. col0 + cols - 1``, ``col0 = 0, cols, ...``):

1. ``k`` rows of ``cols`` int8 weights: row ``kk`` holds ``W[col0 + c, kk]`` at byte ``c``;
2. ``cols`` channel records of ``record_bytes`` each: the bias (``acc_bits``, two's complement), the
   multiplier (``multiplier_bits``, unsigned) and the shift (``shift_bits``) packed from bit 0 of a
   little-endian integer, the bits above them 0.

Beats are little-endian and concatenated, so this byte order *is* the beat order. Channels beyond ``m`` in
the last column tile are padding: zero weights and the record (bias 0, multiplier 1, shift 0). A record
takes whole beats, ``record_bytes = stream_bytes * ceil((acc_bits + multiplier_bits + shift_bits) /
(8 stream_bytes))``, so a stream's length is a pure function of the op's ``m`` and ``k`` and the engine's
shape (the RTL computes its burst length from it)::

    stream_length(m, k) = ceil(m / cols) * cols * (k + record_bytes)

>>> shape = GemmShape(cols=4, stream_bytes=4)
>>> shape.record_bytes, shape.stream_length(m=5, k=3)  # 54-bit records in two 4-byte beats
(8, 88)
>>> w = np.array([[1, 2, 3], [-1, -2, -3], [4, 5, 6], [7, 8, 9], [10, 11, 12]])
>>> data = encode_stream(w, bias=[0, 1, 2, 3, 4], multipliers=[5] * 5, shifts=[6] * 5, shape=shape)
>>> np.frombuffer(data[:8], dtype=np.int8).tolist()  # kk = 0, then kk = 1, of channels 0..3
[1, -1, 4, 7, 2, -2, 5, 8]
>>> [a.tolist() for a in decode_stream(data, m=5, k=3, shape=shape)[1:]]
[[0, 1, 2, 3, 4], [5, 5, 5, 5, 5], [6, 6, 6, 6, 6]]
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np

from tokensift.checks import check_int
from tokensift.quant.qparams import MAX_SHIFT, MULTIPLIER_BITS

__all__ = ["GemmShape", "StreamLayer", "encode_stream", "decode_stream", "DEFAULT_COLS", "DEFAULT_STREAM_BYTES",
           "MAX_COLS", "MAX_STREAM_BYTES"]

#: output channels per column tile of the demo's 2 x 64 engine (docs/gemm.md's ``demo`` configuration)
DEFAULT_COLS = 64
#: a 64-bit AXI data bus (the Zynq-7000's HP ports, PYNQ-Z2)
DEFAULT_STREAM_BYTES = 8
#: the GEMM engine's widest array (``hw/gemm/config.py``) and the widest AXI data bus (1024 bits)
MAX_COLS, MAX_STREAM_BYTES = 1024, 128


@dataclass(frozen=True, kw_only=True)
class GemmShape:
    """What the weight stream's encoding depends on: the GEMM engine's shape (in the image header).

    Attributes:
        cols: output channels per column tile (the engine's ``cols``), 1..1024, a multiple of
            ``stream_bytes``.
        stream_bytes: bytes per weight-stream beat (the AXI data width: a power of two, 1..128).
        acc_bits: the bias / accumulator width (``IntLinear.acc_bits`` of every GEMM op), 2..32.
        multiplier_bits: width of the unsigned requantization multiplier, 2..31.
        shift_bits: width of the requantization shift, 1..8 (the engine's is 6).
    """

    cols: int = DEFAULT_COLS
    stream_bytes: int = DEFAULT_STREAM_BYTES
    acc_bits: int = 32
    multiplier_bits: int = MULTIPLIER_BITS
    shift_bits: int = 6

    def __post_init__(self):
        check_int("cols", self.cols, low=1, high=MAX_COLS, numpy=False)
        check_int("stream_bytes", self.stream_bytes, low=1, high=MAX_STREAM_BYTES, numpy=False)
        if self.stream_bytes & (self.stream_bytes - 1):
            raise ValueError(f"stream_bytes must be a power of two (an AXI data width), not {self.stream_bytes}")
        if self.cols % self.stream_bytes:
            raise ValueError(f"cols ({self.cols}) must be a multiple of stream_bytes ({self.stream_bytes}): a "
                             "weight row is whole beats")
        check_int("acc_bits", self.acc_bits, low=2, high=32, numpy=False)
        check_int("multiplier_bits", self.multiplier_bits, low=2, high=31, numpy=False)
        check_int("shift_bits", self.shift_bits, low=1, high=8, numpy=False)

    @property
    def record_bits(self) -> int:
        """One channel's constants: bias, multiplier, shift."""
        return self.acc_bits + self.multiplier_bits + self.shift_bits

    @property
    def record_bytes(self) -> int:
        """One channel record: whole beats."""
        beat_bits = 8 * self.stream_bytes
        return -(-self.record_bits // beat_bits) * self.stream_bytes

    @property
    def max_shift(self) -> int:
        """The largest shift a record holds (and ``quant.fixed.requantize`` accepts)."""
        return min((1 << self.shift_bits) - 1, MAX_SHIFT)

    def tiles(self, m: int) -> int:
        return -(-m // self.cols)

    def stream_length(self, m: int, k: int) -> int:
        """Bytes of the weight stream of an ``m`` x ``k`` layer."""
        return self.tiles(m) * self.cols * (k + self.record_bytes)

    def as_tuple(self) -> tuple[int, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def to_dict(self) -> dict:
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "record_bytes": self.record_bytes}


class StreamLayer(NamedTuple):
    """A decoded weight stream: ``weight`` (m, k) and the per-channel ``bias``, ``multipliers``, ``shifts``."""

    weight: np.ndarray
    bias: np.ndarray
    multipliers: np.ndarray
    shifts: np.ndarray


def _fields(shape: GemmShape) -> tuple[tuple[str, int], ...]:
    return (("bias", shape.acc_bits), ("multipliers", shape.multiplier_bits), ("shifts", shape.shift_bits))


def _integers(name: str, values, ndim: int, what: str) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim != ndim or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{what}: {name} must be a {ndim}-dimensional integer array, not {a.dtype} of shape "
                         f"{a.shape}")
    return a.astype(np.int64)


def _first_outside(values: np.ndarray, low: int, high: int) -> int | None:
    bad = np.flatnonzero((values < low) | (values > high))
    return int(bad[0]) if bad.size else None


def encode_stream(weight, bias, multipliers, shifts, shape: GemmShape, *, what: str = "the layer") -> bytes:
    """The weight-stream bytes of a layer: ``weight`` is ``(m, k)`` int8 (``IntLinear.weight``), the constants
    ``(m,)``. A value the engine cannot hold is a ValueError naming ``what`` and the channel."""
    if not isinstance(shape, GemmShape):
        raise TypeError(f"shape must be a GemmShape, not {type(shape).__name__}")
    w = _integers("weight", weight, 2, what)
    m, k = w.shape
    if m < 1 or k < 1:
        raise ValueError(f"{what}: a weight stream needs at least one output channel and one input, not {m} x {k}")
    bad = np.flatnonzero(((w < -128) | (w > 127)).any(axis=1))
    if bad.size:
        c = int(bad[0])
        raise ValueError(f"{what}: the weights of output channel {c} do not fit int8")
    consts = {}
    limits = {"bias": (-(1 << (shape.acc_bits - 1)), (1 << (shape.acc_bits - 1)) - 1,
                       f"the engine's {shape.acc_bits}-bit accumulator"),
              "multipliers": (1, (1 << shape.multiplier_bits) - 1,
                              f"the engine's {shape.multiplier_bits}-bit multiplier (1..{(1 << shape.multiplier_bits) - 1})"),
              "shifts": (0, shape.max_shift, f"the engine's shifts (0..{shape.max_shift})")}
    for name, values in (("bias", bias), ("multipliers", multipliers), ("shifts", shifts)):
        v = _integers(name, values, 1, what)
        if v.shape != (m,):
            raise ValueError(f"{what}: {name} must have one value per output channel ({m}), not {v.size}")
        low, high, where = limits[name]
        c = _first_outside(v, low, high)
        if c is not None:
            raise ValueError(f"{what}: {name[:-1] if name != 'bias' else name} {int(v[c])} of output channel {c} "
                             f"does not fit {where}")
        consts[name] = v
    tiles, cols = shape.tiles(m), shape.cols
    padded = np.zeros((tiles * cols, k), dtype=np.int64)
    padded[:m] = w
    panels = padded.reshape(tiles, cols, k).transpose(0, 2, 1).astype(np.int8).view(np.uint8)
    fill = {"bias": 0, "multipliers": 1, "shifts": 0}
    bits = []
    for name, width in _fields(shape):
        v = np.full(tiles * cols, fill[name], dtype=np.int64)
        v[:m] = consts[name]
        bits.append((v[:, None] >> np.arange(width)) & 1)  # two's complement bits of a negative bias
    bits.append(np.zeros((tiles * cols, 8 * shape.record_bytes - shape.record_bits), dtype=np.int64))
    records = np.packbits(np.concatenate(bits, axis=1).astype(np.uint8), axis=1, bitorder="little")
    out = np.concatenate([panels.reshape(tiles, k * cols), records.reshape(tiles, cols * shape.record_bytes)], axis=1)
    return out.tobytes()


def decode_stream(data, *, m: int, k: int, shape: GemmShape) -> StreamLayer:
    """The layer in the weight stream ``data`` (exactly ``shape.stream_length(m, k)`` bytes). Padding channels
    that are not the canonical (zero weights, record 0 / 1 / 0), record bits above the fields, a multiplier
    of 0 or a shift beyond ``shape.max_shift`` make a malformed stream (ValueError)."""
    if not isinstance(shape, GemmShape):
        raise TypeError(f"shape must be a GemmShape, not {type(shape).__name__}")
    check_int("m", m, low=1, numpy=False)
    check_int("k", k, low=1, numpy=False)
    length = shape.stream_length(m, k)
    raw = np.frombuffer(bytes(data), dtype=np.uint8)
    if raw.size != length:
        raise ValueError(f"the weight stream of a {m} x {k} layer is {length} bytes, not {raw.size}")
    tiles, cols, rb = shape.tiles(m), shape.cols, shape.record_bytes
    rows = raw.reshape(tiles, cols * (k + rb))
    weight = rows[:, :k * cols].view(np.int8).reshape(tiles, k, cols).transpose(0, 2, 1).reshape(tiles * cols, k)
    bits = np.unpackbits(rows[:, k * cols:].reshape(tiles * cols, rb), axis=1, bitorder="little").astype(np.int64)
    values, pos = {}, 0
    for name, width in _fields(shape):
        v = bits[:, pos:pos + width] @ (np.int64(1) << np.arange(width, dtype=np.int64))
        if name == "bias":
            v = np.where(v >= 1 << (width - 1), v - (1 << width), v)
        values[name] = v
        pos += width
    if bits[:, pos:].any():
        c = int(np.flatnonzero(bits[:, pos:].any(axis=1))[0])
        raise ValueError(f"the record of channel {c} has bits set above its {shape.record_bits} bits of fields")
    if m < tiles * cols and (weight[m:].any() or values["bias"][m:].any() or (values["multipliers"][m:] != 1).any()
                             or values["shifts"][m:].any()):
        raise ValueError(f"the padding channels {m}..{tiles * cols - 1} of the last column tile are not zero weights "
                         "with records (0, 1, 0)")
    for name, low, high in (("multipliers", 1, (1 << shape.multiplier_bits) - 1), ("shifts", 0, shape.max_shift)):
        c = _first_outside(values[name][:m], low, high)
        if c is not None:
            raise ValueError(f"channel {c}'s {name[:-1]} {int(values[name][c])} is outside the engine's range "
                             f"{low}..{high}")
    return StreamLayer(weight=weight[:m].astype(np.int64), bias=values["bias"][:m],
                       multipliers=values["multipliers"][:m], shifts=values["shifts"][:m])
