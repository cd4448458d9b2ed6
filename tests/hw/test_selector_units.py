# amaranth: UnusedElaboratable=no
"""Amaranth-simulator tests of the token selector and its sub-units, bit for bit against quant/select.py."""

from __future__ import annotations

import doctest
import importlib
import re

import numpy as np
import pytest
from amaranth.sim import Simulator
from amaranth_streams import StreamBench

from tokensift.hw.selector.compactor import Compactor
from tokensift.hw.selector.core import Selector, cycles
from tokensift.hw.selector.histogram import HistogramSelect
from tokensift.hw.selector.package import PackageMAC
from tokensift.quant.select import (
    Mode,
    SelectorParams,
    Status,
    keep_by_threshold,
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
    sim.run_until(1e-8 * limit)


# -- HistogramSelect ---------------------------------------------------------------------------------------
class TestHistogramSelect:
    def test_init(self):
        dut = HistogramSelect(score_bits=10, count_bits=8)
        assert dut.digits == 3 and dut.scan_cycles == 18 and len(dut.threshold) == 12

    @pytest.mark.parametrize(("kwargs", "exc", "message"), [
        ({"score_bits": 0}, ValueError, r"^score_bits must be between 1 and 24, not 0$"),
        ({"count_bits": 17}, ValueError, r"^count_bits must be between 1 and 16, not 17$"),
        ({"radix_bits": 2.0}, TypeError, r"^radix_bits must be an integer, not float$"),
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


# -- Compactor ---------------------------------------------------------------------------------------------
class TestCompactor:
    @pytest.mark.parametrize(("kwargs", "exc", "message"), [
        ({"threshold_bits": 4}, ValueError, r"^threshold_bits must be at least score_bits=6, not 4$"),
        ({"idx_bits": True}, TypeError, r"^idx_bits must be an integer, not bool$"),
    ])
    def test_init_wrong(self, kwargs, exc, message):
        with pytest.raises(exc, match=message):
            Compactor(**{"score_bits": 6, "threshold_bits": 8, "idx_bits": 5, "count_bits": 6, **kwargs})

    def test_sim_compaction(self):
        rng = np.random.default_rng(7)
        cases = [([3] * 6, 3, 2), ([3] * 6, 3, 0), ([0, 1, 2], 63, 0), ([9], 0, 0)]
        for _ in range(10):
            n = int(rng.integers(1, 20))
            s = rng.integers(0, 8, n).tolist()
            v = int(rng.integers(0, 9))
            cases.append((s, v, int(rng.integers(0, n))))
        dut = Compactor(score_bits=6, threshold_bits=8, idx_bits=5, count_bits=6)
        results = []

        async def tb(ctx):
            for scores, v, ties in cases:
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
                    assert ctx.get(dut.w_en) == 1
                    order[ctx.get(dut.w_addr)] = ctx.get(dut.w_data)
                    await ctx.tick()
                ctx.set(dut.sample, 0)
                results.append((order, ctx.get(dut.n_kept), ctx.get(dut.pruned_sum)))

        _run(dut, tb)
        assert len(results) == len(cases)
        for (scores, v, ties), (order, n_kept, psum) in zip(cases, results, strict=True):
            mask, idx = keep_by_threshold(scores, v, ties, len(scores))
            assert n_kept == idx.size
            assert order[:n_kept] == idx.tolist()
            assert sorted(order[n_kept:]) == np.flatnonzero(~mask).tolist()
            assert psum == int(np.asarray(scores)[~mask].sum())


# -- PackageMAC --------------------------------------------------------------------------------------------
class TestPackageMAC:
    @pytest.mark.parametrize(("kwargs", "exc", "message"), [
        ({"lanes": 0}, ValueError, r"^lanes must be between 1 and 256, not 0$"),
        ({"feature_bits": 17}, ValueError, r"^feature_bits must be between 2 and 16, not 17$"),
    ])
    def test_init_wrong(self, kwargs, exc, message):
        with pytest.raises(exc, match=message):
            PackageMAC(**{"lanes": 4, "score_bits": 8, "feature_bits": 8, "count_bits": 5, **kwargs})

    @pytest.mark.parametrize(("lanes", "score_bits", "feature_bits"), [(4, 8, 8), (3, 16, 5), (1, 3, 12)])
    def test_sim_package_beat(self, lanes, score_bits, feature_bits):
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
        dut = PackageMAC(lanes=lanes, score_bits=score_bits, feature_bits=feature_bits, count_bits=5)
        results = []

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
                ctx.set(dut.divide, 1)
                await ctx.tick()
                ctx.set(dut.divide, 0)
                busy = 0
                while ctx.get(dut.busy):
                    await ctx.tick()
                    busy += 1
                assert busy == dut.divide_cycles
                results.append([int(v) for v in ctx.get(dut.result)])

        _run(dut, tb)
        assert len(results) == len(cases)
        for (x, s, pruned), got in zip(cases, results, strict=True):
            assert got == package_token(x, s, pruned, feature_bits=feature_bits).tolist()


# -- the whole selector, Python simulator ------------------------------------------------------------------
def make_frame(p: SelectorParams, rng, *, n, mode, k=0, t=0, package=False, scores=None):
    s = rng.integers(0, 1 << p.score_bits, n) if scores is None else np.asarray(scores, dtype=np.int64)
    x = rng.integers(-(1 << (p.feature_bits - 1)), 1 << (p.feature_bits - 1), (n, p.dim))
    ref = select_frame(p, s, x, mode=mode, k=k if mode is Mode.TOPK else None,
                       threshold=t if mode is Mode.THRESHOLD else None, package=package)
    cmd = {"mode": int(mode), "n_tokens": n, "k": k, "threshold": t}
    if p.package:
        cmd["package"] = int(package)
    return {"cmd": cmd, "scores": s.tolist(), "features": x, "ref": ref}


def expected_beats(p: SelectorParams, ref) -> list[tuple[int, int, list[int]]]:
    """(index, package flag, data) per output beat."""
    out = []
    for j, idx in enumerate(ref.indices.tolist()):
        out += [(idx, 0, ref.tokens[j][b * p.lanes:(b + 1) * p.lanes].tolist()) for b in range(p.beats)]
    if ref.package is not None:
        out += [(0, 1, ref.package[b * p.lanes:(b + 1) * p.lanes].tolist()) for b in range(p.beats)]
    return out


def simulate_frames(p: SelectorParams, frames, *, stall=0.0, idle=0.0, seed=0):
    """Drive frames through the selector in the Python simulator; returns headers, beats, accept cycles."""
    dut = Selector(n_max=p.n_max, dim=p.dim, score_bits=p.score_bits, feature_bits=p.feature_bits,
                   lanes=p.lanes, package=p.package)
    bench = StreamBench(seed, idle=idle, stall=stall)
    headers, beats, accepts = [], [], []
    n_beats = sum(len(expected_beats(p, f["ref"])) for f in frames)
    features = [[int(v) for v in row[b * p.lanes:(b + 1) * p.lanes]]
                for f in frames for row in f["features"] for b in range(p.beats)]

    _run(dut,
         bench.source(dut.i_cmd, [f["cmd"] for f in frames], lambda ctx: accepts.append(bench.now)),
         bench.source(dut.i_score, [s for f in frames for s in f["scores"]]),
         bench.source(dut.i_feature, features),
         bench.sink(dut.o_frame, headers, len(frames)),
         bench.sink(dut.o_token, beats, n_beats),
         processes=[bench.clock], limit=100_000)
    return headers, beats, accepts


def check_frames(p, frames, headers, beats):
    assert len(headers) == len(frames)
    pos = 0
    for f, h in zip(frames, headers, strict=True):
        ref = f["ref"]
        assert (h.status, h.n_kept, h.package) == (int(ref.status), ref.n_kept, int(ref.package is not None))
        want = expected_beats(p, ref)
        got = [(b.index, b.package, list(b.data)) for b in beats[pos:pos + len(want)]]
        assert got == want
        assert [b.last for b in beats[pos:pos + len(want)]] == [0] * (len(want) - 1) + [1] * bool(want)
        pos += len(want)
    assert pos == len(beats)


class TestSelector:
    def test_init(self):
        sel = Selector(n_max=16, dim=8, lanes=4, package=True)
        assert sel.params == SelectorParams(n_max=16, dim=8, lanes=4, package=True)
        assert len(sel.o_token.payload.data) == 4

    @pytest.mark.parametrize(("kwargs", "exc", "message"), [
        ({"n_max": 5000}, ValueError, r"^n_max must be between 2 and 4096, not 5000$"),
        ({"dim": 10}, ValueError, r"^dim must be a multiple of lanes, not dim=10 with lanes=4$"),
        ({"package": "yes"}, TypeError, r"^package must be a bool, not str$"),
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
            make_frame(p, rng, n=9, mode=Mode.THRESHOLD, t=9, package=True),
        ]
        headers, beats, accepts = simulate_frames(p, frames)
        check_frames(p, frames, headers, beats)
        for f, period in zip(frames[:-1], np.diff(accepts), strict=True):
            ref = f["ref"]
            want = cycles(p, n_tokens=len(f["scores"]), kept=max(ref.n_kept, 1), mode=Mode(f["cmd"]["mode"]),
                          package=ref.package is not None, status=ref.status)
            assert period == want, (f["cmd"], period, want)

    def test_sim_random_stalls(self):
        p = SelectorParams(n_max=9, dim=4, lanes=2, score_bits=3, feature_bits=6, package=True)
        rng = np.random.default_rng(11)
        frames = []
        for _ in range(8):
            n = int(rng.integers(0, 11))
            mode = Mode(int(rng.integers(0, 2)))
            frames.append(make_frame(p, rng, n=n, mode=mode, k=int(rng.integers(0, max(n, 1) + 1)),
                                     t=int(rng.integers(0, 8)), package=bool(rng.integers(0, 2))))
        headers, beats, _ = simulate_frames(p, frames, stall=0.4, idle=0.3, seed=5)
        check_frames(p, frames, headers, beats)
        assert any(f["ref"].status is not Status.OK for f in frames)


class TestCycles:
    def test_formula_pieces(self):
        p = SelectorParams(n_max=197, dim=384, lanes=16, package=True)
        base = cycles(p, n_tokens=197, kept=99, mode=Mode.THRESHOLD)
        assert cycles(p, n_tokens=197, kept=100, mode=Mode.THRESHOLD) - base == p.beats
        search = cycles(p, n_tokens=197, kept=99, mode=Mode.TOPK) - base
        assert search == p.digits * 20 + (p.digits - 1) * 197
        assert cycles(p, n_tokens=197, kept=1, mode=Mode.TOPK, status=Status.K_TOO_LARGE) == 197 * 24 + 3

    @pytest.mark.parametrize(("kwargs", "exc", "message"), [
        ({"mode": 0}, TypeError, r"^mode must be a Mode, not int$"),
        ({"kept": 0}, ValueError, r"^kept must be between 1 and n_tokens=10, not 0$"),
        ({"n_tokens": 1 << 16}, ValueError, r"^n_tokens must be between 0 and 65535, not 65536$"),
        ({"kept": 2.0}, TypeError, r"^kept must be an integer, not float$"),
        ({"package": True}, ValueError, r"^package token requested from a selector built without package=True$"),
    ])
    def test_cycles_wrong(self, kwargs, exc, message):
        p = SelectorParams(n_max=16, dim=8, lanes=4)
        with pytest.raises(exc, match=message):
            cycles(p, **{"n_tokens": 10, "kept": 3, "mode": Mode.TOPK, **kwargs})


@pytest.mark.parametrize("module", ["tokensift.hw.selector.core", "tokensift.hw.selector.histogram",
                                    "tokensift.hw.selector.compactor", "tokensift.hw.selector.package"])
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
