"""Constant records: the integer parameters of each kernel as the sequencer fetches them from DRAM.

A record is a 16-byte header (``tag`` u32, ``length`` u32 in bytes, 8 bytes reserved 0), its scalars as
little-endian int64, then its arrays, each starting at an 8-byte boundary, in the dtypes of the schema
(:data:`SCHEMAS`). Array lengths follow from the scalars, so a record is self-describing and a wrong
``length`` or tag is a malformed image (ValueError). A GEMM's int8 weights are not in a record: they sit
in the weights region as the GEMM engine's weight stream (:mod:`tokensift.quant.accel.stream`, which repeats
the LIN record's bias, multipliers and shifts in the engine's channel records) at the instruction's
``addr_a``; SPViT's nested predictor layers as plain channel-major ``[m][k]`` matrices.

``to_record`` / ``from_record`` convert the :mod:`tokensift.quant` parameter objects (IntLinear's integer
part, LayerNormParams, GeluParams, AttentionParams, SigmoidParams) to and from records: the objects come
back with the same integers, so the kernels compute the same bits (real scales are documentation only and
come back as NaN).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tokensift.quant.attention import AttentionParams
from tokensift.quant.fixed import FixedFormat, Overflow, Rounding
from tokensift.quant.gelu import GeluParams
from tokensift.quant.gemm import IntLinear
from tokensift.quant.layernorm import LayerNormParams
from tokensift.quant.sigmoid import SigmoidParams
from tokensift.quant.softmax import SoftmaxParams, SoftmaxVariant

__all__ = ["Tag", "Schema", "SCHEMAS", "RECORD_HEADER", "encode_record", "decode_record", "record_size",
           "linear_record", "linear_from", "layernorm_record", "layernorm_from", "gelu_record", "gelu_from",
           "attention_record", "attention_from", "sigmoid_record", "sigmoid_from", "plain_format"]

RECORD_HEADER = 16


class Tag:
    """Record tags (four ASCII letters as a little-endian u32)."""

    LINEAR = int.from_bytes(b"LIN ", "little")
    LAYERNORM = int.from_bytes(b"LNRM", "little")
    GELU = int.from_bytes(b"GELU", "little")
    ATTENTION = int.from_bytes(b"ATTN", "little")
    POSITION = int.from_bytes(b"POS ", "little")
    SIGMOID = int.from_bytes(b"SIGM", "little")
    STAGE = int.from_bytes(b"STGE", "little")

    @staticmethod
    def name(tag: int) -> str:
        try:
            return tag.to_bytes(4, "little").decode("ascii").strip()
        except (UnicodeDecodeError, OverflowError):
            return f"{tag:#x}"


@dataclass(frozen=True)
class Schema:
    """A record's scalars (names) and arrays (name, dtype, length from the scalars)."""

    tag: int
    scalars: tuple[str, ...]
    arrays: tuple[tuple[str, str, Callable[[dict], int]], ...] = ()

    def lengths(self, scalars: dict[str, int]) -> list[int]:
        out = []
        for name, _, length in self.arrays:
            n = int(length(scalars))
            if n < 0:
                raise ValueError(f"{Tag.name(self.tag)} record: array {name} has a negative length {n}")
            out.append(n)
        return out


_EXP = ("variant", "log2_frac", "exp_frac", "prob_frac")

SCHEMAS = {s.tag: s for s in (
    Schema(Tag.LINEAR, ("m", "k", "in_bits", "w_bits", "acc_bits", "out_bits"),
           (("bias", "<i4", lambda s: s["m"]), ("multipliers", "<i4", lambda s: s["m"]),
            ("shifts", "<u1", lambda s: s["m"]))),
    Schema(Tag.LAYERNORM, ("dim", "in_bits", "eps_int", "multiplier", "shift", "recip_bits", "norm_bits",
                           "gamma_bits", "acc_bits", "out_bits"),
           (("gamma", "<i4", lambda s: s["dim"]), ("beta", "<i4", lambda s: s["dim"]))),
    Schema(Tag.GELU, ("in_bits", "pre_shift", "clip", "one", "multiplier", "shift", "out_bits")),
    Schema(Tag.ATTENTION, ("n_max", "head_dim", "lanes", "data_bits", "acc_bits", *_EXP, "scale_multiplier",
                           "scale_shift", "out_multiplier", "out_shift", "heads_parallel")),
    Schema(Tag.POSITION, ("patches", "dim", "bits"),
           (("cls", "<i2", lambda s: s["dim"]), ("pos", "<i2", lambda s: s["patches"] * s["dim"]))),
    Schema(Tag.SIGMOID, ("in_bits", "multiplier", "shift", *_EXP)),
    # method-specific stage constants: ``option`` is EViT's fuse flag, AS-ViT's head importance (0 token,
    # 1 image) or SPViT's package rule (0 sum, 1 mean); ``refs`` are SPViT's nested records (see compiler)
    Schema(Tag.STAGE, ("method", "block", "stage", "site", "option", "heads", "head_dim", "mean_multiplier",
                       "mean_shift", "nrefs"), (("refs", "<u4", lambda s: s["nrefs"]),)),
)}


