"""The token buffers as an ECP5 build has them: DP16KDs laid out as memory_libmap lays the memories out, read data
in each RAM's output register (:func:`tokensift.hw.common.ecp5.dp16kd_memory`).

The DP16KD is a black box to every simulator, so :func:`_dp16kd_model` stands in for it: a model of the primitive
that reads the instance's own pins and parameters (the left-justified address of each width, ADA0..3 as byte
enables from 18 bits up, the 36-bit mode's data on both ports' pins and ``CEA`` as its write enable, ``CEB`` the
read enable, the output register) as Yosys's ECP5 block-RAM mapping drives them. The ECP5 buffers run beside the
behavioural ones under the same random traffic and must give the same read data in every cycle."""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal
from amaranth.lib import memory
from amaranth.sim import Simulator

from tokensift.hw.accel import resources as accel_resources
from tokensift.hw.accel.buffers import SECOND_READ, TokenBuffers
from tokensift.hw.accel.ports import READ_LATENCY
from tokensift.hw.common import ecp5
from tokensift.hw.common.ecp5 import DP16KD_ADDR_PINS, DP16KD_WIDTHS, ECP5, dp16kd_ranges
from tokensift.hw.common.resources import map_memory
from tokensift.quant.accel.isa import Buffer


def _const(pins: dict, name: str, value: int) -> None:
    pin = pins[name]
    assert isinstance(pin, Const) and pin.value == value, f"{name} is {pin!r}, not {value}"


