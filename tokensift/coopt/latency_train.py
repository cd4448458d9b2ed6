"""Computation-aware training with the latency of the cost model as the budget (SPViT, HeatViT).

:class:`LatencyPlan` plugs into :func:`tokensift.sw.pipeline.run_pipeline` (``PipelineConfig.budget_plan``)
between building the pruned student and fine-tuning it. It installs
:class:`tokensift.hw.cost.latency.LatencyBudget` -- the exact cycle model of the accelerator ``hw`` on
``device``, differentiable in the soft token counts -- as the model's budget, and turns the latency
target into each method's own knob:

* **SPViT**: :func:`~tokensift.sw.methods.spvit.plan_keep_ratio` plans the schedule whose latency meets
  the target; its loss keeps the soft latency at the planned one.
* **AS-ViT**: ``rho`` = target / dense latency; the thresholds are calibrated and trained against the L1
  gap of the soft *latency* (not FLOPs).
* **DynamicViT**: the largest ``rho`` whose schedule meets the target; :class:`LatencyBudgetLoss` adds
  ``weight * |latency(soft counts) / dense - planned ratio|`` to DynamicViT's loss (the gradient reaches
  the predictors through the Gumbel-softmax decisions).
* **SaiT**: the count adapts to each image and its selector has no parameters, so the run-time density
  is calibrated on training images (bisection) until the mean latency meets the target.
* **EViT**: per-stage keep ratios (given, or the ones with the most retained FLOPs that meet the target
  on this hardware, searched exhaustively by :class:`~tokensift.coopt.evaluate.CostEvaluator`).

:meth:`LatencyPlan.report` measures the trained model: per test image, the token counts of the inference
path through the budget (exact at integer counts), so adaptive methods are measured image by image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = ["LatencyPlan", "LatencyBudgetLoss", "measure_latency", "STATIC_LOSS_METHODS"]

#: methods whose loss already has a budget term that reads ``model.budget``
_BUDGET_IN_LOSS = frozenset({"spvit", "asvit"})
#: methods that get :class:`LatencyBudgetLoss` around their loss
STATIC_LOSS_METHODS = frozenset({"dynamicvit"})


#: adaptive methods plan for this much below the target: the token counts of unseen images vary around the
#: calibration images' mean (SaiT on MNIST: +-0.5%)
ADAPTIVE_MARGIN = 0.02


class _ClampedMacs:
    """A selector seen by the cost model with ``macs`` clamped at 0 (see :meth:`LatencyPlan.budget_for`)."""

    def __init__(self, sel):
        self._sel = sel

    def macs(self, n_in, n_out, dim):
        return max(0, self._sel.macs(n_in, n_out, dim))

    def __getattr__(self, name):
        if name == "_sel":  # not set yet (copy, pickle)
            raise AttributeError(name)
        return getattr(self._sel, name)


class _Recorder:
    """Stands in for the student inside a criterion: forwards everything, remembers the mask-path state."""

    def __init__(self, module: nn.Module):
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "state", None)

    def forward_state(self, *args, **kwargs):
        state = self._module.forward_state(*args, **kwargs)
        if kwargs.get("path", args[1] if len(args) > 1 else None) == "mask":
            object.__setattr__(self, "state", state)
        return state

    def __getattr__(self, name):
        if name in ("_module", "state"):
            raise AttributeError(name)
        return getattr(self._module, name)

    def __call__(self, *args, **kwargs):
        return self._module(*args, **kwargs)


class LatencyBudgetLoss(nn.Module):
    """``base`` loss + ``weight * |mean latency(soft counts) / dense - target_ratio|`` on the mask path."""

    def __init__(self, base: nn.Module, target_ratio: float, weight: float = 1.0):
        super().__init__()
        if not 0 < target_ratio:
            raise ValueError(f"the target latency ratio must be positive, not {target_ratio}")
        self.base = base
        self.target_ratio = float(target_ratio)
        self.weight = float(weight)

    def forward(self, student: nn.Module, teacher: nn.Module | None, images: Tensor, labels: Tensor):
        from tokensift.sw.losses_budget import budget_ratio

        module = getattr(student, "module", student)
        rec = _Recorder(module)
        loss, parts = self.base(rec, teacher, images, labels)
        if rec.state is None:
            raise RuntimeError(f"{type(self.base).__name__} ran no mask-path forward pass to take token counts from")
        ratio = budget_ratio(module, rec.state)
        gap = (ratio - self.target_ratio).abs()
        parts = {**parts, "latency_gap": gap.detach(), "latency_ratio": ratio.detach()}
        return loss + self.weight * gap.to(loss.dtype), parts


@torch.no_grad()
def measure_latency(model: nn.Module, budget, images: Tensor, batch_size: int = 250) -> Tensor:
    """Per-image latency (ms) of ``model``'s inference path on ``images`` under ``budget``."""
    from tokensift.sw.losses_budget import stage_token_counts
    from tokensift.sw.placement import module_device

    module = getattr(model, "module", model)
    device = module_device(module)
    was = module.training
    module.eval()
    out = []
    try:
        for i in range(0, len(images), batch_size):
            state = module.forward_state(images[i:i + batch_size].to(device), path="gather")
            out.append(budget(stage_token_counts(module, state)))
    finally:
        module.train(was)
    return torch.cat(out)


