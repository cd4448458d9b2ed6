"""CLI glue of the whole-model accelerator (:mod:`tokensift.hw.accel`): ``tokensift generate accelerator`` and
``tokensift simulate model`` (also ``simulate accelerator``).

``generate``: the design for a compiled memory image's envelope (``--image``) or for every method of a
registered backbone (``--model``), with its shape (``--banks``, ``--lanes``, ``--gemm-cols``). ``simulate``: a
trained checkpoint calibrated, compiled for that shape and run image by image through the design's Verilator
model, each image's logits checked against the integer model's (the reference sequencer) and its cycles
against the cost model's.
"""

from __future__ import annotations

from tokensift.errors import InvalidArgumentError

HELP = ("whole-model accelerator: sequencer, token buffers, every op engine; AXI4 master for DRAM, AXI4-Lite "
        "registers (simulate: real images, bit-exact logits, cycles vs the cost model)")


#: the design shape when none is given (and the simulation sizes none for a device)
DEFAULT_SHAPE = {"banks": 2, "lanes": 8, "gemm_cols": 64, "axi_bytes": 8}


def _shape_arguments(parser, sized: str = ""):
    for option, what in (("--banks", "token-buffer banks = GEMM rows"), ("--lanes", "elements per buffer word"),
                         ("--gemm-cols", "GEMM columns"), ("--axi-bytes", "AXI data bytes")):
        default = DEFAULT_SHAPE[option[2:].replace("-", "_")]
        parser.add_argument(option, type=int, default=None, help=f"{what} (default: {default}{sized})")
    parser.add_argument("--pack-pairs", action="store_true", default=None,
                        help=f"two int8 GEMM products per DSP48 (xc7, xcup; even --gemm-cols): half the GEMM's "
                             f"DSPs, the same cycles (default: off{sized})")
    parser.add_argument("--attention-cores", type=int, default=None,
                        help=f"copies of the attention core, computing a layer's heads side by side "
                             f"(1..16; default: 1{sized})")


def shape_given(args) -> bool:
    return (any(getattr(args, k) is not None for k in DEFAULT_SHAPE) or args.pack_pairs is not None
            or args.attention_cores is not None)


def _fill_shape(args) -> None:
    for key, value in DEFAULT_SHAPE.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.pack_pairs is None:
        args.pack_pairs = False
    if args.attention_cores is None:
        args.attention_cores = 1


def shape_of(args) -> dict:
    """The design shape the options (or the sizing) set: :data:`DEFAULT_SHAPE`'s keys, ``pack_pairs`` and
    ``attention_cores``."""
    return {**{k: getattr(args, k) for k in DEFAULT_SHAPE}, "pack_pairs": bool(args.pack_pairs),
            "attention_cores": args.attention_cores}


def cores_option(shape: dict) -> str:
    """The ``--attention-cores`` option a shape needs on a command line (none for one copy)."""
    cores = shape.get("attention_cores", 1)
    return f" --attention-cores {cores}" if cores != 1 else ""


def add_generate_arguments(parser):
    from tokensift.sw.registry import list_models

    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", default=None, help="a compiled image.bin (tokensift compile): its envelope")
    src.add_argument("--model", default=None, choices=list_models(),
                     help="a registered backbone: an envelope covering every method of it")
    parser.add_argument("--device", default=None, help="target device, recorded in the manifest (default: none)")
    _shape_arguments(parser)


def check_shape(args) -> None:
    """The design shape's own rules, before any model is loaded (the envelope's are checked with it); a shape
    option not given takes its default."""
    _fill_shape(args)
    for option, value, high in (("--banks", args.banks, 64), ("--lanes", args.lanes, 64)):
        if not 1 <= value <= high or value & (value - 1):
            raise InvalidArgumentError(f"{option} must be a power of two between 1 and {high}, not {value}")
    if args.axi_bytes not in (4, 8, 16, 32):
        raise InvalidArgumentError(f"--axi-bytes must be 4, 8, 16 or 32, not {args.axi_bytes}")
    if not 1 <= args.gemm_cols <= 1024 or args.gemm_cols % args.axi_bytes:
        raise InvalidArgumentError(f"--gemm-cols must be a multiple of --axi-bytes ({args.axi_bytes}) between 1 "
                                   f"and 1024, not {args.gemm_cols}")
    if args.pack_pairs and args.gemm_cols % 2:
        raise InvalidArgumentError(f"--pack-pairs shares one DSP between two GEMM columns: --gemm-cols must be even, "
                                   f"not {args.gemm_cols}")
    if not 1 <= args.attention_cores <= 16:
        raise InvalidArgumentError(f"--attention-cores must be between 1 and 16, not {args.attention_cores}")


