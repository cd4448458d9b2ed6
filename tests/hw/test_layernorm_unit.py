# amaranth: UnusedElaboratable=no
"""LayerNorm unit: configuration, job encoding, and jobs with random stalls in the Amaranth simulator,
bit-exact with quant.layernorm.layernorm_int and cycle-exact with layernorm_cost.cycles."""

from types import SimpleNamespace

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, ResetInserter, Signal
from amaranth.sim import Simulator
from amaranth_streams import StreamBench, run_to_completion

from tokensift.hw.common.ecp5 import ECP5
from tokensift.hw.vector import products as products_module
from tokensift.hw.vector.layernorm import LayerNorm
from tokensift.hw.vector.layernorm_cost import cycles
from tokensift.hw.vector.layernorm_layout import (
    LayerNormConfig,
    decode_outputs,
    encode_header,
    encode_job,
    encode_tokens,
)
from tokensift.quant.fixed import FixedFormat, OverflowCounter, Rounding
from tokensift.quant.layernorm import LayerNormParams, layernorm_int

CLOCK = 1e-8


class TestConfig:
    def test_init(self):
        cfg = LayerNormConfig(c_max=384, lanes=16)
        assert (cfg.beats(384), cfg.beats(1), cfg.beats(17), cfg.beats_max) == (24, 1, 2, 24)
        assert cfg.row_depth >= 2 * cfg.beats_max + cfg.stats_latency

    @pytest.mark.parametrize("kwargs, exc, message", [
        ({"c_max": 0}, ValueError, r"^c_max must be"),
        ({"c_max": 8, "lanes": 3}, ValueError, r"^lanes must be a power of two, not 3$"),
        ({"c_max": 8, "norm_bits": 20, "gamma_bits": 16}, ValueError,
         r"^norm_bits \+ gamma_bits must be at most acc_bits = 32, not 20 \+ 16$"),
        ({"c_max": 8, "out": 8}, TypeError, r"^out must be a FixedFormat, not int$"),
        ({"c_max": 8, "out": FixedFormat(bits=8, rounding=Rounding.HALF_EVEN)}, ValueError,
         r"^out rounding must be half_up or floor, not half_even$"),
        ({"c_max": 4096, "in_bits": 16}, ValueError,
         r"^c_max 4096 with 16-bit inputs and 32-bit epsilon overflows the 62-bit variance; use fewer input or "
         r"epsilon bits$"),
        ({"c_max": 8, "mult_bits": 32}, ValueError, r"^mult_bits must be"),
    ])
    def test_init_wrong(self, kwargs, exc, message):
        with pytest.raises(exc, match=message):
            LayerNormConfig(**kwargs)

    def test_component_takes_config_or_keywords(self):
        cfg = LayerNormConfig(c_max=8, lanes=2)
        assert LayerNorm(config=cfg).config is cfg
        assert LayerNorm(c_max=8, lanes=2).config == cfg
        with pytest.raises(TypeError, match=r"^give either config or parameter keywords, not both$"):
            LayerNorm(config=cfg, lanes=2)
        with pytest.raises(TypeError, match=r"^config must be a LayerNormConfig, not dict$"):
            LayerNorm(config={})

    def test_check_job(self):
        cfg = LayerNormConfig(c_max=4, lanes=2, mult_bits=8)
        p = LayerNormParams.from_float(np.ones(4), np.zeros(4), in_scale=0.1, out_scale=0.05, multiplier_bits=8)
        assert cfg.check_job(p) is p
        with pytest.raises(ValueError, match=r"^LayerNorm dim 6 is above the unit's c_max 4$"):
            cfg.check_job(LayerNormParams.from_float(np.ones(6), np.zeros(6), in_scale=0.1, out_scale=0.05))
        wide = LayerNormParams.from_float(np.ones(4), np.zeros(4), in_scale=0.1, out_scale=0.05)
        with pytest.raises(ValueError, match=r"^LayerNorm multiplier \d+ does not fit the unit's 8-bit multiplier$"):
            cfg.check_job(wide)
        with pytest.raises(ValueError, match=r"^LayerNorm norm_bits 12 differs from the unit's 16$"):
            cfg.check_job(LayerNormParams.from_float(np.ones(4), np.zeros(4), in_scale=0.1, out_scale=0.05,
                                                     norm_bits=12, multiplier_bits=8))
        with pytest.raises(TypeError, match=r"^params must be LayerNormParams, not int$"):
            cfg.check_job(3)


