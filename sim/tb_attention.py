"""cocotb testbench of :class:`tokensift.hw.attention.core.Attention` (through :class:`AttentionHarness`).

Scoreboard: every frame's expected output rows and class-attention row come from
:func:`tokensift.quant.attention.attention_head` with the frame's own layer constants (the ones its
constants beat carried); beats are matched per core copy (``payload.head``; frames go round-robin to the
copies) and in order, including the ``last`` flags. 0 LSB difference.

``tb_params()`` carries ``params`` (:meth:`AttentionParams.to_dict`: the generated structure and the first
layer's constants), ``ranges`` (:meth:`ConstantRanges.to_dict`), optionally ``layers`` (more
``AttentionParams`` dicts: frames take the layers' constants in turn, back to back; by default
``random_layers`` random layers of :func:`tokensift.sim.attention_harness.random_layer` follow ``params``)
and the test settings.

Tests:

- ``bulk``: whole frames through the harness memories, Python out of the cycle loop; each run in
  ``runs`` is a list of token counts sent back to back. Checks bit-exactness and that the measured
  cycles equal :func:`tokensift.hw.attention.cycles.cycles`; measures
  simulated cycles per second of wall time.
- ``stalls_and_invalid_headers``: random valid/ready stalls on all four streams, back-to-back frames
  of different ``N`` (1 and ``n_max`` included) and layers with rejected headers (``N = 0``,
  ``N > n_max`` followed by its beats) in between; checks ``status.error`` / ``status.rejected``.
- ``rejected_constants``: frames whose constants are out of the generated ranges (each field: zero or
  too wide a multiplier, too large a shift) between valid frames of different layers: each is dropped
  with its beats and flagged (``error``, ``const_error``, ``rejected``); the valid ones stay exact.
- ``reset_mid_frame``: a frame is cut off by a reset while loading and while computing; the next
  frames are exact.
- ``extreme_values``: all ``+max`` / ``-min`` inputs and huge score ranges, with consumers that stall
  nine cycles in ten (the output FIFOs fill, the core waits).
"""

from __future__ import annotations

import random
import time

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, with_timeout

from tokensift.hw.attention.constants import ConstantRanges, encode_constants
from tokensift.hw.attention.cycles import cycles as expected_cycles
from tokensift.hw.attention.layout import decode_rows, encode_frame, status_layout
from tokensift.quant.attention import AttentionParams, attention_head
from tokensift.quant.fixed import OverflowCounter
from tokensift.sim.attention_harness import random_layer
from tokensift.sim.runner import tb_params, tb_report
from tokensift.sim.streams import StreamSink, StreamSource, reset, start_clock


def _setup():
    t = tb_params()
    return AttentionParams.from_dict(t["params"]), t


def _layers(p: AttentionParams, t: dict) -> list[AttentionParams]:
    """The layers whose constants frames take in turn: ``params`` first."""
    if "layers" in t:
        return [p] + [AttentionParams.from_dict(d) for d in t["layers"]]
    ranges = ConstantRanges.from_dict(t["ranges"]) if "ranges" in t else None
    rng = np.random.default_rng(t.get("seed", 0) + 99)
    return [p] + [random_layer(rng, p, ranges) for _ in range(t.get("random_layers", 2))]


class Layers:
    """Hands out the layers round-robin (across runs, so consecutive frames differ)."""

    def __init__(self, layers):
        self.layers, self.at = layers, 0

    def next(self) -> AttentionParams:
        layer = self.layers[self.at % len(self.layers)]
        self.at += 1
        return layer


