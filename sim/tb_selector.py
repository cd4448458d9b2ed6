"""cocotb scoreboard of :class:`tokensift.hw.selector.core.Selector` against :func:`quant.select.select_frame`.

A driver feeds commands, scores and features (:class:`tokensift.sim.streams.StreamSource`), two monitors
collect the frame headers and the token beats, the reference predicts every frame, and the checker
compares them in order, bit for bit. A cycle monitor measures each frame's period (command accepted to
the next command accepted) for :func:`tokensift.hw.selector.core.cycles`.

Frames mix every mode the configuration has (top-k, threshold, mass), both package rules and, when built
with them, per-token package weights; the ``overflows`` counter is checked against the reference's count
of saturated package values.

Parameters (``tb_params()``): ``config`` (the :class:`SelectorParams` fields), ``seed``, and for
``cli_frame`` one frame: ``tokens``, ``keep``, ``threshold`` or ``mass``, ``package``, ``package_rule``.
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from tokensift.hw.selector.core import (
    command_layout,
    cycles,
    feature_layout,
    frame_layout,
    score_layout,
    token_layout,
)
from tokensift.quant.select import Mode, SelectorParams, Status, select_frame
from tokensift.sim.runner import tb_params, tb_report
from tokensift.sim.streams import StreamSink, StreamSource, reset, start_clock


# -- frames ------------------------------------------------------------------------------------------------
def make_frame(p: SelectorParams, rng, *, n: int, mode: Mode, k: int = 0, t: int = 0, mass: int = 0,
               package: bool = False, rule: str = "mean", scores=None, features=None, weights=None) -> dict:
    """One frame's stimulus and its reference result."""
    s = rng.integers(0, 1 << p.score_bits, n) if scores is None else np.asarray(scores, dtype=np.int64)
    lo, hi = -(1 << (p.feature_bits - 1)), 1 << (p.feature_bits - 1)
    x = rng.integers(lo, hi, (n, p.dim)) if features is None else np.asarray(features, dtype=np.int64)
    w = None
    if p.weight_bits:
        w = rng.integers(0, 1 << p.weight_bits, n) if weights is None else np.asarray(weights, dtype=np.int64)
    package = package and p.package
    ref = select_frame(p, s, x, mode=mode, k=k if mode is Mode.TOPK else None,
                       threshold=t if mode is Mode.THRESHOLD else None, mass=mass if mode is Mode.MASS else None,
                       package=package, package_rule=rule, weights=w)
    cmd = {"mode": int(mode), "n_tokens": n, "k": k, "threshold": t}
    if p.package:
        cmd.update(package=int(package), package_sum=int(rule == "sum"))
    if p.mass:
        cmd["mass"] = mass
    return {"cmd": cmd, "scores": s, "weights": w, "features": x, "ref": ref, "mode": mode, "package": package,
            "rule": rule}


def expected_beats(p: SelectorParams, ref) -> list[tuple[int, int, list[int]]]:
    """(index, package flag, data) of each output beat of a frame."""
    out = []
    for j, idx in enumerate(ref.indices.tolist()):
        out += [(idx, 0, ref.tokens[j][b * p.lanes:(b + 1) * p.lanes].tolist()) for b in range(p.beats)]
    if ref.package is not None:
        out += [(0, 1, ref.package[b * p.lanes:(b + 1) * p.lanes].tolist()) for b in range(p.beats)]
    return out


def expected_cycles(p: SelectorParams, frame: dict) -> int:
    ref = frame["ref"]
    return cycles(p, n_tokens=len(frame["scores"]), kept=max(ref.n_kept, 1), mode=frame["mode"],
                  package=ref.package is not None, package_rule=frame["rule"], status=ref.status)