# -- simulation harness ---------------------------------------------------------------------------------------
def _raw(port):
    """A stream port seen as plain bits, for StreamBench."""
    return SimpleNamespace(payload=port.payload.as_value(), valid=port.valid, ready=port.ready)


class _ForPlatform(Elaboratable):
    """The unit as elaborated for ``platform`` (the simulator elaborates with none)."""

    def __init__(self, dut, platform):
        self.dut, self.platform = dut, platform

    def elaborate(self, platform):
        return self.dut.elaborate(self.platform)


def simulate(cfg, k_beats, i_beats, n_out, *, idle=0.0, stall=0.0, seed=0, reset_after=None, max_cycles=5_000,
             platform=None):
    """Run the unit on raw beats; returns ``(outputs, status, stamps)``. ``reset_after=(beats, k_rest, i_rest)``
    pulses reset once ``beats`` outputs arrived, then sends ``k_rest``/``i_rest`` (``n_out`` counts outputs
    after the reset). ``platform``: the unit elaborated for it."""
    dut = LayerNorm(config=cfg)
    rst = Signal()
    top = Module()
    top.submodules.dut = ResetInserter(rst)(dut if platform is None else _ForPlatform(dut, platform))
    bench = StreamBench(seed, idle=idle, stall=stall)
    out, stamps = [], {"k": [], "o": []}
    phase = {"reset": reset_after is None, "resetting": False}

    async def sink(ctx):
        while len(out) < n_out:
            ready = bench.ready_stream(ctx, dut.o_stream)
            _, _, valid, payload = await ctx.tick().sample(dut.o_stream.valid, dut.o_stream.payload.as_value())
            if ready and valid and not phase["resetting"]:
                out.append(int(payload))
                stamps["o"].append(bench.now)

    def source(port, beats, key=None):
        return bench.source(_raw(port), beats, on_accept=(lambda ctx: stamps[key].append(bench.now)) if key else None)

    async def resetter(ctx):
        beats, _, _ = reset_after
        while len(out) < beats:
            await ctx.tick()
        phase["resetting"] = True
        ctx.set(rst, 1)
        await ctx.tick().repeat(2)
        ctx.set(rst, 0)
        out.clear()
        phase.update(reset=True, resetting=False)

    sim = Simulator(top)
    sim.add_clock(CLOCK)
    sim.add_process(bench.clock)
    if reset_after is None:
        sim.add_testbench(source(dut.k_stream, k_beats, "k"))
        sim.add_testbench(source(dut.i_stream, i_beats))
    else:
        sim.add_testbench(_interrupted(bench, dut.k_stream, k_beats, reset_after[1], phase))
        sim.add_testbench(_interrupted(bench, dut.i_stream, i_beats, reset_after[2], phase))
        sim.add_testbench(resetter)
    sim.add_testbench(sink)
    status = {}

    async def watch(ctx):
        while len(out) < n_out or not phase["reset"]:
            await ctx.tick()
        await ctx.tick().repeat(4)
        for name in ("busy", "error", "rejected", "acc_overflows", "out_overflows"):
            status[name] = int(ctx.get(getattr(dut.status, name)))
    sim.add_testbench(watch)
    run_to_completion(sim, max_cycles=max_cycles)
    assert len(out) == n_out, f"only {len(out)} of {n_out} output beats in {max_cycles} cycles"
    return out, status, stamps


def _interrupted(bench, port, beats, rest, phase):
    """Send ``beats`` until the reset (whatever was not accepted is dropped), then ``rest``."""
    async def tb(ctx):
        raw = _raw(port)
        for item in beats:
            if phase["reset"]:
                break
            ctx.set(raw.payload, item)
            ctx.set(raw.valid, 1)
            while True:
                _, _, ready = await ctx.tick().sample(raw.ready)
                if ready or phase["reset"]:
                    break
            ctx.set(raw.valid, 0)
        while not phase["reset"]:
            await ctx.tick()
        ctx.set(raw.valid, 0)
        await bench.source(raw, rest)(ctx)
    return tb


def jobs_beats(cfg, jobs):
    k = [w for p, q in jobs for w in encode_job(p, len(q), cfg)]
    i = [w for p, q in jobs for w in encode_tokens(q, cfg)]
    return k, i, sum(len(q) * cfg.beats(p.dim) for p, q in jobs)


