"""cocotb testbench of the AXI4 DMAs (:class:`~tokensift.hw.axi.reader.AxiReader`,
:class:`~tokensift.hw.axi.writer.AxiWriter`) against cocotbext-axi's ``AxiRam`` (:mod:`tokensift.sim.axi_memory`).

Byte for byte: every read command's words (bytes, keep lanes, zeros past the length, ``last``) against the
memory; every write command's bytes in memory and the bytes around them untouched. The tests:
``random_traffic`` (seeded random aligned addresses and lengths, 4 KiB crossings, commands back to back,
random pauses on every AXI channel and random stalls on the streams), ``timed`` (no back-pressure, one
command at a time: measured cycles from the command's handshake to its last word / its done, both included,
reported for :mod:`tokensift.hw.axi.cycles` to meet), ``errors`` (a rejected command, SLVERR) and
``reset_mid_transfer`` (the DMA and the memory reset while bursts are in flight; the next transfer is exact).
"""

from __future__ import annotations

import random

import cocotb
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from tokensift.hw.axi.burst import command_layout
from tokensift.hw.axi.config import AxiDmaConfig
from tokensift.hw.axi.reader import word_layout
from tokensift.hw.axi.writer import data_layout, done_layout
from tokensift.sim.axi_memory import DramModel
from tokensift.sim.runner import tb_params, tb_report
from tokensift.sim.streams import StreamSource, reset, start_clock
from tokensift.sim.vector_harness import TransferLog, decode, encode, unsigned_sink

#: bytes of memory the random traffic uses
SPAN = 1 << 16


def _config(tp: dict) -> AxiDmaConfig:
    return AxiDmaConfig(**tp["config"])


