"""The LayerNorm unit's configuration, stream formats and their encoders/decoders.

A **job** is one LayerNorm layer applied to ``N`` tokens of ``C`` channels; its constants travel with it, so
one generated unit serves every layer of a model (``C`` up to ``c_max``).

Constants stream ``k_stream`` (one job = ``1 + ceil(C / lanes)`` beats):

- beat 0, the **header** (``payload.data.header``): ``dim`` (``C``), ``n_tokens`` (``N``), ``eps`` (the
  reference's ``eps_int``), ``multiplier`` and ``shift`` of the output requantization. A header with
  ``C = 0``, ``C > c_max``, ``N = 0``, ``eps = 0``, ``multiplier = 0`` or ``shift > 62`` is rejected:
  ``status.error`` is set, ``status.rejected`` counts it, and the job's beats are dropped on both input
  streams up to and including the beat with ``payload.last`` (each stream's final beat of the job);
- then ``ceil(C / lanes)`` beats of ``payload.data.consts``: ``gamma`` and ``beta`` of channels
  ``beat * lanes + l`` in lane ``l`` (lane 0 in the low bits), zero beyond ``C``.

Token stream ``i_stream``: ``N`` tokens, each ``ceil(C / lanes)`` beats of ``payload.data`` (``lanes`` signed
``in_bits`` codes, channel ``beat * lanes + l`` in lane ``l``; lanes beyond ``C`` in the last beat are
ignored); ``payload.last`` on the job's final beat (used only to drop a rejected job).

Output stream ``o_stream``: the same beat layout with ``out`` codes (zero beyond ``C``), ``payload.token_last``
on each token's final beat and ``payload.last`` on the job's final beat.

>>> cfg = LayerNormConfig(c_max=8, lanes=4)
>>> cfg.beats(6), cfg.row_depth, cfg.stats_latency
(2, 128, 64)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import signed, unsigned
from amaranth.lib import data
from amaranth.utils import ceil_log2

from tokensift.checks import check_int, check_int_array
from tokensift.hw.vector.products import product_latency
from tokensift.quant.fixed import INT8, FixedFormat, Overflow, Rounding
from tokensift.quant.layernorm import LayerNormParams
from tokensift.quant.qparams import MULTIPLIER_BITS

__all__ = ["LayerNormConfig", "uint_width", "FIELD_BITS", "SHIFT_BITS", "const_layout", "header_layout", "input_layout",
           "output_layout", "status_layout", "encode_job", "encode_tokens", "decode_outputs", "ROUNDINGS"]

#: width of the header's ``dim`` and ``n_tokens``: values above the limits are representable, so they are flagged
FIELD_BITS = 16
#: width of the header's requantization shift (0..62 valid, 63 flagged)
SHIFT_BITS = 6
#: the output roundings the run-time requantizer implements (a variable shift with a per-job rounding constant)
ROUNDINGS = (Rounding.HALF_UP, Rounding.FLOOR)


def uint_width(value: int) -> int:
    """Bits of an unsigned register that holds ``value`` (at least 1)."""
    return max(1, int(value).bit_length())


@dataclass(frozen=True)
class LayerNormConfig:
    """What a generated LayerNorm unit is built for (the per-layer constants arrive at run time).

    Attributes:
        c_max: largest channel count ``C`` (1..4096).
        lanes: codes per beat, a power of two 1..64.
        in_bits, recip_bits, norm_bits, gamma_bits, acc_bits: as :class:`tokensift.quant.layernorm.LayerNormParams`.
        out: output format; its rounding is ``HALF_UP`` or ``FLOOR``.
        mult_bits: width of the run-time requantization multiplier (1..31).
        eps_bits: width of the run-time epsilon (1..61); ``c_max`` channels of ``in_bits`` codes plus the
            largest epsilon must fit the reference's 62-bit variance.
        counter_bits: width of the status counters (1..32).
    """

    c_max: int
    lanes: int = 1
    in_bits: int = 8
    recip_bits: int = 16
    norm_bits: int = 16
    gamma_bits: int = 16
    acc_bits: int = 32
    out: FixedFormat = INT8
    mult_bits: int = MULTIPLIER_BITS
    eps_bits: int = 32
    counter_bits: int = 16

    def __post_init__(self):
        check_int("c_max", self.c_max, low=1, high=4096, numpy=False)
        lanes = check_int("lanes", self.lanes, low=1, high=64, numpy=False)
        if lanes & (lanes - 1):
            raise ValueError(f"lanes must be a power of two, not {lanes}")
        check_int("in_bits", self.in_bits, low=2, high=16, numpy=False)
        check_int("recip_bits", self.recip_bits, low=2, high=30, numpy=False)
        norm_bits = check_int("norm_bits", self.norm_bits, low=2, high=24, numpy=False)
        gamma_bits = check_int("gamma_bits", self.gamma_bits, low=2, high=24, numpy=False)
        acc_bits = check_int("acc_bits", self.acc_bits, low=2, high=32, numpy=False)
        if norm_bits + gamma_bits > acc_bits:
            raise ValueError(f"norm_bits + gamma_bits must be at most acc_bits = {acc_bits}, "
                             f"not {norm_bits} + {gamma_bits}")
        if not isinstance(self.out, FixedFormat):
            raise TypeError(f"out must be a FixedFormat, not {type(self.out).__name__}")
        if self.out.rounding not in ROUNDINGS:
            raise ValueError(f"out rounding must be half_up or floor, not {self.out.rounding.value}")
        if self.out.bits > 32:
            raise ValueError(f"out must have at most 32 bits, not {self.out.bits}")
        check_int("mult_bits", self.mult_bits, low=1, high=31, numpy=False)
        eps_bits = check_int("eps_bits", self.eps_bits, low=1, high=61, numpy=False)
        check_int("counter_bits", self.counter_bits, low=1, high=32, numpy=False)
        if self.v_max + (1 << eps_bits) - 1 >= 1 << 62:
            raise ValueError(f"c_max {self.c_max} with {self.in_bits}-bit inputs and {eps_bits}-bit epsilon "
                             "overflows the 62-bit variance; use fewer input or epsilon bits")

    def to_dict(self) -> dict:
        """JSON-friendly parameters (manifests, testbenches); :meth:`from_dict` is the inverse."""
        return {"c_max": self.c_max, "lanes": self.lanes, "in_bits": self.in_bits, "recip_bits": self.recip_bits,
                "norm_bits": self.norm_bits, "gamma_bits": self.gamma_bits, "acc_bits": self.acc_bits,
                "out_bits": self.out.bits, "out_signed": self.out.signed, "out_rounding": self.out.rounding.value,
                "out_overflow": self.out.overflow.value, "mult_bits": self.mult_bits, "eps_bits": self.eps_bits,
                "counter_bits": self.counter_bits}

    @classmethod
    def from_dict(cls, values: dict) -> LayerNormConfig:
        d = dict(values)
        out = FixedFormat(bits=d.pop("out_bits"), signed=d.pop("out_signed"), rounding=Rounding(d.pop("out_rounding")),
                          overflow=Overflow(d.pop("out_overflow")))
        return cls(**d, out=out)

    # -- sizes -------------------------------------------------------------------------------------------
    def beats(self, dim: int) -> int:
        """Beats per token (and constant beats per job) for ``dim`` channels."""
        return -(-dim // self.lanes)

    @property
    def beats_max(self) -> int:
        return self.beats(self.c_max)

    @property
    def v_max(self) -> int:
        """The reference's bound on ``sum d**2`` at ``c_max`` (:class:`LayerNormParams` checks the same)."""
        return self.c_max * ((self.c_max - 1) * ((1 << self.in_bits) - 1)) ** 2

    @property
    def stats_latency(self) -> int:
        """Cycles of the per-token statistics pipeline: ``C S2`` and ``S1**2`` (split registered products), their
        difference, ``C (C S2 - S1**2)``, epsilon, the five normalising shifts, 31 square-root bits,
        ``recip_bits + 1`` quotient bits, ``C f`` and ``S1 f``, the rounding half."""
        dim, s1 = unsigned(uint_width(self.c_max)), self.s1_shape
        p = unsigned(uint_width(self.c_max * (self.c_max << (2 * self.in_bits - 2))))
        first = max(product_latency(dim, self.s2_shape), product_latency(s1, s1))
        last = max(product_latency(dim, self.f_shape), product_latency(s1, self.f_shape))
        return first + 1 + product_latency(dim, p) + 1 + 5 + 31 + self.recip_bits + 1 + last + 1

    @property
    def row_depth(self) -> int:
        """Beats of the row buffer: two tokens plus every beat that arrives while a token's statistics are
        computed, so the input never waits at full rate (a power of two: the pointers wrap)."""
        need = 2 * self.beats_max + self.stats_latency + 16
        return 1 << ceil_log2(need)

    # -- datapath widths ---------------------------------------------------------------------------------
    @property
    def s1_shape(self):
        return signed(uint_width(self.c_max << (self.in_bits - 1)) + 1)

    @property
    def s2_shape(self):
        return unsigned(uint_width(self.c_max << (2 * self.in_bits - 2)))

    @property
    def f_shape(self):
        """The reciprocal ``f = floor(2**(31 + R) / r)``, ``2**R < f <= 2**(R + 1)``."""
        return unsigned(self.recip_bits + 1)

    @property
    def cf_shape(self):
        """``C f`` of a token."""
        return unsigned(uint_width(self.c_max << self.recip_bits))

    @property
    def h_shape(self):
        """``H = S1 f 2**L - half``."""
        return signed(self.s1_shape.width + self.f_shape.width + 1 + self.left_pre_shift + 1)

    @property
    def shift_shape(self):
        """The per-token right shift ``s``, ``0 .. norm_shift_max``."""
        return unsigned(uint_width(self.norm_shift_max))

    @property
    def left_pre_shift(self) -> int:
        """``L``: the normalising shift ``31 + R - F - k`` is negative for some ``k <= 30`` when ``F > R + 1``;
        the product is shifted left by ``L`` first, so the run-time right shift ``31 + R - F - k + L`` is never
        negative."""
        return max(0, self.norm_bits - self.recip_bits - 1)

    @property
    def norm_shift_max(self) -> int:
        return 31 + (self.recip_bits - 1) - (self.norm_bits - 1) + self.left_pre_shift

    @property
    def n_shape(self):
        """``|n| <= 2**F + 1``: ``|d| < sqrt(v)`` and ``r >= 2**30``."""
        return signed(self.norm_bits + 1)

    def check_job(self, params: LayerNormParams) -> LayerNormParams:
        """``params`` if a job of this unit can carry it; ValueError naming the first field that cannot."""
        if not isinstance(params, LayerNormParams):
            raise TypeError(f"params must be LayerNormParams, not {type(params).__name__}")
        if params.dim > self.c_max:
            raise ValueError(f"LayerNorm dim {params.dim} is above the unit's c_max {self.c_max}")
        for name in ("in_bits", "recip_bits", "norm_bits", "gamma_bits", "acc_bits"):
            if getattr(params, name) != getattr(self, name):
                raise ValueError(f"LayerNorm {name} {getattr(params, name)} differs from the unit's "
                                 f"{getattr(self, name)}")
        if params.out != self.out:
            raise ValueError(f"LayerNorm output format {params.out} differs from the unit's {self.out}")
        if params.multiplier >= 1 << self.mult_bits:
            raise ValueError(f"LayerNorm multiplier {params.multiplier} does not fit the unit's "
                             f"{self.mult_bits}-bit multiplier")
        if params.eps_int >= 1 << self.eps_bits:
            raise ValueError(f"LayerNorm eps_int {params.eps_int} does not fit the unit's {self.eps_bits}-bit epsilon")
        return params


