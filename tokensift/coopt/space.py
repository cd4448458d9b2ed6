"""The co-optimizer's design space: hardware parameters x keep ratios.

A design point is one accelerator configuration (:class:`HwChoice`: attention lanes, parallel attention
cores, softmax variant, linear-array lanes, selector lanes, clock) and one token schedule (a
:class:`KeepSpace` point). Buffer sizes are not free: the attention core's ``n_max`` and the linear
array's row buffer are the smallest that hold the model's largest frame and row (every layer before the
first pruning stage sees all tokens, so a smaller buffer cannot run the model and a larger one only costs
block RAM); they follow from the model, as :class:`tokensift.hw.cost.layer.ModelCost` sizes them.

How keep ratios map onto a method (:func:`keep_kind`):

* ``per-stage`` (EViT): stage ``s`` keeps ``ceil(r_s * candidates)``, one ratio per stage;
* ``geometric`` (DynamicViT, SPViT and other methods with a static schedule): one ``rho``, stage ``s``
  keeps ``int(patches * rho ** (s + 1))`` patch tokens (the method's own schedule);
* ``adaptive`` (AS-ViT, SaiT): the count adapts to each image, so the static schedule of the model is the
  worst case; the co-optimizer costs the *expected* schedule ``int(patches * rho ** (s + 1))``, the one
  their budget-aware training aims at.

>>> space = HwSpace(lanes=(4, 8), heads_parallel=(1,), linear_lanes=(16,), selector_lanes=(8,),
...                 softmax=("exp2_lut",), clock_mhz=(100.0,))
>>> space.size, space.choice(1).lanes
(2, 8)
>>> KeepSpace.per_stage((0.5, 1.0), stages=2).points
((0.5, 0.5), (0.5, 1.0), (1.0, 0.5), (1.0, 1.0))
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["HwChoice", "HwSpace", "KeepSpace", "keep_kind", "default_hw_space", "default_keep_space",
           "PER_STAGE_METHODS", "ADAPTIVE_METHODS", "SOFTMAX_VARIANTS"]

#: methods whose selectors each take their own keep ratio (``ceil(r * candidates)``)
PER_STAGE_METHODS = frozenset({"evit"})
#: methods whose token counts adapt to each image (their static schedule is the unpruned worst case)
ADAPTIVE_METHODS = frozenset({"asvit", "sait"})
SOFTMAX_VARIANTS = ("exp2_lut", "exp2_poly")


def keep_kind(method: str) -> str:
    """``"none"``, ``"per-stage"``, ``"geometric"`` or ``"adaptive"`` (see the module docstring)."""
    if method == "none":
        return "none"
    if method in PER_STAGE_METHODS:
        return "per-stage"
    if method in ADAPTIVE_METHODS:
        return "adaptive"
    return "geometric"


@dataclass(frozen=True)
class HwChoice:
    """One accelerator configuration (the fields of :class:`tokensift.hw.cost.layer.HwConfig` + clock)."""

    lanes: int
    heads_parallel: int
    linear_lanes: int
    selector_lanes: int
    softmax: str
    clock_mhz: float
    linear_rows: int | None = None
    weight_rate: int | None = None

    def hw_config(self):
        from tokensift.hw.cost.layer import HwConfig

        return HwConfig(lanes=self.lanes, heads_parallel=self.heads_parallel, linear_lanes=self.linear_lanes,
                        selector_lanes=self.selector_lanes, softmax=self.softmax, linear_rows=self.linear_rows,
                        weight_rate=self.weight_rate)

    def as_dict(self) -> dict:
        return asdict(self)


def _axis(name: str, values, kind=int, low=1) -> tuple:
    try:
        values = tuple(values)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of values, not {type(values).__name__}") from None
    if not values:
        raise ValueError(f"the {name} axis of the design space must not be empty")
    out = []
    for v in values:
        if kind is int and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
            raise TypeError(f"{name} values must be integers, not {v!r}")
        if kind is float and (isinstance(v, bool) or not isinstance(v, (int, float, np.number))):
            raise TypeError(f"{name} values must be numbers, not {v!r}")
        if kind in (int, float) and not v >= low:
            raise ValueError(f"{name} values must be at least {low}, not {v}")
        out.append(kind(v))
    if len(set(out)) != len(out):
        raise ValueError(f"the {name} axis repeats a value: {list(out)}")
    return tuple(out)


@dataclass(frozen=True)
class HwSpace:
    """The hardware axes; the space is their Cartesian product, indexed as :meth:`choice` does."""

    lanes: tuple[int, ...]
    heads_parallel: tuple[int, ...]
    linear_lanes: tuple[int, ...]
    selector_lanes: tuple[int, ...]
    softmax: tuple[str, ...]
    clock_mhz: tuple[float, ...]
    #: rows of the linear engine's array (its shape: rows x linear_lanes / rows); None: for each MAC count its
    #: default rows (:func:`tokensift.hw.cost.linear.default_rows`), half and twice that
    linear_rows: tuple[int, ...] | None = None
    #: the weight stream's bytes per cycle (not an axis: the device's DRAM, set by the evaluator)
    weight_rate: int | None = None

    def __post_init__(self):
        for name in ("lanes", "heads_parallel", "linear_lanes", "selector_lanes"):
            object.__setattr__(self, name, _axis(name, getattr(self, name)))
        if self.linear_rows is not None:
            rows = _axis("linear_rows", self.linear_rows)
            for r in rows:
                if r & (r - 1) or r > 64:
                    raise ValueError(f"linear_rows values must be powers of two up to 64, not {r}")
            object.__setattr__(self, "linear_rows", rows)
        if self.weight_rate is not None and (isinstance(self.weight_rate, bool) or not isinstance(
                self.weight_rate, (int, np.integer)) or self.weight_rate < 1):
            raise ValueError(f"weight_rate must be a positive integer (bytes per cycle), not {self.weight_rate!r}")
        if not self.linear_variants:
            raise ValueError(f"no linear-engine shape: every linear_rows value leaves a linear_lanes value "
                             f"{list(self.linear_lanes)} with a fractional or over-wide (> 1024) column count")
        object.__setattr__(self, "clock_mhz", _axis("clock_mhz", self.clock_mhz, float, low=1e-9))
        sm = _axis("softmax", self.softmax, str)
        for v in sm:
            if v not in SOFTMAX_VARIANTS:
                raise ValueError(f"softmax must be one of {', '.join(SOFTMAX_VARIANTS)}, not {v!r}")
        object.__setattr__(self, "softmax", sm)

    @property
    def shape(self) -> tuple[int, ...]:
        """Axis lengths in index order: (attention variants, linear lanes, selector lanes, clocks)."""
        return (len(self.attention_variants), len(self.linear_variants), len(self.selector_lanes), len(self.clock_mhz))

    @property
    def attention_variants(self) -> list[tuple[int, int, str]]:
        """(lanes, heads_parallel, softmax) triples: the attention unit's own axes."""
        return list(itertools.product(self.lanes, self.heads_parallel, self.softmax))

    @property
    def linear_variants(self) -> list[tuple[int, int]]:
        """(MACs, rows) pairs of the linear engine: every ``linear_lanes`` x ``linear_rows`` whose columns
        (``MACs / rows``) are a whole number up to 1024."""
        from tokensift.hw.cost.linear import default_rows

        out = []
        for macs in self.linear_lanes:
            base = default_rows(macs)
            for rows in (self.linear_rows or sorted({max(1, base // 2), base, min(64, 2 * base)})):
                if macs % rows == 0 and macs // rows <= 1024:
                    out.append((macs, rows))
        return out

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def unravel(self, index: int) -> tuple[int, int, int, int]:
        return tuple(int(i) for i in np.unravel_index(index, self.shape))

    def choice(self, index: int) -> HwChoice:
        a, li, s, c = self.unravel(index)
        lanes, hp, sm = self.attention_variants[a]
        macs, rows = self.linear_variants[li]
        return HwChoice(lanes=lanes, heads_parallel=hp, linear_lanes=macs, selector_lanes=self.selector_lanes[s],
                        softmax=sm, clock_mhz=self.clock_mhz[c], linear_rows=rows, weight_rate=self.weight_rate)

    def index_of(self, choice: HwChoice) -> int:
        from tokensift.hw.cost.linear import default_rows

        a = self.attention_variants.index((choice.lanes, choice.heads_parallel, choice.softmax))
        rows = choice.linear_rows if choice.linear_rows is not None else default_rows(choice.linear_lanes)
        idx = (a, self.linear_variants.index((choice.linear_lanes, rows)),
               self.selector_lanes.index(choice.selector_lanes), self.clock_mhz.index(float(choice.clock_mhz)))
        return int(np.ravel_multi_index(idx, self.shape))

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class KeepSpace:
    """The keep-ratio axis: ``points`` are tuples of the method's keep parameters.

    ``kind`` is ``"per-stage"`` (one ratio per stage), ``"geometric"``/``"adaptive"`` (one ``rho``) or
    ``"none"`` (the dense model: one empty point).
    """

    kind: str
    values: tuple[float, ...]
    stages: int

    def __post_init__(self):
        if self.kind not in ("none", "per-stage", "geometric", "adaptive"):
            raise ValueError(f"keep-space kind must be none, per-stage, geometric or adaptive, not {self.kind!r}")
        vals = _axis("keep ratio", self.values, float, low=0.0)
        for v in vals:
            if not 0.0 < v <= 1.0:
                raise ValueError(f"keep ratios must be in (0, 1], not {v}")
        object.__setattr__(self, "values", tuple(sorted(vals)))

    @classmethod
    def per_stage(cls, values, stages: int) -> KeepSpace:
        return cls("per-stage", tuple(values), stages)

    @property
    def points(self) -> tuple[tuple[float, ...], ...]:
        if self.kind == "none":
            return ((),)
        if self.kind == "per-stage":
            return tuple(itertools.product(self.values, repeat=self.stages))
        return tuple((v,) for v in self.values)

    @property
    def size(self) -> int:
        # counted, not enumerated: a fine keep step makes more points than memory holds
        if self.kind == "per-stage":
            return len(self.values) ** self.stages
        return 1 if self.kind == "none" else len(self.values)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "values": list(self.values), "stages": self.stages, "points": self.size}


def _powers_of_two(low: int, high: int, divides: int | None = None) -> tuple[int, ...]:
    out, v = [], 1
    while v <= high:
        if v >= low and (divides is None or divides % v == 0):
            out.append(v)
        v *= 2
    return tuple(out)


def default_hw_space(desc, device, clock_mhz=None) -> HwSpace:
    """A space sized for ``desc`` (a :class:`tokensift.hw.cost.layer.ModelDesc`) on ``device``.

    Attention lanes: powers of two dividing the head width (up to 64); parallel cores: powers of two up to
    the head count, and the head count; linear lanes: powers of two from 4 to the device's DSPs (at most
    256, the MAC array's limit); selector lanes: powers of two dividing the width (4..64); both softmax variants; the
    clock of :func:`tokensift.hw.cost.clock.clock_for_desc` (ECP5: measured, elsewhere the device's assumed
    clock) unless ``clock_mhz`` (a number or a sequence) is given.
    """
    head_dim = desc.dim // desc.heads
    lanes = _powers_of_two(1, min(64, head_dim), head_dim)
    hp = tuple(sorted(set(_powers_of_two(1, min(16, desc.heads))) | ({desc.heads} if desc.heads <= 16 else set())))
    linear = _powers_of_two(4, max(4, min(4096, device.dsp)))
    sel = _powers_of_two(4, min(64, desc.dim), desc.dim) or (desc.dim,)
    if clock_mhz is None:
        from tokensift.hw.cost.clock import clock_for_desc

        clocks = (clock_for_desc(desc, device).mhz,)
    elif isinstance(clock_mhz, (int, float)):
        clocks = (float(clock_mhz),)
    else:
        clocks = tuple(float(c) for c in clock_mhz)
    from tokensift.hw.cost.linear import device_weight_rate

    return HwSpace(lanes=lanes, heads_parallel=hp, linear_lanes=linear, selector_lanes=sel,
                   softmax=SOFTMAX_VARIANTS, clock_mhz=clocks, weight_rate=device_weight_rate(device, max(clocks)))


def default_keep_space(method: str, stages: int, *, low: float = 0.3, step: float = 0.05) -> KeepSpace:
    """Keep ratios from ``low`` to 1 in steps of ``step`` (per stage for per-stage methods; one rho for
    the others, in steps of ``step / 5``)."""
    kind = keep_kind(method)
    if kind == "none" or stages == 0:
        return KeepSpace("none", (1.0,), 0)
    if not 0.0 < low <= 1.0:
        raise ValueError(f"the lowest keep ratio must be in (0, 1], not {low}")
    if not 0.0 < step <= 1.0:
        raise ValueError(f"the keep-ratio step must be in (0, 1], not {step}")
    if kind != "per-stage":
        step = step / 5
    n = int(np.floor((1.0 - low) / step + 1e-9))
    values = tuple(sorted({round(1.0 - i * step, 6) for i in range(n + 1)}))
    return KeepSpace(kind, values, stages)
