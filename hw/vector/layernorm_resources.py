"""Resources of the LayerNorm unit (:class:`tokensift.hw.vector.layernorm.LayerNorm`), next to its generator.

By the rules of :mod:`tokensift.hw.common.resources` (exact for DSP and block RAM):

* DSP (:func:`multipliers`, each through :func:`~tokensift.hw.common.resources.multiplier_dsps`): per lane
  the square ``q**2`` and the pieces (:func:`tokensift.hw.vector.products.pieces`) of ``q * C f``,
  ``n * gamma`` and ``acc * multiplier``; per unit the pieces of the statistics' ``C S2``, ``S1**2``,
  ``C (C S2 - S1**2)``, ``C f`` and ``S1 f``. A signed-by-unsigned piece is a signed product with the
  unsigned chunk one bit wider (as the emitted Verilog has it).
* Memories (:func:`memories`, :func:`~tokensift.hw.common.resources.map_memory`): the row buffer
  (``row_depth`` beats of ``lanes * in_bits``), the job's constants (``ceil(c_max / lanes)`` words of
  ``lanes * (gamma_bits + acc_bits)``), the token FIFO and the output FIFO (``SyncFIFOBuffered``: a memory
  one entry shallower, read synchronously).

>>> from tokensift.hw.vector.layernorm_layout import LayerNormConfig
>>> cfg = LayerNormConfig(c_max=384, lanes=16)
>>> exact(cfg, "xcup").dsp, exact(cfg, "ecp5").dsp
(103, 103)
"""

from __future__ import annotations

from amaranth.hdl import signed, unsigned

from tokensift.hw.common.resources import (
    MemoryMap,
    Resources,
    check_family,
    fitted,
    map_memory,
    multiplier_dsps,
)
from tokensift.hw.vector.layernorm import out_fifo_depth
from tokensift.hw.vector.layernorm_layout import LayerNormConfig, output_layout, uint_width
from tokensift.hw.vector.layernorm_stats import V_BITS
from tokensift.hw.vector.products import pieces, product_latency, register_bits

__all__ = ["BLOCK", "multipliers", "dsps", "memories", "features", "exact", "resources", "params_to_dict",
           "params_from_dict", "build"]

BLOCK = "layernorm"


def _check(cfg) -> LayerNormConfig:
    if not isinstance(cfg, LayerNormConfig):
        raise TypeError(f"config must be a LayerNormConfig, not {type(cfg).__name__}")
    return cfg


def _products(cfg: LayerNormConfig) -> list[tuple[str, object, object, int]]:
    """``(name, a_shape, b_shape, copies)`` of every product the unit splits into registered pieces."""
    c = cfg
    dim = unsigned(uint_width(c.c_max))
    p = unsigned(uint_width(c.c_max * (c.c_max << (2 * c.in_bits - 2))))
    return [("C*S2", dim, c.s2_shape, 1), ("S1*S1", c.s1_shape, c.s1_shape, 1), ("C*T", dim, p, 1),
            ("C*f", dim, c.f_shape, 1), ("S1*f", c.s1_shape, c.f_shape, 1),
            ("q*Cf", signed(c.in_bits), c.cf_shape, c.lanes), ("n*gamma", c.n_shape, signed(c.gamma_bits), c.lanes),
            ("acc*multiplier", signed(c.acc_bits), unsigned(c.mult_bits), c.lanes)]


def multipliers(cfg: LayerNormConfig) -> list[tuple[str, int, int, bool, int | None]]:
    """``(name, a_bits, b_bits, signed, product_bits)`` of every multiplier primitive the RTL has (``None``:
    the full product): each lane's square, and every piece of the split products (:mod:`.products`)."""
    c = _check(cfg)
    out = [(f"square{lane}", c.in_bits, c.in_bits, True, None) for lane in range(c.lanes)]
    for name, a, b, copies in _products(c):
        for k in range(copies):
            tag = f"{name}{k}" if copies > 1 else name
            out += [(f"{tag}.{i}", wa, wb, sgn, None) for i, (wa, wb, sgn) in enumerate(pieces(a, b))]
    return out


def dsps(cfg: LayerNormConfig, family: str) -> int:
    check_family(family)
    return sum(multiplier_dsps(a, b, family=family, signed=s, y_bits=y) for _, a, b, s, y in multipliers(cfg))


