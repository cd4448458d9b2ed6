"""Stream formats of the attention accelerator, and their encoders/decoders for testbenches and drivers.

Constants stream ``k_stream``: one beat per frame, taken before the frame's header (the core holds one;
a header waits for its beat), with the layer's ``scale_multiplier``, ``scale_shift``, ``out_multiplier``
and ``out_shift``: :mod:`tokensift.hw.attention.constants` (layout, ranges, encoder).

Input stream ``i_stream`` (one frame = one head):

- beat 0, the **header**: ``payload.header.n_tokens`` (unsigned 16 bits, in the low bits of the beat)
  is the runtime token count ``N``. A frame with ``N = 0`` or ``N > n_max``, or whose constants beat is
  out of the core's ranges, is rejected: the header and the ``3 N head_dim / lanes`` beats that follow it
  are consumed and dropped (its constants beat too), ``status.error`` is set (``status.const_error`` as
  well for bad constants) and ``status.rejected`` counts it; no output is produced and nothing else
  changes.
- then ``N`` rows of ``Q``, ``N`` rows of ``K``, ``N`` rows of ``V``; each row is ``head_dim / lanes``
  beats of ``payload.row``: ``lanes`` signed ``data_bits`` values, lane ``l`` holding channel
  ``chunk * lanes + l`` (lane 0 in the low bits).

Output stream ``o_stream``: the ``N`` rows of ``O`` in order, ``head_dim / lanes`` beats per row, each
``payload.row`` (``lanes`` signed ``data_bits`` values as above), ``payload.last`` on the frame's final
beat, ``payload.head`` the index of the core copy that computed it (0 with ``heads_parallel = 1``;
frames go to copies round-robin).

Score stream ``s_stream``: the class token's attention row, ``N`` beats of ``payload.prob`` (unsigned
``prob_frac + 1`` bits, ``prob_frac`` fractional: ``2**prob_frac`` is 1.0) for tokens ``0 .. N-1``,
``payload.last`` on the last, ``payload.head`` as above.

>>> from tokensift.quant.attention import AttentionParams
>>> p = AttentionParams(n_max=4, head_dim=4, lanes=2)
>>> beats = encode_frame(np.zeros((2, 4), int), np.ones((2, 4), int), -np.ones((2, 4), int), p)
>>> len(beats), beats[0], hex(beats[5]), hex(beats[-1])
(13, 2, '0x101', '0xffff')
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import data
from amaranth.utils import ceil_log2

__all__ = [
    "HEADER_BITS",
    "input_layout",
    "output_layout",
    "score_layout",
    "status_layout",
    "head_bits",
    "encode_header",
    "encode_rows",
    "encode_frame",
    "decode_rows",
    "frame_beats",
    "describe_formats",
]

#: width of the header's token count; values above ``n_max`` are representable so they can be flagged
HEADER_BITS = 16


def head_bits(params) -> int:
    return max(1, ceil_log2(params.heads_parallel))


def input_layout(params) -> data.UnionLayout:
    """One input beat: a header (``n_tokens``) or a row chunk (``lanes`` signed values)."""
    return data.UnionLayout({
        "header": data.StructLayout({"n_tokens": unsigned(HEADER_BITS)}),
        "row": data.ArrayLayout(signed(params.data_bits), params.lanes),
    })


def output_layout(params) -> data.StructLayout:
    """One output beat: ``lanes`` values of a row of ``O``, the frame's ``last`` beat flag, the core copy."""
    return data.StructLayout({
        "row": data.ArrayLayout(signed(params.data_bits), params.lanes),
        "last": 1,
        "head": unsigned(head_bits(params)),
    })


def score_layout(params) -> data.StructLayout:
    """One class-attention beat: a probability (``prob_frac`` fractional bits), ``last``, the core copy."""
    return data.StructLayout({
        "prob": unsigned(params.softmax.prob_frac + 1),
        "last": 1,
        "head": unsigned(head_bits(params)),
    })


