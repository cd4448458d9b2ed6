"""Cost of the GEMM engine (:class:`tokensift.hw.gemm.core.GemmEngine`), next to its generator. Cycles are
:mod:`tokensift.hw.gemm.cycles`. Resources, by the rules of :mod:`tokensift.hw.common.resources` (exact for
DSP and block RAM):

* DSP: one signed ``8 x 8`` multiplier per processing element (``rows x cols``) and per row the epilogue's
  int32 value times the unsigned per-channel multiplier (``multiplier_bits + 1`` signed bits), as two
  partial products: the value's low ``LOW_BITS`` (unsigned: ``LOW_BITS + 1`` signed bits) and its high
  ``acc_bits - LOW_BITS``.
* Memories (:func:`map_memory`): ``rows`` token banks of ``token_depth`` int8 words and ``cols`` weight
  banks of ``weight_depth`` int8 words, each bank built of pieces of at most ``PIECE_DEPTH`` words
  (:func:`tokensift.hw.gemm.core.pieces`), the channel records (``2 cols`` words of ``record_bits``) and the
  output FIFO (:class:`amaranth.lib.fifo.SyncFIFOBuffered` of
  :func:`~tokensift.hw.gemm.core.output_fifo_depth` beats: a memory one entry shallower).
* LUT / FF of the array and the control: the fitted linear model over :func:`features`
  (``bench/synth_baselines.py --block gemm``, then ``bench/fit_cost_model.py``).

>>> cfg = GemmConfig(rows=4, cols=8, max_tokens=16, max_in=32, max_out=32, weight_bytes=4)
>>> exact(cfg, "xcup").dsp
40
"""

from __future__ import annotations

from tokensift.hw.common.resources import (
    MemoryMap,
    Resources,
    check_family,
    fitted,
    map_memory,
    multiplier_dsps,
)
from tokensift.hw.gemm.config import OPERAND_BITS, GemmConfig
from tokensift.hw.gemm.core import LOW_BITS, drain_levels, output_fifo_depth, pieces
from tokensift.hw.gemm.layout import out_layout
from tokensift.quant.fixed import FixedFormat, Overflow, Rounding

__all__ = ["BLOCK", "GemmConfig", "memories", "dsps", "features", "exact", "resources", "build", "params_to_dict",
           "params_from_dict", "baseline_grid", "QUICK_CONFIGS"]

BLOCK = "gemm"


def _check(cfg) -> GemmConfig:
    if not isinstance(cfg, GemmConfig):
        raise TypeError(f"params must be a GemmConfig, not {type(cfg).__name__}")
    return cfg


def memories(cfg: GemmConfig, family: str) -> dict[str, tuple[MemoryMap, int]]:
    """The engine's memories by kind: ``(map of one memory, how many)``."""
    cfg = _check(cfg)
    check_family(family)
    mems = {}
    for name, depth, banks in (("tokens", cfg.token_depth, cfg.rows), ("weights", cfg.weight_depth, cfg.cols)):
        sizes = pieces(depth)
        for size in sorted(set(sizes), reverse=True):
            key = name if size == sizes[0] else f"{name}_last"
            mems[key] = (map_memory(OPERAND_BITS, size, family=family), banks * sizes.count(size))
    mems["records"] = (map_memory(cfg.record_bits, 2 * cfg.cols, family=family), 1)
    fifo_depth = output_fifo_depth(cfg.cols)
    if fifo_depth >= 2:
        mems["out_fifo"] = (map_memory(out_layout(cfg).size, fifo_depth - 1, family=family), 1)
    return mems


#: the packed multiply of ``pack_pairs``: an int8 activation times ``w_low + w_high 2**16`` (25 bits signed)
PACKED_BITS = 3 * OPERAND_BITS + 1


def dsps(cfg: GemmConfig, family: str) -> int:
    cfg = _check(cfg)
    pe = multiplier_dsps(OPERAND_BITS, PACKED_BITS if cfg.pack_pairs else OPERAND_BITS, family=family)
    mult = cfg.multiplier_bits + 1
    if cfg.acc_bits > LOW_BITS + 1:  # two partial products, core.py's split of the int32 operand
        epilogue = (multiplier_dsps(LOW_BITS + 1, mult, family=family)
                    + multiplier_dsps(cfg.acc_bits - LOW_BITS, mult, family=family))
    else:
        epilogue = multiplier_dsps(cfg.acc_bits, mult, family=family)
    return cfg.multipliers * pe + cfg.rows * epilogue


