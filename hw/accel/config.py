"""The configuration of one generated whole-model accelerator: the model envelope it serves and its shape.

The **model envelope** (:class:`tokensift.quant.accel.image.Envelope`: max tokens, width, heads, MLP hidden
width, classes, patches, residual and probability widths, stages) sizes the token buffers; the **shape**
(``banks``, ``lanes``, ``gemm_cols``, the AXI word) sizes the datapath. Every run-time value (token counts,
method, keep counts, thresholds, SaiT's density, per-layer constants) stays out of it.

Token buffers (:class:`tokensift.quant.accel.isa.Buffer`) are stored in ``banks`` banks: row ``r`` of a
buffer lives in bank ``r % banks`` (the GEMM engine reads a tile of ``banks`` tokens in one cycle), at word
address ``(r // banks) * words(b) + c // lanes`` for column ``c`` (``words(b)`` words of ``lanes`` elements
per row).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import signed, unsigned
from amaranth.utils import ceil_log2

from tokensift.checks import check_int
from tokensift.hw.axi.config import AxiDmaConfig
from tokensift.quant.accel.image import Envelope
from tokensift.quant.accel.isa import Buffer, buffer_shapes

__all__ = ["AccelConfig", "BufferGeometry", "ELEMENT_BITS", "SIGNED_BUFFERS"]

#: width of an element on the buffer ports: every buffer's values fit a signed 17-bit value (int8 codes,
#: residual codes of at most 16 bits, 16-bit scores and logits, unsigned probabilities of at most 16 bits)
ELEMENT_BITS = 17
#: the buffers holding unsigned values are the others: the class rows (probabilities)
SIGNED_BUFFERS = frozenset(b for b in Buffer if b is not Buffer.CLS)


@dataclass(frozen=True)
class BufferGeometry:
    """Where one token buffer lives: ``rows`` x ``cols`` elements of ``bits`` bits, ``words`` words of
    ``lanes`` elements per row, ``depth`` words per bank."""

    buffer: Buffer
    rows: int
    cols: int
    bits: int
    signed: bool
    words: int
    depth: int

    @property
    def shape(self):
        return signed(self.bits) if self.signed else unsigned(self.bits)


@dataclass(frozen=True)
class AccelConfig:
    """One accelerator (keyword-only, validated).

    Attributes:
        envelope: the models it runs.
        banks: token-buffer banks, also the GEMM engine's ``rows`` (a power of two, 1..64).
        lanes: elements per buffer word, the vector units' lanes and the attention core's lanes; a power of
            two dividing the head dimension (a head's columns are whole words).
        gemm_cols: the GEMM engine's output channels per tile (a multiple of the AXI word's bytes).
        axi: the AXI4 master's DMA configuration (its ``data_bytes`` is also the GEMM weight stream's beat).
        pack_pairs: the GEMM engine's two int8 products per DSP48 (:class:`tokensift.hw.gemm.GemmConfig`;
            ``gemm_cols`` even): half its DSPs on xc7 and xcup, the same cycles.
        attention_cores: copies of the attention core (its ``heads_parallel``, 1..16): an ATTENTION op is done
            once its head is loaded into a copy, so the next heads load while it computes.
    """

    envelope: Envelope
    banks: int = 2
    lanes: int = 8
    gemm_cols: int = 64
    axi: AxiDmaConfig = AxiDmaConfig()
    pack_pairs: bool = False
    attention_cores: int = 1

    def __post_init__(self):
        if not isinstance(self.envelope, Envelope):
            raise TypeError(f"envelope must be an Envelope, not {type(self.envelope).__name__}")
        if not isinstance(self.axi, AxiDmaConfig):
            raise TypeError(f"axi must be an AxiDmaConfig, not {type(self.axi).__name__}")
        check_int("banks", self.banks, low=1, high=64, numpy=False)
        if self.banks & (self.banks - 1):
            raise ValueError(f"banks must be a power of two, not {self.banks}")
        check_int("lanes", self.lanes, low=1, high=64, numpy=False)
        if self.lanes & (self.lanes - 1):
            raise ValueError(f"lanes must be a power of two, not {self.lanes}")
        if self.envelope.head_dim % self.lanes:
            raise ValueError(f"lanes ({self.lanes}) must divide the head dimension ({self.envelope.head_dim})")
        check_int("gemm_cols", self.gemm_cols, low=1, high=1024, numpy=False)
        if self.gemm_cols % self.axi.data_bytes:
            raise ValueError(f"gemm_cols ({self.gemm_cols}) must be a multiple of the AXI word's "
                             f"{self.axi.data_bytes} bytes")
        if not isinstance(self.pack_pairs, bool):
            raise TypeError(f"pack_pairs must be a bool, not {type(self.pack_pairs).__name__}")
        if self.pack_pairs and self.gemm_cols % 2:
            raise ValueError(f"pack_pairs shares one multiplier between two GEMM columns: gemm_cols must be even, "
                             f"not {self.gemm_cols}")
        check_int("attention_cores", self.attention_cores, low=1, high=16, numpy=False)
        env = self.envelope
        if env.res_bits + 1 > ELEMENT_BITS or env.prob_frac + 1 > ELEMENT_BITS - 1:
            raise ValueError(f"the residual ({env.res_bits} bits) and probability ({env.prob_frac + 1} bits) "
                             f"formats must fit the {ELEMENT_BITS}-bit buffer ports")

    @property
    def peak_macs_per_cycle(self) -> int:
        """The MACs the design instantiates: the GEMM array's and every attention core copy's lanes."""
        return self.banks * self.gemm_cols + self.lanes * self.attention_cores

    # -- buffers ------------------------------------------------------------------------------------------
    def geometry(self, b: Buffer) -> BufferGeometry:
        env = self.envelope
        shapes = buffer_shapes(max_tokens=env.max_tokens, width=env.width, heads=env.heads,
                               mlp_hidden=env.mlp_hidden, classes=env.classes, res_bits=env.res_bits,
                               prob_frac=env.prob_frac)
        rows, cols, bits = shapes[Buffer(b).name]
        words = -(-cols // self.lanes)
        return BufferGeometry(Buffer(b), rows, cols, bits, b in SIGNED_BUFFERS, words,
                              -(-rows // self.banks) * words)

    @property
    def tile_bits(self) -> int:
        """Width of a row's tile index ``row // banks`` over every buffer."""
        return max(1, ceil_log2(max(-(-self.geometry(b).rows // self.banks) for b in Buffer)))

    @property
    def word_bits(self) -> int:
        """Width of a word index within a row over every buffer."""
        return max(1, ceil_log2(max(self.geometry(b).words for b in Buffer)))

    @property
    def row_bits(self) -> int:
        """Width of a row index (and a token count) over every buffer, up to and including ``max_tokens``."""
        return ceil_log2(max(self.geometry(b).rows for b in Buffer) + 1)

    def gemm_config(self):
        """The GEMM engine serving every linear layer of the envelope: ``banks`` x ``gemm_cols``, weights
        streamed one AXI word per beat, the widest output the residual format."""
        from tokensift.hw.gemm.config import GemmConfig
        from tokensift.quant.fixed import FixedFormat

        env = self.envelope
        return GemmConfig(rows=self.banks, cols=self.gemm_cols, max_tokens=env.max_tokens,
                          max_in=max(env.width, env.patch_dim, env.mlp_hidden),
                          max_out=max(3 * env.width, env.mlp_hidden, env.classes),
                          weight_bytes=self.axi.data_bytes, out=FixedFormat(bits=env.res_bits),
                          pack_pairs=self.pack_pairs)

    def as_dict(self) -> dict:
        return {"envelope": self.envelope.to_dict(), "banks": self.banks, "lanes": self.lanes,
                "gemm_cols": self.gemm_cols, "axi": self.axi.as_dict(),
                # only when set: the designs described before packing existed (baselines, Fmax rows) stay valid
                **({"pack_pairs": True} if self.pack_pairs else {}),
                **({"attention_cores": self.attention_cores} if self.attention_cores != 1 else {})}
