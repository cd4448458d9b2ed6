"""Real frames from the integer model, through the cycle-accurate simulation of the generated blocks.

:func:`capture_block` runs :class:`tokensift.quant.integer_model.IntegerViT` up to block ``b`` on a few
images and keeps what the accelerator's blocks see there: each head's int8 Q, K, V (the attention core's
input), the integer model's own attention outputs and class rows, and -- for an EViT stage in that block --
the token scores, the residual tokens and the tokens the integer model keeps. :func:`simulate_block` writes
them to an ``.npz``, runs the attention core and the token selector in Verilator
(:mod:`tokensift.sim.tb_real_images`) and checks the chain **hardware == quant reference == integer model**:

* hardware == :func:`tokensift.quant.attention.attention_head` / :func:`tokensift.quant.select.select_frame`
  (the testbenches, 0 LSB),
* reference == the integer model's values (here: its attention outputs and class rows per head; its kept
  tokens and its fused token ``fit(round_shift(package * mass, score_frac))``).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

__all__ = ["BlockCapture", "capture_block", "attention_hw_params", "selector_hw_params", "simulate_block"]


@dataclass
class BlockCapture:
    block: int
    q: np.ndarray            # (images, heads, N, head_dim)
    k: np.ndarray
    v: np.ndarray
    attn_out: np.ndarray     # (images, N, C) the integer model's attention output (before proj)
    cls_rows: np.ndarray     # (images, heads, N)
    scores: np.ndarray | None = None     # (images, N) EViT token scores
    features: np.ndarray | None = None   # (images, N, C) residual tokens entering the selector
    keep: int | None = None              # patch tokens kept
    selected: np.ndarray | None = None   # (images, kept + 1 + fused, C) what the integer model keeps


def capture_block(iv, images, block: int) -> BlockCapture:
    """What the attention core and the selector of ``block`` see for ``images`` (see the module docstring):
    each image runs through :meth:`IntegerViT.block_step`, the integer model's own forward pass."""
    from tokensift.quant.stages.evit import EViTStage

    if not 0 <= block < len(iv.blocks):
        raise ValueError(f"block must be between 0 and {len(iv.blocks) - 1}, not {block}")
    traces = []
    for frame in iv.initial_frames(images):
        for i in range(block):
            frame, _, _ = iv.block_step(frame, i)
        traces.append(iv.block_step(frame, block, trace=True)[2])
    stack = lambda name: np.stack([getattr(t, name) for t in traces])  # noqa: E731
    cap = BlockCapture(block=block, q=stack("q"), k=stack("k"), v=stack("v"), attn_out=stack("attn_out"),
                       cls_rows=stack("cls_rows"))
    stage = iv.blocks[block].selector
    if stage is not None:
        if not isinstance(stage, EViTStage):
            raise ValueError(f"the real-image capture runs EViT stages, not {type(stage).__name__}")
        cap.scores = np.stack([t.record.scores for t in traces])
        cap.features = np.stack([t.before_select.x for t in traces])
        cap.keep = stage.num_keep(cap.features.shape[1] - 1)
        cap.selected = np.stack([t.after_select.x for t in traces])
    return cap


def attention_hw_params(iv, block: int, *, lanes: int, heads_parallel: int):
    """The integer model's attention parameters of ``block`` on the chosen hardware (lanes, cores)."""
    return replace(iv.blocks[block].attn, lanes=lanes, heads_parallel=heads_parallel)


def selector_hw_params(iv, *, lanes: int):
    """A selector for the integer model's residual tokens (``res.bits``-wide features) and its scores."""
    from tokensift.quant.select import SCORE_FORMAT, SelectorParams

    dim = iv.pos.shape[1]
    return SelectorParams(n_max=iv.pos.shape[0] + 1, dim=dim, score_bits=SCORE_FORMAT.bits,
                          feature_bits=iv.res.bits, lanes=lanes, package=True)


def _check_attention_reference(cap: BlockCapture, params) -> int:
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


def _check_selector_reference(cap: BlockCapture, params, iv) -> int:
    """Mismatches between select_frame and what the integer model kept (tokens and fused token)."""
    from tokensift.quant.select import SCORE_FORMAT, Mode, package_token, select_frame

    bad = 0
    for b in range(len(cap.scores)):
        ref = select_frame(params, cap.scores[b], cap.features[b], mode=Mode.TOPK, k=cap.keep, package=True)
        rows = cap.selected[b]
        kept = rows[:ref.n_kept]
        bad += int(np.count_nonzero(kept != ref.tokens)) + abs(len(rows) - ref.n_kept - 1) * rows.shape[1]
        if ref.package is not None:  # EViT's fused token is the sum package rule of the same pruned set
            fused = package_token(cap.features[b], cap.scores[b], ~ref.mask, feature_bits=iv.res.bits,
                                  mode="sum", score_frac=SCORE_FORMAT.frac)
            bad += int(np.count_nonzero(fused != rows[ref.n_kept]))
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


def simulate_block(iv, cap: BlockCapture, *, lanes: int, heads_parallel: int, selector_lanes: int,
                   work_dir: Path, build_root: Path | None = None) -> dict:
    """Run the captured frames through Verilator; return bit-exactness and cycles of both blocks."""
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
    if cap.scores is not None:
        from dataclasses import asdict

        from tokensift.hw.selector.core import Selector

        sp = selector_hw_params(iv, lanes=selector_lanes)
        out["selector_reference_mismatches"] = _check_selector_reference(cap, sp, iv)
        frames = work_dir / f"selector_block{cap.block}.npz"
        np.savez(frames, scores=cap.scores, features=cap.features, k=np.full(len(cap.scores), cap.keep))
        with _quick_compile():
            res = run_cocotb(Selector(**asdict(sp)), toplevel="tokensift_selector",
                             test_module="tokensift.sim.tb_real_images", testcase="selector_frames",
                             params={"params": asdict(sp), "frames_file": str(frames)})
        r = res.report
        out["selector"] = {"params": asdict(sp), "frames": len(cap.scores), "kept": r.get("kept"),
                           "cycles": r.get("cycles"), "expected_cycles": r.get("expected_cycles"),
                           "build_dir": str(res.build_dir), "wall_s": res.wall_s,
                           "bit_exact": r.get("error") is None and out["selector_reference_mismatches"] == 0}
    return out
