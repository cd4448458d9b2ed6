"""Sub-units of the attention accelerator in the Amaranth simulator, bit for bit against quant/."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed
from amaranth.sim import Simulator
from amaranth_streams import run_to_completion

from tokensift.hw.attention.constants import ConstantRanges, const_layout, constant_errors, encode_constants
from tokensift.hw.attention.core import Attention
from tokensift.hw.attention.cycles import cycles, frame_interval, frame_schedule, latencies, mac_utilization
from tokensift.hw.attention.engine import FRONT_STAGES, AttentionEngine
from tokensift.hw.attention.layout import decode_rows, encode_frame, encode_header, frame_beats
from tokensift.hw.attention.requant import RuntimeRequantizer
from tokensift.hw.attention.scaling import (
    PRODUCT_STAGES,
    SHIFT_STAGES,
    partial_products,
    round_shift_stages,
    scaled_product,
)
from tokensift.hw.attention.softmax import Exp2Unit, ProbNormalizer, Reciprocal, SoftmaxUnit
from tokensift.hw.common.buffers import RowBuffer
from tokensift.hw.common.mac_array import MODE_DOT, MODE_VEC, MacArray
from tokensift.quant.attention import AttentionParams, attention_head, macs
from tokensift.quant.fixed import FixedFormat, OverflowCounter, Rounding, requantize, round_shift
from tokensift.quant.softmax import (
    SoftmaxParams,
    exp2_neg,
    log2_argument,
    normalize,
    reciprocal,
    softmax_trace,
)
from tokensift.sim.attention_harness import harness_for, random_layer

# components built only for their properties or errors are never elaborated
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

SOFTMAX = [SoftmaxParams(), SoftmaxParams(variant="exp2_poly"),
           SoftmaxParams(log2_frac=5, exp_frac=10, prob_frac=8)]


def run(dut, *benches, clock=1e-6, max_cycles=200_000):
    """Run the testbenches to completion; a bench still waiting after ``max_cycles`` fails the test
    instead of hanging it."""
    sim = Simulator(dut)
    sim.add_clock(clock)
    finished = []

    def bounded(bench):
        async def wrapped(ctx):
            await bench(ctx)
            finished.append(bench.__name__)
        return wrapped

    for b in benches:
        sim.add_testbench(bounded(b))
    run_to_completion(sim, max_cycles=max_cycles)
    waiting = sorted({b.__name__ for b in benches} - set(finished))
    assert not waiting, f"{', '.join(waiting)} still waiting after {max_cycles} cycles"


class TestMacArray:
    def test_init(self):
        mac = MacArray(lanes=16, a_bits=17, b_bits=8, dot_bits=16, acc_bits=32, tag_bits=4)
        assert (mac.lanes, mac.dot_latency, mac.vec_latency) == (16, 7, 3)
        assert MacArray(lanes=5, a_bits=8, b_bits=8, dot_bits=16, acc_bits=24, tag_bits=1).dot_latency == 6

    @pytest.mark.parametrize("kwargs, exc, message", [
        ({"lanes": 0}, ValueError, r"^lanes must be between 1 and 256, not 0$"),
        ({"a_bits": 28}, ValueError, r"^a_bits must be between 2 and 27, not 28$"),
        ({"b_bits": 8.0}, TypeError, r"^b_bits must be an integer, not float$"),
        ({"dot_bits": 40}, ValueError, r"^dot_bits must be between 2 and 25, not 40$"),
        ({"tag_bits": 0}, ValueError, r"^tag_bits must be between 1 and 64, not 0$"),
    ])
    def test_init_wrong(self, kwargs, exc, message):
        base = {"lanes": 4, "a_bits": 17, "b_bits": 8, "dot_bits": 16, "acc_bits": 32, "tag_bits": 4}
        with pytest.raises(exc, match=message):
            MacArray(**{**base, **kwargs})

    @pytest.mark.parametrize("lanes", [1, 3, 8])
    def test_sim_dot_and_vec(self, lanes):
        rng = np.random.default_rng(lanes)
        mac = MacArray(lanes=lanes, a_bits=17, b_bits=8, dot_bits=16, acc_bits=32, tag_bits=8)
        # operations: (mode, first, last, a vector, b vector, tag), interleaving the two modes
        ops, expect_dot, expect_vec = [], [], []
        for t in range(12):
            chunks = int(rng.integers(1, 4))
            if t % 2 == 0:
                a = rng.integers(-128, 128, size=(chunks, lanes))
                b = rng.integers(-128, 128, size=(chunks, lanes))
                for c in range(chunks):
                    ops.append((MODE_DOT, c == 0, c == chunks - 1, a[c], b[c], t))
                expect_dot.append((int((a * b).sum()), t))
            else:
                a = rng.integers(0, 1 << 16, size=chunks)
                b = rng.integers(-128, 128, size=(chunks, lanes))
                for c in range(chunks):
                    ops.append((MODE_VEC, c == 0, c == chunks - 1, [a[c]] * lanes, b[c], t))
                expect_vec.append(((a[:, None] * b).sum(axis=0).tolist(), t))
        got_dot, got_vec, when = [], [], {}

        async def driver(ctx):
            issue = 0
            for op in ops:
                mode, first, last, a, b, tag = op
                ctx.set(mac.valid, 1)
                ctx.set(mac.mode, mode)
                ctx.set(mac.first, int(first))
                ctx.set(mac.last, int(last))
                ctx.set(mac.tag, tag)
                for lane in range(lanes):
                    ctx.set(mac.a[lane], int(a[lane]))
                    ctx.set(mac.b[lane], int(b[lane]))
                when.setdefault(tag, issue)
                when[("last", tag)] = issue
                await ctx.tick()
                issue += 1
            ctx.set(mac.valid, 0)

        async def monitor(ctx):
            for cycle in range(len(ops) + 12):
                if ctx.get(mac.dot_valid):
                    got_dot.append((ctx.get(mac.dot), ctx.get(mac.dot_tag), cycle))
                if ctx.get(mac.vec_valid):
                    got_vec.append(([ctx.get(mac.vec[lane]) for lane in range(lanes)], ctx.get(mac.vec_tag), cycle))
                await ctx.tick()

        run(mac, driver, monitor)
        assert [(d, t) for d, t, _ in got_dot] == expect_dot
        assert [(v, t) for v, t, _ in got_vec] == expect_vec
        assert all(cyc == when[("last", t)] + mac.dot_latency for _, t, cyc in got_dot)
        assert all(cyc == when[("last", t)] + mac.vec_latency for _, t, cyc in got_vec)


class TestExp2Unit:
    @pytest.mark.parametrize("params", SOFTMAX, ids=str)
    @pytest.mark.parametrize("mult, shift", [(94548, 19), (1, 0), ((1 << 17) - 1, 2)])
    def test_sim(self, params, mult, shift):
        rng = np.random.default_rng(mult + shift)
        diffs = np.concatenate([[0, -1, -(1 << 22)], -rng.integers(0, 1 << 16, 150), -rng.integers(0, 50, 50)])
        dut = Exp2Unit(params=params, diff_bits=24, tag_bits=8)
        expect = exp2_neg(log2_argument(diffs, mult, shift), params)
        got, cycles_seen = [], []

        async def driver(ctx):
            ctx.set(dut.multiplier, mult)
            ctx.set(dut.shift, shift)
            for i, d in enumerate(diffs):
                ctx.set(dut.i_valid, 1)
                ctx.set(dut.i_diff, int(d))
                ctx.set(dut.i_tag, i % 256)
                await ctx.tick()
            ctx.set(dut.i_valid, 0)

        async def monitor(ctx):
            for cycle in range(len(diffs) + dut.latency + 2):
                if ctx.get(dut.o_valid):
                    got.append(ctx.get(dut.o_e))
                    cycles_seen.append(cycle - ctx.get(dut.o_tag))
                await ctx.tick()

        run(dut, driver, monitor)
        assert got == expect.tolist()
        assert set(cycles_seen) == {dut.latency} or len(diffs) > 256

    def test_latency_matches_cost_model(self):
        for params in SOFTMAX[:2]:
            dut = Exp2Unit(params=params, diff_bits=8)
            p = AttentionParams(n_max=4, head_dim=4, lanes=4, softmax=params)
            assert dut.latency == latencies(p)["exp"]

    def test_wrong_params(self):
        with pytest.raises(TypeError, match=r"^params must be a SoftmaxParams, not str$"):
            Exp2Unit(params="exp2_lut", diff_bits=8)
        with pytest.raises(ValueError, match=r"^mult_bits must be between 1 and 17, not 18$"):
            Exp2Unit(params=SoftmaxParams(), diff_bits=8, mult_bits=18)


class TestReciprocal:
    @pytest.mark.parametrize("params", SOFTMAX, ids=str)
    def test_sim(self, params):
        rng = np.random.default_rng(params.exp_frac)
        e = params.exp_frac
        totals = [1 << e, (1 << e) + 1, 3 << e, 197 << e, (1024 << e) - 1] + rng.integers(1 << e, 512 << e, 20).tolist()
        dut = Reciprocal(params=params, total_bits=e + 12)
        got = []

        async def bench(ctx):
            for s in totals:
                ctx.set(dut.start, 1)
                ctx.set(dut.total, int(s))
                await ctx.tick()
                ctx.set(dut.start, 0)
                waited = 1
                while not ctx.get(dut.done):
                    await ctx.tick()
                    waited += 1
                got.append((ctx.get(dut.recip), waited))
                assert not ctx.get(dut.busy)

        run(dut, bench)
        assert [r for r, _ in got] == reciprocal(totals, params).tolist()
        assert {w for _, w in got} == {dut.latency}


class TestProbNormalizer:
    @pytest.mark.parametrize("params", SOFTMAX, ids=str)
    def test_sim(self, params):
        rng = np.random.default_rng(1)
        totals = rng.integers(1 << params.exp_frac, 300 << params.exp_frac, 40)
        recips = reciprocal(totals, params)
        es = rng.integers(0, (1 << params.exp_frac) + 1, 40)
        dut = ProbNormalizer(params=params)
        got = []

        async def bench(ctx):
            for i in range(len(es) + dut.latency):
                if i < len(es):
                    ctx.set(dut.e, int(es[i]))
                    ctx.set(dut.recip, int(recips[i]))
                await ctx.tick()
                if i + 1 >= dut.latency:
                    got.append(ctx.get(dut.p))

        run(dut, bench)
        assert got[: len(es)] == normalize(es, recips, params).tolist()


class TestSoftmaxUnit:
    @pytest.mark.parametrize("params", SOFTMAX[:2], ids=str)
    def test_sim_rows(self, params):
        rng = np.random.default_rng(5)
        n_max = 9
        dut = SoftmaxUnit(params=params, n_max=n_max, score_bits=22)
        rows = [rng.integers(-(1 << 20), 1 << 20, size=n) for n in (9, 1, 4)] + [np.full(3, -(1 << 21))]
        results = []

        async def bench(ctx):
            ctx.set(dut.scale_multiplier, 94548)
            ctx.set(dut.scale_shift, 19)
            for r, scores in enumerate(rows):
                bank = r % 2
                for j, s in enumerate(scores):
                    ctx.set(dut.score_w_en, 1)
                    ctx.set(dut.score_w_bank, bank)
                    ctx.set(dut.score_w_addr, j)
                    ctx.set(dut.score_w_data, int(s))
                    await ctx.tick()
                ctx.set(dut.score_w_en, 0)
                assert ctx.get(dut.ready)
                ctx.set(dut.start, 1)
                ctx.set(dut.start_bank, bank)
                ctx.set(dut.start_max, -1)  # sampled the cycle after start, so this value must not count
                ctx.set(dut.start_n, len(scores))
                await ctx.tick()
                ctx.set(dut.start, 0)
                ctx.set(dut.start_max, int(scores.max()))
                waited = 1
                while not ctx.get(dut.done):
                    await ctx.tick()
                    waited += 1
                assert ctx.get(dut.done_bank) == bank
                recip = ctx.get(dut.recip)
                exps = []
                for j in range(len(scores)):
                    ctx.set(dut.e_r_bank, bank)
                    ctx.set(dut.e_r_addr, j)
                    await ctx.tick()
                    exps.append(ctx.get(dut.e_r_data))
                results.append((exps, recip, waited))

        run(dut, bench)
        for scores, (exps, recip, waited) in zip(rows, results, strict=True):
            tr = softmax_trace(scores, multiplier=94548, shift=19, params=params)
            assert exps == tr["e"].tolist()
            assert recip == int(tr["recip"])
            assert waited == dut.row_cycles(len(scores))


class TestRowBuffer:
    def test_sim(self):
        buf = RowBuffer(depth=10, lanes=3, data_bits=8)
        data = np.random.default_rng(0).integers(-128, 128, size=(10, 3))
        got = []

        async def bench(ctx):
            for a, row in enumerate(data):
                ctx.set(buf.w_en, 1)
                ctx.set(buf.w_addr, a)
                for lane in range(3):
                    ctx.set(buf.w_data[lane], int(row[lane]))
                await ctx.tick()
            ctx.set(buf.w_en, 0)
            for a in [3, 9, 0, 0, 5]:
                ctx.set(buf.r_addr, a)
                assert [ctx.get(buf.r_data[lane]) for lane in range(3)] != [9999]
                await ctx.tick()  # registered read: the data of this address after the edge
                got.append((a, [ctx.get(buf.r_data[lane]) for lane in range(3)]))

        run(buf, bench)
        assert all(row == data[a].tolist() for a, row in got)

    @pytest.mark.parametrize("kwargs, exc, message", [
        ({"depth": 0}, ValueError, r"^depth must be at least 1, not 0$"),
        ({"lanes": "4"}, TypeError, r"^lanes must be an integer, not str$"),
    ])
    def test_init_wrong(self, kwargs, exc, message):
        with pytest.raises(exc, match=message):
            RowBuffer(**{"depth": 4, "lanes": 4, "data_bits": 8, **kwargs})

    def test_verilog_uses_a_registered_read(self):
        from amaranth.back import verilog

        text = verilog.convert(RowBuffer(depth=64, lanes=4, data_bits=8), name="buf")
        assert "always @(posedge clk)" in text and "r_data" in text


def stream_frames(dut, frames, *, o_beats, s_beats, consts, idle=0.0, stall=0.0, seed=0, limit=20000):
    """Drive whole frames through ``dut`` (Attention or AttentionEngine) in the Python simulator until
    ``o_beats`` and ``s_beats`` came out (and 20 cycles more, in which nothing else may come).

    ``consts`` holds each frame's layer (an AttentionParams, or a constants beat for Attention): on
    ``k_stream`` with its own random idle cycles for Attention, on ``consts`` from the frame's header on
    for an AttentionEngine."""
    rng_i, rng_k, rng_o = random.Random(seed), random.Random(seed + 2), random.Random(seed + 1)
    out = {"o": [], "s": [], "first_in": None, "last_out": None}
    engine = isinstance(dut, AttentionEngine)
    assert len(consts) == len(frames)

    async def producer(ctx):
        for frame, layer in zip(frames, consts, strict=True):
            for i, beat in enumerate(frame):
                while rng_i.random() < idle:
                    ctx.set(dut.i_stream.valid, 0)
                    await ctx.tick()
                if engine and i == 0:
                    for name in ("scale_multiplier", "scale_shift", "out_multiplier", "out_shift"):
                        ctx.set(getattr(dut.consts, name), getattr(layer, name))
                ctx.set(dut.i_stream.payload.as_value(), beat)
                ctx.set(dut.i_stream.valid, 1)
                await ctx.tick().until(dut.i_stream.ready)
        ctx.set(dut.i_stream.valid, 0)

    async def k_producer(ctx):
        for layer in consts:
            while rng_k.random() < idle:
                ctx.set(dut.k_stream.valid, 0)
                await ctx.tick()
            word = layer if isinstance(layer, int) else encode_constants(layer)
            ctx.set(dut.k_stream.payload.as_value(), word)
            ctx.set(dut.k_stream.valid, 1)
            await ctx.tick().until(dut.k_stream.ready)
        ctx.set(dut.k_stream.valid, 0)

    async def consumer(ctx):
        tail = 20
        for cycle in range(limit):
            if len(out["o"]) >= o_beats and len(out["s"]) >= s_beats:
                tail -= 1
                if tail == 0:
                    break
            ro, rs = rng_o.random() >= stall, rng_o.random() >= stall
            ctx.set(dut.o_stream.ready, ro)
            ctx.set(dut.s_stream.ready, rs)
            if ctx.get(dut.i_stream.valid) and ctx.get(dut.i_stream.ready) and out["first_in"] is None:
                out["first_in"] = cycle
            if ro and ctx.get(dut.o_stream.valid):
                out["o"].append(ctx.get(dut.o_stream.payload.as_value()))
                out["last_out"] = cycle
            if rs and ctx.get(dut.s_stream.valid):
                out["s"].append(ctx.get(dut.s_stream.payload.as_value()))
                out["last_out"] = cycle
            await ctx.tick()

    if engine:
        run(dut, producer, consumer)
    else:
        run(dut, producer, k_producer, consumer)
    return out


def _frame(rng, n, p):
    return [rng.integers(-100, 101, size=(n, p.head_dim)) for _ in range(3)]


class TestEngine:
    def test_wrong_params(self):
        with pytest.raises(TypeError, match=r"^params must be an AttentionParams, not dict$"):
            AttentionEngine({})

    @pytest.mark.parametrize("n", [1, pytest.param(3, marks=pytest.mark.slow), 6])
    def test_sim_one_frame_exact_and_cycles(self, n):
        p = AttentionParams(n_max=6, head_dim=8, lanes=4)
        rng = np.random.default_rng(n)
        q, k, v = _frame(rng, n, p)
        res = stream_frames(AttentionEngine(p), [encode_frame(q, k, v, p)], o_beats=n * p.chunks, s_beats=n,
                            consts=[p])
        assert len(res["o"]) == n * p.chunks and len(res["s"]) == n
        out, cls = attention_head(q, k, v, p)
        rows = decode_rows([w & 0xFFFFFFFF for w in res["o"]], p)
        assert rows.tolist() == out.tolist()
        assert [w & 0xFFFF for w in res["s"]] == cls.tolist()
        assert res["last_out"] - res["first_in"] == cycles(p, n_tokens=n)


    @pytest.mark.parametrize("cfg", [dict(n_max=8, head_dim=8, lanes=4), dict(n_max=8, head_dim=10, lanes=5,
                                                                               softmax="exp2_poly")])
    def test_latencies_are_the_units(self, cfg):
        # the cycle model's pipeline latencies are those of the units the engine is built from
        p = AttentionParams(**cfg)
        eng = AttentionEngine(p)
        lat = latencies(p)
        assert lat["front"] == FRONT_STAGES == 1 + ProbNormalizer.latency
        assert (lat["dot"], lat["vec"]) == (eng.mac.dot_latency, eng.mac.vec_latency)
        assert lat["exp"] == eng.softmax.exp_latency
        assert lat["requant"] == RuntimeRequantizer.latency
        n = 5
        assert n + lat["score_read"] + lat["exp"] + lat["recip"] == eng.softmax.row_cycles(n)

    def test_sim_heavy_backpressure(self):
        # consumers ready one cycle in ten: the class FIFO fills, output credits run out, the array waits
        p = AttentionParams(n_max=6, head_dim=8, lanes=2)
        rng = np.random.default_rng(9)
        frames = [_frame(rng, n, p) for n in (6, 3)]
        res = stream_frames(AttentionEngine(p), [encode_frame(*f, p) for f in frames], o_beats=9 * p.chunks,
                            s_beats=9, idle=0.5, stall=0.9, seed=2, consts=[p, p])
        expect = [attention_head(*f, p) for f in frames]
        assert decode_rows([w & 0xFFFF for w in res["o"]], p).tolist() == np.concatenate(
            [o for o, _ in expect]).tolist()
        assert [w & 0xFFFF for w in res["s"]] == np.concatenate([c for _, c in expect]).tolist()
        assert res["last_out"] - res["first_in"] > cycles(p, n_tokens=[6, 3])  # the stalls cost cycles


class TestAttention:
    def test_init(self):
        dut = Attention(n_max=197, head_dim=64, lanes=16)
        assert dut.params == AttentionParams(n_max=197, head_dim=64, lanes=16)
        assert len(dut.engines) == 1
        assert Attention(params=AttentionParams(n_max=4, head_dim=4, lanes=4, heads_parallel=3)).params.heads_parallel == 3

    def test_init_wrong(self):
        with pytest.raises(ValueError, match=r"^head_dim must be a multiple of lanes 16, not 12$"):
            Attention(n_max=197, head_dim=12, lanes=16)
        with pytest.raises(TypeError, match=r"^give either params or parameter keywords, not both$"):
            Attention(params=AttentionParams(n_max=4, head_dim=4, lanes=4), lanes=4)
        with pytest.raises(TypeError, match=r"^params must be an AttentionParams, not int$"):
            Attention(params=3)
        with pytest.raises(TypeError):
            Attention(4, 4, 4)  # keyword-only

    def test_sim_parallel_cores_stalls_and_rejected_frames(self):
        p = AttentionParams(n_max=5, head_dim=4, lanes=2, heads_parallel=2, softmax="exp2_poly")
        rng = np.random.default_rng(3)
        frames, expect, consts = [], [], []
        for i, n in enumerate([5, 2, 1, 4]):
            if i == 1:
                frames.append([encode_header(0)])
                junk = rng.integers(-5, 5, size=(6, 4))
                frames.append(encode_frame(junk, junk, junk, p))  # N = 6 > n_max, with its beats
                consts += [p, p]
            q, k, v = _frame(rng, n, p)
            layer = random_layer(rng, p)
            frames.append(encode_frame(q, k, v, p))
            expect.append(attention_head(q, k, v, layer))
            consts.append(layer)
        dut = Attention(params=p)
        res = stream_frames(dut, frames, idle=0.2, stall=0.3, seed=7, o_beats=12 * p.chunks, s_beats=12,
                            consts=consts)
        assert len(res["o"]) == 12 * p.chunks and len(res["s"]) == 12
        row_bits = p.lanes * p.data_bits
        for core in (0, 1):
            mine = [e for i, e in enumerate(expect) if i % 2 == core]
            words = [w for w in res["o"] if w >> (row_bits + 1) == core]
            rows = decode_rows([w & ((1 << row_bits) - 1) for w in words], p)
            assert rows.tolist() == np.concatenate([o for o, _ in mine]).tolist()
            probs = [w & 0xFFFF for w in res["s"] if w >> 17 == core]
            assert probs == np.concatenate([c for _, c in mine]).tolist()

    def test_status_flags_a_rejected_header(self):
        p = AttentionParams(n_max=3, head_dim=2, lanes=2)
        dut = Attention(params=p)
        seen = []

        async def bench(ctx):
            ctx.set(dut.k_stream.payload.as_value(), encode_constants(p))
            ctx.set(dut.k_stream.valid, 1)
            for n in (0, 4, 9):
                ctx.set(dut.i_stream.valid, 1)
                ctx.set(dut.i_stream.payload.header.n_tokens, n)
                await ctx.tick().until(dut.i_stream.ready)
                ctx.set(dut.i_stream.valid, 0)
                await ctx.tick()
                seen.append((ctx.get(dut.status.error), ctx.get(dut.status.rejected), ctx.get(dut.status.busy)))

        run(dut, bench)
        # N = 0: rejected, idle; N = 4 > 3: rejected, busy dropping its 12 beats; the 9 is one of them
        assert seen == [(1, 1, 0), (1, 2, 1), (1, 2, 1)]


class TestHarness:
    def test_bulk_mode_in_python_simulator(self):
        p = AttentionParams(n_max=4, head_dim=4, lanes=2)
        dut = harness_for(p, frames=2, internal_clock=False)
        rng = np.random.default_rng(0)
        frames = [_frame(rng, n, p) for n in (4, 2)]
        layers = [random_layer(rng, p), p]
        words = [w for f in frames for w in encode_frame(*f, p)]
        got = {}

        async def clock(ctx):
            while True:
                ctx.set(dut.clk, 0)
                await ctx.delay(0.5e-6)
                ctx.set(dut.clk, 1)
                await ctx.delay(0.5e-6)

        async def bench(ctx):
            for i, w in enumerate(words):
                ctx.set(dut.in_data[i], w)
            for i, layer in enumerate(layers):
                ctx.set(dut.k_data[i], encode_constants(layer))
            ctx.set(dut.bulk, 1)
            ctx.set(dut.in_beats, len(words))
            ctx.set(dut.k_beats, len(layers))
            ctx.set(dut.o_expected, 6 * p.chunks)
            ctx.set(dut.s_expected, 6)
            ctx.set(dut.start, 1)
            await ctx.tick("run")
            ctx.set(dut.start, 0)
            await ctx.tick("run").until(dut.done)
            got["o"] = [ctx.get(dut.o_data[i]) for i in range(ctx.get(dut.o_count))]
            got["s"] = [ctx.get(dut.s_data[i]) for i in range(ctx.get(dut.s_count))]
            got["cycles"] = ctx.get(dut.cycles)

        sim = Simulator(dut)
        sim.add_process(clock)
        sim.add_testbench(bench)
        sim.run()
        expect = [attention_head(*f, layer) for f, layer in zip(frames, layers, strict=True)]
        assert decode_rows([w & 0xFFFF for w in got["o"]], p).tolist() == np.concatenate(
            [o for o, _ in expect]).tolist()
        assert [w & 0xFFFF for w in got["s"]] == np.concatenate([c for _, c in expect]).tolist()
        assert got["cycles"] == cycles(p, n_tokens=[4, 2])

    @pytest.mark.parametrize("kwargs, exc, message", [
        ({"in_depth": 0}, ValueError, r"^in_depth must be a positive integer, not 0$"),
        ({"params": {}}, TypeError, r"^params must be an AttentionParams, not dict$"),
    ])
    def test_init_wrong(self, kwargs, exc, message):
        from tokensift.sim.attention_harness import AttentionHarness

        base = {"params": AttentionParams(n_max=2, head_dim=2, lanes=2), "in_depth": 4, "o_depth": 4, "s_depth": 4}
        with pytest.raises(exc, match=message):
            AttentionHarness(**{**base, **kwargs})

    def test_internal_clock_instance(self):
        from amaranth.back import verilog

        text = verilog.convert(harness_for(AttentionParams(n_max=2, head_dim=2, lanes=2), frames=1), name="h")
        assert "tokensift_clkgen" in text


class TestCostModel:
    @pytest.mark.parametrize("cfg", [dict(n_max=197, head_dim=64, lanes=16), dict(n_max=64, head_dim=32, lanes=8),
                                     dict(n_max=48, head_dim=16, lanes=16, softmax="exp2_poly"),
                                     dict(n_max=30, head_dim=8, lanes=1)])
    def test_closed_form_equals_schedule(self, cfg):
        p = AttentionParams(**cfg)
        closed = 0
        for n in range(1, p.n_max + 1):
            s = frame_schedule(p, n_tokens=n)
            assert cycles(p, n_tokens=n) == s.last_output
            closed += s.closed_form
        assert closed > 0

    def test_goals(self):
        p = dict(n_max=197, head_dim=64, lanes=16)
        assert mac_utilization(**p, n_tokens=197) >= 0.90
        c197 = cycles(**p, n_tokens=197)
        for n in (138, 97, 68):
            ratio = c197 / cycles(**p, n_tokens=n)
            assert abs(ratio / (197 / n) ** 2 - 1) <= 0.05

    def test_heads(self):
        p = AttentionParams(n_max=16, head_dim=16, lanes=4)
        one, interval = cycles(p, n_tokens=16), frame_interval(p, n_tokens=16)
        assert cycles(p, n_tokens=16, heads=3) == 2 * interval + one
        assert cycles(p, n_tokens=[16, 16, 16]) == cycles(p, n_tokens=16, heads=3)
        p2 = AttentionParams(n_max=16, head_dim=16, lanes=4, heads_parallel=2)
        beats = frame_beats(16, p2)
        assert cycles(p2, n_tokens=16, heads=2) == beats + one
        assert cycles(p2, n_tokens=16, heads=3) == interval + one
        assert mac_utilization(p2, n_tokens=16, heads=4) == 4 * macs(16, 16) / (8 * cycles(p2, n_tokens=16, heads=4))

    def test_cycles_scale_with_n(self):
        p = AttentionParams(n_max=197, head_dim=64, lanes=16)
        values = [cycles(p, n_tokens=n) for n in range(1, 198)]
        assert all(a < b for a, b in zip(values, values[1:], strict=False))

    @pytest.mark.parametrize("kwargs, exc, message", [
        ({"n_tokens": 0}, ValueError, r"^n_tokens must be between 1 and n_max 8, not 0$"),
        ({"n_tokens": 9}, ValueError, r"^n_tokens must be between 1 and n_max 8, not 9$"),
        ({"n_tokens": 2.0}, TypeError, r"^n_tokens must be an integer, not float$"),
        ({"n_tokens": 2, "heads": 0}, ValueError, r"^heads must be at least 1, not 0$"),
        ({"n_tokens": [2, 3], "heads": 2}, ValueError,
         r"^give heads only with a single n_tokens, not with a sequence$"),
        ({"n_tokens": []}, ValueError, r"^n_tokens must not be an empty sequence$"),
    ])
    def test_wrong(self, kwargs, exc, message):
        with pytest.raises(exc, match=message):
            cycles(AttentionParams(n_max=8, head_dim=8, lanes=4), **kwargs)

    def test_params_or_keywords(self):
        p = AttentionParams(n_max=8, head_dim=8, lanes=4)
        assert cycles(p, n_tokens=5) == cycles(n_max=8, head_dim=8, lanes=4, n_tokens=5)
        with pytest.raises(TypeError, match=r"^give either params or parameter keywords, not both$"):
            cycles(p, n_tokens=5, lanes=4)
        with pytest.raises(TypeError, match=r"^params must be an AttentionParams, not dict$"):
            cycles({}, n_tokens=5)


class TestConstants:
    def test_ranges(self):
        r = ConstantRanges()
        assert (r.scale_mult_bits, r.scale_shift_max, r.out_mult_bits, r.out_shift_max) == (17, 48, 16, 62)
        assert (r.scale_shift_bits, r.out_shift_bits) == (6, 6)
        assert ConstantRanges.from_dict(r.to_dict()) == r
        p = AttentionParams(n_max=4, head_dim=4, lanes=4, out_multiplier=(1 << 17) - 1, out_shift=40)
        assert ConstantRanges.covering(p).out_mult_bits == 17
        assert ConstantRanges.covering(AttentionParams(n_max=4, head_dim=4, lanes=4)) == r
        assert r.accepts(p) is False and ConstantRanges.covering(p).accepts(p) is True

    @pytest.mark.parametrize("kwargs, exc, message", [
        ({"scale_mult_bits": 18}, ValueError, r"^scale_mult_bits must be between 1 and 17, not 18$"),
        ({"out_mult_bits": 0}, ValueError, r"^out_mult_bits must be between 1 and 17, not 0$"),
        ({"scale_shift_max": 49}, ValueError, r"^scale_shift_max must be between 0 and 48, not 49$"),
        ({"out_shift_max": 63}, ValueError, r"^out_shift_max must be between 0 and 62, not 63$"),
        ({"out_shift_max": 6.0}, TypeError, r"^out_shift_max must be an integer, not float$"),
    ])
    def test_init_wrong(self, kwargs, exc, message):
        with pytest.raises(exc, match=message):
            ConstantRanges(**kwargs)

    def test_covering_wrong(self):
        p = AttentionParams(n_max=4, head_dim=4, lanes=4, out_multiplier=1 << 17)
        with pytest.raises(ValueError, match=r"^out_multiplier must be below 2\*\*17 for the attention core's "
                                             r"run-time multiplier, not 131072$"):
            ConstantRanges.covering(p)
        with pytest.raises(ValueError, match=r"^out_multiplier must be below 2\*\*17"):
            Attention(params=p)
        with pytest.raises(TypeError, match=r"^params must be an AttentionParams, not dict$"):
            ConstantRanges.covering({})
        with pytest.raises(TypeError, match=r"^ranges must be a ConstantRanges, not dict$"):
            Attention(n_max=4, head_dim=4, lanes=4, ranges={})
        with pytest.raises(TypeError, match=r"^checked_headers must be a bool, not int$"):
            Attention(n_max=4, head_dim=4, lanes=4, checked_headers=1)

    def test_encode_and_errors(self):
        p = AttentionParams(n_max=4, head_dim=4, lanes=4, scale_multiplier=5, scale_shift=7, out_multiplier=9,
                            out_shift=11)
        word = encode_constants(p)
        layout = const_layout()
        fields = {name: (word >> f.offset) & ((1 << f.width) - 1) for name, f in layout}
        assert fields == {"scale_multiplier": 5, "scale_shift": 7, "out_multiplier": 9, "out_shift": 11}
        assert encode_constants(p, out_shift=255) >> 72 == 255
        assert encode_constants(scale_multiplier=1, scale_shift=0, out_multiplier=1, out_shift=0) == 1 | 1 << 40
        r = ConstantRanges(out_mult_bits=3)
        assert constant_errors(p, r) == ["out_multiplier 9 is not in 1..7"]
        assert constant_errors({**fields, "scale_multiplier": 0, "scale_shift": 49}, r) == [
            "scale_multiplier 0 is not in 1..131071", "out_multiplier 9 is not in 1..7", "scale_shift 49 is not in 0..48"]
        with pytest.raises(ValueError, match=r"^out_shift must be between 0 and 255, not 256$"):
            encode_constants(p, out_shift=256)
        with pytest.raises(ValueError, match=r"^scale_multiplier must be given when params is not$"):
            encode_constants(scale_shift=1, out_multiplier=1, out_shift=1)


class TestScaling:
    @pytest.mark.parametrize("x_bits, mult_bits, shift_max", [(23, 17, 48), (24, 16, 62), (12, 9, 20)])
    def test_sim_against_round_shift(self, x_bits, mult_bits, shift_max):
        rng = np.random.default_rng(x_bits)
        lo, hi = -(1 << (x_bits - 1)), (1 << (x_bits - 1)) - 1
        xs = np.concatenate([[lo, hi, 0, -1, 1], rng.integers(lo, hi + 1, 60)])
        ms = np.concatenate([[(1 << mult_bits) - 1, 1, 1 << (mult_bits - 1)], rng.integers(1, 1 << mult_bits, 62)])
        ss = np.concatenate([[shift_max, 0, 1, 7, 8], rng.integers(0, shift_max + 1, 60)])
        m = Module()
        x = Signal(signed(x_bits))
        mult = Signal(mult_bits)
        shift = Signal(range(shift_max + 1))
        prod = scaled_product(m, x, mult, name="t")
        shift_d = [shift]
        for i in range(PRODUCT_STAGES):
            d = Signal.like(shift, name=f"sd{i}")
            m.d.sync += d.eq(shift_d[-1])
            shift_d.append(d)
        out = round_shift_stages(m, prod, shift_d[-1], name="t")
        got = []

        async def bench(ctx):
            for i in range(len(xs) + PRODUCT_STAGES + SHIFT_STAGES):
                if i < len(xs):
                    ctx.set(x, int(xs[i]))
                    ctx.set(mult, int(ms[i]))
                    ctx.set(shift, int(ss[i]))
                await ctx.tick()
                if i + 1 >= PRODUCT_STAGES + SHIFT_STAGES:
                    got.append(ctx.get(out))

        run(m, bench)
        assert got[: len(xs)] == [int(round_shift(np.int64(x * mu), int(sh))) for x, mu, sh in zip(xs, ms, ss, strict=True)]
        assert partial_products(x_bits, mult_bits) == ([(x_bits, mult_bits + 1)] if x_bits <= 18 else
                                                       [(18, mult_bits + 1), (x_bits - 17, mult_bits + 1)])


class TestRuntimeRequantizer:
    def test_sim_against_requantize(self):
        rng = np.random.default_rng(4)
        fmt = FixedFormat(bits=8)
        values = rng.integers(-(1 << 23), 1 << 23, 80)
        mults = rng.integers(1, 1 << 16, 80)
        shifts = rng.integers(0, 63, 80)
        values[:3], mults[:3], shifts[:3] = [-(1 << 23), (1 << 23) - 1, 77], [(1 << 16) - 1, 1, 3], [0, 62, 1]
        dut = RuntimeRequantizer(value_bits=24, out=fmt, mult_bits=16, shift_max=62, tag_bits=8)
        got = []

        async def bench(ctx):
            for i in range(len(values) + dut.latency + 3):
                if i < len(values):
                    ctx.set(dut.i_valid, 1)
                    ctx.set(dut.i_value, int(values[i]))
                    ctx.set(dut.multiplier, int(mults[i]))
                    ctx.set(dut.shift, int(shifts[i]))
                    ctx.set(dut.i_tag, i % 256)
                else:
                    ctx.set(dut.i_valid, 0)
                await ctx.tick()
                if ctx.get(dut.o_valid):
                    got.append((ctx.get(dut.o_value), ctx.get(dut.o_tag), i))
            got.append(ctx.get(dut.overflows))

        run(dut, bench)
        overflows = got.pop()
        counter = OverflowCounter()
        expect = [int(requantize(np.array([v]), int(mu), int(s), fmt, counter=counter, site="t")[0])
                  for v, mu, s in zip(values, mults, shifts, strict=True)]
        assert [v for v, _, _ in got] == expect
        assert all(i - tag == dut.latency - 1 for _, tag, i in got)
        assert overflows == counter.total > 0

    def test_init_wrong(self):
        with pytest.raises(ValueError, match=r"^out rounding must be half_up, not floor$"):
            RuntimeRequantizer(value_bits=8, out=FixedFormat(bits=8, rounding=Rounding.FLOOR), mult_bits=4,
                               shift_max=4)
        with pytest.raises(TypeError, match=r"^out must be a FixedFormat, not int$"):
            RuntimeRequantizer(value_bits=8, out=8, mult_bits=4, shift_max=4)


class TestRunTimeConstants:
    def test_header_waits_for_its_constants(self):
        # the second frame's beats come first, its constants 40 cycles after the core went idle: the header
        # is not taken before them (and no core sees it), then the frame runs with them
        p = AttentionParams(n_max=4, head_dim=4, lanes=2)
        rng = np.random.default_rng(2)
        frames = [_frame(rng, n, p) for n in (3, 2)]
        layers = [p, random_layer(rng, p)]
        dut = Attention(params=p)
        out = {"o": [], "s": [], "k_taken": [], "header_taken": [], "cycle": 0}

        async def k_producer(ctx):
            for i, layer in enumerate(layers):
                if i == 1:
                    await ctx.tick().until(~dut.status.busy)
                    await ctx.tick().repeat(40)
                ctx.set(dut.k_stream.payload.as_value(), encode_constants(layer))
                ctx.set(dut.k_stream.valid, 1)
                await ctx.tick().until(dut.k_stream.ready)
                ctx.set(dut.k_stream.valid, 0)  # one beat per frame: held valid, it would be taken again
                out["k_taken"].append(out["cycle"])

        async def producer(ctx):
            for f in frames:
                for j, beat in enumerate(encode_frame(*f, p)):
                    ctx.set(dut.i_stream.payload.as_value(), beat)
                    ctx.set(dut.i_stream.valid, 1)
                    await ctx.tick().until(dut.i_stream.ready)
                    if j == 0:
                        out["header_taken"].append(out["cycle"])
            ctx.set(dut.i_stream.valid, 0)

        async def consumer(ctx):
            ctx.set(dut.o_stream.ready, 1)
            ctx.set(dut.s_stream.ready, 1)
            for _ in range(1500):
                if ctx.get(dut.o_stream.valid):
                    out["o"].append(ctx.get(dut.o_stream.payload.row.as_value()))
                if ctx.get(dut.s_stream.valid):
                    out["s"].append(ctx.get(dut.s_stream.payload.prob))
                await ctx.tick()
                out["cycle"] += 1

        run(dut, k_producer, producer, consumer)
        expect = [attention_head(*f, layer) for f, layer in zip(frames, layers, strict=True)]
        assert decode_rows(out["o"], p).tolist() == np.concatenate([o for o, _ in expect]).tolist()
        assert out["s"] == np.concatenate([c for _, c in expect]).tolist()
        assert out["header_taken"][1] > out["k_taken"][1] >= 40  # the header waited for its constants

    def test_out_of_range_constants_are_rejected(self):
        p = AttentionParams(n_max=4, head_dim=4, lanes=2)
        ranges = ConstantRanges(scale_mult_bits=17, scale_shift_max=30, out_mult_bits=10, out_shift_max=40)
        rng = np.random.default_rng(8)
        bad = [{"scale_multiplier": 0}, {"out_multiplier": 1 << 10}, {"scale_shift": 31}, {"out_shift": 41},
               {"scale_multiplier": 1 << 17}]
        frames, consts, expect = [], [], []
        for override in bad:
            frames.append(encode_frame(*_frame(rng, 2, p), p))
            consts.append(encode_constants(p, **override))
            f = _frame(rng, 3, p)
            layer = random_layer(rng, p, ranges)
            frames.append(encode_frame(*f, p))
            consts.append(layer)
            expect.append(attention_head(*f, layer))
        dut = Attention(params=p, ranges=ranges)
        res = stream_frames(dut, frames, o_beats=15 * p.chunks, s_beats=15, consts=consts, idle=0.2, stall=0.2)
        assert decode_rows([w & 0xFFFF for w in res["o"]], p).tolist() == np.concatenate(
            [o for o, _ in expect]).tolist()
        assert [w & 0xFFFF for w in res["s"]] == np.concatenate([c for _, c in expect]).tolist()

    def test_layers_of_a_calibrated_model(self, calibrated_layers):
        # two attention layers of a calibrated integer ViT, frames alternating between them on one core
        base = AttentionParams(n_max=6, head_dim=calibrated_layers[0].head_dim, lanes=4)
        layers = [AttentionParams(**{**base.to_dict(), "softmax": base.softmax, "scale_multiplier": a.scale_multiplier,
                                     "scale_shift": a.scale_shift, "out_multiplier": a.out_multiplier,
                                     "out_shift": a.out_shift}) for a in calibrated_layers]
        assert len({(a.scale_multiplier, a.out_multiplier) for a in layers}) == 2
        rng = np.random.default_rng(6)
        frames, consts, expect = [], [], []
        for i, n in enumerate((6, 4, 5, 1)):
            f = [rng.integers(-128, 128, size=(n, base.head_dim)) for _ in range(3)]
            frames.append(encode_frame(*f, base))
            consts.append(layers[i % 2])
            expect.append(attention_head(*f, layers[i % 2]))
        res = stream_frames(Attention(params=base), frames, o_beats=16 * base.chunks, s_beats=16, consts=consts,
                            idle=0.3, stall=0.3, seed=3)
        row_bits = base.lanes * base.data_bits
        assert decode_rows([w & ((1 << row_bits) - 1) for w in res["o"]], base).tolist() == np.concatenate(
            [o for o, _ in expect]).tolist()
        assert [w & 0xFFFF for w in res["s"]] == np.concatenate([c for _, c in expect]).tolist()


@pytest.fixture(scope="module")
def calibrated_layers():
    """The attention parameters of blocks 0 and 1 of a small ViT (random weights) calibrated on 16 MNIST
    images."""
    import torch
    from torch.utils.data import DataLoader, Subset

    from tokensift.quant.integer_model import IntegerViT
    from tokensift.sw import create_model
    from tokensift.sw.data import load_mnist

    train, _ = load_mnist()
    torch.manual_seed(0)
    model = create_model("vit_mnist_patch4_28", embed_dim=32, depth=2, num_heads=2, prune_locs=(1,), weight_init="jax",
                         pos_embed_init="sincos").eval()
    images = [x for x, _ in DataLoader(Subset(train, range(16)), batch_size=16)]
    return [blk.attn for blk in IntegerViT.from_float(model, images).blocks]
