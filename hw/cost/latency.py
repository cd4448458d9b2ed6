"""Differentiable latency of a token schedule on a device, for computation-aware training.

:class:`LatencyBudget` is a :class:`tokensift.sw.budget.Budget`: called with per-stage token counts
(``(num_stages,)`` or ``(batch, num_stages)``, fractional and with gradients, class token and added
tokens included, as :class:`tokensift.sw.budget.FlopsBudget` takes them) it returns the latency in
milliseconds, a torch tensor of the leading shape.

The value is the exact integer-cycle model of :class:`tokensift.hw.cost.layer.ModelCost` divided by the
clock, linearly interpolated between integer token counts: every part of it (one layer's attention
side, one layer's MLP, one pruning stage as a function of its input and output counts) is tabulated at
every integer count from the blocks' own ``cycles`` functions, and a soft count reads the table
piecewise linearly (bilinearly for a stage). So at integer counts it *is* the exact model, and between
them its gradient is the exact model's finite difference.

>>> import torch
>>> from tokensift.hw.cost.layer import HwConfig, ModelCost
>>> budget = LatencyBudget("deit_small_patch16_224", HwConfig(lanes=16), "zcu102", method="dynamicvit")
>>> counts = torch.tensor([138.0, 97.0, 68.0], requires_grad=True)
>>> ms = budget(counts)
>>> exact = ModelCost.from_name("deit_small_patch16_224", method="dynamicvit", hw=HwConfig(lanes=16)).cycles()
>>> round(float(ms), 3) == round(exact / 300e3, 3), budget.num_stages
(True, 3)
>>> ms.backward(); bool((counts.grad > 0).all())
True
"""

from __future__ import annotations

import torch
from torch import Tensor

from tokensift.devices import Device, get_device
from tokensift.hw.cost.clock import clock_for_cost
from tokensift.hw.cost.layer import HwConfig, ModelCost, ModelDesc

__all__ = ["LatencyBudget", "latency_ms"]


def _interp1(table: Tensor, x: Tensor) -> Tensor:
    """Piecewise-linear read of ``table`` (indexed by integer counts) at real ``x``."""
    n = table.shape[0]
    x = x.clamp(0, n - 1)
    i0 = x.detach().floor().clamp(max=n - 2).long()
    frac = x - i0.to(x.dtype)
    return table[i0] + frac * (table[i0 + 1] - table[i0])