def status_layout() -> data.StructLayout:
    """``busy``; ``error``: the latest header was rejected; saturating counts of rejected frames and of
    output values that saturated in the requantizer; ``const_error``: the latest header was rejected for
    its constants (out of the generated ranges)."""
    return data.StructLayout({
        "busy": 1,
        "error": 1,
        "rejected": unsigned(16),
        "overflows": unsigned(16),
        "const_error": 1,
    })


def frame_beats(n_tokens: int, params) -> int:
    """Beats of one frame on ``i_stream``: the header and ``3 N head_dim / lanes`` row chunks."""
    return 1 + 3 * n_tokens * params.chunks


def encode_header(n_tokens: int) -> int:
    if not 0 <= n_tokens < (1 << HEADER_BITS):
        raise ValueError(f"n_tokens must be between 0 and {(1 << HEADER_BITS) - 1}, not {n_tokens}")
    return int(n_tokens)


def encode_rows(x, params) -> list[int]:
    """Rows of ``x`` (``rows x head_dim``) as beats of ``lanes`` values, lane 0 in the low bits."""
    b, lanes = params.data_bits, params.lanes
    x = np.asarray(x, dtype=np.int64).reshape(-1, lanes) & ((1 << b) - 1)
    weights = [1 << (lane * b) for lane in range(lanes)]
    return [sum(int(v) * w for v, w in zip(row, weights, strict=True)) for row in x.tolist()]


def encode_frame(q, k, v, params, *, n_tokens: int | None = None) -> list[int]:
    """The beats of one frame: header, then Q, K, V rows. ``n_tokens`` overrides the header (for tests
    of rejected frames)."""
    n = len(q) if n_tokens is None else n_tokens
    return [encode_header(n)] + encode_rows(q, params) + encode_rows(k, params) + encode_rows(v, params)


def decode_rows(beats, params) -> np.ndarray:
    """Output beats (``payload.row`` in the low bits) -> ``rows x head_dim`` signed values."""
    b, lanes = params.data_bits, params.lanes
    mask, sign = (1 << b) - 1, 1 << (b - 1)
    values = [((int(beat) >> (lane * b)) & mask) for beat in beats for lane in range(lanes)]
    arr = np.array(values, dtype=np.int64)
    arr = np.where(arr & sign, arr - (1 << b), arr)
    return arr.reshape(-1, params.head_dim)


def _fields(layout, prefix="") -> list[dict]:
    out = []
    for name, field in layout:
        shape = field.shape
        if isinstance(shape, data.ArrayLayout):
            elem = shape.elem_shape
            out.append({"field": prefix + name, "offset": field.offset, "width": shape.size,
                        "lanes": shape.length, "lane_width": elem.width, "signed": elem.signed})
        elif isinstance(shape, data.StructLayout):
            out += [{**f, "offset": f["offset"] + field.offset} for f in _fields(shape, prefix + name + ".")]
        else:
            out.append({"field": prefix + name, "offset": field.offset, "width": field.width,
                        "signed": Shape.cast(shape).signed})
    return out


def describe_formats(params) -> dict:
    """Bit fields of every stream payload and of ``status`` (offsets from bit 0), for manifests."""
    from tokensift.hw.attention.constants import const_layout

    return {
        "k_stream": {"width": const_layout().size, "fields": _fields(const_layout()),
                     "frame": "one beat per frame, taken before its header: the layer's constants; values "
                              "outside the generated ranges reject the frame"},
        "i_stream": {"width": input_layout(params).size, "fields": _fields(input_layout(params)),
                     "frame": "header beat (n_tokens), then N rows of Q, N of K, N of V, head_dim/lanes beats "
                              "per row; N = 0 or N > n_max is rejected and its beats dropped"},
        "o_stream": {"width": output_layout(params).size, "fields": _fields(output_layout(params)),
                     "frame": "N rows of O, head_dim/lanes beats per row; last on the final beat"},
        "s_stream": {"width": score_layout(params).size, "fields": _fields(score_layout(params)),
                     "frame": "N class-token probabilities (prob_frac fractional bits); last on the final one"},
        "status": {"width": status_layout().size, "fields": _fields(status_layout())},
    }
