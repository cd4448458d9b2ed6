"""Why integer and float DynamicViT keep different tokens: each stage's flips taken apart (issue 15, item 3).

For the DynamicViT operating point of ``bench/integer_methods.py`` (same cached model, same calibration), on
``--images`` MNIST test images, per stage, over the images whose candidates entering the stage are the same in
both models (every image at the first stage):

* ``F``: the float model's keep decisions (top-k of the float keep-minus-drop logit on its own tokens);
* ``FI``: the float predictor on the integer model's stage inputs (the int16 residual tokens, dequantized), so
  ``F ~ FI`` is what the backbone's rounding before the stage costs and ``FI ~ I`` what the integer predictor
  costs;
* ``I``: the integer model's decisions;
* the integer - float logit error and the flipped tokens' distance to the top-k boundary, in logit codes;
* attribution: flips against ``FI`` with one step of the predictor in integers and the rest float (that
  step's input rounded to its int8 codes, its integer kernel, its output dequantized), and with only the
  linear layers' weights rounded to their int8 codes (everything else float).

    .venv/bin/python bench/dynamicvit_flips.py               # ~3 minutes on 2 busy CPU cores
    .venv/bin/python bench/dynamicvit_flips.py --images 200
"""

from __future__ import annotations

import argparse
import copy
import sys

import numpy as np
import torch
from integer_methods import CALIB_IMAGES, evenly, trained_model
from torch.utils.data import DataLoader, Subset

from tokensift.quant.gelu import gelu_int
from tokensift.quant.integer_model import IntegerViT
from tokensift.quant.layernorm import layernorm_int
from tokensift.quant.qparams import quantize_tensor
from tokensift.quant.stages.predictor import mean_rows
from tokensift.sw.data import load_mnist

KEEP = 0.75
#: the predictor's steps in order: ``mean`` is the global half's mean over the tokens
STEPS = ("norm", "fc", "gelu", "mean", "fc1", "gelu1", "fc2", "gelu2", "out")


def topk(scores: np.ndarray, k: int) -> np.ndarray:
    """The float selector's rule: the k largest, the lower index first on ties."""
    mask = np.zeros(len(scores), dtype=bool)
    mask[np.lexsort((np.arange(len(scores)), -scores))[:k]] = True
    return mask


def float_steps(predictor, h: np.ndarray, start: int, stop: int = len(STEPS)) -> np.ndarray:
    """The float predictor's steps ``[start, stop)`` on ``h`` (residual tokens when ``start`` is 0)."""
    ic, oc = predictor.in_conv, predictor.out_conv
    modules = dict(zip(("norm", "fc", "gelu", "fc1", "gelu1", "fc2", "gelu2"),
                       (ic[0], ic[1], ic[2], oc[0], oc[1], oc[2], oc[3]), strict=True))
    t = torch.from_numpy(np.asarray(h, dtype=np.float32))
    with torch.no_grad():
        for name in STEPS[start:stop]:
            if name == "mean":
                half = t.shape[-1] // 2
                t = torch.cat([t[:, :half], t[:, half:].mean(0, keepdim=True).expand(t.shape[0], -1)], 1)
            elif name == "out":
                o = oc[4](t)
                t = o[:, 0] - o[:, 1]
            else:
                t = modules[name](t)
    return t.double().numpy()


def integer_step(ip, name: str, codes: np.ndarray) -> np.ndarray:
    """One step of :class:`~tokensift.quant.stages.predictor.IntegerPredictor` (as ``logit_diff`` runs it)."""
    if name == "norm":
        return layernorm_int(codes, ip.norm)
    if name == "mean":
        half = codes.shape[-1] // 2
        g = mean_rows(codes[:, half:])
        return np.concatenate([codes[:, :half], np.broadcast_to(g, (codes.shape[0], g.shape[0]))], axis=1)
    if name.startswith("gelu"):
        return gelu_int(codes, getattr(ip, name))
    out = getattr(ip, name)(codes)
    return out[:, 0] if name == "out" else out


def step_scales(ip, res_scale: float) -> dict[str, tuple[float, float]]:
    """``step -> (input scale, output scale)``."""
    out = {"norm": ip.norm.out_scale, "fc": float(ip.fc.out_scale[0]), "gelu": ip.gelu.out_scale,
           "mean": ip.gelu.out_scale, "fc1": float(ip.fc1.out_scale[0]), "gelu1": ip.gelu1.out_scale,
           "fc2": float(ip.fc2.out_scale[0]), "gelu2": ip.gelu2.out_scale, "out": ip.out_scale}
    ins = [res_scale] + [out[s] for s in STEPS[:-1]]
    return {s: (i, out[s]) for s, i in zip(STEPS, ins, strict=True)}


def one_step_integer(predictor, ip, x: np.ndarray, step: int, scales, res_bits: int) -> np.ndarray:
    """The float predictor with step ``step`` in integers."""
    name = STEPS[step]
    s_in, s_out = scales[name]
    h = x if step == 0 else float_steps(predictor, x, 0, step)
    codes = quantize_tensor(h, s_in, res_bits if step == 0 else 8)
    y = integer_step(ip, name, codes) * s_out
    return y if step == len(STEPS) - 1 else float_steps(predictor, y, step + 1)


def int8_weights(predictor, ip):
    """A copy of the float predictor whose linear layers have the integer predictor's int8 weights (dequantized;
    the last layer as the folded keep-minus-drop row)."""
    q = copy.deepcopy(predictor)
    ic, oc = q.in_conv, q.out_conv
    with torch.no_grad():
        for layer, il in ((ic[1], ip.fc), (oc[0], ip.fc1), (oc[2], ip.fc2)):
            layer.weight.copy_(torch.from_numpy(il.weight * il.weight_scale[:, None]))
        last = oc[4]
        folded = torch.from_numpy(ip.out.weight[0] * ip.out.weight_scale[0])
        last.weight.copy_(torch.stack([folded, torch.zeros_like(folded)]))
        last.bias.copy_(torch.stack([last.bias[0] - last.bias[1], torch.zeros(())]))
    return q


