"""Stream formats of the GEMM engine, and their encoders/decoders for testbenches and drivers.

A job computes ``Y = IntLinear(X)`` for ``X`` of ``n`` tokens x ``k`` input features and ``m`` outputs.

- ``job`` stream: one beat per job, ``n``, ``k``, ``m`` (16 bits each, so sizes beyond the generated
  maxima are representable and can be flagged) and ``out_bits`` (8 bits): the signed width of this job's
  outputs, ``2 .. cfg.out.bits`` (8 for int8 activations, the residual width, 16 for logits; the
  requantized values saturate into it, counted in ``out_overflows``, and are sign-extended into the
  ``o_stream`` lanes). A job's **activations must all have been accepted on ``act`` before its job beat
  is sent**; the job beat commits them.
- ``act`` stream: the activations, one beat per token tile and input feature: ``tile`` (token tile
  ``t // rows``), ``k`` and ``data`` (the ``rows`` int8 values of tokens ``tile * rows + lane`` at feature
  ``k``; lanes of tokens ``>= n`` are don't-care). Any order; two jobs can be resident (one computing, one
  filled), so the next job's activations load while the current one computes.
- ``weights`` stream: ``weight_bytes`` bytes per beat (byte ``b`` in bits ``8b ..``). Per job, per column
  tile (output channels ``col0 .. col0 + cols - 1``): ``k`` rows of ``cols`` int8 weights (row ``kk``
  holds ``W[col0 + c, kk]`` for ``c = 0 .. cols-1``, ``cols / weight_bytes`` beats), then ``cols``
  channel records of ``record_beats`` beats each (bias, multiplier, shift packed from bit 0; beat 0 holds
  the low bits). Channels beyond ``m`` are padding (any value). The engine loads the next column tile
  (of this job or the next committed one) while it computes the current one.
- ``o_stream``: one beat per output channel and token tile: ``data`` (the ``rows`` requantized values of
  tokens ``tile * rows + lane``, ``cfg.out.bits`` wide, 0 in lanes of tokens ``>= n``), ``tile``, ``channel`` and ``last`` (the
  job's final beat). Order: column tiles, then token tiles, then channels.

A job beat with ``n``, ``k`` or ``m`` of 0 or above its maximum, or an ``out_bits`` below 2 or above
``cfg.out.bits``, is consumed and dropped: ``status.error`` is set and ``status.rejected`` counts it; it
takes no weights and produces no output.

>>> cfg = GemmConfig(rows=2, cols=4, max_tokens=4, max_in=3, max_out=4, weight_bytes=2)
>>> x = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
>>> [hex(b) for b in encode_activations(x, cfg)[:2]]
['0x401', '0x20502']
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import signed, unsigned
from amaranth.lib import data
from amaranth.utils import ceil_log2

from tokensift.hw.gemm.config import OPERAND_BITS, SHIFT_BITS, GemmConfig

__all__ = [
    "SIZE_BITS",
    "OUT_BITS_FIELD",
    "job_layout",
    "act_layout",
    "weight_shape",
    "out_layout",
    "status_layout",
    "encode_job",
    "encode_activations",
    "encode_weights",
    "encode_records",
    "decode_outputs",
    "describe_formats",
]

#: width of a job's n, k and m
SIZE_BITS = 16
#: width of a job's out_bits field (the program's ``arg`` byte), so any value up to 255 can be flagged
OUT_BITS_FIELD = 8


def _bits(count: int) -> int:
    return max(1, ceil_log2(count))


def job_layout(cfg: GemmConfig) -> data.StructLayout:
    return data.StructLayout({"n": unsigned(SIZE_BITS), "k": unsigned(SIZE_BITS), "m": unsigned(SIZE_BITS),
                              "out_bits": unsigned(OUT_BITS_FIELD)})


def act_layout(cfg: GemmConfig) -> data.StructLayout:
    return data.StructLayout({
        "data": data.ArrayLayout(signed(OPERAND_BITS), cfg.rows),
        "tile": unsigned(_bits(cfg.token_tiles_max)),
        "k": unsigned(_bits(cfg.max_in)),
    })


def weight_shape(cfg: GemmConfig):
    return unsigned(8 * cfg.weight_bytes)


def out_layout(cfg: GemmConfig) -> data.StructLayout:
    return data.StructLayout({
        "data": data.ArrayLayout(cfg.out.shape, cfg.rows),
        "tile": unsigned(_bits(cfg.token_tiles_max)),
        "channel": unsigned(SIZE_BITS),
        "last": 1,
    })


def status_layout(cfg: GemmConfig) -> data.StructLayout:
    return data.StructLayout({"busy": 1, "error": 1, "rejected": unsigned(cfg.counter_bits)})


def _pack(fields) -> int:
    """Little-endian packing of ``(value, bits)`` pairs (two's complement for negative values)."""
    word, pos = 0, 0
    for value, bits in fields:
        word |= (int(value) & ((1 << bits) - 1)) << pos
        pos += bits
    return word


def encode_job(n: int, k: int, m: int, out_bits: int) -> int:
    """The ``job`` beat of a job of ``n`` tokens, ``k`` inputs, ``m`` outputs written as signed
    ``out_bits``-bit values (values the engine rejects are encoded as given, within the fields' widths)."""
    return _pack([(n, SIZE_BITS), (k, SIZE_BITS), (m, SIZE_BITS), (out_bits, OUT_BITS_FIELD)])


def encode_activations(x, cfg: GemmConfig) -> list[int]:
    """The ``act`` beats of an ``(n, k)`` int8 activation matrix, tile by tile, ``k`` ascending."""
    x = np.asarray(x, dtype=np.int64)
    n, k = x.shape
    tiles = -(-n // cfg.rows)
    padded = np.zeros((tiles * cfg.rows, k), dtype=np.int64)
    padded[:n] = x
    tile_bits, k_bits = _bits(cfg.token_tiles_max), _bits(cfg.max_in)
    beats = []
    for t in range(tiles):
        block = padded[t * cfg.rows:(t + 1) * cfg.rows]
        for kk in range(k):
            beats.append(_pack([(v, OPERAND_BITS) for v in block[:, kk]] + [(t, tile_bits), (kk, k_bits)]))
    return beats


def encode_records(bias, multipliers, shifts, cfg: GemmConfig) -> list[int]:
    """The channel records of one column tile (``cols`` entries, padding included), as beats."""
    beats = []
    width = 8 * cfg.weight_bytes
    for b, mul, sh in zip(bias, multipliers, shifts, strict=True):
        record = _pack([(b, cfg.acc_bits), (mul, cfg.multiplier_bits), (sh, SHIFT_BITS)])
        beats.extend((record >> (width * i)) & ((1 << width) - 1) for i in range(cfg.record_beats))
    return beats


def encode_weights(weight, bias, multipliers, shifts, cfg: GemmConfig) -> list[int]:
    """The ``weights`` beats of one job: ``weight`` is ``(m, k)`` (``IntLinear.weight``), the constants
    ``(m,)``; channels beyond ``m`` in the last column tile are padded with zero weights and records
    ``(0, 1, 0)``."""
    w = np.asarray(weight, dtype=np.int64)
    m, k = w.shape
    mults = np.asarray(multipliers, dtype=np.int64)
    if m and (mults.min() < 1 or mults.max() >= 1 << cfg.multiplier_bits):
        raise ValueError(f"multipliers must be between 1 and 2**{cfg.multiplier_bits} - 1 for this engine")
    beats = []
    for col0 in range(0, m, cfg.cols):
        cols = range(col0, col0 + cfg.cols)
        panel = np.zeros((k, cfg.cols), dtype=np.int64)
        width = min(cfg.cols, m - col0)
        panel[:, :width] = w[col0:col0 + width].T
        for kk in range(k):
            row = panel[kk]
            for j in range(cfg.row_beats):
                beats.append(_pack([(v, 8) for v in row[j * cfg.weight_bytes:(j + 1) * cfg.weight_bytes]]))
        beats.extend(encode_records(_padded(bias, cols, m, 0), _padded(mults, cols, m, 1),
                                    _padded(shifts, cols, m, 0), cfg))
    return beats


def _padded(values, cols, m: int, fill: int) -> list[int]:
    return [int(values[c]) if c < m else fill for c in cols]


def decode_outputs(payloads, n: int, m: int, cfg: GemmConfig):
    """``(y, last_flags)``: the ``(n, m)`` outputs placed by each beat's tile and channel, and the list of
    ``last`` bits in arrival order. Raises ValueError when a position arrives twice or is missing."""
    bits = cfg.out.bits
    tile_bits = _bits(cfg.token_tiles_max)
    y = np.zeros((n, m), dtype=np.int64)
    seen = np.zeros((n, m), dtype=bool)
    lasts = []
    for word in payloads:
        word = int(word)
        lanes = [(word >> (bits * r)) & ((1 << bits) - 1) for r in range(cfg.rows)]
        pos = bits * cfg.rows
        tile = (word >> pos) & ((1 << tile_bits) - 1)
        channel = (word >> (pos + tile_bits)) & ((1 << SIZE_BITS) - 1)
        lasts.append((word >> (pos + tile_bits + SIZE_BITS)) & 1)
        for r, v in enumerate(lanes):
            t = tile * cfg.rows + r
            if cfg.out.signed and v >= 1 << (bits - 1):
                v -= 1 << bits
            if t >= n:
                if v:
                    raise ValueError(f"lane of token {t} >= n carries {v}, not 0")
                continue
            if channel >= m or seen[t, channel]:
                raise ValueError(f"output (token {t}, channel {channel}) arrived twice or is out of range")
            y[t, channel], seen[t, channel] = v, True
    if not seen.all():
        raise ValueError(f"{int((~seen).sum())} outputs never arrived")
    return y, lasts


def describe_formats(cfg: GemmConfig) -> dict:
    """The manifest's description of every stream."""
    return {
        "job": {"fields": {"n": SIZE_BITS, "k": SIZE_BITS, "m": SIZE_BITS, "out_bits": OUT_BITS_FIELD},
                "out_bits": {"min": 2, "max": cfg.out.bits}, "width": job_layout(cfg).size},
        "act": {"fields": {"data": f"{cfg.rows} x int{OPERAND_BITS}", "tile": _bits(cfg.token_tiles_max),
                           "k": _bits(cfg.max_in)}, "width": act_layout(cfg).size},
        "weights": {"bytes_per_beat": cfg.weight_bytes, "row_beats": cfg.row_beats,
                    "record_beats": cfg.record_beats,
                    "record": {"bias": cfg.acc_bits, "multiplier": cfg.multiplier_bits, "shift": SHIFT_BITS}},
        "o_stream": {"fields": {"data": f"{cfg.rows} x {cfg.out.bits}-bit", "tile": _bits(cfg.token_tiles_max),
                                "channel": SIZE_BITS, "last": 1}, "width": out_layout(cfg).size},
    }
