"""The bus blocks' configuration objects, cycle model, register model and resource model; the burst planner
in the Amaranth simulator against :func:`tokensift.hw.axi.cycles.bursts`."""

from __future__ import annotations

import random
import re

import pytest
from amaranth.sim import Simulator
from amaranth_streams import StreamBench

from tokensift.hw.axi.burst import BurstPlanner
from tokensift.hw.axi.config import Access, AxiDmaConfig, ErrorCode, Register, RegisterMap, example_regmap
from tokensift.hw.axi.cycles import bursts, read_cycles, write_cycles
from tokensift.hw.axi.queue import SmallQueue
from tokensift.hw.axi.reader import AxiReader
from tokensift.hw.axi.register_model import RegisterBankModel
from tokensift.hw.axi.registers import AxiLiteRegisters
from tokensift.hw.axi.writer import AxiWriter
from tokensift.hw.common.verilog import emit_verilog


class TestAxiDmaConfig:
    def test_init(self):
        cfg = AxiDmaConfig(data_bytes=16, max_burst=64, max_outstanding=8)
        assert (cfg.data_bits, cfg.size_code, cfg.burst_bytes, cfg.max_length) == (128, 4, 1024, (1 << 24) - 1)

    @pytest.mark.parametrize("kwargs,exc,message", [
        ({"data_bytes": 12}, ValueError, r"data_bytes must be a power of two, not 12"),
        ({"data_bytes": 64}, ValueError, r"data_bytes must be between 4 and 32, not 64"),
        ({"data_bytes": 8.0}, TypeError, r"data_bytes must be an integer, not float"),
        ({"max_burst": 0}, ValueError, r"max_burst must be between 1 and 256, not 0"),
        ({"data_bytes": 32, "max_burst": 256}, ValueError,
         r"max_burst \(256\) x data_bytes \(32\) must be at most 4096 bytes, the 4 KiB a burst may span"),
        ({"max_outstanding": 17}, ValueError, r"max_outstanding must be between 1 and 16, not 17"),
        ({"addr_width": 11}, ValueError, r"addr_width must be between 12 and 64, not 11"),
        ({"addr_width": 20, "length_bits": 21}, ValueError, r"length_bits must be between 4 and 20, not 21"),
    ])
    def test_wrong(self, kwargs, exc, message):
        with pytest.raises(exc, match=rf"^{message}$"):
            AxiDmaConfig(**kwargs)

    def test_positional_refused(self):
        with pytest.raises(TypeError):
            AxiReader(AxiDmaConfig())
        with pytest.raises(TypeError, match=r"^config must be an AxiDmaConfig, not dict$"):
            AxiWriter(config={})


class TestRegisterMap:
    def test_example(self):
        rm = example_regmap()
        assert rm.error_offset == 0x44 and rm.addr_width == 8 and rm.by_name("keep").ranged
        assert RegisterMap.from_dict(rm.as_dict()) == rm

    @pytest.mark.parametrize("kwargs,exc,message", [
        ({"name": "Start", "offset": 0}, ValueError, r"register name must be a lower-case identifier, not 'Start'"),
        ({"name": "a", "offset": 2}, ValueError, r"a offset must be a multiple of 4, not 2"),
        ({"name": "a", "offset": 0, "width": 33}, ValueError, r"a width must be between 1 and 32, not 33"),
        ({"name": "a", "offset": 0, "access": "rw"}, TypeError, r"a access must be an Access, not str"),
        ({"name": "a", "offset": 0, "irq": True}, ValueError, r"a raises irq, which only a W1C register can"),
        ({"name": "a", "offset": 0, "access": Access.RO, "low": 1}, ValueError,
         r"a has a valid range, which only an RW register can have"),
        ({"name": "a", "offset": 0, "width": 8, "low": 10, "high": 5}, ValueError,
         r"a high must be between 10 and 255, not 5"),
        ({"name": "a", "offset": 0, "width": 8, "low": 10}, ValueError, r"a reset 0 must be within its range 10..255"),
        ({"name": "a", "offset": 0, "access": Access.W1S, "reset": 1}, ValueError,
         r"a has a reset value, which only an RW register can have"),
    ])
    def test_wrong_register(self, kwargs, exc, message):
        with pytest.raises(exc, match=rf"^{message}$"):
            Register(**kwargs)

    def test_wrong_map(self):
        a, b = Register(name="a", offset=0), Register(name="b", offset=0)
        with pytest.raises(ValueError, match=r"^register offset 0x0 \(b\) is used twice$"):
            RegisterMap(registers=(a, b))
        with pytest.raises(ValueError, match=re.escape("register name 'error' is used twice (error and irq are "
                                                       "the bank's own)") + "$"):
            RegisterMap(registers=(Register(name="error", offset=0),))
        with pytest.raises(ValueError, match=r"^error_offset must be a free multiple of 4, not 0x0$"):
            RegisterMap(registers=(a,), error_offset=0)
        with pytest.raises(ValueError, match=r"^addr_width must be between 4 and 18, not 3$"):
            RegisterMap(registers=(a, Register(name="b", offset=8)), addr_width=3)
        with pytest.raises(TypeError, match=r"^registers must be a tuple of Register$"):
            RegisterMap(registers=[a])
        with pytest.raises(TypeError, match=r"^regmap must be a RegisterMap, not dict$"):
            AxiLiteRegisters(regmap={})


