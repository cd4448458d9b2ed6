"""The burst planner both DMAs share: a command (byte address, byte length) -> INCR bursts.

A command is taken, checked (the start address must be aligned to the bus word, the length at least 1, and
the last byte inside the address space; a command that is not is dropped and ``rejected`` pulses), then cut
into bursts of at most ``max_burst`` beats that never cross a 4 KiB boundary. Each burst goes out on
``o_burst`` with its address, ``beats - 1`` (``AxLEN``), whether it ends the command and the byte lanes of its
last beat that hold the command's bytes (all of them unless the length is not a whole number of words).

Three registered steps per burst, so no carry chain feeds another in one cycle: the room to the next 4 KiB
boundary capped at ``max_burst``; that capped at the words left; the burst offered (the address and the words
left advance when it is taken). :data:`ACCEPT_CYCLES` and :data:`BURST_CYCLES` are the cycle model's constants.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tokensift.hw.axi.config import BOUNDARY_BYTES, AxiDmaConfig

__all__ = ["BurstPlanner", "command_layout", "burst_layout", "ACCEPT_CYCLES", "BURST_CYCLES"]

#: cycles from a command's handshake to its first burst's ``o_burst.valid`` (take, check, cap, plan)
ACCEPT_CYCLES = 4
#: cycles from a burst's ``o_burst`` handshake to the next burst's ``o_burst.valid`` (cap, plan, offer)
BURST_CYCLES = 3


def command_layout(cfg: AxiDmaConfig) -> data.StructLayout:
    return data.StructLayout({"addr": cfg.addr_width, "length": cfg.length_bits})


def burst_layout(cfg: AxiDmaConfig) -> data.StructLayout:
    return data.StructLayout({"addr": cfg.addr_width, "len": 8, "last": 1, "keep": cfg.data_bytes})


class BurstPlanner(wiring.Component):
    """See the module docstring."""

    def __init__(self, *, config: AxiDmaConfig):
        if not isinstance(config, AxiDmaConfig):
            raise TypeError(f"config must be an AxiDmaConfig, not {type(config).__name__}")
        self._cfg = config
        super().__init__({
            "i_cmd": In(stream.Signature(command_layout(config))),
            "o_burst": Out(stream.Signature(burst_layout(config))),
            "rejected": Out(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self._cfg
        size = c.size_code
        full_keep = (1 << c.data_bytes) - 1
        cmd = Signal(command_layout(c))
        addr = Signal(c.addr_width)
        words_left = Signal(c.word_bits)
        keep_last = Signal(c.data_bytes)
        cap = Signal(range(c.max_burst + 1))
        n = Signal(range(c.max_burst + 1))
        m.d.sync += self.rejected.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.i_cmd.ready.eq(1), self.idle.eq(1)]
                with m.If(self.i_cmd.valid):
                    m.d.sync += cmd.eq(self.i_cmd.payload)
                    m.next = "CHECK"
            with m.State("CHECK"):
                end = Signal(c.addr_width + 1)
                m.d.comb += end.eq(cmd.addr + cmd.length)
                aligned = cmd.addr[:size] == 0 if size else Const(1)
                inside = ~end[c.addr_width] | (end[:c.addr_width] == 0)  # the last byte is addressable
                ok = aligned & (cmd.length != 0) & inside
                low = cmd.length[:size]
                m.d.sync += [addr.eq(cmd.addr), words_left.eq((cmd.length + (c.data_bytes - 1)) >> size)]
                for b in range(c.data_bytes):
                    m.d.sync += keep_last[b].eq((low == 0) | (low > b))
                with m.If(ok):
                    m.next = "CAP"
                with m.Else():
                    m.d.sync += self.rejected.eq(1)
                    m.next = "IDLE"
            with m.State("CAP"):
                room = Signal(range(BOUNDARY_BYTES // c.data_bytes + 1))
                m.d.comb += room.eq((BOUNDARY_BYTES >> size) - addr[size:12])
                m.d.sync += cap.eq(Mux(room < c.max_burst, room, c.max_burst))
                m.next = "PLAN"
            with m.State("PLAN"):
                final = words_left <= cap
                m.d.sync += [n.eq(Mux(final, words_left, cap)),
                             self.o_burst.payload.addr.eq(addr),
                             self.o_burst.payload.len.eq(Mux(final, words_left, cap) - 1),
                             self.o_burst.payload.last.eq(final),
                             self.o_burst.payload.keep.eq(Mux(final, keep_last, full_keep)),
                             self.o_burst.valid.eq(1)]
                m.next = "OFFER"
            with m.State("OFFER"):
                with m.If(self.o_burst.ready):
                    m.d.sync += [self.o_burst.valid.eq(0), addr.eq(addr + (n << size)),
                                 words_left.eq(words_left - n)]
                    with m.If(self.o_burst.payload.last):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "CAP"
        return m
