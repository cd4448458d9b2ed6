"""Amaranth-simulator harness for the accelerator's op engines: one engine on real token buffers, its DRAM
channel served from a byte array with seeded random latency and gaps, checked against the reference
sequencer's state before and after the same instruction (:func:`tokensift.quant.accel.executor.walk`).

>>> bench = EngineBench(cfg, ResidualEngine(config=cfg))                     # doctest: +SKIP
>>> result = run_op(bench, dram, before, ins, context, seed=1)              # doctest: +SKIP
>>> check_after(cfg, result, after, ins.dst)                                # doctest: +SKIP
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from tokensift.hw.accel.buffers import TokenBuffers
from tokensift.hw.accel.config import AccelConfig
from tokensift.hw.accel.ports import WRITE_LATENCY
from tokensift.quant.accel.isa import Buffer, Instruction

__all__ = ["EngineBench", "OpResult", "run_op", "check_after", "op_fields", "buffer_words", "words_to_buffer"]


class EngineBench(Elaboratable):
    """``engine`` wired to a :class:`TokenBuffers` of ``config``."""

    def __init__(self, config: AccelConfig, engine):
        self.config = config
        self.engine = engine
        self.buffers = TokenBuffers(config=config)

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = self.engine
        m.submodules.buffers = self.buffers
        wiring.connect(m, self.engine.rd, self.buffers.rd)
        wiring.connect(m, self.engine.wr, self.buffers.wr)
        if "rd2" in self.engine.signature.members:
            wiring.connect(m, self.engine.rd2, self.buffers.rd2)
        return m


def buffer_words(cfg: AccelConfig, b: Buffer, values: np.ndarray) -> dict[int, list[int]]:
    """``bank -> words`` of a buffer holding ``values`` (rows x columns, zero beyond them)."""
    g = cfg.geometry(b)
    full = np.zeros((-(-g.rows // cfg.banks) * cfg.banks, g.words * cfg.lanes), dtype=np.int64)
    v = np.asarray(values, dtype=np.int64)
    full[:v.shape[0], :v.shape[1]] = v
    mask = (1 << g.bits) - 1
    out = {bank: [] for bank in range(cfg.banks)}
    for row in range(full.shape[0]):
        for w in range(g.words):
            word = 0
            for i, value in enumerate(full[row, w * cfg.lanes:(w + 1) * cfg.lanes]):
                word |= (int(value) & mask) << (i * g.bits)
            out[row % cfg.banks].append(word)
    return out


def words_to_buffer(cfg: AccelConfig, b: Buffer, banks: dict[int, list[int]]) -> np.ndarray:
    """The inverse of :func:`buffer_words`: rows x columns of the buffer."""
    g = cfg.geometry(b)
    tiles = -(-g.rows // cfg.banks)
    out = np.zeros((tiles * cfg.banks, g.words * cfg.lanes), dtype=np.int64)
    for bank, words in banks.items():
        for addr, word in enumerate(words):
            row, w = (addr // g.words) * cfg.banks + bank, addr % g.words
            for i in range(cfg.lanes):
                value = (word >> (i * g.bits)) & ((1 << g.bits) - 1)
                if g.signed and value >> (g.bits - 1):
                    value -= 1 << g.bits
                out[row, w * cfg.lanes + i] = value
    return out[:g.rows, :g.cols]


def op_fields(ins: Instruction, *, start: int, n: int, n2: int = 0, protected: int = 1, memory_base: int = 0,
              input_base: int = 0, logits_base: int = 0) -> dict:
    """The engine's ``op`` port value for ``ins`` and its run-time context."""
    return {"opcode": int(ins.opcode), "dst": int(ins.dst), "src": int(ins.src), "src2": int(ins.src2),
            "rows": int(ins.rows), "arg": ins.arg, "addr_a": ins.addr_a, "addr_b": ins.addr_b, "k": ins.k,
            "m": ins.m, "start": start, "n": n, "n2": n2, "protected": protected, "memory_base": memory_base,
            "input_base": input_base, "logits_base": logits_base}


