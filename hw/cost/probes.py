"""Probe circuits that check the primitive rules of :mod:`tokensift.hw.common.resources` against synthesis.

A :class:`MemoryProbe` is one memory (one write port, one read port at its own address, synchronous or
asynchronous read) and a :class:`MultiplierProbe` one registered multiplier; synthesizing a grid of them
validates :func:`~tokensift.hw.common.resources.map_memory` and
:func:`~tokensift.hw.common.resources.multiplier_dsps` shape by shape, apart from any block.

They follow the protocol of the block cost modules (``build``, ``exact``, ``params_to_dict``,
``params_from_dict``), with the probe kind as ``BLOCK``:

>>> exact_memory({"width": 16, "depth": 197, "sync_read": True}, "xcup").bram18
1
"""

from __future__ import annotations

import random

from amaranth import hdl
from amaranth.hdl import Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from tokensift.hw.common.resources import Resources, map_memory, memory_soft_features, multiplier_dsps

__all__ = ["MemoryProbe", "MultiplierProbe", "build_memory", "build_multiplier", "exact_memory",
           "exact_multiplier", "features_memory", "resources_memory"]


class MemoryProbe(wiring.Component):
    """A ``width x depth`` memory: write port (``w_addr``, ``w_data``, ``w_en``) and a read port
    (``r_addr`` -> ``r_data``), synchronous unless ``sync_read=False``, with a read enable ``r_en`` when
    ``read_en``; or, with ``rom``, a synchronous read port over fixed pseudo-random contents."""

    def __init__(self, *, width: int, depth: int, sync_read: bool = True, read_en: bool = False, rom: bool = False):
        self._width, self._depth, self._sync, self._en, self._rom = width, depth, sync_read, read_en, rom
        abits = max(1, (depth - 1).bit_length())
        ports = {"w_addr": In(abits), "w_data": In(width), "w_en": In(1), "r_addr": In(abits),
                 "r_data": Out(width)}
        if read_en:
            ports["r_en"] = In(1)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        if self._rom:
            rng = random.Random(self._width * 7919 + self._depth)
            init = [rng.getrandbits(self._width) for _ in range(self._depth)]
            m.submodules.mem = mem = Memory(shape=unsigned(self._width), depth=self._depth, init=init)
            rd = mem.read_port()
            m.d.comb += [rd.addr.eq(self.r_addr), self.r_data.eq(rd.data)]
            return m
        m.submodules.mem = mem = Memory(shape=unsigned(self._width), depth=self._depth, init=[])
        wr = mem.write_port()
        rd = mem.read_port() if self._sync else mem.read_port(domain="comb")
        m.d.comb += [wr.addr.eq(self.w_addr), wr.data.eq(self.w_data), wr.en.eq(self.w_en),
                     rd.addr.eq(self.r_addr), self.r_data.eq(rd.data)]
        if self._en:
            m.d.comb += rd.en.eq(self.r_en)
        return m


class MultiplierProbe(wiring.Component):
    """``p <= a * b`` with ``a_bits``- and ``b_bits``-wide operands, both signed or both unsigned."""

    def __init__(self, *, a_bits: int, b_bits: int, signed: bool = True):
        self._signed = signed
        shape = hdl.signed if signed else hdl.unsigned
        super().__init__({"a": In(shape(a_bits)), "b": In(shape(b_bits)), "p": Out(shape(a_bits + b_bits))})

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.p.eq(self.a * self.b)
        return m


def _mem_kwargs(params: dict) -> dict:
    return {"sync_read": params.get("sync_read", True), "rom": params.get("rom", False)}


def build_memory(params: dict) -> MemoryProbe:
    return MemoryProbe(width=params["width"], depth=params["depth"], read_en=params.get("read_en", False),
                       **_mem_kwargs(params))


def build_multiplier(params: dict) -> MultiplierProbe:
    return MultiplierProbe(a_bits=params["a_bits"], b_bits=params["b_bits"], signed=params.get("signed", True))


def exact_memory(params: dict, family: str) -> Resources:
    """Block RAM / LUT RAM primitives and flip-flops of the memory, by :func:`map_memory`."""
    m = map_memory(params["width"], params["depth"], family=family, **_mem_kwargs(params))
    return m.blocks + Resources(ff=m.ff)


def exact_multiplier(params: dict, family: str) -> Resources:
    """DSP primitives of the multiplier, by :func:`multiplier_dsps`."""
    return Resources(dsp=multiplier_dsps(params["a_bits"], params["b_bits"], family=family,
                                         signed=params.get("signed", True)))


def features_memory(params: dict, family: str) -> dict:
    """The soft-logic structure the ``memory`` LUT fit is linear in."""
    return memory_soft_features(map_memory(params["width"], params["depth"], family=family,
                                           **_mem_kwargs(params)))


def resources_memory(params: dict, family: str) -> Resources:
    """The memory's primitives, flip-flops and soft logic (read multiplexer, decoders, emulation)."""
    m = map_memory(params["width"], params["depth"], family=family, **_mem_kwargs(params))
    return m.resources