def _align8(n: int) -> int:
    return (n + 7) & ~7


def record_size(tag: int, scalars: dict[str, int]) -> int:
    schema = SCHEMAS[tag]
    size = RECORD_HEADER + 8 * len(schema.scalars)
    for (_, dtype, _), n in zip(schema.arrays, schema.lengths(scalars), strict=True):
        size = _align8(size) + n * np.dtype(dtype).itemsize
    return _align8(size)


def encode_record(tag: int, scalars: dict[str, int], arrays: dict[str, np.ndarray] | None = None) -> bytes:
    """The record's bytes; every scalar and array of the schema must be given, and fit its dtype."""
    schema = SCHEMAS[tag]
    arrays = arrays or {}
    if set(scalars) != set(schema.scalars) or set(arrays) != {a[0] for a in schema.arrays}:
        raise ValueError(f"{Tag.name(tag)} record needs scalars {schema.scalars} and arrays "
                         f"{[a[0] for a in schema.arrays]}, not {sorted(scalars)} and {sorted(arrays)}")
    body = bytearray(struct.pack(f"<{len(schema.scalars)}q", *(int(scalars[n]) for n in schema.scalars)))
    for (name, dtype, _), n in zip(schema.arrays, schema.lengths(scalars), strict=True):
        values = np.asarray(arrays[name]).reshape(-1)
        if values.shape != (n,):
            raise ValueError(f"{Tag.name(tag)} record: array {name} must have {n} values, not {values.size}")
        info = np.iinfo(np.dtype(dtype))
        if values.size and (int(values.min()) < info.min or int(values.max()) > info.max):
            raise ValueError(f"{Tag.name(tag)} record: array {name} does not fit {np.dtype(dtype).name}")
        body += bytes(_align8(RECORD_HEADER + len(body)) - RECORD_HEADER - len(body))
        body += values.astype(dtype).tobytes()
    body += bytes(_align8(RECORD_HEADER + len(body)) - RECORD_HEADER - len(body))
    return struct.pack("<II8x", tag, RECORD_HEADER + len(body)) + bytes(body)


def decode_record(data, offset: int, tag: int) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """The scalars and arrays of the record of type ``tag`` at ``offset`` of ``data`` (ValueError when the
    tag, the length or the bounds are wrong)."""
    if offset < 0 or offset + RECORD_HEADER > len(data) or offset % 8:
        raise ValueError(f"a {Tag.name(tag)} record at offset {offset} is outside the image or not 8-byte aligned")
    found, length = struct.unpack_from("<II", data, offset)
    if found != tag:
        raise ValueError(f"offset {offset} holds a {Tag.name(found)} record, not a {Tag.name(tag)} record")
    schema = SCHEMAS[tag]
    if offset + RECORD_HEADER + 8 * len(schema.scalars) > len(data):
        raise ValueError(f"the {Tag.name(tag)} record at offset {offset} runs past the end of the image")
    values = struct.unpack_from(f"<{len(schema.scalars)}q", data, offset + RECORD_HEADER)
    scalars = dict(zip(schema.scalars, values, strict=True))
    expected = record_size(tag, scalars)
    if length != expected or offset + length > len(data):
        raise ValueError(f"the {Tag.name(tag)} record at offset {offset} says it is {length} bytes; its "
                         f"fields make it {expected}" + ("" if offset + length <= len(data) else
                                                         ", past the end of the image"))
    arrays = {}
    pos = RECORD_HEADER + 8 * len(schema.scalars)
    for (name, dtype, _), n in zip(schema.arrays, schema.lengths(scalars), strict=True):
        pos = _align8(pos)
        arrays[name] = np.frombuffer(bytes(data[offset + pos:offset + pos + n * np.dtype(dtype).itemsize]),
                                     dtype=dtype).astype(np.int64)
        pos += n * np.dtype(dtype).itemsize
    return scalars, arrays


# -- quant parameter objects <-> records --------------------------------------------------------------------
def plain_format(fmt: FixedFormat, what: str) -> int:
    """The bits of a signed integer format with the default rounding and saturation (what the records carry)."""
    if (fmt.frac, fmt.signed, fmt.rounding, fmt.overflow) != (0, True, Rounding.HALF_UP, Overflow.SATURATE):
        raise ValueError(f"{what}: the accelerator's output formats are signed integers with half-up rounding "
                         f"and saturation, not {fmt}")
    return fmt.bits


