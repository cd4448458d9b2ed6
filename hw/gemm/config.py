"""The one configuration object of the GEMM engine: it builds the RTL, the stream layouts, the cycle model
and the manifest, so they cannot drift apart.

>>> cfg = GemmConfig(rows=4, cols=8, max_tokens=20, max_in=64, max_out=40, weight_bytes=4)
>>> cfg.macs, cfg.token_tiles_max, cfg.record_beats, cfg.pe_acc_bits
(32, 5, 2, 22)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from amaranth.utils import ceil_log2

from tokensift.checks import check_int
from tokensift.quant.fixed import INT8, FixedFormat, Overflow, Rounding
from tokensift.quant.qparams import MAX_SHIFT, MULTIPLIER_BITS

__all__ = ["GemmConfig", "SHIFT_BITS", "OPERAND_BITS"]

#: width of a requantization shift (``0 .. 62``, the range of ``quant.fixed.requantize``)
SHIFT_BITS = 6
#: activations and weights are int8 (``IntLinear``'s ``in_bits``/``w_bits``)
OPERAND_BITS = 8

_ROUNDINGS = (Rounding.HALF_UP, Rounding.FLOOR)


@dataclass(frozen=True)
class GemmConfig:
    """Shape and limits of one generated GEMM engine (all keyword-only, validated).

    Attributes:
        rows: R, tokens per tile (a power of two, 1..64); also the epilogue's lanes (one output beat is
            one channel of the R tokens of a tile).
        cols: C, output channels per tile (1..1024), a multiple of ``weight_bytes``.
        max_tokens, max_in, max_out: the largest runtime N, K and M a job may ask for.
        weight_bytes: W, bytes per beat of the weight stream (divides ``cols``).
        out: the widest output format the engine writes (the ``o_stream`` lanes' width): signed and
            saturating, rounding HALF_UP or FLOOR. Each job picks its own signed width ``out_bits``
            (``2 .. out.bits``: int8, the residual width, int16 logits) at run time.
        acc_bits: accumulator width after the bias (``IntLinear.acc_bits``, 2..32).
        multiplier_bits: width of the unsigned per-channel requantization multiplier.
        counter_bits: width of the saturating overflow and rejected-job counters.
        pack_pairs: two int8 products per multiplier (the DSP48 operand packing of Xilinx's INT8 white paper
            WP486): the PEs of columns ``2j`` and ``2j + 1`` of a row share one ``8 x 25`` multiply
            ``a * (w_2j + w_2j+1 * 2**16)``, whose low 16 bits are ``a * w_2j`` and whose high part, corrected
            by the low half's sign, is ``a * w_2j+1``; bit-exact, half the DSPs on xc7 and xcup (one DSP48
            takes ``25 x 18``). ``cols`` must be even. No gain on ECP5, whose ``18 x 18`` multipliers take two
            blocks for the packed operand.
    """

    rows: int
    cols: int
    max_tokens: int
    max_in: int
    max_out: int
    weight_bytes: int
    out: FixedFormat = field(default=INT8)
    acc_bits: int = 32
    multiplier_bits: int = MULTIPLIER_BITS
    counter_bits: int = 16
    pack_pairs: bool = False

    def __post_init__(self):
        check_int("rows", self.rows, low=1, high=64, numpy=False)
        if self.rows & (self.rows - 1):
            raise ValueError(f"rows must be a power of two, not {self.rows}")
        check_int("cols", self.cols, low=1, high=1024, numpy=False)
        check_int("max_tokens", self.max_tokens, low=1, high=1 << 16, numpy=False)
        check_int("max_in", self.max_in, low=1, high=1 << 16, numpy=False)
        check_int("max_out", self.max_out, low=1, high=1 << 16, numpy=False)
        check_int("weight_bytes", self.weight_bytes, low=1, high=1024, numpy=False)
        if self.cols % self.weight_bytes:
            raise ValueError(f"cols ({self.cols}) must be a multiple of weight_bytes ({self.weight_bytes})")
        if not isinstance(self.out, FixedFormat):
            raise TypeError(f"out must be a FixedFormat, not {type(self.out).__name__}")
        if not self.out.signed:
            raise ValueError("out must be a signed format: a job's out_bits is a signed width")
        if self.out.overflow is not Overflow.SATURATE:
            raise ValueError(f"out.overflow must be saturate, not {self.out.overflow.value}")
        if self.out.rounding not in _ROUNDINGS:
            raise ValueError(f"out.rounding must be half_up or floor, not {self.out.rounding.value}")
        if self.out.bits > 32:
            raise ValueError(f"out.bits must be at most 32, not {self.out.bits}")
        check_int("acc_bits", self.acc_bits, low=2, high=32, numpy=False)
        check_int("multiplier_bits", self.multiplier_bits, low=2, high=31, numpy=False)
        check_int("counter_bits", self.counter_bits, low=1, high=32, numpy=False)
        if not isinstance(self.pack_pairs, bool):
            raise TypeError(f"pack_pairs must be a bool, not {type(self.pack_pairs).__name__}")
        if self.pack_pairs and self.cols % 2:
            raise ValueError(f"pack_pairs shares one multiplier between two columns: cols must be even, not "
                             f"{self.cols}")

    # -- derived sizes ------------------------------------------------------------------------------
    @property
    def lanes(self) -> int:
        """Epilogue lanes: values per output beat (``rows``)."""
        return self.rows

    @property
    def macs(self) -> int:
        return self.rows * self.cols

    @property
    def multipliers(self) -> int:
        """Multipliers of the array: one per PE, one per pair of PEs with ``pack_pairs``."""
        return self.macs // 2 if self.pack_pairs else self.macs

    @property
    def token_tiles_max(self) -> int:
        return -(-self.max_tokens // self.rows)

    @property
    def token_depth(self) -> int:
        """Words per token-buffer bank: two halves of ``token_tiles_max * max_in``."""
        return 2 * self.token_tiles_max * self.max_in

    @property
    def weight_depth(self) -> int:
        """Words per weight-buffer bank: two halves of ``max_in``."""
        return 2 * self.max_in

    @property
    def row_beats(self) -> int:
        """Weight-stream beats per reduction step k (``cols / weight_bytes``)."""
        return self.cols // self.weight_bytes

    @property
    def record_bits(self) -> int:
        """One channel's constants: bias (``acc_bits``), multiplier, shift."""
        return self.acc_bits + self.multiplier_bits + SHIFT_BITS

    @property
    def record_beats(self) -> int:
        """Weight-stream beats per channel record."""
        return -(-self.record_bits // (8 * self.weight_bytes))

    def tile_beats(self, k: int) -> int:
        """Weight-stream beats of one column tile of a job with reduction ``k``."""
        return k * self.row_beats + self.cols * self.record_beats

    @property
    def pe_acc_bits(self) -> int:
        """A processing element's accumulator: the exact sum of ``max_in`` int8 products."""
        return 2 * OPERAND_BITS - 1 + ceil_log2(self.max_in + 1)

    def job_format(self, out_bits: int) -> FixedFormat:
        """The format of a job's outputs: signed ``out_bits`` (``2 .. out.bits``), ``out``'s rounding and
        saturation; ``IntLinear`` with this ``out`` is what the engine computes for the job."""
        check_int("out_bits", out_bits, low=2, high=self.out.bits)
        return FixedFormat(bits=out_bits, rounding=self.out.rounding)

    @property
    def max_shift(self) -> int:
        return MAX_SHIFT

    def as_dict(self) -> dict:
        return {"rows": self.rows, "cols": self.cols, "max_tokens": self.max_tokens, "max_in": self.max_in,
                "max_out": self.max_out, "weight_bytes": self.weight_bytes, "out_bits": self.out.bits,
                "out_signed": self.out.signed, "rounding": self.out.rounding.value,
                "overflow": self.out.overflow.value, "acc_bits": self.acc_bits,
                "multiplier_bits": self.multiplier_bits, "counter_bits": self.counter_bits,
                "pack_pairs": self.pack_pairs}