def _config(args, envelope):
    from tokensift.hw.accel.config import AccelConfig
    from tokensift.hw.axi.config import AxiDmaConfig

    try:
        return AccelConfig(envelope=envelope, banks=args.banks, lanes=args.lanes, gemm_cols=args.gemm_cols,
                           axi=AxiDmaConfig(data_bytes=args.axi_bytes), pack_pairs=bool(args.pack_pairs),
                           attention_cores=args.attention_cores)
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError(str(exc)) from None


def model_envelope(name: str):
    """An envelope covering every method of the registered backbone ``name`` (its prune locations as the
    stages, a package token per stage)."""
    from tokensift.quant.accel.image import Envelope
    from tokensift.quant.softmax import SoftmaxParams
    from tokensift.sw.registry import get_config

    c = get_config(name)
    patches = (c.img_size // c.patch_size) ** 2
    stages = len(c.prune_locs)
    return Envelope(max_tokens=1 + patches + stages, width=c.embed_dim, heads=c.num_heads,
                    mlp_hidden=int(c.embed_dim * c.mlp_ratio), depth=c.depth, classes=c.num_classes,
                    patch_size=c.patch_size, in_chans=c.in_chans, patches=patches, res_bits=16,
                    prob_frac=SoftmaxParams().prob_frac, stages=stages, head_dim=c.embed_dim // c.num_heads)


def build(args):
    from tokensift.hw.accel.top import Accelerator

    check_shape(args)
    if args.device is not None:
        from tokensift.devices import get_device

        get_device(args.device)
    if args.image is not None:
        from tokensift.checks import check_input_file
        from tokensift.quant.accel.image import decode_image

        path = check_input_file("--image", args.image)
        try:
            image = decode_image(path.read_bytes())
        except ValueError as exc:
            raise InvalidArgumentError(f"--image {args.image!r} is not a tokensift memory image: {exc}") from None
        envelope = image.envelope
        if image.gemm.cols != args.gemm_cols or image.gemm.stream_bytes != args.axi_bytes:
            raise InvalidArgumentError(f"--image was compiled for {image.gemm.cols} GEMM columns and "
                                       f"{image.gemm.stream_bytes}-byte beats; pass --gemm-cols "
                                       f"{image.gemm.cols} --axi-bytes {image.gemm.stream_bytes}")
    else:
        envelope = model_envelope(args.model)
    cfg = _config(args, envelope)
    top = Accelerator(config=cfg)
    return top, "tokensift_accel", {**cfg.as_dict(), "device": args.device,
                                    "opcodes": [op.name for op in top.opcodes], "registers": top.regmap.as_dict()}


def manifest_extra(args, top) -> dict:
    """The manifest's ``estimated_resources``: ECP5 and, with ``--device``, that device's family, its capacity and
    whether the design fits (:func:`tokensift.hw.accel.resources.estimate`)."""
    from tokensift.hw.accel.resources import estimate

    device = None
    if args.device is not None:
        from tokensift.devices import get_device

        device = get_device(args.device)
    return {"estimated_resources": estimate(top.config, device=device)}


def add_simulate_arguments(parser):
    from tokensift.sw.methods import list_methods
    from tokensift.sw.registry import list_models

    parser.add_argument("--checkpoint", required=True, help="trained model (.pth)")
    parser.add_argument("--model", default=None, choices=list_models(), help="(default: the checkpoint's)")
    parser.add_argument("--method", default=None, choices=list_methods(), help="(default: the checkpoint's)")
    parser.add_argument("--keep", type=float, default=None, help="keep ratio (default: the checkpoint's)")
    parser.add_argument("--images", type=int, default=4, help="test images to run (default: %(default)s)")
    parser.add_argument("--calib-images", type=int, default=200, help="calibration images (default: %(default)s)")
    parser.add_argument("--data", default=None, help="ImageNet-style folder (default: the bundled MNIST)")
    parser.add_argument("--registers", nargs="+", default=[], metavar="KEY=VALUE",
                        help="run-time registers as tokensift compile takes them (default: the model's)")
    parser.add_argument("--latency", type=int, default=10, help="DRAM latency in cycles (default: %(default)s)")
    parser.add_argument("--pause", type=float, default=0.0,
                        help="probability of AXI back-pressure per cycle (default: %(default)s; > 0: cycles "
                             "are no longer the model's)")
    parser.add_argument("--clock-mhz", type=float, default=None,
                        help="clock for the latency (default: with --device, the design's Fmax measured after "
                             "place and route where it was (ECP5), else the device's typical clock, assumed; "
                             "without, 100 MHz assumed)")
    parser.add_argument("--device", default=None,
                        help="size the design for this device (every shape's resources and the images' exact "
                             "cycles; the shape options then may not be given) (default: none)")
    parser.add_argument("--target-ms", type=float, default=None,
                        help="with --device: the latency the sized design should meet; the smallest shape "
                             "that meets it is chosen, else the fastest that fits (default: the fastest)")
    _shape_arguments(parser, ", or sized for --device")


def simulate(args) -> dict:
    from pathlib import Path

    import torch
    from torch.utils.data import DataLoader

    from tokensift.commands.blocks import check_count, check_stall
    from tokensift.commands.compile import (
        _check_settings_for,
        _datasets,
        _load_model,
        parse_register_settings,
    )
    from tokensift.hw.accel.project import configure
    from tokensift.quant.integer_model import IntegerViT
    from tokensift.sw.data import spread_indices, spread_subset

    if args.device is not None:
        from tokensift.devices import get_device

        if shape_given(args):
            raise InvalidArgumentError("--device sizes the design: give it or the shape options (--banks, "
                                       "--lanes, --gemm-cols, --axi-bytes, --pack-pairs), not both")
        device = get_device(args.device)
    if args.target_ms is not None and (args.device is None or not args.target_ms > 0):
        raise InvalidArgumentError(f"--target-ms needs --device and must be positive, not {args.target_ms}")
    check_shape(args)
    check_count("--images", args.images)
    check_count("--calib-images", args.calib_images)
    check_stall(args.pause, "--pause")
    if args.latency < 2:
        raise InvalidArgumentError(f"--latency must be at least 2 (the DRAM model's own), not {args.latency}")
    if args.clock_mhz is not None and not args.clock_mhz > 0:
        raise InvalidArgumentError(f"--clock-mhz must be positive, not {args.clock_mhz}")
    settings = parse_register_settings(args.registers)
    from tokensift.checks import check_input_file

    check_input_file("--checkpoint", args.checkpoint)
    args.checkpoint = Path(args.checkpoint)
    args.data = None if args.data is None else Path(args.data)
    model, name, method = _load_model(args)
    _check_settings_for(method, settings)
    train, test = _datasets(args, model)
    if args.images > len(test) or args.calib_images > len(train):
        raise InvalidArgumentError(f"the data has {len(train)} calibration and {len(test)} test images")
    batch = min(100, args.calib_images)
    loader = DataLoader(spread_subset(train, args.calib_images), batch_size=batch)
    int_model = IntegerViT.from_float(model, loader, num_batches=-(-args.calib_images // batch))
    from tokensift.hw.axi.config import AxiDmaConfig

    images = torch.stack([test[i][0] for i in spread_indices(len(test), args.images)])
    clock, source = (args.clock_mhz, "given") if args.clock_mhz else (100.0, "assumed: no device given")
    sizing = None
    if args.device is not None:
        from tokensift.coopt.accel_sizing import size_accelerator

        try:
            sizing = size_accelerator(int_model, device, images, clock_mhz=args.clock_mhz or device.clock_mhz,
                                      target_latency_ms=args.target_ms,
                                      registers=lambda p: p.registers(**settings), dram_latency=args.latency)
        except ValueError as exc:
            raise InvalidArgumentError(str(exc)) from None
        if sizing.chosen is None:
            raise InvalidArgumentError(sizing.message)
        for key, value in sizing.chosen.shape.items():
            setattr(args, key, value)
        if not args.clock_mhz:
            from tokensift.hw.cost.clock import accelerator_clock

            clk = accelerator_clock(device, sizing.chosen.shape, model=name)
            clock, source = clk.mhz, clk.note
    try:
        project = configure(int_model, banks=args.banks, lanes=args.lanes, gemm_cols=args.gemm_cols,
                            axi=AxiDmaConfig(data_bytes=args.axi_bytes), pack_pairs=bool(args.pack_pairs),
                            attention_cores=args.attention_cores)
        registers = project.registers(**settings)
    except ValueError as exc:
        raise InvalidArgumentError(str(exc)) from None
    m = project.measure(images, register_sets=[registers], latency=args.latency, pause=args.pause,
                        seed=args.seed, clock_mhz=clock, build_dir=args.build_dir, waves=args.waves or False)
    run = m["sets"][0]
    return {"bit_exact": m["bit_exact"], "images": len(run["cycles"]), "model": name, "method": method,
            "registers": registers.to_json(), "predictions": run["predictions"], "cycles": run["cycles"],
            "expected_cycles": run["expected_cycles"], "cycles_equal_model": run["cycles_equal_model"],
            "mac_utilization": run["mac_utilization"], "peak_macs_per_cycle": m["peak_macs_per_cycle"],
            "latency_ms": run["latency_ms"], "clock_mhz": clock, "clock_source": source, "faults": run["faults"],
            "dram_latency": args.latency, "build_dir": m["build_dir"],
            "shape": shape_of(args),
            "sizing": None if sizing is None else sizing.as_dict()}
