"""Fast, exact evaluation of design points with the validated cost model.

The cost of one design point (:class:`tokensift.hw.cost.layer.ModelCost`) is a sum of parts that each
depend on one unit only:

* resources = attention unit (lanes, parallel cores, softmax) + linear array (its lanes) + selector
  (its lanes) -- none of them depends on the keep ratios (the buffers are sized for the model's largest
  frame, see :mod:`tokensift.coopt.space`);
* cycles = fixed (patch embedding, head: linear array) + per layer the attention unit's frames and the
  linear array's qkv/proj/fc1/fc2 + per pruning stage the selector's frame and the predictor's steps on
  the linear array and the vector units -- all closed-form functions of token counts.

So :class:`CostEvaluator` computes each unit's resources once per unit variant, each unit's cycles once
per (variant, token count) it meets, the token schedule once per keep point, and adds them up with numpy
broadcasting over the whole grid: ``cycles[hw, keep] = A[attention, keep] + L[linear, keep] +
S[selector, keep]``. Every number comes from the cost model's own functions (``attention_cycles``,
``linear_cycles``, ``hw.selector.cycles``, ``ModelCost.predictor_cycles``, ``units``); the tests check the sum
against :meth:`ModelCost.cycles` point by point.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np

from tokensift.coopt.space import (
    HwChoice,
    HwSpace,
    KeepSpace,
    default_hw_space,
    default_keep_space,
    keep_kind,
)
from tokensift.devices import Device, get_device

__all__ = ["CostEvaluator", "KeepSchedule", "GridResult"]

_DEFAULT_LINEAR = 16


@dataclass(frozen=True)
class KeepSchedule:
    """The token schedule of one keep point.

    ``attn``/``mlp``: tokens per layer; ``stages``: per pruning stage ``(n_in, kept, mode, package, macs)``
    (``package``: the package rule of the token the stage adds, or None)
    (a stage that keeps everything still runs its selector frame, as the cost model charges it); ``macs``: total multiply-accumulates (selectors included);
    ``retained``: backbone MACs (qkv, attention, proj, MLP) over the dense model's, the accuracy proxy.
    """

    point: tuple[float, ...]
    attn: tuple[int, ...]
    mlp: tuple[int, ...]
    stages: tuple
    macs: int
    retained: float

    @property
    def kept_fraction(self) -> list[float]:
        """Per stage: tokens leaving / tokens entering (class and added tokens included)."""
        out = []
        for st in self.stages:
            out.append(1.0 if st is None else (st[1] + int(st[3] is not None)) / st[0])
        return out


@dataclass
class GridResult:
    """Every point of a grid: ``cycles[h, k]`` for hardware index ``h`` and keep index ``k``."""

    cycles: np.ndarray          # (H, K) int64
    latency_ms: np.ndarray      # (H, K) float64
    utilization: np.ndarray     # (H,) max over resources
    fits: np.ndarray            # (H,) bool
    accuracy: np.ndarray        # (K,) accuracy proxy (higher is better)
    seconds: float
    extra: dict = field(default_factory=dict)

    @property
    def points(self) -> int:
        return int(self.cycles.size)


def _adds_token(sel) -> bool:
    # the rule of tokensift.hw.cost.layer (a stage adds a package/fused token)
    if hasattr(sel, "adds_package"):
        return bool(sel.adds_package())
    return bool(getattr(sel, "fuse_token", False)) and getattr(sel, "keep_ratio", 1.0) < 1.0


def _mode(sel):
    from tokensift.quant.select import Mode

    return Mode.THRESHOLD if hasattr(sel, "log_threshold") else Mode.TOPK


class CostEvaluator:
    """Costs of a model's design points on one device.

    Args:
        model: a registered model name, a :mod:`tokensift.sw` ViT (copied, never modified) or a
            :class:`~tokensift.hw.cost.layer.ModelDesc`.
        method: the pruning method (with a model name).
        device: a device name or :class:`~tokensift.devices.Device`.
        hw_space, keep_space: the axes (defaults: :func:`default_hw_space`, :func:`default_keep_space`).
        selector_feature_bits: width of the features the token selector moves (the cost model assumes
            int8; an integer model whose residual stream is int16 selects int16 tokens).
        overrides: :class:`~tokensift.sw.registry.ViTConfig` overrides with a model name.
    """

    def __init__(self, model, *, method: str | None = None, device: str | Device = "pynq-z2",
                 hw_space: HwSpace | None = None, keep_space: KeepSpace | None = None,
                 selector_feature_bits: int | None = None, **overrides):
        from tokensift.hw.cost.layer import ModelDesc

        self.device = get_device(device)
        self.selector_feature_bits = selector_feature_bits
        if isinstance(model, str):
            self.method = method or "none"
            self.desc = ModelDesc.from_name(model, method=self.method, **overrides)
        elif isinstance(model, ModelDesc):
            self.method = method or "none"
            self.desc = copy.deepcopy(model)
        else:
            module = getattr(model, "module", model)
            self.method = method or getattr(module, "method", "none")
            self.desc = ModelDesc.from_model(copy.deepcopy(module))
        self.sels = [sel for _, sel in self.desc.selectors]
        self.kind = keep_kind(self.method) if self.sels else "none"
        self.keep_space = keep_space or default_keep_space(self.method, len(self.sels))
        if self.keep_space.kind != self.kind:
            raise ValueError(f"the keep space is {self.keep_space.kind} but method {self.method!r} needs a "
                             f"{self.kind} keep space")
        if self.kind == "per-stage" and self.keep_space.stages != len(self.sels):
            raise ValueError(f"the keep space has {self.keep_space.stages} stages but the model has "
                             f"{len(self.sels)} pruning stages")
        self.hw_space = hw_space or default_hw_space(self.desc, self.device)
        if self.hw_space.weight_rate is None:  # the device's DRAM feeds the weight stream
            from dataclasses import replace as _replace

            from tokensift.hw.cost.linear import device_weight_rate

            self.hw_space = _replace(self.hw_space,
                                     weight_rate=device_weight_rate(self.device, max(self.hw_space.clock_mhz)))
        self.spec = self.desc.flops_spec()
        self.family = self.device.family
        self.capacity = self.device.capacity()
        self._schedules: dict[tuple, KeepSchedule] = {}
        self._att: dict[tuple, dict[int, int]] = {}
        self._units: dict[tuple, object] = {}
        self._costs: dict[tuple, object] = {}
        #: "full" (ModelCost.units) or "hard-blocks-only" (see tokensift.coopt.unit_resources)
        self.resource_model: str | None = None
        self._resources: np.ndarray | None = None
        self._columns: dict[tuple, tuple] = {}
        self._clocks: dict[float, dict] = {}
        self._lowest = min(self.keep_space.values) if self.kind != "none" else 1.0
        self._check_hw_space()

    # -- structure ---------------------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return self.spec.num_tokens

    def _set_point(self, point: tuple[float, ...]) -> None:
        if self.kind == "per-stage":
            for sel, r in zip(self.sels, point, strict=True):
                sel.set_keep_ratio(r)
        elif self.kind in ("geometric", "adaptive"):
            for sel in self.sels:
                sel.set_keep_ratio(point[0])

    def _cost(self, lanes: int, heads_parallel: int, softmax: str, linear_lanes: int, selector_lanes: int,
              linear_rows: int | None = None):
        """A :class:`ModelCost` for one unit combination (built at the lowest keep point, so that the
        hardware has every datapath a point of the space may use: package token, ``n_max``)."""
        from tokensift.hw.cost.layer import HwConfig, ModelCost

        key = (lanes, heads_parallel, softmax, linear_lanes, selector_lanes, linear_rows)
        cost = self._costs.get(key)
        if cost is None:
            self._set_point(self._low_point())
            hw = HwConfig(lanes=lanes, heads_parallel=heads_parallel, softmax=softmax, linear_lanes=linear_lanes,
                          selector_lanes=selector_lanes, linear_rows=linear_rows, weight_rate=self.hw_space.weight_rate)
            cost = ModelCost(self.desc, hw)
            if self.selector_feature_bits is not None and cost.selector is not None:
                from dataclasses import replace

                cost.selector = replace(cost.selector, feature_bits=self.selector_feature_bits)
            self._costs[key] = cost
        return cost

    def _low_point(self) -> tuple[float, ...]:
        if self.kind == "none":
            return ()
        if self.kind == "per-stage":
            return (self._lowest,) * len(self.sels)
        return (self._lowest,)

    def _check_hw_space(self) -> None:
        hd = self.desc.dim // self.desc.heads
        for lanes in self.hw_space.lanes:
            if hd % lanes:
                raise ValueError(f"attention lanes must divide the head width {hd}, not {lanes}")
        for sl in self.hw_space.selector_lanes:
            if self.desc.dim % sl:
                raise ValueError(f"selector lanes must divide the model width {self.desc.dim}, not {sl}")
        for hp in self.hw_space.heads_parallel:
            if hp > 16:
                raise ValueError(f"parallel attention cores must be at most 16, not {hp}")

    # -- schedules -----------------------------------------------------------------------------------------
    def schedule(self, point: tuple[float, ...]) -> KeepSchedule:
        """The token schedule of a keep point (cached)."""
        point = tuple(float(v) for v in point)
        cached = self._schedules.get(point)
        if cached is not None:
            return cached
        from tokensift.sw.flops import block_macs, schedule_macs
        from tokensift.sw.methods.dynamicvit import keep_count

        self._set_point(point)
        spec = self.spec
        by_block = {b: (s, sel) for s, (b, sel) in enumerate(self.desc.selectors)}
        n = spec.num_tokens
        attn, mlp, stages = [], [], [None] * len(self.sels)
        patches = spec.num_tokens - 1

        from tokensift.hw.cost.layer import package_rule

        def run_stage(s, sel, n_in):
            if self.kind == "adaptive":
                before = patches if s == 0 else keep_count(patches, sel.keep_ratio, s - 1)
                n_out = n_in - before + keep_count(patches, sel.keep_ratio, s)
            else:
                n_out = int(sel.expected_tokens(n_in))
            package = package_rule(sel) if _adds_token(sel) else None
            kept = n_out - int(package is not None)
            stages[s] = (int(n_in), int(kept), _mode(sel), package, int(sel.macs(n_in, n_out, spec.dim)))
            return n_out

        for b in range(spec.depth):
            st = by_block.get(b)
            if st is not None and st[1].site == "pre":
                n = run_stage(st[0], st[1], n)
            attn.append(int(n))
            if st is not None and st[1].site == "mid":
                n = run_stage(st[0], st[1], n)
            mlp.append(int(n))
        backbone = sum(sum(block_macs(a, m, spec.dim, spec.hidden).values()) for a, m in zip(attn, mlp, strict=True))
        dense = spec.depth * sum(block_macs(spec.num_tokens, spec.num_tokens, spec.dim, spec.hidden).values())
        from tokensift.sw.flops import FlopsSpec

        total = schedule_macs(FlopsSpec(**{**spec.__dict__, "stages": []}), attn, mlp)["total"]
        total += sum(st[4] for st in stages if st is not None)
        sched = KeepSchedule(point, tuple(attn), tuple(mlp), tuple(stages), int(total), backbone / dense)
        self._schedules[point] = sched
        return sched

    def schedules(self, points=None) -> list[KeepSchedule]:
        return [self.schedule(p) for p in (self.keep_space.points if points is None else points)]

    # -- per-unit cycles -----------------------------------------------------------------------------------
    def _attention_cycles(self, a: int, counts) -> dict[int, int]:
        lanes, hp, sm = self.hw_space.attention_variants[a]
        table = self._att.setdefault((lanes, hp, sm), {})
        missing = [n for n in counts if n not in table]
        if missing:
            cost = self._cost(lanes, hp, sm, _DEFAULT_LINEAR, self.hw_space.selector_lanes[0])
            for n in missing:
                table[n] = cost.attention_cycles(int(n))
        return table

    def _linear_parts(self, li: int) -> tuple:
        """(the ModelCost of linear variant ``li``, its fixed cycles: patch embedding, final norm, head)."""
        macs, rows = self.hw_space.linear_variants[li]
        cost = self._cost(self.hw_space.lanes[0], 1, self.hw_space.softmax[0], macs, self.hw_space.selector_lanes[0],
                          rows)
        return cost, int(sum(cost.fixed_cycles().values()))

    def _layer_linear_cycles(self, cost, n: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Cycles of the linear engine and the vector units in whole layers (everything of
        :meth:`ModelCost.attn_part_cycles` but the attention unit at ``n`` tokens, and
        :meth:`ModelCost.mlp_part_cycles` at ``m``), at each distinct count, looked up elementwise."""
        n, m = np.asarray(n, dtype=np.int64), np.asarray(m, dtype=np.int64)
        top = int(max(n.max(initial=0), m.max(initial=0)))
        attn_side = np.zeros(top + 1, dtype=np.int64)
        mlp_side = np.zeros(top + 1, dtype=np.int64)
        for c in np.unique(n).tolist():
            attn_side[c] = sum(cost.attn_linear_cycles(c).values()) if c else 0
        for c in np.unique(m).tolist():
            mlp_side[c] = sum(cost.mlp_part_cycles(c).values()) if c else 0
        return attn_side[n] + mlp_side[m]

    def _selector_cycles(self, si: int, stage) -> int:
        from tokensift.hw.selector.core import cycles

        cost = self._cost(self.hw_space.lanes[0], 1, self.hw_space.softmax[0], _DEFAULT_LINEAR,
                          self.hw_space.selector_lanes[si])
        n_in, kept, mode, package, _ = stage
        return int(cycles(cost.selector, n_tokens=n_in, kept=kept, mode=mode, package=package is not None,
                          package_rule=package or "mean"))

    # -- resources -----------------------------------------------------------------------------------------
    def _unit(self, kind: str, index: int):
        key = (kind, index)
        if key not in self._units:
            from tokensift.coopt.unit_resources import unit_resources

            sm0, sl0 = self.hw_space.softmax[0], self.hw_space.selector_lanes[0]
            if kind == "attention":
                lanes, hp, sm = self.hw_space.attention_variants[index]
                cost = self._cost(lanes, hp, sm, _DEFAULT_LINEAR, sl0)
            elif kind == "linear":
                macs, rows = self.hw_space.linear_variants[index]
                cost = self._cost(self.hw_space.lanes[0], 1, sm0, macs, sl0, rows)
            else:
                cost = self._cost(self.hw_space.lanes[0], 1, sm0, _DEFAULT_LINEAR, self.hw_space.selector_lanes[index])
            units, model = unit_resources(cost, self.family)
            if self.resource_model is None:
                self.resource_model = model
            elif model != self.resource_model:
                raise RuntimeError("the resource model changed while evaluating (a unit's model appeared midway)")
            if kind == "linear":  # the engine and the vector units sized by its rows
                from tokensift.hw.cost.layer import LINEAR_GROUP

                self._units[key] = sum((units[u] for u in LINEAR_GROUP if u in units), start=units["linear"] * 0)
            else:
                self._units[key] = units.get(kind)
        return self._units[key]

    def resource_keys(self) -> list[str]:
        """The capacities the fit is checked against (block RAM and DSP only with the hard-block fallback)."""
        from tokensift.coopt.unit_resources import HARD_BLOCKS_ONLY

        if self.resource_model is None:
            self._unit("linear", 0)
        keys = list(self.capacity)
        if self.resource_model == HARD_BLOCKS_ONLY:
            keys = [k for k in keys if k not in ("lut", "ff")]
        return keys

    def _unit_matrix(self, kind: str, count: int) -> np.ndarray:
        keys = self.resource_keys()
        rows = []
        for i in range(count):
            r = self._unit(kind, i)
            d = r.as_dict(self.family) if r is not None else {}
            rows.append([float(d.get(k, 0)) for k in keys])
        return np.array(rows, dtype=np.float64).reshape(count, len(keys))

    def resources(self) -> np.ndarray:
        """(H, R) resources of every hardware point, R = the device's capacity keys (cached)."""
        if self._resources is None:
            self._resources = self._resources_matrix()
        return self._resources

    def _resources_matrix(self) -> np.ndarray:
        hs = self.hw_space
        a = self._unit_matrix("attention", len(hs.attention_variants))
        li = self._unit_matrix("linear", len(hs.linear_variants))
        s = self._unit_matrix("selector", len(hs.selector_lanes)) if self.sels else np.zeros((len(hs.selector_lanes),
                                                                                              a.shape[1]))
        total = a[:, None, None, :] + li[None, :, None, :] + s[None, None, :, :]
        total = np.broadcast_to(total[:, :, :, None, :], (*hs.shape, a.shape[1]))
        return total.reshape(hs.size, a.shape[1])

    def utilization(self, used: np.ndarray) -> np.ndarray:
        """(H, R) used / capacity (a resource the device lacks: 0 if unused, inf if used)."""
        cap = np.array([self.capacity[k] for k in self.resource_keys()], dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            util = np.where(cap > 0, used / np.where(cap > 0, cap, 1), np.where(used > 0, np.inf, 0.0))
        return util

    # -- the grid ------------------------------------------------------------------------------------------
    def unit_cycles(self, schedules: list[KeepSchedule]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(A (attention variants, K), L (linear lanes, K), S (selector lanes, K)) cycle matrices."""
        hs = self.hw_space
        attn = np.array([s.attn for s in schedules], dtype=np.int64).reshape(len(schedules), -1)
        mlp = np.array([s.mlp for s in schedules], dtype=np.int64).reshape(len(schedules), -1)
        counts = np.unique(attn)
        A = np.zeros((len(hs.attention_variants), len(schedules)), dtype=np.int64)
        for a in range(len(hs.attention_variants)):
            table = self._attention_cycles(a, counts.tolist())
            lookup = np.zeros(int(counts.max()) + 1, dtype=np.int64)
            lookup[counts] = [table[int(n)] for n in counts]
            A[a] = lookup[attn].sum(axis=1)
        from tokensift.hw.cost.predictor import predictor_ops

        L = np.zeros((len(hs.linear_variants), len(schedules)), dtype=np.int64)
        # a predictor's steps depend on its stage and its input count only
        entering = sorted({(i, st[0]) for s in schedules for i, st in enumerate(s.stages) if st is not None})
        ops = {key: predictor_ops(self.sels[key[0]], key[1], self.spec.dim) for key in entering}
        for li in range(len(hs.linear_variants)):
            cost, fixed = self._linear_parts(li)
            pred = {key: cost.predictor_cycles(o) for key, o in ops.items()}
            stage_pred = np.array([sum(pred[(i, st[0])] for i, st in enumerate(s.stages) if st is not None)
                                   for s in schedules], dtype=np.int64)
            L[li] = fixed + self._layer_linear_cycles(cost, attn, mlp).sum(axis=1) + stage_pred
        S = np.zeros((len(hs.selector_lanes), len(schedules)), dtype=np.int64)
        if self.sels:
            uniq = sorted({st[:4] for s in schedules for st in s.stages if st is not None},
                          key=lambda t: (t[0], t[1], int(t[2]), t[3] or ""))
            for si in range(len(hs.selector_lanes)):
                table = {t: self._selector_cycles(si, (*t, 0)) for t in uniq}
                S[si] = [sum(table[st[:4]] for st in s.stages if st is not None) for s in schedules]
        return A, L, S

    def grid(self, points=None, accuracy=None) -> GridResult:
        """Evaluate every hardware point x every keep point (``points``: default the whole keep space).

        ``accuracy``: a callable ``[KeepSchedule] -> (K,) array`` (default: the retained-FLOPs proxy).
        """
        t0 = time.perf_counter()
        scheds = self.schedules(points)
        A, L, S = self.unit_cycles(scheds)
        hs = self.hw_space
        cyc = A[:, None, None, :] + L[None, :, None, :] + S[None, None, :, :]     # (a, l, s, K)
        clocks = np.array(hs.clock_mhz, dtype=np.float64)
        cycles = np.broadcast_to(cyc[:, :, :, None, :], (*hs.shape, len(scheds))).reshape(hs.size, len(scheds))
        clock_of = np.broadcast_to(clocks[None, None, None, :], hs.shape).reshape(-1)
        latency = cycles / (clock_of[:, None] * 1e3)
        util = self.utilization(self.resources())
        max_util = util.max(axis=1)
        acc = (np.array([s.retained for s in scheds], dtype=np.float64) if accuracy is None
               else np.asarray(accuracy(scheds), dtype=np.float64))
        return GridResult(cycles=np.ascontiguousarray(cycles), latency_ms=latency, utilization=max_util,
                          fits=max_util <= 1.0, accuracy=acc, seconds=time.perf_counter() - t0,
                          extra={"schedules": scheds})

    def columns(self, point: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`unit_cycles` of one keep point, cached."""
        point = tuple(float(v) for v in point)
        cols = self._columns.get(point)
        if cols is None:
            cols = self.unit_cycles([self.schedule(point)])
            self._columns[point] = cols
        return cols

    # -- one point -----------------------------------------------------------------------------------------
    def point(self, h: int, keep: tuple[float, ...]) -> dict:
        """Everything about one design point, as JSON-ready values."""
        hs = self.hw_space
        choice: HwChoice = hs.choice(h)
        sched = self.schedule(keep)
        A, L, S = self.columns(sched.point)
        a, li, si, _ = hs.unravel(h)
        cycles = int(A[a, 0] + L[li, 0] + S[si, 0])
        keys = self.resource_keys()
        used = self.resources()[h]
        util = self.utilization(used[None])[0]
        units = {"attention": self._unit("attention", a), "linear": self._unit("linear", li)}
        if self.sels:
            units["selector"] = self._unit("selector", si)
        latency = cycles / (choice.clock_mhz * 1e3)
        return {
            "hw": choice.as_dict(),
            "clock": self.clock_info(choice.clock_mhz),
            "keep": {"kind": self.kind, "point": list(sched.point), "kept_fraction": sched.kept_fraction,
                     "tokens": list(sched.attn), "mlp_tokens": list(sched.mlp)},
            "cycles": cycles,
            "cycles_by_unit": {"attention": int(A[a, 0]), "linear": int(L[li, 0]), "selector": int(S[si, 0])},
            "latency_ms": latency,
            "fps": 1e3 / latency,
            "resources": {k: (int(v) if float(v).is_integer() else float(v)) for k, v in zip(keys, used, strict=True)},
            "utilization": {k: float(u) for k, u in zip(keys, util, strict=True)},
            "max_utilization": float(util.max()),
            "fits": bool(util.max() <= 1.0),
            "units": {k: {m: v for m, v in r.as_dict(self.family).items() if m in keys or m == "bram18"}
                      for k, r in units.items()},
            "resource_model": self.resource_model,
            "gflops": sched.macs / 1e9,
            "retained_flops": sched.retained,
        }

    def clock_info(self, mhz: float) -> dict:
        """Where a clock of the space comes from (:class:`tokensift.hw.cost.clock.Clock` as a dict): the
        measured or assumed clock of the device, or one given in the space."""
        from tokensift.hw.cost.clock import clock_for_desc

        if mhz not in self._clocks:
            default = clock_for_desc(self.desc, self.device)
            self._clocks[mhz] = (default if mhz == default.mhz
                                 else clock_for_desc(self.desc, self.device, clock_mhz=mhz)).as_dict()
        return self._clocks[mhz]

    def dense_cycles(self, h: int) -> int:
        """Cycles of the unpruned model (no selectors) on hardware point ``h``."""
        hs = self.hw_space
        a, li, _, _ = hs.unravel(h)
        n = self.num_tokens
        att = self._attention_cycles(a, [n])[n]
        cost, fixed = self._linear_parts(li)
        lin = int(self._layer_linear_cycles(cost, np.array([n]), np.array([n]))[0])
        return int(fixed + self.spec.depth * (att + lin))

    def point_latency(self, h: int, keep: tuple[float, ...]) -> float:
        """Latency in ms of one design point."""
        A, L, S = self.columns(keep)
        a, li, si, c = self.hw_space.unravel(h)
        return float(A[a, 0] + L[li, 0] + S[si, 0]) / (self.hw_space.clock_mhz[c] * 1e3)
