"""The integer-only ViT: a :mod:`tokensift.sw` model run end to end on the integer kernels of ``quant/``.

What the accelerator computes, image by image (``C`` channels, ``H`` heads, ``N`` tokens):

* **input**: the normalised image is quantized once to int8 at a calibrated scale (the only float step);
* **patch embedding**: :class:`~tokensift.quant.gemm.IntLinear` of each flattened patch, requantized into
  the **residual format** (signed ``res_bits``, one calibrated scale ``s_res`` for the whole model), plus
  the class token and position embeddings quantized at ``s_res``;
* **each block**: integer LayerNorm (:mod:`~tokensift.quant.layernorm`, int16 residual in, int8 out) ->
  ``qkv`` IntLinear (per-channel requantization to separate q, k and v scales) -> one-head integer
  attention per head (:func:`tokensift.quant.attention.attention_head`: integer softmax, ``P V``, output
  requantized to the calibrated ``proj`` input scale) -> ``proj`` IntLinear into ``s_res`` -> saturating
  residual add -> [token selector] -> LayerNorm -> ``fc1`` -> integer GELU (:mod:`~tokensift.quant.gelu`) ->
  ``fc2`` into ``s_res`` -> saturating residual add;
* **token selection**: each method's integer stage (:mod:`tokensift.quant.stages`, one module per method)
  runs where the float selector does, before its block (``"pre"``, reading the previous attention's class
  rows and head outputs) or between attention and MLP (``"mid"``, EViT). Images run one at a time, so each
  keeps its own token count (AS-ViT, SaiT and SPViT's threshold rule adapt per image) exactly as the
  hardware processes frames; every decision is kept in :attr:`IntegerViT.decisions`;
* **head**: final LayerNorm of the class token -> ``head`` IntLinear into int16 logits; the prediction is
  their argmax.

Every value that saturates is counted in :attr:`IntegerViT.counter` by site. Supported models: every
:mod:`tokensift.sw` ViT/DeiT backbone, dense or with the selectors :mod:`tokensift.quant.stages` has an
integer form of; other selectors raise ValueError.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from tokensift.checks import check_int
from tokensift.quant.attention import AttentionParams, attention_error, attention_head, scale_for
from tokensift.quant.calibrate import Observer, calibrate
from tokensift.quant.fixed import FixedFormat, OverflowCounter
from tokensift.quant.gelu import GeluParams, gelu_error_bound, gelu_exact, gelu_int
from tokensift.quant.gemm import IntLinear, linear_error_bound
from tokensift.quant.layernorm import LayerNormParams, layernorm_error_bound, layernorm_float, layernorm_int
from tokensift.quant.qparams import MULTIPLIER_BITS, quantize_multiplier, quantize_tensor, symmetric_scale
from tokensift.quant.residual import residual_add
from tokensift.quant.softmax import SoftmaxParams
from tokensift.quant.stages import (
    BuildContext,
    IntegerStage,
    StageContext,
    StageRecord,
    TokenFrame,
    build_stages,
)
from tokensift.quant.stages import stage_sites as _stage_sites
from tokensift.quant.stages.evit import HEAD_WEIGHT_FRAC

__all__ = ["IntegerBlock", "IntegerViT", "BlockTrace", "calibration_sites", "capture_activations", "kernel_errors",
           "HEAD_WEIGHT_FRAC"]


@dataclass(frozen=True, eq=False)
class IntegerBlock:
    """The integer parameters of one encoder block."""

    norm1: LayerNormParams
    qkv: IntLinear
    attn: AttentionParams
    proj: IntLinear
    norm2: LayerNormParams
    fc1: IntLinear
    gelu: GeluParams
    fc2: IntLinear
    num_heads: int
    selector: IntegerStage | None = None


@dataclass
class BlockTrace:
    """What one block computed for one image (:meth:`IntegerViT.block_step` with ``trace=True``): the
    frame that entered, the int8 Q/K/V per head (H, N, head_dim) and the attention outputs (N, C) and class
    rows (H, N) of its attention, the tokens entering and leaving a ``"mid"`` stage, and the stage's record."""

    entered: TokenFrame
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    attn_out: np.ndarray
    cls_rows: np.ndarray
    before_select: TokenFrame | None = None
    after_select: TokenFrame | None = None
    record: StageRecord | None = None


def _np(t) -> np.ndarray:
    return t.detach().to("cpu").double().numpy()


