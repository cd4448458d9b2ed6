"""Cycle model of the DMAs: bursts, memory latency and outstanding bursts -> cycles of one transfer.

A transfer of ``length`` bytes at ``addr`` on an idle DMA whose consumer (reader) or producer (writer) never
stalls, against a memory that answers a read burst ``latency`` cycles after its AR handshake (a write burst
``latency`` cycles after its last W handshake), one beat per cycle, bursts in order. Cycles count from the
command's handshake to the last word's (reader) or the done's (writer) handshake, both included. The model
walks the bursts (:func:`bursts`), so it is exact wherever the RTL and the memory follow these rules; it is
checked against Verilator with cocotbext-axi's ``AxiRam`` (:mod:`tokensift.sim.axi_memory`), whose own
latency is :data:`tokensift.sim.axi_memory.AXIRAM_LATENCY`.

>>> cfg = AxiDmaConfig(data_bytes=8, max_burst=8, max_outstanding=2)
>>> bursts(cfg, 4096 - 16, 64), read_cycles(cfg, 4096 - 16, 64, latency=2)
([2, 6], 17)
>>> read_cycles(cfg, 0, 512, latency=2), read_cycles(cfg, 0, 512, latency=40)
(72, 209)
"""

from __future__ import annotations

from tokensift.checks import check_int
from tokensift.hw.axi.burst import ACCEPT_CYCLES, BURST_CYCLES
from tokensift.hw.axi.config import BOUNDARY_BYTES, AxiDmaConfig

__all__ = ["bursts", "read_cycles", "write_cycles", "OUTPUT_CYCLES"]

#: the reader's output register / the writer's done register: one cycle after the last beat / response
OUTPUT_CYCLES = 1


def _check(cfg, addr, length, latency=None):
    if not isinstance(cfg, AxiDmaConfig):
        raise TypeError(f"cfg must be an AxiDmaConfig, not {type(cfg).__name__}")
    check_int("addr", addr, low=0, high=(1 << cfg.addr_width) - 1)
    if addr % cfg.data_bytes:
        raise ValueError(f"addr must be a multiple of data_bytes ({cfg.data_bytes}), not {addr}")
    check_int("length", length, low=1, high=min(cfg.max_length, (1 << cfg.addr_width) - addr))
    if latency is not None:
        check_int("latency", latency, low=1)


def bursts(cfg: AxiDmaConfig, addr: int, length: int) -> list[int]:
    """Beats of each burst of a command: at most ``max_burst``, never across a 4 KiB boundary."""
    _check(cfg, addr, length)
    words = -(-length // cfg.data_bytes)
    out = []
    while words:
        room = (BOUNDARY_BYTES - addr % BOUNDARY_BYTES) // cfg.data_bytes
        n = min(cfg.max_burst, room, words)
        out.append(n)
        addr += n * cfg.data_bytes
        words -= n
    return out


def _walk(cfg: AxiDmaConfig, addr: int, length: int, latency: int, *, write: bool) -> int:
    offered = ACCEPT_CYCLES  # cycle (from the command's handshake = 0) its next burst is offered
    data_end = -1  # last data beat so far
    done = []  # per burst: the cycle it completes (reader: last R beat; writer: B), freeing its slot
    for k, n in enumerate(bursts(cfg, addr, length)):
        take = offered if k < cfg.max_outstanding else max(offered, done[k - cfg.max_outstanding] + 1)
        if write:
            first = max(take + 1, data_end + 1)  # W passes i_data through once the burst is open
            data_end = first + n - 1
            done.append(max(data_end + latency, done[-1] + 1 if done else 0))
        else:
            first = max(take + 1 + latency, data_end + 1)  # AR handshake at take + 1
            data_end = first + n - 1
            done.append(data_end)
        offered = take + BURST_CYCLES
    return done[-1] + OUTPUT_CYCLES + 1


def read_cycles(cfg: AxiDmaConfig, addr: int, length: int, *, latency: int) -> int:
    """Cycles of a read command on an idle reader (see the module docstring)."""
    _check(cfg, addr, length, latency)
    return _walk(cfg, addr, length, latency, write=False)


def write_cycles(cfg: AxiDmaConfig, addr: int, length: int, *, latency: int) -> int:
    """Cycles of a write command on an idle writer, up to its done (see the module docstring)."""
    _check(cfg, addr, length, latency)
    return _walk(cfg, addr, length, latency, write=True)
