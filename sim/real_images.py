"""Real frames from the integer model, through the cycle-accurate simulation of the generated blocks.

Two captures, one per part of a pruning block, each run through Verilator and checked along the chain
**hardware == quant reference == integer model**:

* :func:`capture_attention` / :func:`simulate_attention`: each head's int8 Q, K, V of block ``b`` (what the
  attention core sees) with the integer model's own attention outputs and class rows; hardware ==
  :func:`tokensift.quant.attention.attention_head` (0 LSB) == the integer model's values;
* :func:`capture_stage` / :func:`simulate_stage`: the selection step of the method's stage in block ``b``
  (every registered method: the score combiner when the method has one, then the token selector); hardware ==
  ``CombinerInput.keys`` / :func:`tokensift.quant.select.select_frame` == the integer model's keep decision
  and the tokens (kept ones and the package token) that left the stage.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

__all__ = ["AttentionCapture", "capture_attention", "attention_hw_params", "simulate_attention",
           "StageCapture", "capture_stage", "step_selector_params", "step_combiner_params",
           "check_stage_reference", "simulate_stage"]


@dataclass
class AttentionCapture:
    block: int
    q: np.ndarray            # (images, heads, N, head_dim)
    k: np.ndarray
    v: np.ndarray
    attn_out: np.ndarray     # (images, N, C) the integer model's attention output (before proj)
    cls_rows: np.ndarray     # (images, heads, N)


def capture_attention(iv, images, block: int) -> AttentionCapture:
    """What the attention core of ``block`` sees for ``images`` (a pruning stage before the block has
    already selected): each image runs through :meth:`IntegerViT.block_step`, the integer model's own
    forward pass. All images must reach the block with the same token count (one frame shape)."""
    if not 0 <= block < len(iv.blocks):
        raise ValueError(f"block must be between 0 and {len(iv.blocks) - 1}, not {block}")
    traces = []
    for frame in iv.initial_frames(images):
        for i in range(block):
            frame, _, _ = iv.block_step(frame, i)
        traces.append(iv.block_step(frame, block, trace=True)[2])
    counts = sorted({t.q.shape[1] for t in traces})
    if len(counts) > 1:
        raise ValueError(f"the images reach block {block} with different token counts {counts}; capture them "
                         "one at a time")
    stack = lambda name: np.stack([getattr(t, name) for t in traces])  # noqa: E731
    return AttentionCapture(block=block, q=stack("q"), k=stack("k"), v=stack("v"), attn_out=stack("attn_out"),
                            cls_rows=stack("cls_rows"))


def attention_hw_params(iv, block: int, *, lanes: int, heads_parallel: int):
    """The integer model's attention parameters of ``block`` on the chosen hardware (lanes, cores)."""
    return replace(iv.blocks[block].attn, lanes=lanes, heads_parallel=heads_parallel)


def _check_attention_reference(cap: AttentionCapture, params) -> int:
    """Mismatching values between attention_head (on ``params``) and the integer model's own outputs."""
    from tokensift.quant.attention import attention_head

    bad = 0
    B, H, N, hd = cap.q.shape
    for b in range(B):
        for h in range(H):
            out, row = attention_head(cap.q[b, h], cap.k[b, h], cap.v[b, h], params)
            bad += int(np.count_nonzero(out != cap.attn_out[b, :, h * hd:(h + 1) * hd]))
            bad += int(np.count_nonzero(row != cap.cls_rows[b, h]))
    return bad


@contextlib.contextmanager
def _quick_compile():
    """These runs simulate a few thousand cycles once, so the model's slow-path and global C++ code is
    compiled without optimisation (the runner's ``OPT_FAST=-O2`` comes later and wins for the per-cycle
    code)."""
    old = os.environ.get("MAKEFLAGS")
    flags = "OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0"
    os.environ["MAKEFLAGS"] = f"{old} {flags}" if old else flags
    try:
        yield
    finally:
        if old is None:
            del os.environ["MAKEFLAGS"]
        else:
            os.environ["MAKEFLAGS"] = old


