"""The per-token statistics of :mod:`tokensift.quant.layernorm` in a pipeline that takes a token every cycle.

From a token's ``S1 = sum q`` and ``S2 = sum q**2`` (``C`` codes) the reference's variance is exact without
a second pass over the row, since ``sum_i (C q_i - S1)**2 = C (C S2 - S1**2)``:

1. ``v = C (C S2 - S1**2) + eps``: the products ``C S2`` and ``S1**2`` side by side, the difference, the
   product ``C (C S2 - S1**2)``, the sum; every product split into DSP-sized registered pieces with their own
   operand registers (:class:`~tokensift.hw.vector.products.Products`, ``2 + ceil(log2 pieces)`` stages);
2. ``x = v << 2k`` with ``k = (62 - bit_length(v)) >> 1``: five stages that shift by 32, 16, 8, 4, 2 bits when
   that many top bits are zero (the greedy sum is the largest even shift that keeps ``x < 2**62``);
3. ``r = floor(sqrt(x))``, the restoring digit-by-digit root, one bit per stage (31 stages); it is the floor
   root, the value the reference's Newton iteration ends on;
4. ``f = floor(2**(31 + R) / r)`` by restoring division, one quotient bit per stage (``R + 2`` stages; as
   ``2**30 <= r < 2**31`` the quotient's higher bits are zero);
5. what the output datapath needs per token: ``Cf = C f``, the right shift ``s = 31 + R - F - k + L`` and
   ``H = S1 f 2**L - half(s)`` (the products ``C f`` and ``S1 f``, then the rounding half), so that ``n_i = (q_i Cf 2**L - H) >> s`` is the reference's
   ``round_shift((C q_i - S1) f, 31 + R - F - k)``.

No stage holds more than one compare-and-subtract of 34 bits or one registered DSP-sized piece, and no stage
waits for another: the pipeline never stalls, and its latency is :attr:`LayerNormConfig.stats_latency`.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tokensift.hw.vector.layernorm_layout import LayerNormConfig, uint_width
from tokensift.hw.vector.products import Products, product_latency

__all__ = ["StatsPipe", "ROOT_STEPS", "NORM_STEPS"]

#: significant bits of the normalised root (``2**30 <= r < 2**31``)
ROOT_STEPS = 31
#: the normalising shifts of step 2, in bits
NORM_STEPS = (32, 16, 8, 4, 2)
V_BITS = 62


class StatsPipe(wiring.Component):
    """``(S1, S2)`` of a token in, ``(Cf, H, s)`` out :attr:`latency` cycles later; ``dim`` and ``eps`` are the
    job's constants (held while the job's tokens are in the pipeline)."""

    def __init__(self, config: LayerNormConfig):
        if not isinstance(config, LayerNormConfig):
            raise TypeError(f"config must be a LayerNormConfig, not {type(config).__name__}")
        self._cfg = c = config
        super().__init__({
            "dim": In(unsigned(uint_width(c.c_max))),
            "eps": In(unsigned(c.eps_bits)),
            "i_valid": In(1),
            "i_s1": In(c.s1_shape),
            "i_s2": In(c.s2_shape),
            "o_valid": Out(1),
            "o_cf": Out(c.cf_shape),
            "o_h": Out(c.h_shape),
            "o_shift": Out(c.shift_shape),
        })

    @property
    def latency(self) -> int:
        return self._cfg.stats_latency

    def elaborate(self, platform):
        m = Module()
        c = self._cfg
        big_r = c.recip_bits - 1
        products = Products(m, "stats", platform=platform)

        stage_no = [0]
        valid = [self.i_valid]

        def stage(**values):
            """Register ``values`` (and the valid bit) as the next stage; returns the registered signals."""
            stage_no[0] += 1
            n = stage_no[0]
            v = Signal(name=f"t{n}_valid")
            m.d.sync += v.eq(valid[0])
            valid[0] = v
            regs = {}
            for name, (shape, value) in values.items():
                r = Signal(shape, name=f"t{n}_{name}")
                m.d.sync += r.eq(value)
                regs[name] = r
            return regs

        def delay(value, cycles, name):
            for i in range(cycles):
                r = Signal(Value.cast(value).shape(), name=f"{name}_d{stage_no[0] + i + 1}")
                m.d.sync += r.eq(value)
                value = r
            return value

        def products_stage(named, carried):
            """The products of ``named`` (name -> (a, b, shape)) in parallel, each padded to the slowest;
            ``carried`` (name -> value) delayed alongside. Returns the registered results."""
            lat = max(product_latency(a.shape(), b.shape()) for a, b, _ in named.values())
            out = {}
            for name, (a, b, shape) in named.items():
                p = products.multiply(a, b, name=f"stats_{name}")
                out[name] = delay(p[:shape.width].as_signed() if shape.signed else p[:shape.width],
                                  lat - product_latency(a.shape(), b.shape()), f"stats_{name}")
            out.update({name: delay(value, lat, f"stats_{name}") for name, value in carried.items()})
            for _ in range(lat):
                stage_no[0] += 1
                v = Signal(name=f"t{stage_no[0]}_valid")
                m.d.sync += v.eq(valid[0])
                valid[0] = v
            return out

        # the job's constants enter each multiplier through its own operand registers (Products)
        dim = self.dim
        s1 = self.i_s1
        # C S2 and S1**2 (split, registered pieces); their difference (>= 0 by Cauchy-Schwarz); C (C S2 - S1**2);
        # + eps
        p_bits = uint_width(c.c_max * (c.c_max << (2 * c.in_bits - 2)))
        r = products_stage({"cs2": (dim, self.i_s2, unsigned(p_bits)), "s1sq": (s1, s1, unsigned(p_bits))},
                           {"s1": s1})
        r = stage(t=(unsigned(p_bits), (r["cs2"] - r["s1sq"])[:p_bits]), s1=(c.s1_shape, r["s1"]))
        r = products_stage({"ct": (dim, r["t"], unsigned(V_BITS))}, {"s1": r["s1"]})
        r = stage(x=(unsigned(V_BITS), r["ct"] + self.eps), s1=(c.s1_shape, r["s1"]))

        # normalise: x = v << 2k
        x, k, s1 = r["x"], 0, r["s1"]
        k_shape = unsigned(5)
        for step in NORM_STEPS:
            top_zero = x[V_BITS - step:] == 0
            r = stage(x=(unsigned(V_BITS), Mux(top_zero, x << step, x)),
                      k=(k_shape, k + Mux(top_zero, step // 2, 0)), s1=(c.s1_shape, s1))
            x, k, s1 = r["x"], r["k"], r["s1"]

        # restoring square root, two bits of x per stage
        # (the remainder is at most 2 root < 2**32; one subtraction, its sign is the compare)
        rem_shape, root_shape = unsigned(ROOT_STEPS + 2), unsigned(ROOT_STEPS)
        rem, root = Const(0, rem_shape), Const(0, root_shape)
        for _ in range(ROOT_STEPS):
            cur = Cat(x[V_BITS - 2:V_BITS], rem)  # (rem << 2) | next pair
            diff = Cat(cur, 0).as_signed() - Cat(1, 0, root, 0).as_signed()  # minus (root << 2) | 1
            take = ~diff[-1]
            r = stage(x=(unsigned(V_BITS), x << 2), rem=(rem_shape, Mux(take, diff, cur)),
                      root=(root_shape, Cat(take, root)), k=(k_shape, k), s1=(c.s1_shape, s1))
            x, rem, root, k, s1 = r["x"], r["rem"], r["root"], r["k"], r["s1"]

        # restoring division of 2**(31 + R) by r: the prefix above the quotient's top bit is 2**29 < r
        div_rem = Const(1 << 29, 31)  # the remainder stays below r < 2**31
        quo = Const(0, c.f_shape)
        for _ in range(big_r + 2):
            twice = Cat(0, div_rem)
            diff = Cat(twice, 0).as_signed() - Cat(root, 0).as_signed()
            take = ~diff[-1]
            r = stage(rem=(unsigned(31), Mux(take, diff, twice)), quo=(c.f_shape, Cat(take, quo)),
                      root=(root_shape, root), k=(k_shape, k), s1=(c.s1_shape, s1))
            div_rem, quo, root, k, s1 = r["rem"], r["quo"], r["root"], r["k"], r["s1"]

        # Cf, S1 f, and the shift with its rounding half (half-up when the reference's shift is positive)
        shift_shape = c.shift_shape
        s1f_shape = signed(c.s1_shape.width + c.f_shape.width + 1)
        r = products_stage({"cf": (dim, quo, c.cf_shape), "s1f": (s1, quo, s1f_shape)},
                           {"shift": Const(c.norm_shift_max, shift_shape) - k})
        pre = c.left_pre_shift
        shift = Signal(shift_shape, name="stats_shift")
        m.d.comb += shift.eq(r["shift"])
        positive = shift > pre  # the reference shift s - L >= 1
        half = Signal(c.h_shape)
        with m.Switch(shift):
            for s in range(1, c.norm_shift_max + 1):
                with m.Case(s):
                    m.d.comb += half.eq(1 << (s - 1))
        r2 = stage(h=(c.h_shape, (r["s1f"] << pre) - Mux(positive, half, 0)), shift=(shift_shape, shift),
                   cf=(c.cf_shape, r["cf"]))
        assert stage_no[0] == self.latency, (stage_no[0], self.latency)
        m.d.comb += [self.o_valid.eq(valid[0]), self.o_cf.eq(r2["cf"]), self.o_h.eq(r2["h"]),
                     self.o_shift.eq(r2["shift"])]
        return m
