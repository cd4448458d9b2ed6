# amaranth: UnusedElaboratable=no
"""Amaranth-simulator tests of the token selector and its sub-units, bit for bit against quant/select.py."""

from __future__ import annotations

import doctest
import importlib
import re
from dataclasses import asdict

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator
from amaranth_streams import StreamBench, run_to_completion

from tokensift.hw.selector.compactor import Compactor
from tokensift.hw.selector.core import Selector, cycles
from tokensift.hw.selector.histogram import HistogramSelect
from tokensift.hw.selector.mass import MassTarget
from tokensift.hw.selector.package import PackageMAC
from tokensift.quant.fixed import OverflowCounter
from tokensift.quant.select import (
    Mode,
    SelectorParams,
    Status,
    keep_by_threshold,
    mass_keep_count,
    package_token,
    radix_threshold,
    select_frame,
)


def _run(dut, *testbenches, processes=(), limit=200_000):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for tb in testbenches:
        sim.add_testbench(tb)
    for proc in processes:
        sim.add_process(proc)
    assert run_to_completion(sim, max_cycles=limit), f"a testbench still runs after {limit} cycles"


# -- HistogramSelect ---------------------------------------------------------------------------------------
class TestHistogramSelect:
    def test_init(self):
        dut = HistogramSelect(score_bits=10, count_bits=8)
        assert dut.digits == 3 and dut.scan_cycles == 18 and len(dut.threshold) == 12
        assert HistogramSelect(score_bits=10, count_bits=8, sum_bits=18).tie_cycles == 11

    @pytest.mark.parametrize(("kwargs", "exc", "message"), [
        ({"score_bits": 0}, ValueError, r"^score_bits must be between 1 and 24, not 0$"),
        ({"count_bits": 17}, ValueError, r"^count_bits must be between 1 and 16, not 17$"),
        ({"radix_bits": 2.0}, TypeError, r"^radix_bits must be an integer, not float$"),
        ({"sum_bits": 5}, ValueError, r"^sum_bits must be 0 or at least score_bits=8, not 5$"),
    ])
    def test_init_wrong(self, kwargs, exc, message):
        with pytest.raises(exc, match=message):
            HistogramSelect(**{"score_bits": 8, "count_bits": 8, **kwargs})

    @pytest.mark.parametrize("score_bits", [3, 9])
    def test_sim_search(self, score_bits):
        rng = np.random.default_rng(score_bits)
        cases = [([5] * 7, 3), ([5] * 7, 7), ([1, 2, 3], 0), ([], 0), ([(1 << score_bits) - 1, 0], 2)]
        for _ in range(8):
            n = int(rng.integers(1, 30))
            cand = rng.integers(0, 1 << score_bits, n).tolist()
            cases.append((cand, int(rng.integers(0, n + 1))))
        dut = HistogramSelect(score_bits=score_bits, count_bits=6)
        results = []

        async def tb(ctx):
            for cand, k in cases:
                ctx.set(dut.k, k)
                ctx.set(dut.start, 1)
                await ctx.tick()
                ctx.set(dut.start, 0)
                while not ctx.get(dut.done):
                    for s in cand:
                        ctx.set(dut.sample, 1)
                        ctx.set(dut.score, s)
                        await ctx.tick()
                    ctx.set(dut.sample, 0)
                    ctx.set(dut.scan, 1)
                    await ctx.tick()
                    ctx.set(dut.scan, 0)
                    busy = 0
                    while ctx.get(dut.busy):
                        await ctx.tick()
                        busy += 1
                    assert busy == dut.scan_cycles
                results.append((ctx.get(dut.threshold), ctx.get(dut.ties)))

        _run(dut, tb)
        assert len(results) == len(cases)
        for (cand, k), got in zip(cases, results, strict=True):
            assert got == radix_threshold([0, *cand], k, len(cand) + 1, score_bits=score_bits), (cand, k)


    @pytest.mark.parametrize(("score_bits", "mass_frac"), [(5, 7), (9, 1), (4, 12)])
    def test_sim_mass_search(self, score_bits, mass_frac):
        """The room from MassTarget, then the sum histogram and the tie divider: the same kept set as
        mass_keep_count + radix_threshold, in a fixed number of busy cycles."""
        rng = np.random.default_rng(score_bits + mass_frac)
        top = (1 << score_bits) - 1
        whole = 1 << mass_frac
        cases = [([0, 5, 5, 5, 5], max(1, whole // 2)), ([0, top, top, 0, 0, 1], whole - 1 or 1),
                 ([0, 0, 0, 3], 1), ([0, 1, 1, 1, 1, 1, 1], 1), ([0, top] + [1] * 20, max(1, whole - 1))]
        for _ in range(12):
            n = int(rng.integers(2, 25))
            sc = rng.integers(0, top + 1, n)
            sc[rng.random(n) < 0.3] = rng.integers(0, 3)
            sc[1] = max(sc[1], 1)  # some mass: a frame whose candidates all score 0 keeps all, without a search
            cases.append((sc.tolist(), int(rng.integers(1, whole)) if whole > 1 else 1))
        sum_bits = score_bits + 5
        dut = HistogramSelect(score_bits=score_bits, count_bits=5, sum_bits=sum_bits)
        mt = MassTarget(sum_bits=sum_bits, mass_frac=mass_frac)
        top_m = Module()
        top_m.submodules.search, top_m.submodules.target = dut, mt
        results = []

        async def tb(ctx):
            for scores, mass in cases:
                cand = scores[1:]
                ctx.set(mt.mass, mass)
                ctx.set(mt.total, sum(cand))
                ctx.set(mt.start, 1)
                await ctx.tick()
                ctx.set(mt.start, 0)
                busy = 0
                while ctx.get(mt.busy):
                    await ctx.tick()
                    busy += 1
                assert busy == mt.cycles
                ctx.set(dut.room, ctx.get(mt.target))
                ctx.set(dut.mass, 1)
                ctx.set(dut.start, 1)
                await ctx.tick()
                ctx.set(dut.start, 0)
                digit = 0
                while not ctx.get(dut.done):
                    for v in cand:
                        ctx.set(dut.sample, 1)
                        ctx.set(dut.score, v)
                        await ctx.tick()
                    ctx.set(dut.sample, 0)
                    ctx.set(dut.scan, 1)
                    await ctx.tick()
                    ctx.set(dut.scan, 0)
                    busy = 0
                    while ctx.get(dut.busy):
                        await ctx.tick()
                        busy += 1
                    digit += 1
                    assert busy == dut.scan_cycles + (dut.tie_cycles if digit == dut.digits else 0)
                results.append((ctx.get(mt.target), ctx.get(dut.threshold), ctx.get(dut.ties)))

        _run(top_m, tb)
        assert len(results) == len(cases)
        for (scores, mass), (room, v, ties) in zip(cases, results, strict=True):
            n = len(scores)
            assert room == -(-mass * sum(scores[1:]) // (1 << mass_frac))
            k = mass_keep_count(scores, n, mass, mass_frac=mass_frac)
            want, _ = keep_by_threshold(scores, *radix_threshold(scores, k, n, score_bits=score_bits), n)
            got, _ = keep_by_threshold(scores, v, ties, n)
            assert got.tolist() == want.tolist(), (scores, mass, k)


# -- MassTarget --------------------------------------------------------------------------------------------
class TestMassTarget:
    @pytest.mark.parametrize(("kwargs", "exc", "message"), [
        ({"mass_frac": 25}, ValueError, r"^mass_frac must be between 0 and 24, not 25$"),
        ({"sum_bits": "8"}, TypeError, r"^sum_bits must be an integer, not str$"),
    ])
    def test_init_wrong(self, kwargs, exc, message):
        with pytest.raises(exc, match=message):
            MassTarget(**{"sum_bits": 8, "mass_frac": 4, **kwargs})

    @pytest.mark.parametrize(("sum_bits", "mass_frac"), [(12, 7), (20, 15), (5, 0)])
    def test_sim_target(self, sum_bits, mass_frac):
        rng = np.random.default_rng(sum_bits)
        top, whole = (1 << sum_bits) - 1, 1 << mass_frac
        cases = [(0, top), (whole - 1, top), (whole, top), (1, 1), (whole - 1, 1), (whole // 2, 0)]
        cases += [(int(rng.integers(0, whole + 1)), int(rng.integers(0, top + 1))) for _ in range(10)]
        dut = MassTarget(sum_bits=sum_bits, mass_frac=mass_frac)
        results = []

        async def tb(ctx):
            for mass, total in cases:
                ctx.set(dut.mass, mass)
                ctx.set(dut.total, total)
                ctx.set(dut.start, 1)
                await ctx.tick()
                ctx.set(dut.start, 0)
                busy = 0
                while ctx.get(dut.busy):
                    await ctx.tick()
                    busy += 1
                assert busy == dut.cycles
                results.append(ctx.get(dut.target))

        _run(dut, tb)
        # the whole (bit mass_frac) is the caller's: the target is of mass mod 2**mass_frac
        assert results == [-(-(mass % whole) * total // whole) for mass, total in cases]


# -- Compactor ---------------------------------------------------------------------------------------------
class TestCompactor:
    @pytest.mark.parametrize(("kwargs", "exc", "message"), [
        ({"threshold_bits": 4}, ValueError, r"^threshold_bits must be at least score_bits=6, not 4$"),
        ({"idx_bits": True}, TypeError, r"^idx_bits must be an integer, not bool$"),
        ({"weight_bits": 25}, ValueError, r"^weight_bits must be between 1 and 24, not 25$"),
    ])
    def test_init_wrong(self, kwargs, exc, message):
        with pytest.raises(exc, match=message):
            Compactor(**{"score_bits": 6, "threshold_bits": 8, "idx_bits": 5, "count_bits": 6, "weight_bits": 4,
                         **kwargs})

    def test_sim_compaction(self):
        rng = np.random.default_rng(7)
        cases = [([3] * 6, 3, 2), ([3] * 6, 3, 0), ([0, 1, 2], 63, 0), ([9], 0, 0)]
        for _ in range(10):
            n = int(rng.integers(1, 20))
            s = rng.integers(0, 8, n).tolist()
            v = int(rng.integers(0, 9))
            cases.append((s, v, int(rng.integers(0, n))))
        dut = Compactor(score_bits=6, threshold_bits=8, idx_bits=5, count_bits=6, weight_bits=4)
        results = []
        weights = [rng.integers(0, 16, len(c[0])).tolist() for c in cases]

        async def tb(ctx):
            for (scores, v, ties), w in zip(cases, weights, strict=True):
                n = len(scores)
                ctx.set(dut.threshold, v)
                ctx.set(dut.ties, ties)
                ctx.set(dut.n_tokens, n)
                ctx.set(dut.start, 1)
                await ctx.tick()
                ctx.set(dut.start, 0)
                order = [None] * n
                for i, s in enumerate(scores):
                    ctx.set(dut.sample, 1)
                    ctx.set(dut.index, i)
                    ctx.set(dut.score, s)
                    ctx.set(dut.weight, w[i])
                    assert ctx.get(dut.w_en) == 1
                    order[ctx.get(dut.w_addr)] = ctx.get(dut.w_data)
                    await ctx.tick()
                ctx.set(dut.sample, 0)
                results.append((order, ctx.get(dut.n_kept), ctx.get(dut.pruned_sum)))

        _run(dut, tb)
        assert len(results) == len(cases)
        for (scores, v, ties), w, (order, n_kept, psum) in zip(cases, weights, results, strict=True):
            mask, idx = keep_by_threshold(scores, v, ties, len(scores))
            assert n_kept == idx.size
            assert order[:n_kept] == idx.tolist()
            assert sorted(order[n_kept:]) == np.flatnonzero(~mask).tolist()
            assert psum == int(np.asarray(w)[~mask].sum())  # the package weights, not the scores


# -- PackageMAC --------------------------------------------------------------------------------------------
class TestPackageMAC:
    @pytest.mark.parametrize(("kwargs", "exc", "message"), [
        ({"lanes": 0}, ValueError, r"^lanes must be between 1 and 256, not 0$"),
        ({"frac": 33}, ValueError, r"^frac must be between 0 and 32, not 33$"),
        ({"feature_bits": 17}, ValueError, r"^feature_bits must be between 2 and 16, not 17$"),
    ])
    def test_init_wrong(self, kwargs, exc, message):
        with pytest.raises(exc, match=message):
            PackageMAC(**{"lanes": 4, "score_bits": 8, "feature_bits": 8, "count_bits": 5, **kwargs})

    @pytest.mark.parametrize("rule", ["mean", "sum"])
    @pytest.mark.parametrize(("lanes", "score_bits", "feature_bits"), [(4, 8, 8), (3, 16, 5), (1, 3, 12)])
    def test_sim_package_beat(self, lanes, score_bits, feature_bits, rule):
        rng = np.random.default_rng(lanes * 100 + score_bits)
        lo, hi = -(1 << (feature_bits - 1)), (1 << (feature_bits - 1)) - 1
        smax = (1 << score_bits) - 1
        cases = [
            (np.full((5, lanes), lo), np.full(5, smax), np.ones(5, bool)),  # most negative, widest sum
            (np.full((5, lanes), hi), np.full(5, smax), np.ones(5, bool)),
            (np.full((3, lanes), 7), np.array([1, 2, 3]), np.zeros(3, bool)),  # no pruned token
            (np.full((3, lanes), 7), np.array([0, 0, 5]), np.array([True, True, False])),  # zero score sum
            (np.array([[lo] * lanes, [lo + 1] * lanes]), np.array([1, 1]), np.ones(2, bool)),  # -x.5 ties
        ]
        for _ in range(5):
            n = int(rng.integers(1, 15))
            cases.append((rng.integers(lo, hi + 1, (n, lanes)), rng.integers(0, smax + 1, n),
                          rng.integers(0, 2, n).astype(bool)))
        frac = score_bits // 2
        dut = PackageMAC(lanes=lanes, score_bits=score_bits, feature_bits=feature_bits, count_bits=5, frac=frac)
        results, flags = [], []

        async def tb(ctx):
            for x, s, pruned in cases:
                ctx.set(dut.clear, 1)
                await ctx.tick()
                ctx.set(dut.clear, 0)
                for i in np.flatnonzero(pruned):
                    ctx.set(dut.sample, 1)
                    ctx.set(dut.weight, int(s[i]))
                    ctx.set(dut.features, [int(v) for v in x[i]])
                    await ctx.tick()
                ctx.set(dut.sample, 0)
                await ctx.tick().repeat(PackageMAC.latency)
                ctx.set(dut.divisor, int(s[pruned].sum()))
                ctx.set(dut.sum, rule == "sum")
                ctx.set(dut.divide, 1)
                await ctx.tick()
                ctx.set(dut.divide, 0)
                busy = 0
                while ctx.get(dut.busy):
                    await ctx.tick()
                    busy += 1
                assert busy == (dut.divide_cycles if rule == "mean" else 0)
                results.append([int(v) for v in ctx.get(dut.result)])
                flags.append(bin(ctx.get(dut.overflowed)).count("1"))

        _run(dut, tb)
        assert len(results) == len(cases)
        for (x, s, pruned), got, over in zip(cases, results, flags, strict=True):
            counter = OverflowCounter()
            want = package_token(x, s, pruned, feature_bits=feature_bits, mode=rule, score_frac=frac, counter=counter)
            assert (got, over) == (want.tolist(), counter.total)
        if rule == "sum" and feature_bits < 12:
            assert sum(flags) > 0  # the widest sums saturated


# -- the whole selector, Python simulator ------------------------------------------------------------------
def make_frame(p: SelectorParams, rng, *, n, mode, k=0, t=0, mass=0, package=False, rule="mean", scores=None,
               weights=None, features=None):
    s = rng.integers(0, 1 << p.score_bits, n) if scores is None else np.asarray(scores, dtype=np.int64)
    lo, hi = -(1 << (p.feature_bits - 1)), 1 << (p.feature_bits - 1)
    x = rng.integers(lo, hi, (n, p.dim)) if features is None else np.asarray(features, dtype=np.int64)
    w = None
    if p.weight_bits:
        w = rng.integers(0, 1 << p.weight_bits, n) if weights is None else np.asarray(weights, dtype=np.int64)
    ref = select_frame(p, s, x, mode=mode, k=k if mode is Mode.TOPK else None,
                       threshold=t if mode is Mode.THRESHOLD else None, mass=mass if mode is Mode.MASS else None,
                       package=package, package_rule=rule, weights=w)
    cmd = {"mode": int(mode), "n_tokens": n, "k": k, "threshold": t}
    if p.package:
        cmd.update(package=int(package), package_sum=int(rule == "sum"))
    if p.mass:
        cmd["mass"] = mass
    score_beats = s.tolist() if w is None else [{"score": int(a), "weight": int(b)} for a, b in zip(s, w, strict=True)]
    return {"cmd": cmd, "scores": score_beats, "features": x, "ref": ref, "mode": mode, "rule": rule}


def expected_beats(p: SelectorParams, ref) -> list[tuple[int, int, list[int]]]:
    """(index, package flag, data) per output beat."""
    out = []
    for j, idx in enumerate(ref.indices.tolist()):
        out += [(idx, 0, ref.tokens[j][b * p.lanes:(b + 1) * p.lanes].tolist()) for b in range(p.beats)]
    if ref.package is not None:
        out += [(0, 1, ref.package[b * p.lanes:(b + 1) * p.lanes].tolist()) for b in range(p.beats)]
    return out


def frame_cycles(p: SelectorParams, f) -> int:
    ref = f["ref"]
    return cycles(p, n_tokens=len(f["scores"]), kept=max(ref.n_kept, 1), mode=f["mode"],
                  package=ref.package is not None, package_rule=f["rule"], status=ref.status)


def simulate_frames(p: SelectorParams, frames, *, stall=0.0, idle=0.0, seed=0):
    """Drive frames through the selector in the Python simulator; returns headers, beats, accept cycles
    and the final ``overflows`` count (None without a package datapath)."""
    dut = Selector(**asdict(p))
    bench = StreamBench(seed, idle=idle, stall=stall)
    headers, beats, accepts, overflows = [], [], [], []
    n_beats = sum(len(expected_beats(p, f["ref"])) for f in frames)
    features = [[int(v) for v in row[b * p.lanes:(b + 1) * p.lanes]]
                for f in frames for row in f["features"] for b in range(p.beats)]
    sink = bench.sink(dut.o_token, beats, n_beats)

    async def tokens_then_overflows(ctx):
        await sink(ctx)
        await ctx.tick().repeat(4)  # the counter trails the package beat by three cycles
        overflows.append(ctx.get(dut.overflows) if p.package else None)

    _run(dut,
         bench.source(dut.i_cmd, [f["cmd"] for f in frames], lambda ctx: accepts.append(bench.now)),
         bench.source(dut.i_score, [s for f in frames for s in f["scores"]]),
         bench.source(dut.i_feature, features),
         bench.sink(dut.o_frame, headers, len(frames)),
         tokens_then_overflows,
         processes=[bench.clock], limit=100_000)
    return headers, beats, accepts, overflows[0]


def check_frames(p, frames, headers, beats, overflows=None):
    assert len(headers) == len(frames)
    pos = 0
    for f, h in zip(frames, headers, strict=True):
        ref = f["ref"]
        assert (h.status, h.n_kept, h.package) == (int(ref.status), ref.n_kept, int(ref.package is not None)), f["cmd"]
        want = expected_beats(p, ref)
        got = [(b.index, b.package, list(b.data)) for b in beats[pos:pos + len(want)]]
        assert got == want, f["cmd"]
        assert [b.last for b in beats[pos:pos + len(want)]] == [0] * (len(want) - 1) + [1] * bool(want)
        pos += len(want)
    assert pos == len(beats)
    if overflows is not None:
        assert overflows == sum(f["ref"].overflows for f in frames)


class TestSelector:
    def test_init(self):
        sel = Selector(n_max=16, dim=8, lanes=4, package=True)
        assert sel.params == SelectorParams(n_max=16, dim=8, lanes=4, package=True)
        assert len(sel.o_token.payload.data) == 4

    @pytest.mark.parametrize(("kwargs", "exc", "message"), [
        ({"n_max": 5000}, ValueError, r"^n_max must be between 2 and 4096, not 5000$"),
        ({"dim": 10}, ValueError, r"^dim must be a multiple of lanes, not dim=10 with lanes=4$"),
        ({"package": "yes"}, TypeError, r"^package must be a bool, not str$"),
        ({"weight_bits": 8}, ValueError, r"^weight_bits=8 needs package=True \(the weights only feed the package "
                                         r"token\)$"),
        ({"mass_frac": 25}, ValueError, r"^mass_frac must be between 0 and 24, not 25$"),
        ({"mass": 1}, TypeError, r"^mass must be a bool, not int$"),
    ])
    def test_init_wrong(self, kwargs, exc, message):
        with pytest.raises(exc, match=message):
            Selector(**{"n_max": 16, "dim": 8, "lanes": 4, **kwargs})

    def test_sim_corners_and_cycles(self):
        p = SelectorParams(n_max=10, dim=6, lanes=3, score_bits=5, package=True)
        rng = np.random.default_rng(3)
        frames = [
            make_frame(p, rng, n=10, mode=Mode.TOPK, k=4, package=True),
            make_frame(p, rng, n=10, mode=Mode.TOPK, k=0, package=True),  # k = 0
            make_frame(p, rng, n=10, mode=Mode.TOPK, k=9, package=True),  # keep all: no package token
            make_frame(p, rng, n=7, mode=Mode.TOPK, k=3, package=True, scores=[6] * 7),  # all equal
            make_frame(p, rng, n=1, mode=Mode.TOPK, k=0, package=True),  # N = 1
            make_frame(p, rng, n=8, mode=Mode.THRESHOLD, t=31, package=True),  # above all scores
            make_frame(p, rng, n=8, mode=Mode.THRESHOLD, t=0, package=False, scores=[0] + [1] * 7),  # below
            make_frame(p, rng, n=6, mode=Mode.TOPK, k=6),  # k > N - 1
            make_frame(p, rng, n=11, mode=Mode.THRESHOLD, t=3),  # N > n_max
            make_frame(p, rng, n=0, mode=Mode.TOPK, k=0),  # N = 0
            make_frame(p, rng, n=9, mode=Mode.MASS, mass=3),  # not built with mass: flagged
            make_frame(p, rng, n=9, mode=Mode.THRESHOLD, t=9, package=True),
        ]
        headers, beats, accepts, overflows = simulate_frames(p, frames)
        check_frames(p, frames, headers, beats, overflows)
        assert frames[-2]["ref"].status is Status.MODE_UNSUPPORTED
        for f, period in zip(frames[:-1], np.diff(accepts), strict=True):
            assert period == frame_cycles(p, f), (f["cmd"], period)

    def test_sim_sum_rule(self):
        """The unnormalised package token: rounding half up by weight_frac, saturation counted, the
        divider's cycles skipped; switching rules back to back."""
        p = SelectorParams(n_max=12, dim=4, lanes=2, score_bits=6, feature_bits=5, package=True, weight_frac=2)
        rng = np.random.default_rng(21)
        big = np.full((12, 4), 15)
        big[:, 1] = -16
        frames = [
            make_frame(p, rng, n=12, mode=Mode.TOPK, k=5, package=True, rule="sum"),
            make_frame(p, rng, n=12, mode=Mode.TOPK, k=5, package=True, rule="mean"),
            make_frame(p, rng, n=12, mode=Mode.TOPK, k=2, package=True, rule="sum", scores=[63] * 12,
                       features=big),  # saturates both ways in every lane
            make_frame(p, rng, n=12, mode=Mode.THRESHOLD, t=40, package=True, rule="sum",
                       scores=[0, 1, 2, 3, 1, 2, 3, 1, 2, 3, 45, 50]),  # small sums: rounding half up
            make_frame(p, rng, n=12, mode=Mode.TOPK, k=3, package=True, rule="sum", scores=[0] * 12),  # zero weights
            make_frame(p, rng, n=5, mode=Mode.TOPK, k=4, package=True, rule="sum"),  # nothing pruned
            make_frame(p, rng, n=12, mode=Mode.TOPK, k=1, package=True, rule="mean"),
        ]
        headers, beats, accepts, overflows = simulate_frames(p, frames)
        check_frames(p, frames, headers, beats, overflows)
        assert frames[2]["ref"].overflows == p.dim and overflows >= p.dim
        for f, period in zip(frames[:-1], np.diff(accepts), strict=True):
            assert period == frame_cycles(p, f), (f["cmd"], period)

    def test_sim_weights_and_mass(self):
        """Package weights apart from the scores, and mass mode, with every mode back to back."""
        p = SelectorParams(n_max=11, dim=4, lanes=4, score_bits=6, package=True, weight_bits=5, weight_frac=3,
                           mass=True, mass_frac=6)
        rng = np.random.default_rng(5)
        ties = [0, 9, 4, 9, 9, 2, 9, 1, 9, 0, 3]
        frames = [
            make_frame(p, rng, n=11, mode=Mode.MASS, mass=40, package=True),
            make_frame(p, rng, n=11, mode=Mode.MASS, mass=0, package=True, rule="sum"),  # mass 0: keep none
            make_frame(p, rng, n=11, mode=Mode.MASS, mass=64, package=True, scores=[5, 0, 3, 0, 7, 0, 1, 2, 0, 0, 4]),
            make_frame(p, rng, n=11, mode=Mode.MASS, mass=20, package=True, scores=[9] + [0] * 10),  # all zero
            make_frame(p, rng, n=11, mode=Mode.MASS, mass=33, package=True, rule="sum", scores=ties),  # ties at v
            make_frame(p, rng, n=11, mode=Mode.MASS, mass=63, package=True, scores=[0, 63, 63, 0, 0, 1, 0, 0, 0, 0, 0]),
            make_frame(p, rng, n=11, mode=Mode.MASS, mass=65, package=True),  # mass > 1: flagged
            make_frame(p, rng, n=1, mode=Mode.MASS, mass=30, package=True),  # no candidate
            make_frame(p, rng, n=11, mode=Mode.TOPK, k=4, package=True, rule="sum"),
            make_frame(p, rng, n=11, mode=Mode.THRESHOLD, t=32, package=True),
            make_frame(p, rng, n=11, mode=Mode.MASS, mass=1, package=True, weights=[0] * 11),  # zero weights
            make_frame(p, rng, n=10, mode=Mode.MASS, mass=50, package=True, rule="sum"),
        ]
        headers, beats, accepts, overflows = simulate_frames(p, frames)
        check_frames(p, frames, headers, beats, overflows)
        assert frames[6]["ref"].status is Status.MASS_TOO_LARGE
        assert [f["ref"].n_kept for f in frames[1:4]] == [1, 11, 11]
        for f, period in zip(frames[:-1], np.diff(accepts), strict=True):
            assert period == frame_cycles(p, f), (f["cmd"], period)

    def test_sim_unknown_mode(self):
        """Mode 3 (no such mode) is flagged and its inputs drained."""
        p = SelectorParams(n_max=6, dim=2, lanes=2, score_bits=4, mass=True, mass_frac=4)
        rng = np.random.default_rng(1)
        good = make_frame(p, rng, n=6, mode=Mode.MASS, mass=9)
        bad = dict(make_frame(p, rng, n=6, mode=Mode.TOPK, k=2), cmd={"mode": 3, "n_tokens": 6, "k": 2,
                                                                       "threshold": 0, "mass": 0})
        bad["ref"] = select_frame(p, [0] * 6, np.zeros((6, 2), np.int64), mode=Mode.TOPK, k=9)  # no tokens out
        bad["ref"].status = Status.MODE_UNSUPPORTED
        headers, beats, _, _ = simulate_frames(p, [bad, good])
        check_frames(p, [bad, good], headers, beats)

    def test_sim_random_stalls(self):
        p = SelectorParams(n_max=9, dim=4, lanes=2, score_bits=3, feature_bits=6, package=True, mass=True,
                           mass_frac=5, weight_frac=1)
        rng = np.random.default_rng(11)
        frames = []
        for _ in range(10):
            n = int(rng.integers(0, 11))
            mode = Mode(int(rng.integers(0, 3)))
            frames.append(make_frame(p, rng, n=n, mode=mode, k=int(rng.integers(0, max(n, 1) + 1)),
                                     t=int(rng.integers(0, 8)), mass=int(rng.integers(0, 34)),
                                     package=bool(rng.integers(0, 2)), rule=("mean", "sum")[int(rng.integers(0, 2))]))
        headers, beats, _, overflows = simulate_frames(p, frames, stall=0.4, idle=0.3, seed=5)
        check_frames(p, frames, headers, beats, overflows)
        assert any(f["ref"].status is not Status.OK for f in frames)
        assert {f["mode"] for f in frames} == set(Mode)


class TestCycles:
    def test_formula_pieces(self):
        p = SelectorParams(n_max=197, dim=384, lanes=16, package=True)
        base = cycles(p, n_tokens=197, kept=99, mode=Mode.THRESHOLD)
        assert cycles(p, n_tokens=197, kept=100, mode=Mode.THRESHOLD) - base == p.beats
        search = cycles(p, n_tokens=197, kept=99, mode=Mode.TOPK) - base
        assert search == p.digits * 20 + (p.digits - 1) * 197
        assert cycles(p, n_tokens=197, kept=1, mode=Mode.TOPK, status=Status.K_TOO_LARGE) == 197 * 24 + 3
        # the sum rule skips the divider: feature_bits + 1 cycles per package beat
        mean = cycles(p, n_tokens=197, kept=99, mode=Mode.TOPK, package=True)
        assert mean - cycles(p, n_tokens=197, kept=99, mode=Mode.TOPK, package=True, package_rule="sum") == \
            p.beats * (p.feature_bits + 1)
        # mass: the top-k search plus the target (mass_frac + 2) and the tie divider (count_bits + 3)
        pm = SelectorParams(n_max=197, dim=384, lanes=16, mass=True, mass_frac=15)
        assert cycles(pm, n_tokens=197, kept=99, mode=Mode.MASS) - cycles(pm, n_tokens=197, kept=99, mode=Mode.TOPK) \
            == 15 + 2 + pm.count_bits + 3

    @pytest.mark.parametrize(("kwargs", "exc", "message"), [
        ({"mode": 0}, TypeError, r"^mode must be a Mode, not int$"),
        ({"kept": 0}, ValueError, r"^kept must be between 1 and n_tokens=10, not 0$"),
        ({"n_tokens": 1 << 16}, ValueError, r"^n_tokens must be between 0 and 65535, not 65536$"),
        ({"kept": 2.0}, TypeError, r"^kept must be an integer, not float$"),
        ({"package": True}, ValueError, r"^package token requested from a selector built without package=True$"),
        ({"package_rule": "max"}, ValueError, r"^package_rule must be 'mean' or 'sum', not 'max'$"),
        ({"mode": Mode.MASS}, ValueError, r"^mass mode asked of a selector built without mass=True$"),
    ])
    def test_cycles_wrong(self, kwargs, exc, message):
        p = SelectorParams(n_max=16, dim=8, lanes=4)
        with pytest.raises(exc, match=message):
            cycles(p, **{"n_tokens": 10, "kept": 3, "mode": Mode.TOPK, **kwargs})


@pytest.mark.parametrize("module", ["tokensift.hw.selector.core", "tokensift.hw.selector.histogram",
                                    "tokensift.hw.selector.compactor", "tokensift.hw.selector.package",
                                    "tokensift.hw.selector.mass"])
def test_doctests(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0


@pytest.mark.parametrize(("argv", "message"), [
    (["generate", "selector", "--lanes", "5", "--out", "unused"],
     r"^tokensift generate: error: dim must be a multiple of lanes, not dim=384 with lanes=5$"),
    (["simulate", "selector", "--n-max", "16", "--dim", "8", "--lanes", "4", "--tokens", "70000", "--keep", "3"],
     r"^tokensift simulate: error: --tokens must be between 1 and --n-max 16, not 70000$"),
    (["simulate", "selector", "--n-max", "16", "--dim", "8", "--lanes", "4", "--threshold", "-1"],
     r"^tokensift simulate: error: --threshold: threshold must be between 0 and 65535, not -1$"),
])
def test_cli_errors(argv, message, capsys):
    from tokensift.cli import main

    assert main(argv) == 2
    assert re.match(message, capsys.readouterr().err.strip())