def features(cfg: GemmConfig, family: str) -> dict[str, float]:
    """Structural sizes the LUT/FF fit is linear in: ``pe_bits`` (per PE: operand, product, accumulator and
    shadow registers and the accumulator's adder), ``drain_bits`` (the one-hot column select and the OR
    tree over the shadows), ``lane_bits`` (per epilogue lane: bias adder, int32 fit, partial products and
    their sum, shifter, rounding, the fit into the widest output format and the fit into the job's
    ``out_bits``, each registered), ``column_bits`` (per column: the weight
    address delay line and the flags), ``piece_bits`` (per piece of a token or weight bank: its registered
    read data and select, and the OR over the pieces),
    ``packed_pairs`` (the multipliers shared by two PEs), ``control`` (the scheduler, loader and counters: a
    constant)."""
    cfg = _check(cfg)
    check_family(family)
    acc = cfg.pe_acc_bits
    levels = drain_levels(cfg.cols)
    pe_bits = cfg.macs * (4 * OPERAND_BITS + 2 * acc)
    prod = cfg.acc_bits + cfg.multiplier_bits + 1
    piece_count = cfg.rows * len(pieces(cfg.token_depth)) + cfg.cols * len(pieces(cfg.weight_depth))
    return {
        "pe_bits": float(pe_bits),
        "drain_bits": float(cfg.macs * (acc + 1) + cfg.rows * acc * levels),
        "lane_bits": float(cfg.rows * (3 * cfg.acc_bits + 2 * cfg.multiplier_bits + 5 * prod + 2 * cfg.out.bits)),
        "column_bits": float(cfg.cols * (max(1, (cfg.weight_depth - 1).bit_length()) + 4 + OPERAND_BITS)),
        "piece_bits": float(piece_count * (OPERAND_BITS + 1)),
        # pack_pairs: per pair the packed weight's adder, the wide product and the high half's correction (on
        # xc7 Yosys keeps the 25 x 8 product's registers in the fabric; a DSP48E2 absorbs most of them)
        "packed_pairs": float(cfg.multipliers if cfg.pack_pairs else 0),
        "control": 1.0,
    }


def exact(cfg: GemmConfig, family: str) -> Resources:
    """The rule-based part: DSPs, block RAM, LUT RAM and the memories' soft logic."""
    cfg = _check(cfg)
    total = Resources(dsp=dsps(cfg, family))
    for mem, count in memories(cfg, family).values():
        total = total + mem.resources * count
    return total


def resources(cfg: GemmConfig, family: str) -> Resources:
    """DSP and block RAM (exact), LUT and FF (rules plus the fitted model) of the engine."""
    lut, ff = fitted(BLOCK, family, features(cfg, family))
    return exact(cfg, family) + Resources(lut=lut, ff=ff)


def build(cfg: GemmConfig):
    from tokensift.hw.gemm.core import GemmEngine

    return GemmEngine(config=_check(cfg))


def params_to_dict(cfg: GemmConfig) -> dict:
    return _check(cfg).as_dict()


def params_from_dict(d: dict) -> GemmConfig:
    d = dict(d)
    fmt = {"bits": d.pop("out_bits", 8), "signed": d.pop("out_signed", True),
           "rounding": Rounding(d.pop("rounding", "half_up")), "overflow": Overflow(d.pop("overflow", "saturate"))}
    return GemmConfig(out=FixedFormat(**fmt), **d)


#: the configurations synthesized for the baselines (bench/synth_baselines.py): name -> parameters
_GRID = [
    ("r2_c4_w2", dict(rows=2, cols=4, max_tokens=16, max_in=32, max_out=32, weight_bytes=2)),
    ("r4_c8_w4", dict(rows=4, cols=8, max_tokens=16, max_in=32, max_out=32, weight_bytes=4)),
    ("r4_c8_w8_n64", dict(rows=4, cols=8, max_tokens=64, max_in=256, max_out=512, weight_bytes=8)),
    ("r2_c16_w4", dict(rows=2, cols=16, max_tokens=24, max_in=64, max_out=64, weight_bytes=4)),
    ("r8_c4_w4", dict(rows=8, cols=4, max_tokens=40, max_in=48, max_out=64, weight_bytes=4)),
    ("r8_c16_w16", dict(rows=8, cols=16, max_tokens=64, max_in=128, max_out=128, weight_bytes=16)),
    # the residual's int16 as the widest format: the output fits, the job's width mask and the FIFO widen
    ("r2_c4_w2_o16", dict(rows=2, cols=4, max_tokens=16, max_in=32, max_out=32, weight_bytes=2, out_bits=16)),
    # two int8 products per DSP48: half the array's DSPs on xc7 and xcup (none saved on ECP5)
    ("r4_c8_w4_pack", dict(rows=4, cols=8, max_tokens=16, max_in=32, max_out=32, weight_bytes=4, pack_pairs=True)),
    ("r8_c16_w16_pack", dict(rows=8, cols=16, max_tokens=64, max_in=128, max_out=128, weight_bytes=16,
                             pack_pairs=True)),
]
QUICK_CONFIGS = ["r2_c4_w2"]


def baseline_grid() -> list[tuple[str, dict]]:
    return [(name, params_to_dict(params_from_dict(kw))) for name, kw in _GRID]
