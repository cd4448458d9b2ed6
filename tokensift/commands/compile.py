"""`tokensift compile`: a trained checkpoint -> the accelerator's memory image, registers and manifest.

    tokensift compile --checkpoint runs/dvit/dynamicvit_keep0.7.pth --out build/dvit
    tokensift compile --checkpoint runs/sait/sait_keep0.7.pth --out build/sait --registers density=0.5 --json

The checkpoint's model, method and keep ratio come from its metadata (``tokensift train`` writes them;
``--model``/``--method``/``--keep`` name them for a plain timm/DeiT state dict). The integer model is
calibrated on ``--calib-images`` training images spread over the split of the bundled MNIST (or ``--data``), compiled
(:func:`tokensift.quant.accel.compile_model`), and checked: ``--verify`` test images run through the
reference sequencer must give ``IntegerViT``'s logits bit for bit. Writes ``DIR/image.bin``,
``DIR/registers.json`` and ``DIR/manifest.json``.

The weights region holds every linear layer as the GEMM engine's weight stream, so the image is built for one
engine shape: ``--gemm-cols`` (output channels per column tile: the co-optimizer's ``linear_lanes /
linear_rows``) and ``--stream-bytes`` (bytes per beat: the AXI data width), both in the image header and the
manifest.

``--registers KEY=VALUE ...`` changes the run-time registers written to ``registers.json`` (the image stays
the same): ``method`` (dense or the model's), ``density`` (SaiT's keep ratio in (0, 1]), ``keep``,
``threshold`` and ``rule`` (comma-separated, one per selection stage).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokensift.errors import InvalidArgumentError

__all__ = ["add_arguments", "run", "parse_register_settings", "compile_checkpoint", "gemm_shape"]

_KEYS = ("method", "density", "keep", "threshold", "rule")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tokensift.quant.accel.stream import DEFAULT_COLS, DEFAULT_STREAM_BYTES
    from tokensift.sw.methods import list_methods
    from tokensift.sw.registry import list_models

    parser.add_argument("--checkpoint", type=Path, required=True, help="trained model (.pth)")
    parser.add_argument("--out", type=Path, required=True, help="folder for image.bin, registers.json, manifest.json")
    parser.add_argument("--model", default=None, choices=list_models(),
                        help="registered model (default: the checkpoint's metadata)")
    parser.add_argument("--method", default=None, choices=list_methods(),
                        help="token-pruning method (default: the checkpoint's metadata, else none)")
    parser.add_argument("--keep", type=float, default=None,
                        help="keep ratio rho (default: the checkpoint's metadata, else the method's)")
    parser.add_argument("--calib-images", type=int, default=200, metavar="N",
                        help="training images that calibrate the integer model (default: %(default)s)")
    parser.add_argument("--verify", type=int, default=4, metavar="N",
                        help="test images run through the compiled image and compared bit for bit with the "
                             "integer model; 0 skips (default: %(default)s)")
    parser.add_argument("--data", type=Path, default=None,
                        help="ImageNet-style folder for calibration and verification (default: the bundled MNIST)")
    parser.add_argument("--registers", nargs="+", default=[], metavar="KEY=VALUE",
                        help=f"run-time register settings ({', '.join(_KEYS)}; lists comma-separated; default: "
                             "the trained model's)")
    parser.add_argument("--gemm-cols", type=int, default=DEFAULT_COLS, metavar="N",
                        help="output channels per column tile of the GEMM engine the weight streams are laid out "
                             "for, a multiple of --stream-bytes up to 1024 (default: %(default)s, the demo's 2 x 64 "
                             "engine)")
    parser.add_argument("--stream-bytes", type=int, default=DEFAULT_STREAM_BYTES, metavar="N",
                        help="bytes per weight-stream beat, the AXI data width: a power of two up to 128 "
                             "(default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def parse_register_settings(items: list[str]) -> dict:
    """``KEY=VALUE`` strings -> ``Registers`` fields, each value checked (InvalidArgumentError if not)."""
    from tokensift.quant.accel.registers import METHODS, RULES
    from tokensift.quant.stages.sait import mass_code

    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in _KEYS:
            raise InvalidArgumentError(f"--registers takes KEY=VALUE with KEY one of {', '.join(_KEYS)}, not {item!r}")
        if key in out:
            raise InvalidArgumentError(f"--registers sets {key} twice")
        if key == "method":
            if value not in METHODS:
                raise InvalidArgumentError(f"--registers method must be one of {', '.join(METHODS)}, not {value!r}")
            out[key] = value
        elif key == "density":
            try:
                ratio = float(value)
            except ValueError:
                ratio = float("nan")
            if not 0 < ratio <= 1:
                raise InvalidArgumentError(f"--registers density must be a keep ratio in (0, 1], not {value!r}")
            out[key] = mass_code(ratio)
        elif key == "rule":
            rules = tuple(value.split(","))
            bad = [r for r in rules if r not in RULES]
            if bad:
                raise InvalidArgumentError(f"--registers rule takes {', '.join(RULES)} per stage, not {bad[0]!r}")
            out[key] = rules
        else:
            try:
                numbers = tuple(int(v) for v in value.split(","))
            except ValueError:
                raise InvalidArgumentError(f"--registers {key} takes comma-separated integers, not {value!r}") from None
            bad = [v for v in numbers if not 0 <= v < 1 << 16]
            if bad:
                raise InvalidArgumentError(f"--registers {key} values must be between 0 and 65535 (16-bit registers), "
                                           f"not {bad[0]}")
            out[key] = numbers
    return out


def gemm_shape(cols: int, stream_bytes: int):
    """``--gemm-cols`` and ``--stream-bytes`` as a GemmShape (InvalidArgumentError naming the option if not)."""
    from tokensift.quant.accel.stream import MAX_COLS, MAX_STREAM_BYTES, GemmShape

    if not 1 <= stream_bytes <= MAX_STREAM_BYTES or stream_bytes & (stream_bytes - 1):
        raise InvalidArgumentError(f"--stream-bytes must be a power of two from 1 to {MAX_STREAM_BYTES} (the AXI data "
                                   f"width in bytes), not {stream_bytes}")
    if not 1 <= cols <= MAX_COLS or cols % stream_bytes:
        raise InvalidArgumentError(f"--gemm-cols must be a multiple of --stream-bytes ({stream_bytes}) from "
                                   f"{stream_bytes} to {MAX_COLS} (a weight row is whole beats), not {cols}")
    return GemmShape(cols=cols, stream_bytes=stream_bytes)


def _load_model(args):
    from tokensift.checks import check_input_file
    from tokensift.sw.checkpoint import load_checkpoint, read_checkpoint
    from tokensift.sw.registry import create_model

    check_input_file("--checkpoint", args.checkpoint)
    obj = read_checkpoint(args.checkpoint)
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    name = args.model or meta.get("model")
    if name is None:
        raise InvalidArgumentError(f"checkpoint {str(args.checkpoint)!r} does not name its model; pass --model")
    method = args.method or meta.get("method", "none")
    keep = args.keep if args.keep is not None else (meta.get("keep_ratio") if args.method is None else None)
    try:
        model = create_model(name, method=method, keep_ratio=None if method == "none" else keep)
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError(str(exc)) from None
    load_checkpoint(model, obj)
    return model.eval(), name, method


def _check_settings_for(method: str, settings: dict) -> None:
    """What the float model already decides about ``--registers`` (before calibration): the method register
    (dense or the model's) and the rules its stages can run; the stage count is checked once compiled."""
    from tokensift.quant.accel.registers import METHOD_RULES

    accel = "dense" if method == "none" else method
    if accel not in METHOD_RULES:
        raise InvalidArgumentError(f"the accelerator has no program for method {method!r}")
    chosen = settings.get("method", accel)
    if chosen not in ("dense", accel):
        raise InvalidArgumentError(f"--registers: the image runs {accel} or dense, not {chosen}")
    bad = [r for r in settings.get("rule", ()) if r not in METHOD_RULES[chosen]]
    if bad:
        raise InvalidArgumentError(f"--registers: rule {bad[0]!r} is not a rule of {chosen} (its stages run "
                                   f"{' or '.join(METHOD_RULES[chosen])})")


def _datasets(args, model):
    from tokensift.sw.data import load_image_folder, load_mnist

    cfg = model.config
    if args.data is not None:
        return load_image_folder(args.data, img_size=cfg.img_size, in_chans=cfg.in_chans)
    if (cfg.img_size, cfg.in_chans, cfg.num_classes) != (28, 1, 10):
        raise InvalidArgumentError(f"the bundled MNIST calibrates 28x28, 1-channel, 10-class models, not "
                                   f"{cfg.name}; pass --data")
    return load_mnist()


def compile_checkpoint(args) -> dict:
    """Everything ``run`` does but the printing: the summary dict (see the module docstring)."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from tokensift.checks import check_output_dir
    from tokensift.quant.accel import compile_model, run_images
    from tokensift.quant.integer_model import IntegerViT
    from tokensift.sw.data import spread_subset

    for option, value, low in (("--calib-images", args.calib_images, 1), ("--verify", args.verify, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidArgumentError(f"{option} must be at least {low}, not {value}")
    gemm = gemm_shape(args.gemm_cols, args.stream_bytes)
    settings = parse_register_settings(args.registers)
    out = check_output_dir("--out", args.out)
    model, name, method = _load_model(args)
    _check_settings_for(method, settings)
    train, test = _datasets(args, model)
    if args.calib_images > len(train) or args.verify > len(test):
        raise InvalidArgumentError(f"the data has {len(train)} calibration and {len(test)} test images; "
                                   f"--calib-images {args.calib_images} and --verify {args.verify} ask for more")

    batch = min(100, args.calib_images)
    loader = DataLoader(spread_subset(train, args.calib_images), batch_size=batch)
    int_model = IntegerViT.from_float(model, loader, num_batches=-(-args.calib_images // batch))
    compiled = compile_model(int_model, gemm_cols=gemm.cols, stream_bytes=gemm.stream_bytes)
    try:
        registers = compiled.registers.replace(**settings)
    except ValueError as exc:
        raise InvalidArgumentError(f"--registers: {exc}") from None
    if registers.method not in ("dense", compiled.registers.method):
        raise InvalidArgumentError(f"--registers: the image runs {compiled.registers.method} or dense, not "
                                   f"{registers.method}")

    verified = None
    if args.verify:
        from tokensift.quant.accel.compiler import reference_model

        images = torch.stack([test[i][0] for i in range(args.verify)])
        got, results = run_images(compiled.image, registers, images)
        try:
            want = reference_model(int_model, registers).logits(images)
        except ValueError:  # a register setting the integer model has no knob for: nothing to compare with
            want = None
        verified = {"images": args.verify, "bit_exact": None if want is None else bool(np.array_equal(got, want)),
                    "predictions": got.argmax(axis=1).tolist(),
                    "tokens_at_head": [r.trace[-1]["tokens"] for r in results]}
        if want is not None and not verified["bit_exact"]:
            raise RuntimeError("the compiled image's logits differ from the integer model's (a compiler bug)")

    (out / "image.bin").write_bytes(compiled.image)
    (out / "registers.json").write_text(json.dumps(registers.to_json(), indent=2) + "\n")
    manifest = dict(compiled.manifest, registers=registers.to_json(), checkpoint=str(args.checkpoint), model=name,
                    calib_images=args.calib_images)
    if verified is not None:
        manifest["verified"] = verified
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return {"out": str(out), "model": name, "method": compiled.manifest["method"], "bytes": manifest["bytes"],
            "ops": manifest["ops"], "stages": manifest["envelope"]["stages"], "checksum": manifest["checksum"],
            "regions": manifest["regions"], "envelope": manifest["envelope"], "gemm": manifest["gemm"],
            "weight_streams": manifest["weight_streams"], "registers": registers.to_json(),
            "verified": verified}


def run(args: argparse.Namespace) -> int:
    summary = compile_checkpoint(args)
    if args.json:
        from tokensift.cli import emit_json

        emit_json(summary)
        return 0
    from rich.console import Console
    from rich.table import Table

    env = summary["envelope"]
    table = Table(title=f"{summary['model']} / {summary['method']}: {summary['bytes']:,} bytes, {summary['ops']} ops")
    table.add_column("region")
    table.add_column("offset", justify="right")
    table.add_column("bytes", justify="right")
    for name, r in summary["regions"].items():
        table.add_row(name, f"{r['offset']:#x}", f"{r['size']:,}")
    console = Console(soft_wrap=True)  # paths and register lists stay on one line, copyable
    console.print(table)
    regs = summary["registers"]
    console.print(f"envelope: {env['max_tokens']} tokens x {env['width']}, {env['heads']} heads, MLP {env['mlp_hidden']}, "
                  f"{env['depth']} blocks, {env['classes']} classes; {summary['stages']} selection stages")
    g = summary["gemm"]
    console.print(f"weights: {summary['weight_streams']['count']} GEMM weight streams, "
                  f"{summary['weight_streams']['bytes']:,} bytes, for {g['cols']}-column tiles in {g['stream_bytes']}-byte "
                  f"beats ({g['record_bytes']}-byte channel records)")
    console.print(f"registers: method {regs['method']}, keep {regs['keep']}, threshold {regs['threshold']}, "
                  f"rule {regs['rule']}, density {regs['density']}")
    v = summary["verified"]
    if v is not None:
        state = {True: "bit-exact", False: "MISMATCH", None: "not compared (no integer-model setting matches)"}
        console.print(f"verified on {v['images']} test images: {state[v['bit_exact']]}; predictions {v['predictions']}")
    console.print(f"wrote {summary['out']}/image.bin, registers.json, manifest.json (checksum {summary['checksum']})")
    return 0