def _stack_images(dataset, n: int) -> Tensor:
    n = min(n, len(dataset))
    return torch.stack([dataset[i][0] for i in range(n)])


@dataclass
class LatencyPlan:
    """The latency target of a training run (see the module docstring).

    Args:
        device: device name; ``hw``: a :class:`tokensift.hw.cost.layer.HwConfig`; ``clock_mhz``: the clock
            (default: the model's, :func:`tokensift.hw.cost.clock.clock_for_cost`: measured on ECP5, the
            device's assumed clock elsewhere; fixed by the first :meth:`budget_for`); ``target_ms``: latency
            per image.
        stage_keep: EViT's per-stage keep ratios (default: searched).
        keep_ratio: DynamicViT's ``rho`` when another planner chose it (the whole accelerator's own models,
            :func:`tokensift.coopt.accel_sizing.plan_accelerator`); default: the largest that meets the target
            under this cost model. The budget term then holds the soft latency at that schedule's.
        weight: weight of the latency term DynamicViT gets.
        calib_images: training images for SaiT's density calibration and AS-ViT's thresholds.
    """

    device: str
    hw: object
    target_ms: float
    clock_mhz: float | None = None
    stage_keep: tuple[float, ...] | None = None
    keep_ratio: float | None = None
    weight: float = 2.0
    calib_images: int = 256
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        from tokensift.devices import get_device

        dev = get_device(self.device)
        if isinstance(self.target_ms, bool) or not isinstance(self.target_ms, (int, float)) \
                or not self.target_ms > 0 or not math.isfinite(self.target_ms):
            raise ValueError(f"the target latency must be a positive number of milliseconds, not {self.target_ms!r}")
        if self.clock_mhz is not None:
            if isinstance(self.clock_mhz, bool) or not isinstance(self.clock_mhz, (int, float)) \
                    or not self.clock_mhz > 0:
                raise ValueError(f"clock_mhz must be a positive number, not {self.clock_mhz!r}")
            self.clock_mhz = float(self.clock_mhz)
        if self.keep_ratio is not None:
            if isinstance(self.keep_ratio, bool) or not isinstance(self.keep_ratio, (int, float)) \
                    or not 0 < self.keep_ratio <= 1:
                raise ValueError(f"keep_ratio must be a number in (0, 1], not {self.keep_ratio!r}")
            self.keep_ratio = float(self.keep_ratio)
        self._device = dev

    # -- before training ---------------------------------------------------------------------------------
    def budget_for(self, model):
        """The :class:`~tokensift.hw.cost.latency.LatencyBudget` of ``model`` in its current state.

        The budget tabulates every stage at every (tokens in, tokens out) pair, including pairs no schedule
        reaches; SPViT's selector counts a negative number of candidates there (fewer tokens than its
        protected ones), which the cost model rejects, so the selectors are seen through
        :class:`_ClampedMacs` (identical wherever a schedule can go).
        """
        import dataclasses

        from tokensift.hw.cost.latency import LatencyBudget
        from tokensift.hw.cost.layer import ModelDesc

        desc = ModelDesc.from_model(getattr(model, "module", model))
        desc = dataclasses.replace(desc, selectors=tuple((b, _ClampedMacs(sel)) for b, sel in desc.selectors))
        budget = LatencyBudget(desc, self.hw, self.device, clock_mhz=self.clock_mhz)
        # without a given clock the model's own (measured on ECP5, assumed elsewhere) is the plan's from now on
        self.clock_mhz = budget.clock_mhz
        return budget

    def _unreachable(self, method: str, best_ms: float, dense_ms: float) -> ValueError:
        return ValueError(f"a latency target of {self.target_ms:g} ms is below what {method} reaches with this "
                          f"hardware on {self.device} ({best_ms:.4g} ms at the smallest keep ratio, dense "
                          f"{dense_ms:.4g} ms)")

    def prepare(self, model: nn.Module, criterion: nn.Module, train_set) -> nn.Module:
        """Install the latency budget and plan the method's keep ratios; return the criterion to train with."""
        from tokensift.sw.losses_budget import largest_within
        from tokensift.sw.methods import get_method

        module = getattr(model, "module", model)
        method = module.method
        sels = [sel for _, sel in module.stage_selectors()]
        if not sels:
            raise ValueError("a latency target needs a pruning method; the dense model has nothing to plan")
        budget = self.budget_for(module)
        module.budget = budget
        target, dense = float(self.target_ms), float(budget.dense)
        ratio = target / dense
        self.info = {"method": method, "dense_latency_ms": dense, "target_ratio": ratio}
        if ratio >= 1.0:
            self.info["note"] = "the dense model already meets the target"
        if self.keep_ratio is not None and method in ("spvit", "asvit", "sait", "evit"):
            raise ValueError(f"a given keep_ratio fixes a static schedule with one rho (DynamicViT); {method} plans "
                             f"its own knob from the target")
        if method == "spvit":
            from tokensift.sw.methods.spvit import plan_keep_ratio, set_decision

            set_decision(module, "topk")  # the latency plan is a static schedule: run it, not the threshold rule

            # the budget's stage tables hold the selectors' state (package tokens, protected counts) at the
            # time it is built: plan, rebuild at the planned schedule, plan again until it meets the target
            for _ in range(4):
                try:
                    q = plan_keep_ratio(module, min(ratio, 1.0), budget=budget)
                except ValueError:
                    raise self._unreachable(method, self._static_ms(module, budget, [1e-9] * len(sels)),
                                            dense) from None
                budget = self.budget_for(module)
                exact = self._static_ms(module, budget, None)
                if exact <= target:
                    break
                ratio *= target / exact
            module.budget = budget
            module.planned_ratio = exact / float(budget.dense)
            self.info.update(keep=q, planned_latency_ms=exact)
            return criterion
        if method == "asvit":
            rho = min(ratio, 1.0) * (1.0 - ADAPTIVE_MARGIN)
            for sel in sels:
                sel.set_keep_ratio(rho)
            module.keep_ratio = rho
            self.info.update(keep=rho, planned_latency_ms=rho * dense)
            return get_method(method).build_criterion(rho, len(sels))
        if method == "sait":
            rho = self._calibrate_density(module, budget, train_set)
            self.info.update(keep=rho)
            return get_method(method).build_criterion(rho, len(sels))
        if method == "evit":
            keep = self._plan_per_stage(module)
            module.budget = self.budget_for(module)  # tables of the planned schedule (package tokens per stage)
            self.info.update(keep=list(keep), planned_latency_ms=self._static_ms(module, module.budget, None))
            return criterion
        # a static schedule with one rho (DynamicViT and methods like it)
        def cost(q: float) -> float:
            return self._static_ms(module, budget, [q] * len(sels))

        if self.keep_ratio is not None:  # chosen by another planner: this cost model only shapes the loss
            q = self.keep_ratio
            self.info["keep_source"] = "given"
        else:
            low = 0.5 / module.num_patches
            if cost(low) > target:
                raise self._unreachable(method, cost(low), dense)
            q = largest_within(cost, target, low, 1.0)
        for sel in sels:
            sel.set_keep_ratio(q)
        module.keep_ratio = q
        budget = module.budget = self.budget_for(module)
        planned = self._static_ms(module, budget, None)
        self.info.update(keep=q, planned_latency_ms=planned)
        base = get_method(method).build_criterion(q, len(sels))
        return LatencyBudgetLoss(base, planned / dense, self.weight)

    def _static_ms(self, module, budget, ratios) -> float:
        sels = [sel for _, sel in module.stage_selectors()]
        if ratios is not None:
            for sel, r in zip(sels, ratios, strict=True):
                sel.set_keep_ratio(max(min(r, 1.0), 1e-9))
        n, counts = module.num_patches + 1, []
        for sel in sels:
            n = sel.expected_tokens(n)
            counts.append(float(n))
        return float(budget(torch.tensor(counts, dtype=torch.float64)))

    def _plan_per_stage(self, module) -> tuple[float, ...]:
        from tokensift.coopt.accuracy import set_keep_point
        from tokensift.coopt.evaluate import CostEvaluator
        from tokensift.coopt.search import choose
        from tokensift.coopt.space import HwSpace, default_keep_space
        from tokensift.hw.cost.linear import default_rows

        hw = self.hw
        ev_space = HwSpace(lanes=(hw.lanes,), heads_parallel=(hw.heads_parallel,),
                           linear_lanes=(hw.linear_lanes or hw.lanes,), selector_lanes=(hw.selector_lanes or hw.lanes,),
                           softmax=(hw.softmax or "exp2_lut",),
                           clock_mhz=(self.clock_mhz if self.clock_mhz is not None
                                      else self.budget_for(module).clock_mhz,),
                           linear_rows=(hw.linear_rows or default_rows(hw.linear_lanes or hw.lanes),),
                           weight_rate=hw.weight_rate)
        sels = [sel for _, sel in module.stage_selectors()]
        if self.stage_keep is not None:
            if len(self.stage_keep) != len(sels):
                raise ValueError(f"--stage-keep needs {len(sels)} ratios (one per pruning stage), not "
                                 f"{len(self.stage_keep)}")
            set_keep_point(module, module.method, self.stage_keep)
            ms = self._static_ms(module, module.budget, None)
            if ms > self.target_ms:
                raise ValueError(f"the keep ratios {list(self.stage_keep)} take {ms:.4g} ms on {self.device}, more "
                                 f"than the {self.target_ms:g} ms target")
            return tuple(self.stage_keep)
        ev = CostEvaluator(module, method=module.method, device=self.device, hw_space=ev_space,
                           keep_space=default_keep_space(module.method, len(sels), low=0.1, step=0.05))
        g = ev.grid()
        chosen, closest = choose(g.latency_ms[0], [0.0] * g.latency_ms.shape[1], g.accuracy,
                                 [True] * g.latency_ms.shape[1], self.target_ms)
        scheds = g.extra["schedules"]
        if chosen is None:
            dense = float(module.budget.dense)
            raise self._unreachable(module.method, float(g.latency_ms[0, closest]), dense)
        keep = scheds[chosen].point
        set_keep_point(module, module.method, keep)
        return keep

    def _calibrate_density(self, module, budget, train_set) -> float:
        from tokensift.sw.losses_budget import largest_within

        images = _stack_images(train_set, self.calib_images)

        def mean_ms(r: float) -> float:
            module.set_keep_ratio(r)
            return float(measure_latency(module, budget, images).mean())

        low = 0.02
        goal = self.target_ms * (1.0 - ADAPTIVE_MARGIN)
        if mean_ms(low) > goal:
            raise self._unreachable("sait", mean_ms(low), float(budget.dense))
        r = largest_within(mean_ms, goal, low, 1.0, iterations=12)
        module.set_keep_ratio(r)
        module.keep_ratio = r
        self.info["planned_latency_ms"] = mean_ms(r)
        return r

    # -- after training ----------------------------------------------------------------------------------
    def report(self, model: nn.Module, test_set, images: int = 1000) -> dict:
        """Latency of the trained model, measured image by image on ``test_set`` under the budget."""
        from dataclasses import asdict

        module = getattr(model, "module", model)
        budget = self.budget_for(module)
        ms = measure_latency(module, budget, _stack_images(test_set, images))
        return {
            "device": self.device,
            "hw": asdict(self.hw),
            "clock_mhz": budget.clock_mhz,
            "clock": budget.clock.as_dict(),
            "target_latency_ms": float(self.target_ms),
            **self.info,
            "latency_ms": float(ms.mean()),
            "latency_max_ms": float(ms.max()),
            "latency_images": len(ms),
            "meets_target": bool(float(ms.mean()) <= self.target_ms * (1 + 1e-9)),
        }