def check_outputs(cfg, jobs, out):
    """Every job's outputs equal layernorm_int; flags and padding as the layout says; returns the reference's
    overflow counter."""
    counter = OverflowCounter()
    pos = 0
    for p, q in jobs:
        nb = cfg.beats(p.dim)
        words = out[pos:pos + len(q) * nb]
        pos += len(q) * nb
        codes, token_last, last = decode_outputs(words, p.dim, cfg)
        expected = layernorm_int(q, p, counter=counter)
        np.testing.assert_array_equal(codes[:, :p.dim], expected)
        assert not codes[:, p.dim:].any(), "lanes beyond C are not zero"
        assert token_last.tolist() == [(b % nb) == nb - 1 for b in range(len(words))]
        assert last.tolist() == [b == len(words) - 1 for b in range(len(words))]
    assert pos == len(out)
    return counter


def random_params(rng, dim, cfg=None, **kw):
    g = rng.normal(1.0, 0.4, dim)
    b = rng.normal(0.0, 0.6, dim)
    return LayerNormParams.from_float(g, b, in_scale=float(rng.uniform(0.01, 0.2)),
                                      out_scale=float(rng.uniform(0.01, 0.05)), **kw)


# -- jobs in the simulator ----------------------------------------------------------------------------------
@pytest.mark.parametrize("c_max, lanes, dims, seed", [(12, 4, (10, 1, 12, 5), 1), (9, 1, (9, 3), 2),
                                                      (16, 8, (16, 7, 8), 3)])
def test_random_jobs_with_stalls(c_max, lanes, dims, seed):
    """Back-to-back jobs of different C and constants, random idles and backpressure on every stream."""
    cfg = LayerNormConfig(c_max=c_max, lanes=lanes)
    rng = np.random.default_rng(seed)
    jobs = [(random_params(rng, d), rng.integers(-128, 128, size=(int(rng.integers(1, 5)), d))) for d in dims]
    k, i, n = jobs_beats(cfg, jobs)
    out, status, _ = simulate(cfg, k, i, n, idle=0.3, stall=0.3, seed=seed)
    counter = check_outputs(cfg, jobs, out)
    assert (status["error"], status["rejected"]) == (0, 0)
    assert status["acc_overflows"] == counter.by_site.get("layernorm.acc", 0)
    assert status["out_overflows"] == counter.by_site.get("layernorm", 0)


def test_corners():
    """All-equal rows (variance 0: epsilon alone), extreme codes, one channel off, and C = 1."""
    cfg = LayerNormConfig(c_max=8, lanes=4)
    rng = np.random.default_rng(5)
    rows = np.array([[7] * 8, [-128] * 8, [127] * 8, [-128, 127] * 4, [0] * 7 + [127], [-128] + [127] * 7,
                     [1, 0, 0, 0, 0, 0, 0, 0]])
    p8 = random_params(rng, 8)
    p1 = random_params(rng, 1)
    big_eps = LayerNormParams(dim=8, in_bits=8, eps_int=(1 << 32) - 1, gamma=p8.gamma, beta=p8.beta,
                              multiplier=p8.multiplier, shift=p8.shift)
    jobs = [(p8, rows), (p1, np.array([[-128], [127], [0]])), (big_eps, rows[:3])]
    k, i, n = jobs_beats(cfg, jobs)
    out, _, _ = simulate(cfg, k, i, n, idle=0.2, stall=0.2, seed=5)
    check_outputs(cfg, jobs, out)


def test_saturating_affine_counted():
    """gamma and beta at their extremes saturate the affine accumulator and the output; both are counted."""
    cfg = LayerNormConfig(c_max=6, lanes=2, gamma_bits=8, acc_bits=24, mult_bits=20)
    rng = np.random.default_rng(7)
    gamma = np.array([127, -128, 127, 5, -3, 127])
    beta = np.array([(1 << 23) - 1, -(1 << 23), 1000, -(1 << 23), 0, (1 << 23) - 1])
    p = LayerNormParams(dim=6, in_bits=8, eps_int=3, gamma=gamma, beta=beta, multiplier=(1 << 20) - 1, shift=24,
                        gamma_bits=8, acc_bits=24)
    q = rng.integers(-128, 128, size=(5, 6))
    k, i, n = jobs_beats(cfg, [(p, q)])
    out, status, _ = simulate(cfg, k, i, n, idle=0.2, stall=0.2, seed=7)
    counter = check_outputs(cfg, [(p, q)], out)
    assert counter.by_site["layernorm.acc"] > 0 and counter.by_site["layernorm"] > 0
    assert status["acc_overflows"] == counter.by_site["layernorm.acc"]
    assert status["out_overflows"] == counter.by_site["layernorm"]