def corner_frames(p: SelectorParams, rng) -> list[dict]:
    """The directed corners, back to back with alternating modes and package rules."""
    n = p.n_max
    half = max(1, n // 2)
    pk = p.package
    top = (1 << p.score_bits) - 1
    fmax, fmin = (1 << (p.feature_bits - 1)) - 1, -(1 << (p.feature_bits - 1))
    loud = np.tile([fmax, fmin], (n, p.dim // 2 + 1))[:, :p.dim]  # extreme features: sums saturate
    frames = [
        make_frame(p, rng, n=n, mode=Mode.TOPK, k=half - 1, package=pk),  # N = n_max
        make_frame(p, rng, n=n, mode=Mode.TOPK, k=0, package=pk, rule="sum"),  # k = 0
        make_frame(p, rng, n=half, mode=Mode.TOPK, k=half - 1, package=pk),  # keep every token
        make_frame(p, rng, n=n, mode=Mode.TOPK, k=half, scores=[3] * n, package=pk),  # every score equal
        make_frame(p, rng, n=n, mode=Mode.THRESHOLD, t=top, package=pk, rule="sum"),  # above all
        make_frame(p, rng, n=half, mode=Mode.THRESHOLD, t=0, scores=[0] + [1] * (half - 1)),  # below all
        make_frame(p, rng, n=1, mode=Mode.TOPK, k=0, package=pk),  # N = 1
        make_frame(p, rng, n=1, mode=Mode.THRESHOLD, t=0, package=pk),
        make_frame(p, rng, n=half, mode=Mode.TOPK, k=half),  # k > N - 1: flagged
        make_frame(p, rng, n=n + 2, mode=Mode.THRESHOLD, t=1),  # N > n_max: flagged, inputs drained
        make_frame(p, rng, n=0, mode=Mode.TOPK, k=0),  # N = 0: flagged
        make_frame(p, rng, n=n, mode=Mode.THRESHOLD, t=1 << (p.score_bits - 1), package=pk),
        make_frame(p, rng, n=n, mode=Mode.TOPK, k=1, package=pk, rule="sum", scores=[top] * n, features=loud,
                   weights=None if not p.weight_bits else [(1 << p.weight_bits) - 1] * n),  # saturating sums
        make_frame(p, rng, n=n, mode=Mode.MASS, mass=1, package=pk),  # flagged when mass is not built
        make_frame(p, rng, n=n - 1, mode=Mode.TOPK, k=n // 3, package=False),
    ]
    if p.mass:
        whole = 1 << p.mass_frac
        ties = [int(v) for v in rng.integers(0, 3, n)]
        frames += [
            make_frame(p, rng, n=n, mode=Mode.MASS, mass=whole // 2, package=pk),
            make_frame(p, rng, n=n, mode=Mode.MASS, mass=0, package=pk, rule="sum"),  # keeps no candidate
            make_frame(p, rng, n=n, mode=Mode.MASS, mass=whole, package=pk),  # the whole: keeps all
            make_frame(p, rng, n=n, mode=Mode.MASS, mass=whole - 1, scores=[top] + [0] * (n - 1)),  # all zero
            make_frame(p, rng, n=n, mode=Mode.MASS, mass=whole // 3 or 1, scores=ties, package=pk, rule="sum"),
            make_frame(p, rng, n=n, mode=Mode.MASS, mass=whole + 1),  # more than the whole: flagged
            make_frame(p, rng, n=1, mode=Mode.MASS, mass=whole // 2, package=pk),  # no candidate
        ]
    return frames


def random_frames(p: SelectorParams, rng, count: int) -> list[dict]:
    frames = []
    modes = 3 if p.mass else 2
    for _ in range(count):
        n = int(rng.integers(0, p.n_max + 3))
        mode = Mode(int(rng.integers(0, modes)))
        k = int(rng.integers(0, n + 1)) if n else 0
        frames.append(make_frame(p, rng, n=n, mode=mode, k=k, t=int(rng.integers(0, 1 << p.score_bits)),
                                 mass=int(rng.integers(0, (1 << p.mass_frac) + 2)),
                                 package=bool(rng.integers(0, 2)), rule=("mean", "sum")[int(rng.integers(0, 2))]))
    return frames


# -- driver, monitors, checker ---------------------------------------------------------------------------
class Harness:
    def __init__(self, dut, p: SelectorParams, *, idle: float = 0.0, stall: float = 0.0, seed: int = 0):
        self.dut, self.p = dut, p
        self.cmd_layout, self.feat_layout, self.score_layout = command_layout(p), feature_layout(p), score_layout(p)
        self.frame_layout, self.token_layout = frame_layout(p), token_layout(p)
        self.cmd = StreamSource(dut, "i_cmd", idle=idle, seed=seed)
        self.score = StreamSource(dut, "i_score", idle=idle, seed=seed + 1)
        self.feature = StreamSource(dut, "i_feature", idle=idle, seed=seed + 2)
        self.frames_out = StreamSink(dut, "o_frame", stall=stall, seed=seed + 3, signed=False)
        self.tokens_out = StreamSink(dut, "o_token", stall=stall, seed=seed + 4, signed=False)
        self.cycle = 0
        self.overflows_base = 0  # the counter's value before the frames being checked
        self.accepts: list[int] = []
        self.ready_cycles: list[int] = []
        cocotb.start_soon(self._watch_commands())

    async def _watch_commands(self):
        while True:
            await FallingEdge(self.dut.clk)
            await ReadOnly()
            self.cycle += 1
            if self.dut.rst.value:
                continue
            ready = bool(self.dut.i_cmd__ready.value)
            if ready:
                self.ready_cycles.append(self.cycle)
                if self.dut.i_cmd__valid.value:
                    self.accepts.append(self.cycle)

    def send(self, frames: list[dict]) -> None:
        p = self.p
        for f in frames:
            self.cmd.send([self.cmd_layout.const(f["cmd"]).as_value().value])
            if f["weights"] is None:
                self.score.send(int(v) for v in f["scores"])
            else:
                self.score.send(self.score_layout.const({"score": int(a), "weight": int(b)}).as_value().value
                                for a, b in zip(f["scores"], f["weights"], strict=True))
            self.feature.send(self.feat_layout.const([int(v) for v in row[b * p.lanes:(b + 1) * p.lanes]])
                              .as_value().value for row in f["features"] for b in range(p.beats))

    def clear(self) -> None:
        for src in (self.cmd, self.score, self.feature):
            src.clear()

    def forget_outputs(self) -> None:
        self.frames_out.received.clear()
        self.tokens_out.received.clear()

    async def check(self, frames: list[dict], *, timeout_cycles: int = 200_000) -> int:
        """Wait for every frame's outputs and compare them with the reference; returns the beats checked."""
        p = self.p
        want = [expected_beats(p, f["ref"]) for f in frames]
        headers = await self.frames_out.wait_for(len(frames), timeout_cycles=timeout_cycles)
        beats = await self.tokens_out.wait_for(sum(map(len, want)), timeout_cycles=timeout_cycles)
        pos = 0
        for i, (f, h, w) in enumerate(zip(frames, headers, want, strict=True)):
            ref = f["ref"]
            hd = self.frame_layout.from_bits(h)
            got_header = (int(hd.status), int(hd.n_kept), int(hd.package))
            want_header = (int(ref.status), ref.n_kept, int(ref.package is not None))
            assert got_header == want_header, f"frame {i} ({f['cmd']}): header {got_header} != {want_header}"
            for j, (idx, pk, values) in enumerate(w):
                b = self.token_layout.from_bits(beats[pos + j])
                got = (int(b.index), int(b.package), [int(v) for v in b.data])
                assert got == (idx, pk, values), f"frame {i} ({f['cmd']}) beat {j}: {got} != {(idx, pk, values)}"
                assert int(b.last) == int(j == len(w) - 1), f"frame {i} beat {j}: wrong last flag"
            pos += len(w)
        assert len(self.tokens_out.received) == pos, "the selector sent more beats than the reference"
        if self.p.package:
            await ClockCycles(self.dut.clk, 4)  # the counter trails the last package beat by three cycles
            got, want = int(self.dut.overflows.value), self.overflows_base + sum(f["ref"].overflows for f in frames)
            assert got == want, f"overflows counter {got} != {want}"
            self.overflows_base = got
        return pos

    def periods(self, count: int) -> list[int]:
        """Cycles from each of the first ``count`` command accepts to the next cycle the command port is ready."""
        out = []
        for c in self.accepts[:count]:
            out.append(next(r for r in self.ready_cycles if r > c) - c)
        return out


def _params() -> tuple[dict, SelectorParams, np.random.Generator]:
    prm = tb_params()
    p = SelectorParams(**prm["config"])
    return prm, p, np.random.default_rng(prm.get("seed", 0))


async def _start(dut, p, **kwargs) -> Harness:
    start_clock(dut)
    h = Harness(dut, p, **kwargs)
    await reset(dut)
    return h


# -- tests -------------------------------------------------------------------------------------------------
@cocotb.test()
async def directed_corners(dut):
    """Corner frames back to back without stalls: bit-exact, and each period equals the cycles formula."""
    prm, p, rng = _params()
    frames = corner_frames(p, rng)
    h = await _start(dut, p, seed=prm.get("seed", 0))
    h.send(frames)
    beats = await h.check(frames)
    await ClockCycles(dut.clk, 4)
    measured = h.periods(len(frames))
    expected = [expected_cycles(p, f) for f in frames]
    tb_report(corners_frames=len(frames), corners_beats=beats, corners_cycles=measured,
              corners_expected_cycles=expected,
              corners_status=[int(f["ref"].status) for f in frames])
    assert measured == expected, f"cycles {measured} != formula {expected}"
    assert int(dut.status.value) == int(frames[-1]["ref"].status)


@cocotb.test()
async def random_stalls(dut):
    """Random frames (both modes, invalid settings included) under random idles and backpressure."""
    prm, p, rng = _params()
    frames = random_frames(p, rng, prm.get("random_frames", 12))
    h = await _start(dut, p, idle=prm.get("idle", 0.3), stall=prm.get("stall", 0.4), seed=prm.get("seed", 0) + 10)
    h.send(frames)
    beats = await h.check(frames)
    tb_report(random_frames=len(frames), random_beats=beats,
              random_flagged=sum(f["ref"].status is not Status.OK for f in frames))


@cocotb.test()
async def reset_mid_frame(dut):
    """Reset during the load of one frame and during the output of another; the next frames are exact."""
    prm, p, rng = _params()
    h = await _start(dut, p, stall=0.2, seed=prm.get("seed", 0) + 20)
    n = p.n_max
    # 1: reset while features are still being loaded
    first = (make_frame(p, rng, n=n, mode=Mode.MASS, mass=(1 << p.mass_frac) // 3, package=True, rule="sum")
             if p.mass else make_frame(p, rng, n=n, mode=Mode.TOPK, k=n // 2, package=True))
    h.send([first])
    while h.feature.sent < max(1, n * p.beats // 2):
        await FallingEdge(dut.clk)
    h.clear()
    await reset(dut)
    h.forget_outputs()
    h.overflows_base = 0  # the reset cleared the counter
    after_load = [make_frame(p, rng, n=n, mode=Mode.THRESHOLD, t=1 << (p.score_bits - 1), package=True, rule="sum"),
                  make_frame(p, rng, n=max(1, n // 2), mode=Mode.TOPK, k=0)]
    if p.mass:
        after_load.append(make_frame(p, rng, n=n, mode=Mode.MASS, mass=1 << (p.mass_frac - 1), package=True))
    h.send(after_load)
    checked = await h.check(after_load)
    # 2: reset while kept tokens are being output
    h.forget_outputs()
    h.send([make_frame(p, rng, n=n, mode=Mode.TOPK, k=n - 1, package=True)])
    while not h.tokens_out.received:
        await FallingEdge(dut.clk)
    h.clear()
    await reset(dut)
    h.forget_outputs()
    h.overflows_base = 0
    after_output = [make_frame(p, rng, n=n, mode=Mode.TOPK, k=n // 3, package=True)]
    h.send(after_output)
    checked += await h.check(after_output)
    tb_report(reset_beats=checked)


@cocotb.test()
async def cli_frame(dut):
    """One random frame as the CLI asks for it; reports cycles, kept count and whether it was bit-exact."""
    prm, p, rng = _params()
    n = prm["tokens"]
    rule = prm.get("package_rule", "mean")
    if prm.get("keep") is not None:
        frame = make_frame(p, rng, n=n, mode=Mode.TOPK, k=prm["keep"], package=prm["package"], rule=rule)
    elif prm.get("threshold") is not None:
        frame = make_frame(p, rng, n=n, mode=Mode.THRESHOLD, t=prm["threshold"], package=prm["package"], rule=rule)
    else:
        frame = make_frame(p, rng, n=n, mode=Mode.MASS, mass=prm["mass"], package=prm["package"], rule=rule)
    h = await _start(dut, p, seed=prm.get("seed", 0))
    h.send([frame])
    try:
        await h.check([frame])
        error = None
    except AssertionError as exc:  # reported, so the CLI prints bit_exact: false instead of a traceback
        error = str(exc)
    await ClockCycles(dut.clk, 4)
    ref = frame["ref"]
    tb_report(cycles=h.periods(1)[0], expected_cycles=expected_cycles(p, frame), bit_exact=error is None,
              error=error,
              status=ref.status.name, kept=ref.n_kept, indices=ref.indices.tolist(), overflows=ref.overflows,
              package=ref.package.tolist() if ref.package is not None else None)