class TestCycles:
    def test_bursts_never_cross_4k_and_cover_the_command(self):
        rng = random.Random(4)
        for _ in range(300):
            cfg = AxiDmaConfig(data_bytes=rng.choice([4, 8, 16, 32]), max_burst=rng.choice([1, 3, 16, 64, 128]))
            addr = rng.randrange(0, 1 << 20) // cfg.data_bytes * cfg.data_bytes
            length = rng.randint(1, 20_000)
            beats = bursts(cfg, addr, length)
            assert sum(beats) == -(-length // cfg.data_bytes) and max(beats) <= cfg.max_burst
            for n in beats:
                assert addr // 4096 == (addr + n * cfg.data_bytes - 1) // 4096
                addr += n * cfg.data_bytes

    def test_rate_limits(self):
        """Long transfers approach one word per cycle with enough outstanding bursts, and
        ``max_outstanding * max_burst`` words per round trip (latency, the burst, the slot's reuse and the
        AR register) when the latency is long."""
        cfg = AxiDmaConfig(data_bytes=8, max_burst=16, max_outstanding=4)
        words = (1 << 16) // 8
        assert read_cycles(cfg, 0, 1 << 16, latency=2) < 1.01 * words + 50
        slow = read_cycles(cfg, 0, 1 << 16, latency=200)
        assert slow == pytest.approx(words / (4 * 16) * (200 + 16 + 2), rel=0.01)
        assert write_cycles(cfg, 0, 1 << 16, latency=2) < 1.01 * words + 50

    @pytest.mark.parametrize("args,exc,message", [
        ((3, 8), ValueError, r"addr must be a multiple of data_bytes \(8\), not 3"),
        ((0, 0), ValueError, r"length must be between 1 and 16777215, not 0"),
        (((1 << 32) - 8, 16), ValueError, r"length must be between 1 and 8, not 16"),
    ])
    def test_wrong(self, args, exc, message):
        with pytest.raises(exc, match=rf"^{message}$"):
            read_cycles(AxiDmaConfig(), *args, latency=2)

    def test_wrong_latency(self):
        with pytest.raises(ValueError, match=r"^latency must be at least 1, not 0$"):
            write_cycles(AxiDmaConfig(), 0, 8, latency=0)


def test_register_model_rules():
    bank = RegisterBankModel(example_regmap())
    assert bank.write(0x0C, 0x0000_0200, 0b0010) == 0  # byte 1 lies past keep's 8 bits: nothing changes
    assert bank.values["keep"] == 196 and not bank.irq
    assert bank.write(0x10, 0, 0b0111) == 2  # density would become 0 (< 100): rejected, kept at 65536
    assert bank.values["density"] == 65536 and bank.error == (1, ErrorCode.RANGE, 4) and bank.irq
    assert bank.write(0x18, 5, 0xF) == 2 and bank.error[1] is ErrorCode.RANGE  # the first error is kept
    assert bank.write(0x44, 1, 0x1) == 0 and bank.error == (0, ErrorCode.NONE, 0) and not bank.irq
    assert bank.write(0x30, 1, 0xF) == 3 and bank.read(0x44) == (1 | 3 << 4 | 12 << 16, 0)
    assert bank.read(0x30) == (0, 3) and bank.read(0x00) == (0, 0)
    bank.set_bits("done", 0b10)
    assert bank.read(0x04) == (2, 0) and bank.write(0x04, 0b10, 0xF) == 0 and bank.values["done"] == 0


def test_ports_carry_the_names_cocotbext_axi_binds():
    text = emit_verilog(AxiReader(config=AxiDmaConfig()), name="r")
    for port in ("m_axi__araddr", "m_axi__arlen", "m_axi__rready", "i_cmd__payload", "o_data__valid"):
        assert re.search(rf"\b{port}\b", text)
    text = emit_verilog(AxiWriter(config=AxiDmaConfig()), name="w")
    assert all(re.search(rf"\b{p}\b", text) for p in ("m_axi__wstrb", "m_axi__bresp", "o_done__payload"))
    text = emit_verilog(AxiLiteRegisters(regmap=example_regmap()), name="l")
    assert all(re.search(rf"\b{p}\b", text) for p in ("bus__awaddr", "bus__rresp", "fabric__keep", "irq"))


@pytest.mark.parametrize("seed", [1, 2])
def test_burst_planner_matches_the_model(seed):
    """The planner in the Amaranth simulator: the bursts of random commands (some rejected) under stalls."""
    cfg = AxiDmaConfig(data_bytes=8, max_burst=16, addr_width=16, length_bits=12)
    rng = random.Random(seed)
    commands = []
    for _ in range(25):
        addr = rng.randrange(0, 1 << 16) // 8 * 8
        commands.append((addr, rng.randint(1, min(3000, (1 << 16) - addr))))
    commands += [(3, 8), (8, 0), ((1 << 16) - 8, 9)]  # misaligned, empty, past the end: rejected
    rng.shuffle(commands)
    dut = BurstPlanner(config=cfg)
    bench = StreamBench(seed, idle=0.3, stall=0.3)
    expected = [(a, n) for a, n in commands if a % 8 == 0 and n > 0 and a + n <= 1 << 16]
    expected_bursts = [b for a, n in expected for b in bursts(cfg, a, n)]
    got, rejected = [], []

    async def watch(ctx):
        async for _, _, r in ctx.tick().sample(dut.rejected):
            rejected.append(r)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench.source(dut.i_cmd, [{"addr": a, "length": n} for a, n in commands]))
    sim.add_testbench(bench.sink(dut.o_burst, got, len(expected_bursts)))
    sim.add_process(watch)
    sim.run_until(2e-4)
    assert [int(b.len) + 1 for b in got] == expected_bursts
    assert [int(b.last) for b in got] == [int(i == len(bursts(cfg, a, n)) - 1) for a, n in expected
                                          for i in range(len(bursts(cfg, a, n)))]
    assert sum(rejected) == 3


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_small_queue_follows_a_deque_every_cycle(depth):
    """Random pushes and pops (both at once too): every cycle, ``ready`` is "not full", ``valid`` is "not empty"
    and the head is the oldest entry of a deque fed the same transfers; the queue fills and drains many times."""
    from collections import deque

    from amaranth.lib import data

    dut = SmallQueue(layout=data.StructLayout({"v": 8}), depth=depth)
    rng = random.Random(depth)
    model, checked = deque(), {"cycles": 0, "full": 0, "empty": 0, "both": 0}

    async def bench(ctx):
        pushed = 0
        for cycle in range(3000):
            # phases that mostly push, then mostly pop, so the queue reaches full and empty
            push_p = 0.8 if (cycle // 40) % 2 == 0 else 0.2
            ready, valid = ctx.get(dut.i_stream.ready), ctx.get(dut.o_stream.valid)
            assert ready == (len(model) < depth) and valid == (len(model) > 0), cycle
            if valid:
                assert ctx.get(dut.o_stream.payload.v) == model[0], cycle
            push, pop = rng.random() < push_p, rng.random() < 1 - push_p
            ctx.set(dut.i_stream.valid, push)
            ctx.set(dut.i_stream.payload.v, pushed % 256)
            ctx.set(dut.o_stream.ready, pop)
            await ctx.tick()
            checked["full"] += len(model) == depth
            checked["empty"] += not model
            checked["both"] += push and ready and pop and valid
            if pop and valid:
                model.popleft()
            if push and ready:
                model.append(pushed % 256)
                pushed += 1
            checked["cycles"] += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run_until(3001e-8)
    assert checked["cycles"] == 3000
    assert min(checked["full"], checked["empty"]) > 20, checked
    assert checked["both"] > 20 or depth == 1, checked  # one entry is never both not full and not empty


@pytest.mark.parametrize("block,argv,port", [
    ("axi_lite", [], "bus__awaddr"),
    ("axi_reader", ["--data-bytes", "16", "--max-burst", "64"], "m_axi__rdata"),
    ("axi_writer", ["--max-outstanding", "1"], "m_axi__wstrb"),
])
def test_generate_writes_verilog_and_manifest(block, argv, port, tmp_path):
    import json

    from tokensift.cli import main

    assert main(["generate", block, *argv, "--out", str(tmp_path)]) == 0
    verilog = (tmp_path / f"tokensift_{block}.v").read_text()
    manifest = json.loads((tmp_path / f"tokensift_{block}.json").read_text())
    assert port in verilog and manifest["block"] == block


def test_generate_takes_a_register_map_file(tmp_path):
    import json

    from tokensift.cli import main

    regmap = RegisterMap(registers=(Register(name="go", offset=0, width=1, access=Access.W1S),
                                    Register(name="size", offset=4, width=10, low=1, high=1000, reset=1)))
    (tmp_path / "map.json").write_text(json.dumps(regmap.as_dict()))
    assert main(["generate", "axi_lite", "--regmap", str(tmp_path / "map.json"), "--out", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "tokensift_axi_lite.json").read_text())
    assert RegisterMap.from_dict(manifest["parameters"]) == regmap


def test_register_bank_latencies():
    """B rises WRITE_LATENCY cycles after the AW/W handshake, R READ_LATENCY cycles after AR (Amaranth simulator)."""
    from tokensift.hw.axi.registers import READ_LATENCY, WRITE_LATENCY

    dut = AxiLiteRegisters(regmap=example_regmap())
    seen = {}

    async def host(ctx):
        bus = dut.bus
        ctx.set(bus.bready, 0)
        ctx.set(bus.rready, 0)
        ctx.set(bus.awaddr, 0x0C)
        ctx.set(bus.wdata, 77)
        ctx.set(bus.wstrb, 0xF)
        ctx.set(bus.awvalid, 1)
        ctx.set(bus.wvalid, 1)
        await ctx.tick()  # the handshake edge
        ctx.set(bus.awvalid, 0)
        ctx.set(bus.wvalid, 0)
        for cycles in range(1, 10):
            await ctx.tick()
            if ctx.get(bus.bvalid):
                seen["write"] = cycles
                break
        ctx.set(bus.bready, 1)
        await ctx.tick()
        ctx.set(bus.bready, 0)
        ctx.set(bus.araddr, 0x0C)
        ctx.set(bus.arvalid, 1)
        await ctx.tick()
        ctx.set(bus.arvalid, 0)
        for cycles in range(1, 10):
            await ctx.tick()
            if ctx.get(bus.rvalid):
                seen["read"] = (cycles, ctx.get(bus.rdata), ctx.get(bus.rresp))
                break

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(host)
    sim.run_until(1e-6)
    assert seen == {"write": WRITE_LATENCY, "read": (READ_LATENCY, 77, 0)}