def header_layout(cfg: LayerNormConfig) -> data.StructLayout:
    return data.StructLayout({"dim": unsigned(FIELD_BITS), "n_tokens": unsigned(FIELD_BITS),
                              "eps": unsigned(cfg.eps_bits), "multiplier": unsigned(cfg.mult_bits),
                              "shift": unsigned(SHIFT_BITS)})


def const_layout(cfg: LayerNormConfig) -> data.StructLayout:
    """One constants beat: a job header or ``lanes`` (gamma, beta) pairs, and the job's ``last`` flag."""
    consts = data.StructLayout({"gamma": data.ArrayLayout(signed(cfg.gamma_bits), cfg.lanes),
                                "beta": data.ArrayLayout(signed(cfg.acc_bits), cfg.lanes)})
    return data.StructLayout({"data": data.UnionLayout({"header": header_layout(cfg), "consts": consts}),
                              "last": 1})


def input_layout(cfg: LayerNormConfig) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(signed(cfg.in_bits), cfg.lanes), "last": 1})


def output_layout(cfg: LayerNormConfig) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(cfg.out.shape, cfg.lanes), "token_last": 1, "last": 1})


def status_layout(cfg: LayerNormConfig) -> data.StructLayout:
    """``busy``; ``error``: the latest header was rejected; ``rejected`` jobs; values that saturated in the
    affine accumulator (``acc_overflows``) and in the output requantization (``out_overflows``), as the
    reference's ``OverflowCounter`` sites ``layernorm.acc`` and ``layernorm`` count them."""
    n = cfg.counter_bits
    return data.StructLayout({"busy": 1, "error": 1, "rejected": unsigned(n), "acc_overflows": unsigned(n),
                              "out_overflows": unsigned(n)})


