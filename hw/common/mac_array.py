"""The MAC array: ``lanes`` multipliers shared by both matrix products of attention.

Each lane is one ``a * b`` with its operands and its product registered (one DSP slice: ``a`` up to 18
signed bits, ``b`` up to 27), the shape synthesis can pack into the slice's own input and pipeline
registers, so no logic of the caller (an operand multiplexer, a block-RAM read) shares a clock period
with the multiplier. Two modes share the multipliers cycle by cycle:

- **dot** (``Q K^T``): the ``lanes`` products are summed by a registered adder tree and accumulated over
  the chunks of a row (``first`` starts, ``last`` ends); the sum comes out on ``dot`` with ``dot_valid``.
- **vec** (``P V``): every lane accumulates its own products over a row of ``V`` (``first`` .. ``last``);
  the ``lanes`` sums come out on ``vec`` with ``vec_valid``.

A ``tag`` travels with each operation and comes out with its result. Latencies are fixed (no stalls):
:attr:`MacArray.dot_latency` and :attr:`MacArray.vec_latency` cycles from the inputs to the result.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from tokensift.checks import check_int

__all__ = ["MacArray", "MODE_DOT", "MODE_VEC", "mul_const"]

MODE_DOT = 0
MODE_VEC = 1


def mul_const(value, k: int):
    """``value * k`` for a constant ``k >= 0`` as a sum of shifts: bookkeeping products (row counts times
    chunks) stay in logic instead of taking a DSP slice from the MAC array's budget."""
    terms = [value << bit for bit in range(k.bit_length()) if (k >> bit) & 1]
    return sum(terms[1:], terms[0]) if terms else value & 0


class MacArray(wiring.Component):
    """``lanes`` registered multipliers with a dot-product tree and per-lane accumulators.

    Parameters (keyword-only)
    -------------------------
    lanes : int
        Number of multipliers (1..256).
    a_bits, b_bits : int
        Signed operand widths (2..27).
    dot_bits : int
        Width of the dot-mode operand products that matter (products of ``dot_bits // 2``-bit values are
        exact in ``dot_bits``); the tree works at this width.
    acc_bits : int
        Width of the dot sum and of the per-lane accumulators.
    tag_bits : int
        Width of the tag carried along.
    """

    def __init__(self, *, lanes: int, a_bits: int, b_bits: int, dot_bits: int, acc_bits: int, tag_bits: int):
        check_int("lanes", lanes, low=1, high=256, numpy=False)
        check_int("a_bits", a_bits, low=2, high=27, numpy=False)
        check_int("b_bits", b_bits, low=2, high=27, numpy=False)
        check_int("dot_bits", dot_bits, low=2, high=a_bits + b_bits, numpy=False)
        check_int("acc_bits", acc_bits, low=2, high=64, numpy=False)
        check_int("tag_bits", tag_bits, low=1, high=64, numpy=False)
        self._lanes, self._dot_bits, self._acc_bits = lanes, dot_bits, acc_bits
        self._tree_levels = ceil_log2(lanes)
        super().__init__({
            "valid": In(1),
            "mode": In(1),
            "first": In(1),
            "last": In(1),
            "tag": In(tag_bits),
            "a": In(data.ArrayLayout(signed(a_bits), lanes)),
            "b": In(data.ArrayLayout(signed(b_bits), lanes)),
            "dot_valid": Out(1),
            "dot": Out(signed(acc_bits)),
            "dot_tag": Out(tag_bits),
            "vec_valid": Out(1),
            "vec": Out(data.ArrayLayout(signed(acc_bits), lanes)),
            "vec_tag": Out(tag_bits),
        })

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def dot_latency(self) -> int:
        """Cycles from the inputs to ``dot``: operand registers, product, tree levels, accumulator."""
        return 3 + self._tree_levels

    @property
    def vec_latency(self) -> int:
        """Cycles from the inputs to ``vec``: operand registers, product, accumulator."""
        return 3

    def elaborate(self, platform):
        m = Module()
        lanes = self._lanes

        # stage 0: operand registers; stage 1: one registered multiplier per lane; the control follows
        ops_a = [Signal.like(self.a[lane], name=f"op_a{lane}") for lane in range(lanes)]
        ops_b = [Signal.like(self.b[lane], name=f"op_b{lane}") for lane in range(lanes)]
        prods = [Signal(signed(len(self.a[0]) + len(self.b[0])), name=f"prod{lane}") for lane in range(lanes)]
        for lane in range(lanes):
            m.d.sync += [ops_a[lane].eq(self.a[lane]), ops_b[lane].eq(self.b[lane]),
                         prods[lane].eq(ops_a[lane] * ops_b[lane])]
        ctrl = data.StructLayout({"valid": 1, "mode": 1, "first": 1, "last": 1, "tag": len(self.tag)})
        c0, c1 = Signal(ctrl, name="op_ctrl"), Signal(ctrl)
        m.d.sync += [c0.valid.eq(self.valid), c0.mode.eq(self.mode), c0.first.eq(self.first),
                     c0.last.eq(self.last), c0.tag.eq(self.tag), c1.eq(c0)]

        # vec mode: per-lane accumulators (stage 2)
        accs = [Signal(signed(self._acc_bits), name=f"acc{lane}") for lane in range(lanes)]
        vec_on = c1.valid & (c1.mode == MODE_VEC)
        with m.If(vec_on):
            for lane in range(lanes):
                m.d.sync += accs[lane].eq(prods[lane] + (accs[lane] & ~c1.first.replicate(self._acc_bits)))
        m.d.sync += [self.vec_valid.eq(vec_on & c1.last), self.vec_tag.eq(c1.tag)]
        for lane in range(lanes):
            m.d.comb += self.vec[lane].eq(accs[lane])

        # dot mode: registered adder tree over the lanes, then the chunk accumulator
        level = [p[: self._dot_bits].as_signed() for p in prods]
        c = c1
        for depth in range(self._tree_levels):
            nxt = []
            for i in range(0, len(level), 2):
                s = Signal(signed(self._dot_bits + depth + 1), name=f"tree{depth}_{i // 2}")
                m.d.sync += s.eq(level[i] + level[i + 1] if i + 1 < len(level) else level[i])
                nxt.append(s)
            level = nxt
            cn = Signal(ctrl, name=f"tree_ctrl{depth}")
            m.d.sync += cn.eq(c)
            c = cn
        dot_on = c.valid & (c.mode == MODE_DOT)
        with m.If(dot_on):
            with m.If(c.first):
                m.d.sync += self.dot.eq(level[0])
            with m.Else():
                m.d.sync += self.dot.eq(self.dot + level[0])
        m.d.sync += [self.dot_valid.eq(dot_on & c.last), self.dot_tag.eq(c.tag)]
        return m