@dataclass
class OpResult:
    buffers: dict      #: Buffer -> rows x columns after the op
    rows: int          #: the engine's ``rows`` answer
    fault: bool
    cycles: int        #: from ``start`` to ``done``
    overflows: int
    dram_commands: list  #: (addr, length) of every DRAM read
    dram_writes: list  #: (addr, length) of every DRAM write command
    dram: bytearray    #: the DRAM after the op (its writes applied)
    offered_at_done: bool  #: a DRAM command or write word was still offered at ``done``
    done_at: list = field(default_factory=list)  #: each op's ``done``, cycles from the first ``start``
    drained: int = 0   #: cycles from the first ``start`` until an engine with ``busy`` has written everything
    #: cycles in which a buffer read asked for the word a write of the same cycle writes (an ECP5 block RAM
    #: returns an undefined word then: :class:`~tokensift.hw.accel.buffers.TokenBuffers` needs none)
    collisions: int = 0


def run_op(bench: EngineBench, dram: bytes | bytearray, before: dict, op: dict, *, seed: int = 0,
           latency: tuple[int, int] = (2, 2), gap: float = 0.0, max_cycles: int = 200_000, times: int = 1,
           write_error: bool = False, then: tuple = (), restart: int = 1) -> OpResult:
    """Preload the buffers with ``before`` (Buffer -> array), run one op (``times`` back to back), then the ops of
    ``then``, each ``start`` ``restart`` cycles after the previous ``done`` (1: the cycle after it), and return
    the buffers once the last is done and, for an engine with a ``busy`` port (ops that overlap), once ``busy``
    has fallen: its writes outlive ``done``.

    The DRAM channel answers each read command after a latency drawn from ``latency`` (cycles, inclusive range)
    and withholds each word with probability ``gap``: ``gap = 0`` and a fixed latency make the cycle count
    deterministic. A write channel (an engine with ``dram_wcmd``, an :class:`~tokensift.hw.axi.writer.AxiWriter`'s
    streams) is served as the writer serves it: the command, then its words into a copy of ``dram`` (each
    withheld with probability ``gap``), then ``o_done`` (with ``error`` = ``write_error``) ``latency`` cycles
    after the last word."""
    cfg = bench.config
    eng = bench.engine
    members = eng.signature.members
    rng = random.Random(seed)
    memory = bytearray(dram)
    width = cfg.axi.data_bytes
    result = {"offered_at_done": False, "collisions": 0}
    commands = []
    writes = []

    finished = []

    async def ticks(ctx, count=1):
        for _ in range(count):
            if finished:
                return False
            await ctx.tick()
        return not finished

    async def wait_high(ctx, signal):
        """Ticks until ``signal`` was high at an edge: False when the op finished first."""
        while True:
            high = ctx.get(signal)
            if not await ticks(ctx):
                return False
            if high:
                return True

    async def withhold(ctx, valid=None):
        """A gap's cycles before the next word (``valid`` low meanwhile); False when the op finished first."""
        while gap and rng.random() < gap:
            if valid is not None:
                ctx.set(valid, 0)
            if not await ticks(ctx):
                return False
        return True

    async def take(ctx, channel, payload):
        """Ticks with ``channel.ready`` high until a beat is taken: its ``payload`` (sampled before the edge),
        None when the op finished first."""
        ctx.set(channel.ready, 1)
        while True:
            offered, value = ctx.get(channel.valid), ctx.get(payload)
            if not await ticks(ctx):
                return None
            if offered:
                ctx.set(channel.ready, 0)
                return value

    # the servers tick one cycle at a time, so each returns as soon as the op is done (a testbench left
    # suspended in ``tick().until()`` cannot be closed cleanly)
    async def read_server(ctx):
        while (cmd := await take(ctx, eng.dram_cmd, eng.dram_cmd.payload)) is not None:
            addr, length = int(cmd.addr), int(cmd.length)
            commands.append((addr, length))
            if not await ticks(ctx, rng.randint(*latency)):
                return
            words = -(-length // width)
            for i in range(words):
                valid_bytes = min(width, length - i * width)
                chunk = bytes(memory[addr + i * width:addr + i * width + valid_bytes]) + bytes(width - valid_bytes)
                if not await withhold(ctx, eng.dram_data.valid):
                    return
                ctx.set(eng.dram_data.valid, 1)
                ctx.set(eng.dram_data.payload, {"data": int.from_bytes(chunk, "little"),
                                                "keep": (1 << valid_bytes) - 1, "last": int(i == words - 1),
                                                "error": 0})
                if not await wait_high(ctx, eng.dram_data.ready):
                    return
            ctx.set(eng.dram_data.valid, 0)

    async def collision_monitor(ctx):
        reads = [eng.rd] + ([eng.rd2] if "rd2" in members else [])
        while True:
            wr = eng.wr
            if ctx.get(wr.en) and ctx.get(wr.mask.as_value()):
                at = (ctx.get(wr.buffer), ctx.get(wr.tile), ctx.get(wr.word))
                result["collisions"] += sum(bool(ctx.get(rd.en)) and (ctx.get(rd.buffer), ctx.get(rd.tile),
                                                                     ctx.get(rd.word)) == at for rd in reads)
            if not await ticks(ctx):
                return

    async def write_server(ctx):
        while (cmd := await take(ctx, eng.dram_wcmd, eng.dram_wcmd.payload)) is not None:
            addr, length = int(cmd.addr), int(cmd.length)
            writes.append((addr, length))
            for i in range(-(-length // width)):
                if not await withhold(ctx) or (word := await take(ctx, eng.dram_wdata,
                                                                  eng.dram_wdata.payload.data)) is None:
                    return
                count = min(width, length - i * width)
                memory[addr + i * width:addr + i * width + count] = int(word).to_bytes(width, "little")[:count]
            if not await ticks(ctx, rng.randint(*latency)):
                return
            ctx.set(eng.dram_wdone.valid, 1)
            ctx.set(eng.dram_wdone.payload.error, int(write_error))
            if not await wait_high(ctx, eng.dram_wdone.ready):
                return
            ctx.set(eng.dram_wdone.valid, 0)

    async def bench_proc(ctx):
        for b, values in before.items():
            for bank, words in buffer_words(cfg, b, values).items():
                mem = bench.buffers.memories[b, bank]
                for addr, word in enumerate(words):
                    ctx.set(mem.data[addr], word)
        now, done_at = 0, []
        for i, this in enumerate([op] * times + list(then)):
            if i and restart > 1:
                await ctx.tick().repeat(restart - 1)
                now += restart - 1
            ctx.set(eng.op, this)
            ctx.set(eng.start, 1)
            await ctx.tick()
            ctx.set(eng.start, 0)
            cycles = 1
            while not ctx.get(eng.done):
                await ctx.tick()
                cycles += 1
                if cycles > max_cycles:
                    raise TimeoutError(f"the engine did not finish op {this['opcode']:#x} within {max_cycles} cycles")
            now += cycles
            done_at.append(now)
            result.update(rows=ctx.get(eng.rows), fault=bool(ctx.get(eng.fault)), cycles=cycles,
                          overflows=ctx.get(eng.overflows))
            result["offered_at_done"] |= any(ctx.get(getattr(eng, name).valid) for name in
                                             ("dram_cmd", "dram_wcmd", "dram_wdata") if name in members)
        result["done_at"] = done_at
        if "busy" in members:
            while ctx.get(eng.busy):
                await ctx.tick()
                now += 1
                if now > max_cycles * (times + len(then)):
                    raise TimeoutError(f"the engine stayed busy for {max_cycles} cycles after its last done")
            result["overflows"] = ctx.get(eng.overflows)
        result["drained"] = now
        finished.append(True)
        await ctx.tick().repeat(WRITE_LATENCY)
        result["buffers"] = {b: words_to_buffer(cfg, b, {
            bank: [ctx.get(bench.buffers.memories[b, bank].data[a]) for a in range(cfg.geometry(b).depth)]
            for bank in range(cfg.banks)}) for b in Buffer}

    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(bench_proc)
    sim.add_testbench(collision_monitor, background=True)
    if "dram_cmd" in members:
        sim.add_testbench(read_server, background=True)
    if "dram_wcmd" in members:
        sim.add_testbench(write_server, background=True)
    sim.run()
    return OpResult(dram_commands=commands, dram_writes=writes, dram=memory, **result)


def check_after(cfg: AccelConfig, result: OpResult, after, dst: Buffer, rows: int) -> None:
    """AssertionError unless ``dst``'s first ``rows`` rows equal the reference's (every column of the
    buffer: an op must not write columns it does not own)."""
    if result.collisions:
        raise AssertionError(f"{result.collisions} buffer reads asked for the word written in the same cycle")
    want = after.buffers[dst][:rows]
    got = result.buffers[dst][:rows, :want.shape[1]]
    if not np.array_equal(got, want):
        bad = np.argwhere(got != want)
        r, c = bad[0]
        raise AssertionError(f"{dst.name}: {len(bad)} elements differ, first at row {r} column {c}: "
                             f"{got[r, c]} != {want[r, c]}")
