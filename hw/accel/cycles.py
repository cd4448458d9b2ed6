"""The whole accelerator's cycle model: one image's cycles from the reference sequencer's trace (the run-time
rows of every instruction) and each op engine's own formula, plus the sequencer's fetches.

Per image (``L``: the DRAM's latency as :class:`tokensift.sim.axi_memory.DramModel` sets it, no back-pressure):

- the header check and the end: ``3 L + 33 + H + I`` cycles (:data:`HEAD_TAIL`), with ``H`` the bus words
  of the header's 160 bytes and ``I`` those of one 16-byte instruction (``3 L + 55`` on a 64-bit bus): the
  header, the checks, the END instruction's fetch and the done;
- per instruction after the first: its fetch and dispatch, ``L + 11 + I`` (:data:`FETCH`); a skipped
  (gated) instruction costs its fetch, ``L + 9 + I`` (:data:`SKIP`);
- per executed instruction: its engine's cycles (``op_*.cycles``; a layer's ATTENTION ops overlap, so they
  follow :class:`tokensift.hw.accel.op_attention.HeadSchedule`, and the op after them waits for the last
  head's writes: :data:`FENCE`), with DRAM records answered
  ``L + 7`` cycles after the engine's command (:data:`ENGINE_LATENCY`: the command's register slice, the read
  DMA's command acceptance, the AR channel and its output register around the memory's latency, the words'
  register slice); the patch embedding's two commands overlap by ``L + 8`` (:data:`PATCH_OVERLAP`).

The sequencer constants were measured in Verilator from the sequencer's own start/done ports
(``tokensift.sim.tb_accel`` ``op_timing``) at two latencies; the engines' formulas are exact against their
own harness. The whole model equals Verilator's cycle counter on every image of the tests (exactly, at a
fixed DRAM latency without back-pressure).
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

from tokensift.hw.accel.config import AccelConfig

__all__ = ["image_cycles", "image_trace", "trace_cycles", "instruction_cycles", "HEAD_TAIL", "FETCH", "SKIP", "ENGINE_LATENCY", "PATCH_OVERLAP",
           "FENCE"]


def _words(nbytes: int, data_bytes: int) -> int:
    return max(1, nbytes // data_bytes)


def HEAD_TAIL(latency: int, data_bytes: int = 8) -> int:  # noqa: N802 - a constant of the latency and bus
    from tokensift.hw.accel.sequencer import HEADER_CHECK_BYTES
    from tokensift.quant.accel.isa import INSTRUCTION_BYTES

    return 3 * latency + 33 + _words(HEADER_CHECK_BYTES, data_bytes) + _words(INSTRUCTION_BYTES, data_bytes)


def FETCH(latency: int, data_bytes: int = 8) -> int:  # noqa: N802
    from tokensift.quant.accel.isa import INSTRUCTION_BYTES

    return latency + 11 + _words(INSTRUCTION_BYTES, data_bytes)


def SKIP(latency: int, data_bytes: int = 8) -> int:  # noqa: N802
    from tokensift.quant.accel.isa import INSTRUCTION_BYTES

    return latency + 9 + _words(INSTRUCTION_BYTES, data_bytes)


#: cycles from the attention engine's ``busy`` falling to the next op's ``start`` when the sequencer waits on
#: the fence (its dispatch state sees ``drain`` low, then raises ``start``)
FENCE = 1


def ENGINE_LATENCY(latency: int) -> int:  # noqa: N802
    return latency + 7


def PATCH_OVERLAP(latency: int) -> int:  # noqa: N802
    return latency + 8


@lru_cache(maxsize=64)
def _one_core(cfg: AccelConfig) -> AccelConfig:
    """``cfg`` with one attention core: what every engine but the attention engine sees (so a sizing's shapes
    that differ only in their attention cores share the GEMM ops' cycles)."""
    return dataclasses.replace(cfg, attention_cores=1)


@lru_cache(maxsize=65536)
def _gemm_cycles(cfg: AccelConfig, op, k: int, m: int, n: int, start: int, dram_latency: int) -> int:
    from tokensift.hw.accel import op_gemm

    return op_gemm.cycles(cfg, op, k, m, n=n, start=start, dram_latency=dram_latency)


def instruction_cycles(cfg: AccelConfig, ins, entry: dict, image, registers, latency: int) -> int:
    """One executed instruction's engine cycles (``entry``: its trace entry; ``image``: the decoded image)."""
    from tokensift.hw.accel import (
        op_attention,
        op_gelu,
        op_layernorm,
        op_logits,
        op_pos_embed,
        op_residual,
        op_select,
        op_token_mean,
    )
    from tokensift.quant.accel import records as rec
    from tokensift.quant.accel.isa import Opcode, Rows
    from tokensift.quant.accel.records import Tag

    d = ENGINE_LATENCY(latency)
    n, op = entry["n"], ins.opcode
    if op is Opcode.PATCH_EMBED:
        # its record and its input region are two commands: the read DMA takes the second while the first's
        # burst is in flight, where the engine's harness serves it only after the first's words
        return _gemm_cycles(_one_core(cfg), op, ins.k, ins.m, 0, 0, d) - PATCH_OVERLAP(latency)
    if op is Opcode.GEMM:
        start = {Rows.ALL: 0, Rows.CLASS: 0, Rows.PATCHES: 1, Rows.CANDIDATES: entry.get("protected", 1)}[ins.rows]
        return _gemm_cycles(_one_core(cfg), op, ins.k, ins.m, n, start, d)
    if op is Opcode.POS_EMBED:
        return op_pos_embed.cycles(cfg, patches=ins.k, dim=ins.m, dram_latency=d)
    if op is Opcode.LAYERNORM:
        return op_layernorm.cycles(cfg, m=ins.m, n=n, dram_latency=d)
    if op is Opcode.ATTENTION:
        return op_attention.cycles(cfg, n_tokens=n, dram_latency=d,
                                   record_address=registers.memory_base + ins.addr_a)
    if op is Opcode.RESIDUAL_ADD:
        return op_residual.cycles(cfg, n=n, m=ins.m)
    if op is Opcode.GELU:
        return op_gelu.cycles(cfg, n=n, m=ins.m, dram_latency=d)
    if op is Opcode.TOKEN_MEAN:
        return op_token_mean.cycles(cfg, k=ins.k, m=ins.m, n=n, in_place=ins.src == ins.dst)
    if op is Opcode.WRITE_LOGITS:
        return op_logits.cycles(cfg, m=ins.m, done_latency=latency)
    if op is Opcode.SELECT:
        scalars, _ = rec.decode_record(image.data, ins.addr_a, Tag.STAGE)
        method = image.method
        protected = entry.get("protected", 1)
        kept_tokens = entry["kept"]
        offset = (registers.memory_base + ins.addr_a) % cfg.axi.data_bytes
        if method == "sait" and registers.density == 1 << 15:
            return op_select.cycles(cfg, method=method, candidates=n - 1, kept=n - 1, latency=d,
                                    record_offset=offset, skipped=True)
        fused = method == "evit" and bool(scalars["option"])
        candidates = n - protected
        kept = kept_tokens - protected - (1 if fused and kept_tokens - protected <= candidates
                                          and kept_tokens != n else 0)
        kept = max(0, min(kept, candidates))
        return op_select.cycles(cfg, method=method, candidates=candidates, kept=kept, latency=d,
                                record_offset=offset, fused=fused,
                                image=method == "asvit" and bool(scalars["option"]))
    raise ValueError(f"no engine formula for {op.name}")


def image_trace(image: bytes, registers, input_data: bytes) -> list[tuple[int, dict]]:
    """The reference sequencer's run of one image (the memory image at ``MEMORY_BASE``, its input bytes at
    ``INPUT_BASE``): per instruction its ``pc`` and trace entry (run-time rows, kept tokens, skipped; plus the
    protected rows it started with). It depends on the model and the run-time registers only, not on the
    design's shape: :func:`trace_cycles` costs one trace on any shape the model is compiled for."""
    from tokensift.quant.accel.executor import walk

    end = max(registers.memory_base + len(image), registers.input_base + len(input_data), registers.logits_base + 64)
    dram = bytearray(end)
    dram[registers.memory_base:registers.memory_base + len(image)] = image
    dram[registers.input_base:registers.input_base + len(input_data)] = input_data
    return [(pc, dict(entry, protected=before.protected)) for pc, _ins, before, _after, entry in walk(dram, registers)]


def trace_cycles(cfg: AccelConfig, image: bytes, registers, trace, *, latency: int, decoded=None) -> dict:
    """``{"cycles", "ops"}``: the cost model's cycles of an :func:`image_trace` on the design ``cfg``, with
    ``image`` and ``registers`` the model compiled for ``cfg`` (their addresses place the records), and per
    executed instruction ``(pc, opcode, cycles)``. ``decoded``: ``decode_image(image)`` when the caller has it
    (a sizing costs one image under many registers)."""
    from tokensift.hw.accel.op_attention import HeadSchedule
    from tokensift.quant.accel.image import decode_image
    from tokensift.quant.accel.isa import Opcode

    mem = decoded if decoded is not None else decode_image(image)
    bus = cfg.axi.data_bytes
    now = 0            # the next op's start (the first op's: 0), then each op's done
    heads = None       # the heads in flight since the last fence
    ops = []
    executed = 0
    for pc, entry in trace:
        ins = mem.program[pc]
        if ins.opcode is Opcode.END:
            continue
        if entry.get("skipped"):
            now += SKIP(latency, bus)
            continue
        if executed:
            now += FETCH(latency, bus)
        executed += 1
        if ins.opcode is Opcode.ATTENTION:
            heads = heads or HeadSchedule(cfg)
            done = heads.run(now, n_tokens=entry["n"], dram_latency=ENGINE_LATENCY(latency),
                             record_address=registers.memory_base + ins.addr_a)
            ops.append((pc, ins.opcode.name, done - now))
            now = done
            continue
        if heads is not None:  # the fence: the heads' last writes land before this op starts
            wait = max(0, heads.drained + FENCE - now)
            if wait:
                last = ops[-1]
                ops[-1] = (last[0], last[1], last[2] + wait)
            now += wait
            heads = None
        c = instruction_cycles(cfg, ins, entry, mem, registers, latency)
        now += c
        ops.append((pc, ins.opcode.name, c))
    if heads is not None:
        now = max(now, heads.drained + FENCE)
    return {"cycles": HEAD_TAIL(latency, bus) + now, "ops": ops}


def image_cycles(cfg: AccelConfig, image: bytes, registers, input_data: bytes, *, latency: int) -> dict:
    """``{"cycles", "ops"}``: the cost model's cycles of one image (the memory image at ``MEMORY_BASE``, its
    input bytes at ``INPUT_BASE``) and per executed instruction ``(pc, opcode, cycles)``."""
    return trace_cycles(cfg, image, registers, image_trace(image, registers, input_data), latency=latency)
