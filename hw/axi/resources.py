"""Cost of the bus blocks, next to their generators: the register bank, the read DMA and the write DMA.

Resources, by the rules of :mod:`tokensift.hw.common.resources` (exact for DSP and block RAM): none of the
three multiplies or holds a memory (the DMAs' burst queues are flip-flops, :mod:`tokensift.hw.axi.queue`), so
DSP and block RAM are 0; LUT and FF come from the fitted linear models over the ``*_features`` functions
(``bench/synth_baselines.py --block axi_...``, then ``bench/fit_cost_model.py``). The cycles of a transfer
are :mod:`tokensift.hw.axi.cycles`; a register access takes
:data:`~tokensift.hw.axi.registers.WRITE_LATENCY` / :data:`~tokensift.hw.axi.registers.READ_LATENCY` cycles.

The registry (:mod:`tokensift.hw.cost.registry`) reaches each block through its own module:
:mod:`~tokensift.hw.axi.lite_resources`, :mod:`~tokensift.hw.axi.reader_resources`,
:mod:`~tokensift.hw.axi.writer_resources`.

>>> from tokensift.hw.axi.config import AxiDmaConfig
>>> dma_exact(AxiDmaConfig(), "xcup").dsp, dma_exact(AxiDmaConfig(), "ecp5").ebr
(0, 0)
"""

from __future__ import annotations

from tokensift.hw.axi.config import Access, AxiDmaConfig, RegisterMap
from tokensift.hw.common.resources import Resources, check_family

#: range checks of registers this wide or wider come out of Yosys's Xilinx flow as carry chains (CARRY4 /
#: CARRY8 and their LUTs: 16-, 17- and 32-bit registers in the synthesis grid), narrower ones as LUTs only
#: (12 bits and below): a different cost per bit
WIDE_COMPARE_BITS = 16

__all__ = ["WIDE_COMPARE_BITS", "check_config", "check_regmap", "dma_features", "dma_exact", "lite_features", "lite_exact",
           "dma_to_dict", "dma_from_dict"]


def check_config(config) -> AxiDmaConfig:
    if not isinstance(config, AxiDmaConfig):
        raise TypeError(f"params must be an AxiDmaConfig, not {type(config).__name__}")
    return config


def check_regmap(regmap) -> RegisterMap:
    if not isinstance(regmap, RegisterMap):
        raise TypeError(f"params must be a RegisterMap, not {type(regmap).__name__}")
    return regmap


def dma_features(config: AxiDmaConfig, family: str) -> dict[str, float]:
    """``addr_bits`` (the planner's address and its adder, the AxADDR register, the end-of-space check),
    ``word_bits`` (the words left, their subtraction and comparison with the cap), ``data_bits`` (the reader's
    output register and byte mask; the writer's WSTRB mux), ``queue_bits`` (the burst queues' slots:
    ``max_outstanding x`` the bits of an entry), ``queue_read_bits`` (their read multiplexers: entry bits x
    ``log2`` of the depth), ``burst_bits`` (the cap and the burst length)."""
    c = check_config(config)
    check_family(family)
    depth_bits = max(1, (c.max_outstanding - 1).bit_length())
    entry = 1 + c.data_bytes + 8  # the writer's W entry (length, last, keep); the reader's has no length
    return {"addr_bits": float(c.addr_width), "word_bits": float(c.word_bits),
            "data_bits": float(c.data_bits), "queue_bits": float(c.max_outstanding * entry),
            "queue_read_bits": float(entry * depth_bits if c.max_outstanding > 1 else 0),
            "burst_bits": float(c.max_burst.bit_length())}


def dma_exact(config: AxiDmaConfig, family: str) -> Resources:
    """No DSP, no memory."""
    check_config(config)
    check_family(family)
    return Resources()


def lite_features(regmap: RegisterMap, family: str) -> dict[str, float]:
    """``registers`` (the read and write hit flags, the error register included), ``decode_bits`` (their
    address compares: ``addr_width x`` that count), ``ranged`` / ``ranged_bits`` (each range-checked register's
    registered flag / its two compares), ``ranged_wide_bits`` (the compares of registers of at least
    :data:`WIDE_COMPARE_BITS` bits, which Yosys's Xilinx flow builds on carry chains rather than in LUTs), ``stored_bits`` (RW and W1C flip-flops with their write/clear logic),
    ``read_bits`` (the read AND-OR over every readable bit), ``pulse_bits`` (the W1S pulse registers),
    ``write_width`` (the held W data and strobe mask, as wide as the widest writable register)."""
    rm = check_regmap(regmap)
    check_family(family)
    regs = rm.registers
    writable = [r.width for r in regs if r.access is not Access.RO]
    return {"registers": float(len(regs) + 1),
            "decode_bits": float(rm.addr_width * (len(regs) + 1)),
            "ranged": float(sum(1 for r in regs if r.ranged)),
            "ranged_bits": float(sum(r.width for r in regs if r.ranged)),
            "ranged_wide_bits": float(sum(r.width for r in regs if r.ranged and r.width >= WIDE_COMPARE_BITS)),
            "stored_bits": float(sum(r.width for r in regs if r.access in (Access.RW, Access.W1C))),
            "read_bits": float(sum(r.width for r in regs if r.access is not Access.W1S)),
            "pulse_bits": float(sum(r.width for r in regs if r.access is Access.W1S)),
            "write_width": float(max(writable, default=0))}


def lite_exact(regmap: RegisterMap, family: str) -> Resources:
    """No DSP, no memory."""
    check_regmap(regmap)
    check_family(family)
    return Resources()


def dma_to_dict(config: AxiDmaConfig) -> dict:
    return check_config(config).as_dict()


def dma_from_dict(d: dict) -> AxiDmaConfig:
    return AxiDmaConfig(**d)