def _interp2(table: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Bilinear read of ``table[x, y]``."""
    nx, ny = table.shape
    x, y = x.clamp(0, nx - 1), y.clamp(0, ny - 1)
    i = x.detach().floor().clamp(max=nx - 2).long()
    j = y.detach().floor().clamp(max=ny - 2).long()
    fx, fy = x - i.to(x.dtype), y - j.to(y.dtype)
    t00, t01 = table[i, j], table[i, j + 1]
    t10, t11 = table[i + 1, j], table[i + 1, j + 1]
    return (t00 * (1 - fx) * (1 - fy) + t10 * fx * (1 - fy) + t01 * (1 - fx) * fy + t11 * fx * fy)


class LatencyBudget:
    """Latency in ms of ``model`` on ``device`` with the accelerator ``hw``, as a differentiable function
    of the per-stage token counts (the :class:`tokensift.sw.budget.Budget` protocol).

    Args:
        model: a :mod:`tokensift.sw` ViT, a :class:`~tokensift.hw.cost.layer.ModelDesc`, or a registered
            model name (then ``method``, ``keep_ratio`` and config overrides build its selectors).
        hw: the accelerator's parameters.
        device: a device name or :class:`~tokensift.devices.Device`; the clock is ``clock_mhz`` when given,
            else :func:`tokensift.hw.cost.clock.clock_for_cost` (on ECP5 the device clock capped by the
            measured Fmax of the units, elsewhere the device's assumed clock).

    Attributes: ``num_stages``; ``dense`` (ms with no pruning, no selectors); ``cost`` (the
    :class:`~tokensift.hw.cost.layer.ModelCost`); ``clock`` (a :class:`~tokensift.hw.cost.clock.Clock`:
    MHz, source, note); ``clock_mhz``.
    """

    def __init__(self, model, hw: HwConfig | None = None, device: str | Device = "zcu102", *,
                 clock_mhz: float | None = None, method: str = "none", keep_ratio: float | None = None,
                 **overrides):
        if isinstance(model, str):
            model = ModelDesc.from_name(model, method=method, keep_ratio=keep_ratio, **overrides)
        self.cost = ModelCost(model, hw)
        self.device = get_device(device)
        if clock_mhz is not None and not clock_mhz > 0:
            raise ValueError(f"clock_mhz must be positive, not {clock_mhz!r}")
        self.clock = clock_for_cost(self.cost, self.device, clock_mhz=clock_mhz)
        self.clock_mhz = self.clock.mhz
        if self.cost.hw.weight_rate is None:  # the device's DRAM at this clock feeds the linear engine
            import dataclasses

            from tokensift.hw.cost.linear import device_weight_rate

            hw = dataclasses.replace(self.cost.hw, weight_rate=device_weight_rate(self.device, self.clock_mhz))
            self.cost = ModelCost(self.cost.desc, hw)
        c = self.cost
        self.num_stages = len(c.desc.selectors)
        self._stages = c.schedule().stages
        n_cap = c.n_max
        attn = [0.0] + [float(sum(c.attn_part_cycles(n).values())) for n in range(1, n_cap + 1)]
        mlp = [0.0] + [float(sum(c.mlp_part_cycles(n).values())) for n in range(1, n_cap + 1)]
        self._attn_table = torch.tensor(attn, dtype=torch.float64)
        self._mlp_table = torch.tensor(mlp, dtype=torch.float64)
        self._stage_tables = [self._stage_table(st, n_cap) for st in self._stages]
        self._fixed = float(sum(c.fixed_cycles().values()))
        self._on_device: dict[torch.device, tuple[Tensor, Tensor, list[Tensor]]] = {}
        depth, n0 = c.spec.depth, c.spec.num_tokens
        self._dense_cycles = self._fixed + depth * (attn[n0] + mlp[n0])
        self.dense = self._dense_cycles / (self.clock_mhz * 1e3)

    def _stage_table(self, stage, n_cap: int) -> Tensor:
        """cycles[n_in, n_out] of a stage; outside the valid region (n_out below the tokens the hardware
        always keeps, or above n_in) the nearest valid row/column is extended linearly."""
        c = self.cost
        low = 1 + int(stage.package)
        table = torch.zeros(n_cap + 1, n_cap + 1, dtype=torch.float64)
        for n_in in range(1, n_cap + 1):
            hi = n_in + int(stage.package)
            row = {}
            for n_out in range(low, min(hi, n_cap) + 1):
                row[n_out] = float(sum(c.stage_cycles(stage, n_in, n_out).values()))
            if not row:
                continue
            keys = sorted(row)
            slope = (row[keys[-1]] - row[keys[-2]]) if len(keys) > 1 else 0.0
            for n_out in range(n_cap + 1):
                if n_out in row:
                    table[n_in, n_out] = row[n_out]
                elif n_out < keys[0]:
                    table[n_in, n_out] = row[keys[0]] - slope * (keys[0] - n_out)
                else:
                    table[n_in, n_out] = row[keys[-1]] + slope * (n_out - keys[-1])
        table[0] = 2 * table[1] - table[2]
        return table

    def schedule(self, token_counts: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per-block (attention, MLP) counts and per-stage input counts for per-stage counts."""
        from tokensift.sw.budget import stage_schedule

        sites = [(st.block, st.site) for st in sorted(self._stages, key=lambda st: st.index)]
        return stage_schedule(token_counts, sites, self.cost.spec.depth, self.cost.spec.num_tokens)

    def _tables(self, device: torch.device) -> tuple[Tensor, Tensor, list[Tensor]]:
        """The tables on ``device``: copied once per accelerator (a training step reads them every time);
        on the CPU ``to`` returns the tables themselves."""
        if device.type == "cpu":
            return (self._attn_table.to(device), self._mlp_table.to(device),
                    [t.to(device) for t in self._stage_tables])
        if device not in self._on_device:
            self._on_device[device] = (self._attn_table.to(device), self._mlp_table.to(device),
                                       [t.to(device) for t in self._stage_tables])
        return self._on_device[device]

    def cycles(self, token_counts: Tensor) -> Tensor:
        """The (interpolated) cycle count, float64, of the leading shape, on the counts' device."""
        attn, mlp, stage_in = self.schedule(token_counts)
        counts = token_counts.to(torch.float64)
        attn_table, mlp_table, stage_tables = self._tables(counts.device)
        total = torch.full(counts.shape[:-1], self._fixed, dtype=torch.float64, device=counts.device)
        for a, m in zip(attn, mlp, strict=True):
            total = total + _interp1(attn_table, a) + _interp1(mlp_table, m)
        for st, table in zip(self._stages, stage_tables, strict=True):
            total = total + _interp2(table, stage_in[st.index], counts[..., st.index])
        return total

    def __call__(self, token_counts: Tensor) -> Tensor:
        return self.cycles(token_counts) / (self.clock_mhz * 1e3)


def latency_ms(token_counts: Tensor, model, hw: HwConfig | None = None, device: str | Device = "zcu102",
               **kwargs) -> Tensor:
    """One-shot form of :class:`LatencyBudget`: ``LatencyBudget(model, hw, device, **kwargs)(token_counts)``
    (build the budget once when calling it repeatedly)."""
    return LatencyBudget(model, hw, device, **kwargs)(token_counts)