# -- encoders for testbenches and drivers -------------------------------------------------------------------
def _pack(values, bits: int) -> int:
    word, mask = 0, (1 << bits) - 1
    for lane, value in enumerate(values):
        word |= (int(value) & mask) << (lane * bits)
    return word


def _lanes(row: np.ndarray, lanes: int) -> list[np.ndarray]:
    padded = np.zeros(-(-row.shape[-1] // lanes) * lanes, dtype=np.int64)
    padded[: row.shape[-1]] = row
    return [padded[b * lanes:(b + 1) * lanes] for b in range(len(padded) // lanes)]


def encode_header(cfg: LayerNormConfig, *, dim: int, n_tokens: int, eps: int, multiplier: int, shift: int,
                  last: bool = False) -> int:
    """A raw header beat (fields as given, so out-of-range values can be sent to be flagged)."""
    fields = [(dim, FIELD_BITS), (n_tokens, FIELD_BITS), (eps, cfg.eps_bits), (multiplier, cfg.mult_bits),
              (shift, SHIFT_BITS)]
    word, pos = 0, 0
    for value, bits in fields:
        check_int("header field", value, low=0, high=(1 << bits) - 1, numpy=False)
        word |= value << pos
        pos += bits
    return word | (int(last) << const_layout(cfg).size - 1)


def encode_job(params: LayerNormParams, n_tokens: int, cfg: LayerNormConfig) -> list[int]:
    """The ``k_stream`` beats of one job: the header, then the constants, ``last`` on the final beat."""
    cfg.check_job(params)
    check_int("n_tokens", n_tokens, low=1, high=(1 << FIELD_BITS) - 1, numpy=False)
    beats = [encode_header(cfg, dim=params.dim, n_tokens=n_tokens, eps=params.eps_int,
                           multiplier=params.multiplier, shift=params.shift)]
    gammas = _lanes(np.asarray(params.gamma, dtype=np.int64), cfg.lanes)
    betas = _lanes(np.asarray(params.beta, dtype=np.int64), cfg.lanes)
    g_bits = cfg.lanes * cfg.gamma_bits
    for g, b in zip(gammas, betas, strict=True):
        beats.append(_pack(g, cfg.gamma_bits) | (_pack(b, cfg.acc_bits) << g_bits))
    beats[-1] |= 1 << (const_layout(cfg).size - 1)
    return beats


def encode_tokens(q, cfg: LayerNormConfig) -> list[int]:
    """The ``i_stream`` beats of ``q`` (``N x C`` codes), ``last`` on the final beat."""
    x = check_int_array("LayerNorm inputs", q, bits=cfg.in_bits)
    if x.ndim != 2 or not 1 <= x.shape[1] <= cfg.c_max or x.shape[0] < 1:
        raise ValueError(f"LayerNorm inputs must be N x C with 1 <= C <= {cfg.c_max}, not shape {x.shape}")
    beats = [_pack(chunk, cfg.in_bits) for row in x for chunk in _lanes(row, cfg.lanes)]
    beats[-1] |= 1 << (input_layout(cfg).size - 1)
    return beats


def decode_outputs(beats, dim: int, cfg: LayerNormConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(codes (N x C), token_last flags, last flags)`` of raw ``o_stream`` beats."""
    nb, bits = cfg.beats(dim), cfg.out.bits
    words = [int(w) for w in beats]
    if len(words) % nb:
        raise ValueError(f"{len(words)} output beats are not whole tokens of {nb} beats")
    width = cfg.lanes * bits
    lanes = np.array([[(w >> (lane * bits)) & ((1 << bits) - 1) for lane in range(cfg.lanes)] for w in words],
                     dtype=np.int64).reshape(-1, cfg.lanes)
    if cfg.out.signed:
        lanes = np.where(lanes >= 1 << (bits - 1), lanes - (1 << bits), lanes)
    codes = lanes.reshape(len(words) // nb, nb * cfg.lanes)
    token_last = np.array([(w >> width) & 1 for w in words], dtype=bool)
    last = np.array([(w >> (width + 1)) & 1 for w in words], dtype=bool)
    return codes, token_last, last