def test_floor_rounding_and_unsigned_output():
    out_fmt = FixedFormat(bits=6, signed=False, rounding=Rounding.FLOOR)
    cfg = LayerNormConfig(c_max=5, lanes=2, out=out_fmt, recip_bits=10, norm_bits=12, gamma_bits=12, acc_bits=28)
    rng = np.random.default_rng(11)
    p = random_params(rng, 5, out=out_fmt, recip_bits=10, norm_bits=12, gamma_bits=12, acc_bits=28)
    q = rng.integers(-128, 128, size=(4, 5))
    k, i, n = jobs_beats(cfg, [(p, q)])
    out, _, _ = simulate(cfg, k, i, n, idle=0.1, stall=0.1, seed=11)
    check_outputs(cfg, [(p, q)], out)


@pytest.mark.parametrize("c_max, lanes, dims, tokens", [(16, 1, (16, 1, 5), 3), (12, 4, (12, 3), 4),
                                                        (8, 8, (8, 1), 6)])
def test_cycles_exact(c_max, lanes, dims, tokens, platform=None):
    """With nothing stalled, each job takes exactly cycles() (header to last output beat), and the next
    header is taken in the cycle the last output leaves: one beat per cycle for every C, C = 1 included."""
    cfg = LayerNormConfig(c_max=c_max, lanes=lanes)
    rng = np.random.default_rng(13)
    jobs = [(random_params(rng, d), rng.integers(-128, 128, size=(tokens, d))) for d in dims]
    k, i, n = jobs_beats(cfg, jobs)
    out, _, stamps = simulate(cfg, k, i, n, platform=platform)
    check_outputs(cfg, jobs, out)
    k_pos, o_pos = 0, 0
    for p, q in jobs:
        nb = cfg.beats(p.dim)
        start, end = stamps["k"][k_pos], stamps["o"][o_pos + len(q) * nb - 1]
        assert end - start == cycles(cfg, p.dim, len(q))
        token_ends = [stamps["o"][o_pos + (t + 1) * nb - 1] for t in range(len(q))]
        assert np.all(np.diff(token_ends) == nb), "tokens do not leave at one beat per cycle"
        k_pos += 1 + nb
        o_pos += len(q) * nb
        if k_pos < len(stamps["k"]):
            assert stamps["k"][k_pos] == end


def test_rejected_headers_dropped_and_flagged():
    """Headers out of range (C = 0, C > c_max, N = 0, eps = 0, multiplier = 0, shift = 63) are rejected and
    their beats dropped up to ``last`` on both streams; the valid job after them is exact."""
    cfg = LayerNormConfig(c_max=6, lanes=2)
    rng = np.random.default_rng(17)
    p = random_params(rng, 6)
    q = rng.integers(-128, 128, size=(2, 6))
    good = dict(dim=6, n_tokens=2, eps=5, multiplier=100, shift=10)
    bad = [dict(good, dim=0), dict(good, dim=7), dict(good, n_tokens=0), dict(good, eps=0), dict(good, multiplier=0),
           dict(good, shift=63)]
    k, i = [], []
    for fields in bad:
        k += encode_job(p, 2, cfg)
        k[-1 - cfg.beats(6)] = encode_header(cfg, **fields)  # the job's constants follow, last on the final one
        i += encode_tokens(q, cfg)
    k.append(encode_header(cfg, **dict(good, dim=9), last=True))  # a header alone: nothing to drop after it
    i.append(encode_tokens(q[:1, :1], cfg)[-1])                   # ... but the token stream's last beat
    ks, is_, n = jobs_beats(cfg, [(p, q)])
    out, status, _ = simulate(cfg, k + ks, i + is_, n, idle=0.2, stall=0.2, seed=17)
    check_outputs(cfg, [(p, q)], out)
    assert status["rejected"] == len(bad) + 1
    assert status["error"] == 0, "a valid header clears the error flag"


def test_rejected_header_sets_error():
    cfg = LayerNormConfig(c_max=4, lanes=2)
    rng = np.random.default_rng(19)
    p = random_params(rng, 4)
    q = rng.integers(-128, 128, size=(1, 4))
    k = encode_job(p, 1, cfg) + [encode_header(cfg, dim=5, n_tokens=1, eps=1, multiplier=1, shift=0, last=True)]
    i = encode_tokens(q, cfg) + encode_tokens(q, cfg)
    out, status, _ = simulate(cfg, k, i, 2)
    check_outputs(cfg, [(p, q)], out)
    assert (status["error"], status["rejected"]) == (1, 1)


