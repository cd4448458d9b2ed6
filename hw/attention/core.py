"""The attention accelerator: ``softmax(Q K^T * scale) V`` for one head per frame, bit-exact with
:func:`tokensift.quant.attention.attention_head`, plus the class token's attention row.

:class:`Attention` is the top level: it checks each frame's header (a token count of 0 or above
``n_max`` is rejected and flagged in ``status``, and its beats are dropped), hands frames round-robin to
``heads_parallel`` copies of :class:`tokensift.hw.attention.engine.AttentionEngine`, and merges their
outputs (each beat says which copy made it). Heads of a layer are consecutive frames: on one core they
run one after the other (the next frame loads while the previous one drains), with several copies in
parallel. Stream formats: :mod:`tokensift.hw.attention.layout`. Cycle model: :mod:`tokensift.hw.attention.cycles`.

>>> dut = Attention(n_max=197, head_dim=64, lanes=16)
>>> dut.params.chunks, cycles(dut.params, n_tokens=197)
(4, 312867)
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from tokensift.hw.attention.constants import ConstantRanges, const_layout
from tokensift.hw.attention.cycles import cycles, frame_interval, frame_schedule, mac_utilization
from tokensift.hw.attention.engine import AttentionEngine
from tokensift.hw.attention.layout import (
    HEADER_BITS,
    input_layout,
    output_layout,
    score_layout,
    status_layout,
)
from tokensift.hw.common.mac_array import mul_const
from tokensift.hw.common.skid import SkidBuffer
from tokensift.quant.attention import AttentionParams
from tokensift.quant.softmax import SoftmaxParams, SoftmaxVariant

__all__ = ["Attention", "AttentionParams", "ConstantRanges", "SoftmaxParams", "SoftmaxVariant", "cycles",
           "frame_interval", "frame_schedule", "mac_utilization"]

_FRONT_HEADER, _FRONT_FORWARD, _FRONT_DROP = 0, 1, 2


class Attention(wiring.Component):
    """Attention accelerator top level.

    Parameters (keyword-only)
    -------------------------
    params : AttentionParams, optional
        All parameters at once; otherwise the keywords of :class:`AttentionParams` (``n_max``,
        ``head_dim``, ``lanes``, ``data_bits``, ``acc_bits``, ``softmax``, ``scale_multiplier``,
        ``scale_shift``, ``out_multiplier``, ``out_shift``, ``heads_parallel``), validated there. The
        structural ones are generated; the four constants are not (they arrive on ``k_stream``), they
        only widen the default ``ranges`` where they need more.
    ranges : ConstantRanges, optional
        What run-time constants the core accepts (default :meth:`ConstantRanges.covering` of ``params``).
    checked_headers : bool, optional
        The producer never sends a token count of 0 or above ``n_max`` (the whole accelerator's engine checks
        it before the frame): the core then skips that check, so its ``i_stream.ready`` does not depend on the
        beat's payload (a row's bits share the header's). Default False: the core checks and flags it.

    Ports
    -----
    k_stream : in, one constants beat per frame (:mod:`tokensift.hw.attention.constants`), taken before
        the frame's header
    i_stream : in, frames (header, Q, K, V rows)
    o_stream : out, rows of the output
    s_stream : out, the class-attention row (token scores)
    status : out, ``busy``, ``error`` (latest header rejected), ``rejected`` and ``overflows`` counts,
        ``const_error`` (latest header rejected for its constants)
    """

    def __init__(self, *, params: AttentionParams | None = None, ranges: ConstantRanges | None = None,
                 checked_headers: bool = False, **kwargs):
        if params is None:
            params = AttentionParams(**kwargs)
        elif kwargs:
            raise TypeError("give either params or parameter keywords, not both")
        elif not isinstance(params, AttentionParams):
            raise TypeError(f"params must be an AttentionParams, not {type(params).__name__}")
        if ranges is None:
            ranges = ConstantRanges.covering(params)
        elif not isinstance(ranges, ConstantRanges):
            raise TypeError(f"ranges must be a ConstantRanges, not {type(ranges).__name__}")
        if not isinstance(checked_headers, bool):
            raise TypeError(f"checked_headers must be a bool, not {type(checked_headers).__name__}")
        self._p = params
        self._ranges = ranges
        self._checked_headers = checked_headers
        self._engines = [AttentionEngine(params, ranges=ranges, head=h) for h in range(params.heads_parallel)]
        super().__init__({
            "k_stream": In(stream.Signature(const_layout())),
            "i_stream": In(stream.Signature(input_layout(params))),
            "o_stream": Out(stream.Signature(output_layout(params))),
            "s_stream": Out(stream.Signature(score_layout(params))),
            "status": Out(status_layout()),
        })

    @property
    def params(self) -> AttentionParams:
        return self._p

    @property
    def ranges(self) -> ConstantRanges:
        return self._ranges

    @property
    def engines(self) -> list[AttentionEngine]:
        return list(self._engines)

    def elaborate(self, platform):
        m = Module()
        p = self._p
        engines = self._engines
        for h, eng in enumerate(engines):
            m.submodules[f"engine{h}"] = eng

        # -- constants: one beat per frame into a register, checked as it is taken ---------------------
        r = self._ranges
        k = self.k_stream.payload
        # k_go: a checked constants beat is held (k_full & its check), one register in front of the routing
        k_full, k_good, k_go = Signal(), Signal(), Signal()
        k_raw = Signal(const_layout(), name="k_raw")
        m.d.comb += self.k_stream.ready.eq(~k_full)
        good = ((k.scale_multiplier != 0) & (k.scale_multiplier[r.scale_mult_bits:] == 0)
                & (k.scale_shift <= r.scale_shift_max)
                & (k.out_multiplier != 0) & (k.out_multiplier[r.out_mult_bits:] == 0)
                & (k.out_shift <= r.out_shift_max))
        with m.If(self.k_stream.valid & ~k_full):
            m.d.sync += [k_raw.eq(k), k_full.eq(1), k_good.eq(good), k_go.eq(good)]
        for eng in engines:
            m.d.comb += [eng.consts.scale_multiplier.eq(k_raw.scale_multiplier),
                         eng.consts.scale_shift.eq(k_raw.scale_shift),
                         eng.consts.out_multiplier.eq(k_raw.out_multiplier),
                         eng.consts.out_shift.eq(k_raw.out_shift)]

        # -- front end: check the header, forward the frame to one core or drop it ---------------------
        state = Signal(range(3))
        remaining = Signal(range(3 * ((1 << HEADER_BITS) - 1) * p.chunks + 1))
        target = Signal(range(len(engines)))
        hdr_n = self.i_stream.payload.header.n_tokens
        n_ok = 1 if self._checked_headers else (hdr_n != 0) & (hdr_n <= p.n_max)
        at_header = state == _FRONT_HEADER
        # a header waits for its constants; then it goes to a core, or is dropped with its beats
        routed = (at_header & k_go & n_ok) | (state == _FRONT_FORWARD)
        eng_ready = Signal()
        for h, eng in enumerate(engines):
            m.d.comb += [eng.i_stream.payload.eq(self.i_stream.payload),
                         eng.i_stream.valid.eq(self.i_stream.valid & routed & (target == h))]
            with m.If(target == h):
                m.d.comb += eng_ready.eq(eng.i_stream.ready)
        m.d.comb += self.i_stream.ready.eq(Mux(routed, eng_ready, ~at_header | k_full))
        taken = self.i_stream.valid & self.i_stream.ready
        error, const_error = Signal(), Signal()
        rejected = Signal(16)
        next_target = Mux(target == len(engines) - 1, 0, target + 1)
        with m.If(taken):
            with m.Switch(state):
                with m.Case(_FRONT_HEADER):
                    m.d.sync += [remaining.eq(mul_const(hdr_n, 3 * p.chunks)), k_full.eq(0), k_go.eq(0),
                                 const_error.eq(~k_good)]
                    with m.If(n_ok & k_good):
                        m.d.sync += [state.eq(_FRONT_FORWARD), error.eq(0)]
                    with m.Else():
                        m.d.sync += error.eq(1)
                        with m.If(rejected != 0xFFFF):
                            m.d.sync += rejected.eq(rejected + 1)
                        with m.If(hdr_n != 0):
                            m.d.sync += state.eq(_FRONT_DROP)
                with m.Default():
                    m.d.sync += remaining.eq(remaining - 1)
                    with m.If(remaining == 1):
                        m.d.sync += state.eq(_FRONT_HEADER)
                        with m.If(state == _FRONT_FORWARD):
                            m.d.sync += target.eq(next_target)

        # -- outputs: the lowest-numbered core with data, held until taken -----------------------------
        for name in ("o_stream", "s_stream"):
            self._merge(m, name, [getattr(eng, name) for eng in engines], getattr(self, name))

        overflow_sum = sum(eng.overflows for eng in engines)
        busy = state != _FRONT_HEADER
        for eng in engines:
            busy = busy | eng.busy
        m.d.comb += [self.status.busy.eq(busy), self.status.error.eq(error), self.status.rejected.eq(rejected),
                     self.status.overflows.eq(Mux(overflow_sum > 0xFFFF, 0xFFFF, overflow_sum)),
                     self.status.const_error.eq(const_error)]
        return m

    @staticmethod
    def _merge(m, name, sources, sink):
        if len(sources) == 1:
            wiring.connect(m, wiring.flipped(sink), sources[0])
            return
        # each core's beats pass a skid buffer first: the core's FIFO pop is then a register, not the
        # merge's choice across the cores (two wires across the die)
        slices = []
        for h, src in enumerate(sources):
            m.submodules[f"{name}_slice{h}"] = skid = SkidBuffer(layout=src.payload.shape())
            wiring.connect(m, src, skid.i)
            slices.append(skid.o)
        sources = slices
        held = Signal(name=f"{name}_held")
        held_sel = Signal(range(len(sources)), name=f"{name}_held_sel")
        pick = Signal.like(held_sel, name=f"{name}_pick")
        for h in reversed(range(len(sources))):
            with m.If(sources[h].valid):
                m.d.comb += pick.eq(h)
        sel = Mux(held, held_sel, pick)
        for h, src in enumerate(sources):
            with m.If(sel == h):
                m.d.comb += [sink.payload.eq(src.payload), sink.valid.eq(src.valid), src.ready.eq(sink.ready)]
        # a presented beat that was not taken stays selected, so the payload never changes under valid
        m.d.sync += [held.eq(sink.valid & ~sink.ready), held_sel.eq(sel)]