def capture(model, int_model, images):
    """Per image and stage block: the float (candidate inputs, original index, keep) and the integer (input
    codes, index, keep)."""
    sels = dict(model.stage_selectors())
    seen: dict[int, np.ndarray] = {}
    hooks = [sel.predictor.register_forward_hook(lambda m, a, o, b=b: seen.__setitem__(b, a[0][0].double().numpy()))
             for b, sel in sels.items()]
    floats = []
    try:
        with torch.no_grad():
            for b in range(len(images)):
                seen.clear()
                state = model.forward_state(images[b:b + 1], path="gather")
                floats.append({d.block: (seen[d.block], d.index[0, d.num_protected:].numpy(),
                                         (d.keep[0, d.num_protected:] > 0.5).numpy()) for d in state.decisions})
    finally:
        for h in hooks:
            h.remove()
    ints = []
    for frame in int_model.initial_frames(images):
        rec = {}
        for i in range(len(int_model.blocks)):
            P, entering = frame.num_protected, frame
            frame, record, _ = int_model.block_step(frame, i)
            if record is not None:
                rec[i] = (entering.x[P:], entering.index[P:], record.keep[P:])
        ints.append(rec)
    return floats, ints


def analyse(model, int_model, images) -> list[dict]:
    floats, ints = capture(model, int_model, images)
    sels = dict(model.stage_selectors())
    rows = []
    for block, blk in enumerate(int_model.blocks):
        if blk.selector is None:
            continue
        pred, ip, k = sels[block].predictor, blk.selector.predictor, blk.selector.keep
        scales = step_scales(ip, int_model.res_scale)
        weights_only = int8_weights(pred, ip)
        flips = {"F~I": 0, "F~FI": 0, "FI~I": 0}
        weight_flips = 0
        by_step = dict.fromkeys(STEPS, 0)
        n = images_used = 0
        err, margin = [], []
        for f, i in zip(floats, ints, strict=True):
            fx, f_index, f_keep = f[block]
            ix, i_index, i_keep = i[block]
            if not np.array_equal(f_index, i_index):
                continue
            kk = min(k, len(f_index))
            x = ix * int_model.res_scale
            fi = float_steps(pred, x, 0)
            fi_keep = topk(fi, kk)
            d = ip.logit_diff(ix) * ip.out_scale
            flips["F~I"] += int((f_keep != i_keep).sum())
            flips["F~FI"] += int((f_keep != fi_keep).sum())
            flips["FI~I"] += int((fi_keep != i_keep).sum())
            weight_flips += int((topk(float_steps(weights_only, x, 0), kk) != fi_keep).sum())
            for step in range(len(STEPS)):
                y = one_step_integer(pred, ip, x, step, scales, int_model.res.bits)
                by_step[STEPS[step]] += int((topk(y, kk) != fi_keep).sum())
            srt = np.sort(fi)[::-1]
            if kk < len(srt):
                boundary = (srt[kk - 1] + srt[kk]) / 2
                margin += list(np.abs(fi[fi_keep != i_keep] - boundary) / ip.out_scale)
            err += list(np.abs(d - fi) / ip.out_scale)
            n += len(f_index)
            images_used += 1
        if n == 0:  # no image brought the same candidates to this stage in both models
            continue
        rows.append({"block": block, "stage": blk.selector.stage, "keep": k, "images": images_used, "decisions": n,
                     "agree": {key: 1 - v / n for key, v in flips.items()}, "flips_one_step": by_step,
                     "flips_int8_weights": weight_flips,
                     "error_codes_median": float(np.median(err)),
                     "flipped_margin_codes_median": float(np.median(margin)) if margin else None,
                     "logit_code": ip.out_scale})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000,
                        help="test images, evenly spread over the split (default: 1000)")
    parser.add_argument("--epochs", type=int, default=2, help="the cached model's fine-tuning epochs (default: 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    args = parser.parse_args(argv)
    train, test = load_mnist()
    if not 1 <= args.images <= len(test):
        parser.error(f"--images must be between 1 and {len(test)}, not {args.images}")
    torch.set_num_threads(args.threads)
    model = trained_model("dynamicvit", KEEP, epochs=args.epochs, quick=False, retrain=False)
    calib = [im for im, _ in DataLoader(Subset(train, evenly(CALIB_IMAGES, len(train))), batch_size=100)]
    int_model = IntegerViT.from_float(model, calib)
    images = torch.stack([test[i][0] for i in evenly(args.images, len(test))])
    rows = analyse(model, int_model, images)
    print("| stage (block) | images | decisions | F~I % | F~FI % | FI~I % | median \\|I - FI\\| (codes) | flipped "
          "tokens' median distance to the boundary (codes) | flips with one step in integers: "
          + " / ".join(STEPS) + " | flips with int8 weights only |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        a = r["agree"]
        margin = r["flipped_margin_codes_median"]
        print(f"| {r['stage']} ({r['block']}) | {r['images']} | {r['decisions']} | {100 * a['F~I']:.2f} | "
              f"{100 * a['F~FI']:.2f} | {100 * a['FI~I']:.2f} | {r['error_codes_median']:.1f} | "
              f"{'-' if margin is None else f'{margin:.1f}'} | "
              + " / ".join(str(v) for v in r["flips_one_step"].values()) + f" | {r['flips_int8_weights']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
