"""Size the whole-model accelerator (:mod:`tokensift.hw.accel`) for a device: the design the co-optimizer
chooses is then the one generated and simulated, and the cycles it reports are the ones Verilator counts.

Every shape of an :class:`AccelSpace` (token banks = GEMM rows, GEMM columns, lanes, AXI word) is costed by
the accelerator's own models: resources by :func:`tokensift.hw.accel.resources.resources` (DSP and block RAM
exact against Yosys), cycles by :func:`tokensift.hw.accel.cycles.image_cycles` on the model compiled for that
shape and the images' own token counts (exact against Verilator at a fixed DRAM latency). A shape that does
not fit the device is not simulated in the model at all. The choice: among the shapes that fit and meet the
latency target, the one using the smallest share of its scarcest resource (ties: fewer cycles); when none
meets the target, the fastest that fits.

>>> space = AccelSpace(banks=(2, 4), gemm_cols=(32,), lanes=(8, 16), axi_bytes=(16,))
>>> [tuple(s.values())[:3] for s in space.shapes(head_dim=16, family="ecp5")]
[(2, 8, 32), (2, 16, 32), (4, 8, 32), (4, 16, 32)]
>>> len(space.shapes(head_dim=16, family="xcup"))  # each also with two GEMM products per DSP48
8
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tokensift.checks import check_int

__all__ = ["AccelSpace", "AccelPoint", "SizingResult", "project_for", "size_accelerator", "PLANNABLE_METHODS",
           "PlanPoint", "PlanResult", "plan_accelerator", "random_int_model", "useful_cores"]


def _pow2(name: str, values) -> tuple[int, ...]:
    values = tuple(values)
    if not values:
        raise ValueError(f"{name} needs at least one value")
    for v in values:
        check_int(name, v, low=1, numpy=False)
        if v & (v - 1):
            raise ValueError(f"every {name} value must be a power of two, not {v}")
    return tuple(sorted(set(values)))


@dataclass(frozen=True)
class AccelSpace:
    """The accelerator shapes to try: the product of the axes, less the combinations the design rules out
    (lanes above the model's head dimension, GEMM columns that are not a whole number of AXI words).
    ``pack_pairs``: the GEMM engine with and without two products per DSP48; the packed shapes are tried on
    the DSP48 families only (on ECP5 they save no DSP). ``attention_cores``: copies of the attention core
    (:class:`tokensift.hw.accel.config.AccelConfig`); ``None`` (the default) tries, for each number of rounds
    a layer's heads can take, the fewest copies that make it (:func:`useful_cores`: 1, 2, 4 for 4 heads;
    1, 2, 3, 6 for 6), at most the model's heads."""

    banks: tuple[int, ...] = (1, 2, 4, 8, 16)
    gemm_cols: tuple[int, ...] = (16, 32, 64, 128, 256)
    lanes: tuple[int, ...] = (4, 8, 16, 32, 64)
    axi_bytes: tuple[int, ...] = (8, 16)
    pack_pairs: tuple[bool, ...] = (False, True)
    attention_cores: tuple[int, ...] | None = None

    def __post_init__(self):
        for name in ("banks", "gemm_cols", "lanes", "axi_bytes"):
            object.__setattr__(self, name, _pow2(name, getattr(self, name)))
        bad = [a for a in self.axi_bytes if a not in (4, 8, 16, 32)]
        if bad:
            raise ValueError(f"axi_bytes must be among 4, 8, 16 and 32, not {bad[0]}")
        packs = tuple(self.pack_pairs)
        if not packs or not all(isinstance(v, bool) for v in packs):
            raise ValueError(f"pack_pairs must be a non-empty tuple of bools, not {self.pack_pairs!r}")
        object.__setattr__(self, "pack_pairs", tuple(sorted(set(packs))))
        if self.attention_cores is not None:
            cores = tuple(self.attention_cores)
            if not cores:
                raise ValueError("attention_cores needs at least one value")
            for v in cores:
                check_int("attention_cores", v, low=1, high=16, numpy=False)
            object.__setattr__(self, "attention_cores", tuple(sorted(set(cores))))

    def shapes(self, *, head_dim: int, heads: int = 1, family: str | None = None) -> list[dict]:
        """The shapes as :func:`tokensift.hw.accel.project.configure` keywords (``axi`` as its bytes); for
        ``family`` ``"ecp5"`` the unpacked ones only; attention core copies up to ``heads``."""
        packs = [p for p in self.pack_pairs if not (p and family == "ecp5")] or [False]
        cores = [c for c in (self.attention_cores or useful_cores(heads)) if c <= max(1, heads)] or [1]
        out = []
        for banks in self.banks:
            for lanes in self.lanes:
                if lanes > head_dim or head_dim % lanes:
                    continue
                for cols in self.gemm_cols:
                    for axi in self.axi_bytes:
                        if cols % axi == 0:
                            for pack in packs:
                                if not (pack and cols % 2):
                                    out.extend({"banks": banks, "lanes": lanes, "gemm_cols": cols, "axi_bytes": axi,
                                                "pack_pairs": pack, "attention_cores": c} for c in cores)
        return out