def linear_record(layer: IntLinear, what: str) -> tuple[dict, dict]:
    if layer.w_bits > 8:
        raise ValueError(f"{what}: the weights region holds int8 weights, not {layer.w_bits}-bit ones")
    return ({"m": layer.out_features, "k": layer.in_features, "in_bits": layer.in_bits, "w_bits": layer.w_bits,
             "acc_bits": layer.acc_bits, "out_bits": plain_format(layer.out, what)},
            {"bias": layer.bias, "multipliers": layer.multipliers, "shifts": layer.shifts})


def linear_from(scalars: dict, arrays: dict, weight: np.ndarray) -> IntLinear:
    m = scalars["m"]
    nan = np.full(m, np.nan)
    return IntLinear(weight=weight, bias=arrays["bias"], multipliers=arrays["multipliers"], shifts=arrays["shifts"],
                     in_scale=float("nan"), weight_scale=nan, out_scale=nan.copy(), in_bits=scalars["in_bits"],
                     w_bits=scalars["w_bits"], acc_bits=scalars["acc_bits"], out=FixedFormat(bits=scalars["out_bits"]))


def layernorm_record(p: LayerNormParams, what: str) -> tuple[dict, dict]:
    return ({"dim": p.dim, "in_bits": p.in_bits, "eps_int": p.eps_int, "multiplier": p.multiplier, "shift": p.shift,
             "recip_bits": p.recip_bits, "norm_bits": p.norm_bits, "gamma_bits": p.gamma_bits, "acc_bits": p.acc_bits,
             "out_bits": plain_format(p.out, what)}, {"gamma": p.gamma, "beta": p.beta})


def layernorm_from(scalars: dict, arrays: dict) -> LayerNormParams:
    s = dict(scalars)
    out = FixedFormat(bits=s.pop("out_bits"))
    return LayerNormParams(**s, gamma=arrays["gamma"], beta=arrays["beta"], out=out)


def gelu_record(p: GeluParams, what: str) -> tuple[dict, dict]:
    return ({"in_bits": p.in_bits, "pre_shift": p.pre_shift, "clip": p.clip, "one": p.one,
             "multiplier": p.multiplier, "shift": p.shift, "out_bits": plain_format(p.out, what)}, {})


def gelu_from(scalars: dict, arrays: dict) -> GeluParams:
    s = dict(scalars)
    return GeluParams(**{k: v for k, v in s.items() if k != "out_bits"}, out=FixedFormat(bits=s["out_bits"]))


_VARIANTS = list(SoftmaxVariant)


def _exp_scalars(p: SoftmaxParams) -> dict:
    return {"variant": _VARIANTS.index(p.variant), "log2_frac": p.log2_frac, "exp_frac": p.exp_frac,
            "prob_frac": p.prob_frac}


def _exp_from(s: dict) -> SoftmaxParams:
    if not 0 <= s["variant"] < len(_VARIANTS):
        raise ValueError(f"softmax variant {s['variant']} is not one of 0..{len(_VARIANTS) - 1}")
    return SoftmaxParams(variant=_VARIANTS[s["variant"]], log2_frac=s["log2_frac"], exp_frac=s["exp_frac"],
                         prob_frac=s["prob_frac"])


def attention_record(p: AttentionParams, what: str) -> tuple[dict, dict]:
    return ({"n_max": p.n_max, "head_dim": p.head_dim, "lanes": p.lanes, "data_bits": p.data_bits,
             "acc_bits": p.acc_bits, **_exp_scalars(p.softmax), "scale_multiplier": p.scale_multiplier,
             "scale_shift": p.scale_shift, "out_multiplier": p.out_multiplier, "out_shift": p.out_shift,
             "heads_parallel": p.heads_parallel}, {})


def attention_from(scalars: dict, arrays: dict) -> AttentionParams:
    s = {k: v for k, v in scalars.items() if k not in _EXP}
    return AttentionParams(**s, softmax=_exp_from(scalars))


def sigmoid_record(p: SigmoidParams, what: str) -> tuple[dict, dict]:
    return {"in_bits": p.in_bits, "multiplier": p.multiplier, "shift": p.shift, **_exp_scalars(p.exp)}, {}


def sigmoid_from(scalars: dict, arrays: dict) -> SigmoidParams:
    return SigmoidParams(in_bits=scalars["in_bits"], multiplier=scalars["multiplier"], shift=scalars["shift"],
                         exp=_exp_from(scalars))