def make_frame(rng, n: int, p: AttentionParams, kind: str = "random"):
    """Q, K, V of ``n`` tokens: ``random`` (a random magnitude per frame), or directed corners."""
    lo, hi = p.data_format.min_int, p.data_format.max_int
    shape = (n, p.head_dim)
    if kind == "random":
        mag = int(rng.choice([2, 8, hi // 4, hi]))
        return [rng.integers(max(lo, -mag), mag + 1, size=shape) for _ in range(3)]
    if kind == "max":
        return [np.full(shape, hi) for _ in range(3)]
    if kind == "min":
        return [np.full(shape, lo) for _ in range(3)]
    if kind == "mixed":  # largest scores of both signs and an alternating V
        q = np.full(shape, lo)
        k = np.where(rng.integers(0, 2, size=shape) == 1, lo, hi)
        v = np.where(np.indices(shape).sum(axis=0) % 2 == 0, hi, lo)
        return [q, k, v]
    if kind == "range":  # one token far above the rest: a huge spread of scores in every row
        q = rng.integers(lo, hi + 1, size=shape)
        k = rng.integers(-2, 3, size=shape)
        k[n // 2] = np.sign(q[0]) * hi
        v = rng.integers(lo, hi + 1, size=shape)
        return [q, k, v]
    raise ValueError(f"unknown frame kind {kind!r}")


class Scoreboard:
    """Expected beats per core copy, in order; compares what came out. ``first_core`` is the copy the
    front end hands the next valid frame to."""

    def __init__(self, p: AttentionParams, *, first_core: int = 0):
        self.p = p
        self.frames = []          # (o rows, class row, core copy)
        self.counter = OverflowCounter()
        self.next_core = first_core

    def add(self, q, k, v, layer: AttentionParams | None = None):
        out, cls = attention_head(q, k, v, self.p if layer is None else layer, counter=self.counter)
        self.frames.append((out, cls, self.next_core))
        self.next_core = (self.next_core + 1) % self.p.heads_parallel

    @property
    def o_beats(self) -> int:
        return sum(len(o) * self.p.chunks for o, _, _ in self.frames)

    @property
    def s_beats(self) -> int:
        return sum(len(c) for _, c, _ in self.frames)

    def check(self, o_words, s_words) -> dict:
        """Mismatch counts of output values, class probabilities and flags."""
        p = self.p
        row_bits = p.lanes * p.data_bits
        prob_bits = p.softmax.prob_frac + 1
        o_by_core = {h: [] for h in range(p.heads_parallel)}
        s_by_core = {h: [] for h in range(p.heads_parallel)}
        for w in o_words:
            o_by_core[w >> (row_bits + 1)].append(w)
        for w in s_words:
            s_by_core[w >> (prob_bits + 1)].append(w)
        o_bad = s_bad = flag_bad = 0
        for h in range(p.heads_parallel):
            exp_o = [(o, c) for o, c, core in self.frames if core == h]
            words_o, words_s = o_by_core[h], s_by_core[h]
            if len(words_o) != sum(len(o) * p.chunks for o, _ in exp_o) or len(words_s) != sum(
                    len(c) for _, c in exp_o):
                return {"o_mismatches": -1, "s_mismatches": -1, "flag_mismatches": -1,
                        "o_beats": len(o_words), "s_beats": len(s_words)}
            at_o = at_s = 0
            for out, cls in exp_o:
                nb = len(out) * p.chunks
                chunk = words_o[at_o: at_o + nb]
                at_o += nb
                got = decode_rows([w & ((1 << row_bits) - 1) for w in chunk], p)
                o_bad += int(np.count_nonzero(got != out))
                flags = [(w >> row_bits) & 1 for w in chunk]
                flag_bad += int(flags != [0] * (nb - 1) + [1])
                sc = words_s[at_s: at_s + len(cls)]
                at_s += len(cls)
                probs = np.array([w & ((1 << prob_bits) - 1) for w in sc])
                s_bad += int(np.count_nonzero(probs != cls))
                sflags = [(w >> prob_bits) & 1 for w in sc]
                flag_bad += int(sflags != [0] * (len(cls) - 1) + [1])
        return {"o_mismatches": o_bad, "s_mismatches": s_bad, "flag_mismatches": flag_bad,
                "o_beats": len(o_words), "s_beats": len(s_words)}


def _idle_inputs(dut):
    dut.clk_sel.value = 0
    dut.bulk.value = 0
    dut.start.value = 0
    dut.k_beats.value = 0
    dut.in_beats.value = 0
    dut.o_expected.value = 0
    dut.s_expected.value = 0
    dut.k_stream__valid.value = 0
    dut.i_stream__valid.value = 0
    dut.o_stream__ready.value = 0
    dut.s_stream__ready.value = 0


async def bulk_run(dut, p: AttentionParams, frames, consts, *, timeout_cycles: int) -> dict:
    """Load ``frames`` (lists of beats) into ``in_mem`` and their constants beats into ``k_mem``, run them
    on the harness's own clock, read the outputs back."""
    sb_words = [w for f in frames for w in f]
    t_load = time.perf_counter()
    for i, w in enumerate(sb_words):
        dut.in_mem[i].value = w
    for i, w in enumerate(consts):
        dut.k_mem[i].value = w
    t_start, cpu_start = time.perf_counter(), time.process_time()
    await FallingEdge(dut.gen_clk)
    dut.bulk.value = 1
    dut.in_beats.value = len(sb_words)
    dut.k_beats.value = len(consts)
    dut.start.value = 1
    await FallingEdge(dut.gen_clk)
    dut.start.value = 0
    await with_timeout(RisingEdge(dut.done), timeout_cycles * 10, "ns")
    t_done, cpu_done = time.perf_counter(), time.process_time()
    o_count, s_count = int(dut.o_count.value), int(dut.s_count.value)
    o_words = [int(dut.o_mem[i].value) for i in range(o_count)]
    s_words = [int(dut.s_mem[i].value) for i in range(s_count)]
    t_read = time.perf_counter()
    elapsed = int(dut.elapsed.value)
    return {"cycles": int(dut.cycles.value), "elapsed": elapsed, "o_words": o_words, "s_words": s_words,
            "run_s": t_done - t_start, "run_cpu_s": cpu_done - cpu_start, "total_s": t_read - t_load}


@cocotb.test()
async def bulk(dut):
    p, t = _setup()
    rng = np.random.default_rng(t["seed"])
    _idle_inputs(dut)
    dut.clk_sel.value = 1  # the Verilog clock generator: no VPI traffic per cycle
    dut.rst.value = 1
    await ClockCycles(dut.gen_clk, 2)
    await FallingEdge(dut.gen_clk)
    dut.rst.value = 0
    results = []
    core = 0
    overflows_ref = 0  # the hardware's count only clears on reset: compare running totals
    layers = Layers(_layers(p, t))
    for run in t["runs"]:
        ns, kind = run["ns"], run.get("kind", "random")
        sb = Scoreboard(p, first_core=core)
        frames, consts = [], []
        for n in ns:
            q, k, v = make_frame(rng, n, p, kind)
            layer = layers.next()
            sb.add(q, k, v, layer)
            frames.append(encode_frame(q, k, v, p))
            consts.append(encode_constants(layer))
        dut.o_expected.value = sb.o_beats
        dut.s_expected.value = sb.s_beats
        budget = 4 * sum(expected_cycles(p, n_tokens=n) for n in ns) + 1000
        r = await bulk_run(dut, p, frames, consts, timeout_cycles=budget)
        check = sb.check(r["o_words"], r["s_words"])
        core = sb.next_core
        overflows_ref += sb.counter.total
        expected = expected_cycles(p, n_tokens=ns)
        results.append({"ns": ns, "kind": kind, **check, "cycles": r["cycles"], "expected_cycles": expected,
                        "elapsed": r["elapsed"], "run_s": r["run_s"], "total_s": r["total_s"],
                        "sim_cycles_per_s": r["elapsed"] / r["run_s"] if r["run_s"] > 0 else None,
                        "sim_cycles_per_cpu_s": r["elapsed"] / r["run_cpu_s"] if r["run_cpu_s"] > 0 else None,
                        "overflows_hw": int(dut.status.value.to_unsigned() >> 18) & 0xFFFF,
                        "overflows_ref": overflows_ref})
        tb_report(bulk=results)
        if not t.get("assert_checks", True):  # the CLI reports mismatches instead of failing
            continue
        assert check["o_mismatches"] == 0 and check["s_mismatches"] == 0 and check["flag_mismatches"] == 0, \
            f"frames {ns} ({kind}): {check}"
        assert r["cycles"] == expected, f"frames {ns}: {r['cycles']} cycles, formula says {expected}"
        assert results[-1]["overflows_hw"] == min(overflows_ref, 0xFFFF), results[-1]


def _status(dut) -> dict:
    v = dut.status.value.to_unsigned()
    return {name: (v >> field.offset) & ((1 << field.width) - 1) for name, field in status_layout()}


_IDLE_STATUS = {"busy": 0, "error": 0, "rejected": 0, "overflows": 0, "const_error": 0}


async def _collect(dut, sb: Scoreboard, o_sink, s_sink, *, timeout_cycles: int):
    await o_sink.wait_for(sb.o_beats, timeout_cycles=timeout_cycles)
    await s_sink.wait_for(sb.s_beats, timeout_cycles=timeout_cycles)
    await ClockCycles(dut.clk, 30)  # nothing more may come out
    return sb.check(o_sink.received, s_sink.received)


class Sender:
    """Frames and their constants beats on ``i_stream`` and ``k_stream``, each with random idle cycles."""

    def __init__(self, dut, t, seed):
        self.src = StreamSource(dut, "i_stream", idle=t.get("idle", 0.3), seed=seed)
        self.k_src = StreamSource(dut, "k_stream", idle=t.get("idle", 0.3), seed=seed + 3)

    def send(self, beats, layer: AttentionParams | None = None, **override):
        self.k_src.send([encode_constants(layer, **override)])
        self.src.send(beats)

    def clear(self):
        self.src.clear()
        self.k_src.clear()

    @property
    def idle_now(self) -> bool:
        return self.src.idle_now and self.k_src.idle_now


def _streams(dut, t, seed, *, stall=None):
    stall = t.get("stall", 0.3) if stall is None else stall
    o_sink = StreamSink(dut, "o_stream", stall=stall, seed=seed + 1, signed=False)
    s_sink = StreamSink(dut, "s_stream", stall=stall, seed=seed + 2, signed=False)
    return Sender(dut, t, seed), o_sink, s_sink


@cocotb.test()
async def stalls_and_invalid_headers(dut):
    p, t = _setup()
    rng = np.random.default_rng(t["seed"] + 1)
    _idle_inputs(dut)
    start_clock(dut)
    src, o_sink, s_sink = _streams(dut, t, t["seed"])
    await reset(dut)
    sb = Scoreboard(p)
    layers = Layers(_layers(p, t))
    ns = [1, p.n_max] + [int(x) for x in rng.integers(1, p.n_max + 1, size=t.get("frames", 4))]
    rejected = 0
    budget = 0
    for i, n in enumerate(ns):
        if i == 2:  # an empty frame: only its header
            src.send([0], p)
            rejected += 1
        if i == 3:  # too many tokens: the header and every beat it announces are dropped
            junk = rng.integers(-(1 << (p.data_bits - 1)), 1 << (p.data_bits - 1), size=(p.n_max + 1, p.head_dim))
            src.send(encode_frame(junk, junk, junk, p), p)
            rejected += 1
        q, k, v = make_frame(rng, n, p)
        layer = layers.next()
        sb.add(q, k, v, layer)
        src.send(encode_frame(q, k, v, p), layer)
        budget += 10 * expected_cycles(p, n_tokens=n) + 100 * p.n_max * p.chunks
    check = await _collect(dut, sb, o_sink, s_sink, timeout_cycles=budget)
    st = _status(dut)
    tb_report(stalls={"ns": ns, **check, "status": st, "rejected_expected": rejected,
                      "overflows_ref": sb.counter.total})
    assert check == {**check, "o_mismatches": 0, "s_mismatches": 0, "flag_mismatches": 0}, check
    assert st["rejected"] == rejected and st["error"] == 0 and st["busy"] == 0 and st["const_error"] == 0, st
    assert st["overflows"] == min(sb.counter.total, 0xFFFF), st

    # a rejected header raises ``error`` and leaves the core idle; the next valid header clears it
    src.send([p.n_max + 1 if p.n_max + 1 < 1 << 16 else 0] + [0] * (3 * (p.n_max + 1) * p.chunks), p)
    for _ in range(20 * (p.n_max + 1) * p.chunks + 100):
        await RisingEdge(dut.clk)
        if src.idle_now:
            break
    await ClockCycles(dut.clk, 4)
    st = _status(dut)
    assert st["error"] == 1 and st["rejected"] == rejected + 1 and st["busy"] == 0 and st["const_error"] == 0, st
    sb2 = Scoreboard(p, first_core=sb.next_core)
    q, k, v = make_frame(rng, 2 if p.n_max >= 2 else 1, p)
    layer = layers.next()
    sb2.add(q, k, v, layer)
    o_sink.received.clear()
    s_sink.received.clear()
    src.send(encode_frame(q, k, v, p), layer)
    check = await _collect(dut, sb2, o_sink, s_sink, timeout_cycles=100 * expected_cycles(p, n_tokens=len(q)))
    assert check["o_mismatches"] == 0 and check["s_mismatches"] == 0 and _status(dut)["error"] == 0, check


@cocotb.test()
async def reset_mid_frame(dut):
    p, t = _setup()
    rng = np.random.default_rng(t["seed"] + 2)
    pyrng = random.Random(t["seed"])
    _idle_inputs(dut)
    start_clock(dut)
    src, o_sink, s_sink = _streams(dut, t, t["seed"] + 10)
    await reset(dut)
    outcomes = []
    load = 1 + 3 * p.n_max * p.chunks
    layers = Layers(_layers(p, t))
    for cut in (pyrng.randrange(2, load), load + pyrng.randrange(1, expected_cycles(p, n_tokens=p.n_max) - load)):
        q, k, v = make_frame(rng, p.n_max, p)
        src.send(encode_frame(q, k, v, p), layers.next())
        await ClockCycles(dut.clk, cut)
        src.clear()                  # the sender abandons the frame ...
        await ClockCycles(dut.clk, 2)
        await reset(dut)             # ... and resets the core
        o_sink.received.clear()
        s_sink.received.clear()
        assert _status(dut) == _IDLE_STATUS
        sb = Scoreboard(p)
        for n in (p.n_max, max(1, p.n_max // 2)):
            q, k, v = make_frame(rng, n, p)
            layer = layers.next()
            sb.add(q, k, v, layer)
            src.send(encode_frame(q, k, v, p), layer)
        check = await _collect(dut, sb, o_sink, s_sink, timeout_cycles=40 * expected_cycles(p, n_tokens=p.n_max))
        outcomes.append({"cut": cut, **check})
        o_sink.received.clear()
        s_sink.received.clear()
    tb_report(reset=outcomes)
    for o in outcomes:
        assert o["o_mismatches"] == 0 and o["s_mismatches"] == 0 and o["flag_mismatches"] == 0, o


@cocotb.test()
async def extreme_values(dut):
    p, t = _setup()
    rng = np.random.default_rng(t["seed"] + 3)
    _idle_inputs(dut)
    start_clock(dut)
    # consumers that take a beat one cycle in ten: the output FIFOs fill and the core must wait
    src, o_sink, s_sink = _streams(dut, t, t["seed"] + 20, stall=0.9)
    await reset(dut)
    sb = Scoreboard(p)
    layers = Layers(_layers(p, t))
    budget = 0
    for kind in ("max", "min", "mixed", "range"):
        for n in (p.n_max, 1):
            q, k, v = make_frame(rng, n, p, kind)
            layer = layers.next()
            sb.add(q, k, v, layer)
            src.send(encode_frame(q, k, v, p), layer)
            budget += 10 * expected_cycles(p, n_tokens=n) + 40 * n * (p.chunks + 1)
    check = await _collect(dut, sb, o_sink, s_sink, timeout_cycles=budget)
    tb_report(extremes={**check, "overflows_hw": _status(dut)["overflows"], "overflows_ref": sb.counter.total})
    assert check["o_mismatches"] == 0 and check["s_mismatches"] == 0 and check["flag_mismatches"] == 0, check
    assert _status(dut)["overflows"] == min(sb.counter.total, 0xFFFF)


def bad_constants(p: AttentionParams, ranges: ConstantRanges) -> list[dict]:
    """One out-of-range setting per constant field: a zero or too wide multiplier, too large a shift (only
    those a field of the constants beat can carry)."""
    out = [{"scale_multiplier": 0}, {"out_multiplier": 0},
           {"scale_multiplier": 1 << ranges.scale_mult_bits}, {"out_multiplier": (1 << 32) - 1},
           {"out_multiplier": 1 << ranges.out_mult_bits}, {"scale_shift": 255}, {"out_shift": ranges.out_shift_max + 1}]
    if ranges.scale_shift_max < 255:
        out.append({"scale_shift": ranges.scale_shift_max + 1})
    return out


@cocotb.test()
async def rejected_constants(dut):
    p, t = _setup()
    ranges = ConstantRanges.from_dict(t["ranges"])
    rng = np.random.default_rng(t["seed"] + 4)
    _idle_inputs(dut)
    start_clock(dut)
    src, o_sink, s_sink = _streams(dut, t, t["seed"] + 30)
    await reset(dut)
    sb = Scoreboard(p)
    layers = Layers(_layers(p, t))
    budget, flags = 0, []
    for bad in bad_constants(p, ranges):
        n = int(rng.integers(1, p.n_max + 1))
        junk = make_frame(rng, n, p)
        src.send(encode_frame(*junk, p), p, **bad)           # dropped with all its beats
        q, k, v = make_frame(rng, n, p)
        layer = layers.next()
        sb.add(q, k, v, layer)
        src.send(encode_frame(q, k, v, p), layer)
        budget += 20 * expected_cycles(p, n_tokens=n) + 100 * n * (p.chunks + 1)
    check = await _collect(dut, sb, o_sink, s_sink, timeout_cycles=budget)
    st = _status(dut)
    # the last frame was valid: error and const_error are clear again
    flags.append(st)
    # a rejected frame alone leaves error and const_error set
    n = 1
    src.send(encode_frame(*make_frame(rng, n, p), p), p, out_shift=ranges.out_shift_max + 1)
    for _ in range(40 * (p.chunks + 1) + 100):
        await RisingEdge(dut.clk)
        if src.idle_now:
            break
    await ClockCycles(dut.clk, 4)
    flags.append(_status(dut))
    rejected = len(bad_constants(p, ranges))
    tb_report(rejected_constants={**check, "status": flags, "rejected_expected": rejected + 1})
    assert check == {**check, "o_mismatches": 0, "s_mismatches": 0, "flag_mismatches": 0}, check
    assert (flags[0]["rejected"], flags[0]["error"], flags[0]["const_error"]) == (rejected, 0, 0), flags
    assert (flags[1]["rejected"], flags[1]["error"], flags[1]["const_error"], flags[1]["busy"]) == \
        (rejected + 1, 1, 1, 0), flags