def _cores_text(shape: dict) -> str:
    cores = shape.get("attention_cores", 1)
    return f"{cores} attention cores x " if cores != 1 else ""


def useful_cores(heads: int) -> tuple[int, ...]:
    """Attention core copies worth generating for ``heads`` heads a layer: per number of rounds
    ``ceil(heads / copies)``, the fewest copies that make it (more copies in as many rounds only cost)."""
    check_int("heads", heads, low=1, numpy=False)
    return tuple(c for c in range(1, heads + 1) if c == 1 or -(-heads // c) < -(-heads // (c - 1)))


@dataclass
class AccelPoint:
    """One shape: its resources and utilization on the device and, when it fits, its cycles per image."""

    shape: dict
    resources: dict
    utilization: dict
    fits: bool
    cycles: list[int] = field(default_factory=list)
    latency_ms: float | None = None
    meets_target: bool = False

    @property
    def scarcest(self) -> float:
        return max(self.utilization.values())

    def as_dict(self) -> dict:
        return {"shape": self.shape, "resources": self.resources, "utilization": self.utilization,
                "fits": self.fits, "cycles": self.cycles, "latency_ms": self.latency_ms,
                "meets_target": self.meets_target}


@dataclass
class SizingResult:
    chosen: AccelPoint | None
    points: list[AccelPoint]
    target_latency_ms: float | None
    clock_mhz: float
    dram_latency: int
    seconds: float
    message: str
    #: the images' runs in the reference sequencer (None when no shape fits): the same on every shape
    traces: list | None = None

    def as_dict(self) -> dict:
        return {"chosen": None if self.chosen is None else self.chosen.as_dict(),
                "shapes": len(self.points), "fit": sum(p.fits for p in self.points),
                "meet_target": sum(p.meets_target for p in self.points),
                "target_latency_ms": self.target_latency_ms, "clock_mhz": self.clock_mhz,
                "dram_latency": self.dram_latency, "seconds": round(self.seconds, 2), "message": self.message}


def project_for(int_model, shape: dict):
    """``int_model`` compiled for one :meth:`AccelSpace.shapes` shape (a :class:`~tokensift.hw.accel.project.Project`)."""
    from tokensift.hw.accel.project import configure
    from tokensift.hw.axi.config import AxiDmaConfig

    return configure(int_model, banks=shape["banks"], lanes=shape["lanes"], gemm_cols=shape["gemm_cols"],
                     axi=AxiDmaConfig(data_bytes=shape["axi_bytes"]), pack_pairs=shape.get("pack_pairs", False),
                     attention_cores=shape.get("attention_cores", 1))


def size_accelerator(int_model, device, images, *, clock_mhz: float, target_latency_ms: float | None = None,
                     space: AccelSpace | None = None, registers=None, dram_latency: int = 10,
                     cache: dict | None = None) -> SizingResult:
    """Cost every shape of ``space`` for ``int_model`` (a calibrated
    :class:`~tokensift.quant.integer_model.IntegerViT`) on ``device`` at ``clock_mhz``, with the cycles of
    ``images`` (float, B x C x H x W) under ``registers(project)`` (default: the compiled model's own), and
    choose one (the module docstring says how). ``cache``: a dict kept between calls on the same model and
    device (each shape's compiled project and resources; :func:`plan_accelerator` sizes once per keep ratio)."""
    from tokensift.devices import Device, get_device

    device = device if isinstance(device, Device) else get_device(device)
    space = space or AccelSpace()
    if not clock_mhz > 0:
        raise ValueError(f"clock_mhz must be positive, not {clock_mhz}")
    if target_latency_ms is not None and not target_latency_ms > 0:
        raise ValueError(f"target_latency_ms must be positive, not {target_latency_ms}")
    if len(images) == 0:
        raise ValueError("size_accelerator needs at least one image")
    head_dim = int_model.blocks[0].attn.head_dim
    cap = device.capacity()
    t0 = time.perf_counter()
    points = []
    traces = None  # the images' runs in the reference sequencer: the same on every shape
    cache = {} if cache is None else cache
    cycles_of = {}  # packing changes no cycle: a packed shape takes its unpacked twin's
    for shape in space.shapes(head_dim=head_dim, heads=int_model.blocks[0].num_heads, family=device.family):
        project, used = _compiled(cache, int_model, device.family, shape)
        if project is None:  # a shape this model's envelope rules out
            continue
        util = {k: (used[k] / cap[k] if cap[k] else (float("inf") if used[k] else 0.0)) for k in cap}
        point = AccelPoint(shape=shape, resources=used, utilization={k: round(v, 4) for k, v in util.items()},
                           fits=all(v <= 1.0 for v in util.values()))
        if point.fits:
            regs = registers(project) if registers else project.registers()
            if traces is None:
                traces = project.traces(images, registers=regs)
            twin = tuple(v for k, v in shape.items() if k != "pack_pairs")
            if twin not in cycles_of:
                cycles_of[twin] = project.estimate(traces=traces, registers=regs, latency=dram_latency)["cycles"]
            point.cycles = list(cycles_of[twin])
            point.latency_ms = max(point.cycles) / (clock_mhz * 1e3)
            point.meets_target = target_latency_ms is None or point.latency_ms <= target_latency_ms
        points.append(point)
    fitting = [p for p in points if p.fits]
    meeting = [p for p in fitting if p.meets_target]
    if not fitting:
        chosen, message = None, f"no accelerator shape of the space fits {device.name}"
    elif meeting and target_latency_ms is not None:
        chosen = min(meeting, key=lambda p: (p.scarcest, max(p.cycles)))
        message = (f"{len(meeting)} of {len(fitting)} fitting shapes meet {target_latency_ms:.4g} ms: the one "
                   f"using the least of its scarcest resource")
    else:
        chosen = min(fitting, key=lambda p: (max(p.cycles), p.scarcest))
        message = (f"the fastest of {len(fitting)} fitting shapes" if target_latency_ms is None else
                   f"none of {len(fitting)} fitting shapes meets {target_latency_ms:.4g} ms: the fastest")
    return SizingResult(chosen=chosen, points=points, target_latency_ms=target_latency_ms, clock_mhz=clock_mhz,
                        dram_latency=dram_latency, seconds=time.perf_counter() - t0, message=message, traces=traces)


def _compiled(cache: dict, int_model, family: str, shape: dict):
    """``(project, resources on family)`` of ``int_model`` compiled for ``shape``, from ``cache`` when it was
    compiled before; ``(None, None)`` for a shape the model's envelope rules out."""
    from tokensift.hw.accel.resources import resources as accel_resources

    key = (id(int_model), family, tuple(shape.values()))
    if key not in cache:
        import dataclasses

        from tokensift.hw.accel.config import AccelConfig
        from tokensift.hw.axi.config import AxiDmaConfig

        # the memory image depends on the GEMM columns and the weight beat only: one compile serves every
        # number of banks, lanes and attention cores and both packings
        image_key = ("image", id(int_model), shape["gemm_cols"], shape["axi_bytes"])
        try:
            base = cache.get(image_key)
            if base is None:
                from tokensift.quant.accel.image import decode_image

                base = cache[image_key] = project_for(int_model, shape)
                base._decoded = decode_image(base.image)
            config = AccelConfig(envelope=base.config.envelope, banks=shape["banks"], lanes=shape["lanes"],
                                 gemm_cols=shape["gemm_cols"], axi=AxiDmaConfig(data_bytes=shape["axi_bytes"]),
                                 pack_pairs=shape.get("pack_pairs", False),
                                 attention_cores=shape.get("attention_cores", 1))
            project = dataclasses.replace(base, config=config)
            project._decoded = base._decoded
        except ValueError:  # the configuration says which rule
            cache[key] = (None, None)
        else:
            cache[key] = (project, accel_resources(project.config, family).as_dict(family))
    return cache[key]


#: methods whose token counts the accelerator's registers fix (top-k at a count per stage), so one run of the
#: reference sequencer per keep ratio gives every image's cycles on every shape
PLANNABLE_METHODS = ("dynamicvit",)


@dataclass
class PlanPoint:
    """One keep ratio: its per-stage keep counts and the best shape for it (:func:`size_accelerator`'s rule)."""

    keep_ratio: float
    keep: tuple[int, ...]
    macs: int
    sizing: SizingResult

    def as_dict(self) -> dict:
        c = self.sizing.chosen
        return {"keep_ratio": self.keep_ratio, "keep": list(self.keep), "macs": self.macs,
                "shape": None if c is None else c.shape, "cycles": None if c is None else max(c.cycles),
                "latency_ms": None if c is None else c.latency_ms,
                "meets_target": bool(c is not None and c.meets_target)}


@dataclass
class PlanResult:
    """The keep ratio and shape chosen by the accelerator's own models (``chosen``: None when no keep ratio
    of the grid meets the target on a shape that fits), every keep ratio's point, the dense run's cycles on
    the chosen shape and the sentence that explains the choice."""

    chosen: PlanPoint | None
    points: list[PlanPoint]
    dense_cycles: int | None
    target_latency_ms: float
    clock_mhz: float
    seconds: float
    message: str
    #: where the target came from: "given", or the fastest dense design and the speedup
    target_note: str = "given"

    def as_dict(self) -> dict:
        return {"chosen": None if self.chosen is None else {**self.chosen.as_dict(),
                                                            "sizing": self.chosen.sizing.as_dict()},
                "points": [p.as_dict() for p in self.points], "dense_cycles": self.dense_cycles,
                "target_latency_ms": self.target_latency_ms, "target_note": self.target_note,
                "clock_mhz": self.clock_mhz, "seconds": round(self.seconds, 2), "message": self.message}


def random_int_model(model: str, method: str, keep_ratio: float | None, *, seed: int = 0, images: int = 1):
    """``(int_model, images, float_model)``: the registered backbone ``model`` with ``method`` at ``keep_ratio``,
    random weights (seeded), calibrated on two random images, and ``images`` more random images (B, C, H, W)
    to run: what cycles under top-k need (the registers fix every op's token count, not the weights)."""
    import torch

    from tokensift.quant.integer_model import IntegerViT
    from tokensift.sw import create_model
    from tokensift.sw.registry import get_config

    cfg = get_config(model)
    torch.manual_seed(seed)
    float_model = create_model(model, method=method, keep_ratio=keep_ratio).eval()
    gen = torch.Generator().manual_seed(seed)
    shape = (cfg.in_chans, cfg.img_size, cfg.img_size)
    run = torch.randn(images, *shape, generator=gen)
    int_model = IntegerViT.from_float(float_model, [(torch.randn(2, *shape, generator=gen), None)], num_batches=1)
    return int_model, run, float_model


def plan_accelerator(model: str, device, *, target_latency_ms: float | None = None, speedup: float | None = None,
                     method: str = "dynamicvit", clock_mhz: float | None = None, keep_grid=None,
                     space: AccelSpace | None = None, dram_latency: int = 10, seed: int = 0) -> PlanResult:
    """The keep ratio and accelerator shape for ``model`` (a registered backbone) with ``method`` on ``device``,
    both chosen by the generated design's own models: for each keep ratio of ``keep_grid`` (default: the
    co-optimizer's, :func:`tokensift.coopt.space.default_keep_space`), the per-stage keep counts it schedules, one run of the reference sequencer under
    those registers, and every shape of ``space`` costed on it (:func:`size_accelerator`). The choice: the
    largest keep ratio (the most tokens kept, the accuracy the method can hold) with a fitting shape that
    meets the target, on the shape that uses the least of its scarcest resource.

    The weights are random (seeded) and calibrated on random images: under top-k the keep registers fix every
    op's token count, so the cycles are those of any trained model of the same backbone and method at those
    counts (:data:`PLANNABLE_METHODS`; thresholds and densities decide per image and need real images:
    :func:`size_accelerator`). ``clock_mhz`` defaults to the device's typical clock.

    The target is ``target_latency_ms``, or with ``speedup`` instead the fastest dense design of the space that
    fits the device (the same model under ``METHOD=dense``, so no predictor runs) divided by ``speedup``."""
    from tokensift.devices import Device, get_device
    from tokensift.hw.accel.project import useful_macs
    from tokensift.sw.methods.dynamicvit import keep_count

    if method not in PLANNABLE_METHODS:
        raise ValueError(f"planning the keep ratio on the accelerator's own models needs a method whose "
                         f"registers fix the token counts ({', '.join(PLANNABLE_METHODS)}), not {method!r}")
    if (target_latency_ms is None) == (speedup is None):
        raise ValueError("plan_accelerator needs exactly one of target_latency_ms and speedup")
    if target_latency_ms is not None and not target_latency_ms > 0:
        raise ValueError(f"target_latency_ms must be positive, not {target_latency_ms}")
    if speedup is not None and not speedup > 0:
        raise ValueError(f"speedup must be positive, not {speedup}")
    device = device if isinstance(device, Device) else get_device(device)
    clock_mhz = float(clock_mhz or device.clock_mhz)
    t0 = time.perf_counter()
    # built at a ratio below the grid's so that every stage exists (a stage that keeps all is no stage)
    int_model, image, float_model = random_int_model(model, method, min([0.5, *(keep_grid or ())]), seed=seed)
    selectors = [sel for _, sel in float_model.stage_selectors()]
    if keep_grid is None:
        from tokensift.coopt.space import default_keep_space

        keep_grid = default_keep_space(method, len(selectors)).values
    grid = tuple(sorted(set(keep_grid)))
    if not grid or not all(0 < r <= 1 for r in grid):
        raise ValueError(f"every keep ratio must be in (0, 1], not {grid}")
    head_dim = int_model.blocks[0].attn.head_dim
    points, cache = [], {}
    target_note = "given"
    if target_latency_ms is None:
        dense_sizing = size_accelerator(int_model, device, image, clock_mhz=clock_mhz, space=space,
                                        registers=lambda p: p.registers(method="dense"), dram_latency=dram_latency,
                                        cache=cache)
        if dense_sizing.chosen is None:
            raise ValueError(dense_sizing.message)
        fastest = dense_sizing.chosen.latency_ms
        target_latency_ms = fastest / speedup
        target_note = f"fastest dense design that fits ({fastest:.4g} ms) / {speedup:g}"
    for rho in grid:
        keep = tuple(keep_count(sel.num_patches, rho, sel.stage) for sel in selectors)
        sizing = size_accelerator(int_model, device, image, clock_mhz=clock_mhz, target_latency_ms=target_latency_ms,
                                  space=space, registers=lambda p, k=keep: p.registers(keep=k),
                                  dram_latency=dram_latency, cache=cache)
        macs = 0 if sizing.traces is None else useful_macs([e for _, e in sizing.traces[0]], head_dim)
        points.append(PlanPoint(keep_ratio=rho, keep=keep, macs=macs, sizing=sizing))
    meeting = [p for p in points if p.sizing.chosen is not None and p.sizing.chosen.meets_target]
    dense = None
    if meeting:
        chosen = max(meeting, key=lambda p: p.keep_ratio)
        c = chosen.sizing.chosen
        message = (f"keep {chosen.keep_ratio:g} (the largest of {len(meeting)} of {len(points)} keep ratios that "
                   f"meet {target_latency_ms:.4g} ms): {max(c.cycles):,} cycles, {c.latency_ms:.4g} ms at "
                   f"{clock_mhz:g} MHz on {c.shape['banks']} x {c.shape['gemm_cols']} GEMM"
                   f"{' (two products per DSP48)' if c.shape.get('pack_pairs') else ''}, "
                   f"{_cores_text(c.shape)}{c.shape['lanes']} lanes, {8 * c.shape['axi_bytes']}-bit AXI")
        project, _ = _compiled(cache, int_model, device.family, c.shape)
        dense = project.estimate(image, registers=project.registers(method="dense"), latency=dram_latency)["cycles"][0]
    else:
        chosen = None
        fitting = [p for p in points if p.sizing.chosen is not None]
        if not fitting:
            message = f"no accelerator shape of the space fits {device.name}"
        else:
            best = min(fitting, key=lambda p: max(p.sizing.chosen.cycles))
            message = (f"no keep ratio of the grid meets {target_latency_ms:.4g} ms on {device.name}: the fastest, "
                       f"keep {best.keep_ratio:g}, takes {best.sizing.chosen.latency_ms:.4g} ms at {clock_mhz:g} MHz")
    return PlanResult(chosen=chosen, points=points, dense_cycles=dense, target_latency_ms=target_latency_ms,
                      clock_mhz=clock_mhz, seconds=time.perf_counter() - t0, message=message, target_note=target_note)