def calibration_sites(model) -> dict:
    """Where :meth:`IntegerViT.from_float` measures activation ranges in the float model."""
    C = model.embed_dim
    sites = {
        "input": (model.patch_embed, "input"),
        "res": [(blk.norm1, "input") for blk in model.blocks] + [(blk.norm2, "input") for blk in model.blocks]
        + [(model.norm, "input")],
        "final": (model.norm, lambda args, out: out[:, 0]),
        "logits": (model.head, "output"),
    }
    sites.update(_stage_sites(model))
    for i, blk in enumerate(model.blocks):
        sites.update({
            f"blocks.{i}.ln1": (blk.norm1, "output"),
            f"blocks.{i}.q": (blk.attn.qkv, lambda args, out: out[..., :C]),
            f"blocks.{i}.k": (blk.attn.qkv, lambda args, out: out[..., C:2 * C]),
            f"blocks.{i}.v": (blk.attn.qkv, lambda args, out: out[..., 2 * C:]),
            f"blocks.{i}.attn_out": (blk.attn.proj, "input"),
            f"blocks.{i}.ln2": (blk.norm2, "output"),
            f"blocks.{i}.fc1": (blk.mlp.fc1, "output"),
            f"blocks.{i}.gelu": (blk.mlp.fc2, "input"),
        })
    return sites