def _dp16kd_model(m: Module, name: str, **pins):
    """A DP16KD in the simulator, driven by the instance's pins and parameters; a read of the word written in
    the same cycle returns it inverted (the primitive's is undefined), so a use of one shows."""
    unit = pins["p_DATA_WIDTH_A"]
    assert pins["p_DATA_WIDTH_B"] == unit and unit in DP16KD_WIDTHS
    wide = unit == 36
    assert pins["p_REGMODE_B"] == "OUTREG" and pins["p_REGMODE_A"] == ("OUTREG" if wide else "NOREG")
    assert pins["p_CSDECODE_A"] == pins["p_CSDECODE_B"] == "0b000"
    for pin in ("i_WEB", "i_RSTA", "i_RSTB", *(f"i_CS{p}{i}" for p in "AB" for i in range(3))):
        _const(pins, pin, 0)
    _const(pins, "i_OCEB", 1)
    lsb = DP16KD_WIDTHS[unit]
    for i in range(lsb):  # below the address: the byte enables of the 18- and 36-bit widths, else tied low
        if not (unit >= 18 and i < unit // 9):
            _const(pins, f"i_ADA{i}", 0)
        _const(pins, f"i_ADB{i}", 0)
    abits = DP16KD_ADDR_PINS - lsb
    wr_addr = Cat(*(pins[f"i_ADA{i}"] for i in range(lsb, DP16KD_ADDR_PINS)))
    rd_addr = Cat(*(pins[f"i_ADB{i}"] for i in range(lsb, DP16KD_ADDR_PINS)))
    data_pins = [f"i_DIA{i}" for i in range(18)] + [f"i_DIB{i}" for i in range(18)]
    wr_data = Cat(*(pins[p] for p in data_pins[:unit]))
    if wide:
        _const(pins, "i_WEA", 1)
        write, bytes_ = pins["i_CEA"], [pins[f"i_ADA{i}"] for i in range(4)]
    else:
        _const(pins, "i_CEA", 1)
        write = pins["i_WEA"]
        bytes_ = [pins[f"i_ADA{i}"] for i in range(2)] if unit == 18 else [Const(1, 1)]
    byte = 9 if unit >= 18 else unit
    mem = memory.Memory(shape=unit, depth=1 << abits, init=[])
    m.submodules[name] = mem
    wp = mem.write_port(granularity=byte)
    rp = mem.read_port(transparent_for=())
    m.d.comb += [wp.addr.eq(wr_addr), wp.data.eq(wr_data), rp.addr.eq(rd_addr), rp.en.eq(pins["i_CEB"])]
    for i, enable in enumerate(bytes_):
        m.d.comb += wp.en[i].eq(write & enable)
    collided = Signal(name=f"{name}_collided")
    out = Signal(unit, name=f"{name}_outreg")
    with m.If(pins["i_CEB"]):
        m.d.sync += collided.eq(write & Cat(*bytes_).any() & (wr_addr == rd_addr))
    m.d.sync += out.eq(Mux(collided, ~rp.data, rp.data))
    do_a = [pins[f"o_DOA{i}"] for i in range(18)]
    do_b = [pins[f"o_DOB{i}"] for i in range(18)]
    outputs = (do_a + do_b) if wide else do_b
    for i, pin in enumerate(outputs[:unit]):
        m.d.comb += pin.eq(out[i])


class _OnEcp5(Elaboratable):
    def __init__(self, inner):
        self.inner = inner

    def elaborate(self, platform):
        return self.inner.elaborate(ECP5)


class _Pair(Elaboratable):
    """The behavioural buffers and the ECP5 ones, fed the same requests."""

    def __init__(self, cfg):
        self.plain = TokenBuffers(config=cfg)
        self.ecp5 = TokenBuffers(config=cfg)

    def elaborate(self, platform):
        m = Module()
        m.submodules.plain = self.plain
        m.submodules.ecp5 = _OnEcp5(self.ecp5)
        for name in ("rd", "rd2", "wr"):
            a, b = getattr(self.plain, name), getattr(self.ecp5, name)
            for field in a.signature.members:
                if name == "wr" or field != "data":  # a read port's data is the buffers' answer
                    m.d.comb += getattr(b, field).eq(getattr(a, field))
        return m


def _config(name: str):
    (shape,) = [shape for grid_name, shape, _ in accel_resources._GRID if grid_name == name]
    return accel_resources.grid_config(shape)


@pytest.fixture
def dp16kd_model(monkeypatch):
    monkeypatch.setattr(ecp5, "_place_dp16kd", _dp16kd_model)


def _addresses(cfg, b: Buffer, rng: random.Random) -> list[tuple[int, int]]:
    """A few (tile, word) of the buffer: both ends, each address range's first and last words, random ones."""
    g = cfg.geometry(b)
    words = {0, g.depth - 1} | {rng.randrange(g.depth) for _ in range(6)}
    ranges = dp16kd_ranges(width=g.bits * cfg.lanes, depth=g.depth, granularity=g.bits)
    if ranges is not None:
        abits, count = ranges
        for r in range(count):
            words |= {r << abits, min(g.depth - 1, ((r + 1) << abits) - 1)}
    return sorted((w // g.words, w % g.words) for w in words if w < g.depth)


def _run_pair(cfg, seed: int, cycles: int) -> int:
    pair = _Pair(cfg)
    rng = random.Random(seed)
    pool = {b: _addresses(cfg, b, rng) for b in Buffer}
    checked = []

    async def bench(ctx):
        rd, rd2, wr = pair.plain.rd, pair.plain.rd2, pair.plain.wr
        asked = {"rd": [], "rd2": []}
        for _ in range(cycles):
            wb = rng.choice(list(Buffer))
            w_at = rng.choice(pool[wb])
            w_on = rng.random() < 0.5
            ctx.set(wr.en, w_on)
            ctx.set(wr.buffer, wb)
            ctx.set(wr.tile, w_at[0])
            ctx.set(wr.word, w_at[1])
            ctx.set(wr.data.as_value(), rng.getrandbits(len(wr.data.as_value())))
            ctx.set(wr.mask.as_value(), rng.getrandbits(len(wr.mask.as_value())))
            for port, reach in ((rd, list(Buffer)), (rd2, list(SECOND_READ))):
                b = rng.choice(reach)
                at = rng.choice(pool[b])
                if w_on and b == wb and at == w_at:  # the same word in the same cycle: undefined on a DP16KD
                    at = None
                enable = at is not None and rng.random() < 0.8
                asked["rd" if port is rd else "rd2"].append(enable)
                ctx.set(port.en, enable)
                ctx.set(port.buffer, b)
                if at is not None:
                    ctx.set(port.tile, at[0])
                    ctx.set(port.word, at[1])
            await ctx.tick()
            for name in ("rd", "rd2"):
                # a port's data means something READ_LATENCY cycles after a read (a read that did not happen
                # leaves the RAM's held word, which on ECP5 may be one a write collided with)
                if len(asked[name]) < READ_LATENCY or not asked[name][-READ_LATENCY]:
                    continue
                want = ctx.get(getattr(pair.plain, name).data.as_value())
                got = ctx.get(getattr(pair.ecp5, name).data.as_value())
                assert got == want, f"{name} differs"
                checked.append(want)

    sim = Simulator(pair)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return sum(1 for v in checked if v)


@pytest.mark.parametrize("name", ["b1_c8_l2_w8", "default", "b2_c16_l4_w8"])
def test_ecp5_buffers_read_what_the_behavioural_buffers_read(dp16kd_model, name):
    # b1_c8_l2_w8 has every port width the layout covers (4, 9, 18 with five address ranges, 36); default
    # 18 and 36; b2_c16_l4_w8 the 36-bit width over three ranges
    cfg = _config(name)
    nonzero = _run_pair(cfg, seed=len(name), cycles=1500)
    assert nonzero > 500  # the reads found written words, not only the zeros of an empty memory


def test_ecp5_build_has_the_modelled_block_rams():
    from amaranth.back import verilog

    for name in ("b1_c8_l2_w8", "default", "demo"):
        cfg = _config(name)
        want = 0
        for b in Buffer:
            g = cfg.geometry(b)
            mapped = map_memory(g.bits * cfg.lanes, g.depth, family="ecp5", granularity=g.bits)
            if mapped.kind == "block":
                want += mapped.count * cfg.banks * (2 if b in SECOND_READ else 1)
        text = verilog.convert(TokenBuffers(config=cfg), name="top", platform=ECP5)
        assert want and text.count("DP16KD #(") == want
        assert text.count('.REGMODE_B("OUTREG")') == want
        plain = verilog.convert(TokenBuffers(config=cfg), name="top")
        assert "DP16KD" not in plain
