# amaranth: UnusedElaboratable=no
"""Amaranth-simulator tests of the score combiner, bit for bit against quant.select.head_weighted_scores."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from amaranth.hdl import Module, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.sim import Simulator
from amaranth_streams import StreamBench

from tokensift.hw.common.resources import multiplier_dsps
from tokensift.hw.score_combiner import core as score_combiner
from tokensift.hw.score_combiner.core import (
    CombinerParams,
    CombinerStatus,
    ScoreCombiner,
    check_runtime,
    combiner_cycles,
    weight_beats,
)
from tokensift.hw.score_combiner.resources import (
    dsps,
    exact,
    features,
    memories,
    params_from_dict,
    params_to_dict,
)
from tokensift.hw.selector.core import Selector
from tokensift.quant.fixed import FixedFormat, Overflow, OverflowCounter, Rounding
from tokensift.quant.select import head_weighted_scores, order_key


def _dut(p: CombinerParams) -> ScoreCombiner:
    return ScoreCombiner(n_max=p.n_max, heads=p.heads, lanes=p.lanes, attn_bits=p.attn_bits, attn_frac=p.attn_frac,
                         importance_bits=p.importance_bits, importance_frac=p.importance_frac, score=p.score,
                         per_token_weights=p.per_token_weights)


def _values(p: CombinerParams, rng, shape):
    low, high = (-(1 << (p.attn_bits - 1)), 1 << (p.attn_bits - 1)) if p.signed else (0, 1 << p.attn_bits)
    return rng.integers(low, high, shape)


def _beats(values, lanes, junk):
    """A row of values as beats of ``lanes`` (the lanes past its end filled by ``junk(count)``)."""
    b = -(-len(values) // lanes)
    padded = np.concatenate([np.asarray(values, np.int64), junk(b * lanes - len(values))])
    return [[int(v) for v in padded[i * lanes:(i + 1) * lanes]] for i in range(b)]


def make_frame(p: CombinerParams, rng, *, n, heads, rows=None, weights=None, per_token=False, counter=None):
    """One frame's stimulus (command, weight beats, row beats) and its reference scores and status.

    ``weights`` is (H,) per head or (H, N) per token; the reference is ``head_weighted_scores`` (its
    ``order_key`` with a signed score: what ``o_score`` carries)."""
    rows = _values(p, rng, (heads, n)) if rows is None else np.asarray(rows, np.int64)
    top_w = 1 << p.importance_bits
    if weights is None:
        weights = rng.integers(0, top_w, (heads, n) if per_token else heads)
    weights = np.asarray(weights, np.int64)
    status = check_runtime(p, n_tokens=n, heads=heads, per_token=per_token)
    beats = [b for h in range(heads) for b in _beats(rows[h], p.lanes, lambda k: _values(p, rng, k))]  # junk lanes
    junk_w = lambda k: rng.integers(0, top_w, k)  # noqa: E731
    if per_token:
        w_beats = [b for h in range(heads) for b in _beats(weights[h], p.lanes, junk_w)]
    elif p.per_token_weights:  # the head weight in lane 0 of a lanes-wide beat
        w_beats = [[int(w), *junk_w(p.lanes - 1).tolist()] for w in weights]
    else:
        w_beats = [int(w) for w in weights]
    assert len(w_beats) == weight_beats(p, n_tokens=n, heads=heads, per_token=per_token)
    ref = []
    if status is CombinerStatus.OK:
        ref = head_weighted_scores(rows, weights, attn_frac=p.attn_frac, importance_frac=p.importance_frac,
                                   score=p.score, counter=counter)
        ref = (order_key(ref, p.score.bits) if p.signed else ref).tolist()
    cmd = {"n_tokens": n, "heads": heads, **({"per_token": int(per_token)} if p.per_token_weights else {})}
    return {"cmd": cmd, "weights": w_beats, "beats": beats, "ref": ref, "status": status, "per_token": per_token}


def simulate(p: CombinerParams, frames, *, stall=0.0, idle=0.0, seed=0, limit=50_000):
    """Drive frames through the combiner; returns (scores, statuses, cmd accept cycles, overflows)."""
    dut = _dut(p)
    bench = StreamBench(seed, idle=idle, stall=stall)
    scores, statuses, accepts, final = [], [], [], {}
    expected = sum(len(f["ref"]) for f in frames)

    def on_cmd(ctx):
        accepts.append(bench.now)
        statuses.append(CombinerStatus(ctx.get(dut.status)))

    async def sink(ctx):
        await bench.sink(dut.o_score, scores, expected)(ctx)
        ctx.set(dut.o_score.ready, 0)
        await ctx.tick().repeat(4)
        final["overflows"] = ctx.get(dut.overflows)
        final["valid"] = ctx.get(dut.o_score.valid)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench.source(dut.i_cmd, [f["cmd"] for f in frames], on_cmd))
    sim.add_testbench(bench.source(dut.i_weight, [w for f in frames for w in f["weights"]]))
    sim.add_testbench(bench.source(dut.i_attn, [b for f in frames for b in f["beats"]]))
    sim.add_testbench(sink)
    sim.add_process(bench.clock)
    while sim.advance():
        assert bench.now < limit, "simulation did not finish"
    assert not final["valid"], "more scores than expected"
    return scores, statuses, accepts, final["overflows"]


def check(p, frames, result, counter=None):
    scores, statuses, _, overflows = result
    assert statuses == [f["status"] for f in frames]
    assert scores == [s for f in frames for s in f["ref"]]
    if counter is not None:
        assert overflows == counter.total


class TestParams:
    def test_init(self):
        dut = ScoreCombiner(n_max=197, heads=6, lanes=4)
        assert dut.params == CombinerParams(n_max=197, heads=6, lanes=4)
        assert (dut.params.acc_bits, dut.params.words, dut.params.shift) == (28, 50, 8)
        assert len(dut.status) == 3 and len(dut.overflows) == 32

    @pytest.mark.parametrize(("kwargs", "exc", "message"), [
        ({"n_max": 0}, ValueError, r"^n_max must be between 1 and 4096, not 0$"),
        ({"heads": 256}, ValueError, r"^heads must be between 1 and 255, not 256$"),
        ({"lanes": 2.0}, TypeError, r"^lanes must be an integer, not float$"),
        ({"lanes": 65}, ValueError, r"^lanes must be between 1 and 64, not 65$"),
        ({"lanes": 32}, ValueError, r"^lanes must be at most n_max=16, not 32$"),
        ({"attn_bits": 32}, ValueError, r"^attn_bits must be between 1 and 31, not 32$"),
        ({"attn_frac": -1}, ValueError, r"^attn_frac must be between 0 and 30, not -1$"),
        ({"importance_bits": True}, TypeError, r"^importance_bits must be an integer, not bool$"),
        ({"importance_frac": 31}, ValueError, r"^importance_frac must be between 0 and 30, not 31$"),
        ({"score": 16}, TypeError, r"^score must be a FixedFormat, not int$"),
        ({"score": FixedFormat(bits=8, frac=4), "attn_bits": 1}, ValueError,
         r"^attn_bits must be at least 2 with a signed score, not 1$"),
        ({"per_token_weights": 1}, TypeError, r"^per_token_weights must be a bool, not int$"),
    ])
    def test_init_wrong(self, kwargs, exc, message):
        with pytest.raises(exc, match=message):
            ScoreCombiner(**{"n_max": 16, "heads": 4, **kwargs})

    def test_positional_refused(self):
        with pytest.raises(TypeError):
            ScoreCombiner(16, 4)  # the parameters are keyword-only

    @pytest.mark.parametrize(("kwargs", "exc", "message"), [
        ({"n_tokens": -1}, ValueError, r"^n_tokens must be between 0 and 65535, not -1$"),
        ({"heads": 256}, ValueError, r"^heads must be between 0 and 255, not 256$"),
        ({"heads": 1.0}, TypeError, r"^heads must be an integer, not float$"),
        ({"params": None}, TypeError, r"^params must be CombinerParams, not NoneType$"),
        ({"per_token": 1}, TypeError, r"^per_token must be a bool, not int$"),
        ({"per_token": True}, ValueError,
         r"^per_token requested from a score combiner built without per_token_weights=True$"),
    ])
    def test_runtime_wrong(self, kwargs, exc, message):
        args = {"params": CombinerParams(n_max=8, heads=2), "n_tokens": 4, "heads": 2, **kwargs}
        with pytest.raises(exc, match=message):
            combiner_cycles(args.pop("params"), **args)

    @pytest.mark.parametrize("score", [FixedFormat(bits=16, frac=15, signed=False), FixedFormat(bits=16, frac=12)])
    def test_connects_to_selector(self, score):
        comb = ScoreCombiner(n_max=16, heads=2, lanes=4, score=score, per_token_weights=score.signed)
        sel = Selector(n_max=16, dim=8, lanes=4)
        m = Module()
        m.submodules += [comb, sel]
        wiring.connect(m, comb.o_score, sel.i_score)  # signed scores leave as their unsigned order keys

    def test_ports_of_the_modes(self):
        plain = ScoreCombiner(n_max=16, heads=2, lanes=4)
        both = ScoreCombiner(n_max=16, heads=2, lanes=4, per_token_weights=True, score=FixedFormat(bits=12, frac=8))
        assert len(plain.i_weight.payload) == 9 and len(both.i_weight.payload.as_value()) == 4 * 9
        assert "per_token" not in dict(plain.i_cmd.payload.shape()) and len(both.i_cmd.payload.per_token) == 1
        assert both.i_attn.payload[0].shape().signed and not plain.i_attn.payload[0].shape().signed
        assert len(both.o_score.payload) == 12 and not both.o_score.payload.shape().signed

    def test_doctests(self):
        assert doctest.testmod(score_combiner).failed == 0


class TestSim:
    @pytest.mark.parametrize(("n_max", "heads", "lanes", "seed"), [(13, 3, 3, 1), (9, 4, 1, 2), (16, 2, 4, 3)])
    def test_random_stalls(self, n_max, heads, lanes, seed):
        p = CombinerParams(n_max=n_max, heads=heads, lanes=lanes, attn_bits=9, attn_frac=8, importance_bits=6,
                           importance_frac=5, score=FixedFormat(bits=10, frac=9, signed=False))
        rng = np.random.default_rng(seed)
        counter = OverflowCounter()
        frames = [make_frame(p, rng, n=int(rng.integers(1, n_max + 1)), heads=int(rng.integers(1, heads + 1)),
                             counter=counter) for _ in range(8)]
        frames.insert(3, make_frame(p, rng, n=n_max + 1, heads=2))  # N > n_max in the middle
        frames.insert(6, make_frame(p, rng, n=n_max, heads=heads + 1))  # H > heads
        frames.append(make_frame(p, rng, n=n_max, heads=heads, counter=counter))
        check(p, frames, simulate(p, frames, stall=0.4, idle=0.3, seed=seed), counter)
        assert counter.total > 0

    def test_corners_and_cycles(self):
        p = CombinerParams(n_max=8, heads=3, lanes=2, attn_bits=8, attn_frac=7, importance_bits=5,
                           importance_frac=4, score=FixedFormat(bits=8, frac=7, signed=False))
        rng = np.random.default_rng(2)
        counter = OverflowCounter()
        top_a, top_w = (1 << p.attn_bits) - 1, (1 << p.importance_bits) - 1
        frames = [
            make_frame(p, rng, n=8, heads=3, rows=np.zeros((3, 8)), counter=counter),  # all-zero rows
            make_frame(p, rng, n=8, heads=3, rows=np.full((3, 8), top_a), weights=[top_w] * 3,
                       counter=counter),  # everything saturates
            make_frame(p, rng, n=5, heads=1, counter=counter),  # one head
            make_frame(p, rng, n=1, heads=3, counter=counter),  # N = 1: every row one beat, back to back
            make_frame(p, rng, n=7, heads=2, rows=[[9] * 7, [3] * 7], counter=counter),  # ties
            make_frame(p, rng, n=0, heads=2),  # N = 0
            make_frame(p, rng, n=9, heads=2),  # N > n_max
            make_frame(p, rng, n=4, heads=0),  # no head
            make_frame(p, rng, n=4, heads=4),  # more heads than built
            make_frame(p, rng, n=8, heads=3, counter=counter),  # N = n_max after invalid frames
            make_frame(p, rng, n=3, heads=2, rows=[[128, 64, 0], [0, 128, 255]], weights=[8, 24],
                       counter=counter),
        ]
        assert frames[1]["ref"] == [255] * 8 and frames[4]["ref"][1:] == frames[4]["ref"][:-1]
        result = simulate(p, frames)
        check(p, frames, result, counter)
        assert counter.total >= 8  # frame 1 saturates all 8 scores
        periods = np.diff(result[2]).tolist()
        want = [combiner_cycles(p, n_tokens=f["cmd"]["n_tokens"], heads=f["cmd"]["heads"], per_token=f["per_token"])
                for f in frames[:-1]]
        assert periods == want

    @pytest.mark.parametrize("lanes", [1, 4])
    def test_rounding_modes_and_shifts(self, lanes):
        rng = np.random.default_rng(lanes)
        for score in (FixedFormat(bits=6, frac=3, signed=False, rounding=Rounding.HALF_EVEN),
                      FixedFormat(bits=5, frac=8, signed=False, overflow=Overflow.WRAP),  # left shift
                      FixedFormat(bits=12, frac=7, signed=False, rounding=Rounding.FLOOR)):  # shift 0
            p = CombinerParams(n_max=6, heads=2, lanes=lanes, attn_bits=5, attn_frac=4, importance_bits=4,
                               importance_frac=3, score=score)
            counter = OverflowCounter()
            frames = [make_frame(p, rng, n=int(rng.integers(1, 7)), heads=int(rng.integers(1, 3)), counter=counter)
                      for _ in range(3)]
            check(p, frames, simulate(p, frames, stall=0.3, seed=lanes), counter)

    @pytest.mark.parametrize("mode", ["per_head", "signed_per_token"])
    def test_reset_mid_frame(self, mode):
        per_token = mode == "signed_per_token"
        score = FixedFormat(bits=4, frac=2, signed=per_token)
        p = CombinerParams(n_max=6, heads=2, lanes=2, attn_bits=6, attn_frac=5, importance_bits=4,
                           importance_frac=3, score=score, per_token_weights=per_token)
        rng = np.random.default_rng(5)
        counter = OverflowCounter()
        top = (1 << (p.attn_bits - 1)) - 1 if p.signed else (1 << p.attn_bits) - 1
        first = make_frame(p, rng, n=6, heads=2, rows=np.full((2, 6), top), per_token=per_token,
                           weights=np.full((2, 6) if per_token else 2, 15))
        clean = make_frame(p, rng, n=5, heads=2, per_token=per_token, counter=counter)
        rst = Signal()
        dut = _dut(p)
        top = ResetInserter(rst)(dut)
        got = []

        async def put(ctx, port, item):
            ctx.set(port.payload, item)
            ctx.set(port.valid, 1)
            await ctx.tick().until(port.ready)
            ctx.set(port.valid, 0)

        async def put_frame(ctx, frame, row_beats=None):
            await put(ctx, dut.i_cmd, frame["cmd"])
            beats = frame["beats"][:row_beats]
            if not per_token:
                for w in frame["weights"]:
                    await put(ctx, dut.i_weight, w)
                for b in beats:
                    await put(ctx, dut.i_attn, b)
                return
            # a row beat and its weight beat go together (a cut frame sends fewer row beats than weight beats)
            for w, b in zip(frame["weights"], beats, strict=False):
                ctx.set(dut.i_weight.payload, w)
                ctx.set(dut.i_attn.payload, b)
                ctx.set(dut.i_weight.valid, 1)
                ctx.set(dut.i_attn.valid, 1)
                await ctx.tick().until(dut.i_attn.ready & dut.i_weight.ready)
                ctx.set(dut.i_weight.valid, 0)
                ctx.set(dut.i_attn.valid, 0)

        async def tb(ctx):
            for cut in ("load", "out"):
                await put_frame(ctx, first, 4 if cut == "load" else None)
                if cut == "out":  # two saturated scores leave, then the reset
                    ctx.set(dut.o_score.ready, 1)
                    sent = 0
                    while sent < 2:
                        *_, valid = await ctx.tick().sample(dut.o_score.valid)
                        sent += valid
                    ctx.set(dut.o_score.ready, 0)
                    await ctx.tick().repeat(2)  # the count follows a transfer by two cycles
                    assert ctx.get(dut.overflows) == 2 and ctx.get(dut.o_score.valid)
                ctx.set(rst, 1)
                await ctx.tick()
                ctx.set(rst, 0)
                assert ctx.get(dut.overflows) == 0 and not ctx.get(dut.o_score.valid)
                await put_frame(ctx, clean)
                ctx.set(dut.o_score.ready, 1)
                for _ in clean["ref"]:
                    (payload,) = await ctx.tick().sample(dut.o_score.payload).until(dut.o_score.valid)
                    got.append(payload)
                ctx.set(dut.o_score.ready, 0)
                await ctx.tick()
                assert ctx.get(dut.overflows) == counter.total and not ctx.get(dut.o_score.valid)
                ctx.set(rst, 1)
                await ctx.tick()
                ctx.set(rst, 0)

        sim = Simulator(top)
        sim.add_clock(1e-8)
        sim.add_testbench(tb)
        sim.run()
        assert got == clean["ref"] * 2


class TestModes:
    """Per-token weights (the released AS-ViT and SPViT) and signed values (SPViT's logit differences)."""

    @staticmethod
    def params(*, lanes, signed, per_token_weights=True, n_max=11, heads=3, score_bits=10):
        return CombinerParams(n_max=n_max, heads=heads, lanes=lanes, attn_bits=9, attn_frac=8, importance_bits=6,
                              importance_frac=5, score=FixedFormat(bits=score_bits, frac=8, signed=signed),
                              per_token_weights=per_token_weights)

    @pytest.mark.parametrize(("lanes", "signed", "per_token_weights", "seed"), [
        (3, True, True, 1), (1, False, True, 2), (4, True, False, 3), (2, True, True, 4)])
    def test_random_stalls_and_mode_switches(self, lanes, signed, per_token_weights, seed):
        p = self.params(lanes=lanes, signed=signed, per_token_weights=per_token_weights)
        rng = np.random.default_rng(seed)
        counter = OverflowCounter()
        modes = [bool(rng.integers(0, 2)) and per_token_weights for _ in range(9)]
        frames = [make_frame(p, rng, n=int(rng.integers(1, p.n_max + 1)), heads=int(rng.integers(1, p.heads + 1)),
                             per_token=pt, counter=counter) for pt in modes]
        frames.insert(2, make_frame(p, rng, n=p.n_max + 1, heads=2, per_token=per_token_weights))  # flagged
        frames.insert(5, make_frame(p, rng, n=3, heads=p.heads + 1, per_token=per_token_weights))  # flagged
        check(p, frames, simulate(p, frames, stall=0.4, idle=0.3, seed=seed), counter)
        if per_token_weights:
            assert {f["per_token"] for f in frames} == {True, False}

    def test_corners_and_cycles(self):
        p = self.params(lanes=2, signed=True, n_max=8, score_bits=8)
        rng = np.random.default_rng(7)
        counter = OverflowCounter()
        a_min, a_max, w_max = -(1 << (p.attn_bits - 1)), (1 << (p.attn_bits - 1)) - 1, (1 << p.importance_bits) - 1
        frames = [
            make_frame(p, rng, n=8, heads=3, weights=np.zeros((3, 8)), per_token=True, counter=counter),  # all 0
            make_frame(p, rng, n=8, heads=3, rows=np.full((3, 8), a_max), weights=np.full((3, 8), w_max),
                       per_token=True, counter=counter),  # saturates high
            make_frame(p, rng, n=8, heads=3, rows=np.full((3, 8), a_min), weights=np.full((3, 8), w_max),
                       per_token=True, counter=counter),  # saturates low: key 0
            make_frame(p, rng, n=7, heads=2, rows=[[a_min, -1, 0, 1, a_max, -5, 5]] * 2,
                       weights=[[w_max, 1, 7, 1, 0, 3, 3], [0, 1, 0, 1, 1, 3, 3]], per_token=True, counter=counter),
            make_frame(p, rng, n=5, heads=1, per_token=True, counter=counter),  # one head
            make_frame(p, rng, n=1, heads=3, per_token=True, counter=counter),  # N = 1: one-beat rows back to back
            make_frame(p, rng, n=1, heads=3, counter=counter),  # ... per head, right after
            make_frame(p, rng, n=6, heads=3, rows=np.full((3, 6), a_min), weights=[w_max] * 3,
                       counter=counter),  # per head, saturates low
            make_frame(p, rng, n=0, heads=2, per_token=True),  # N = 0
            make_frame(p, rng, n=9, heads=2, per_token=True),  # N > n_max: 2 x 5 beats of each stream taken
            make_frame(p, rng, n=4, heads=0, per_token=True),  # no head
            make_frame(p, rng, n=4, heads=4, per_token=True),  # more heads than built
            make_frame(p, rng, n=8, heads=3, per_token=True, counter=counter),  # N = n_max after invalid frames
            make_frame(p, rng, n=3, heads=2, counter=counter),
        ]
        assert frames[0]["ref"] == [128] * 8  # order_key(0)
        assert frames[1]["ref"] == [255] * 8 and frames[2]["ref"] == [0] * 8 and frames[7]["ref"] == [0] * 6
        result = simulate(p, frames)
        check(p, frames, result, counter)
        assert counter.total >= 8 + 8 + 6
        periods = np.diff(result[2]).tolist()
        want = [combiner_cycles(p, n_tokens=f["cmd"]["n_tokens"], heads=f["cmd"]["heads"], per_token=f["per_token"])
                for f in frames[:-1]]
        assert periods == want

    def test_signed_per_head_deit_widths(self):
        """The default widths, signed (SPViT's logit differences with per-head weights), a few frames."""
        p = CombinerParams(n_max=20, heads=6, lanes=4, score=FixedFormat(bits=16, frac=12))
        rng = np.random.default_rng(11)
        counter = OverflowCounter()
        frames = [make_frame(p, rng, n=int(rng.integers(1, 21)), heads=6, counter=counter) for _ in range(3)]
        check(p, frames, simulate(p, frames, stall=0.2, idle=0.2, seed=11), counter)
        assert p.acc_bits == 28 and dsps(p, "ecp5") == 4


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(24))
def test_random_configurations_sweep(seed):
    """Random widths, formats, signedness and weight modes, stalled, bit for bit (a minute in all)."""
    rng = np.random.default_rng(1000 + seed)
    n_max = int(rng.integers(1, 25))
    signed = bool(rng.integers(0, 2))
    attn_bits, importance_bits = int(rng.integers(2, 13)), int(rng.integers(1, 9))
    score = FixedFormat(bits=int(rng.integers(2, 17)), frac=int(rng.integers(0, 16)), signed=signed,
                        rounding=list(Rounding)[int(rng.integers(0, len(Rounding)))],
                        overflow=list(Overflow)[int(rng.integers(0, len(Overflow)))])
    p = CombinerParams(n_max=n_max, heads=int(rng.integers(1, 6)), lanes=int(rng.integers(1, min(8, n_max) + 1)),
                       attn_bits=attn_bits, attn_frac=int(rng.integers(0, attn_bits + 1)),
                       importance_bits=importance_bits, importance_frac=int(rng.integers(0, importance_bits + 1)),
                       score=score, per_token_weights=bool(rng.integers(0, 2)))
    counter = OverflowCounter()
    frames = [make_frame(p, rng, n=int(rng.integers(0, n_max + 2)), heads=int(rng.integers(0, p.heads + 2)),
                         per_token=p.per_token_weights and bool(rng.integers(0, 2)), counter=counter)
              for _ in range(8)]
    check(p, frames, simulate(p, frames, stall=0.3, idle=0.3, seed=seed, limit=200_000), counter)


