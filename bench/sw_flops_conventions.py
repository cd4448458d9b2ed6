"""The published GFLOPs figures next to tokensift's two conventions (the table in docs/sw.md).

For each DeiT and LV-ViT figure of the DynamicViT tables and README (LV-ViT-M as ``lvvit_s`` with DynamicViT's
lvvit_m sizes), the printed value, ``--convention paper`` (the published estimator), ``--convention macs``
(true multiply-accumulates) and ``macs`` with the norms fvcore counts. Models are built on the meta device
(shapes only), so this takes seconds.

    .venv/bin/python bench/sw_flops_conventions.py
    .venv/bin/python bench/sw_flops_conventions.py --markdown
"""

from __future__ import annotations

import argparse

import torch

from tokensift.sw import create_model
from tokensift.sw.flops import count_flops

LVVIT_M = {"embed_dim": 512, "depth": 20, "num_heads": 8, "prune_locs": (5, 10, 15)}
ROWS = [
    # (label, model, overrides, method, rho, printed)
    ("DeiT-T", "deit_tiny_patch16_224", {}, "none", None, 1.3),
    ("DeiT-S", "deit_small_patch16_224", {}, "none", None, 4.6),
    ("DeiT-B", "deit_base_patch16_224", {}, "none", None, 17.6),
    ("DynamicViT DeiT-S 0.9", "deit_small_patch16_224", {}, "dynamicvit", 0.9, 4.0),
    ("DynamicViT DeiT-S 0.8", "deit_small_patch16_224", {}, "dynamicvit", 0.8, 3.4),
    ("DynamicViT DeiT-S 0.7", "deit_small_patch16_224", {}, "dynamicvit", 0.7, 2.9),
    ("DynamicViT DeiT-256 0.7", "deit_small_patch16_224", {"embed_dim": 256, "num_heads": 4}, "dynamicvit",
     0.7, 1.3),
    ("LV-ViT-S", "lvvit_s", {}, "none", None, 6.6),
    ("DynamicViT LV-ViT-S 0.9", "lvvit_s", {}, "dynamicvit", 0.9, 5.8),
    ("DynamicViT LV-ViT-S 0.8", "lvvit_s", {}, "dynamicvit", 0.8, 5.1),
    ("DynamicViT LV-ViT-S 0.7", "lvvit_s", {}, "dynamicvit", 0.7, 4.6),
    ("DynamicViT LV-ViT-S 0.5", "lvvit_s", {}, "dynamicvit", 0.5, 3.7),
    ("LV-ViT-M", "lvvit_s", LVVIT_M, "none", None, 12.7),
    ("DynamicViT LV-ViT-M 0.9", "lvvit_s", LVVIT_M, "dynamicvit", 0.9, 11.1),
    ("DynamicViT LV-ViT-M 0.8", "lvvit_s", LVVIT_M, "dynamicvit", 0.8, 9.6),
    ("DynamicViT LV-ViT-M 0.7", "lvvit_s", LVVIT_M, "dynamicvit", 0.7, 8.5),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    header = ["model", "printed", "paper", "macs", "macs + norms", "paper matches"]
    lines = []
    for label, name, kw, method, rho, printed in ROWS:
        with torch.device("meta"):
            model = create_model(name, method=method, keep_ratio=rho, **kw)
        paper = count_flops(model, convention="paper").gflops
        macs = count_flops(model).gflops
        norms = count_flops(model, norms=True).gflops
        lines.append([label, f"{printed:g}", f"{paper:.3f}", f"{macs:.3f}", f"{norms:.3f}",
                      "yes" if round(paper, 1) == printed else "NO"])
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in lines:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
        for row in [header, *lines]:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return 0 if all(r[-1] == "yes" for r in lines) else 1


if __name__ == "__main__":
    raise SystemExit(main())