def _words(cfg: AxiDmaConfig, length: int) -> int:
    return -(-length // cfg.data_bytes)


def random_commands(cfg: AxiDmaConfig, rng: random.Random, count: int, max_length: int) -> list[tuple[int, int]]:
    """Aligned addresses and lengths of 1.. ``max_length`` bytes; one in three starts just below a 4 KiB line."""
    out = []
    for _ in range(count):
        length = rng.randint(1, max_length)
        if rng.random() < 1 / 3:
            addr = rng.randrange(1, SPAN // 4096) * 4096 - cfg.data_bytes * rng.randint(1, 2 * cfg.max_burst)
        else:
            addr = rng.randrange(0, SPAN - length) // cfg.data_bytes * cfg.data_bytes
        addr = max(0, min(addr, SPAN - length) // cfg.data_bytes * cfg.data_bytes)
        out.append((addr, length))
    return out


def _patience(words: int) -> int:
    """Cycles to wait for ``words`` words before calling it a hang (generous for every pause setting)."""
    return 20_000 + 100 * words


class Harness:
    """The DUT with its clock, its DRAM, its command source and (reader) word sink or (writer) data source."""

    def __init__(self, dut, tp: dict, *, latency: int, pause: float, stall: float, seed: int):
        self.dut = dut
        self.cfg = _config(tp)
        self.reader = tp["kind"] == "reader"
        self.dram = DramModel(dut, latency=latency, read=self.reader, write=not self.reader)
        self.dram.pause(pause, seed)
        self.cmd = StreamSource(dut, "i_cmd", idle=stall, seed=seed + 11)
        if self.reader:
            self.sink = unsigned_sink(dut, "o_data", stall=stall, seed=seed + 12)
        else:
            self.data = StreamSource(dut, "i_data", idle=stall, seed=seed + 13)
            self.sink = unsigned_sink(dut, "o_done", stall=stall, seed=seed + 14)
        dut.clear_errors.value = 0

    def send(self, commands, payloads=None) -> None:
        layout = command_layout(self.cfg)
        self.cmd.send(encode(layout, {"addr": a, "length": n}) for a, n in commands)
        if not self.reader:
            dl = data_layout(self.cfg)
            for (_, n), blob in zip(commands, payloads, strict=True):
                padded = blob + bytes(_words(self.cfg, n) * self.cfg.data_bytes - n)
                self.data.send(encode(dl, {"data": int.from_bytes(padded[i:i + self.cfg.data_bytes], "little")})
                               for i in range(0, len(padded), self.cfg.data_bytes))

    async def finish(self, commands) -> int:
        """Wait for every command's words (reader) or done (writer); the count of mismatching commands."""
        cfg = self.cfg
        if self.reader:
            total = sum(_words(cfg, n) for _, n in commands)
            got = [decode(word_layout(cfg), v) for v in await self.sink.wait_for(total, timeout_cycles=_patience(total))]
            bad, i = 0, 0
            for addr, n in commands:
                words = got[i:i + _words(cfg, n)]
                i += len(words)
                expected = self.dram.read(addr, n) + bytes(len(words) * cfg.data_bytes - n)
                data = b"".join(int(w.data).to_bytes(cfg.data_bytes, "little") for w in words)
                keep_ok = all(int(w.keep) == (1 << cfg.data_bytes) - 1 for w in words[:-1])
                tail = n - (len(words) - 1) * cfg.data_bytes
                keep_ok &= int(words[-1].keep) == (1 << tail) - 1
                last_ok = [int(w.last) for w in words] == [0] * (len(words) - 1) + [1]
                bad += int(data != expected or not keep_ok or not last_ok or any(int(w.error) for w in words))
            return bad
        words = sum(_words(cfg, n) for _, n in commands)
        dones = [decode(done_layout(), v) for v in await self.sink.wait_for(len(commands), timeout_cycles=_patience(words))]
        return sum(int(d.error) for d in dones)


@cocotb.test()
async def random_traffic(dut):
    tp = tb_params()
    seed = tp["seed"]
    rng = random.Random(seed)
    start_clock(dut)
    h = Harness(dut, tp, latency=tp["latency"], pause=tp["pause"], stall=tp["stall"], seed=seed)
    await reset(dut)
    cfg = h.cfg
    background = bytes(rng.randrange(256) for _ in range(SPAN))
    h.dram.write(0, background)
    commands = random_commands(cfg, rng, tp["commands"], tp["max_length"])
    payloads = None
    if not h.reader:
        # writes to disjoint places, so the final memory is known whatever their order
        placed, payloads, used = [], [], []
        for addr, n in commands:
            if any(addr < hi and lo < addr + n for lo, hi in used):
                continue
            used.append((addr, addr + n))
            placed.append((addr, n))
            payloads.append(bytes(rng.randrange(256) for _ in range(n)))
        commands = placed
    h.send(commands, payloads)
    bad = await h.finish(commands)
    if not h.reader:
        expected = bytearray(background)
        for (addr, n), blob in zip(commands, payloads, strict=True):
            expected[addr:addr + n] = blob
        got = h.dram.read(0, SPAN)
        bad += sum(1 for (addr, n) in commands if got[addr:addr + n] != expected[addr:addr + n])
        bad += int(got != bytes(expected))  # nothing written outside the commands' bytes
    await ClockCycles(dut.clk, 5)
    errors = int(dut.error_resp.value) + int(dut.error_cmd.value)
    tb_report(commands=len(commands), bytes=sum(n for _, n in commands), bad_commands=bad, errors=errors,
              busy_after=int(dut.busy.value))
    assert bad == 0, f"{bad} of {len(commands)} commands differ from the memory"
    assert errors == 0 and int(dut.busy.value) == 0


@cocotb.test()
async def timed(dut):
    """One command at a time without back-pressure: cycles from its handshake to its last word / done."""
    tp = tb_params()
    start_clock(dut)
    h = Harness(dut, tp, latency=tp["latency"], pause=0.0, stall=0.0, seed=tp["seed"])
    await reset(dut)
    rng = random.Random(tp["seed"])
    h.dram.write(0, bytes(rng.randrange(256) for _ in range(SPAN)))
    log = TransferLog(dut, ["i_cmd", "o_data" if h.reader else "o_done"])
    out = "o_data" if h.reader else "o_done"
    measured, bad = [], 0
    for addr, n in tp["timed"]:
        before = (len(log.cycles["i_cmd"]), len(log.cycles[out]))
        payloads = [bytes(rng.randrange(256) for _ in range(n))] if not h.reader else None
        h.sink.received.clear()
        h.send([(addr, n)], payloads)
        bad += await h.finish([(addr, n)])
        if not h.reader:
            bad += int(h.dram.read(addr, n) != payloads[0])
        while int(dut.busy.value):
            await RisingEdge(dut.clk)
        await ClockCycles(dut.clk, 3)
        first = log.cycles["i_cmd"][before[0]]
        last = log.cycles[out][-1]
        assert len(log.cycles[out]) - before[1] == (_words(h.cfg, n) if h.reader else 1)
        measured.append(last - first + 1)
    tb_report(measured=measured, bad_commands=bad)
    assert bad == 0


@cocotb.test()
async def errors(dut):
    """A misaligned and an empty command are dropped and flagged; SLVERR is flagged on the word / the done."""
    tp = tb_params()
    start_clock(dut)
    h = Harness(dut, tp, latency=tp["latency"], pause=0.0, stall=0.0, seed=tp["seed"])
    await reset(dut)
    cfg = h.cfg
    top = 1 << cfg.addr_width
    for addr, n in ((3, 16), (cfg.data_bytes, 0), (top - cfg.data_bytes, cfg.data_bytes + 1)):
        h.send([(addr, n)], [bytes(n)])
        await ClockCycles(dut.clk, 12)
        assert int(dut.error_cmd.value) == 1, f"command ({addr}, {n}) was not flagged"
        assert int(dut.busy.value) == 0 and int(dut.error_resp.value) == 0
        assert not h.sink.received, "a rejected command moved data"
        if not h.reader:
            h.data.clear()
        await FallingEdge(dut.clk)
        dut.clear_errors.value = 1
        await FallingEdge(dut.clk)
        dut.clear_errors.value = 0
    await ReadOnly()
    assert int(dut.error_cmd.value) == 0
    # a faulty range in the middle of a transfer: every word / the done still comes, flagged
    await FallingEdge(dut.clk)
    h.dram.bad.append((0x1000 + 2 * cfg.data_bytes, 0x1000 + 3 * cfg.data_bytes))
    n = 6 * cfg.data_bytes
    h.send([(0x1000, n)], [bytes(range(n))])
    if h.reader:
        words = [decode(word_layout(cfg), v) for v in await h.sink.wait_for(6)]
        flags = [int(w.error) for w in words]
        assert flags == [0, 0, 1, 0, 0, 0], flags
    else:
        done = decode(done_layout(), (await h.sink.wait_for(1))[0])
        assert int(done.error) == 1
    await ClockCycles(dut.clk, 3)
    assert int(dut.error_resp.value) == 1 and int(dut.error_cmd.value) == 0
    tb_report(errors_flagged=True)


@cocotb.test()
async def reset_mid_transfer(dut):
    """Reset with bursts in flight (the memory model is reset with the DUT); the next transfers are exact."""
    tp = tb_params()
    seed = tp["seed"] + 7
    rng = random.Random(seed)
    start_clock(dut)
    h = Harness(dut, tp, latency=tp["latency"], pause=0.2, stall=0.2, seed=seed)
    await reset(dut)
    cfg = h.cfg
    h.dram.write(0, bytes(rng.randrange(256) for _ in range(SPAN)))
    long = [(0, 40 * cfg.data_bytes * cfg.max_burst // 4 + 5)]
    h.send(long, [bytes(long[0][1])])
    for _ in range(200):
        await RisingEdge(dut.clk)
        if (h.reader and len(h.sink.received) >= 3) or (not h.reader and h.data.sent >= 3):
            break
    assert int(dut.busy.value) == 1
    h.cmd.clear()
    if not h.reader:
        h.data.clear()
    await reset(dut)
    await ReadOnly()
    assert int(dut.busy.value) == 0
    # the master side of the bus is idle: no address or data left asserted
    requests = ("arvalid",) if h.reader else ("awvalid", "wvalid")
    assert all(int(getattr(dut, f"m_axi__{name}").value) == 0 for name in requests)
    await FallingEdge(dut.clk)
    h.sink.received.clear()
    commands = random_commands(cfg, rng, 6, 6 * cfg.data_bytes * cfg.max_burst)
    commands = [c for i, c in enumerate(commands) if all(c[0] >= d[0] + d[1] or d[0] >= c[0] + c[1]
                                                         for d in commands[:i])]
    payloads = [bytes(rng.randrange(256) for _ in range(n)) for _, n in commands]
    h.send(commands, payloads)
    bad = await h.finish(commands)
    if not h.reader:
        bad += sum(h.dram.read(a, n) != p for (a, n), p in zip(commands, payloads, strict=True))
    tb_report(after_reset_bad=bad)
    assert bad == 0