class IntegerViT:
    """An integer-only copy of a :class:`tokensift.sw.vit.VisionTransformer` (see the module docstring).

    Build it with :meth:`from_float`; run it with :meth:`logits` / :meth:`predict` on float images (the
    same normalised tensors the float model takes).
    """

    def __init__(self, *, patch: IntLinear, patch_size: int, in_chans: int, cls_pos: np.ndarray,
                 pos: np.ndarray, blocks: list[IntegerBlock], norm: LayerNormParams, head: IntLinear,
                 res: FixedFormat, res_scale: float, input_scale: float):
        self.patch = patch
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.cls_pos = cls_pos
        self.pos = pos
        self.blocks = blocks
        self.norm = norm
        self.head = head
        self.res = res
        self.res_scale = res_scale
        self.input_scale = input_scale
        self.counter = OverflowCounter()
        #: per image of the latest forward pass, the records of every stage that ran
        self.decisions: list[list[StageRecord]] = []

    # -- construction --------------------------------------------------------------------------------
    @classmethod
    def from_float(cls, model, calib_loader: Iterable, *, observer: str | Callable[[], Observer] = "minmax",
                   num_batches: int = 4, res_bits: int = 16, softmax: SoftmaxParams | None = None,
                   multiplier_bits: int = MULTIPLIER_BITS) -> IntegerViT:
        """Quantize ``model`` (a float :mod:`tokensift.sw` ViT) with ranges calibrated on ``calib_loader``.

        Args:
            model: a :class:`tokensift.sw.vit.VisionTransformer`, dense or with selectors that have an
                integer stage (:mod:`tokensift.quant.stages`).
            calib_loader: batches of images (or ``(images, labels)``) for the activation ranges.
            observer: ``"minmax"`` or ``"percentile"`` (see :mod:`tokensift.quant.calibrate`).
            num_batches: calibration batches.
            res_bits: width of the residual stream, 8..16.
            softmax: the integer softmax's formats (default :class:`~tokensift.quant.softmax.SoftmaxParams`).
            multiplier_bits: width of the requantization multipliers.
        """
        from tokensift.sw.vit import PatchEmbed, VisionTransformer

        if not isinstance(model, VisionTransformer):
            raise TypeError(f"model must be a tokensift.sw VisionTransformer, not {type(model).__name__}")
        if (not isinstance(model.patch_embed, PatchEmbed) or model.aux_head is not None
                or any(blk.residual_scale != 1.0 for blk in model.blocks)):
            raise ValueError("the integer model runs ViT/DeiT backbones (one-convolution patch embedding, plain "
                             "residuals, one head), not LV-ViT's stem, residual scale or auxiliary head")
        check_int("res_bits", res_bits, low=8, high=16, numpy=False, show="repr")
        softmax = SoftmaxParams() if softmax is None else softmax
        if not isinstance(softmax, SoftmaxParams):
            raise TypeError(f"softmax must be a SoftmaxParams, not {type(softmax).__name__}")
        for _, sel in model.stage_selectors():  # before calibration: an unsupported method fails fast
            from tokensift.quant.stages import stage_module
            stage_module(sel)
        scales = calibrate(model, calib_loader, calibration_sites(model), observer=observer,
                           num_batches=num_batches)
        res = FixedFormat(bits=res_bits)
        s_res = float(symmetric_scale(scales["res"] * 127, res_bits))  # same range, res_bits codes
        mb = multiplier_bits

        pe = model.patch_embed
        C = model.embed_dim
        patch = IntLinear.from_float(_np(pe.proj.weight).reshape(C, -1), _np(pe.proj.bias),
                                     in_scale=scales["input"], out_scale=s_res, out=res, multiplier_bits=mb)
        pos = _np(model.pos_embed)[0]
        cls_pos = quantize_tensor(_np(model.cls_token)[0, 0] + pos[0], s_res, res_bits)
        pos_q = quantize_tensor(pos[1:], s_res, res_bits)

        stages = build_stages(model, BuildContext(model=model, scales=scales, res=res, res_scale=s_res,
                                                  prob_frac=softmax.prob_frac, multiplier_bits=mb))
        # a stage may leave more tokens than it received (SPViT's package token where it pruned nothing)
        n_max = model.num_patches + 1 + sum(getattr(s, "max_added_tokens", 0) for s in stages.values())
        blocks = []
        for i, blk in enumerate(model.blocks):
            a = blk.attn
            H, hd = a.num_heads, a.head_dim
            s_q, s_k, s_v = scales[f"blocks.{i}.q"], scales[f"blocks.{i}.k"], scales[f"blocks.{i}.v"]
            s_a = scales[f"blocks.{i}.attn_out"]
            norm1 = LayerNormParams.from_float(_np(blk.norm1.weight), _np(blk.norm1.bias), in_scale=s_res,
                                               out_scale=scales[f"blocks.{i}.ln1"], eps=blk.norm1.eps,
                                               in_bits=res_bits, multiplier_bits=mb)
            qkv_out = np.concatenate([np.full(C, s_q), np.full(C, s_k), np.full(C, s_v)])
            qkv = IntLinear.from_float(_np(a.qkv.weight), None if a.qkv.bias is None else _np(a.qkv.bias),
                                       in_scale=scales[f"blocks.{i}.ln1"], out_scale=qkv_out, multiplier_bits=mb)
            sm, ss = scale_for(s_q * s_k / math.sqrt(hd), log2_frac=softmax.log2_frac)
            om, osh = quantize_multiplier(s_v * 2.0**-softmax.prob_frac / s_a, mb)
            attn = AttentionParams(n_max=n_max, head_dim=hd, lanes=math.gcd(hd, 16),
                                   softmax=softmax, scale_multiplier=sm, scale_shift=ss, out_multiplier=om,
                                   out_shift=osh)
            proj = IntLinear.from_float(_np(a.proj.weight), _np(a.proj.bias), in_scale=s_a, out_scale=s_res,
                                        out=res, multiplier_bits=mb)
            norm2 = LayerNormParams.from_float(_np(blk.norm2.weight), _np(blk.norm2.bias), in_scale=s_res,
                                               out_scale=scales[f"blocks.{i}.ln2"], eps=blk.norm2.eps,
                                               in_bits=res_bits, multiplier_bits=mb)
            fc1 = IntLinear.from_float(_np(blk.mlp.fc1.weight), _np(blk.mlp.fc1.bias),
                                       in_scale=scales[f"blocks.{i}.ln2"], out_scale=scales[f"blocks.{i}.fc1"],
                                       multiplier_bits=mb)
            gelu = GeluParams.from_scales(scales[f"blocks.{i}.fc1"], scales[f"blocks.{i}.gelu"], multiplier_bits=mb)
            fc2 = IntLinear.from_float(_np(blk.mlp.fc2.weight), _np(blk.mlp.fc2.bias),
                                       in_scale=scales[f"blocks.{i}.gelu"], out_scale=s_res, out=res,
                                       multiplier_bits=mb)
            blocks.append(IntegerBlock(norm1=norm1, qkv=qkv, attn=attn, proj=proj, norm2=norm2, fc1=fc1,
                                       gelu=gelu, fc2=fc2, num_heads=H, selector=stages.get(i)))
        norm = LayerNormParams.from_float(_np(model.norm.weight), _np(model.norm.bias), in_scale=s_res,
                                          out_scale=scales["final"], eps=model.norm.eps, in_bits=res_bits,
                                          multiplier_bits=mb)
        s_logits = float(symmetric_scale(scales["logits"] * 127, 16))
        head = IntLinear.from_float(_np(model.head.weight), _np(model.head.bias), in_scale=scales["final"],
                                    out_scale=s_logits, out=FixedFormat(bits=16), multiplier_bits=mb)
        return cls(patch=patch, patch_size=pe.patch_size, in_chans=pe.in_chans, cls_pos=cls_pos, pos=pos_q,
                   blocks=blocks, norm=norm, head=head, res=res, res_scale=s_res, input_scale=scales["input"])

    # -- run-time density ----------------------------------------------------------------------------
    def set_keep_ratio(self, keep_ratio: float) -> None:
        """Move every stage with a run-time density (SaiT's) to ``keep_ratio`` in (0, 1], without rebuilding.

        Only SaiT's stages have one; the other stages keep the settings they were built with. A model with
        no such stage raises ValueError.
        """
        stages = [b.selector for b in self.blocks if hasattr(b.selector, "set_keep_ratio")]
        if not stages:
            raise ValueError("the integer model has no stage with a run-time density")
        for stage in stages:
            stage.set_keep_ratio(keep_ratio)

    # -- integer forward -----------------------------------------------------------------------------
    def _residual_add(self, x: np.ndarray, y: np.ndarray, site: str) -> np.ndarray:
        return residual_add(x, y, self.res, counter=self.counter, site=site)

    def embed(self, images) -> np.ndarray:
        """Float images (B, C, H, W) -> int8 codes -> residual tokens (B, 1 + patches, dim)."""
        x = _np(images) if hasattr(images, "detach") else np.asarray(images, dtype=np.float64)
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"images must have shape (batch, {self.in_chans}, height, width), not {x.shape}")
        B, Cin, Hh, W = x.shape
        p = self.patch_size
        if Hh % p or W % p or (Hh // p) * (W // p) != self.pos.shape[0]:
            raise ValueError(f"images of {Hh}x{W} pixels do not give the model's {self.pos.shape[0]} patches")
        codes = quantize_tensor(x, self.input_scale, counter=self.counter, site="input")
        g_h, g_w = Hh // p, W // p
        patches = codes.reshape(B, Cin, g_h, p, g_w, p).transpose(0, 2, 4, 1, 3, 5).reshape(B, g_h * g_w, -1)
        tokens = self.patch(patches, counter=self.counter, site="patch_embed")
        tokens = self._residual_add(tokens, self.pos, "pos_embed")
        cls = np.broadcast_to(self.cls_pos, (B, 1, self.cls_pos.shape[0]))
        return np.concatenate([cls, tokens], axis=1)

    def attention(self, h: np.ndarray, blk: IntegerBlock, site: str) -> tuple[np.ndarray, np.ndarray]:
        """LayerNorm output (B, N, C) int8 -> (attention output (B, N, C) int8, class rows (B, heads, N))."""
        o, rows, _ = self._attention(h, blk, site)
        return o, rows

    def _attention(self, h: np.ndarray, blk: IntegerBlock, site: str):
        B, N, C = h.shape
        H = blk.num_heads
        hd = C // H
        qkv = blk.qkv(h, counter=self.counter, site=f"{site}.qkv").reshape(B, N, 3, H, hd)
        out = np.empty((B, N, H, hd), dtype=np.int64)
        cls_rows = np.empty((B, H, N), dtype=np.int64)
        for b in range(B):
            for head in range(H):
                o, row = attention_head(qkv[b, :, 0, head], qkv[b, :, 1, head], qkv[b, :, 2, head], blk.attn,
                                        counter=self.counter)
                out[b, :, head] = o
                cls_rows[b, head] = row
        return out.reshape(B, N, C), cls_rows, qkv

    def _stage_context(self) -> StageContext:
        return StageContext(counter=self.counter, res=self.res, prob_frac=self.blocks[0].attn.softmax.prob_frac)

    def block_step(self, frame: TokenFrame, i: int, *, trace: bool = False
                   ) -> tuple[TokenFrame, StageRecord | None, BlockTrace | None]:
        """One image through block ``i`` (its stage included): the frame leaving it, the stage's record
        (None when the block has no stage) and, with ``trace``, what the block computed."""
        blk = self.blocks[i]
        site = f"blocks.{i}"
        stage = blk.selector
        record = None
        if stage is not None and stage.site == "pre":
            frame, record = stage(frame, self._stage_context())
        entered = frame
        h = layernorm_int(frame.x[None], blk.norm1, counter=self.counter, site=f"{site}.norm1")
        o, cls_rows, qkv = self._attention(h, blk, site)
        x = self._residual_add(frame.x, blk.proj(o[0], counter=self.counter, site=f"{site}.proj"), f"{site}.res1")
        N, C = x.shape
        frame = frame.replace(x=x, cls_rows=cls_rows[0], head_out=o[0].reshape(N, blk.num_heads, -1))
        before = frame
        if stage is not None and stage.site == "mid":
            frame, record = stage(frame, self._stage_context())
        after = frame
        h = layernorm_int(frame.x, blk.norm2, counter=self.counter, site=f"{site}.norm2")
        f = blk.fc1(h, counter=self.counter, site=f"{site}.fc1")
        g = gelu_int(f, blk.gelu, counter=self.counter, site=f"{site}.gelu")
        x = self._residual_add(frame.x, blk.fc2(g, counter=self.counter, site=f"{site}.fc2"), f"{site}.res2")
        frame = frame.replace(x=x)
        if not trace:
            return frame, record, None
        t = BlockTrace(entered=entered, q=qkv[0, :, 0].transpose(1, 0, 2), k=qkv[0, :, 1].transpose(1, 0, 2),
                       v=qkv[0, :, 2].transpose(1, 0, 2), attn_out=o[0], cls_rows=cls_rows[0],
                       before_select=before if stage is not None and stage.site == "mid" else None,
                       after_select=after if stage is not None and stage.site == "mid" else None, record=record)
        return frame, record, t

    def initial_frames(self, images) -> list[TokenFrame]:
        """The embedded tokens of each image as a frame (nothing computed by attention yet)."""
        x = self.embed(images)
        return [TokenFrame(x=x[b], index=np.arange(x.shape[1], dtype=np.int64)) for b in range(x.shape[0])]

    def forward_tokens(self, images) -> list[np.ndarray]:
        """Residual tokens after the last block, one (N_b, dim) array per image (counts may differ)."""
        out, self.decisions = [], []
        for frame in self.initial_frames(images):
            records = []
            for i in range(len(self.blocks)):
                frame, record, _ = self.block_step(frame, i)
                if record is not None:
                    records.append(record)
            out.append(frame.x)
            self.decisions.append(records)
        return out

    def forward_features(self, images) -> np.ndarray:
        """Residual tokens after the last block (B, N', dim); ValueError when the images kept different
        numbers of tokens (an adaptive method: use :meth:`forward_tokens`)."""
        tokens = self.forward_tokens(images)
        if len({t.shape[0] for t in tokens}) > 1:
            raise ValueError("the images kept different numbers of tokens; use forward_tokens for one array "
                             "per image")
        return np.stack(tokens)

    def logits(self, images) -> np.ndarray:
        """Integer logits (B, classes), int16 codes at :attr:`logit_scale`."""
        cls = np.stack([t[0] for t in self.forward_tokens(images)])
        h = layernorm_int(cls, self.norm, counter=self.counter, site="norm")
        return self.head(h, counter=self.counter, site="head")

    @property
    def logit_scale(self) -> np.ndarray:
        return self.head.out_scale

    def predict(self, images) -> np.ndarray:
        """Class predictions (B,): the argmax of the integer logits (lowest class wins a tie)."""
        return np.argmax(self.logits(images), axis=-1)

    def evaluate(self, dataset, batch_size: int = 100) -> float:
        """Top-1 accuracy on a dataset of ``(image, label)`` pairs."""
        from torch.utils.data import DataLoader

        correct = total = 0
        for images, labels in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            correct += int((self.predict(images) == labels.numpy()).sum())
            total += len(labels)
        if total == 0:
            raise ValueError("the dataset is empty")
        return correct / total


# -- kernel errors on real activations ---------------------------------------------------------------------
def capture_activations(model, images) -> dict[str, np.ndarray]:
    """Float activations of ``model`` (eval mode) at every kernel's input, as float64 arrays.

    Keys: ``patches`` (flattened input patches), ``blocks.{i}.norm1.in`` / ``.qkv.in`` / ``.qkv.out`` /
    ``.proj.in`` / ``.norm2.in`` / ``.fc1.in`` / ``.fc1.out`` / ``.fc2.in``, ``norm.in`` and ``head.in``.
    """
    import torch

    acts: dict[str, np.ndarray] = {}
    handles = []

    def keep(name, which):
        def hook(mod, args, out):
            acts[name] = _np(args[0] if which == "in" else out)
        return hook

    points = [(model.norm, "norm.in", "in"), (model.head, "head.in", "in")]
    for i, blk in enumerate(model.blocks):
        points += [(blk.norm1, f"blocks.{i}.norm1.in", "in"), (blk.attn.qkv, f"blocks.{i}.qkv.in", "in"),
                   (blk.attn.qkv, f"blocks.{i}.qkv.out", "out"), (blk.attn.proj, f"blocks.{i}.proj.in", "in"),
                   (blk.norm2, f"blocks.{i}.norm2.in", "in"), (blk.mlp.fc1, f"blocks.{i}.fc1.in", "in"),
                   (blk.mlp.fc1, f"blocks.{i}.fc1.out", "out"), (blk.mlp.fc2, f"blocks.{i}.fc2.in", "in")]
    for module, name, which in points:
        handles.append(module.register_forward_hook(keep(name, which)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    x = _np(images)
    B, Cin, Hh, W = x.shape
    p = model.patch_embed.patch_size
    acts["patches"] = x.reshape(B, Cin, Hh // p, p, W // p, p).transpose(0, 2, 4, 1, 3, 5).reshape(
        B, (Hh // p) * (W // p), -1)
    return acts


def _summary(kernel: str, err_lsb: np.ndarray, bound_lsb: np.ndarray, inside: np.ndarray) -> dict:
    e, b = err_lsb[inside], bound_lsb[inside]
    return {"kernel": kernel, "n": int(e.size), "max_lsb": float(e.max(initial=0.0)),
            "mean_lsb": float(e.mean()) if e.size else 0.0, "bound_max_lsb": float(b.max(initial=0.0)),
            "within_bound": bool(np.all(e <= b * (1 + 1e-9) + 1e-9)), "saturated": int(np.count_nonzero(~inside))}


def _merge(rows: list[dict]) -> dict:
    n = sum(r["n"] for r in rows)
    return {"kernel": rows[0]["kernel"], "sites": len(rows), "n": n,
            "max_lsb": max(r["max_lsb"] for r in rows),
            "mean_lsb": sum(r["mean_lsb"] * r["n"] for r in rows) / max(n, 1),
            "bound_max_lsb": max(r["bound_max_lsb"] for r in rows),
            "within_bound": all(r["within_bound"] for r in rows), "saturated": sum(r["saturated"] for r in rows)}


def _linear_rows(layer: IntLinear, x, weight, bias, kernel: str) -> dict:
    x2 = np.asarray(x).reshape(-1, layer.in_features)
    y = x2 @ np.asarray(weight, dtype=np.float64).T + (0.0 if bias is None else np.asarray(bias))
    out = layer(layer.quantize_input(x2))
    ratio = y / layer.out_scale
    inside = (ratio > layer.out.min_int - 0.5) & (ratio < layer.out.max_int + 0.5)
    err = np.abs(out * layer.out_scale - y) / layer.out_scale
    bound = linear_error_bound(layer, x2, weight, bias) / layer.out_scale
    return _summary(kernel, err, bound, inside)


def kernel_errors(model, int_model: IntegerViT, images, *, attention_images: int = 8) -> list[dict]:
    """Each integer kernel of ``int_model`` against float on the real activations of ``model`` for ``images``.

    Every kernel gets the float model's own input at its site, quantized at the integer model's scale, and
    is compared with the float operation on those inputs (so errors do not accumulate from layer to layer).
    Errors are in output LSBs; ``bound_max_lsb`` is the largest derived bound (``*_error_bound`` of each
    kernel module, :func:`tokensift.quant.attention.attention_error` for attention) and ``within_bound``
    says whether every element met its own bound. Rows: ``linear -> int8`` (qkv, fc1), ``linear -> residual``
    (patch embedding, proj, fc2: int16 outputs, so their LSB is 2**-8 of an int8 one), ``linear -> logits``
    (head, int16), ``gelu``, ``layernorm``, ``attention`` (output) and ``softmax`` (probability LSBs).
    """
    acts = capture_activations(model, images)
    rows: dict[str, list[dict]] = {}

    def add(row):
        rows.setdefault(row["kernel"], []).append(row)

    pe = model.patch_embed
    C = model.embed_dim
    add(_linear_rows(int_model.patch, acts["patches"], _np(pe.proj.weight).reshape(C, -1), _np(pe.proj.bias),
                     "linear -> residual"))
    for i, (blk, ib) in enumerate(zip(model.blocks, int_model.blocks, strict=True)):
        for ln, params, name in ((blk.norm1, ib.norm1, "norm1"), (blk.norm2, ib.norm2, "norm2")):
            x = acts[f"blocks.{i}.{name}.in"].reshape(-1, C)
            q = quantize_tensor(x, params.in_scale, params.in_bits)
            ref = layernorm_float(params.in_scale * q, _np(ln.weight), _np(ln.bias), ln.eps)
            ratio = ref / params.out_scale
            inside = (ratio > params.out.min_int - 0.5) & (ratio < params.out.max_int + 0.5)
            err = np.abs(layernorm_int(q, params) * params.out_scale - ref) / params.out_scale
            bound = layernorm_error_bound(q, params, _np(ln.weight), _np(ln.bias), ln.eps) / params.out_scale
            add(_summary("layernorm", err, bound, inside))
        a = blk.attn
        for layer, lin, name in ((ib.qkv, a.qkv, "qkv"), (ib.proj, a.proj, "proj"), (ib.fc1, blk.mlp.fc1, "fc1"),
                                 (ib.fc2, blk.mlp.fc2, "fc2")):
            kind = "linear -> int8" if name in ("qkv", "fc1") else "linear -> residual"
            add(_linear_rows(layer, acts[f"blocks.{i}.{name}.in"], _np(lin.weight),
                             None if lin.bias is None else _np(lin.bias), kind))
        g = ib.gelu
        q = quantize_tensor(acts[f"blocks.{i}.fc1.out"], g.in_scale, g.in_bits)
        ref = gelu_exact(g.in_scale * q)
        ratio = ref / g.out_scale
        inside = (ratio > g.out.min_int - 0.5) & (ratio < g.out.max_int + 0.5)
        err = np.abs(gelu_int(q, g) * g.out_scale - ref) / g.out_scale
        add(_summary("gelu", err, gelu_error_bound(q, g) / g.out_scale, inside))
        qkv = acts[f"blocks.{i}.qkv.out"][:attention_images]
        B, N, _ = qkv.shape
        H, hd = ib.num_heads, C // ib.num_heads
        scales = ib.qkv.out_scale
        codes = [quantize_tensor(qkv[..., j * C:(j + 1) * C], float(scales[j * C])).reshape(B, N, H, hd)
                 for j in range(3)]
        for b in range(B):
            for h in range(H):
                e = attention_error(codes[0][b, :, h], codes[1][b, :, h], codes[2][b, :, h], ib.attn)
                add({"kernel": "attention", "n": N * hd, "max_lsb": e["out_max_lsb"], "mean_lsb": e["out_mean_lsb"],
                     "bound_max_lsb": e["out_bound_max"], "within_bound": e["within_bound"], "saturated": 0})
                lsb = 2.0 ** -ib.attn.softmax.prob_frac
                add({"kernel": "softmax", "n": N * N, "max_lsb": e["prob_max_abs"] / lsb,
                     "mean_lsb": e["prob_mean_abs"] / lsb, "bound_max_lsb": e["prob_bound_max"] / lsb,
                     "within_bound": e["within_bound"], "saturated": 0})
    nm = int_model.norm
    x = acts["norm.in"][:, 0]
    q = quantize_tensor(x, nm.in_scale, nm.in_bits)
    ref = layernorm_float(nm.in_scale * q, _np(model.norm.weight), _np(model.norm.bias), model.norm.eps)
    ratio = ref / nm.out_scale
    inside = (ratio > nm.out.min_int - 0.5) & (ratio < nm.out.max_int + 0.5)
    err = np.abs(layernorm_int(q, nm) * nm.out_scale - ref) / nm.out_scale
    add(_summary("layernorm", err, layernorm_error_bound(q, nm, _np(model.norm.weight), _np(model.norm.bias),
                                                         model.norm.eps) / nm.out_scale, inside))
    add(_linear_rows(int_model.head, acts["head.in"], _np(model.head.weight), _np(model.head.bias),
                     "linear -> logits"))
    return [_merge(r) for r in rows.values()]