def simulate_attention(iv, cap: AttentionCapture, *, lanes: int, heads_parallel: int, work_dir: Path,
                       build_root: Path | None = None) -> dict:
    """Run the captured frames through the attention core in Verilator; return bit-exactness and cycles."""
    from tokensift.sim.attention_harness import TOPLEVEL, harness_for, verilator_options
    from tokensift.sim.runner import run_cocotb

    work_dir = Path(work_dir).resolve()  # the testbench runs in the build directory
    work_dir.mkdir(parents=True, exist_ok=True)
    if build_root is not None:
        os.environ.setdefault("TOKENSIFT_BUILD", str(build_root))
    out: dict = {"block": cap.block, "images": int(cap.q.shape[0])}
    ap = attention_hw_params(iv, cap.block, lanes=lanes, heads_parallel=heads_parallel)
    out["attention_reference_mismatches"] = _check_attention_reference(cap, ap)
    frames = work_dir / f"attention_block{cap.block}.npz"
    np.savez(frames, q=cap.q, k=cap.k, v=cap.v)
    build_args, sources = verilator_options()
    with _quick_compile():
        res = run_cocotb(harness_for(ap, frames=cap.q.shape[1]), toplevel=TOPLEVEL,
                         test_module="tokensift.sim.tb_real_images", testcase="attention_frames",
                         params={"params": ap.to_dict(), "frames_file": str(frames)}, build_args=build_args,
                         extra_sources=sources)
    runs = res.report.get("runs", [])
    out["attention"] = {
        "params": ap.to_dict(), "frames": sum(r["frames"] for r in runs),
        "mismatches": sum(r["o_mismatches"] + r["s_mismatches"] + r["flag_mismatches"] for r in runs),
        "cycles": [r["cycles"] for r in runs], "expected_cycles": [r["expected_cycles"] for r in runs],
        "build_dir": str(res.build_dir), "wall_s": res.wall_s,
    }
    out["attention"]["bit_exact"] = bool(runs) and out["attention"]["mismatches"] == 0 \
        and out["attention_reference_mismatches"] == 0
    return out


# -- every method's selection step: (score combiner ->) token selector on real frames ------------------------
@dataclass
class StageCapture:
    """One block's selection stage on real images: per image the hardware step (what the score combiner
    and the selector get), the integer model's record of the decision, and the frames entering and leaving
    the stage."""

    block: int
    method: str
    steps: list
    records: list
    entered: list
    left: list


def capture_stage(iv, images, block: int) -> StageCapture:
    """Run ``images`` through the integer model up to the stage of ``block`` and capture its step."""
    if not 0 <= block < len(iv.blocks):
        raise ValueError(f"block must be between 0 and {len(iv.blocks) - 1}, not {block}")
    stage = iv.blocks[block].selector
    if stage is None:
        raise ValueError(f"block {block} has no selection stage")
    cap = StageCapture(block=block, method=type(stage).__module__.rsplit(".", 1)[-1], steps=[], records=[],
                       entered=[], left=[])
    for frame in iv.initial_frames(images):
        for i in range(block):
            frame, _, _ = iv.block_step(frame, i)
        if stage.site == "pre":
            step = stage.hardware_step(frame, iv._stage_context())
            entered = frame
            _, record, trace = iv.block_step(frame, block, trace=True)
            left = trace.entered
        else:
            _, record, trace = iv.block_step(frame, block, trace=True)
            entered, left = trace.before_select, trace.after_select
            step = stage.hardware_step(entered, iv._stage_context())
        cap.steps.append(step)
        cap.records.append(record)
        cap.entered.append(entered)
        cap.left.append(left)
    return cap


def step_selector_params(iv, cap: StageCapture, *, lanes: int):
    """The selector that serves ``cap``'s steps (the integer model's residual tokens, the steps' formats)."""
    from tokensift.quant.select import SelectorParams

    s = cap.steps[0]
    return SelectorParams(n_max=iv.blocks[0].attn.n_max, dim=iv.pos.shape[1], score_bits=s.score_bits,
                          feature_bits=iv.res.bits, lanes=lanes, package=s.package is not None,
                          weight_bits=s.weight_bits, weight_frac=s.weight_frac, mass=s.mode == "mass",
                          mass_frac=s.mass_frac)


def _selector_frame(step) -> tuple:
    """(scores, features, package weights) of the tokens the selector sees."""
    sel = step.selector_tokens
    w = None if step.package_weights is None else step.package_weights[sel]
    return step.scores[sel], step.features[sel], w


def _select(sp, step):
    """select_frame on the step's selector frame, and the keep mask over the whole frame."""
    from tokensift.quant.select import Mode, select_frame

    mode = {"topk": Mode.TOPK, "threshold": Mode.THRESHOLD, "mass": Mode.MASS}[step.mode]
    scores, features, weights = _selector_frame(step)
    ref = select_frame(sp, scores, features, mode=mode, k=step.k if mode is Mode.TOPK else None,
                       threshold=step.threshold if mode is Mode.THRESHOLD else None,
                       mass=step.mass if mode is Mode.MASS else None, package=step.package is not None,
                       package_rule=step.package or "mean", weights=weights)
    mask = np.ones(len(step.scores), dtype=bool)
    mask[step.selector_tokens] = ref.mask
    return ref, mask


