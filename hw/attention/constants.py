"""The attention core's run-time constants: what differs between the layers of one model.

One generated core serves every attention layer of a model, so the four per-layer integers of
:class:`tokensift.quant.attention.AttentionParams` arrive with each frame on the constants port ``k_stream``
(one beat per frame, :func:`const_layout`):

- ``scale_multiplier``, ``scale_shift``: the softmax's scale into the log2 domain (step 1 of
  :mod:`tokensift.quant.softmax`);
- ``out_multiplier``, ``out_shift``: the requantization of ``P V`` into the output format.

Everything in :class:`tokensift.quant.softmax.SoftmaxParams` (variant, ``log2_frac``, ``exp_frac``,
``prob_frac``) fixes table contents, divider steps and port widths: it stays a generation parameter, with
``n_max``, ``head_dim``, ``lanes``, ``data_bits``, ``acc_bits`` and ``heads_parallel``. Generation also fixes
the **ranges** of the run-time constants (:class:`ConstantRanges`): the multipliers' widths (their products'
operand widths, hence the DSPs) and the largest shifts (the variable shifters' stages).

The beat's fields are wider than any range (32-bit multipliers, 8-bit shifts), so a constant the core was not
generated for reaches it and is flagged (``status.error``, ``status.const_error``, counted in
``status.rejected``; the frame is dropped) instead of being cut to fit.

>>> r = ConstantRanges()
>>> (r.scale_mult_bits, r.scale_shift_max, r.out_mult_bits, r.out_shift_max)
(17, 48, 16, 62)
>>> p = AttentionParams(n_max=4, head_dim=4, lanes=2)
>>> hex(encode_constants(p)), r.accepts(p)
('0xf000000011100017154', True)
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import unsigned
from amaranth.lib import data

from tokensift.checks import check_int
from tokensift.quant.attention import AttentionParams
from tokensift.quant.qparams import MULTIPLIER_BITS

__all__ = ["ConstantRanges", "FIELD_MULT_BITS", "FIELD_SHIFT_BITS", "MAX_MULT_BITS", "const_layout",
           "frame_const_layout", "encode_constants", "constant_errors"]

#: width of a multiplier field of the constants beat (any range fits; wider values are flagged)
FIELD_MULT_BITS = 32
#: width of a shift field of the constants beat
FIELD_SHIFT_BITS = 8
#: widest run-time multiplier: an unsigned 17-bit value is an 18-bit signed DSP operand (ECP5 ``MULT18X18D``,
#: the narrow port of a DSP48), so each partial product of the core is one DSP with registered operands
MAX_MULT_BITS = 17
_SCALE_SHIFT_LIMIT = 48  # AttentionParams' own bounds
_OUT_SHIFT_LIMIT = 62


@dataclass(frozen=True, kw_only=True)
class ConstantRanges:
    """What run-time constants a generated core accepts.

    Attributes:
        scale_mult_bits: the score scale multiplier is ``1 .. 2**scale_mult_bits - 1`` (1..17, default 17,
            what :func:`tokensift.quant.attention.scale_for` produces).
        scale_shift_max: its shift is ``0 .. scale_shift_max`` (0..48).
        out_mult_bits: the output multiplier is ``1 .. 2**out_mult_bits - 1`` (1..17, default the model
            quantizer's ``MULTIPLIER_BITS``).
        out_shift_max: the output shift is ``0 .. out_shift_max`` (0..62).
    """

    scale_mult_bits: int = 17
    scale_shift_max: int = _SCALE_SHIFT_LIMIT
    out_mult_bits: int = MULTIPLIER_BITS
    out_shift_max: int = _OUT_SHIFT_LIMIT

    def __post_init__(self):
        check_int("scale_mult_bits", self.scale_mult_bits, low=1, high=MAX_MULT_BITS, numpy=False)
        check_int("scale_shift_max", self.scale_shift_max, low=0, high=_SCALE_SHIFT_LIMIT, numpy=False)
        check_int("out_mult_bits", self.out_mult_bits, low=1, high=MAX_MULT_BITS, numpy=False)
        check_int("out_shift_max", self.out_shift_max, low=0, high=_OUT_SHIFT_LIMIT, numpy=False)

    @classmethod
    def covering(cls, params: AttentionParams) -> ConstantRanges:
        """The default ranges, widened where ``params``' own constants need more (so a core generated from
        one layer's parameters runs that layer); ValueError if a multiplier needs more than 17 bits."""
        p = _check_params(params)
        d = cls()
        for name, value in (("scale_multiplier", p.scale_multiplier), ("out_multiplier", p.out_multiplier)):
            if value.bit_length() > MAX_MULT_BITS:
                raise ValueError(f"{name} must be below 2**{MAX_MULT_BITS} for the attention core's run-time "
                                 f"multiplier, not {value}")
        return cls(scale_mult_bits=max(d.scale_mult_bits, p.scale_multiplier.bit_length()),
                   scale_shift_max=max(d.scale_shift_max, p.scale_shift),
                   out_mult_bits=max(d.out_mult_bits, p.out_multiplier.bit_length()),
                   out_shift_max=max(d.out_shift_max, p.out_shift))

    @property
    def scale_shift_bits(self) -> int:
        return max(1, self.scale_shift_max.bit_length())

    @property
    def out_shift_bits(self) -> int:
        return max(1, self.out_shift_max.bit_length())

    def accepts(self, params: AttentionParams) -> bool:
        """Whether a core of these ranges runs ``params``' constants (no :func:`constant_errors`)."""
        return not constant_errors(_check_params(params), self)

    def to_dict(self) -> dict:
        return {"scale_mult_bits": self.scale_mult_bits, "scale_shift_max": self.scale_shift_max,
                "out_mult_bits": self.out_mult_bits, "out_shift_max": self.out_shift_max}

    @classmethod
    def from_dict(cls, values: dict) -> ConstantRanges:
        return cls(**values)


def _check_params(params) -> AttentionParams:
    if not isinstance(params, AttentionParams):
        raise TypeError(f"params must be an AttentionParams, not {type(params).__name__}")
    return params


def _check_ranges(ranges) -> ConstantRanges:
    if not isinstance(ranges, ConstantRanges):
        raise TypeError(f"ranges must be a ConstantRanges, not {type(ranges).__name__}")
    return ranges


def const_layout() -> data.StructLayout:
    """One constants beat (the same for every generated core; its values are checked against the ranges)."""
    return data.StructLayout({
        "scale_multiplier": unsigned(FIELD_MULT_BITS),
        "scale_shift": unsigned(FIELD_SHIFT_BITS),
        "out_multiplier": unsigned(FIELD_MULT_BITS),
        "out_shift": unsigned(FIELD_SHIFT_BITS),
    })


def frame_const_layout(ranges: ConstantRanges) -> data.StructLayout:
    """The checked constants as the front end hands them to a core copy: each field as wide as its range."""
    r = _check_ranges(ranges)
    return data.StructLayout({
        "scale_multiplier": unsigned(r.scale_mult_bits),
        "scale_shift": unsigned(r.scale_shift_bits),
        "out_multiplier": unsigned(r.out_mult_bits),
        "out_shift": unsigned(r.out_shift_bits),
    })


def constant_errors(values, ranges: ConstantRanges) -> list[str]:
    """Why a core of ``ranges`` rejects the constants ``values`` (an AttentionParams or a dict of the four
    fields): one phrase per field out of range, empty when they are accepted (the hardware's rule)."""
    r = _check_ranges(ranges)
    if isinstance(values, AttentionParams):
        values = {"scale_multiplier": values.scale_multiplier, "scale_shift": values.scale_shift,
                  "out_multiplier": values.out_multiplier, "out_shift": values.out_shift}
    out = []
    for name, bits in (("scale_multiplier", r.scale_mult_bits), ("out_multiplier", r.out_mult_bits)):
        if not 1 <= values[name] < 1 << bits:
            out.append(f"{name} {values[name]} is not in 1..{(1 << bits) - 1}")
    for name, top in (("scale_shift", r.scale_shift_max), ("out_shift", r.out_shift_max)):
        if not 0 <= values[name] <= top:
            out.append(f"{name} {values[name]} is not in 0..{top}")
    return out


def encode_constants(params: AttentionParams | None = None, *, scale_multiplier: int | None = None,
                     scale_shift: int | None = None, out_multiplier: int | None = None,
                     out_shift: int | None = None) -> int:
    """The constants beat of a frame: ``params``' four constants, each overridable (for tests of rejected
    constants; any value that fits its field may be sent)."""
    given = {"scale_multiplier": scale_multiplier, "scale_shift": scale_shift, "out_multiplier": out_multiplier,
             "out_shift": out_shift}
    if params is not None:
        p = _check_params(params)
        given = {k: (getattr(p, k) if v is None else v) for k, v in given.items()}
    layout = const_layout()
    word = 0
    for name, field in layout:
        value = given[name]
        if value is None:
            raise ValueError(f"{name} must be given when params is not")
        check_int(name, value, low=0, high=(1 << field.width) - 1)
        word |= int(value) << field.offset
    return word
