"""The interfaces every op engine of the accelerator shares (the sequencer hands them to one engine at a time).

**Buffer read port** (:func:`read_port_signature`, the engine drives it): ``en`` with ``buffer``, ``tile``
(row ``// banks``) and ``word``; :data:`READ_LATENCY` cycles later ``data`` holds the ``banks`` rows of that
tile at that word, ``lanes`` elements each, sign- or zero-extended to :data:`ELEMENT_BITS` as the buffer's
values are. No back-pressure: an engine requests only what it has room for.

**Buffer write port** (:func:`write_port_signature`): ``en`` with ``buffer``, ``tile``, ``word``, ``data``
(``banks`` x ``lanes`` elements, each truncated to the buffer's width) and ``mask`` (one bit per element); the
memory holds it :data:`WRITE_LATENCY` cycles later.

**DRAM read channel**: the :class:`~tokensift.hw.axi.reader.AxiReader`'s own ``i_cmd`` (byte ``addr``,
``length``) and ``o_data`` (bus words) streams; addresses are absolute (``MEMORY_BASE`` + the instruction's
offset).

**The op** (:func:`op_layout`): the decoded instruction plus what the sequencer knows at run time: the
source's row range ``start .. start + n - 1``, the second source's row count ``n2``, the protected count
``P`` and the base addresses. ``start`` pulses with a valid ``op``; the engine answers ``done`` (one cycle)
with ``rows`` (the destination's new row count) and ``fault`` (a malformed op: a record of the wrong tag or
size, widths beyond a buffer, sizes beyond the envelope; the sequencer stops and flags it).

**The engines' base** (:class:`OpEngine`): the validated config and these ports (plus an engine's own), and
the pieces every engine repeats: the op latched at ``start``, the one-cycle ``done`` answer, the DRAM read
command, the saturated overflow count.
"""

from __future__ import annotations

from amaranth.hdl import Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tokensift.hw.accel.config import ELEMENT_BITS, AccelConfig
from tokensift.hw.axi.burst import command_layout
from tokensift.hw.axi.reader import word_layout

__all__ = ["READ_LATENCY", "WRITE_LATENCY", "tile_layout", "read_port_signature", "write_port_signature", "op_layout",
           "engine_signature", "check_config", "OpEngine", "BUFFER_BITS"]

#: cycles from a read request to its data (the buffers' request register, their address register, the block
#: RAM's registered read, the register behind it, then the registered buffer select)
READ_LATENCY = 5
#: cycles from a write request to the memory holding its data (the buffers' two request registers): a read
#: requested after a write sees it; one requested in the same cycle for the same word gets the old word in the
#: simulator and an undefined one from an ECP5 block RAM, so no engine issues one (the engine tests check)
WRITE_LATENCY = 2
#: width of a buffer index (:class:`tokensift.quant.accel.isa.Buffer`)
BUFFER_BITS = 4


def tile_layout(cfg: AccelConfig) -> data.ArrayLayout:
    """``banks`` rows of ``lanes`` elements."""
    return data.ArrayLayout(data.ArrayLayout(signed(ELEMENT_BITS), cfg.lanes), cfg.banks)


def read_port_signature(cfg: AccelConfig) -> wiring.Signature:
    return wiring.Signature({
        "en": Out(1),
        "buffer": Out(BUFFER_BITS),
        "tile": Out(cfg.tile_bits),
        "word": Out(cfg.word_bits),
        "data": In(tile_layout(cfg)),
    })


def write_port_signature(cfg: AccelConfig) -> wiring.Signature:
    return wiring.Signature({
        "en": Out(1),
        "buffer": Out(BUFFER_BITS),
        "tile": Out(cfg.tile_bits),
        "word": Out(cfg.word_bits),
        "data": Out(tile_layout(cfg)),
        "mask": Out(data.ArrayLayout(cfg.lanes, cfg.banks)),
    })


def op_layout(cfg: AccelConfig) -> data.StructLayout:
    addr = cfg.axi.addr_width
    return data.StructLayout({
        # the instruction (tokensift.quant.accel.isa)
        "opcode": unsigned(8), "dst": unsigned(BUFFER_BITS), "src": unsigned(BUFFER_BITS),
        "src2": unsigned(BUFFER_BITS), "rows": unsigned(2), "arg": unsigned(8),
        "addr_a": unsigned(32), "addr_b": unsigned(32), "k": unsigned(16), "m": unsigned(16),
        # the sequencer's run-time context
        "start": unsigned(cfg.row_bits), "n": unsigned(cfg.row_bits), "n2": unsigned(cfg.row_bits),
        "protected": unsigned(cfg.row_bits),
        "memory_base": unsigned(addr), "input_base": unsigned(addr), "logits_base": unsigned(addr),
    })


def engine_signature(cfg: AccelConfig, *, second_read: bool = False, dram: bool = True) -> wiring.Signature:
    """What an op engine exposes (``second_read``: a second buffer read port, ``dram``: a DRAM read channel)."""
    members = {
        "start": In(1),
        "op": In(op_layout(cfg)),
        "done": Out(1),
        "rows": Out(cfg.row_bits),
        "fault": Out(1),
        "overflows": Out(16),
        "rd": Out(read_port_signature(cfg)),
        "wr": Out(write_port_signature(cfg)),
    }
    if second_read:
        members["rd2"] = Out(read_port_signature(cfg))
    if dram:
        members["dram_cmd"] = Out(stream.Signature(command_layout(cfg.axi)))
        members["dram_data"] = In(stream.Signature(word_layout(cfg.axi)))
    return wiring.Signature(members)


def check_config(config, name: str = "config") -> AccelConfig:
    """``config`` itself, or TypeError unless it is an :class:`AccelConfig` (``name``: the argument's)."""
    if not isinstance(config, AccelConfig):
        raise TypeError(f"{name} must be an AccelConfig, not {type(config).__name__}")
    return config


class OpEngine(wiring.Component):
    """The base of the op engines: the validated ``config`` (keyword-only, read back as :attr:`config`) and the
    ports of :func:`engine_signature` (``second_read``, ``dram``) plus an engine's own ``members``."""

    def __init__(self, *, config: AccelConfig, second_read: bool = False, dram: bool = True,
                 members: dict | None = None):
        self._cfg = check_config(config)
        signature = engine_signature(config, second_read=second_read, dram=dram)
        super().__init__(wiring.Signature({**signature.members, **(members or {})}))

    @property
    def config(self) -> AccelConfig:
        return self._cfg

    def latch_op(self, m):
        """The op, registered at ``start``; ``done`` and ``fault`` pulse one cycle unless set again."""
        op = Signal.like(self.op)
        with m.If(self.start):
            m.d.sync += op.eq(self.op)
        m.d.sync += [self.done.eq(0), self.fault.eq(0)]
        return op

    def finish(self, m, *, rows=0, fault=False):
        """``done`` next cycle, with ``rows`` and ``fault``."""
        m.d.sync += [self.done.eq(1), self.fault.eq(fault), self.rows.eq(rows)]

    def request(self, m, *, addr, length):
        """Offers the DRAM read command (an FSM state's body); returns "it is taken"."""
        m.d.comb += [self.dram_cmd.valid.eq(1), self.dram_cmd.payload.addr.eq(addr),
                     self.dram_cmd.payload.length.eq(length)]
        return self.dram_cmd.ready

    def count_overflows(self, m, counter):
        """``overflows``: ``counter``'s low 16 bits, all ones once it has passed them (saturating)."""
        m.d.comb += self.overflows.eq(counter[:16] | (counter[16:] != 0).replicate(16))