def check_stage_reference(cap: StageCapture, sp) -> int:
    """Mismatches between the hardware references (``head_weighted_scores`` / ``order_key`` for the
    combiner, ``select_frame`` for the selector) run on the captured steps and what the integer model did:
    its scores, its keep decision and the tokens (kept ones and the package token) that left the stage."""
    from tokensift.quant.stages import keep_tokens

    bad = 0
    for step, record, entered, left in zip(cap.steps, cap.records, cap.entered, cap.left, strict=True):
        if step.combiner is not None:
            bad += int(np.count_nonzero(step.combiner.keys() != step.scores))
        ref, mask = _select(sp, step)
        bad += int(np.count_nonzero(mask != record.keep))
        pkg = None
        if step.package is not None:  # the selector outputs none when nothing was pruned: a zero token then
            pkg = (ref.package if ref.package is not None else np.zeros(entered.x.shape[1], np.int64))[None]
        want = keep_tokens(entered, mask, **({"protected": pkg} if step.package_at == "protected"
                                                  else {"appended": pkg}))
        if want.x.shape != left.x.shape or np.count_nonzero(want.x != left.x) or np.count_nonzero(
                want.index != left.index) or want.num_protected != left.num_protected:
            bad += 1
    return bad


def step_combiner_params(iv, cap: StageCapture, *, lanes: int) -> dict:
    """The score combiner that serves ``cap``'s steps, as the ``simulate score_combiner`` parameter dict
    (``lanes`` capped at a frame's tokens: the combiner takes at most one frame row per beat)."""
    c = cap.steps[0].combiner
    n_max = iv.blocks[0].attn.n_max
    signed = c.score.signed
    top = max(int(np.abs(s.combiner.values).max(initial=0)) for s in cap.steps)
    attn_bits = max(c.value_frac + 1, top.bit_length()) + int(signed)
    wtop = max(int(s.combiner.weights.max(initial=0)) for s in cap.steps)
    return {"n_max": n_max, "heads": c.values.shape[0], "lanes": min(lanes, n_max),
            "attn_bits": attn_bits, "attn_frac": c.value_frac, "importance_bits": max(1, wtop.bit_length()),
            "importance_frac": c.weight_frac, "score_bits": c.score.bits, "score_frac": c.score.frac,
            "rounding": c.score.rounding.value, "signed": signed,
            "per_token_weights": any(s.combiner.per_token for s in cap.steps)}


def simulate_stage(iv, cap: StageCapture, *, lanes: int, work_dir: Path, build_root: Path | None = None) -> dict:
    """The captured selection steps through Verilator: the score combiner (when the method has one) and the
    selector, each bit for bit against its reference, which :func:`check_stage_reference` ties to the
    integer model. Returns bit-exactness and the measured cycles next to the cycle formulas."""
    from dataclasses import asdict

    from tokensift.hw.selector.core import Selector
    from tokensift.sim.runner import run_cocotb

    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    if build_root is not None:
        os.environ.setdefault("TOKENSIFT_BUILD", str(build_root))
    sp = step_selector_params(iv, cap, lanes=lanes)
    out = {"block": cap.block, "method": cap.method, "images": len(cap.steps),
           "reference_mismatches": check_stage_reference(cap, sp)}
    arrays = {}
    for i, s in enumerate(cap.steps):
        scores, features, weights = _selector_frame(s)
        arrays.update({f"scores_{i}": scores, f"features_{i}": features})
        if weights is not None:
            arrays[f"weights_{i}"] = weights
        if s.combiner is not None:
            arrays.update({f"values_{i}": s.combiner.values, f"head_weights_{i}": s.combiner.weights,
                           f"keys_{i}": s.scores})
    frames = work_dir / f"stage_block{cap.block}.npz"
    np.savez(frames, **arrays)
    s0 = cap.steps[0]
    step_cmd = {"mode": s0.mode, "k": [s.k for s in cap.steps], "threshold": s0.threshold, "mass": s0.mass,
                "package": s0.package}
    if s0.combiner is not None:
        from tokensift.commands.block_score_combiner import _component

        cp = step_combiner_params(iv, cap, lanes=lanes)
        with _quick_compile():
            res = run_cocotb(_component(cp), toplevel="tokensift_score_combiner",
                             test_module="tokensift.sim.tb_real_images", testcase="combiner_steps",
                             params={**cp, "frames_file": str(frames), "images": len(cap.steps)})
        r = res.report
        out["combiner"] = {"params": cp, "mismatches": r.get("mismatches"), "cycles": r.get("cycles"),
                           "expected_cycles": r.get("expected_cycles"), "wall_s": res.wall_s,
                           "bit_exact": r.get("mismatches") == 0}
    with _quick_compile():
        res = run_cocotb(Selector(**asdict(sp)), toplevel="tokensift_selector",
                         test_module="tokensift.sim.tb_real_images", testcase="selector_steps",
                         params={"params": asdict(sp), "frames_file": str(frames), "images": len(cap.steps),
                                 "step": step_cmd})
    r = res.report
    out["selector"] = {"params": asdict(sp), "kept": r.get("kept"), "cycles": r.get("cycles"),
                       "expected_cycles": r.get("expected_cycles"), "wall_s": res.wall_s,
                       "bit_exact": r.get("error") is None}
    out["bit_exact"] = (out["reference_mismatches"] == 0 and out["selector"]["bit_exact"]
                        and out.get("combiner", {}).get("bit_exact", True))
    return out