@pytest.mark.parametrize("lanes", [1, 2, 4, 16])
def test_cycles_deit_small(lanes):
    p = CombinerParams(n_max=197, heads=6, lanes=lanes)
    b = -(-197 // lanes)
    assert combiner_cycles(p, n_tokens=197, heads=6) == 6 * b + 197 + 7


class TestResources:
    @pytest.mark.parametrize(("lanes", "family", "dsp", "bram18", "bram36", "ebr", "acc_kind"), [
        (1, "xcup", 1, 1, 0, 0, "block"),  # 197 x 28 bits: one RAMB18
        (4, "xcup", 4, 0, 0, 0, "distributed"),  # 50 x 112 bits: LUT RAM
        (4, "ecp5", 4, 0, 0, 4, "block"),
        (16, "xc7", 16, 0, 0, 0, "distributed"),
    ])
    def test_deit_small(self, lanes, family, dsp, bram18, bram36, ebr, acc_kind):
        p = CombinerParams(n_max=197, heads=6, lanes=lanes)
        r = exact(p, family)
        assert (r.dsp, r.bram18, r.bram36, r.ebr) == (dsp, bram18, bram36, ebr)
        mems = memories(p, family)
        assert (mems["acc"].width, mems["acc"].depth, mems["acc"].kind) == (lanes * 28, -(-197 // lanes), acc_kind)
        assert (mems["weights"].width, mems["weights"].depth, mems["weights"].kind) == (9, 6, "distributed")

    @pytest.mark.parametrize(("family", "dsp_signed", "dsp_unsigned"), [("xcup", 1, 2), ("ecp5", 1, 1)])
    def test_signed_multiplier_width(self, family, dsp_signed, dsp_unsigned):
        # an 18 x 18 unsigned product needs 19 x 19 signed on a signed-only DSP; a signed value times an
        # unsigned weight is one 18 x 19 signed product
        wide = {"n_max": 16, "heads": 2, "lanes": 1, "attn_bits": 18, "importance_bits": 18}
        signed_p = CombinerParams(**wide, score=FixedFormat(bits=16, frac=12), per_token_weights=True)
        assert (dsps(signed_p, family), dsps(CombinerParams(**wide), family)) == (dsp_signed, dsp_unsigned)
        assert dsps(signed_p, family) == multiplier_dsps(18, 19, family=family, signed=True)

    def test_signed_accumulator_width(self):
        # the most negative sum sets it: -heads * 2**(attn_bits - 1) * (2**importance_bits - 1)
        for heads, a, w in [(1, 2, 1), (6, 16, 9), (3, 9, 6), (255, 31, 31)]:
            p = CombinerParams(n_max=4, heads=heads, attn_bits=a, importance_bits=w, score=FixedFormat(bits=8, frac=0))
            low = -heads * (1 << (a - 1)) * ((1 << w) - 1)
            assert -(1 << (p.acc_bits - 1)) <= low < -(1 << (p.acc_bits - 2))
            assert memories(p, "xcup")["acc"].width == p.acc_bits

    def test_params_dict_round_trip_and_features(self):
        p = CombinerParams(n_max=100, heads=3, lanes=2, per_token_weights=True,
                           score=FixedFormat(bits=12, frac=9, rounding=Rounding.FLOOR, overflow=Overflow.WRAP))
        assert params_from_dict(params_to_dict(p)) == p
        assert params_from_dict({"n_max": 8, "heads": 2}) == CombinerParams(n_max=8, heads=2)
        f, plain = features(p, "ecp5"), features(CombinerParams(n_max=100, heads=3, lanes=2), "ecp5")
        assert f["per_token_bits"] == 2 * 9 and plain["per_token_bits"] == 0
        assert f["sum_bits"] == 2 * p.acc_bits and f["addr_bits"] == 6  # 50 words

    def test_narrow_multipliers_stay_in_luts(self):
        p = CombinerParams(n_max=16, heads=2, lanes=2, attn_bits=4, importance_bits=4)
        assert dsps(p, "xcup") == 0 and dsps(p, "ecp5") == 2
        assert dsps(CombinerParams(n_max=16, heads=2, lanes=2, attn_bits=30, importance_bits=9), "xcup") == \
            2 * multiplier_dsps(30, 9, family="xcup", signed=False) == 4

    @pytest.mark.parametrize(("args", "exc", "message"), [
        ((None, "xcup"), TypeError, r"^params must be CombinerParams, not NoneType$"),
        ((CombinerParams(n_max=4, heads=1), "xc9"), ValueError, r"^family must be one of "),
    ])
    def test_wrong(self, args, exc, message):
        with pytest.raises(exc, match=message):
            exact(*args)

    def test_doctests(self):
        from tokensift.hw.score_combiner import resources as score_combiner_resources

        assert doctest.testmod(score_combiner_resources).failed == 0


@pytest.mark.parametrize(("argv", "message"), [
    (["generate", "score_combiner", "--lanes", "65", "--out", "unused"],
     r"^tokensift generate: error: lanes must be between 1 and 64, not 65$"),
    (["generate", "score_combiner", "--n-max", "8", "--lanes", "16", "--out", "unused"],
     r"^tokensift generate: error: lanes must be at most n_max=8, not 16$"),
])
def test_cli_errors(argv, message, capsys):
    import re

    from tokensift.cli import main

    assert main(argv) == 2
    assert re.match(message, capsys.readouterr().err.strip())
