"""The reference sequencer: runs a memory image's program from DRAM bytes and the run-time registers.

Every op calls the kernel :class:`~tokensift.quant.integer_model.IntegerViT` calls (``IntLinear``,
``layernorm_int``, ``attention_head``, ``residual_add``, ``gelu_int``, ``mean_rows``, the stages'
selection functions) on parameters decoded from the image, never on Python objects of the model, so the
logits it writes to the logits region equal ``IntegerViT.logits`` bit for bit. Nothing else is read: the
program at ``PROGRAM_BASE``, the input at ``INPUT_BASE``, the weights and records at ``MEMORY_BASE`` plus the
instruction's offsets. A GEMM-type op's weights, biases, multipliers and shifts come from its weight stream
(the bytes the GEMM engine reads), checked against its ``LIN`` record.

The trace (one dict per instruction: ``pc``, ``op``, the run-time ``n`` rows it processed, ``k``, ``m``,
``tokens`` alive after it, ``skipped`` for gated ops under ``METHOD = dense``, and ``head`` / ``stage`` /
``kept`` where they apply) is what the cost model and the RTL sequencer's tests are checked against.

A malformed program or image (an unknown opcode, a record of the wrong type, a width beyond its buffer, a
selection step without the attention it scores, a register setting the image cannot run) raises ValueError
naming the instruction: the hardware flags the same cases in its status register.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from tokensift.quant.accel import records as rec
from tokensift.quant.accel.image import MemoryImage, decode_image, input_bytes, quantize_input
from tokensift.quant.accel.isa import Buffer, Instruction, Opcode, Rows, buffer_shapes, decode_program
from tokensift.quant.accel.records import Tag
from tokensift.quant.accel.registers import MASS_ONE, METHODS, Registers
from tokensift.quant.attention import attention_head
from tokensift.quant.fixed import FixedFormat, OverflowCounter
from tokensift.quant.gelu import gelu_int
from tokensift.quant.layernorm import layernorm_int
from tokensift.quant.residual import residual_add
from tokensift.quant.select import SCORE_FORMAT, order_key, package_token, topk_keep
from tokensift.quant.stages.asvit import ASViTStage
from tokensift.quant.stages.base import StageContext, StageRecord, TokenFrame, keep_tokens
from tokensift.quant.stages.evit import mean_attention
from tokensift.quant.stages.predictor import LOGIT_BITS, IntegerPredictor, mean_rows, select_candidates
from tokensift.quant.stages.sait import SaiTStage
from tokensift.quant.stages.spvit import HeadWeights, SPViTStage

__all__ = ["Result", "run", "run_images"]


@dataclass
class Result:
    """One image's run: the ``logits`` read back from the logits region, the per-op ``trace``, the selection
    stages' ``decisions`` (as :attr:`IntegerViT.decisions` records them), the saturation ``counter`` and the
    ``dram`` after the run."""

    logits: np.ndarray
    trace: list[dict]
    decisions: list[StageRecord]
    counter: OverflowCounter
    dram: bytearray = field(repr=False)


class _Fault(ValueError):
    pass


class _Sequencer:
    def __init__(self, dram: bytearray, regs: Registers):
        self.dram = dram
        self.regs = regs
        base = regs.memory_base
        if base + 16 > len(dram):
            raise ValueError(f"MEMORY_BASE {base} is past the end of the {len(dram)}-byte DRAM")
        total = struct.unpack_from("<I", dram, base + 16)[0]  # the header's total_bytes
        self.image: MemoryImage = decode_image(bytes(dram[base:base + total]))
        env = self.env = self.image.envelope
        if self.image.method != regs.method and regs.method != "dense":
            raise ValueError(f"the image was compiled for {self.image.method}; its registers may say "
                             f"{self.image.method} or dense, not {regs.method}")
        if regs.stages != env.stages:
            raise ValueError(f"the image has {env.stages} selection stages; the registers set {regs.stages}")
        for name, addr, size in (("INPUT_BASE", regs.input_base, env.patches * env.patch_dim),
                                 ("LOGITS_BASE", regs.logits_base, 2 * env.classes)):
            if addr + size > len(dram):
                raise ValueError(f"{name} {addr} + {size} bytes is past the end of the {len(dram)}-byte DRAM")
        static_end = base + self.image.regions["constants"].end
        if regs.logits_base < static_end and regs.logits_base + 2 * env.classes > base:
            raise ValueError(f"LOGITS_BASE {regs.logits_base} would overwrite the image's program, weights or "
                             "constants")
        shapes = buffer_shapes(max_tokens=env.max_tokens, width=env.width, heads=env.heads,
                               mlp_hidden=env.mlp_hidden, classes=env.classes, res_bits=env.res_bits,
                               prob_frac=env.prob_frac)
        self.shapes = {Buffer[name]: shape for name, shape in shapes.items()}
        self.buf = {b: np.zeros(self.shapes[b][:2], dtype=np.int64) for b in Buffer}
        self.count = dict.fromkeys(Buffer, 0)  # run-time rows of each buffer (CLS: tokens per class row)
        self.P = 1
        self.index = np.zeros(0, dtype=np.int64)
        self.counter = OverflowCounter()
        self.trace: list[dict] = []
        self.decisions: list[StageRecord] = []
        self.res = FixedFormat(bits=env.res_bits)

    # -- helpers ---------------------------------------------------------------------------------------------
    def record(self, offset: int, tag: int):
        self.image.constants_at(offset)
        return rec.decode_record(self.image.data, offset, tag)

    def linear(self, ins: Instruction):
        """A GEMM-type op's layer as the GEMM engine gets it: weights, bias, multipliers and shifts decoded from
        the weight stream at ``addr_a`` (what the hardware reads); the LIN record at ``addr_b`` (the widths)
        must agree with them."""
        scalars, arrays = self.record(ins.addr_b, Tag.LINEAR)
        if (scalars["k"], scalars["m"]) != (ins.k, ins.m):
            raise _Fault(f"its LIN record is {scalars['m']} x {scalars['k']}, the instruction says {ins.m} x {ins.k}")
        gemm = self.image.gemm
        if scalars["acc_bits"] != gemm.acc_bits:
            raise _Fault(f"its LIN record accumulates in {scalars['acc_bits']} bits, the GEMM engine in "
                         f"{gemm.acc_bits}")
        stream = self.image.stream(ins.addr_a, ins.m, ins.k)
        for name in ("bias", "multipliers", "shifts"):
            differ = np.flatnonzero(getattr(stream, name) != arrays[name])
            if differ.size:
                c = int(differ[0])
                raise _Fault(f"its weight stream's {name} differ from its LIN record's (channel {c}: "
                             f"{int(getattr(stream, name)[c])} and {int(arrays[name][c])})")
        return rec.linear_from(scalars, {"bias": stream.bias, "multipliers": stream.multipliers,
                                         "shifts": stream.shifts}, stream.weight)

    def rows(self, ins: Instruction) -> tuple[int, int]:
        n = self.count[ins.src]
        start = {Rows.ALL: 0, Rows.CLASS: 0, Rows.CANDIDATES: self.P, Rows.PATCHES: 1}[ins.rows]
        stop = min(n, 1) if ins.rows is Rows.CLASS else n
        if n == 0:
            raise _Fault(f"it reads {ins.src.name}, which holds no rows")
        return start, stop

    def width(self, b: Buffer, cols: int, bits: int | None = None) -> None:
        _, have, have_bits = self.shapes[b]
        if cols > have or cols < 1:
            raise _Fault(f"{cols} columns do not fit buffer {b.name} ({have} columns)")
        if bits is not None and bits > have_bits:
            raise _Fault(f"{bits}-bit values do not fit buffer {b.name} ({have_bits}-bit)")

    def put(self, b: Buffer, values: np.ndarray, col: int = 0) -> None:
        n, c = values.shape
        if n > self.shapes[b][0]:
            raise _Fault(f"{n} rows do not fit buffer {b.name} ({self.shapes[b][0]} rows)")
        self.width(b, col + c)
        self.buf[b][:n, col:col + c] = values
        self.count[b] = n

    # -- the ops ---------------------------------------------------------------------------------------------
    def step(self, pc: int, ins: Instruction) -> dict:
        entry = {"pc": pc, "op": ins.opcode.name, "n": 0, "k": ins.k, "m": ins.m}
        if ins.gated and self.regs.method == "dense":
            entry.update(skipped=True, tokens=self.count[Buffer.X])
            return entry
        site = f"pc{pc}.{ins.opcode.name.lower()}"
        op = ins.opcode
        if op is Opcode.PATCH_EMBED:
            env = self.env
            if ins.k != env.patch_dim:
                raise _Fault(f"k {ins.k} is not the envelope's patch size {env.patch_dim}")
            codes = np.frombuffer(bytes(self.dram[self.regs.input_base:self.regs.input_base + env.patches * ins.k]),
                                  dtype=np.int8).reshape(env.patches, ins.k).astype(np.int64)
            layer = self.linear(ins)
            self.width(ins.dst, ins.m, layer.out.bits)
            out = layer(codes, counter=self.counter, site=site)
            self.put(ins.dst, np.concatenate([np.zeros((1, ins.m), dtype=np.int64), out]))
            entry["n"] = env.patches
        elif op is Opcode.POS_EMBED:
            scalars, arrays = self.record(ins.addr_a, Tag.POSITION)
            p, c = scalars["patches"], scalars["dim"]
            if (p, c) != (ins.k, ins.m) or self.count[ins.dst] != p + 1 or scalars["bits"] != ins.arg:
                raise _Fault(f"its POS record ({p} x {c}, {scalars['bits']} bits) does not match the instruction "
                             f"or the {self.count[ins.dst]} rows of {ins.dst.name}")
            self.width(ins.dst, c, scalars["bits"])
            x = self.buf[ins.dst]
            x[1:p + 1, :c] = residual_add(x[1:p + 1, :c], arrays["pos"].reshape(p, c), FixedFormat(bits=ins.arg),
                                          counter=self.counter, site=site)
            x[0, :c] = arrays["cls"]
            self.P, self.index = 1, np.arange(p + 1, dtype=np.int64)
            for b in (Buffer.A, Buffer.CLS, Buffer.S):
                self.count[b] = 0
            entry["n"] = p + 1
        elif op is Opcode.LAYERNORM:
            params = rec.layernorm_from(*self.record(ins.addr_a, Tag.LAYERNORM))
            if params.dim != ins.m or params.out.bits != ins.arg:
                raise _Fault(f"its LNRM record is {params.dim} wide with {params.out.bits}-bit outputs")
            start, stop = self.rows(ins)
            self.width(ins.src, ins.m)
            self.width(ins.dst, ins.m, ins.arg)
            out = layernorm_int(self.buf[ins.src][start:stop, :ins.m], params, counter=self.counter, site=site)
            self.put(ins.dst, out)
            entry["n"] = stop - start
        elif op is Opcode.GEMM:
            layer = self.linear(ins)
            if layer.out.bits != ins.arg:
                raise _Fault(f"its LIN record writes {layer.out.bits}-bit outputs, the instruction {ins.arg}-bit")
            start, stop = self.rows(ins)
            self.width(ins.src, ins.k)
            self.width(ins.dst, ins.m, ins.arg)
            self.put(ins.dst, layer(self.buf[ins.src][start:stop, :ins.k], counter=self.counter, site=site))
            entry["n"] = stop - start
        elif op is Opcode.ATTENTION:
            params = rec.attention_from(*self.record(ins.addr_a, Tag.ATTENTION))
            hd, C, h = ins.k, ins.m, ins.arg
            if params.head_dim != hd or h >= self.env.heads or (h + 1) * hd > C or ins.rows is not Rows.ALL:
                raise _Fault(f"head {h} of dimension {hd} (record: {params.head_dim}) is not a head of the "
                             f"{self.env.heads}-head, {C}-wide envelope")
            self.width(ins.src, 3 * C)
            self.width(ins.dst, C)
            if ins.src2 is not Buffer.CLS:
                raise _Fault(f"the class rows go to CLS, not {ins.src2.name}")
            n = self.count[ins.src]
            if n == 0:
                raise _Fault(f"it reads {ins.src.name}, which holds no rows")
            qkv = self.buf[ins.src]
            out, row = attention_head(qkv[:n, h * hd:(h + 1) * hd], qkv[:n, C + h * hd:C + (h + 1) * hd],
                                      qkv[:n, 2 * C + h * hd:2 * C + (h + 1) * hd], params, counter=self.counter)
            if h == 0:
                self.count[ins.dst] = 0  # the first head starts a new attention
            elif self.count[ins.dst] != n:
                raise _Fault(f"head {h} runs over {n} tokens, the heads before it over {self.count[ins.dst]}")
            self.buf[ins.dst][:n, h * hd:(h + 1) * hd] = out
            self.count[ins.dst] = n
            self.buf[Buffer.CLS][h, :n] = row
            self.count[Buffer.CLS] = n
            entry.update(n=n, head=h)
        elif op is Opcode.RESIDUAL_ADD:
            n = self.count[ins.src]
            if n == 0 or self.count[ins.src2] != n:
                raise _Fault(f"it adds {ins.src.name} ({n} rows) and {ins.src2.name} ({self.count[ins.src2]} rows)")
            for b in (ins.src, ins.src2):
                self.width(b, ins.m)
            self.width(ins.dst, ins.m, ins.arg)
            self.put(ins.dst, residual_add(self.buf[ins.src][:n, :ins.m], self.buf[ins.src2][:n, :ins.m],
                                           FixedFormat(bits=ins.arg), counter=self.counter, site=site))
            entry["n"] = n
        elif op is Opcode.GELU:
            params = rec.gelu_from(*self.record(ins.addr_a, Tag.GELU))
            if params.out.bits != ins.arg:
                raise _Fault(f"its GELU record writes {params.out.bits}-bit outputs, the instruction {ins.arg}-bit")
            start, stop = self.rows(ins)
            self.width(ins.src, ins.m)
            self.width(ins.dst, ins.m, ins.arg)
            self.put(ins.dst, gelu_int(self.buf[ins.src][start:stop, :ins.m], params, counter=self.counter,
                                       site=site))
            entry["n"] = stop - start
        elif op is Opcode.TOKEN_MEAN:
            start, stop = self.rows(ins)
            if not ins.k < ins.m:
                raise _Fault(f"it averages columns {ins.k}..{ins.m - 1}: none")
            self.width(ins.src, ins.m)
            x = self.buf[ins.src][start:stop, :ins.m].copy()
            x[:, ins.k:] = mean_rows(x[:, ins.k:])[None]
            self.put(ins.dst, x)
            entry["n"] = stop - start
        elif op is Opcode.SELECT:
            self.select(ins, entry)
        elif op is Opcode.WRITE_LOGITS:
            if ins.m != self.env.classes or ins.arg != 16 or self.count[ins.src] < 1:
                raise _Fault(f"it writes {ins.m} {ins.arg}-bit logits from {self.count[ins.src]} rows; the "
                             f"envelope has {self.env.classes} int16 logits")
            self.width(ins.src, ins.m)
            logits = self.buf[ins.src][0, :ins.m]
            a = self.regs.logits_base
            self.dram[a:a + 2 * ins.m] = logits.astype("<i2").tobytes()
            entry["n"] = 1
        elif op is not Opcode.END:
            raise _Fault(f"opcode {op.name} has no sequencer step")
        entry["tokens"] = self.count[Buffer.X]
        return entry

    def select(self, ins: Instruction, entry: dict) -> None:
        s = ins.arg
        regs, env = self.regs, self.env
        if s >= regs.stages:
            raise _Fault(f"stage {s} has no registers ({regs.stages} stages)")
        scalars, arrays = self.record(ins.addr_a, Tag.STAGE)
        if not 0 <= scalars["method"] < len(METHODS) or METHODS[scalars["method"]] != self.image.method:
            raise _Fault(f"its STGE record is for method {scalars['method']}, the image's is {self.image.method}")
        if ins.dst is not Buffer.X:
            raise _Fault(f"it selects the residual buffer X, not {ins.dst.name}")
        method, rule = self.image.method, regs.rule[s]
        n, P = self.count[Buffer.X], self.P
        entry.update(stage=s, n=n)
        attn = self.count[Buffer.CLS] == n and self.count[Buffer.A] == n
        frame = TokenFrame(x=self.buf[Buffer.X][:n].copy(), index=self.index.copy(), num_protected=P,
                           cls_rows=self.buf[Buffer.CLS][:, :n].copy() if attn else None,
                           head_out=self.buf[Buffer.A][:n].reshape(n, env.heads, env.head_dim).copy() if attn else None)
        if method in ("evit", "sait", "asvit") and not attn:
            raise _Fault(f"the {method} stage scores the attention of the tokens it selects from, and none ran "
                         "over them")
        ctx = StageContext(counter=self.counter, res=self.res, prob_frac=env.prob_frac)
        block, stage = scalars["block"], scalars["stage"]
        record = None
        if method == "evit":
            scores = mean_attention(frame.cls_rows, ctx.prob_frac).scores(ctx.counter)
            keep, _ = topk_keep(scores, min(regs.keep[s], n - 1), n, score_bits=SCORE_FORMAT.bits)
            fused = None
            if scalars["option"]:
                fused = package_token(frame.x, scores, ~keep, feature_bits=ctx.res.bits, mode="sum",
                                      score_frac=SCORE_FORMAT.frac, counter=ctx.counter)[None]
            new = keep_tokens(frame, keep, appended=fused)
            record = StageRecord(stage, block, frame.index.copy(), keep.copy(), scores.copy(), P)
        elif method == "dynamicvit":
            if self.count[ins.src] != n - P:
                raise _Fault(f"it needs one score per candidate ({n - P}) in {ins.src.name}, which holds "
                             f"{self.count[ins.src]}")
            keys = order_key(np.concatenate([np.zeros(P, dtype=np.int64), self.buf[ins.src][:n - P, 0]]),
                             LOGIT_BITS)
            keep = select_candidates(keys, P, score_bits=LOGIT_BITS, k=min(regs.keep[s], n - P))
            new = keep_tokens(frame, keep)
            record = StageRecord(stage, block, frame.index.copy(), keep.copy(), keys.copy(), P)
        elif method == "asvit":
            new, record = ASViTStage(block=block, stage=stage, threshold=regs.threshold[s],
                                     head_importance=("token", "image")[scalars["option"]])(frame, ctx)
        elif method == "sait":
            if regs.density == MASS_ONE:  # density 1: the dense model, as SaiTStage skips it
                new = frame
            else:
                new, record = SaiTStage(block=block, stage=stage, keep_ratio=regs.density / MASS_ONE)(frame, ctx)
        else:
            st = self.spvit(scalars, arrays, block, stage, rule, regs.keep[s])
            scores, weights = st.evaluate(frame, ctx)
            keys = order_key(scores, LOGIT_BITS)
            if rule == "threshold":
                keep = select_candidates(keys, P, score_bits=LOGIT_BITS, threshold=regs.threshold[s])
            else:
                keep = select_candidates(keys, P, score_bits=LOGIT_BITS, k=min(regs.keep[s], n - P))
            pkg = package_token(frame.x, weights, ~keep, feature_bits=ctx.res.bits, mode=st.package,
                                score_frac=SCORE_FORMAT.frac, counter=ctx.counter)[None]
            new = keep_tokens(frame, keep, protected=pkg)
            record = StageRecord(stage, block, frame.index.copy(), keep.copy(), keys.copy(), P)
        if new.n > env.max_tokens:
            raise _Fault(f"the stage leaves {new.n} tokens, more than the envelope's {env.max_tokens}")
        if record is not None:
            self.decisions.append(record)
            self.buf[Buffer.X][:new.n] = new.x
            self.count[Buffer.X], self.P, self.index = new.n, new.num_protected, new.index
            for b in (Buffer.A, Buffer.CLS, Buffer.S):  # they no longer line up with the tokens
                self.count[b] = 0
        entry["kept"] = new.n

    def spvit(self, scalars: dict, arrays: dict, block: int, stage: int, rule: str, keep: int) -> SPViTStage:
        from tokensift.quant.accel.compiler import SPVIT_HEAD_REFS, SPVIT_SHARED_REFS

        H = scalars["heads"]
        refs = [int(r) for r in arrays["refs"]]
        if H != self.env.heads or len(refs) != len(SPVIT_HEAD_REFS) * H + len(SPVIT_SHARED_REFS):
            raise _Fault(f"its SPViT record has {H} heads and {len(refs)} nested records")

        def parts(names, offsets):
            got, it = {}, iter(zip(names, offsets, strict=True))
            for name, off in it:
                if name.endswith(".w"):
                    _, c_off = next(it)
                    scalars_, arrays_ = self.record(c_off, Tag.LINEAR)
                    got[name[:-2]] = rec.linear_from(scalars_, arrays_,
                                                     self.image.weights(off, scalars_["m"], scalars_["k"]))
                elif name == "norm":
                    got[name] = rec.layernorm_from(*self.record(off, Tag.LAYERNORM))
                elif "gelu" in name:
                    got[name] = rec.gelu_from(*self.record(off, Tag.GELU))
                else:
                    got[name] = rec.sigmoid_from(*self.record(off, Tag.SIGMOID))
            return got

        per = len(SPVIT_HEAD_REFS)
        heads = [IntegerPredictor(**parts(SPVIT_HEAD_REFS, refs[h * per:(h + 1) * per])) for h in range(H)]
        shared = parts(SPVIT_SHARED_REFS, refs[H * per:])
        weights = HeadWeights(head_dim=scalars["head_dim"], mean_multiplier=scalars["mean_multiplier"],
                              mean_shift=scalars["mean_shift"], se1=shared["se1"], gelu=shared["se_gelu"],
                              se2=shared["se2"], sigmoid=shared["se_sigmoid"])
        return SPViTStage(block=block, stage=stage, heads=heads, weights=weights, keep_sigmoid=shared["keep_sigmoid"],
                          decision=rule, keep=keep, package=("sum", "mean")[scalars["option"]])

    def run(self) -> Result:
        base = self.regs.program_base
        if base >= len(self.dram):
            raise ValueError(f"PROGRAM_BASE {base} is past the end of the {len(self.dram)}-byte DRAM")
        tail = bytes(self.dram[base:])
        program = decode_program(tail[:len(tail) - len(tail) % 16])
        for pc, ins in enumerate(program):
            try:
                self.trace.append(self.step(pc, ins))
            except ValueError as exc:  # a record, a width, a count: what the hardware's status flags
                raise ValueError(f"instruction {pc} ({ins.opcode.name}): {exc}") from None
        a = self.regs.logits_base
        logits = np.frombuffer(bytes(self.dram[a:a + 2 * self.env.classes]), dtype="<i2").astype(np.int64)
        return Result(logits=logits, trace=self.trace, decisions=self.decisions, counter=self.counter, dram=self.dram)


def run(dram: bytearray, registers: Registers) -> Result:
    """Run one image: the memory image at ``MEMORY_BASE`` of ``dram``, its input already at ``INPUT_BASE``;
    the logits are written to ``LOGITS_BASE`` of ``dram`` (and returned)."""
    if not isinstance(dram, bytearray):
        raise TypeError(f"dram must be a bytearray (the accelerator writes its logits into it), not "
                        f"{type(dram).__name__}")
    if not isinstance(registers, Registers):
        raise TypeError(f"registers must be a Registers, not {type(registers).__name__}")
    return _Sequencer(dram, registers).run()


def run_images(image: bytes, registers: Registers, images, *, dram_bytes: int | None = None
               ) -> tuple[np.ndarray, list[Result]]:
    """Float images (B, C, H, W) through the image one at a time, as the host drives the accelerator: the
    memory image is loaded at ``MEMORY_BASE`` of a DRAM of ``dram_bytes`` (default: just large enough), each
    image's int8 patches written at ``INPUT_BASE``, :func:`run`, the logits read back. Returns the
    (B, classes) logits and each image's :class:`Result`."""
    mem = decode_image(image)
    size = max(registers.memory_base + len(image), registers.input_base + mem.regions["input"].size,
               registers.logits_base + mem.regions["logits"].size)
    dram = bytearray(size if dram_bytes is None else dram_bytes)
    if len(dram) < size:
        raise ValueError(f"a DRAM of {len(dram)} bytes cannot hold the image and its regions ({size} bytes)")
    dram[registers.memory_base:registers.memory_base + len(image)] = image
    results = []
    for codes in quantize_input(mem, images):
        data = input_bytes(codes)
        dram[registers.input_base:registers.input_base + len(data)] = data
        results.append(run(dram, registers))
    return np.stack([r.logits for r in results]), results


@dataclass
class Snapshot:
    """The sequencer's state between two instructions: every buffer's contents, its run-time row count,
    the protected count ``P`` and the original index of each residual row."""

    buffers: dict
    count: dict
    protected: int
    index: np.ndarray


def _snapshot(seq: _Sequencer) -> Snapshot:
    return Snapshot({b: v.copy() for b, v in seq.buf.items()}, dict(seq.count), seq.P, seq.index.copy())


def walk(dram: bytearray, registers: Registers):
    """Run one image as :func:`run` does, yielding ``(pc, instruction, before, after, entry)`` for every
    instruction (``before`` and ``after`` are :class:`Snapshot` s, ``entry`` the trace entry): what each RTL
    op engine is checked against."""
    if not isinstance(dram, bytearray):
        raise TypeError(f"dram must be a bytearray, not {type(dram).__name__}")
    seq = _Sequencer(dram, registers)
    base = registers.program_base
    tail = bytes(dram[base:])
    for pc, ins in enumerate(decode_program(tail[:len(tail) - len(tail) % 16])):
        before = _snapshot(seq)
        entry = seq.step(pc, ins)
        seq.trace.append(entry)
        yield pc, ins, before, _snapshot(seq), entry