def memories(cfg: LayerNormConfig, family: str) -> dict[str, MemoryMap]:
    c = _check(cfg)
    token_bits = c.cf_shape.width + c.h_shape.width + c.shift_shape.width
    mems = {
        "rows": map_memory(c.lanes * c.in_bits, c.row_depth, family=family),
        "consts": map_memory(c.lanes * (c.gamma_bits + c.acc_bits), c.beats_max, family=family),
        "tokens": map_memory(token_bits, c.row_depth - 1, family=family),
        "out_fifo": map_memory(output_layout(c).size, out_fifo_depth(c) - 1, family=family),
    }
    return mems


def features(cfg: LayerNormConfig, family: str) -> dict[str, float]:
    """Structural sizes of the RTL the LUT/FF fit is linear in.

    ``lane_bits``: per lane, the normalising datapath's registers (code, the lane's copies of ``H`` and the
    shift, the difference and its two shift stages, ``n``, beta delayed beside ``n gamma``, the accumulator,
    the requantization's rounding constant and shift copies, its rounding and two shift stages, the output)
    and the registers of its three split products (:func:`~tokensift.hw.vector.products.register_bits`);
    ``shift_bits``: per lane, the bits the four variable-shift stages select among; ``stats_bits``: the
    statistics pipeline's registers (its five split products, the square root's remainder, root and
    unconsumed bits, the divider's remainder, quotient and divisor, ``S1`` and ``k`` carried along);
    ``const_bits``: per lane, the registered gamma and beta and the accumulation's squares (with their operand
    copies) and adder trees.
    """
    c = _check(cfg)
    check_family(family)
    cf = c.cf_shape.width
    prod = c.in_bits + cf + 1
    d = max(prod + c.left_pre_shift, c.h_shape.width) + 1
    n = c.n_shape.width
    rq = c.acc_bits + c.mult_bits + 2
    sh = c.shift_shape.width
    products = {name: register_bits(a, b) for name, a, b, _ in _products(c)}
    lat_g = product_latency(c.n_shape, signed(c.gamma_bits))
    lane = (c.in_bits + c.h_shape.width + 2 * sh + 2 * d + n + lat_g * c.acc_bits + c.acc_bits
            + (rq + 1) + 12 + 3 * (rq + 1) + c.out.bits
            + products["q*Cf"] + products["n*gamma"] + products["acc*multiplier"])
    s1, f = c.s1_shape.width, c.f_shape.width
    root = sum((V_BITS - 2 * i) + (i + 2) + (i + 1) for i in range(31))
    div = (c.recip_bits + 1) * (31 + f + 31)
    carried = (5 + 31 + c.recip_bits + 1) * (s1 + 5)
    stats_products = sum(products[k] for k in ("C*S2", "S1*S1", "C*T", "C*f", "S1*f"))
    return {
        "lane_bits": float(c.lanes * lane),
        "shift_bits": float(c.lanes * 2 * (d + rq)),
        "stats_bits": float(root + div + carried + 5 * V_BITS + stats_products),
        "const_bits": float(c.lanes * (c.gamma_bits + c.acc_bits + 5 * c.in_bits)),
    }


def exact(cfg: LayerNormConfig, family: str) -> Resources:
    """DSPs, block RAM, and the LUT RAM and soft logic of the memories."""
    total = Resources(dsp=dsps(cfg, family))
    for mem in memories(cfg, family).values():
        total = total + mem.resources
    return total


def resources(cfg: LayerNormConfig, family: str) -> Resources:
    """DSP and block RAM (exact), LUT and FF (rules plus the fitted model) of one LayerNorm unit."""
    lut, ff = fitted(BLOCK, family, features(cfg, family))
    return exact(cfg, family) + Resources(lut=lut, ff=ff)


def build(cfg: LayerNormConfig):
    from tokensift.hw.vector.layernorm import LayerNorm

    return LayerNorm(config=_check(cfg))


def params_to_dict(cfg: LayerNormConfig) -> dict:
    return _check(cfg).to_dict()


def params_from_dict(d: dict) -> LayerNormConfig:
    return LayerNormConfig.from_dict(d)