def test_reset_mid_token():
    """A reset in the middle of a token drops everything in flight and clears the counters; the job sent
    after it is exact."""
    cfg = LayerNormConfig(c_max=10, lanes=4)
    rng = np.random.default_rng(23)
    sat = LayerNormParams(dim=10, in_bits=8, eps_int=1, gamma=np.full(10, 30000), beta=np.full(10, (1 << 31) - 1),
                          multiplier=1, shift=0)
    first = [(sat, rng.integers(-128, 128, size=(6, 10)))]
    after = [(random_params(rng, 7), rng.integers(-128, 128, size=(3, 7)))]
    k1, i1, _ = jobs_beats(cfg, first)
    k2, i2, n2 = jobs_beats(cfg, after)
    out, status, _ = simulate(cfg, k1, i1[:-2], n2, idle=0.1, stall=0.1, seed=23, reset_after=(4, k2, i2))
    counter = check_outputs(cfg, after, out)
    assert status["acc_overflows"] == counter.by_site.get("layernorm.acc", 0)
    assert status["out_overflows"] == counter.by_site.get("layernorm", 0)
    assert status["rejected"] == 0


def test_cost_functions_check_their_arguments():
    from tokensift.hw.vector.layernorm_cost import cycles_per_token, latency
    from tokensift.hw.vector.layernorm_resources import exact, features

    cfg = LayerNormConfig(c_max=384, lanes=16)
    assert (cycles_per_token(cfg, 384), cycles_per_token(cfg, 1), cycles_per_token(cfg, 17)) == (24, 1, 2)
    assert cycles(cfg, 384, 197) - cycles(cfg, 384, 196) == 24  # one token more: its beats, nothing else
    assert latency(cfg, 1) < latency(cfg, 384)
    with pytest.raises(ValueError, match=r"^dim must be between 1 and 384, not 385$"):
        cycles(cfg, 385, 1)
    with pytest.raises(ValueError, match=r"^n_tokens must be between 1 and 65535, not 0$"):
        cycles(cfg, 384, 0)
    with pytest.raises(TypeError, match=r"^config must be a LayerNormConfig, not dict$"):
        cycles({}, 384, 1)
    with pytest.raises(TypeError, match=r"^config must be a LayerNormConfig, not int$"):
        exact(3, "xcup")
    assert set(features(cfg, "ecp5")) == {"lane_bits", "shift_bits", "stats_bits", "const_bits"}


def _mult18_model(m, name, a, b):
    """``mult18x18d_registered`` in the simulator: operand registers, a product register."""
    ra = Signal(a.shape(), name=f"{name}_ra")
    rb = Signal(b.shape(), name=f"{name}_rb")
    p = Signal((a * b).shape(), name=f"{name}_p")
    m.d.sync += [ra.eq(a), rb.eq(b), p.eq(ra * rb)]
    return p


@pytest.fixture
def ecp5_dsps(monkeypatch):
    """Elaborate for ECP5 with the MULT18X18D instances replaced by :func:`_mult18_model`."""
    monkeypatch.setattr(products_module, "mult18x18d_registered", _mult18_model)
    return ECP5


def test_ecp5_dsps_bit_exact_back_to_back(ecp5_dsps):
    """The ECP5 build (every product piece on a MULT18X18D's own registers): the same outputs, and jobs of
    different constants back to back (the steady chains settle before a job's first token needs them)."""
    cfg = LayerNormConfig(c_max=16, lanes=8)
    rng = np.random.default_rng(3)
    jobs = [(random_params(rng, d), rng.integers(-128, 128, size=(int(rng.integers(1, 5)), d))) for d in (16, 7, 8)]
    k, i, n = jobs_beats(cfg, jobs)
    out, status, _ = simulate(cfg, k, i, n, idle=0.3, stall=0.3, seed=3, platform=ecp5_dsps)
    counter = check_outputs(cfg, jobs, out)
    assert status["out_overflows"] == counter.by_site.get("layernorm", 0)


def test_ecp5_dsps_cycles_exact(ecp5_dsps):
    test_cycles_exact(12, 4, (12, 3), 4, platform=ecp5_dsps)
