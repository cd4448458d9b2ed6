"""Compile an :class:`~tokensift.quant.integer_model.IntegerViT` into a memory image, default registers and a
manifest.

The program walks the network as :meth:`IntegerViT.block_step` does, one instruction per kernel call:

* ``PATCH_EMBED`` (input region -> ``X`` rows 1..), ``POS_EMBED`` (position embedding, class token);
* per block: [pre-attention selection stage] -> ``LAYERNORM X->H`` -> ``GEMM H->QKV`` -> one ``ATTENTION``
  per head (``QKV -> A``, class rows -> ``CLS``) -> ``GEMM A->T`` (proj) -> ``RESIDUAL_ADD X+T->X`` ->
  [EViT's selection stage] -> ``LAYERNORM X->H`` -> ``GEMM H->F`` (fc1) -> ``GELU F->F`` -> ``GEMM F->T`` (fc2)
  -> ``RESIDUAL_ADD X+T->X``;
* ``LAYERNORM X->H`` on the class token, ``GEMM H->LOGITS`` (head), ``WRITE_LOGITS``, ``END``.

Every GEMM-type op (``PATCH_EMBED``, ``GEMM``: the backbone's, the head's and DynamicViT's predictor layers)
points ``addr_a`` at its layer's weight stream in the weights region (:mod:`tokensift.quant.accel.stream`: the
GEMM engine's beats for the image's :class:`~tokensift.quant.accel.stream.GemmShape`, ``stream_length(m, k)``
bytes) and ``addr_b`` at its ``LIN`` record (the same bias, multipliers and shifts, and the layer's widths).

A selection stage is one ``SELECT`` (gated: skipped with ``METHOD = dense``). DynamicViT's prediction module
runs before it as generic gated ops on the candidate rows (``LAYERNORM``, ``GEMM``, ``GELU``, ``TOKEN_MEAN``
for its global half, ``GEMM``s down to one signed 16-bit score per candidate in ``S``); EViT, SaiT and AS-ViT
score from the class rows (and the heads' outputs) the attention left in ``CLS`` and ``A``; SPViT's per-head
predictors and head-weight branch are nested records its ``SELECT`` runs with the quant stage's semantics.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import NamedTuple

import numpy as np

from tokensift.quant.accel import records as rec
from tokensift.quant.accel.image import (
    HEADER_BYTES,
    REGIONS,
    Envelope,
    Region,
    align,
    finish_checksum,
    header_bytes,
)
from tokensift.quant.accel.isa import INSTRUCTION_BYTES, Buffer, Instruction, Opcode, Rows, buffer_shapes
from tokensift.quant.accel.records import Tag
from tokensift.quant.accel.registers import MAX_STAGES, METHODS, Registers
from tokensift.quant.accel.stream import DEFAULT_COLS, DEFAULT_STREAM_BYTES, GemmShape, encode_stream
from tokensift.quant.qparams import MULTIPLIER_BITS

__all__ = ["Compiled", "compile_model", "reference_model", "method_of", "STAGE_METHODS", "manifest", "default_registers", "SPVIT_HEAD_REFS", "SPVIT_SHARED_REFS"]

#: the nested records of one SPViT head predictor, in the order of a stage record's ``refs``
SPVIT_HEAD_REFS = ("norm", "fc.w", "fc", "gelu", "fc1.w", "fc1", "gelu1", "fc2.w", "fc2", "gelu2", "out.w", "out")
#: then, once per stage: the head-weight branch and the keep-probability sigmoid
SPVIT_SHARED_REFS = ("se1.w", "se1", "se_gelu", "se2.w", "se2", "se_sigmoid", "keep_sigmoid")


class Compiled(NamedTuple):
    """What :func:`compile_model` returns."""

    image: bytes
    registers: Registers
    manifest: dict


class _Handle(NamedTuple):
    region: str   # "weights" or "constants"
    index: int


class _Builder:
    """Collects weights, records and instructions; lays them out once every size is known."""

    def __init__(self, gemm: GemmShape):
        self.gemm = gemm
        self.weights: list[bytes] = []
        self.records: list[tuple[int, dict, dict]] = []
        self.program: list[dict] = []
        self._seen: dict[tuple[str, int], _Handle] = {}
        self._keep: list[object] = []  # the objects behind _seen's ids stay alive while they key it

    def weight(self, w: np.ndarray) -> _Handle:
        """A plain channel-major ``[m][k]`` int8 matrix (SPViT's nested predictor layers)."""
        if ("matrix", id(w)) not in self._seen:
            self._seen["matrix", id(w)] = _Handle("weights", len(self.weights))
            self._keep.append(w)
            self.weights.append(np.asarray(w).astype(np.int8).tobytes())
        return self._seen["matrix", id(w)]

    def record(self, tag: int, scalars: dict, arrays: dict, key: object = None) -> _Handle:
        if key is not None and ("record", id(key)) in self._seen:
            return self._seen["record", id(key)]
        handle = _Handle("constants", len(self.records))
        self.records.append((tag, scalars, arrays))
        if key is not None:
            self._seen["record", id(key)] = handle
            self._keep.append(key)
        return handle

    def stream(self, layer, what: str) -> _Handle:
        """The layer as the GEMM engine's weight stream; a layer the engine cannot run exactly is a
        ValueError naming it."""
        if ("stream", id(layer)) not in self._seen:
            if layer.acc_bits != self.gemm.acc_bits:
                raise ValueError(f"{what}: its accumulator is {layer.acc_bits} bits, the GEMM engine's "
                                 f"{self.gemm.acc_bits}")
            if layer.in_bits > 8 or layer.w_bits > 8:
                raise ValueError(f"{what}: the GEMM engine multiplies int8 operands, not {layer.in_bits}-bit inputs "
                                 f"and {layer.w_bits}-bit weights")
            blob = encode_stream(layer.weight, layer.bias, layer.multipliers, layer.shifts, self.gemm, what=what)
            self._seen["stream", id(layer)] = _Handle("weights", len(self.weights))
            self._keep.append(layer)
            self.weights.append(blob)
        return self._seen["stream", id(layer)]

    def linear(self, layer, what: str) -> tuple[_Handle, _Handle]:
        """A GEMM-type op's operands: the weight stream (``addr_a``) and the ``LIN`` record (``addr_b``)."""
        record = self.record(Tag.LINEAR, *rec.linear_record(layer, what), key=layer)
        return self.stream(layer, what), record

    def layernorm(self, p, what: str) -> _Handle:
        return self.record(Tag.LAYERNORM, *rec.layernorm_record(p, what), key=p)

    def gelu(self, p, what: str) -> _Handle:
        return self.record(Tag.GELU, *rec.gelu_record(p, what), key=p)

    def emit(self, opcode: Opcode, **fields) -> None:
        self.program.append({"opcode": opcode, **fields})

    def finish(self, env: Envelope, method: str, input_scale: float) -> bytes:
        offsets: dict[str, list[int]] = {}
        pos = align(HEADER_BYTES)
        regions = {}
        sizes = {"program": INSTRUCTION_BYTES * len(self.program), "input": env.patches * env.patch_dim,
                 "logits": 2 * env.classes}
        for name in REGIONS:
            start = pos
            if name == "weights":
                offsets[name] = []
                for blob in self.weights:
                    offsets[name].append(pos)
                    pos = align(pos + len(blob))
            elif name == "constants":
                offsets[name] = []
                for tag, scalars, _ in self.records:
                    offsets[name].append(pos)
                    pos = align(pos + rec.record_size(tag, scalars))
            else:
                pos = align(pos + sizes[name])
            regions[name] = Region(start, pos - start if name in ("weights", "constants") else sizes[name])

        def resolve(value):
            return offsets[value.region][value.index] if isinstance(value, _Handle) else value

        data = bytearray(pos)
        data[:HEADER_BYTES] = header_bytes(env, method, input_scale, self.gemm, regions, len(data))
        p = regions["program"].offset
        for pc, fields in enumerate(self.program):
            ins = Instruction(**{k: resolve(v) for k, v in fields.items()})
            data[p + pc * INSTRUCTION_BYTES:p + (pc + 1) * INSTRUCTION_BYTES] = ins.encode()
        for off, blob in zip(offsets["weights"], self.weights, strict=True):
            data[off:off + len(blob)] = blob
        for off, (tag, scalars, arrays) in zip(offsets["constants"], self.records, strict=True):
            arrays = {k: (np.array([resolve(h) for h in v], dtype=np.int64) if k == "refs" else v)
                      for k, v in arrays.items()}
            blob = rec.encode_record(tag, scalars, arrays)
            data[off:off + len(blob)] = blob
        return finish_checksum(data)


#: the integer stage classes of :mod:`tokensift.quant.stages` -> the method register's name
STAGE_METHODS = {"EViTStage": "evit", "DynamicViTStage": "dynamicvit", "SPViTStage": "spvit", "ASViTStage": "asvit",
                 "SaiTStage": "sait"}


def method_of(model) -> str:
    """The method of an IntegerViT's selection stages (``dense`` without any); ValueError for a mix."""
    names = {type(b.selector).__name__ for b in model.blocks if b.selector is not None}
    unknown = names - set(STAGE_METHODS)
    if unknown:
        raise ValueError(f"the accelerator has no program for the stage {', '.join(sorted(unknown))}")
    methods = {STAGE_METHODS[n] for n in names}
    if len(methods) > 1:
        raise ValueError(f"one image runs one method; this model mixes {', '.join(sorted(methods))}")
    return methods.pop() if methods else "dense"


def _stage_record(b: _Builder, method: str, stage, s: int) -> _Handle:
    scalars = {"method": METHODS.index(method), "block": stage.block, "stage": stage.stage,
               "site": 0 if stage.site == "pre" else 1, "option": 0, "heads": 0, "head_dim": 0,
               "mean_multiplier": 0, "mean_shift": 0, "nrefs": 0}
    refs: list = []
    what = f"stage {s} (block {stage.block})"
    if method == "evit":
        scalars["option"] = int(stage.fuse_token)
    elif method == "asvit":
        scalars["option"] = ("token", "image").index(stage.head_importance)
    elif method == "spvit":
        scalars["option"] = ("sum", "mean").index(stage.package)
        w = stage.weights
        scalars.update(heads=len(stage.heads), head_dim=w.head_dim, mean_multiplier=w.mean_multiplier,
                       mean_shift=w.mean_shift)
        for h, head in enumerate(stage.heads):
            for name in SPVIT_HEAD_REFS:
                part = getattr(head, name.split(".")[0])
                refs.append(b.weight(part.weight) if name.endswith(".w") else
                            b.layernorm(part, f"{what} head {h} {name}") if name == "norm" else
                            b.gelu(part, f"{what} head {h} {name}") if name.startswith("gelu") else
                            b.record(Tag.LINEAR, *rec.linear_record(part, f"{what} head {h} {name}"), key=part))
        refs += [b.weight(w.se1.weight), b.record(Tag.LINEAR, *rec.linear_record(w.se1, f"{what} se1"), key=w.se1),
                 b.gelu(w.gelu, f"{what} se gelu"), b.weight(w.se2.weight),
                 b.record(Tag.LINEAR, *rec.linear_record(w.se2, f"{what} se2"), key=w.se2),
                 b.record(Tag.SIGMOID, *rec.sigmoid_record(w.sigmoid, what)),
                 b.record(Tag.SIGMOID, *rec.sigmoid_record(stage.keep_sigmoid, what))]
        scalars["nrefs"] = len(refs)
    return b.record(Tag.STAGE, scalars, {"refs": refs})


def _gemm(b: _Builder, layer, src: Buffer, dst: Buffer, what: str, *, rows: Rows = Rows.ALL,
          gated: bool = False) -> None:
    w, c = b.linear(layer, what)
    b.emit(Opcode.GEMM, src=src, dst=dst, rows=rows, gated=gated, arg=layer.out.bits, addr_a=w, addr_b=c,
           k=layer.in_features, m=layer.out_features)


def _dynamicvit_ops(b: _Builder, stage, s: int) -> None:
    p = stage.predictor
    what = f"stage {s} predictor"
    C = p.norm.dim
    b.emit(Opcode.LAYERNORM, src=Buffer.X, dst=Buffer.H, rows=Rows.CANDIDATES, gated=True, arg=p.norm.out.bits,
           addr_a=b.layernorm(p.norm, what), m=C)
    _gemm(b, p.fc, Buffer.H, Buffer.F, f"{what} fc", gated=True)
    b.emit(Opcode.GELU, src=Buffer.F, dst=Buffer.F, gated=True, arg=p.gelu.out.bits, addr_a=b.gelu(p.gelu, what),
           m=p.fc.out_features)
    b.emit(Opcode.TOKEN_MEAN, src=Buffer.F, dst=Buffer.F, gated=True, k=p.fc.out_features // 2,
           m=p.fc.out_features)
    _gemm(b, p.fc1, Buffer.F, Buffer.H, f"{what} fc1", gated=True)
    b.emit(Opcode.GELU, src=Buffer.H, dst=Buffer.H, gated=True, arg=p.gelu1.out.bits, addr_a=b.gelu(p.gelu1, what),
           m=p.fc1.out_features)
    _gemm(b, p.fc2, Buffer.H, Buffer.F, f"{what} fc2", gated=True)
    b.emit(Opcode.GELU, src=Buffer.F, dst=Buffer.F, gated=True, arg=p.gelu2.out.bits, addr_a=b.gelu(p.gelu2, what),
           m=p.fc2.out_features)
    _gemm(b, p.out, Buffer.F, Buffer.S, f"{what} out", gated=True)


def _select(b: _Builder, method: str, stage, s: int) -> None:
    if method == "dynamicvit":
        _dynamicvit_ops(b, stage, s)
    src = Buffer.S if method == "dynamicvit" else Buffer.A
    b.emit(Opcode.SELECT, dst=Buffer.X, src=src, src2=Buffer.CLS, gated=True, arg=s,
           addr_a=_stage_record(b, method, stage, s))


def default_registers(model, method: str, stages: list, regions: dict[str, Region]) -> Registers:
    """The registers that run ``model`` as it was built (its stages' keep counts, thresholds, density)."""
    from tokensift.quant.select import order_key
    from tokensift.quant.stages.predictor import LOGIT_BITS

    keep, threshold, rule = [], [], []
    density = 1 << 15
    n = model.pos.shape[0] + 1
    for stage in stages:
        k = t = 0
        if method == "evit":
            k = stage.num_keep(n - 1)
            n = 1 + k + int(stage.fuse_token)
            r = "topk"
        elif method == "dynamicvit":
            k, r = stage.keep, "topk"
        elif method == "spvit":
            k, r = stage.keep, stage.decision
            t = int(order_key([0], LOGIT_BITS)[0])
        elif method == "asvit":
            t, r = stage.threshold, "threshold"
        else:  # sait: one density register for every stage, as IntegerViT.set_keep_ratio moves them together
            if len({st.mass for st in stages}) > 1:
                raise ValueError("SaiT's stages share one density register; this model's stages have "
                                 f"masses {sorted({st.mass for st in stages})}")
            density, r = stage.mass, "mass"
        keep.append(k)
        threshold.append(t)
        rule.append(r)
    return Registers(method=method, keep=tuple(keep), threshold=tuple(threshold), rule=tuple(rule),
                     density=density, memory_base=0, program_base=regions["program"].offset,
                     input_base=regions["input"].offset, logits_base=regions["logits"].offset)


def compile_model(model, *, gemm_cols: int = DEFAULT_COLS, stream_bytes: int = DEFAULT_STREAM_BYTES,
                  multiplier_bits: int = MULTIPLIER_BITS) -> Compiled:
    """The memory image, default registers and manifest of an
    :class:`~tokensift.quant.integer_model.IntegerViT` (see the module docstring for the program), its weights
    laid out as weight streams for a GEMM engine of ``gemm_cols`` output channels per column tile fed
    ``stream_bytes`` bytes per beat, with ``multiplier_bits``-bit requantization multipliers
    (:class:`~tokensift.quant.accel.stream.GemmShape`; the defaults are the demo's 2 x 64 engine on a 64-bit
    AXI bus). ValueError for a layer the engine cannot hold, naming it (a multiplier wider than the engine's,
    an accumulator other than its ``acc_bits``)."""
    from tokensift.quant.accel.image import decode_image
    from tokensift.quant.integer_model import IntegerViT

    gemm = GemmShape(cols=gemm_cols, stream_bytes=stream_bytes, multiplier_bits=multiplier_bits)
    if not isinstance(model, IntegerViT):
        raise TypeError(f"model must be an IntegerViT, not {type(model).__name__}")
    method = method_of(model)
    blocks = model.blocks
    C, H = model.patch.out_features, blocks[0].num_heads
    hidden = {blk.fc1.out_features for blk in blocks}
    if len(hidden) > 1 or len({blk.num_heads for blk in blocks}) > 1:
        raise ValueError("the accelerator's envelope needs one MLP width and one head count for every block")
    stages = [blk.selector for blk in blocks if blk.selector is not None]
    if len(stages) > MAX_STAGES:
        raise ValueError(f"at most {MAX_STAGES} selection stages have registers, not {len(stages)}")
    softmax = {blk.attn.softmax for blk in blocks}
    if len(softmax) > 1:
        raise ValueError("every block's attention must use one softmax format")
    env = Envelope(max_tokens=blocks[0].attn.n_max, width=C, heads=H, mlp_hidden=hidden.pop(), depth=len(blocks),
                   classes=model.head.out_features, patch_size=model.patch_size, in_chans=model.in_chans,
                   patches=model.pos.shape[0], res_bits=model.res.bits, prob_frac=softmax.pop().prob_frac,
                   stages=len(stages), head_dim=C // H)
    res = rec.plain_format(model.res, "the residual stream")

    b = _Builder(gemm)
    w, c = b.linear(model.patch, "patch embedding")
    b.emit(Opcode.PATCH_EMBED, dst=Buffer.X, arg=res, addr_a=w, addr_b=c, k=model.patch.in_features, m=C)
    pos = b.record(Tag.POSITION, {"patches": env.patches, "dim": C, "bits": res},
                   {"cls": model.cls_pos, "pos": model.pos})
    b.emit(Opcode.POS_EMBED, dst=Buffer.X, arg=res, addr_a=pos, k=env.patches, m=C)
    s = 0
    for i, blk in enumerate(blocks):
        stage = blk.selector
        if stage is not None and stage.site == "pre":
            _select(b, method, stage, s)
            s += 1
        b.emit(Opcode.LAYERNORM, src=Buffer.X, dst=Buffer.H, arg=blk.norm1.out.bits,
               addr_a=b.layernorm(blk.norm1, f"block {i} norm1"), m=C)
        _gemm(b, blk.qkv, Buffer.H, Buffer.QKV, f"block {i} qkv")
        attn = b.record(Tag.ATTENTION, *rec.attention_record(blk.attn, f"block {i}"), key=blk.attn)
        for h in range(H):
            b.emit(Opcode.ATTENTION, src=Buffer.QKV, dst=Buffer.A, src2=Buffer.CLS, arg=h, addr_a=attn,
                   k=C // H, m=C)
        _gemm(b, blk.proj, Buffer.A, Buffer.T, f"block {i} proj")
        b.emit(Opcode.RESIDUAL_ADD, src=Buffer.X, src2=Buffer.T, dst=Buffer.X, arg=res, m=C)
        if stage is not None and stage.site == "mid":
            _select(b, method, stage, s)
            s += 1
        b.emit(Opcode.LAYERNORM, src=Buffer.X, dst=Buffer.H, arg=blk.norm2.out.bits,
               addr_a=b.layernorm(blk.norm2, f"block {i} norm2"), m=C)
        _gemm(b, blk.fc1, Buffer.H, Buffer.F, f"block {i} fc1")
        b.emit(Opcode.GELU, src=Buffer.F, dst=Buffer.F, arg=blk.gelu.out.bits,
               addr_a=b.gelu(blk.gelu, f"block {i} gelu"), m=blk.fc1.out_features)
        _gemm(b, blk.fc2, Buffer.F, Buffer.T, f"block {i} fc2")
        b.emit(Opcode.RESIDUAL_ADD, src=Buffer.X, src2=Buffer.T, dst=Buffer.X, arg=res, m=C)
    b.emit(Opcode.LAYERNORM, src=Buffer.X, dst=Buffer.H, rows=Rows.CLASS, arg=model.norm.out.bits,
           addr_a=b.layernorm(model.norm, "final norm"), m=C)
    _gemm(b, model.head, Buffer.H, Buffer.LOGITS, "head", rows=Rows.ALL)
    b.emit(Opcode.WRITE_LOGITS, src=Buffer.LOGITS, arg=model.head.out.bits, m=env.classes)
    b.emit(Opcode.END)
    data = b.finish(env, method, model.input_scale)

    image = decode_image(data)  # the image is checked the way every reader checks it
    registers = default_registers(model, method, stages, image.regions)
    return Compiled(image=data, registers=registers, manifest=manifest(image, registers, model))


def manifest(image, registers: Registers, model=None) -> dict:
    """What ``manifest.json`` holds: the envelope, the GEMM engine's shape and the weight streams, the
    regions, the buffers, the op counts, the checksums."""
    from tokensift.quant.accel.image import VERSION

    env = image.envelope
    streams = {ins.addr_a: image.gemm.stream_length(ins.m, ins.k) for ins in image.program
               if ins.opcode in (Opcode.PATCH_EMBED, Opcode.GEMM)}
    shapes = buffer_shapes(max_tokens=env.max_tokens, width=env.width, heads=env.heads, mlp_hidden=env.mlp_hidden,
                           classes=env.classes, res_bits=env.res_bits, prob_frac=env.prob_frac)
    out = {
        "format": "tokensift accelerator memory image",
        "version": VERSION,
        "method": image.method,
        "envelope": env.to_dict(),
        "gemm": image.gemm.to_dict(),
        "weight_streams": {"count": len(streams), "bytes": sum(streams.values())},
        "input_scale": image.input_scale,
        "regions": {name: {"offset": r.offset, "size": r.size} for name, r in image.regions.items()},
        "bytes": len(image.data),
        "ops": len(image.program),
        "op_counts": dict(sorted(Counter(ins.opcode.name for ins in image.program).items())),
        "buffers": {name: {"rows": r, "columns": c, "bits": bits, "bytes": r * c * ((bits + 7) // 8)}
                    for name, (r, c, bits) in shapes.items()},
        "checksum": f"{image.checksum:#010x}",
        "sha256": hashlib.sha256(image.data).hexdigest(),
        "registers": registers.to_json(),
    }
    if model is not None:
        out["logit_scale"] = [float(v) for v in model.logit_scale]
    return out


def reference_model(model, registers: Registers):
    """A copy of the IntegerViT ``model`` set to what ``registers`` say, for comparisons with the sequencer:
    ``dense`` removes its stages; otherwise each stage's knob takes its register (EViT's keep ratio giving
    the register's count, DynamicViT's and SPViT's counts and rule, AS-ViT's threshold, SaiT's density).
    ValueError for a setting the integer model has no knob for (an SPViT threshold other than 0)."""
    import copy
    import dataclasses

    from tokensift.quant.select import order_key
    from tokensift.quant.stages.predictor import LOGIT_BITS

    m = copy.deepcopy(model)
    method = method_of(m)
    if registers.method == "dense":
        m.blocks = [dataclasses.replace(b, selector=None) for b in m.blocks]
        return m
    if registers.method != method:
        raise ValueError(f"the model runs {method}, not {registers.method}")
    stages = [b.selector for b in m.blocks if b.selector is not None]
    if len(stages) != registers.stages:
        raise ValueError(f"the model has {len(stages)} selection stages, the registers {registers.stages}")
    if method == "sait":
        m.set_keep_ratio(registers.density / (1 << 15))
        return m
    n = m.pos.shape[0] + 1
    for stage, k, t, r in zip(stages, registers.keep, registers.threshold, registers.rule, strict=True):
        if method == "evit":
            k = min(k, n - 1)
            stage.keep_ratio = k / (n - 1)
            while stage.num_keep(n - 1) != k:  # k / candidates rounded in float64: step to the exact count
                stage.keep_ratio = float(np.nextafter(stage.keep_ratio, 0.0 if stage.num_keep(n - 1) > k else 2.0))
            n = 1 + k + int(stage.fuse_token)
        elif method == "dynamicvit":
            stage.keep = k
        elif method == "asvit":
            stage.threshold = t
        else:
            if r == "threshold" and t != int(order_key([0], LOGIT_BITS)[0]):
                raise ValueError("the integer SPViT stage keeps scores above 0 only; it has no other threshold")
            stage.decision, stage.keep = r, k
    return m
